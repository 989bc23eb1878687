//! What the human CLI picks when the user leaves something out: the subnet of `flotilla tasks
//! run`, and the name `flotilla image import --reference` gives an archive's image.

mod common;

use std::time::Duration;

use common::fixture::Fixture;
use common::{Server, stdout};
use serde_json::{Value, json};

fn default_subnets(server: &Server) -> Vec<String> {
    let out = server.aws_json(&["ec2", "describe-subnets", "--filters", "Name=default-for-az,Values=true"]);
    out["Subnets"].as_array().unwrap().iter().map(|s| s["SubnetId"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn tasks_run_without_subnet_uses_a_default_subnet() {
    let f = Fixture::new();
    let td = f.register("nosubnet", json!([f.container("app", &["sleep", "300"])]), json!({}));

    let out = f.server.flotilla(&["tasks", "run", &td, "-o", "json"]);
    let answer: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(answer["failures"], json!([]), "{answer}");
    let task = answer["tasks"][0]["taskArn"].as_str().unwrap().to_owned();

    let running = f.wait_status(&task, "RUNNING", Duration::from_secs(60));
    let details = running["attachments"][0]["details"].as_array().unwrap();
    let subnet = details.iter().find(|d| d["name"] == "subnetId").unwrap()["value"].as_str().unwrap();
    let defaults = default_subnets(&f.server);
    assert!(defaults.iter().any(|s| s == subnet), "{subnet} is not one of the default subnets {defaults:?}");
    f.stop_all(&[&task]);
}

#[test]
fn tasks_run_without_subnet_or_default_vpc_names_the_flag() {
    let server = Server::start();
    server.aws_json(&["ecs", "create-cluster", "--cluster-name", "default"]);
    let body = common::task_definition("nodefault").to_string();
    server.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &body]);
    for subnet in default_subnets(&server) {
        server.aws_json(&["ec2", "delete-subnet", "--subnet-id", &subnet]);
    }

    let out = server.flotilla(&["tasks", "run", "nodefault"]);
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--subnet") && err.contains("default subnet"), "{err}");
    let listed = server.aws_json(&["ecs", "list-tasks"]);
    assert_eq!(listed["taskArns"], json!([]), "nothing ran");
}

#[test]
fn image_import_keeps_the_tag_the_user_gave() {
    use flotilla_image::testing::{busybox_image, oci_layout};
    let image = busybox_image();
    let mut descriptor = image.descriptor();
    // The index names only a tag, as `skopeo copy ... oci-archive:` writes it.
    descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("busybox.oci.tar");
    std::fs::write(&archive, oci_layout(&[&image], &[], json!([descriptor]))).unwrap();
    let flotilla = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .args(args)
            .env("FLOTILLA_DATA_DIR", dir.path().join("data"))
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };

    let out = flotilla(&["image", "import", archive.to_str().unwrap(), "--reference", "local/busybox:1", "-o", "json"]);
    let imported: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(imported["imported"], json!(["docker.io/local/busybox:1"]));

    let listed: Value = serde_json::from_str(&stdout(&flotilla(&["image", "ls", "-o", "json"]))).unwrap();
    let names: Vec<&str> =
        listed["images"].as_array().unwrap().iter().map(|i| i["reference"].as_str().unwrap()).collect();
    assert_eq!(names, ["docker.io/local/busybox:1"]);
}
