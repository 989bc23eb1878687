//! `flotilla clusters`.

use flotilla_cli::client::Client;
use flotilla_cli::output::{Output, text};
use serde_json::{Value, json};

use crate::ClusterAction;

fn cluster_rows(clusters: &[Value]) -> Vec<Vec<String>> {
    clusters
        .iter()
        .map(|c| {
            let providers: Vec<&str> = c["capacityProviders"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            vec![
                text(c, "clusterName"),
                text(c, "status"),
                text(c, "runningTasksCount"),
                text(c, "pendingTasksCount"),
                text(c, "activeServicesCount"),
                if providers.is_empty() { "-".into() } else { providers.join(",") },
            ]
        })
        .collect()
}

const CLUSTER_HEADERS: &[&str] = &["NAME", "STATUS", "RUNNING", "PENDING", "SERVICES", "CAPACITY PROVIDERS"];

pub async fn run(client: &Client, out: &Output, action: Option<ClusterAction>) -> anyhow::Result<()> {
    match action {
        None => {
            let arns = client.ecs_list_all("ListClusters", json!({}), "clusterArns").await?;
            let mut described = Vec::new();
            for chunk in arns.chunks(100) {
                let answer = client
                    .ecs("DescribeClusters", json!({ "clusters": chunk, "include": ["SETTINGS", "TAGS"] }))
                    .await?;
                described.extend(answer["clusters"].as_array().cloned().unwrap_or_default());
            }
            out.print(&json!({ "clusters": described }), CLUSTER_HEADERS, cluster_rows(&described));
        }
        Some(ClusterAction::Create { name }) => {
            let answer = client.ecs("CreateCluster", json!({ "clusterName": name })).await?;
            out.print(&answer, CLUSTER_HEADERS, cluster_rows(std::slice::from_ref(&answer["cluster"])));
        }
        Some(ClusterAction::Delete { name }) => {
            let answer = client.ecs("DeleteCluster", json!({ "cluster": name })).await?;
            out.print(&answer, CLUSTER_HEADERS, cluster_rows(std::slice::from_ref(&answer["cluster"])));
        }
    }
    Ok(())
}
