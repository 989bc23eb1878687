//! `flotilla tasks`: list, run, show and stop tasks.

use flotilla_cli::client::{Client, xml_texts};
use flotilla_cli::output::{Output, text};
use serde_json::{Value, json};

use crate::TaskAction;

const HEADERS: &[&str] = &["TASK", "DEFINITION", "STATUS", "DESIRED", "HEALTH", "CPU", "MEMORY", "STOPPED REASON"];

fn rows(tasks: &[Value]) -> Vec<Vec<String>> {
    tasks
        .iter()
        .map(|t| {
            let arn = text(t, "taskArn");
            let definition = text(t, "taskDefinitionArn");
            vec![
                arn.rsplit('/').next().unwrap_or(&arn).to_owned(),
                definition.rsplit('/').next().unwrap_or(&definition).to_owned(),
                text(t, "lastStatus"),
                text(t, "desiredStatus"),
                text(t, "healthStatus"),
                text(t, "cpu"),
                text(t, "memory"),
                text(t, "stoppedReason"),
            ]
        })
        .collect()
}

/// The default VPC's default subnets (`default-for-az`), which is what the AWS console offers
/// when nobody chose: RunTask places each task in one of them.
async fn default_subnets(client: &Client) -> anyhow::Result<Vec<String>> {
    let xml =
        client.ec2("DescribeSubnets", &[("Filter.1.Name", "default-for-az"), ("Filter.1.Value.1", "true")]).await?;
    let subnets = xml_texts(&xml, "subnetId");
    if subnets.is_empty() {
        anyhow::bail!(
            "there is no default subnet (default-for-az) to run the task in: pass --subnet SUBNET_ID \
             (`aws ec2 describe-subnets` lists them)"
        );
    }
    Ok(subnets)
}

pub async fn run(
    client: &Client,
    out: &Output,
    cluster: Option<String>,
    action: Option<TaskAction>,
    stopped: bool,
) -> anyhow::Result<()> {
    match action {
        None => {
            let desired = if stopped { "STOPPED" } else { "RUNNING" };
            let arns = client
                .ecs_list_all("ListTasks", json!({ "cluster": cluster, "desiredStatus": desired }), "taskArns")
                .await?;
            let mut tasks = Vec::new();
            for chunk in arns.chunks(100) {
                let answer = client.ecs("DescribeTasks", json!({ "cluster": cluster, "tasks": chunk })).await?;
                tasks.extend(answer["tasks"].as_array().cloned().unwrap_or_default());
            }
            out.print(&json!({ "tasks": tasks }), HEADERS, rows(&tasks));
        }
        Some(TaskAction::Run { task_definition, count, subnet }) => {
            let subnets = match subnet {
                Some(subnet) => vec![subnet],
                None => default_subnets(client).await?,
            };
            let body = json!({
                "cluster": cluster,
                "taskDefinition": task_definition,
                "count": count,
                "launchType": "FARGATE",
                "networkConfiguration": { "awsvpcConfiguration": { "subnets": subnets } },
            });
            let answer = client.ecs("RunTask", body).await?;
            let tasks = answer["tasks"].as_array().cloned().unwrap_or_default();
            out.print(&answer, HEADERS, rows(&tasks));
        }
        Some(TaskAction::Show { task }) => {
            let answer = client
                .ecs("DescribeTasks", json!({ "cluster": cluster, "tasks": [task], "include": ["TAGS"] }))
                .await?;
            let tasks = answer["tasks"].as_array().cloned().unwrap_or_default();
            if tasks.is_empty() {
                anyhow::bail!("no task {task} in cluster {}", cluster.as_deref().unwrap_or("default"));
            }
            out.print(&answer, HEADERS, rows(&tasks));
        }
        Some(TaskAction::Stop { task, reason }) => {
            let answer = client.ecs("StopTask", json!({ "cluster": cluster, "task": task, "reason": reason })).await?;
            out.print(&answer, HEADERS, rows(std::slice::from_ref(&answer["task"])));
        }
    }
    Ok(())
}
