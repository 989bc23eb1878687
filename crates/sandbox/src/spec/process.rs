//! The container's command line, environment and working directory, combined from the image
//! config and the container definition with Docker's precedence rules.

use crate::task::{ContainerSpec, EnvVar, SpecError};

/// Docker's default PATH when neither image nor container sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `entryPoint` replaces the image's Entrypoint *and* discards its Cmd; `command` replaces
/// Cmd. The process runs `entrypoint ++ cmd`.
pub fn resolve_args(c: &ContainerSpec) -> Result<Vec<String>, SpecError> {
    let image = &c.image_config;
    let entrypoint: Vec<String> = match &c.entry_point {
        Some(ep) => ep.clone(),
        None => image.entrypoint.clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = match (&c.command, &c.entry_point) {
        (Some(cmd), _) => cmd.clone(),
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() || args[0].is_empty() {
        return Err(SpecError::invalid(format!(
            "container {:?}: no command: neither the container nor its image sets an entrypoint or command",
            c.name
        )));
    }
    Ok(args)
}

/// Image env first, container `environment` overriding by name (keeping the image's order),
/// then PATH, HOSTNAME and HOME defaults where nothing set them.
pub fn resolve_env(image_env: &[String], container_env: &[EnvVar], hostname: &str, home: &str) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| match env.iter_mut().find(|(n, _)| n == name) {
        Some(slot) => slot.1 = value.to_string(),
        None => env.push((name.to_string(), value.to_string())),
    };
    for kv in image_env {
        match kv.split_once('=') {
            Some((k, v)) => set(k, v),
            None => set(kv, ""),
        }
    }
    for e in container_env {
        set(&e.name, &e.value);
    }
    if !env.iter().any(|(n, _)| n == "PATH") {
        env.insert(0, ("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(n, _)| n == "HOSTNAME") {
        env.push(("HOSTNAME".into(), hostname.into()));
    }
    if !env.iter().any(|(n, _)| n == "HOME") {
        env.push(("HOME".into(), home.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// `workingDirectory`, else the image's WorkingDir, else `/`. Must be absolute.
pub fn resolve_cwd(c: &ContainerSpec) -> Result<String, SpecError> {
    let cwd = c
        .working_directory
        .as_deref()
        .or(c.image_config.working_dir.as_deref())
        .filter(|d| !d.is_empty())
        .unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(SpecError::invalid(format!("container {:?}: workingDirectory {cwd:?} is not absolute", c.name)));
    }
    Ok(cwd.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::ImageConfig;

    fn c(
        image_ep: Option<&[&str]>,
        image_cmd: Option<&[&str]>,
        ep: Option<&[&str]>,
        cmd: Option<&[&str]>,
    ) -> ContainerSpec {
        let v = |x: Option<&[&str]>| x.map(|a| a.iter().map(|s| s.to_string()).collect());
        let mut spec = ContainerSpec::new("app", vec!["/l".into()]);
        spec.image_config = ImageConfig { entrypoint: v(image_ep), cmd: v(image_cmd), ..Default::default() };
        spec.entry_point = v(ep);
        spec.command = v(cmd);
        spec
    }

    #[test]
    fn docker_precedence_rules() {
        let ep: &[&str] = &["/entry"];
        let cmd: &[&str] = &["serve", "-v"];
        // Image only.
        assert_eq!(resolve_args(&c(Some(ep), Some(cmd), None, None)).unwrap(), ["/entry", "serve", "-v"]);
        // command replaces Cmd, keeps Entrypoint.
        assert_eq!(resolve_args(&c(Some(ep), Some(cmd), None, Some(&["x"]))).unwrap(), ["/entry", "x"]);
        // entryPoint replaces Entrypoint and drops the image's Cmd.
        assert_eq!(resolve_args(&c(Some(ep), Some(cmd), Some(&["/bin/sh"]), None)).unwrap(), ["/bin/sh"]);
        // Both given.
        assert_eq!(
            resolve_args(&c(Some(ep), Some(cmd), Some(&["/bin/sh", "-c"]), Some(&["echo hi"]))).unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        // Cmd alone.
        assert_eq!(resolve_args(&c(None, Some(cmd), None, None)).unwrap(), ["serve", "-v"]);
        // Nothing at all.
        assert!(resolve_args(&c(None, None, None, None)).is_err());
        // An empty entryPoint clears the image's and leaves nothing.
        assert!(resolve_args(&c(Some(ep), Some(cmd), Some(&[]), None)).is_err());
    }

    #[test]
    fn env_overlay_and_defaults() {
        let image = vec!["PATH=/custom/bin".to_string(), "A=1".into(), "B=2".into(), "EMPTY".into()];
        let container = vec![
            EnvVar { name: "B".into(), value: "override".into() },
            EnvVar { name: "C".into(), value: "x=y".into() },
        ];
        let env = resolve_env(&image, &container, "host-1", "/root");
        assert_eq!(env, ["PATH=/custom/bin", "A=1", "B=override", "EMPTY=", "C=x=y", "HOSTNAME=host-1", "HOME=/root"]);
        let env = resolve_env(&[], &[], "h", "/");
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
    }

    #[test]
    fn cwd_precedence() {
        let mut spec = ContainerSpec::new("app", vec!["/l".into()]);
        assert_eq!(resolve_cwd(&spec).unwrap(), "/");
        spec.image_config.working_dir = Some("/srv".into());
        assert_eq!(resolve_cwd(&spec).unwrap(), "/srv");
        spec.working_directory = Some("/app".into());
        assert_eq!(resolve_cwd(&spec).unwrap(), "/app");
        spec.working_directory = Some("rel".into());
        assert!(resolve_cwd(&spec).is_err());
    }
}
