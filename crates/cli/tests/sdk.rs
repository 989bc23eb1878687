//! aws-sdk-ecs (the official Rust SDK) against the real server: it signs a different header
//! set than botocore and parses responses with its own generated deserialisers.

mod common;

use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ecs::types::{ContainerDefinition, NetworkMode, PortMapping, TransportProtocol};
use common::{ACCESS_KEY, SECRET_KEY, Server};

fn sdk(server: &Server) -> aws_sdk_ecs::Client {
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "flotilla-test"))
        .endpoint_url(server.endpoint())
        .build();
    aws_sdk_ecs::Client::from_conf(config)
}

#[tokio::test]
async fn sdk_drives_clusters_and_task_definitions() {
    let server = Server::start();
    let ecs = sdk(&server);

    let cluster = ecs.create_cluster().cluster_name("sdk").send().await.unwrap();
    assert_eq!(cluster.cluster().unwrap().cluster_name(), Some("sdk"));

    for _ in 0..3 {
        let out = ecs
            .register_task_definition()
            .family("sdk-web")
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
            .cpu("512")
            .memory("1024")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("web")
                    .image("busybox:latest")
                    .port_mappings(PortMapping::builder().container_port(8080).protocol(TransportProtocol::Tcp).build())
                    .build(),
            )
            .send()
            .await
            .unwrap();
        let td = out.task_definition().unwrap();
        assert_eq!(td.family(), Some("sdk-web"));
        assert_eq!(td.container_definitions()[0].port_mappings()[0].host_port(), Some(8080));
        assert!(td.registered_at().is_some());
    }

    // The SDK's own paginator walks nextToken.
    let arns: Vec<String> = ecs
        .list_task_definitions()
        .max_results(1)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(arns.len(), 3);

    let described = ecs.describe_task_definition().task_definition("sdk-web").send().await.unwrap();
    assert_eq!(described.task_definition().unwrap().revision(), 3);

    // Modelled errors arrive as typed errors.
    let err = ecs.describe_task_definition().task_definition("nope:1").send().await.unwrap_err();
    let service_err = err.into_service_error();
    assert!(service_err.is_client_exception(), "{service_err:?}");

    let err = ecs.delete_cluster().cluster("absent").send().await.unwrap_err().into_service_error();
    assert!(err.is_cluster_not_found_exception(), "{err:?}");

    let bad = ecs
        .register_task_definition()
        .family("sdk-bad")
        .network_mode(NetworkMode::Bridge)
        .cpu("256")
        .memory("512")
        .container_definitions(ContainerDefinition::builder().name("a").image("i").build())
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(bad.is_client_exception());
    assert!(bad.to_string().contains("networkMode") || format!("{bad:?}").contains("networkMode"), "{bad:?}");
}
