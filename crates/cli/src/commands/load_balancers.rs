//! `flotilla load-balancers`: list load balancers, or show one with its listeners, their rules
//! in words, and the health of every target its rules forward to.
//!
//! ELBv2 answers in XML, read without its model (`client::xml_value`), so every leaf is text
//! here (`"Port": "80"`), in the tables and in `--output json` alike.

use std::collections::HashMap;

use flotilla_cli::client::{AwsError, Client};
use flotilla_cli::output::{Output, Section, text};
use serde_json::{Value, json};

use crate::LoadBalancerAction;

const HEADERS: &[&str] = &["NAME", "TYPE", "SCHEME", "STATE", "DNS NAME", "LISTENERS"];
const FIELD_HEADERS: &[&str] = &["FIELD", "VALUE"];
const LISTENER_HEADERS: &[&str] = &["LISTENER", "CERTIFICATES", "SSL POLICY"];
const RULE_HEADERS: &[&str] = &["LISTENER", "PRIORITY", "CONDITIONS", "ACTION"];
const GROUP_HEADERS: &[&str] = &["TARGET GROUP", "PROTOCOL", "PORT", "HEALTH CHECK"];
const TARGET_HEADERS: &[&str] = &["TARGET GROUP", "TARGET", "STATE", "REASON", "DESCRIPTION"];

fn items(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// `HTTP:80`, how people name a listener.
fn listener_name(listener: &Value) -> String {
    format!("{}:{}", text(listener, "Protocol"), text(listener, "Port"))
}

fn port(listener: &Value) -> u32 {
    listener["Port"].as_str().and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// `HTTP:80, HTTPS:443`, by port.
fn listeners_summary(listeners: &[Value]) -> String {
    let sorted = by_port(listeners);
    if sorted.is_empty() { "-".into() } else { sorted.iter().map(|l| listener_name(l)).collect::<Vec<_>>().join(", ") }
}

/// What a rule's or a listener's action does, in words; target groups by name where `names`
/// knows them.
fn action_words(action: &Value, names: &HashMap<String, String>) -> String {
    let name = |arn: &str| names.get(arn).cloned().unwrap_or_else(|| arn.to_owned());
    match action["Type"].as_str().unwrap_or("-") {
        "forward" => {
            let config = &action["ForwardConfig"];
            let groups: Vec<String> = match items(&config["TargetGroups"]) {
                [] => vec![name(action["TargetGroupArn"].as_str().unwrap_or("-"))],
                groups => groups
                    .iter()
                    .map(|g| {
                        format!("{} (weight {})", name(g["TargetGroupArn"].as_str().unwrap_or("-")), text(g, "Weight"))
                    })
                    .collect(),
            };
            let stickiness = &config["TargetGroupStickinessConfig"];
            let sticky = match stickiness["Enabled"].as_str() {
                Some("true") => format!(", sticky for {} s", text(stickiness, "DurationSeconds")),
                _ => String::new(),
            };
            format!("forward to {}{sticky}", groups.join(", "))
        }
        "redirect" => {
            let r = &action["RedirectConfig"];
            let status = text(r, "StatusCode");
            let status = status.strip_prefix("HTTP_").unwrap_or(&status);
            // `#{protocol}` keeps the request's own; a named one is written as in a URL.
            let protocol = text(r, "Protocol");
            let protocol = if protocol.starts_with("#{") { protocol } else { protocol.to_ascii_lowercase() };
            // `#{query}`, the default, keeps the request's query: nothing worth saying.
            let query = match r["Query"].as_str() {
                None | Some("" | "#{query}") => String::new(),
                Some(q) => format!("?{q}"),
            };
            format!(
                "redirect {status} to {protocol}://{}:{}{}{query}",
                text(r, "Host"),
                text(r, "Port"),
                text(r, "Path")
            )
        }
        "fixed-response" => {
            let f = &action["FixedResponseConfig"];
            let body = match f["MessageBody"].as_str() {
                Some(body) if !body.is_empty() => format!(": {body:?}"),
                _ => String::new(),
            };
            let content_type = match f["ContentType"].as_str() {
                Some(t) => format!(" ({t})"),
                None => String::new(),
            };
            format!("fixed response {}{content_type}{body}", text(f, "StatusCode"))
        }
        other => other.to_owned(),
    }
}

/// A rule's actions in words (ELB runs them in `Order`).
fn actions_words(actions: &Value, names: &HashMap<String, String>) -> String {
    let mut sorted: Vec<&Value> = items(actions).iter().collect();
    sorted.sort_by_key(|a| a["Order"].as_str().and_then(|o| o.parse::<u32>().ok()).unwrap_or(0));
    if sorted.is_empty() {
        "-".into()
    } else {
        sorted.iter().map(|a| action_words(a, names)).collect::<Vec<_>>().join(", then ")
    }
}

/// `a or b`: the values one condition accepts.
fn either(values: &Value) -> String {
    items(values).iter().map(|v| v.as_str().unwrap_or("-")).collect::<Vec<_>>().join(" or ")
}

/// One condition in words: `path /api/*`, `host a.example.com or b.example.com`, ...
fn condition_words(c: &Value) -> String {
    let field = c["Field"].as_str().unwrap_or("-");
    // ELB fills the legacy `Values` for path and host conditions only; the `...Config` forms
    // hold every field's values.
    let config = |key: &str| either(&c[key]["Values"]);
    match field {
        "path-pattern" => format!("path {}", config("PathPatternConfig")),
        "host-header" => format!("host {}", config("HostHeaderConfig")),
        "http-header" => {
            format!("header {} {}", text(&c["HttpHeaderConfig"], "HttpHeaderName"), config("HttpHeaderConfig"))
        }
        "http-request-method" => format!("method {}", config("HttpRequestMethodConfig")),
        "source-ip" => format!("source IP {}", config("SourceIpConfig")),
        "query-string" => {
            let pairs: Vec<String> = items(&c["QueryStringConfig"]["Values"])
                .iter()
                .map(|q| match q["Key"].as_str() {
                    Some(key) => format!("{key}={}", text(q, "Value")),
                    None => format!("any key={}", text(q, "Value")),
                })
                .collect();
            format!("query {}", pairs.join(" or "))
        }
        other => format!("{other} {}", either(&c["Values"])),
    }
}

fn conditions_words(conditions: &Value) -> String {
    match items(conditions) {
        [] => "(any request)".into(),
        all => all.iter().map(condition_words).collect::<Vec<_>>().join(" and "),
    }
}

fn rows(load_balancers: &[Value]) -> Vec<Vec<String>> {
    load_balancers
        .iter()
        .map(|lb| {
            vec![
                text(lb, "LoadBalancerName"),
                text(lb, "Type"),
                text(lb, "Scheme"),
                text(&lb["State"], "Code"),
                text(lb, "DNSName"),
                listeners_summary(items(&lb["Listeners"])),
            ]
        })
        .collect()
}

fn field_rows(lb: &Value) -> Vec<Vec<String>> {
    let zones: Vec<String> = items(&lb["AvailabilityZones"])
        .iter()
        .map(|z| {
            let addresses: Vec<String> = items(&z["LoadBalancerAddresses"])
                .iter()
                .flat_map(|a| [a["PrivateIPv4Address"].as_str(), a["IpAddress"].as_str()])
                .flatten()
                .map(str::to_owned)
                .collect();
            let addresses = if addresses.is_empty() { String::new() } else { format!(" ({})", addresses.join(", ")) };
            format!("{} {}{addresses}", text(z, "ZoneName"), text(z, "SubnetId"))
        })
        .collect();
    let groups: Vec<&str> = items(&lb["SecurityGroups"]).iter().filter_map(Value::as_str).collect();
    let or_dash = |items: Vec<String>| if items.is_empty() { "-".into() } else { items.join(", ") };
    [
        ("name", text(lb, "LoadBalancerName")),
        ("arn", text(lb, "LoadBalancerArn")),
        ("type", text(lb, "Type")),
        ("scheme", text(lb, "Scheme")),
        ("state", text(&lb["State"], "Code")),
        ("DNS name", text(lb, "DNSName")),
        ("VPC", text(lb, "VpcId")),
        ("zones", or_dash(zones)),
        ("security groups", or_dash(groups.into_iter().map(str::to_owned).collect())),
        ("IP address type", text(lb, "IpAddressType")),
        ("created", text(lb, "CreatedTime")),
    ]
    .into_iter()
    .map(|(field, value)| vec![field.to_owned(), value])
    .collect()
}

/// Listeners by port, each with its certificates (by domain where `domains` knows them).
fn listener_rows(listeners: &[Value], domains: &HashMap<String, String>) -> Vec<Vec<String>> {
    by_port(listeners)
        .iter()
        .map(|l| {
            let certificates: Vec<String> = items(&l["Certificates"])
                .iter()
                .filter_map(|c| c["CertificateArn"].as_str())
                .map(|arn| domains.get(arn).cloned().unwrap_or_else(|| arn.to_owned()))
                .collect();
            let certificates = if certificates.is_empty() { "-".into() } else { certificates.join(", ") };
            vec![listener_name(l), certificates, text(l, "SslPolicy")]
        })
        .collect()
}

/// Listeners as people read them: by port.
fn by_port(listeners: &[Value]) -> Vec<&Value> {
    let mut sorted: Vec<&Value> = listeners.iter().collect();
    sorted.sort_by_key(|l| port(l));
    sorted
}

/// A listener's rules as ELB weighs them: by priority, the default rule last.
fn by_priority(listener: &Value) -> Vec<&Value> {
    let mut rules: Vec<&Value> = items(&listener["Rules"]).iter().collect();
    rules.sort_by_key(|r| r["Priority"].as_str().and_then(|p| p.parse::<u32>().ok()).unwrap_or(u32::MAX));
    rules
}

/// Every rule of every listener: listeners by port, rules by priority.
fn rule_rows(listeners: &[Value], names: &HashMap<String, String>) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for listener in by_port(listeners) {
        for rule in by_priority(listener) {
            out.push(vec![
                listener_name(listener),
                text(rule, "Priority"),
                conditions_words(&rule["Conditions"]),
                actions_words(&rule["Actions"], names),
            ]);
        }
    }
    out
}

fn health_check_words(group: &Value) -> String {
    let port = match group["HealthCheckPort"].as_str() {
        None | Some("traffic-port") => String::new(),
        Some(p) => format!(" port {p}"),
    };
    let what = match group["HealthCheckProtocol"].as_str() {
        Some("TCP") | None => format!("TCP connect{port}"),
        Some(protocol) => {
            let matcher = text(&group["Matcher"], "HttpCode");
            format!("{protocol} {}{port} expecting {matcher}", text(group, "HealthCheckPath"))
        }
    };
    if group["HealthCheckEnabled"].as_str() == Some("false") {
        return "disabled".into();
    }
    format!(
        "{what}, every {} s, healthy after {}, unhealthy after {}",
        text(group, "HealthCheckIntervalSeconds"),
        text(group, "HealthyThresholdCount"),
        text(group, "UnhealthyThresholdCount")
    )
}

fn group_rows(groups: &[Value]) -> Vec<Vec<String>> {
    groups
        .iter()
        .map(|g| vec![text(g, "TargetGroupName"), text(g, "Protocol"), text(g, "Port"), health_check_words(g)])
        .collect()
}

/// One row per target, its state as ELB names it (the table colours it) with ELB's reason; a
/// group without targets says so rather than vanish.
fn target_rows(groups: &[Value]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for group in groups {
        let name = text(group, "TargetGroupName");
        let targets = items(&group["TargetHealthDescriptions"]);
        if targets.is_empty() {
            out.push(vec![name.clone(), "-".into(), "-".into(), "-".into(), "no targets registered".into()]);
        }
        for t in targets {
            let health = &t["TargetHealth"];
            out.push(vec![
                name.clone(),
                format!("{}:{}", text(&t["Target"], "Id"), text(&t["Target"], "Port")),
                text(health, "State"),
                text(health, "Reason"),
                text(health, "Description"),
            ]);
        }
    }
    out
}

/// Every target group the listeners' rules forward to, in the order the rules table first
/// names them.
fn forwarded_groups(listeners: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for listener in by_port(listeners) {
        for rule in by_priority(listener) {
            add_forwarded(&rule["Actions"], &mut out);
        }
    }
    out
}

/// Adds the target groups `actions` forward to that `into` does not hold yet.
fn add_forwarded(actions: &Value, into: &mut Vec<String>) {
    for action in items(actions) {
        let arns = items(&action["ForwardConfig"]["TargetGroups"])
            .iter()
            .filter_map(|g| g["TargetGroupArn"].as_str())
            .chain(action["TargetGroupArn"].as_str());
        for arn in arns {
            if !into.iter().any(|known| known == arn) {
                into.push(arn.to_owned());
            }
        }
    }
}

/// `NAME` or an ARN, as DescribeLoadBalancers' parameter for it.
fn load_balancer_param(name: &str) -> (&'static str, &str) {
    if name.starts_with("arn:") { ("LoadBalancerArns.member.1", name) } else { ("Names.member.1", name) }
}

/// The domain of each certificate, for people; a certificate ACM cannot describe (deleted
/// under the listener) keeps its ARN.
async fn certificate_domains(client: &Client, listeners: &[Value]) -> HashMap<String, String> {
    let mut domains = HashMap::new();
    for listener in listeners {
        for arn in items(&listener["Certificates"]).iter().filter_map(|c| c["CertificateArn"].as_str()) {
            if domains.contains_key(arn) {
                continue;
            }
            let described = client.acm("DescribeCertificate", json!({ "CertificateArn": arn })).await;
            if let Ok(answer) = described
                && let Some(domain) = answer["Certificate"]["DomainName"].as_str()
            {
                domains.insert(arn.to_owned(), domain.to_owned());
            }
        }
    }
    domains
}

async fn list(client: &Client, out: &Output) -> anyhow::Result<()> {
    let mut load_balancers = client.elbv2_all("DescribeLoadBalancers", &[], "LoadBalancers").await?;
    for lb in &mut load_balancers {
        let arn = text(lb, "LoadBalancerArn");
        let listeners = client.elbv2_all("DescribeListeners", &[("LoadBalancerArn", &arn)], "Listeners").await?;
        lb["Listeners"] = Value::Array(listeners);
    }
    out.print(&json!({ "LoadBalancers": load_balancers }), HEADERS, rows(&load_balancers));
    Ok(())
}

async fn show(client: &Client, out: &Output, name: &str) -> anyhow::Result<()> {
    let found = match client.elbv2("DescribeLoadBalancers", &[load_balancer_param(name)]).await {
        Ok(answer) => items(&answer["LoadBalancers"]).first().cloned(),
        Err(e) if e.downcast_ref::<AwsError>().is_some_and(|a| a.code == "LoadBalancerNotFound") => None,
        Err(e) => return Err(e),
    };
    let Some(lb) = found else {
        anyhow::bail!("no load balancer {name}; `flotilla load-balancers` lists them");
    };
    let arn = text(&lb, "LoadBalancerArn");
    let mut listeners = client.elbv2_all("DescribeListeners", &[("LoadBalancerArn", &arn)], "Listeners").await?;
    for listener in &mut listeners {
        let listener_arn = text(listener, "ListenerArn");
        let rules = client.elbv2_all("DescribeRules", &[("ListenerArn", &listener_arn)], "Rules").await?;
        listener["Rules"] = Value::Array(rules);
    }
    let forwarded = forwarded_groups(&listeners);
    let mut groups = Vec::new();
    if !forwarded.is_empty() {
        let keys: Vec<String> = (1..=forwarded.len()).map(|i| format!("TargetGroupArns.member.{i}")).collect();
        let params: Vec<(&str, &str)> =
            keys.iter().map(String::as_str).zip(forwarded.iter().map(String::as_str)).collect();
        groups = client.elbv2_all("DescribeTargetGroups", &params, "TargetGroups").await?;
        // In the order the rules name them, not ELB's.
        groups.sort_by_key(|g| forwarded.iter().position(|arn| *arn == text(g, "TargetGroupArn")));
    }
    for group in &mut groups {
        let group_arn = text(group, "TargetGroupArn");
        let health = client.elbv2("DescribeTargetHealth", &[("TargetGroupArn", &group_arn)]).await?;
        group["TargetHealthDescriptions"] = health["TargetHealthDescriptions"].clone();
    }
    let names: HashMap<String, String> =
        groups.iter().map(|g| (text(g, "TargetGroupArn"), text(g, "TargetGroupName"))).collect();
    let domains = certificate_domains(client, &listeners).await;
    out.print_sections(
        &json!({ "LoadBalancer": lb, "Listeners": listeners, "TargetGroups": groups }),
        vec![
            Section { title: "Load balancer", headers: FIELD_HEADERS, rows: field_rows(&lb) },
            Section { title: "Listeners", headers: LISTENER_HEADERS, rows: listener_rows(&listeners, &domains) },
            Section { title: "Rules", headers: RULE_HEADERS, rows: rule_rows(&listeners, &names) },
            Section { title: "Target groups", headers: GROUP_HEADERS, rows: group_rows(&groups) },
            Section { title: "Targets", headers: TARGET_HEADERS, rows: target_rows(&groups) },
        ],
    );
    Ok(())
}

pub async fn run(client: &Client, out: &Output, action: Option<LoadBalancerAction>) -> anyhow::Result<()> {
    match action {
        None => list(client, out).await,
        Some(LoadBalancerAction::Show { load_balancer }) => show(client, out, &load_balancer).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";
    const API: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/api/fedcba9876543210";

    fn names() -> HashMap<String, String> {
        HashMap::from([(WEB.to_owned(), "web".to_owned()), (API.to_owned(), "api".to_owned())])
    }

    #[test]
    fn forward_and_redirect_actions_read_as_words() {
        let forward = json!({"Type": "forward", "TargetGroupArn": WEB, "ForwardConfig": {
            "TargetGroups": [{"TargetGroupArn": WEB, "Weight": "1"}],
            "TargetGroupStickinessConfig": {"Enabled": "false"}}});
        assert_eq!(action_words(&forward, &names()), "forward to web (weight 1)");
        let split = json!({"Type": "forward", "ForwardConfig": {
            "TargetGroups": [{"TargetGroupArn": WEB, "Weight": "3"}, {"TargetGroupArn": API, "Weight": "1"}],
            "TargetGroupStickinessConfig": {"Enabled": "true", "DurationSeconds": "60"}}});
        assert_eq!(action_words(&split, &names()), "forward to web (weight 3), api (weight 1), sticky for 60 s");
        let redirect = json!({"Type": "redirect", "RedirectConfig": {"Protocol": "HTTPS", "Port": "443",
            "Host": "#{host}", "Path": "/#{path}", "Query": "#{query}", "StatusCode": "HTTP_301"}});
        assert_eq!(action_words(&redirect, &names()), "redirect 301 to https://#{host}:443/#{path}");
        let fixed = json!({"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503",
            "ContentType": "text/plain", "MessageBody": "down"}});
        assert_eq!(action_words(&fixed, &names()), "fixed response 503 (text/plain): \"down\"");
    }

    #[test]
    fn conditions_read_as_words_joined_by_and() {
        let conditions = json!([
            {"Field": "path-pattern", "Values": ["/api/*"], "PathPatternConfig": {"Values": ["/api/*", "/v2/*"]}},
            {"Field": "http-header", "HttpHeaderConfig": {"HttpHeaderName": "X-Env", "Values": ["prod"]}},
            {"Field": "query-string", "QueryStringConfig": {"Values": [{"Key": "v", "Value": "2"}, {"Value": "x"}]}},
        ]);
        assert_eq!(
            conditions_words(&conditions),
            "path /api/* or /v2/* and header X-Env prod and query v=2 or any key=x"
        );
        assert_eq!(conditions_words(&json!([])), "(any request)");
    }

    #[test]
    fn listeners_summarise_by_port_and_rules_put_the_default_last() {
        let listeners = vec![
            json!({"Protocol": "HTTPS", "Port": "443", "Rules": []}),
            json!({"Protocol": "HTTP", "Port": "80", "Rules": [
                {"Priority": "default", "Conditions": [], "Actions": [{"Type": "fixed-response",
                    "FixedResponseConfig": {"StatusCode": "404"}}]},
                {"Priority": "10", "Conditions": [], "Actions": [{"Type": "forward", "TargetGroupArn": API}]},
                {"Priority": "2", "Conditions": [], "Actions": [{"Type": "forward", "TargetGroupArn": WEB}]},
            ]}),
        ];
        assert_eq!(listeners_summary(&listeners), "HTTP:80, HTTPS:443");
        let rules = rule_rows(&listeners, &names());
        let order: Vec<(&str, &str)> = rules.iter().map(|r| (r[1].as_str(), r[3].as_str())).collect();
        assert_eq!(order, [("2", "forward to web"), ("10", "forward to api"), ("default", "fixed response 404")]);
    }

    #[test]
    fn a_group_without_targets_still_shows() {
        let groups = [json!({"TargetGroupName": "web", "TargetHealthDescriptions": []})];
        assert_eq!(target_rows(&groups), [["web", "-", "-", "-", "no targets registered"]]);
    }

    #[test]
    fn forwarded_groups_come_in_the_order_the_rules_table_names_them() {
        let listeners = [
            json!({"Port": "443", "Rules": [{"Priority": "default", "Actions": [{"Type": "forward", "TargetGroupArn": WEB}]}]}),
            json!({"Port": "80", "Rules": [
                {"Priority": "default", "Actions": [{"Type": "forward", "TargetGroupArn": WEB}]},
                {"Priority": "5", "Actions": [{"Type": "forward",
                    "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": API}, {"TargetGroupArn": WEB}]}}]},
            ]}),
        ];
        assert_eq!(forwarded_groups(&listeners), [API, WEB]);
    }
}
