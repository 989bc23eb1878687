//! The `flotilla` subcommands people use.

mod common;

use common::Server;

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "flotilla failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn clusters_and_task_definitions_as_tables_and_json() {
    let server = Server::start();
    stdout(&server.flotilla(&["clusters", "create", "prod"]));
    let table = stdout(&server.flotilla(&["clusters"]));
    assert!(table.contains("NAME") && table.contains("prod") && table.contains("ACTIVE"), "{table}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("td.json");
    std::fs::write(&file, common::SEED_TASK_DEFINITION).unwrap();
    stdout(&server.flotilla(&["task-definitions", "register", file.to_str().unwrap()]));
    let table = stdout(&server.flotilla(&["task-definitions"]));
    assert!(table.contains("fargate-task") && table.contains("web-app (nginx:latest)"), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&stdout(&server.flotilla(&["task-definitions", "--output", "json"]))).unwrap();
    assert_eq!(json["taskDefinitions"][0]["family"], "fargate-task");
    let json: serde_json::Value = serde_json::from_str(&stdout(&server.flotilla(&["clusters", "-o", "json"]))).unwrap();
    assert_eq!(json["clusters"][0]["clusterName"], "prod");
}

#[test]
fn errors_say_what_to_do() {
    let server = Server::start();
    let out = server.flotilla(&["task-definitions", "show", "nope:1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ClientException"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["clusters"])
        .env("FLOTILLA_DATA_DIR", dir.path())
        .env_remove("FLOTILLA_ENDPOINT")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("flotilla up"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn up_generates_credentials_once_and_refuses_identity_change() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            // The API alone: this test is about identity, and an agent would set up task
            // networking in the machine's own namespace before being killed.
            .args(["up", "--no-agent", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .env_remove("FLOTILLA_ACCESS_KEY_ID")
            .env_remove("FLOTILLA_SECRET_ACCESS_KEY")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let creds = dir.path().join("endpoint");
        common::wait_for("endpoint file", std::time::Duration::from_secs(30), || {
            creds.exists() || child.try_wait().unwrap().is_some()
        });
        let _ = std::fs::remove_file(&creds);
        let _ = child.kill();
        child.wait_with_output().unwrap()
    };
    let first = String::from_utf8_lossy(&run(&[]).stdout).into_owned();
    assert!(first.contains("aws configure set aws_access_key_id AKIA"), "{first}");
    assert!(first.contains("--endpoint-url http://127.0.0.1:"), "{first}");
    let stored = std::fs::read_to_string(dir.path().join("credentials.json")).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("credentials.json")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let second = String::from_utf8_lossy(&run(&[]).stdout).into_owned();
    let key = |s: &str| s.lines().find(|l| l.contains("aws_access_key_id")).map(str::to_owned);
    assert_eq!(key(&first), key(&second), "credentials are generated once");
    assert!(stored.contains(&key(&first).unwrap().split_whitespace().nth(4).unwrap().to_owned()));
    let changed = run(&["--region", "eu-west-1"]);
    assert!(!changed.status.success());
    assert!(String::from_utf8_lossy(&changed.stderr).contains("us-east-1"));
}
