//! Fargate tasks for real: images from a real registry, real sandboxes (namespaces, cgroups,
//! runc), the lifecycle through the AWS CLI and the SDK, logs through CloudWatch Logs.
//! Privileged: CI runs these as root, like the server itself.

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use common::{Server, wait_for};
use serde_json::{Value, json};

#[test]
fn exit_code_and_essential_container_exit() {
    let f = Fixture::new();
    let td = f.register(
        "exit3",
        json!([f.container("main", &["sh", "-c", "echo hello from fargate; echo oops >&2; exit 3"])]),
        json!({}),
    );
    let task = f.run(&td);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(120));
    assert_eq!(stopped["containers"][0]["exitCode"], 3, "{stopped}");
    assert_eq!(stopped["stopCode"], "EssentialContainerExited");
    assert_eq!(stopped["stoppedReason"], "Essential container in task exited");
    for ts in ["pullStartedAt", "pullStoppedAt", "startedAt", "stoppingAt", "executionStoppedAt", "stoppedAt"] {
        assert!(stopped[ts].is_number(), "{ts} missing: {stopped}");
    }
    assert!(stopped["containers"][0]["imageDigest"].as_str().unwrap().starts_with("sha256:"));
    let lines = f.wait_log(&task, "main", "hello from fargate");
    assert!(lines.iter().any(|l| l == "oops"), "stderr is shipped too: {lines:?}");
}

#[test]
fn web_app_is_reachable_from_a_sibling_container_over_localhost() {
    let f = Fixture::new();
    let mut web = f.container(
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo '<h1>Amazon ECS Sample App</h1>' > /www/index.html && exec httpd -f -p 80 -h /www",
        ],
    );
    web["portMappings"] = json!([{"containerPort": 80, "protocol": "tcp"}]);
    let mut probe = f.container(
        "probe",
        &["sh", "-c", "for i in $(seq 50); do wget -q -O- http://127.0.0.1:80/ && exit 0; sleep 0.2; done; exit 1"],
    );
    probe["essential"] = json!(false);
    probe["dependsOn"] = json!([{"containerName": "web", "condition": "START"}]);
    let td = f.register("web", json!([web, probe]), json!({}));
    let task = f.run(&td);
    f.wait_status(&task, "RUNNING", Duration::from_secs(120));
    f.wait_log(&task, "probe", "Amazon ECS Sample App");
    wait_for("probe to exit 0", Duration::from_secs(60), || {
        let t = f.describe(&task);
        t["containers"].as_array().unwrap().iter().any(|c| c["name"] == "probe" && c["exitCode"] == 0)
    });
    // The essential web server keeps the task running after the probe exits.
    assert_eq!(f.describe(&task)["lastStatus"], "RUNNING");
    f.server.aws_json(&["ecs", "stop-task", "--task", &task, "--reason", "done testing"]);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(60));
    assert_eq!(stopped["stopCode"], "UserInitiated");
    assert_eq!(stopped["stoppedReason"], "done testing");
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    let f = Fixture::new();
    let mut hog = f.container("hog", &["sh", "-c", "echo start; x=a; while true; do x=$x$x; done"]);
    hog["memory"] = json!(64);
    let td = f.register("oom", json!([hog]), json!({}));
    let task = f.run(&td);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(120));
    let c = &stopped["containers"][0];
    assert_eq!(c["exitCode"], 137, "{stopped}");
    assert_eq!(c["reason"], "OutOfMemoryError: Container killed due to memory usage");
}

#[test]
fn sigterm_ignoring_task_is_killed_after_stop_timeout() {
    let f = Fixture::new();
    let mut stubborn =
        f.container("stubborn", &["sh", "-c", "trap 'echo got TERM' TERM; echo ready; while true; do sleep 0.1; done"]);
    stubborn["stopTimeout"] = json!(3);
    let td = f.register("stubborn", json!([stubborn]), json!({}));
    let task = f.run(&td);
    f.wait_status(&task, "RUNNING", Duration::from_secs(120));
    f.wait_log(&task, "stubborn", "ready");
    let asked = std::time::Instant::now();
    f.server.aws_json(&["ecs", "stop-task", "--task", &task]);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(60));
    let took = asked.elapsed();
    assert!(took >= Duration::from_secs(3), "SIGKILL must wait for stopTimeout, stopped after {took:?}");
    assert_eq!(stopped["containers"][0]["exitCode"], 137, "{stopped}");
    f.wait_log(&task, "stubborn", "got TERM");
}

#[test]
fn depends_on_orders_start_and_shares_volumes() {
    let f = Fixture::new();
    let mut init = f.container("init", &["sh", "-c", "sleep 1; echo prepared > /data/marker; exit 0"]);
    init["essential"] = json!(false);
    init["mountPoints"] = json!([{"sourceVolume": "shared", "containerPath": "/data"}]);
    let mut app = f.container("app", &["sh", "-c", "cat /data/marker; sleep 1000"]);
    app["dependsOn"] = json!([{"containerName": "init", "condition": "SUCCESS"}]);
    app["mountPoints"] = json!([{"sourceVolume": "shared", "containerPath": "/data", "readOnly": true}]);
    let td = f.register("ordered", json!([init, app]), json!({"volumes": [{"name": "shared"}]}));
    let task = f.run(&td);
    f.wait_log(&task, "app", "prepared");
    f.server.aws_json(&["ecs", "stop-task", "--task", &task]);
    f.wait_status(&task, "STOPPED", Duration::from_secs(60));
}

#[test]
fn isolation_and_limits_from_inside() {
    let f = Fixture::new();
    let script = "echo pid1=$(cat /proc/1/cmdline | tr '\\0' ' '); echo procs=$(ls /proc | grep -c '^[0-9]'); \
                  echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max); \
                  echo quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cat /sys/fs/cgroup/cpu.max); \
                  echo meta=$(wget -q -O- $ECS_CONTAINER_METADATA_URI_V4/task); sleep 1000";
    let td = f.register(
        "inside",
        json!([f.container("probe", &["sh", "-c", script])]),
        json!({"cpu": "512", "memory": "1024"}),
    );
    let task = f.run(&td);
    // The script's own text (PID 1's command line, the first line out) names "meta=" too:
    // wait for the line the wget prints.
    let mut lines = Vec::new();
    wait_for("the metadata line", Duration::from_secs(60), || {
        lines = f.logs(&task, "probe");
        lines.iter().any(|l| l.starts_with("meta="))
    });
    let value = |k: &str| lines.iter().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_default().to_owned();
    assert!(value("pid1").starts_with("sh -c"), "PID 1 is the task's own process: {lines:?}");
    let procs: u32 = value("procs").trim().parse().unwrap();
    assert!(procs < 10, "host processes are invisible: {procs} pids in /proc");
    assert!(value("mem").contains(&(1024u64 * 1024 * 1024).to_string()), "memory limit: {lines:?}");
    assert!(value("quota").contains("50000"), "0.5 vCPU is half of a 100000 us period: {lines:?}");
    let meta: Value = serde_json::from_str(&value("meta")).unwrap_or(Value::Null);
    assert_eq!(meta["TaskARN"], task.as_str(), "task metadata endpoint: {lines:?}");
    assert_eq!(meta["Limits"]["CPU"], 0.5);
    f.server.aws_json(&["ecs", "stop-task", "--task", &task]);
    f.wait_status(&task, "STOPPED", Duration::from_secs(60));
}

#[test]
fn health_check_turns_unhealthy() {
    let f = Fixture::new();
    let mut c = f.container("svc", &["sh", "-c", "touch /tmp/ok; sleep 8; rm /tmp/ok; sleep 1000"]);
    c["healthCheck"] = json!({"command": ["CMD-SHELL", "test -f /tmp/ok"], "interval": 5, "timeout": 2, "retries": 1});
    let td = f.register("health", json!([c]), json!({}));
    let task = f.run(&td);
    wait_for("HEALTHY", Duration::from_secs(60), || f.describe(&task)["healthStatus"] == "HEALTHY");
    wait_for("UNHEALTHY", Duration::from_secs(60), || {
        let t = f.describe(&task);
        t["healthStatus"] == "UNHEALTHY" && t["containers"][0]["healthStatus"] == "UNHEALTHY"
    });
    f.server.aws_json(&["ecs", "stop-task", "--task", &task]);
    f.wait_status(&task, "STOPPED", Duration::from_secs(60));
}

#[test]
fn pull_failure_stops_the_task_with_cannot_pull() {
    let f = Fixture::new();
    let mut c = f.container("ghost", &["true"]);
    c["image"] = json!(f.image.replace("busybox:latest", "nothing-here:latest"));
    let td = f.register("ghost", json!([c]), json!({}));
    let task = f.run(&td);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(60));
    assert_eq!(stopped["stopCode"], "TaskFailedToStart");
    let reason = stopped["stoppedReason"].as_str().unwrap();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
}

#[test]
fn twenty_concurrent_run_tasks_all_start() {
    let f = Fixture::new();
    let td = f.register("many", json!([f.container("idle", &["sleep", "1000"])]), json!({}));
    let client = f.server.client();
    let arns = f.run_concurrently(&td, 20, &f.subnet);
    wait_for("20 tasks RUNNING", Duration::from_secs(180), || {
        let out = f.rt.block_on(client.ecs("DescribeTasks", json!({"tasks": arns}))).unwrap();
        out["tasks"].as_array().unwrap().iter().filter(|t| t["lastStatus"] == "RUNNING").count() == 20
    });
    for arn in &arns {
        f.rt.block_on(client.ecs("StopTask", json!({"task": arn}))).unwrap();
    }
    wait_for("20 tasks STOPPED", Duration::from_secs(180), || {
        let out = f.rt.block_on(client.ecs("DescribeTasks", json!({"tasks": arns}))).unwrap();
        out["tasks"].as_array().unwrap().iter().all(|t| t["lastStatus"] == "STOPPED")
    });
}

#[test]
fn tasks_survive_server_kill_9_and_are_adopted() {
    let f = Fixture::new();
    let long = f.register("long", json!([f.container("long", &["sh", "-c", "echo up; sleep 1000"])]), json!({}));
    let short = f.register("short", json!([f.container("short", &["sh", "-c", "sleep 4; exit 7"])]), json!({}));
    let long_task = f.run(&long);
    let short_task = f.run(&short);
    f.wait_status(&long_task, "RUNNING", Duration::from_secs(120));
    f.wait_status(&short_task, "RUNNING", Duration::from_secs(120));
    let data_dir = f.server.data_dir.clone();
    let Fixture { mut server, _registry, rt: _rt, .. } = f;
    server.kill9();
    // The short task exits while no server watches; its shim records the exit code.
    let short_id = short_task.rsplit('/').next().unwrap().to_owned();
    let state = data_dir.join("tasks").join(&short_id).join("state.json");
    wait_for("the short task to exit under its shim", Duration::from_secs(60), || {
        let raw = std::fs::read_to_string(&state).unwrap_or_default();
        serde_json::from_str::<Value>(&raw)
            .ok()
            .and_then(|v| v["containers"].as_array().cloned())
            .is_some_and(|cs| cs.iter().any(|c| c["exitCode"] == 7))
    });
    let server = Server::start_in(&data_dir);
    let describe = |t: &str| server.aws_json(&["ecs", "describe-tasks", "--tasks", t])["tasks"][0].clone();
    wait_for("short task reported with its real exit code", Duration::from_secs(60), || {
        let t = describe(&short_task);
        t["lastStatus"] == "STOPPED" && t["containers"][0]["exitCode"] == 7
    });
    assert_eq!(describe(&long_task)["lastStatus"], "RUNNING");
    server.aws_json(&["ecs", "stop-task", "--task", &long_task]);
    wait_for("adopted task stops", Duration::from_secs(60), || describe(&long_task)["lastStatus"] == "STOPPED");
}

#[test]
fn overrides_client_token_and_list_filters() {
    let f = Fixture::new();
    let td = f.register("over", json!([f.container("main", &["sh", "-c", "echo default"])]), json!({}));
    let overrides = json!({"containerOverrides": [{"name": "main", "command": ["sh", "-c", "echo value=$GREETING; sleep 1000"],
        "environment": [{"name": "GREETING", "value": "overridden"}]}]});
    let network = f.network();
    let run = |token: &str| {
        f.server.aws_json(&[
            "ecs",
            "run-task",
            "--task-definition",
            &td,
            "--launch-type",
            "FARGATE",
            "--started-by",
            "ci-job-7",
            "--client-token",
            token,
            "--overrides",
            &overrides.to_string(),
            "--network-configuration",
            &network,
        ])
    };
    let first = run("token-one");
    let again = run("token-one");
    let task = first["tasks"][0]["taskArn"].as_str().unwrap().to_owned();
    assert_eq!(again["tasks"][0]["taskArn"], task.as_str(), "same clientToken, same task");
    f.wait_log(&task, "main", "value=overridden");

    let listed = f.server.aws_json(&["ecs", "list-tasks", "--started-by", "ci-job-7"]);
    assert_eq!(listed["taskArns"], json!([task]));
    let listed = f.server.aws_json(&["ecs", "list-tasks", "--family", "over"]);
    assert_eq!(listed["taskArns"], json!([task]));
    let none = f.server.aws_json(&["ecs", "list-tasks", "--family", "other"]);
    assert_eq!(none["taskArns"], json!([]));
    let err = f.server.aws_err(&[
        "ecs",
        "run-task",
        "--task-definition",
        &td,
        "--launch-type",
        "FARGATE",
        "--overrides",
        r#"{"containerOverrides":[{"name":"nope"}]}"#,
        "--network-configuration",
        &network,
    ]);
    assert!(err.contains("InvalidParameterException") && err.contains("nope"), "{err}");
    // Subnets and security groups must exist, as on Fargate.
    let missing_subnet = "awsvpcConfiguration={subnets=[subnet-0123456789abcdef0]}";
    let err = f.server.aws_err(&[
        "ecs",
        "run-task",
        "--task-definition",
        &td,
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        missing_subnet,
    ]);
    assert!(err.contains("InvalidParameterException") && err.contains("subnet-0123456789abcdef0"), "{err}");
    let missing_group = format!("awsvpcConfiguration={{subnets=[{}],securityGroups=[sg-0123456789abcdef0]}}", f.subnet);
    let err = f.server.aws_err(&[
        "ecs",
        "run-task",
        "--task-definition",
        &td,
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &missing_group,
    ]);
    assert!(err.contains("InvalidParameterException") && err.contains("sg-0123456789abcdef0"), "{err}");
    let err = f.server.aws_err(&["ecs", "run-task", "--task-definition", &td, "--launch-type", "FARGATE"]);
    assert!(err.contains("InvalidParameterException") && err.contains("Network Configuration"), "{err}");

    f.server.aws_json(&["ecs", "stop-task", "--task", &task]);
    f.wait_status(&task, "STOPPED", Duration::from_secs(60));
    let stopped = f.server.aws_json(&["ecs", "list-tasks", "--desired-status", "STOPPED"]);
    assert!(stopped["taskArns"].as_array().unwrap().contains(&json!(task)));
}

#[test]
fn human_cli_shows_tasks_logs_and_images() {
    let f = Fixture::new();
    let td = f.register(
        "human",
        json!([f.container("app", &["sh", "-c", "echo line one; echo line two; sleep 1000"])]),
        json!({}),
    );
    let task = f.run(&td);
    f.wait_status(&task, "RUNNING", Duration::from_secs(120));
    f.wait_log(&task, "app", "line two");
    let id = task.rsplit('/').next().unwrap();
    let out = f.server.flotilla(&["tasks"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(id) && table.contains("RUNNING") && table.contains("human:1"), "{table}");
    let out = f.server.flotilla(&["logs", id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "line one\nline two\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = f.server.flotilla(&["image", "ls"]);
    let images = String::from_utf8_lossy(&out.stdout);
    assert!(images.contains("busybox:latest"), "the agent's pulls land in the host's image store: {images}");

    // --follow ends by itself once the task has stopped and its output is drained.
    f.server.aws_json(&["ecs", "stop-task", "--task", &task]);
    let out = f.server.flotilla(&["logs", id, "--follow"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("line two"));
}

#[test]
fn sdk_runs_a_task_to_completion() {
    use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_ecs::types::{AwsVpcConfiguration, LaunchType, NetworkConfiguration};
    let f = Fixture::new();
    let td = f.register("sdk-task", json!([f.container("main", &["sh", "-c", "exit 5"])]), json!({}));
    let config = aws_sdk_ecs::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(common::ACCESS_KEY, common::SECRET_KEY, None, None, "test"))
        .endpoint_url(f.server.endpoint())
        .build();
    let ecs = aws_sdk_ecs::Client::from_conf(config);
    let task = f.rt.block_on(async {
        let network = NetworkConfiguration::builder()
            .awsvpc_configuration(AwsVpcConfiguration::builder().subnets(&f.subnet).build().unwrap())
            .build();
        let out = ecs
            .run_task()
            .task_definition(&td)
            .launch_type(LaunchType::Fargate)
            .network_configuration(network)
            .send()
            .await
            .unwrap();
        out.tasks()[0].task_arn().unwrap().to_owned()
    });
    wait_for("the SDK sees the task STOPPED", Duration::from_secs(120), || {
        f.rt.block_on(async {
            let out = ecs.describe_tasks().tasks(&task).send().await.unwrap();
            let t = &out.tasks()[0];
            t.last_status() == Some("STOPPED") && t.containers()[0].exit_code() == Some(5)
        })
    });
}

#[test]
fn imported_image_runs_on_a_host_without_registry_access() {
    use flotilla_image::testing::{busybox_image, oci_layout};
    let f = Fixture::new();
    let image = busybox_image();
    let mut descriptor = image.descriptor();
    descriptor["annotations"] = json!({"io.containerd.image.name": "offline.invalid/tools/busybox:1.0"});
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.oci.tar");
    std::fs::write(&archive, oci_layout(&[&image], &[], json!([descriptor]))).unwrap();
    let out = f.server.flotilla(&["image", "import", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("offline.invalid/tools/busybox:1.0"));

    // offline.invalid cannot be resolved, so the pull fails and the imported copy is used.
    let mut c = f.container("offline", &["sh", "-c", "echo offline ok"]);
    c["image"] = json!("offline.invalid/tools/busybox:1.0");
    let td = f.register("offline", json!([c]), json!({}));
    let task = f.run(&td);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(120));
    assert_eq!(stopped["containers"][0]["exitCode"], 0, "{stopped}");
    f.wait_log(&task, "offline", "offline ok");
}
