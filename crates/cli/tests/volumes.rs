//! Task-scoped volumes (no source) through the AWS CLI: shared by a task's containers,
//! `readOnly` enforced by the kernel, inherited through `volumesFrom`, and placed on the
//! task's ephemeral storage (so they count in its quota). Privileged, like tasks.rs.

mod common;

use common::fixture::Fixture;
use serde_json::json;

#[test]
fn a_scratch_volume_is_shared_read_only_where_asked_and_on_ephemeral_storage() {
    let f = Fixture::new();
    let mut writer = f.container("writer", &["sh", "-c", "echo shared-data > /data/x; echo wrote; sleep 1000"]);
    writer["mountPoints"] = json!([{"sourceVolume": "scratch", "containerPath": "/data"}]);
    let reader_script = "while [ ! -f /data/x ]; do sleep 0.1; done; echo read=$(cat /data/x); \
                         touch /data/y 2>&1 | sed 's/^/touch: /'; [ -e /data/y ] && echo WROTE-READ-ONLY; \
                         echo size=$(df -k /data | tail -1 | awk '{print $2}'); echo reader-done; sleep 1000";
    let mut reader = f.container("reader", &["sh", "-c", reader_script]);
    reader["mountPoints"] = json!([{"sourceVolume": "scratch", "containerPath": "/data", "readOnly": true}]);
    reader["essential"] = json!(false);
    let inherit_script = "while [ ! -f /data/x ]; do sleep 0.1; done; echo inherited=$(cat /data/x); \
                          echo more >> /data/x && echo appended; sleep 1000";
    let mut inheritor = f.container("inheritor", &["sh", "-c", inherit_script]);
    inheritor["volumesFrom"] = json!([{"sourceContainer": "writer"}]);
    inheritor["essential"] = json!(false);
    let td = f.register(
        "scratch",
        json!([writer, reader, inheritor]),
        json!({"volumes": [{"name": "scratch"}], "ephemeralStorage": {"sizeInGiB": 21}}),
    );
    let task = f.run(&td);
    let lines = f.wait_log(&task, "reader", "reader-done");
    assert!(lines.iter().any(|l| l == "read=shared-data"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("touch: ") && l.contains("Read-only file system")),
        "a readOnly mount point refuses writes with EROFS: {lines:?}"
    );
    assert!(!lines.iter().any(|l| l == "WROTE-READ-ONLY"), "{lines:?}");
    // The volume lives on the task's 21 GiB scratch filesystem, not on the host's disk.
    let size: u64 = lines.iter().find_map(|l| l.strip_prefix("size=")).unwrap().trim().parse().unwrap();
    let gib = 1024 * 1024;
    assert!((20 * gib..=21 * gib).contains(&size), "{size} KiB: the volume is on the task's ephemeral storage");
    let inherited = f.wait_log(&task, "inheritor", "appended");
    assert!(inherited.iter().any(|l| l == "inherited=shared-data"), "{inherited:?}");
    f.stop_all(&[&task]);
}
