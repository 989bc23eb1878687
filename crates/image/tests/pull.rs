//! Pulls from a real `docker-registry` on 127.0.0.1.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::{Arc, Mutex};

use common::token::TokenServer;
use common::{StoreDir, read, sample_image};
use flotilla_image::manifest::Compression;
use flotilla_image::testing::{Htpasswd, ImageSpec, LayerTar, MTIME, Registry, TestImage, index, sha256};
use flotilla_image::{
    Credentials, ImageStore, IngestError, Progress, PullError, PullEvent, RegistryError, StoreOptions, UnpackError,
    UnpackLimits,
};

fn recorder() -> (Progress, Arc<Mutex<Vec<PullEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (Progress::from_fn(move |e| sink.lock().unwrap().push(e)), events)
}

#[tokio::test]
async fn pulls_and_unpacks_a_two_layer_image() {
    let registry = Registry::start().await;
    let image = sample_image(Compression::Gzip, Compression::Zstd);
    registry.push_image("team/app", Some("v1"), &image).await;
    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();

    let (progress, events) = recorder();
    let reference = registry.reference("team/app:v1");
    let pulled = store.pull(&reference, None, progress).await.unwrap();

    assert_eq!(pulled.reference.to_string(), reference);
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest());
    assert_eq!(pulled.config_digest.to_string(), image.config_digest());
    assert_eq!(pulled.index_digest, None);
    let digests: Vec<_> = pulled.layers.iter().map(|l| l.digest.to_string()).collect();
    assert_eq!(digests, [image.layers[0].digest.clone(), image.layers[1].digest.clone()]);
    let diff_ids: Vec<_> = pulled.layers.iter().map(|l| l.diff_id.to_string()).collect();
    assert_eq!(diff_ids, [image.layers[0].diff_id.clone(), image.layers[1].diff_id.clone()]);

    let config = pulled.container_config();
    assert_eq!(config.entrypoint.as_deref(), Some(&["/bin/app".to_owned()][..]));
    assert_eq!(config.cmd.as_deref(), Some(&["--serve".to_owned()][..]));
    assert_eq!(config.working_dir.as_deref(), Some("/srv"));
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(config.exposed_ports().collect::<Vec<_>>(), ["8080/tcp"]);
    assert_eq!(config.labels["org.example.team"], "flotilla");
    assert!(config.env.contains(&"GREETING=hello".to_owned()));

    // Lowest first.
    let dirs = pulled.layer_dirs();
    let (base, top) = (dirs[0], dirs[1]);
    assert_eq!(read(&base.join("bin/app")), "#!/bin/sh\necho app\n");
    assert_eq!(fs::metadata(base.join("bin/app")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::read_link(base.join("bin/sh")).unwrap().to_str(), Some("app"));
    assert_eq!(fs::metadata(base.join("srv")).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(fs::metadata(base.join("etc/hostname")).unwrap().mtime(), MTIME as i64);
    assert_eq!(read(&top.join("etc/hostname")), "top\n");
    let whiteout = fs::symlink_metadata(top.join("etc/obsolete.conf")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert!(is_opaque(&top.join("var/cache")));
    assert!(!top.join("var/cache/stale").exists());
    let data = fs::metadata(top.join("srv/data.txt")).unwrap();
    assert_eq!((data.uid(), data.gid(), data.mode() & 0o7777), (1000, 1000, 0o600));
    assert_eq!(fs::metadata(top.join("srv/data-link.txt")).unwrap().ino(), data.ino());

    let events = events.lock().unwrap().clone();
    assert!(matches!(&events[0], PullEvent::Resolved { layers, .. } if layers.len() == 2));
    for layer in &image.layers {
        assert!(events.iter().any(|e| matches!(e,
            PullEvent::LayerDownloading { digest, downloaded, total }
                if digest.to_string() == layer.digest && downloaded == total && *total == layer.blob.len() as u64)));
        assert!(events.iter().any(|e| matches!(e,
            PullEvent::LayerUnpacked { digest, cached: false, .. } if digest.to_string() == layer.digest)));
    }

    // The record survives reopening the store.
    let reopened = ImageStore::open(dir.root()).await.unwrap();
    assert_eq!(reopened.get(&reference).await.unwrap(), Some(pulled.clone()));
    let pinned = format!("{}@{}", registry.reference("team/app"), image.manifest_digest());
    assert_eq!(reopened.get(&pinned).await.unwrap().unwrap().manifest_digest, pulled.manifest_digest);
    assert_eq!(reopened.list().await.unwrap(), vec![pulled]);
}

fn is_opaque(path: &std::path::Path) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut value), Ok(1) if value[0] == b'y')
}

#[tokio::test]
async fn second_pull_downloads_and_unpacks_nothing() {
    let registry = Registry::start().await;
    let image = sample_image(Compression::Gzip, Compression::Gzip);
    registry.push_image("app", Some("latest"), &image).await;
    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();
    let reference = registry.reference("app");

    let first = store.pull(&reference, None, Progress::none()).await.unwrap();
    // Two layers and the config.
    registry.wait_blob_gets(3).await;
    let blob = dir.root().join("blobs/sha256").join(&image.layers[0].digest[7..]);
    let marker = first.layers[0].path.parent().unwrap().join("complete.json");
    let (blob_before, marker_before) = (fs::metadata(&blob).unwrap(), fs::metadata(&marker).unwrap());

    let (progress, events) = recorder();
    let second = store.pull(&reference, None, progress).await.unwrap();
    assert_eq!(second, first);
    assert_eq!(registry.blob_gets(), 3, "the second pull fetched blobs");
    let events = events.lock().unwrap().clone();
    assert!(
        !events.iter().any(|e| matches!(e, PullEvent::LayerDownloading { .. } | PullEvent::LayerDownloaded { .. }))
    );
    assert_eq!(events.iter().filter(|e| matches!(e, PullEvent::LayerCached { .. })).count(), 2);
    assert_eq!(events.iter().filter(|e| matches!(e, PullEvent::LayerUnpacked { cached: true, .. })).count(), 2);
    let (blob_after, marker_after) = (fs::metadata(&blob).unwrap(), fs::metadata(&marker).unwrap());
    assert_eq!((blob_after.ino(), blob_after.mtime()), (blob_before.ino(), blob_before.mtime()));
    assert_eq!((marker_after.ino(), marker_after.mtime()), (marker_before.ino(), marker_before.mtime()));

    // A digest-pinned pull of content already here needs no registry at all.
    let pinned = format!("{}@{}", registry.reference("app"), image.manifest_digest());
    drop(registry);
    let offline = store.pull(&pinned, None, Progress::none()).await.unwrap();
    assert_eq!(offline.layer_dirs(), first.layer_dirs());
}

#[tokio::test]
async fn image_index_resolves_to_linux_amd64() {
    let registry = Registry::start().await;
    let arm = TestImage::with_spec(
        vec![(LayerTar::new().file("arch", b"arm64").into_tar(), Compression::Gzip)],
        ImageSpec { architecture: "arm64".into(), ..Default::default() },
    );
    let amd = TestImage::new(vec![(LayerTar::new().file("arch", b"amd64").into_tar(), Compression::Gzip)]);
    registry.push_image("multi", None, &arm).await;
    registry.push_image("multi", None, &amd).await;
    let idx = index(&[&arm, &amd]);
    registry.push_manifest("multi", "v1", "application/vnd.oci.image.index.v1+json", &idx).await;

    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();
    let image = store.pull(&registry.reference("multi:v1"), None, Progress::none()).await.unwrap();
    assert_eq!(image.manifest_digest.to_string(), amd.manifest_digest());
    assert_eq!(image.index_digest.as_ref().map(|d| d.to_string()), Some(sha256(&idx)));
    assert_eq!(image.config.architecture, "amd64");
    assert_eq!(read(&image.layer_dirs()[0].join("arch")), "amd64");

    // An index without our platform is a clear error.
    let only_arm = index(&[&arm]);
    registry.push_manifest("multi", "arm-only", "application/vnd.oci.image.index.v1+json", &only_arm).await;
    let err = store.pull(&registry.reference("multi:arm-only"), None, Progress::none()).await.unwrap_err();
    assert!(matches!(err, PullError::NoMatchingPlatform { ref platform, .. } if platform == "linux/amd64"), "{err}");
}

#[tokio::test]
async fn missing_image_is_a_not_found_pull_error() {
    let registry = Registry::start().await;
    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();
    let reference = registry.reference("nope");
    let err = store.pull(&reference, None, Progress::none()).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert!(matches!(err, PullError::Resolve { attempts: 2, source: RegistryError::NotFound { .. }, .. }));
    assert_eq!(
        err.aws_reason(),
        format!(
            "pull image manifest has been retried 1 time(s): failed to resolve ref {}:latest: not found",
            reference
        )
    );
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn corrupted_blob_is_rejected() {
    let registry = Registry::start().await;
    let image = sample_image(Compression::Gzip, Compression::Gzip);
    registry.push_image("app", Some("v1"), &image).await;
    // Flip one byte of the top layer as the registry stores it: same size, wrong digest.
    let victim = &image.layers[1].digest;
    let path = registry.blob_data_path(victim);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&path, bytes).unwrap();

    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();
    let err = store.pull(&registry.reference("app:v1"), None, Progress::none()).await.unwrap_err();
    match &err {
        PullError::Corrupt { digest, source: IngestError::DigestMismatch { expected, actual }, .. } => {
            assert_eq!(digest.to_string(), *victim);
            assert_eq!(expected.to_string(), *victim);
            assert_ne!(actual.to_string(), *victim);
        }
        other => panic!("expected a digest mismatch, got {other:?}"),
    }
    assert!(!dir.root().join("blobs/sha256").join(&victim[7..]).exists());
    assert_eq!(fs::read_dir(dir.root().join("ingest")).unwrap().count(), 0);
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn basic_auth_registry() {
    let registry = Registry::start_with(Htpasswd::new("alice", "s3cret")).await;
    let image = sample_image(Compression::Gzip, Compression::None);
    registry.push_image("private/app", Some("v1"), &image).await;
    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();
    let reference = registry.reference("private/app:v1");

    let err = store.pull(&reference, None, Progress::none()).await.unwrap_err();
    assert!(
        matches!(err, PullError::Resolve { source: RegistryError::Unauthorized { .. }, attempts: 1, .. }),
        "{err:?}"
    );
    let wrong = Credentials::new("alice", "nope");
    let err = store.pull(&reference, Some(wrong), Progress::none()).await.unwrap_err();
    assert!(matches!(err, PullError::Resolve { source: RegistryError::Unauthorized { .. }, .. }), "{err:?}");

    let creds = Credentials::new("alice", "s3cret");
    let image_pulled = store.pull(&reference, Some(creds), Progress::none()).await.unwrap();
    assert_eq!(image_pulled.manifest_digest.to_string(), image.manifest_digest());
    assert_eq!(read(&image_pulled.layer_dirs()[1].join("etc/hostname")), "top\n");
}

#[tokio::test]
async fn bearer_token_registry() {
    let tokens = TokenServer::start("bob", "hunter2").await;
    let requests = tokens.requests.clone();
    let registry = Registry::start_with(tokens).await;
    let image = sample_image(Compression::Zstd, Compression::Gzip);
    registry.push_image("secure/app", Some("v1"), &image).await;
    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();
    let reference = registry.reference("secure/app:v1");

    let err = store.pull(&reference, None, Progress::none()).await.unwrap_err();
    assert!(matches!(err, PullError::Resolve { source: RegistryError::Unauthorized { .. }, .. }), "{err:?}");

    let creds = Credentials::new("bob", "hunter2");
    let pulled = store.pull(&reference, Some(creds), Progress::none()).await.unwrap();
    assert_eq!(pulled.manifest_digest.to_string(), image.manifest_digest());
    assert_eq!(read(&pulled.layer_dirs()[0].join("etc/hostname")), "base\n");
    // One refused request, then one token reused for the manifest and all blobs.
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 2);
    // The token bob's credentials earned is not reused for an anonymous pull.
    let err = store.pull(&reference, None, Progress::none()).await.unwrap_err();
    assert!(matches!(err, PullError::Resolve { source: RegistryError::Unauthorized { .. }, .. }), "{err:?}");
}

#[tokio::test]
async fn concurrent_pulls_of_the_same_image() {
    let registry = Registry::start().await;
    let image = sample_image(Compression::Gzip, Compression::Zstd);
    registry.push_image("app", Some("v1"), &image).await;
    let dir = StoreDir::new();
    let reference = registry.reference("app:v1");
    // Two handles on one root stand in for two agents sharing a store; each also
    // runs two pulls at once.
    let a = ImageStore::open(dir.root()).await.unwrap();
    let b = ImageStore::open(dir.root()).await.unwrap();
    let (r1, r2, r3, r4) = tokio::join!(
        a.pull(&reference, None, Progress::none()),
        a.pull(&reference, None, Progress::none()),
        b.pull(&reference, None, Progress::none()),
        b.pull(&reference, None, Progress::none()),
    );
    let images = [r1.unwrap(), r2.unwrap(), r3.unwrap(), r4.unwrap()];
    assert!(images.iter().all(|i| *i == images[0]));
    assert_eq!(read(&images[0].layer_dirs()[1].join("var/cache/fresh")), "fresh\n");
    let layers: Vec<_> = fs::read_dir(dir.root().join("layers")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(layers.len(), 2, "no leftover temporary directories: {layers:?}");
    assert_eq!(fs::read_dir(dir.root().join("ingest")).unwrap().count(), 0);
}

#[tokio::test]
async fn remove_and_prune_keep_shared_content() {
    let registry = Registry::start().await;
    let base = LayerTar::new().dir("etc").file("etc/base", b"shared").into_tar();
    let one = TestImage::new(vec![
        (base.clone(), Compression::Gzip),
        (LayerTar::new().file("one", b"1").into_tar(), Compression::Gzip),
    ]);
    let two = TestImage::new(vec![
        (base, Compression::Gzip),
        (LayerTar::new().file("two", b"2").into_tar(), Compression::Gzip),
    ]);
    registry.push_image("one", Some("latest"), &one).await;
    registry.push_image("two", Some("latest"), &two).await;
    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();
    let one_ref = registry.reference("one");
    let two_ref = registry.reference("two");
    store.pull(&one_ref, None, Progress::none()).await.unwrap();
    let kept = store.pull(&two_ref, None, Progress::none()).await.unwrap();
    assert_eq!(store.list().await.unwrap().len(), 2);

    assert!(store.remove(&one_ref).await.unwrap());
    assert!(!store.remove(&one_ref).await.unwrap());
    assert_eq!(store.get(&one_ref).await.unwrap(), None);
    let report = store.prune().await.unwrap();
    // one's manifest, config and top layer go; the shared base stays.
    assert_eq!((report.blobs_removed, report.layers_removed), (3, 1));
    for layer in kept.layer_dirs() {
        assert!(layer.is_dir(), "{} was pruned", layer.display());
    }
    assert_eq!(read(&kept.layer_dirs()[0].join("etc/base")), "shared");
    assert_eq!(store.prune().await.unwrap().blobs_removed, 0);

    store.remove(&two_ref).await.unwrap();
    store.prune().await.unwrap();
    assert_eq!(fs::read_dir(dir.root().join("blobs/sha256")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(dir.root().join("layers")).unwrap().count(), 0);
}

#[tokio::test]
async fn layer_bomb_in_a_pulled_image_is_refused() {
    let registry = Registry::start().await;
    let bomb = LayerTar::new().big_file("zeros", 4 << 20).into_tar();
    let image = TestImage::new(vec![(bomb, Compression::Zstd)]);
    registry.push_image("bomb", Some("v1"), &image).await;
    let dir = StoreDir::new();
    let options =
        StoreOptions { unpack_limits: UnpackLimits { max_bytes: 1 << 20, max_entries: 100 }, ..Default::default() };
    let store = ImageStore::open_with(dir.root(), options).await.unwrap();
    let err = store.pull(&registry.reference("bomb:v1"), None, Progress::none()).await.unwrap_err();
    assert!(matches!(err, PullError::Unpack { source: UnpackError::TooLarge { limit: 1048576 }, .. }), "{err:?}");
    // Nothing half-unpacked is left behind.
    assert_eq!(fs::read_dir(dir.root().join("layers")).unwrap().count(), 0);
}

#[tokio::test]
async fn docker_schema2_media_types_and_progress_channel() {
    let registry = Registry::start().await;
    let image = TestImage::with_spec(
        vec![(LayerTar::new().file("hello", b"world").into_tar(), Compression::Gzip)],
        ImageSpec { oci: false, ..Default::default() },
    );
    registry.push_image("docker/style", Some("1.0"), &image).await;
    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pulled = store.pull(&registry.reference("docker/style:1.0"), None, tx.into()).await.unwrap();
    assert_eq!(read(&pulled.layer_dirs()[0].join("hello")), "world");
    let mut saw_total = false;
    while let Ok(event) = rx.try_recv() {
        if let PullEvent::LayerDownloading { downloaded, total, .. } = event {
            saw_total |= downloaded == total;
        }
    }
    assert!(saw_total);
}
