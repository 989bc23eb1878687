//! `flotilla services`: list services, or show one with its deployments and recent events.

use flotilla_cli::client::Client;
use flotilla_cli::output::{Output, Section, text, time};
use serde_json::{Value, json};

use crate::ServiceAction;

const HEADERS: &[&str] = &["NAME", "STATUS", "DESIRED", "RUNNING", "PENDING", "TASK DEFINITION", "ROLLOUT"];
const FIELD_HEADERS: &[&str] = &["FIELD", "VALUE"];
const DEPLOYMENT_HEADERS: &[&str] =
    &["ID", "STATUS", "TASK DEFINITION", "DESIRED", "RUNNING", "PENDING", "FAILED", "ROLLOUT", "REASON", "UPDATED"];
const EVENT_HEADERS: &[&str] = &["TIME", "MESSAGE"];

/// DescribeServices takes at most this many names per call.
const DESCRIBE_BATCH: usize = 10;

/// `family:revision`, the name people give a task definition, from its ARN.
fn family_revision(value: &Value, key: &str) -> String {
    let arn = text(value, key);
    arn.rsplit('/').next().unwrap_or(&arn).to_owned()
}

/// The last part of an ARN (`.../cluster/prod` is `prod`).
fn arn_name(value: &Value, key: &str) -> String {
    let arn = text(value, key);
    arn.rsplit('/').next().unwrap_or(&arn).to_owned()
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

fn joined(value: &Value) -> String {
    let items = strings(value);
    if items.is_empty() { "-".into() } else { items.join(", ") }
}

fn rows(services: &[Value]) -> Vec<Vec<String>> {
    services
        .iter()
        .map(|s| {
            // The rollout that matters is the PRIMARY deployment's: the one being rolled out,
            // or, once it is COMPLETED, the one running.
            let primary = s["deployments"].as_array().and_then(|d| d.iter().find(|d| d["status"] == "PRIMARY"));
            vec![
                text(s, "serviceName"),
                text(s, "status"),
                text(s, "desiredCount"),
                text(s, "runningCount"),
                text(s, "pendingCount"),
                family_revision(s, "taskDefinition"),
                primary.map_or_else(|| "-".into(), |d| text(d, "rolloutState")),
            ]
        })
        .collect()
}

/// How the service's tasks are launched: `FARGATE`, or the capacity provider strategy as
/// `FARGATE_SPOT (base 1, weight 3), ...`.
fn launch(service: &Value) -> String {
    match service["capacityProviderStrategy"].as_array() {
        Some(strategy) if !strategy.is_empty() => strategy
            .iter()
            .map(|p| {
                let base = p["base"].as_i64().unwrap_or(0);
                format!("{} (base {base}, weight {})", text(p, "capacityProvider"), p["weight"].as_i64().unwrap_or(0))
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => text(service, "launchType"),
    }
}

fn deployment_configuration(service: &Value) -> String {
    let config = &service["deploymentConfiguration"];
    let breaker = &config["deploymentCircuitBreaker"];
    let breaker = match (breaker["enable"].as_bool(), breaker["rollback"].as_bool()) {
        (Some(true), Some(true)) => "on, with rollback",
        (Some(true), _) => "on, no rollback",
        _ => "off",
    };
    format!(
        "minimum healthy {}%, maximum {}%, circuit breaker {breaker}",
        text(config, "minimumHealthyPercent"),
        text(config, "maximumPercent")
    )
}

fn field_rows(service: &Value) -> Vec<Vec<String>> {
    let vpc = &service["networkConfiguration"]["awsvpcConfiguration"];
    let registries: Vec<String> = service["serviceRegistries"]
        .as_array()
        .map(|r| r.iter().map(|r| text(r, "registryArn")).collect())
        .unwrap_or_default();
    let tags: Vec<String> = service["tags"]
        .as_array()
        .map(|t| t.iter().map(|t| format!("{}={}", text(t, "key"), text(t, "value"))).collect())
        .unwrap_or_default();
    let or_dash = |items: Vec<String>| if items.is_empty() { "-".into() } else { items.join(", ") };
    [
        ("name", text(service, "serviceName")),
        ("arn", text(service, "serviceArn")),
        ("cluster", arn_name(service, "clusterArn")),
        ("status", text(service, "status")),
        ("task definition", family_revision(service, "taskDefinition")),
        (
            "desired / running / pending",
            format!(
                "{} / {} / {}",
                text(service, "desiredCount"),
                text(service, "runningCount"),
                text(service, "pendingCount")
            ),
        ),
        ("launch", launch(service)),
        ("platform version", text(service, "platformVersion")),
        ("subnets", joined(&vpc["subnets"])),
        ("security groups", joined(&vpc["securityGroups"])),
        ("public IP", text(vpc, "assignPublicIp")),
        ("deployments", deployment_configuration(service)),
        (
            "health check grace",
            match service["healthCheckGracePeriodSeconds"].as_i64() {
                Some(s) => format!("{s} s"),
                None => "-".into(),
            },
        ),
        ("service registries", or_dash(registries)),
        ("propagate tags", text(service, "propagateTags")),
        ("tags", or_dash(tags)),
        ("created", time(service, "createdAt")),
    ]
    .into_iter()
    .map(|(field, value)| vec![field.to_owned(), value])
    .collect()
}

fn deployment_rows(service: &Value) -> Vec<Vec<String>> {
    let deployments = service["deployments"].as_array().cloned().unwrap_or_default();
    deployments
        .iter()
        .map(|d| {
            vec![
                text(d, "id"),
                text(d, "status"),
                family_revision(d, "taskDefinition"),
                text(d, "desiredCount"),
                text(d, "runningCount"),
                text(d, "pendingCount"),
                text(d, "failedTasks"),
                text(d, "rolloutState"),
                text(d, "rolloutStateReason"),
                time(d, "updatedAt"),
            ]
        })
        .collect()
}

/// The `limit` newest events, newest first (ECS already answers in that order; sorting again
/// keeps the view right whatever order they come in).
fn event_rows(service: &Value, limit: usize) -> Vec<Vec<String>> {
    let mut events = service["events"].as_array().cloned().unwrap_or_default();
    events.sort_by(|a, b| b["createdAt"].as_f64().unwrap_or(0.0).total_cmp(&a["createdAt"].as_f64().unwrap_or(0.0)));
    events.iter().take(limit).map(|e| vec![time(e, "createdAt"), text(e, "message")]).collect()
}

pub async fn run(
    client: &Client,
    out: &Output,
    cluster: Option<String>,
    action: Option<ServiceAction>,
) -> anyhow::Result<()> {
    match action {
        None => {
            let arns = client.ecs_list_all("ListServices", json!({ "cluster": cluster }), "serviceArns").await?;
            let mut services = Vec::new();
            for chunk in arns.chunks(DESCRIBE_BATCH) {
                let answer = client.ecs("DescribeServices", json!({ "cluster": cluster, "services": chunk })).await?;
                services.extend(answer["services"].as_array().cloned().unwrap_or_default());
            }
            out.print(&json!({ "services": services }), HEADERS, rows(&services));
        }
        Some(ServiceAction::Show { service, events }) => {
            let answer = client
                .ecs("DescribeServices", json!({ "cluster": cluster, "services": [service], "include": ["TAGS"] }))
                .await?;
            let Some(found) = answer["services"].as_array().and_then(|s| s.first()) else {
                let reason = answer["failures"][0]["reason"].as_str().unwrap_or("MISSING");
                anyhow::bail!(
                    "no service {service} in cluster {} ({reason}); `flotilla services` lists them",
                    cluster.as_deref().unwrap_or("default")
                );
            };
            let total = found["events"].as_array().map_or(0, Vec::len);
            let events_title = format!("Events (newest {} of {total})", events.min(total));
            out.print_sections(
                &answer,
                vec![
                    Section { title: "Service", headers: FIELD_HEADERS, rows: field_rows(found) },
                    Section { title: "Deployments", headers: DEPLOYMENT_HEADERS, rows: deployment_rows(found) },
                    Section { title: &events_title, headers: EVENT_HEADERS, rows: event_rows(found, events) },
                ],
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Value {
        json!({
            "serviceName": "web",
            "serviceArn": "arn:aws:ecs:us-east-1:123456789012:service/prod/web",
            "clusterArn": "arn:aws:ecs:us-east-1:123456789012:cluster/prod",
            "status": "ACTIVE",
            "taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:2",
            "desiredCount": 2, "runningCount": 1, "pendingCount": 1,
            "launchType": "FARGATE",
            "deploymentConfiguration": {
                "minimumHealthyPercent": 100, "maximumPercent": 200,
                "deploymentCircuitBreaker": {"enable": true, "rollback": true},
            },
            "deployments": [
                {"id": "ecs-svc/1111111111111111111", "status": "ACTIVE", "rolloutState": "COMPLETED",
                 "taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:1"},
                {"id": "ecs-svc/2222222222222222222", "status": "PRIMARY", "rolloutState": "IN_PROGRESS",
                 "taskDefinition": "arn:aws:ecs:us-east-1:123456789012:task-definition/web:2"},
            ],
            "events": [
                {"id": "a", "createdAt": 100.0, "message": "older"},
                {"id": "b", "createdAt": 200.0, "message": "newer"},
                {"id": "c", "createdAt": 150.0, "message": "middle"},
            ],
        })
    }

    #[test]
    fn a_row_shows_the_primary_deployments_rollout_and_family_revision() {
        let row = &rows(&[service()])[0];
        assert_eq!(row, &["web", "ACTIVE", "2", "1", "1", "web:2", "IN_PROGRESS"]);
        let mut bare = service();
        bare["deployments"] = json!([]);
        assert_eq!(rows(&[bare])[0][6], "-");
    }

    #[test]
    fn events_are_newest_first_and_limited() {
        let events = event_rows(&service(), 2);
        let messages: Vec<&str> = events.iter().map(|e| e[1].as_str()).collect();
        assert_eq!(messages, ["newer", "middle"]);
    }

    #[test]
    fn launch_names_the_capacity_provider_strategy_when_there_is_one() {
        assert_eq!(launch(&service()), "FARGATE");
        let mut spot = service();
        spot["capacityProviderStrategy"] = json!([
            {"capacityProvider": "FARGATE", "base": 1, "weight": 1},
            {"capacityProvider": "FARGATE_SPOT", "weight": 3},
        ]);
        assert_eq!(launch(&spot), "FARGATE (base 1, weight 1), FARGATE_SPOT (base 0, weight 3)");
        assert_eq!(
            deployment_configuration(&service()),
            "minimum healthy 100%, maximum 200%, circuit breaker on, with rollback"
        );
    }
}
