//! Offline import of OCI image layouts and `docker save` archives built here.

mod common;

use std::fs;
use std::path::Path;

use common::{StoreDir, read, sample_image};
use flotilla_image::manifest::Compression;
use flotilla_image::testing::{ImageSpec, LayerTar, TestImage, blob_path, gzip, index, oci_layout, sha256, tar_of};
use flotilla_image::{ImageStore, ImportError, IngestError};
use serde_json::json;

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn imports_an_oci_layout_named_by_tag() {
    let image = sample_image(Compression::Gzip, Compression::Zstd);
    let mut desc = image.descriptor();
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": "v1"});
    let layout = oci_layout(&[&image], &[], json!([desc]));
    let dir = StoreDir::new();
    let path = write(dir.dir.path(), "layout.tar", &layout);
    let store = ImageStore::open(dir.root()).await.unwrap();

    // A bare tag needs a repository from the caller.
    let err = store.import(&path).await.unwrap_err();
    assert!(matches!(err, ImportError::Unnamed { .. }), "{err:?}");

    let images = store.import_named(&path, Some("example.com/team/app")).await.unwrap();
    assert_eq!(images.len(), 1);
    let imported = &images[0];
    assert_eq!(imported.reference.to_string(), "example.com/team/app:v1");
    assert_eq!(imported.manifest_digest.to_string(), image.manifest_digest());
    assert_eq!(read(&imported.layer_dirs()[0].join("bin/app")), "#!/bin/sh\necho app\n");
    assert_eq!(read(&imported.layer_dirs()[1].join("var/cache/fresh")), "fresh\n");
    assert_eq!(imported.container_config().working_dir.as_deref(), Some("/srv"));
    assert_eq!(store.get("example.com/team/app:v1").await.unwrap().as_ref(), Some(imported));

    // Importing again changes nothing and reuses the unpacked layers.
    let marker = imported.layers[0].path.parent().unwrap().join("complete.json");
    let before = fs::metadata(&marker).unwrap().modified().unwrap();
    let again = store.import_named(&path, Some("example.com/team/app")).await.unwrap();
    assert_eq!(&again[0], imported);
    assert_eq!(fs::metadata(&marker).unwrap().modified().unwrap(), before);
}

#[tokio::test]
async fn imports_a_gzipped_multi_platform_oci_layout() {
    let amd = TestImage::new(vec![(LayerTar::new().file("arch", b"amd64").into_tar(), Compression::Gzip)]);
    let arm = TestImage::with_spec(
        vec![(LayerTar::new().file("arch", b"arm64").into_tar(), Compression::Gzip)],
        ImageSpec { architecture: "arm64".into(), ..Default::default() },
    );
    let idx = index(&[&arm, &amd]);
    let layout = oci_layout(
        &[&amd, &arm],
        &[&idx],
        json!([{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": sha256(&idx),
            "size": idx.len(),
            "annotations": {
                "io.containerd.image.name": "registry.local/multi:2",
                "org.opencontainers.image.ref.name": "2"
            }
        }]),
    );
    let dir = StoreDir::new();
    let path = write(dir.dir.path(), "layout.tar.gz", &gzip(&layout));
    let store = ImageStore::open(dir.root()).await.unwrap();
    let images = store.import(&path).await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].reference.to_string(), "registry.local/multi:2");
    assert_eq!(images[0].manifest_digest.to_string(), amd.manifest_digest());
    assert_eq!(images[0].index_digest.as_ref().unwrap().to_string(), sha256(&idx));
    assert_eq!(read(&images[0].layer_dirs()[0].join("arch")), "amd64");
}

#[tokio::test]
async fn imports_a_docker_archive() {
    let base = LayerTar::new().dir("etc").file("etc/os-release", b"ID=test\n").into_tar();
    let top = LayerTar::new().dir("etc").whiteout("etc/os-release").file("etc/motd", b"hi\n").into_tar();
    // docker save writes uncompressed layers under the Docker config media type.
    let image = TestImage::with_spec(
        vec![(base.clone(), Compression::None), (top.clone(), Compression::None)],
        ImageSpec { oci: false, ..Default::default() },
    );
    let config_name = format!("{}.json", &image.config_digest()[7..]);
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name,
        "RepoTags": ["busybox:latest", "example.com/tools/box:1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
    }]))
    .unwrap();
    // The second layer is stored once elsewhere and linked, as docker save does to
    // deduplicate.
    let archive = tar_of(
        &[
            ("manifest.json", &manifest),
            ("repositories", br#"{"busybox":{"latest":"bbb"}}"#),
            (&config_name, &image.config),
            ("aaa/layer.tar", &base),
            ("ccc/layer.tar", &top),
        ],
        &[("bbb/layer.tar", "../ccc/layer.tar")],
    );
    let dir = StoreDir::new();
    let path = write(dir.dir.path(), "save.tar", &archive);
    let store = ImageStore::open(dir.root()).await.unwrap();
    let images = store.import(&path).await.unwrap();
    let names: Vec<String> = images.iter().map(|i| i.reference.to_string()).collect();
    assert_eq!(names, ["docker.io/library/busybox:latest", "example.com/tools/box:1"]);
    let image_a = &images[0];
    assert_eq!(image_a.config_digest.to_string(), image.config_digest());
    assert_eq!(image_a.layers[0].diff_id.to_string(), sha256(&base));
    assert_eq!(image_a.layers[1].digest.to_string(), sha256(&top));
    assert_eq!(image_a.layers[1].media_type, "application/vnd.docker.image.rootfs.diff.tar");
    assert_eq!(read(&image_a.layer_dirs()[0].join("etc/os-release")), "ID=test\n");
    assert_eq!(read(&image_a.layer_dirs()[1].join("etc/motd")), "hi\n");
    assert_eq!(images[1].layer_dirs(), image_a.layer_dirs());
    assert_eq!(store.list().await.unwrap().len(), 2);
    // The synthesised manifest is stored like a pulled one.
    assert!(dir.root().join("blobs/sha256").join(image_a.manifest_digest.hex()).is_file());
}

#[tokio::test]
async fn corrupt_or_incomplete_archives_are_refused() {
    let image = sample_image(Compression::Gzip, Compression::Gzip);
    let mut desc = image.descriptor();
    desc["annotations"] = json!({"io.containerd.image.name": "example.com/app:v1"});
    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();

    // A blob whose content does not hash to its file name.
    let mut layout = oci_layout(&[&image], &[], json!([desc.clone()]));
    let needle = &image.layers[1].blob[..32];
    let at = layout.windows(needle.len()).position(|w| w == needle).unwrap();
    layout[at + 20] ^= 0xff;
    let path = write(dir.dir.path(), "corrupt.tar", &layout);
    let err = store.import(&path).await.unwrap_err();
    assert!(
        matches!(err, ImportError::Corrupt { source: IngestError::DigestMismatch { .. }, ref file, .. } if file.contains(&image.layers[1].digest[7..])),
        "{err:?}"
    );

    // A layer the manifest names but the archive lacks.
    let manifest_only = tar_of(
        &[
            ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
            ("index.json", &serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [desc]})).unwrap()),
            (&blob_path(&image.manifest_digest()), &image.manifest),
            (&blob_path(&image.config_digest()), &image.config),
        ],
        &[],
    );
    let path = write(dir.dir.path(), "incomplete.tar", &manifest_only);
    let err = store.import(&path).await.unwrap_err();
    assert!(matches!(err, ImportError::Missing { .. }), "{err:?}");

    let path = write(dir.dir.path(), "random.tar", &tar_of(&[("hello.txt", b"hi")], &[]));
    assert!(matches!(store.import(&path).await, Err(ImportError::UnknownFormat { .. })));
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_reference_with_a_tag_names_the_image_whatever_the_archive_says() {
    // What `skopeo copy ... oci-archive:busybox.tar` and friends write: the index names only
    // the tag `latest`.
    let image = sample_image(Compression::Gzip, Compression::Gzip);
    let mut desc = image.descriptor();
    desc["annotations"] = json!({"org.opencontainers.image.ref.name": "latest"});
    let layout = oci_layout(&[&image], &[], json!([desc]));
    let dir = StoreDir::new();
    let path = write(dir.dir.path(), "layout.tar", &layout);
    let store = ImageStore::open(dir.root()).await.unwrap();

    let images = store.import_named(&path, Some("local/busybox:1")).await.unwrap();
    let names: Vec<String> = images.iter().map(|i| i.reference.to_string()).collect();
    assert_eq!(names, ["docker.io/local/busybox:1"]);
    assert!(store.get("local/busybox:1").await.unwrap().is_some());
    assert!(store.get("local/busybox:latest").await.unwrap().is_none(), "the archive's tag is not used");

    // A bare repository still takes the archive's tag.
    let images = store.import_named(&path, Some("local/other")).await.unwrap();
    assert_eq!(images[0].reference.to_string(), "docker.io/local/other:latest");

    // A digest must be the image's own.
    let pinned = format!("local/pinned@{}", image.manifest_digest());
    let images = store.import_named(&path, Some(&pinned)).await.unwrap();
    assert_eq!(images[0].reference.digest().unwrap().to_string(), image.manifest_digest());
    let wrong = format!("local/pinned@{}", image.config_digest());
    let err = store.import_named(&path, Some(&wrong)).await.unwrap_err();
    assert!(matches!(err, ImportError::ReferenceDigest { .. }), "{err:?}");
}

#[tokio::test]
async fn a_reference_with_a_tag_overrides_docker_archive_names_and_needs_one_image() {
    let layer = LayerTar::new().file("hello", b"hi\n").into_tar();
    let image =
        TestImage::with_spec(vec![(layer.clone(), Compression::None)], ImageSpec { oci: false, ..Default::default() });
    let config_name = format!("{}.json", &image.config_digest()[7..]);
    let entry = json!({"Config": config_name, "RepoTags": ["busybox:latest"], "Layers": ["aaa/layer.tar"]});
    let one = serde_json::to_vec(&json!([entry])).unwrap();
    let two = serde_json::to_vec(&json!([entry, entry])).unwrap();
    let files = |manifest: &[u8]| {
        tar_of(&[("manifest.json", manifest), (&config_name, &image.config), ("aaa/layer.tar", &layer)], &[])
    };
    let dir = StoreDir::new();
    let store = ImageStore::open(dir.root()).await.unwrap();

    let path = write(dir.dir.path(), "one.tar", &files(&one));
    let images = store.import_named(&path, Some("example.com/box:2")).await.unwrap();
    let names: Vec<String> = images.iter().map(|i| i.reference.to_string()).collect();
    assert_eq!(names, ["example.com/box:2"]);
    assert!(store.get("busybox:latest").await.unwrap().is_none());

    let path = write(dir.dir.path(), "two.tar", &files(&two));
    let err = store.import_named(&path, Some("example.com/box:3")).await.unwrap_err();
    assert!(matches!(err, ImportError::AmbiguousReference { images: 2, .. }), "{err:?}");
    assert!(store.get("example.com/box:3").await.unwrap().is_none());
}
