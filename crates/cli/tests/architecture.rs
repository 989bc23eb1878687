//! ARCHITECTURE.md's dependency invariants, held against the manifests and the code: a
//! change that breaks one fails here instead of drifting silently.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The Flotilla crates a manifest names, in any dependency table (dev ones included).
fn flotilla_dependencies(krate: &str) -> Vec<String> {
    let manifest = workspace().join("crates").join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap_or_else(|e| panic!("{}: {e}", manifest.display()));
    let mut in_dependencies = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line.contains("dependencies");
            continue;
        }
        if in_dependencies && let Some(name) = line.split(['=', '.', ' ']).next().filter(|n| n.starts_with("flotilla-"))
        {
            out.push(name.to_owned());
        }
    }
    out
}

fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("readable source");
            out.push((path, text));
        }
    }
    out
}

#[test]
fn the_agent_reaches_the_control_plane_only_through_the_host_api() {
    let deps = flotilla_dependencies("agent");
    assert!(deps.contains(&"flotilla-host".to_owned()), "{deps:?}");
    for forbidden in ["flotilla-control", "flotilla-store", "flotilla-secrets", "flotilla-discovery", "flotilla-api"] {
        assert!(!deps.iter().any(|d| d == forbidden), "the agent depends on {forbidden}: {deps:?}");
    }
    // Store keys are the control plane's layout; the agent never names one.
    for (path, text) in sources(&workspace().join("crates/agent/src")) {
        for key in ["\"ecs/", "\"ec2/", "\"ssm/", "\"secretsmanager/", "\"servicediscovery/", "\"hosts/"] {
            assert!(!text.contains(key), "{} names a store key ({key}...)", path.display());
        }
    }
}

#[test]
fn the_runtime_depends_on_the_oci_types_alone() {
    assert_eq!(flotilla_dependencies("runtime"), ["flotilla-oci"]);
    assert!(flotilla_dependencies("oci").is_empty());
}

#[test]
fn the_vocabulary_and_the_host_api_depend_on_nothing_that_does_io() {
    assert!(flotilla_dependencies("types").is_empty(), "{:?}", flotilla_dependencies("types"));
    assert_eq!(flotilla_dependencies("host"), ["flotilla-types"]);
}

#[test]
fn kms_stands_on_the_store_alone_and_secrets_stand_on_it() {
    assert_eq!(flotilla_dependencies("kms"), ["flotilla-types", "flotilla-store"]);
    assert!(flotilla_dependencies("secrets").contains(&"flotilla-kms".to_owned()));
}

#[test]
fn only_api_knows_aws_error_codes() {
    let codes = ["\"ClientException\"", "\"InvalidParameterException\"", "\"ResourceNotFoundException\""];
    for krate in
        ["types", "store", "control", "host", "agent", "sandbox", "net", "logs", "discovery", "secrets", "kms", "exec"]
    {
        for (path, text) in sources(&workspace().join("crates").join(krate).join("src")) {
            for code in codes {
                assert!(!text.contains(code), "{} spells the AWS code {code}", path.display());
            }
        }
    }
}
