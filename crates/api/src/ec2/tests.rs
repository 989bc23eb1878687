//! Requests as botocore writes them, through the model, the handlers and the XML writer, on
//! a real control plane; for interfaces, which only RunTask creates.

use std::sync::Arc;

use flotilla_control::{Control, Identity, NetworkInterfaceSpec};
use flotilla_store::EmbeddedStore;

use super::{Ec2Request, execute, query, xml};
use crate::error::ApiError;
use crate::query::model::EC2 as MODEL;

async fn call(control: &Control, body: &str) -> Result<String, ApiError> {
    let params = query::parse_form(body.as_bytes())?;
    let action = params["Action"].clone();
    let input = query::read_input(&MODEL, &action, &params).expect("a modelled action")?;
    let answer = execute(control, Ec2Request::parse(&action, input)?).await?;
    Ok(xml::response(&MODEL, &action, "req-1", &answer).expect("answers fit the model"))
}

#[tokio::test]
async fn interfaces_are_described_with_their_addresses_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path().join("store.redb")).unwrap();
    let identity = Identity { region: "us-east-1".into(), account: "123456789012".into() };
    let control = Control::new(Arc::new(store), identity);
    control.ensure_default_network().await.unwrap();
    let subnet = control.describe_subnets(&[], &[]).await.unwrap().remove(0);
    let eni = control
        .create_network_interface(NetworkInterfaceSpec {
            subnet_id: subnet.id.clone(),
            description: Some("arn:aws:ecs:us-east-1:123456789012:attachment/x".into()),
            assign_public_ip: true,
            attachment: Some("arn:aws:ecs:us-east-1:123456789012:task/default/abc".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    let body = format!(
        "Action=DescribeNetworkInterfaces&Version=2016-11-15&Filter.1.Name=subnet-id&Filter.1.Value.1={}",
        subnet.id
    );
    let xml = call(&control, &body).await.unwrap();
    for expected in [
        format!("<networkInterfaceId>{}</networkInterfaceId>", eni.id),
        format!("<privateIpAddress>{}</privateIpAddress>", eni.private_ip),
        format!("<macAddress>{}</macAddress>", eni.mac),
        format!("<privateDnsName>{}</privateDnsName>", eni.private_dns_name),
        format!(
            "<groupSet><item><groupId>{}</groupId><groupName>default</groupName></item></groupSet>",
            eni.groups[0].id
        ),
        format!("<publicIp>{}</publicIp>", eni.public_ip.unwrap()),
        "<status>in-use</status>".to_owned(),
        "<attachment><attachTime>".to_owned(),
    ] {
        assert!(xml.contains(&expected), "{expected} missing from {xml}");
    }
    let filtered =
        call(&control, "Action=DescribeNetworkInterfaces&Filter.1.Name=private-ip-address&Filter.1.Value.1=10.9.9.9")
            .await
            .unwrap();
    assert!(filtered.contains("<networkInterfaceSet/>"), "{filtered}");

    // A subnet with an interface cannot go.
    let err = call(&control, &format!("Action=DeleteSubnet&SubnetId={}", subnet.id)).await.unwrap_err();
    assert_eq!(err.code, "DependencyViolation");
    control.delete_network_interface(&eni.id).await.unwrap();
    let ok = call(&control, &format!("Action=DeleteSubnet&SubnetId={}", subnet.id)).await.unwrap();
    assert!(ok.contains("<return>true</return>"), "{ok}");
}
