use serde_json::{Value, json};

use super::*;
use crate::scheduler::spec;

fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "n", "uid": "u-1", "labels": {"app": "web", "tier": "front"}},
        "spec": spec,
    }))
    .unwrap()
}

fn data(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Vec<u8>>> {
    Some(pairs.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect())
}

fn sources() -> Sources {
    let mut s = Sources::default();
    s.config_maps.insert("cfg".into(), data(&[("a.conf", "A"), ("b.conf", "B")]));
    s.secrets.insert("creds".into(), data(&[("password", "hunter2")]));
    s.config_maps.insert("gone".into(), None);
    s.tokens.insert(("vault".into(), 600), b"jwt".to_vec());
    s
}

fn files(v: &FileVolume) -> Vec<(String, String, u32)> {
    v.files.iter().map(|f| (f.path.clone(), String::from_utf8(f.data.clone()).unwrap(), f.mode)).collect()
}

fn row(path: &str, data: &str, mode: u32) -> (String, String, u32) {
    (path.into(), data.into(), mode)
}

#[test]
fn config_maps_and_secrets_become_files_with_items_and_modes() {
    let p = pod(json!({
        "containers": [{"name": "app", "image": "busybox"}],
        "volumes": [
            {"name": "scratch", "emptyDir": {}},
            {"name": "config", "configMap": {"name": "cfg"}},
            {"name": "picked", "configMap": {"name": "cfg", "defaultMode": 0o600,
                "items": [{"key": "b.conf", "path": "sub/b"}, {"key": "a.conf", "path": "a", "mode": 0o400}]}},
            {"name": "secret", "secret": {"secretName": "creds"}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "app", "fieldRef": {"fieldPath": "metadata.labels['app']"}},
            ]}},
            {"name": "all", "projected": {"defaultMode": 0o440, "sources": [
                {"configMap": {"name": "cfg", "items": [{"key": "a.conf", "path": "a"}]}},
                {"secret": {"name": "creds"}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                {"serviceAccountToken": {"path": "token", "audience": "vault", "expirationSeconds": 600}},
            ]}},
        ],
    }));
    let out = volume_files(&p, &sources()).unwrap();
    let names: Vec<&str> = out.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["config", "picked", "secret", "info", "all"], "emptyDir is no file volume");
    assert_eq!(files(&out[0]), [row("a.conf", "A", 0o644), row("b.conf", "B", 0o644)]);
    assert_eq!(files(&out[1]), [row("a", "A", 0o400), row("sub/b", "B", 0o600)]);
    assert_eq!(files(&out[2]), [row("password", "hunter2", 0o644)]);
    assert_eq!(
        files(&out[3]),
        [row("app", "web", 0o644), row("labels", "app=\"web\"\ntier=\"front\"\n", 0o644), row("name", "p", 0o644)]
    );
    assert_eq!(
        files(&out[4]),
        [row("a", "A", 0o440), row("ns", "n", 0o440), row("password", "hunter2", 0o440), row("token", "jwt", 0o440)]
    );
    assert!(!format!("{out:?}").contains("hunter2"), "secrets stay out of Debug");
}

#[test]
fn missing_sources_fail_the_mount_in_the_kubelets_words_unless_optional() {
    let volume = |v: Value| pod(json!({"containers": [{"name": "app", "image": "busybox"}], "volumes": [v]}));
    let missing = volume(json!({"name": "x", "configMap": {"name": "gone"}}));
    assert_eq!(
        volume_files(&missing, &sources()).unwrap_err(),
        "MountVolume.SetUp failed for volume \"x\" : configmap \"gone\" not found"
    );
    let secret = volume(json!({"name": "s", "secret": {"secretName": "nope"}}));
    assert_eq!(
        volume_files(&secret, &sources()).unwrap_err(),
        "MountVolume.SetUp failed for volume \"s\" : secret \"nope\" not found"
    );
    let key = volume(json!({"name": "k", "configMap": {"name": "cfg", "items": [{"key": "z", "path": "z"}]}}));
    assert_eq!(
        volume_files(&key, &sources()).unwrap_err(),
        "MountVolume.SetUp failed for volume \"k\" : configmap references non-existent config key: z"
    );
    let optional = volume(json!({"name": "o", "configMap": {"name": "gone", "optional": true}}));
    let out = volume_files(&optional, &sources()).unwrap();
    assert!(out[0].files.is_empty(), "an optional missing configMap is an empty volume");
}

#[test]
fn file_volumes_are_task_volumes_mounted_read_only() {
    let p = pod(json!({
        "volumes": [{"name": "config", "configMap": {"name": "cfg"}}, {"name": "info", "downwardAPI": {"items": []}}],
        "containers": [{"name": "app", "image": "busybox", "volumeMounts": [
            {"name": "config", "mountPath": "/etc/cfg", "readOnly": false},
            {"name": "info", "mountPath": "/etc/one", "subPath": "name"},
        ]}],
    }));
    let size = spec::size(&p).unwrap();
    let def = serde_json::to_value(spec::task_definition(&p, "fam", &size, "demo", "us-east-1")).unwrap();
    assert_eq!(def["volumes"], json!([{"name": "config"}, {"name": "info"}]));
    assert_eq!(
        def["containerDefinitions"][0]["mountPoints"],
        json!([{"sourceVolume": "config", "containerPath": "/etc/cfg", "readOnly": true}]),
        "read-only whatever the mount says; a subPath mount is not made"
    );
}

#[test]
fn only_pods_tasks_ask_for_files() {
    let files = PodFiles::default();
    let mut task = Task::provisioning(
        "arn:aws:ecs:us-east-1:000000000000:task/c/1".into(),
        "arn:aws:ecs:us-east-1:000000000000:cluster/c".into(),
        "arn:aws:ecs:us-east-1:000000000000:task-definition/d:1".into(),
        flotilla_types::Timestamp::now(),
    );
    assert!(!files.serves(&task));
    task.started_by = Some("u-1".into());
    task.group = Some("service:web".into());
    assert!(!files.serves(&task));
    task.group = Some("eks:default".into());
    assert!(files.serves(&task));
}
