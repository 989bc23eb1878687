//! One case per rule: each edit of the seed breaks exactly one rule, and the error must name
//! the member to fix.

use serde_json::{Value, json};

use super::{Edit, edited, remove, sidecar, validate, web};

fn with_volume(v: &mut Value) {
    v["volumes"] = json!([{"name": "data", "host": {}}]);
}

#[test]
fn every_rule_names_its_field() {
    let cases: &[(&str, &str, Edit)] = &[
        // Task level.
        ("family empty", "family", |v| v["family"] = json!("")),
        ("family characters", "family", |v| v["family"] = json!("web.app")),
        ("family length", "family", |v| v["family"] = json!("f".repeat(256))),
        ("networkMode missing", "networkMode", |v| remove(v, "networkMode")),
        ("networkMode bridge", "networkMode", |v| v["networkMode"] = json!("bridge")),
        ("compatibility EXTERNAL", "requiresCompatibilities[1]", |v| {
            v["requiresCompatibilities"] = json!(["FARGATE", "EXTERNAL"])
        }),
        ("compatibility unknown", "requiresCompatibilities[0]", |v| v["requiresCompatibilities"] = json!(["LAMBDA"])),
        ("cpu missing", "cpu", |v| remove(v, "cpu")),
        ("cpu unparseable", "cpu", |v| v["cpu"] = json!("lots")),
        ("cpu not a Fargate size", "cpu", |v| v["cpu"] = json!("300")),
        ("memory missing", "memory", |v| remove(v, "memory")),
        ("memory unparseable", "memory", |v| v["memory"] = json!("2 TB")),
        ("memory not allowed for cpu", "memory", |v| v["memory"] = json!("4096")),
        ("ipcMode", "ipcMode", |v| v["ipcMode"] = json!("task")),
        ("pidMode host", "pidMode", |v| v["pidMode"] = json!("host")),
        ("placementConstraints", "placementConstraints", |v| {
            v["placementConstraints"] = json!([{"type": "memberOf", "expression": "x"}])
        }),
        ("inferenceAccelerators", "inferenceAccelerators", |v| {
            v["inferenceAccelerators"] = json!([{"deviceName": "d", "deviceType": "eia2.medium"}])
        }),
        ("ephemeral storage too small", "ephemeralStorage.sizeInGiB", |v| {
            v["ephemeralStorage"] = json!({"sizeInGiB": 20})
        }),
        ("ephemeral storage too large", "ephemeralStorage.sizeInGiB", |v| {
            v["ephemeralStorage"] = json!({"sizeInGiB": 201})
        }),
        ("windows", "runtimePlatform.operatingSystemFamily", |v| {
            v["runtimePlatform"] = json!({"operatingSystemFamily": "WINDOWS_SERVER_2022_CORE"})
        }),
        ("cpu architecture", "runtimePlatform.cpuArchitecture", |v| {
            v["runtimePlatform"] = json!({"cpuArchitecture": "I386"})
        }),
        ("volume name missing", "volumes[0].name", |v| v["volumes"] = json!([{"host": {}}])),
        ("volume name characters", "volumes[0].name", |v| v["volumes"] = json!([{"name": "my data"}])),
        ("volume name duplicate", "volumes[1].name", |v| v["volumes"] = json!([{"name": "data"}, {"name": "data"}])),
        ("host sourcePath", "volumes[0].host.sourcePath", |v| {
            v["volumes"] = json!([{"name": "data", "host": {"sourcePath": "/var/data"}}])
        }),
        ("docker volume", "volumes[0].dockerVolumeConfiguration", |v| {
            v["volumes"] = json!([{"name": "data", "dockerVolumeConfiguration": {"scope": "task"}}])
        }),
        ("fsx windows volume", "volumes[0].fsxWindowsFileServerVolumeConfiguration", |v| {
            v["volumes"] = json!([{"name": "data", "fsxWindowsFileServerVolumeConfiguration": {
                "fileSystemId": "fs-1", "rootDirectory": "share"
            }}])
        }),
        ("efs rootDirectory with ..", "volumes[0].efsVolumeConfiguration.rootDirectory", |v| {
            v["volumes"] = json!([{"name": "data", "efsVolumeConfiguration": {
                "fileSystemId": "fs-1", "rootDirectory": "/app/../etc"
            }}])
        }),
        ("efs access point with rootDirectory", "volumes[0].efsVolumeConfiguration.rootDirectory", |v| {
            v["volumes"] = json!([{"name": "data", "efsVolumeConfiguration": {
                "fileSystemId": "fs-1", "rootDirectory": "/app", "transitEncryption": "ENABLED",
                "authorizationConfig": {"accessPointId": "fsap-1"}
            }}])
        }),
        ("efs access point without transit encryption", "volumes[0].efsVolumeConfiguration.transitEncryption", |v| {
            v["volumes"] = json!([{"name": "data", "efsVolumeConfiguration": {
                "fileSystemId": "fs-1", "authorizationConfig": {"accessPointId": "fsap-1"}
            }}])
        }),
        ("efs iam without transit encryption", "volumes[0].efsVolumeConfiguration.transitEncryption", |v| {
            v["volumes"] = json!([{"name": "data", "efsVolumeConfiguration": {
                "fileSystemId": "fs-1", "transitEncryption": "DISABLED", "authorizationConfig": {"iam": "ENABLED"}
            }}])
        }),
        ("efs and host", "volumes[0]", |v| {
            v["volumes"] =
                json!([{"name": "data", "host": {"x": 1}, "efsVolumeConfiguration": {"fileSystemId": "fs-1"}}])
        }),
        ("no containers", "containerDefinitions", |v| v["containerDefinitions"] = json!([])),
        ("eleven containers", "containerDefinitions", |v| {
            v["containerDefinitions"] = (0..11).map(|i| json!({"name": format!("c{i}"), "image": "busybox"})).collect();
        }),
        // Identity.
        ("container name missing", "containerDefinitions[0].name", |v| remove(web(v), "name")),
        ("container name characters", "containerDefinitions[0].name", |v| web(v)["name"] = json!("web app")),
        ("container name duplicate", "containerDefinitions[1].name", |v| sidecar(v)["name"] = json!("web-app")),
        ("image missing", "containerDefinitions[0].image", |v| remove(web(v), "image")),
        ("image empty", "containerDefinitions[0].image", |v| web(v)["image"] = json!("")),
        // Members Fargate rejects.
        ("disableNetworking", "containerDefinitions[0].disableNetworking", |v| {
            web(v)["disableNetworking"] = json!(true)
        }),
        ("dnsSearchDomains", "containerDefinitions[0].dnsSearchDomains", |v| {
            web(v)["dnsSearchDomains"] = json!(["example.com"])
        }),
        ("dnsServers", "containerDefinitions[0].dnsServers", |v| web(v)["dnsServers"] = json!(["10.0.0.2"])),
        ("dockerSecurityOptions", "containerDefinitions[0].dockerSecurityOptions", |v| {
            web(v)["dockerSecurityOptions"] = json!(["no-new-privileges"])
        }),
        ("extraHosts", "containerDefinitions[0].extraHosts", |v| {
            web(v)["extraHosts"] = json!([{"hostname": "db", "ipAddress": "10.0.0.5"}])
        }),
        ("hostname", "containerDefinitions[0].hostname", |v| web(v)["hostname"] = json!("web")),
        ("links", "containerDefinitions[0].links", |v| web(v)["links"] = json!(["db:db"])),
        ("privileged", "containerDefinitions[0].privileged", |v| web(v)["privileged"] = json!(true)),
        ("gpu", "containerDefinitions[0].resourceRequirements[0].type", |v| {
            web(v)["resourceRequirements"] = json!([{"type": "GPU", "value": "1"}])
        }),
        ("inference accelerator", "containerDefinitions[0].resourceRequirements[0].type", |v| {
            web(v)["resourceRequirements"] = json!([{"type": "InferenceAccelerator", "value": "d"}])
        }),
        ("devices", "containerDefinitions[0].linuxParameters.devices", |v| {
            web(v)["linuxParameters"] = json!({"devices": [{"hostPath": "/dev/fuse"}]})
        }),
        ("sharedMemorySize", "containerDefinitions[0].linuxParameters.sharedMemorySize", |v| {
            web(v)["linuxParameters"] = json!({"sharedMemorySize": 64})
        }),
        ("tmpfs", "containerDefinitions[0].linuxParameters.tmpfs", |v| {
            web(v)["linuxParameters"] = json!({"tmpfs": [{"containerPath": "/tmp", "size": 64}]})
        }),
        ("maxSwap", "containerDefinitions[0].linuxParameters.maxSwap", |v| {
            web(v)["linuxParameters"] = json!({"maxSwap": 0})
        }),
        ("swappiness", "containerDefinitions[0].linuxParameters.swappiness", |v| {
            web(v)["linuxParameters"] = json!({"swappiness": 10})
        }),
        ("capability add", "containerDefinitions[0].linuxParameters.capabilities.add[1]", |v| {
            web(v)["linuxParameters"] = json!({"capabilities": {"add": ["SYS_PTRACE", "NET_ADMIN"]}})
        }),
        ("capability drop unknown", "containerDefinitions[0].linuxParameters.capabilities.drop[0]", |v| {
            web(v)["linuxParameters"] = json!({"capabilities": {"drop": ["BOGUS"]}})
        }),
        ("capability drop prefixed", "containerDefinitions[0].linuxParameters.capabilities.drop[1]", |v| {
            web(v)["linuxParameters"] = json!({"capabilities": {"drop": ["NET_RAW", "CAP_CHOWN"]}})
        }),
        // Resources.
        ("container cpu negative", "containerDefinitions[0].cpu", |v| web(v)["cpu"] = json!(-1)),
        ("container cpu total", "containerDefinitions[1].cpu", |v| {
            web(v)["cpu"] = json!(200);
            sidecar(v)["cpu"] = json!(100);
        }),
        ("memory below minimum", "containerDefinitions[0].memory", |v| web(v)["memory"] = json!(4)),
        ("memoryReservation below minimum", "containerDefinitions[0].memoryReservation", |v| {
            web(v)["memoryReservation"] = json!(5)
        }),
        ("memoryReservation above memory", "containerDefinitions[0].memoryReservation", |v| {
            web(v)["memory"] = json!(256);
            web(v)["memoryReservation"] = json!(300);
        }),
        ("container memory above task", "containerDefinitions[0].memory", |v| web(v)["memory"] = json!(1024)),
        ("reserved memory total", "containerDefinitions[1].memoryReservation", |v| {
            web(v)["memoryReservation"] = json!(300);
            sidecar(v)["memoryReservation"] = json!(300);
        }),
        ("hard limit counts when no reservation", "containerDefinitions[1].memory", |v| {
            web(v)["memory"] = json!(300);
            sidecar(v)["memory"] = json!(300);
        }),
        // Logging.
        ("log driver", "containerDefinitions[0].logConfiguration.logDriver", |v| {
            web(v)["logConfiguration"] = json!({"logDriver": "json-file"})
        }),
        ("awslogs group", "containerDefinitions[0].logConfiguration.options.awslogs-group", |v| {
            remove(&mut web(v)["logConfiguration"]["options"], "awslogs-group")
        }),
        ("awslogs stream prefix", "containerDefinitions[0].logConfiguration.options.awslogs-stream-prefix", |v| {
            remove(&mut web(v)["logConfiguration"]["options"], "awslogs-stream-prefix")
        }),
        ("firelens without router", "containerDefinitions[0].logConfiguration.logDriver", |v| {
            web(v)["logConfiguration"] = json!({"logDriver": "awsfirelens"})
        }),
        ("log secret valueFrom", "containerDefinitions[0].logConfiguration.secretOptions[0].valueFrom", |v| {
            web(v)["logConfiguration"] = json!({"logDriver": "splunk",
                    "secretOptions": [{"name": "splunk-token", "valueFrom": ""}]})
        }),
        // Ports.
        ("containerPort zero", "containerDefinitions[0].portMappings[0].containerPort", |v| {
            web(v)["portMappings"] = json!([{"containerPort": 0}])
        }),
        ("containerPort too large", "containerDefinitions[0].portMappings[0].containerPort", |v| {
            web(v)["portMappings"] = json!([{"containerPort": 65536}])
        }),
        ("containerPort missing", "containerDefinitions[0].portMappings[0].containerPort", |v| {
            web(v)["portMappings"] = json!([{"protocol": "tcp"}])
        }),
        ("hostPort differs", "containerDefinitions[0].portMappings[0].hostPort", |v| {
            web(v)["portMappings"] = json!([{"containerPort": 80, "hostPort": 8080}])
        }),
        ("protocol", "containerDefinitions[0].portMappings[0].protocol", |v| {
            web(v)["portMappings"] = json!([{"containerPort": 80, "protocol": "sctp"}])
        }),
        ("port taken by another container", "containerDefinitions[1].portMappings[0].containerPort", |v| {
            sidecar(v)["portMappings"] = json!([{"containerPort": 80}])
        }),
        ("port taken twice in a container", "containerDefinitions[0].portMappings[1].containerPort", |v| {
            web(v)["portMappings"] = json!([{"containerPort": 80}, {"containerPort": 80, "protocol": "tcp"}])
        }),
        ("port range malformed", "containerDefinitions[0].portMappings[0].containerPortRange", |v| {
            web(v)["portMappings"] = json!([{"containerPortRange": "9000-8000"}])
        }),
        ("port range with containerPort", "containerDefinitions[0].portMappings[0].containerPortRange", |v| {
            web(v)["portMappings"] = json!([{"containerPort": 80, "containerPortRange": "80-90"}])
        }),
        ("port range with hostPort", "containerDefinitions[0].portMappings[0].hostPort", |v| {
            web(v)["portMappings"] = json!([{"containerPortRange": "8000-8010", "hostPort": 8000}])
        }),
        ("port range overlaps", "containerDefinitions[1].portMappings[0].containerPortRange", |v| {
            sidecar(v)["portMappings"] = json!([{"containerPortRange": "70-90"}])
        }),
        // Environment and secrets.
        ("env name leading digit", "containerDefinitions[0].environment[0].name", |v| {
            web(v)["environment"] = json!([{"name": "1ABC", "value": "x"}])
        }),
        ("env name hyphen", "containerDefinitions[0].environment[1].name", |v| {
            web(v)["environment"] = json!([{"name": "OK", "value": "x"}, {"name": "MY-VAR", "value": "x"}])
        }),
        ("env name missing", "containerDefinitions[0].environment[0].name", |v| {
            web(v)["environment"] = json!([{"value": "x"}])
        }),
        ("env name duplicate", "containerDefinitions[0].environment[1].name", |v| {
            web(v)["environment"] = json!([{"name": "A", "value": "1"}, {"name": "A", "value": "2"}])
        }),
        ("secret name", "containerDefinitions[0].secrets[0].name", |v| {
            web(v)["secrets"] = json!([{"name": "db.password", "valueFrom": "arn:aws:ssm:x"}])
        }),
        ("secret valueFrom", "containerDefinitions[0].secrets[0].valueFrom", |v| {
            web(v)["secrets"] = json!([{"name": "DB_PASSWORD", "valueFrom": ""}])
        }),
        ("secret duplicate", "containerDefinitions[0].secrets[1].name", |v| {
            web(v)["secrets"] = json!([{"name": "S", "valueFrom": "a"}, {"name": "S", "valueFrom": "b"}])
        }),
        // Dependencies.
        ("dependsOn unknown", "containerDefinitions[0].dependsOn[0].containerName", |v| {
            web(v)["dependsOn"] = json!([{"containerName": "db", "condition": "START"}])
        }),
        ("dependsOn itself", "containerDefinitions[0].dependsOn[0].containerName", |v| {
            web(v)["dependsOn"] = json!([{"containerName": "web-app", "condition": "START"}])
        }),
        ("dependsOn condition", "containerDefinitions[0].dependsOn[0].condition", |v| {
            sidecar(v);
            web(v)["dependsOn"] = json!([{"containerName": "sidecar", "condition": "READY"}]);
        }),
        ("COMPLETE on essential", "containerDefinitions[0].dependsOn[0].condition", |v| {
            sidecar(v)["essential"] = json!(true);
            web(v)["dependsOn"] = json!([{"containerName": "sidecar", "condition": "COMPLETE"}]);
        }),
        ("SUCCESS on default-essential", "containerDefinitions[0].dependsOn[0].condition", |v| {
            remove(sidecar(v), "essential");
            web(v)["dependsOn"] = json!([{"containerName": "sidecar", "condition": "SUCCESS"}]);
        }),
        ("HEALTHY without healthCheck", "containerDefinitions[0].dependsOn[0].condition", |v| {
            sidecar(v);
            web(v)["dependsOn"] = json!([{"containerName": "sidecar", "condition": "HEALTHY"}]);
        }),
        ("HEALTHY on a NONE healthCheck", "containerDefinitions[0].dependsOn[0].condition", |v| {
            sidecar(v)["healthCheck"] = json!({"command": ["NONE"]});
            web(v)["dependsOn"] = json!([{"containerName": "sidecar", "condition": "HEALTHY"}]);
        }),
        ("dependsOn cycle", "containerDefinitions[0].dependsOn[0].containerName", |v| {
            sidecar(v)["dependsOn"] = json!([{"containerName": "web-app", "condition": "START"}]);
            web(v)["dependsOn"] = json!([{"containerName": "sidecar", "condition": "START"}]);
        }),
        ("volumesFrom cycle", "containerDefinitions[0].volumesFrom[0].sourceContainer", |v| {
            sidecar(v)["dependsOn"] = json!([{"containerName": "web-app", "condition": "START"}]);
            web(v)["volumesFrom"] = json!([{"sourceContainer": "sidecar"}]);
        }),
        // Health checks.
        ("healthCheck command empty", "containerDefinitions[0].healthCheck.command", |v| {
            web(v)["healthCheck"] = json!({"command": []})
        }),
        ("healthCheck command kind", "containerDefinitions[0].healthCheck.command", |v| {
            web(v)["healthCheck"] = json!({"command": ["curl", "-f", "http://localhost/"]})
        }),
        ("healthCheck command bare CMD", "containerDefinitions[0].healthCheck.command", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD"]})
        }),
        ("interval low", "containerDefinitions[0].healthCheck.interval", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "interval": 4})
        }),
        ("interval high", "containerDefinitions[0].healthCheck.interval", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "interval": 301})
        }),
        ("timeout low", "containerDefinitions[0].healthCheck.timeout", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "timeout": 1})
        }),
        ("timeout high", "containerDefinitions[0].healthCheck.timeout", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "timeout": 61})
        }),
        ("retries low", "containerDefinitions[0].healthCheck.retries", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "retries": 0})
        }),
        ("retries high", "containerDefinitions[0].healthCheck.retries", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "retries": 11})
        }),
        ("startPeriod low", "containerDefinitions[0].healthCheck.startPeriod", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "startPeriod": -1})
        }),
        ("startPeriod high", "containerDefinitions[0].healthCheck.startPeriod", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "startPeriod": 301})
        }),
        ("timeout not below interval", "containerDefinitions[0].healthCheck.timeout", |v| {
            web(v)["healthCheck"] = json!({"command": ["CMD", "true"], "interval": 10, "timeout": 10})
        }),
        // Timeouts.
        ("stopTimeout high", "containerDefinitions[0].stopTimeout", |v| web(v)["stopTimeout"] = json!(121)),
        ("stopTimeout negative", "containerDefinitions[0].stopTimeout", |v| web(v)["stopTimeout"] = json!(-1)),
        ("startTimeout low", "containerDefinitions[0].startTimeout", |v| web(v)["startTimeout"] = json!(1)),
        ("startTimeout high", "containerDefinitions[0].startTimeout", |v| web(v)["startTimeout"] = json!(121)),
        // Storage.
        ("mount unknown volume", "containerDefinitions[0].mountPoints[0].sourceVolume", |v| {
            web(v)["mountPoints"] = json!([{"sourceVolume": "data", "containerPath": "/data"}])
        }),
        ("mount without volume", "containerDefinitions[0].mountPoints[0].sourceVolume", |v| {
            with_volume(v);
            web(v)["mountPoints"] = json!([{"containerPath": "/data"}]);
        }),
        ("mount relative path", "containerDefinitions[0].mountPoints[0].containerPath", |v| {
            with_volume(v);
            web(v)["mountPoints"] = json!([{"sourceVolume": "data", "containerPath": "data"}]);
        }),
        ("mount without path", "containerDefinitions[0].mountPoints[0].containerPath", |v| {
            with_volume(v);
            web(v)["mountPoints"] = json!([{"sourceVolume": "data"}]);
        }),
        ("volumesFrom unknown", "containerDefinitions[0].volumesFrom[0].sourceContainer", |v| {
            web(v)["volumesFrom"] = json!([{"sourceContainer": "db"}])
        }),
        ("volumesFrom itself", "containerDefinitions[0].volumesFrom[0].sourceContainer", |v| {
            web(v)["volumesFrom"] = json!([{"sourceContainer": "web-app"}])
        }),
        // Ulimits.
        ("ulimit name", "containerDefinitions[0].ulimits[0].name", |v| {
            web(v)["ulimits"] = json!([{"name": "openfiles", "softLimit": 1, "hardLimit": 1}])
        }),
        ("ulimit soft above hard", "containerDefinitions[0].ulimits[0].softLimit", |v| {
            web(v)["ulimits"] = json!([{"name": "nofile", "softLimit": 2048, "hardLimit": 1024}])
        }),
        ("ulimit negative", "containerDefinitions[0].ulimits[0].hardLimit", |v| {
            web(v)["ulimits"] = json!([{"name": "nofile", "softLimit": 0, "hardLimit": -1}])
        }),
        // Whole task.
        ("no essential container", "containerDefinitions", |v| web(v)["essential"] = json!(false)),
    ];
    for &(rule, field, edit) in cases {
        let err = validate(edited(edit)).expect_err(rule);
        assert_eq!(err.field, field, "{rule}: {}", err.message);
        assert!(
            err.message.starts_with(&format!("{field}: ")),
            "{rule}: message must lead with the field: {}",
            err.message
        );
        assert_eq!(err.to_string(), err.message, "{rule}");
    }
}
