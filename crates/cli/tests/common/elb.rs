//! What the load balancer tests share: security groups of the default VPC, load balancers over
//! its first two default subnets, and certificates made with openssl and imported into ACM.

use std::path::{Path, PathBuf};

use super::Server;
use super::ecs::{default_vpc, zone_subnets};

/// A security group of the default VPC admitting TCP `ports` from the VPC (where a load
/// balancer's addresses are).
pub fn vpc_group(server: &Server, name: &str, ports: &[u16]) -> String {
    let vpc = default_vpc(server);
    let group = server.aws_json(&[
        "ec2",
        "create-security-group",
        "--group-name",
        name,
        "--description",
        name,
        "--vpc-id",
        &vpc,
    ]);
    let group = group["GroupId"].as_str().unwrap().to_owned();
    for port in ports {
        let port = port.to_string();
        server.aws_json(&[
            "ec2",
            "authorize-security-group-ingress",
            "--group-id",
            &group,
            "--protocol",
            "tcp",
            "--port",
            &port,
            "--cidr",
            "172.31.0.0/16",
        ]);
    }
    group
}

/// The first two default subnets (two zones, as an application load balancer needs).
pub fn two_subnets(server: &Server) -> Vec<String> {
    zone_subnets(server).into_iter().take(2).map(|(_, s)| s).collect()
}

/// A self-signed certificate for `name` and its key, as PEM files in `dir`.
pub fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    (cert, key)
}

/// `aws acm import-certificate` of PEM files; the certificate's ARN.
pub fn import_certificate(server: &Server, cert: &Path, key: &Path) -> String {
    let imported = server.aws_json(&[
        "acm",
        "import-certificate",
        "--certificate",
        &format!("fileb://{}", cert.display()),
        "--private-key",
        &format!("fileb://{}", key.display()),
    ]);
    imported["CertificateArn"].as_str().unwrap().to_owned()
}
