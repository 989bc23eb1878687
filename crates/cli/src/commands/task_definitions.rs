//! `flotilla task-definitions`.

use anyhow::Context;
use flotilla_cli::client::Client;
use flotilla_cli::output::{Output, text};
use serde_json::{Value, json};

use crate::TaskDefinitionAction;

const TASK_DEFINITION_HEADERS: &[&str] = &["FAMILY", "REVISION", "STATUS", "CPU", "MEMORY", "CONTAINERS"];

fn task_definition_row(td: &Value) -> Vec<String> {
    let containers: Vec<String> = td["containerDefinitions"]
        .as_array()
        .map(|a| a.iter().map(|c| format!("{} ({})", text(c, "name"), text(c, "image"))).collect())
        .unwrap_or_default();
    vec![
        text(td, "family"),
        text(td, "revision"),
        text(td, "status"),
        text(td, "cpu"),
        text(td, "memory"),
        containers.join(", "),
    ]
}

pub async fn run(
    client: &Client,
    out: &Output,
    action: Option<TaskDefinitionAction>,
    family_prefix: Option<String>,
    status: Option<String>,
) -> anyhow::Result<()> {
    match action {
        None => {
            let filter = json!({ "familyPrefix": family_prefix, "status": status });
            let arns = client.ecs_list_all("ListTaskDefinitions", filter, "taskDefinitionArns").await?;
            let mut described = Vec::new();
            for arn in &arns {
                let answer = client.ecs("DescribeTaskDefinition", json!({ "taskDefinition": arn })).await?;
                described.push(answer["taskDefinition"].clone());
            }
            let rows = described.iter().map(task_definition_row).collect();
            out.print(&json!({ "taskDefinitions": described }), TASK_DEFINITION_HEADERS, rows);
        }
        Some(TaskDefinitionAction::Show { task_definition }) => {
            let answer = client
                .ecs("DescribeTaskDefinition", json!({ "taskDefinition": task_definition, "include": ["TAGS"] }))
                .await?;
            out.print(&answer, TASK_DEFINITION_HEADERS, vec![task_definition_row(&answer["taskDefinition"])]);
        }
        Some(TaskDefinitionAction::Register { file }) => {
            let raw = std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let body: Value =
                serde_json::from_slice(&raw).with_context(|| format!("{} is not JSON", file.display()))?;
            let answer = client.ecs("RegisterTaskDefinition", body).await?;
            out.print(&answer, TASK_DEFINITION_HEADERS, vec![task_definition_row(&answer["taskDefinition"])]);
        }
        Some(TaskDefinitionAction::Deregister { task_definition }) => {
            let answer = client.ecs("DeregisterTaskDefinition", json!({ "taskDefinition": task_definition })).await?;
            out.print(&answer, TASK_DEFINITION_HEADERS, vec![task_definition_row(&answer["taskDefinition"])]);
        }
    }
    Ok(())
}
