use serde_json::{Value, json};

use super::{FieldError, validate_for_fargate};
use crate::task_definition::TaskDefinitionSpec;

mod rejections;

/// The Fargate example from the AWS documentation.
fn seed() -> Value {
    json!({
        "family": "fargate-task",
        "networkMode": "awsvpc",
        "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
        "containerDefinitions": [{
            "name": "web-app",
            "image": "nginx:latest",
            "essential": true,
            "portMappings": [{"containerPort": 80, "hostPort": 80, "protocol": "tcp"}],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": "/ecs/fargate-task",
                    "awslogs-region": "ap-northeast-1",
                    "awslogs-stream-prefix": "ecs"
                }
            }
        }],
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512"
    })
}

fn validate(value: Value) -> Result<TaskDefinitionSpec, FieldError> {
    let spec = serde_json::from_value(value).expect("test task definition deserialises");
    validate_for_fargate(spec)
}

/// The seed with `edit` applied.
fn edited(edit: fn(&mut Value)) -> Value {
    let mut value = seed();
    edit(&mut value);
    value
}

fn web(v: &mut Value) -> &mut Value {
    &mut v["containerDefinitions"][0]
}

fn remove(v: &mut Value, key: &str) {
    v.as_object_mut().expect("an object").remove(key);
}

/// Appends a non-essential container named `sidecar` and returns it for further edits.
fn sidecar(v: &mut Value) -> &mut Value {
    let containers = v["containerDefinitions"].as_array_mut().expect("containers");
    containers.push(json!({"name": "sidecar", "image": "busybox", "essential": false}));
    containers.last_mut().expect("just pushed")
}

type Edit = fn(&mut Value);

#[test]
fn seed_is_accepted() {
    validate(seed()).expect("the AWS documentation example is a valid Fargate task definition");
}

#[test]
fn accepts_what_fargate_runs() {
    let cases: &[(&str, Edit)] = &[
        ("no requiresCompatibilities", |v| remove(v, "requiresCompatibilities")),
        ("EC2 and FARGATE", |v| v["requiresCompatibilities"] = json!(["EC2", "FARGATE"])),
        ("managed instances", |v| v["requiresCompatibilities"] = json!(["MANAGED_INSTANCES"])),
        ("vCPU and GB strings", |v| {
            v["cpu"] = json!(".25 vCPU");
            v["memory"] = json!("1 GB");
        }),
        ("largest size", |v| {
            v["cpu"] = json!("16 vCPU");
            v["memory"] = json!("120 GB");
        }),
        ("pidMode task", |v| v["pidMode"] = json!("task")),
        ("proxyConfiguration", |v| v["proxyConfiguration"] = json!({"type": "APPMESH", "containerName": "web-app"})),
        ("empty placementConstraints", |v| v["placementConstraints"] = json!([])),
        ("ephemeral storage bounds", |v| v["ephemeralStorage"] = json!({"sizeInGiB": 21})),
        ("ephemeral storage max", |v| v["ephemeralStorage"] = json!({"sizeInGiB": 200})),
        ("linux arm64", |v| {
            v["runtimePlatform"] = json!({"operatingSystemFamily": "LINUX", "cpuArchitecture": "ARM64"})
        }),
        ("bind and efs volumes", |v| {
            v["volumes"] = json!([
                {"name": "scratch", "host": {}},
                {"name": "shared", "efsVolumeConfiguration": {"fileSystemId": "fs-1"}},
                {"name": "plain"}
            ]);
            web(v)["mountPoints"] = json!([
                {"sourceVolume": "scratch", "containerPath": "/scratch"},
                {"sourceVolume": "shared", "containerPath": "/shared", "readOnly": true}
            ]);
        }),
        ("capabilities", |v| {
            web(v)["linuxParameters"] = json!({"initProcessEnabled": true, "capabilities": {
                "add": ["SYS_PTRACE"], "drop": ["ALL", "NET_RAW", "WAKE_ALARM"]
            }})
        }),
        ("harmless unsupported members", |v| {
            let web = web(v);
            web["dnsServers"] = json!([]);
            web["links"] = json!([]);
            web["privileged"] = json!(false);
            web["disableNetworking"] = json!(false);
        }),
        ("health check bounds", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
                "interval": 300, "timeout": 60, "retries": 10, "startPeriod": 300})
        }),
        ("health check minimums", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"],
                "interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0})
        }),
        ("short interval, default timeout", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "interval": 5})
        }),
        ("health check NONE", |v| web(v)["healthCheck"] = json!({"command": ["NONE"]})),
        ("timeouts at their bounds", |v| {
            web(v)["stopTimeout"] = json!(120);
            web(v)["startTimeout"] = json!(120);
        }),
        ("hostPort omitted", |v| web(v)["portMappings"] = json!([{"containerPort": 80}])),
        ("same port, other protocol", |v| {
            sidecar(v)["portMappings"] = json!([{"containerPort": 80, "protocol": "udp"}])
        }),
        ("port range", |v| {
            sidecar(v)["portMappings"] = json!([{"containerPortRange": "8000-8010", "protocol": "udp"}])
        }),
        ("hard limits overlap, reservations fit", |v| {
            web(v)["memory"] = json!(512);
            web(v)["memoryReservation"] = json!(256);
            let sidecar = sidecar(v);
            sidecar["memory"] = json!(512);
            sidecar["memoryReservation"] = json!(256);
        }),
        ("cpu split exactly", |v| {
            web(v)["cpu"] = json!(128);
            sidecar(v)["cpu"] = json!(128);
        }),
        ("splunk", |v| {
            web(v)["logConfiguration"] = json!({"logDriver": "splunk",
                "options": {"splunk-url": "https://splunk:8088"},
                "secretOptions": [{"name": "splunk-token", "valueFrom": "arn:aws:ssm:x"}]})
        }),
        ("firelens with a router", |v| {
            sidecar(v)["firelensConfiguration"] = json!({"type": "fluentbit"});
            web(v)["logConfiguration"] = json!({"logDriver": "awsfirelens", "options": {"Name": "cloudwatch"}});
        }),
        ("dependencies", |v| {
            sidecar(v)["healthCheck"] = json!({"command": ["CMD", "true"]});
            let containers = v["containerDefinitions"].as_array_mut().expect("containers");
            containers.push(json!({"name": "init", "image": "busybox", "essential": false}));
            containers[0]["dependsOn"] = json!([
                {"containerName": "init", "condition": "SUCCESS"},
                {"containerName": "sidecar", "condition": "HEALTHY"}
            ]);
            containers[1]["dependsOn"] = json!([{"containerName": "init", "condition": "COMPLETE"}]);
            containers[1]["volumesFrom"] = json!([{"sourceContainer": "init", "readOnly": true}]);
        }),
        ("environment and secrets", |v| {
            let web = web(v);
            web["environment"] = json!([{"name": "_PRIVATE", "value": ""}, {"name": "Port2", "value": "80"}]);
            web["secrets"] = json!([{"name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:us-east-1:1:parameter/db"}]);
            web["environmentFiles"] = json!([{"type": "s3", "value": "arn:aws:s3:::bucket/app.env"}]);
        }),
        ("ulimits", |v| web(v)["ulimits"] = json!([{"name": "nofile", "softLimit": 65535, "hardLimit": 65535}])),
        ("ten containers", |v| {
            let containers = v["containerDefinitions"].as_array_mut().expect("containers");
            containers.extend((1..10).map(|i| json!({"name": format!("c{i}"), "image": "busybox"})));
        }),
    ];
    for &(rule, edit) in cases {
        if let Err(err) = validate(edited(edit)) {
            panic!("{rule}: {err}");
        }
    }
}

#[test]
fn messages_say_what_is_allowed() {
    let err = validate(edited(|v| web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "interval": 2})))
        .expect_err("interval 2");
    assert_eq!(err.message, "containerDefinitions[0].healthCheck.interval: must be between 5 and 300 seconds, got 2");

    let err = validate(edited(|v| v["memory"] = json!("4096"))).expect_err("256/4096");
    assert_eq!(
        err.message,
        "memory: No Fargate configuration exists for given values: 256 CPU, 4096 memory. For 256 CPU, memory must be one of 512, 1024, 2048."
    );

    let err = validate(edited(|v| v["cpu"] = json!("300"))).expect_err("cpu 300");
    assert!(err.message.starts_with("cpu: No Fargate configuration exists for cpu 300."), "{}", err.message);

    let err = validate(edited(|v| v["networkMode"] = json!("bridge"))).expect_err("bridge");
    assert!(err.message.contains("awsvpc"), "{}", err.message);

    let err = validate(edited(|v| {
        sidecar(v)["dependsOn"] = json!([{"containerName": "web-app", "condition": "START"}]);
        web(v)["dependsOn"] = json!([{"containerName": "sidecar", "condition": "START"}]);
    }))
    .expect_err("cycle");
    assert!(err.message.contains("web-app -> sidecar -> web-app"), "{}", err.message);

    let err =
        validate(edited(|v| sidecar(v)["portMappings"] = json!([{"containerPort": 80}]))).expect_err("port clash");
    assert!(
        err.message.contains("port 80/tcp is already mapped by containerDefinitions[0].portMappings[0].containerPort"),
        "{}",
        err.message
    );
}

#[test]
fn first_error_wins_task_level_first() {
    let err = validate(edited(|v| {
        v["cpu"] = json!("300");
        web(v)["image"] = json!("");
    }))
    .expect_err("two errors");
    assert_eq!(err.field, "cpu");

    let err = validate(edited(|v| {
        sidecar(v)["image"] = json!("");
        web(v)["privileged"] = json!(true);
    }))
    .expect_err("two errors");
    assert_eq!(err.field, "containerDefinitions[0].privileged");
}

#[test]
fn normalises_like_describe_task_definition() {
    let mut input = seed();
    input["cpu"] = json!("1 vCPU");
    input["memory"] = json!("2 GB");
    remove(&mut input, "requiresCompatibilities");
    let web = web(&mut input);
    remove(web, "essential");
    web["portMappings"] = json!([{"containerPort": 80}, {"containerPort": 53, "protocol": "udp"}]);
    web["systemControls"] = json!([{"namespace": "net.core.somaxconn", "value": "1024"}]);
    sidecar(&mut input)["portMappings"] = json!([{"containerPortRange": "8000-8010"}]);

    let spec = validate(input).expect("valid");
    assert_eq!(spec.cpu.as_deref(), Some("1024"));
    assert_eq!(spec.memory.as_deref(), Some("2048"));
    assert_eq!(spec.requires_compatibilities, None, "left as given");

    let described = serde_json::to_value(&spec.container_definitions).expect("serialises");
    assert_eq!(
        described,
        json!([
            {
                "name": "web-app",
                "image": "nginx:latest",
                "cpu": 0,
                "essential": true,
                "portMappings": [
                    {"containerPort": 80, "hostPort": 80, "protocol": "tcp"},
                    {"containerPort": 53, "hostPort": 53, "protocol": "udp"}
                ],
                "environment": [],
                "mountPoints": [],
                "volumesFrom": [],
                "systemControls": [{"namespace": "net.core.somaxconn", "value": "1024"}],
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": "/ecs/fargate-task",
                        "awslogs-region": "ap-northeast-1",
                        "awslogs-stream-prefix": "ecs"
                    }
                }
            },
            {
                "name": "sidecar",
                "image": "busybox",
                "cpu": 0,
                "essential": false,
                "portMappings": [{"containerPortRange": "8000-8010", "protocol": "tcp"}],
                "environment": [],
                "mountPoints": [],
                "volumesFrom": [],
                "systemControls": []
            }
        ])
    );
}

#[test]
fn normalising_twice_changes_nothing() {
    let once = validate(edited(|v| {
        v["cpu"] = json!(".5 vCPU");
        v["memory"] = json!("1GB");
        sidecar(v);
    }))
    .expect("valid");
    let twice = validate_for_fargate(once.clone()).expect("still valid");
    assert_eq!(once, twice);
}
