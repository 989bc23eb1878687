//! EFS through the AWS CLI with real tasks: file systems and mount targets, a volume whose data
//! outlives tasks and a server restart, access points that pin a root directory and a POSIX
//! owner, and Fargate's refusals. Privileged, like tasks.rs.

mod common;

use std::path::Path;
use std::time::Duration;

use common::fixture::Fixture;
use common::{Server, wait_for};
use serde_json::{Value, json};

const STOP_REASON: &str = "ResourceInitializationError: failed to invoke EFS utils commands to set up EFS volumes";

fn create_fs(server: &Server, token: &str) -> String {
    let fs =
        server.aws_json(&["efs", "create-file-system", "--creation-token", token, "--tags", "Key=Name,Value=data"]);
    assert_eq!(fs["LifeCycleState"], "creating", "{fs}");
    fs["FileSystemId"].as_str().unwrap().to_owned()
}

fn mount_target(server: &Server, fs: &str, subnet: &str) -> Value {
    server.aws_json(&["efs", "create-mount-target", "--file-system-id", fs, "--subnet-id", subnet])
}

fn efs_volume(config: Value) -> Value {
    json!({"volumes": [{"name": "data", "efsVolumeConfiguration": config}]})
}

fn with_mount(mut container: Value) -> Value {
    container["mountPoints"] = json!([{"sourceVolume": "data", "containerPath": "/mnt/efs"}]);
    container
}

/// Mount points under the server's data dir that belong to EFS volumes.
fn efs_mounts(data_dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = data_dir.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir) && p.contains("/efs/"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn an_efs_volume_outlives_its_tasks_and_a_server_restart() {
    let f = Fixture::new();
    let fs = create_fs(&f.server, "one-token");
    // The same token makes no second file system: EFS answers with the first one's id.
    let again = f.server.aws_err(&["efs", "create-file-system", "--creation-token", "one-token"]);
    assert!(again.contains("FileSystemAlreadyExists"), "{again}");
    let listed = f.server.aws_json(&["efs", "describe-file-systems", "--creation-token", "one-token"]);
    assert_eq!(listed["FileSystems"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["FileSystems"][0]["FileSystemId"], fs.as_str());
    assert_eq!(listed["FileSystems"][0]["LifeCycleState"], "available");
    assert_eq!(listed["FileSystems"][0]["Name"], "data");

    let target = mount_target(&f.server, &fs, &f.subnet);
    let ip: std::net::Ipv4Addr = target["IpAddress"].as_str().unwrap().parse().unwrap();
    assert!(ip.octets()[0] == 172 && ip.octets()[1] == 31, "an address of the default VPC: {target}");
    let second = f.server.aws_err(&["efs", "create-mount-target", "--file-system-id", &fs, "--subnet-id", &f.subnet]);
    assert!(second.contains("MountTargetConflict"), "one mount target per zone: {second}");

    let writer = f.register(
        "efs-writer",
        json!([with_mount(f.container("w", &["sh", "-c", "echo persisted > /mnt/efs/hello && exit 0"]))]),
        efs_volume(json!({"fileSystemId": fs})),
    );
    let task = f.run(&writer);
    let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(120));
    assert_eq!(stopped["containers"][0]["exitCode"], 0, "{stopped}");
    assert_eq!(efs_mounts(&f.server.data_dir), Vec::<String>::new(), "nothing stays mounted after the task");

    // The server goes away and comes back on the same data dir.
    let data_dir = f.server.data_dir.clone();
    let Fixture { server: mut old, subnet, _registry, image, rt } = f;
    old.kill9();
    let f = Fixture { server: Server::start_in(&data_dir), subnet, _registry, image, rt };

    let reader = f.register(
        "efs-reader",
        json!([with_mount(f.container("r", &["sh", "-c", "cat /mnt/efs/hello; sleep 1000"]))]),
        efs_volume(json!({"fileSystemId": fs, "rootDirectory": "/"})),
    );
    let (a, b) = (f.run(&reader), f.run(&reader));
    f.wait_log(&a, "r", "persisted");
    f.wait_log(&b, "r", "persisted");
    let described = f.server.aws_json(&["efs", "describe-file-systems", "--file-system-id", &fs]);
    assert!(described["FileSystems"][0]["SizeInBytes"]["Value"].as_u64().unwrap() > 0, "{described}");
    assert_eq!(described["FileSystems"][0]["NumberOfMountTargets"], 1);
    f.stop_all(&[&a, &b]);
    assert_eq!(efs_mounts(&data_dir), Vec::<String>::new());

    let in_use = f.server.aws_err(&["efs", "delete-file-system", "--file-system-id", &fs]);
    assert!(in_use.contains("FileSystemInUse"), "{in_use}");
    let target_id = target["MountTargetId"].as_str().unwrap();
    f.server.aws(&["efs", "delete-mount-target", "--mount-target-id", target_id]);
    let out = f.server.aws(&["efs", "delete-file-system", "--file-system-id", &fs]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!data_dir.join("efs").join(&fs).exists(), "a deleted file system's data goes with it");
    let gone = f.server.aws_err(&["efs", "describe-file-systems", "--file-system-id", &fs]);
    assert!(gone.contains("FileSystemNotFound"), "{gone}");
    drop(old);
}

#[test]
fn two_tasks_of_one_service_share_a_file_system_at_the_same_time() {
    let f = Fixture::new();
    let fs = create_fs(&f.server, "shared-by-a-service");
    mount_target(&f.server, &fs, &f.subnet);
    // Each task writes its own file, then waits until it sees the other's: both mount the
    // same directory at once.
    let script = "h=$(hostname); echo $h > /mnt/efs/task-$h; \
                  until [ $(ls /mnt/efs | grep -c '^task-') -ge 2 ]; do sleep 0.2; done; \
                  echo both-seen; sleep 1000";
    let td = f.register(
        "efs-svc",
        json!([with_mount(f.container("s", &["sh", "-c", script]))]),
        efs_volume(json!({"fileSystemId": fs})),
    );
    let network = f.network();
    f.server.aws_json(&[
        "ecs",
        "create-service",
        "--service-name",
        "efs-svc",
        "--task-definition",
        &td,
        "--desired-count",
        "2",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
    ]);
    let mut tasks: Vec<String> = Vec::new();
    wait_for("the service's two tasks", Duration::from_secs(120), || {
        let listed = f.server.aws_json(&["ecs", "list-tasks", "--service-name", "efs-svc"]);
        tasks = listed["taskArns"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_owned()).collect();
        tasks.len() == 2
    });
    for task in &tasks {
        f.wait_log(task, "s", "both-seen");
    }
    let files = std::fs::read_dir(f.server.data_dir.join("efs").join(&fs)).unwrap().count();
    assert_eq!(files, 2, "one file from each task, in the file system's own directory");
    f.server.aws_json(&["ecs", "delete-service", "--service", "efs-svc", "--force"]);
    for task in &tasks {
        f.wait_status(task, "STOPPED", Duration::from_secs(120));
    }
    assert_eq!(efs_mounts(&f.server.data_dir), Vec::<String>::new(), "nothing stays mounted after the tasks");
}

#[test]
fn an_access_point_pins_its_root_directory_and_owner() {
    let f = Fixture::new();
    let fs = create_fs(&f.server, "ap-token");
    mount_target(&f.server, &fs, &f.subnet);
    let fs_dir = f.server.data_dir.join("efs").join(&fs);
    std::fs::write(fs_dir.join("secret"), "outside the access point\n").unwrap();
    let ap = f.server.aws_json(&[
        "efs",
        "create-access-point",
        "--file-system-id",
        &fs,
        "--posix-user",
        "Uid=1000,Gid=1000",
        "--root-directory",
        "Path=/app,CreationInfo={OwnerUid=1000,OwnerGid=1000,Permissions=0755}",
    ]);
    let ap_id = ap["AccessPointId"].as_str().unwrap().to_owned();
    let listed = f.server.aws_json(&["efs", "describe-access-points", "--file-system-id", &fs]);
    assert_eq!(listed["AccessPoints"][0]["RootDirectory"]["Path"], "/app", "{listed}");
    assert_eq!(listed["AccessPoints"][0]["PosixUser"]["Uid"], 1000);

    let config = json!({"fileSystemId": fs, "transitEncryption": "ENABLED",
        "authorizationConfig": {"accessPointId": ap_id, "iam": "DISABLED"}});
    let first = f.register(
        "efs-ap",
        json!([with_mount(f.container(
            "c",
            &["sh", "-c", "stat -c 'owner=%u:%g mode=%a' /mnt/efs; echo made > /mnt/efs/made; exit 0"]
        ))]),
        efs_volume(config.clone()),
    );
    let task = f.run(&first);
    f.wait_status(&task, "STOPPED", Duration::from_secs(120));
    let lines = f.wait_log(&task, "c", "owner=");
    // Through the access point the container (root) is the POSIX user: the root directory,
    // made from CreationInfo, is its own, and what it writes belongs to 1000 on disk.
    assert!(lines.iter().any(|l| l == "owner=0:0 mode=755"), "{lines:?}");
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata(fs_dir.join("app")).unwrap();
    assert_eq!((root.uid(), root.gid(), root.mode() & 0o7777), (1000, 1000, 0o755));
    let made = std::fs::metadata(fs_dir.join("app/made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (1000, 1000), "files created through the access point are the POSIX user's");
    assert_eq!(std::fs::read_to_string(fs_dir.join("app/made")).unwrap(), "made\n");

    // Links planted inside the access point's root lead nowhere above it.
    std::os::unix::fs::symlink("..", fs_dir.join("app/up")).unwrap();
    std::os::unix::fs::symlink("/", fs_dir.join("app/abs")).unwrap();
    let script = "ls /mnt/efs; cat /mnt/efs/../secret /mnt/efs/up/secret /mnt/efs/abs/secret 2>/dev/null \
                  && echo ESCAPED; echo checked; sleep 1000";
    // A container running as the POSIX user sees the root directory and what root wrote as
    // 1000's, as on EFS. (A root container sees them as its own: an idmapped mount trades the
    // container's user and the POSIX user, since no mapping can send every user to one.)
    let mut as_user =
        with_mount(f.container("u", &["sh", "-c", "stat -c 'as-user owner=%u:%g' /mnt/efs /mnt/efs/made"]));
    as_user["user"] = json!("1000:1000");
    as_user["essential"] = json!(false);
    let second = f.register(
        "efs-ap2",
        json!([with_mount(f.container("c", &["sh", "-c", script])), as_user]),
        efs_volume(config),
    );
    let task = f.run(&second);
    let seen = f.wait_log(&task, "u", "as-user owner=");
    assert_eq!(
        seen.iter().filter(|l| *l == "as-user owner=1000:1000").count(),
        2,
        "the POSIX user's own view: {seen:?}"
    );
    let lines = f.wait_log(&task, "c", "checked");
    assert!(lines.iter().any(|l| l == "made"), "the container sees /app's content: {lines:?}");
    assert!(!lines.iter().any(|l| l == "secret" || l.contains("ESCAPED") || l.contains("outside")), "{lines:?}");
    f.stop_all(&[&task]);
    assert_eq!(efs_mounts(&f.server.data_dir), Vec::<String>::new());
}

#[test]
fn fargate_refuses_what_it_cannot_mount() {
    let f = Fixture::new();
    let td = |family: &str, config: Value| {
        json!({"family": family, "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512",
            "containerDefinitions": [with_mount(f.container("c", &["true"]))],
            "volumes": [{"name": "data", "efsVolumeConfiguration": config}]})
        .to_string()
    };
    let dots = f.server.aws_err(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &td("dots", json!({"fileSystemId": "fs-0123456789abcdef0", "rootDirectory": "/a/../.."})),
    ]);
    assert!(dots.contains("ClientException") && dots.contains("rootDirectory"), "{dots}");
    let ap_root = f.server.aws_err(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &td(
            "aproot",
            json!({"fileSystemId": "fs-0123456789abcdef0", "rootDirectory": "/x", "transitEncryption": "ENABLED",
            "authorizationConfig": {"accessPointId": "fsap-0123456789abcdef0"}}),
        ),
    ]);
    assert!(ap_root.contains("root directory must either be set to"), "{ap_root}");

    let with_target = create_fs(&f.server, "t1");
    mount_target(&f.server, &with_target, &f.subnet);
    let without_target = create_fs(&f.server, "t2");
    let foreign_ap = f.server.aws_json(&["efs", "create-access-point", "--file-system-id", &without_target]);
    let foreign_ap = foreign_ap["AccessPointId"].as_str().unwrap();
    let in_use = f.server.aws_err(&["efs", "delete-file-system", "--file-system-id", &with_target]);
    assert!(in_use.contains("FileSystemInUse"), "{in_use}");

    let other_account = format!("arn:aws:elasticfilesystem:us-east-1:999999999999:file-system/{with_target}");
    let foreign = f.server.aws_err(&["efs", "describe-file-systems", "--file-system-id", &other_account]);
    assert!(foreign.contains("FileSystemNotFound"), "{foreign}");
    let cases = [
        ("unknown", json!({"fileSystemId": "fs-0123456789abcdef0"})),
        ("other-account", json!({"fileSystemId": other_account})),
        ("no-target", json!({"fileSystemId": without_target})),
        (
            "foreign-ap",
            json!({"fileSystemId": with_target, "transitEncryption": "ENABLED",
            "authorizationConfig": {"accessPointId": foreign_ap}}),
        ),
    ];
    for (name, config) in cases {
        let out = f.server.aws_json(&["ecs", "register-task-definition", "--cli-input-json", &td(name, config)]);
        let task = f.run(out["taskDefinition"]["taskDefinitionArn"].as_str().unwrap());
        let stopped = f.wait_status(&task, "STOPPED", Duration::from_secs(120));
        let reason = stopped["stoppedReason"].as_str().unwrap_or_default();
        assert!(reason.starts_with(STOP_REASON), "{name}: {stopped}");
        assert_eq!(stopped["stopCode"], "TaskFailedToStart", "{name}: {stopped}");
    }
    wait_for("no EFS mounts left", Duration::from_secs(10), || efs_mounts(&f.server.data_dir).is_empty());
}
