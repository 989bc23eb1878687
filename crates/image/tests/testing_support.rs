//! `flotilla_image::testing` as other crates use it: a registry on loopback and
//! the busybox image, pulled back through `ImageStore`.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use flotilla_image::testing::{BUSYBOX_APPLETS, Registry, big_image, busybox_image};
use flotilla_image::{ImageStore, Progress};

#[tokio::test]
async fn busybox_image_round_trips_through_a_registry() {
    let registry = Registry::start().await;
    let image = busybox_image();
    registry.push_image("testing/busybox", Some("latest"), &image).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("store")).await.unwrap();

    let pulled = store.pull(&registry.reference("testing/busybox:latest"), None, Progress::none()).await.unwrap();

    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest());
    let dirs = pulled.layer_dirs();
    assert_eq!(dirs.len(), 1);
    let root = dirs[0];
    let busybox = fs::metadata(root.join("bin/busybox")).unwrap();
    assert!(busybox.is_file());
    assert_eq!(busybox.mode() & 0o7777, 0o755);
    assert_eq!(fs::read(root.join("bin/busybox")).unwrap(), fs::read("/bin/busybox").unwrap());
    assert_eq!(fs::read_link(root.join("bin/sh")).unwrap().to_str(), Some("busybox"));
    for applet in BUSYBOX_APPLETS {
        assert!(root.join("bin").join(applet).exists(), "bin/{applet}");
    }
    assert!(fs::read_to_string(root.join("etc/passwd")).unwrap().contains("nobody:x:65534:65534:"));
    assert!(fs::read_to_string(root.join("etc/group")).unwrap().starts_with("root:x:0:\n"));
    assert_eq!(fs::metadata(root.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
    for dir in ["proc", "sys", "dev", "etc", "var/www"] {
        assert!(root.join(dir).is_dir(), "{dir}");
    }

    let config = pulled.container_config();
    assert_eq!(config.cmd.as_deref(), Some(&["sh".to_owned()][..]));
    assert_eq!(config.env, ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
}

#[test]
fn busybox_in_the_image_runs() {
    let image = busybox_image();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    fs::create_dir(&root).unwrap();
    let options = flotilla_image::UnpackOptions::default();
    flotilla_image::unpack_layer(&image.layers[0].blob[..], &root, &options).unwrap();
    // Static, so it runs outside the image too; through the `echo` applet link.
    let out = std::process::Command::new(root.join("bin/echo")).arg("hello").output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "hello\n");
}

#[tokio::test]
async fn big_image_pulls() {
    let registry = Registry::start().await;
    let image = big_image(3, 1 << 20);
    registry.push_image("testing/big", Some("v1"), &image).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path().join("store")).await.unwrap();
    let pulled = store.pull(&registry.reference("testing/big:v1"), None, Progress::none()).await.unwrap();
    let dirs = pulled.layer_dirs();
    assert_eq!(dirs.len(), 3);
    for (i, dir) in dirs.iter().enumerate() {
        assert_eq!(fs::metadata(dir.join(format!("data/layer-{i}.bin"))).unwrap().len(), 1 << 20);
    }
}
