//! `flotilla certificates`: the certificates imported into ACM, when each expires and which
//! load balancers serve it.

use flotilla_cli::client::Client;
use flotilla_cli::output::{Output, text, time};
use serde_json::{Value, json};

const HEADERS: &[&str] = &["DOMAIN", "STATUS", "NOT AFTER", "IN USE BY"];

/// A load balancer's name from its ARN (`...:loadbalancer/app/front/0123...` is `front`).
fn load_balancer_name(arn: &str) -> &str {
    arn.split('/').nth(2).unwrap_or(arn)
}

fn rows(certificates: &[Value]) -> Vec<Vec<String>> {
    certificates
        .iter()
        .map(|c| {
            let users: Vec<&str> = c["InUseBy"]
                .as_array()
                .map(|u| u.iter().filter_map(Value::as_str).map(load_balancer_name).collect())
                .unwrap_or_default();
            vec![
                text(c, "DomainName"),
                text(c, "Status"),
                time(c, "NotAfter"),
                if users.is_empty() { "-".into() } else { users.join(", ") },
            ]
        })
        .collect()
}

pub async fn run(client: &Client, out: &Output) -> anyhow::Result<()> {
    let mut summaries = Vec::new();
    let mut body = json!({});
    loop {
        let page = client.acm("ListCertificates", body.clone()).await?;
        summaries.extend(page["CertificateSummaryList"].as_array().cloned().unwrap_or_default());
        match page["NextToken"].as_str() {
            Some(token) => body["NextToken"] = json!(token),
            None => break,
        }
    }
    // The summary says only whether a certificate is in use; its description says by whom.
    let mut certificates = Vec::new();
    for summary in &summaries {
        let described =
            client.acm("DescribeCertificate", json!({ "CertificateArn": summary["CertificateArn"] })).await?;
        certificates.push(described["Certificate"].clone());
    }
    out.print(&json!({ "Certificates": certificates }), HEADERS, rows(&certificates));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_names_the_load_balancers_that_serve_the_certificate() {
        let certificate = json!({
            "DomainName": "app.example.com", "Status": "ISSUED", "NotAfter": 1_800_000_000,
            "InUseBy": [
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/front/0123456789abcdef",
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/net/edge/fedcba9876543210",
            ],
        });
        assert_eq!(rows(&[certificate])[0], ["app.example.com", "ISSUED", "2027-01-15T08:00:00.000Z", "front, edge"]);
        let unused = json!({"DomainName": "x", "Status": "EXPIRED", "InUseBy": []});
        assert_eq!(rows(&[unused])[0][2..], ["-", "-"]);
    }
}
