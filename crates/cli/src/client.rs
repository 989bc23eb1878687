//! A small SigV4-signing client for Flotilla's AWS APIs (the JSON ones, EC2 and the Query
//! protocol of ELBv2), used by the CLI and benchmarks.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use flotilla_api::Credentials;
use flotilla_api::sigv4::{SignedRequest, sign};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// An AWS error answer: code and message as the server sent them.
#[derive(Debug)]
pub struct AwsError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for AwsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for AwsError {}

#[derive(Clone)]
pub struct Client {
    http: HyperClient<HttpConnector, Full<Bytes>>,
    endpoint: hyper::Uri,
    host: String,
    credentials: Credentials,
    region: String,
}

impl Client {
    pub fn new(endpoint: &str, credentials: Credentials, region: &str) -> anyhow::Result<Client> {
        let uri: hyper::Uri = endpoint.parse().with_context(|| format!("endpoint '{endpoint}' is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("endpoint '{endpoint}': the flotilla CLI speaks plain http to the server (use http://HOST:PORT)");
        }
        let host = uri.authority().map(|a| a.to_string()).context("endpoint has no host")?;
        let http = HyperClient::builder(TokioExecutor::new()).build_http();
        Ok(Client { http, endpoint: uri, host, credentials, region: region.to_owned() })
    }

    /// Calls `target` (e.g. `AmazonEC2ContainerServiceV20141113.ListClusters`), signed for
    /// `service` (e.g. `ecs`). AWS errors come back as [`AwsError`].
    pub async fn call(&self, service: &str, target: &str, body: &Value) -> anyhow::Result<Value> {
        let body = serde_json::to_vec(body)?;
        let headers = vec![
            ("content-type".to_owned(), "application/x-amz-json-1.1".to_owned()),
            ("host".to_owned(), self.host.clone()),
            ("x-amz-target".to_owned(), target.to_owned()),
        ];
        let (status, bytes) = self.post(service, headers, body).await?;
        let value: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("server answered HTTP {status} with a body that is not JSON"))?;
        if status >= 400 {
            let code = value["__type"].as_str().unwrap_or("UnknownError");
            let code = code.rsplit('#').next().unwrap_or(code).to_owned();
            let message = value["message"].as_str().unwrap_or("").to_owned();
            return Err(AwsError { status, code, message }.into());
        }
        Ok(value)
    }

    /// Calls a paginated ECS list operation until `nextToken` runs out; returns every `field` item.
    pub async fn ecs_list_all(&self, operation: &str, mut body: Value, field: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        loop {
            let page = self.ecs(operation, body.clone()).await?;
            items.extend(page[field].as_array().cloned().unwrap_or_default());
            match page["nextToken"].as_str() {
                Some(token) => body["nextToken"] = Value::String(token.to_owned()),
                None => return Ok(items),
            }
        }
    }

    /// Calls an EC2 Query-protocol `action` with form `params` (`Filter.1.Name`, ...) and
    /// returns the XML answer. EC2 errors come back as [`AwsError`].
    pub async fn ec2(&self, action: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
        self.form("ec2", EC2_VERSION, action, params).await
    }

    /// Calls an Elastic Load Balancing v2 `action` with form `params` (`Names.member.1`, ...)
    /// and returns its result (the `<{action}Result>` element) as JSON: see [`xml_value`].
    /// ELB errors come back as [`AwsError`].
    pub async fn elbv2(&self, action: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
        let xml = self.form("elasticloadbalancing", ELBV2_VERSION, action, params).await?;
        let answer = xml_value(&xml).with_context(|| format!("ELB answered {action} with XML the CLI cannot read"))?;
        Ok(answer[format!("{action}Response")][format!("{action}Result")].clone())
    }

    /// Calls a paginated ELBv2 `Describe*` action until `NextMarker` runs out; returns every
    /// `field` item.
    pub async fn elbv2_all(&self, action: &str, params: &[(&str, &str)], field: &str) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut paged = params.to_vec();
            if let Some(m) = &marker {
                paged.push(("Marker", m));
            }
            let page = self.elbv2(action, &paged).await?;
            items.extend(page[field].as_array().cloned().unwrap_or_default());
            match page["NextMarker"].as_str() {
                Some(next) if !next.is_empty() => marker = Some(next.to_owned()),
                _ => return Ok(items),
            }
        }
    }

    /// Calls a form-encoded (Query protocol) `action` of `service` (its signing name) and
    /// returns the XML answer; an error answer becomes an [`AwsError`] (EC2's
    /// `<Errors><Error>` and the Query protocol's `<ErrorResponse><Error>` both carry a
    /// `Code` and a `Message`).
    async fn form(
        &self,
        service: &str,
        version: &str,
        action: &str,
        params: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let mut form = format!("Action={}&Version={version}", form_encode(action));
        for (name, value) in params {
            form.push_str(&format!("&{}={}", form_encode(name), form_encode(value)));
        }
        let headers = vec![
            ("content-type".to_owned(), "application/x-www-form-urlencoded; charset=utf-8".to_owned()),
            ("host".to_owned(), self.host.clone()),
        ];
        let (status, bytes) = self.post(service, headers, form.into_bytes()).await?;
        let xml = String::from_utf8_lossy(&bytes).into_owned();
        if status >= 400 {
            let code = xml_texts(&xml, "Code").into_iter().next().unwrap_or_else(|| "UnknownError".to_owned());
            let message = xml_texts(&xml, "Message").into_iter().next().unwrap_or_default();
            return Err(AwsError { status, code, message }.into());
        }
        Ok(xml)
    }

    /// Signs and sends one POST; the status and body of the answer.
    async fn post(&self, service: &str, headers: Vec<(String, String)>, body: Vec<u8>) -> anyhow::Result<(u16, Bytes)> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as i64;
        let unsigned = SignedRequest { method: "POST", path: "/", query: "", headers: headers.clone(), body: &body };
        let auth = sign(&unsigned, &self.credentials, &self.region, service, now);
        let mut request = hyper::Request::post(self.endpoint.clone());
        for (name, value) in headers.iter().chain(auth.iter()) {
            request = request.header(name, value);
        }
        let response = self
            .http
            .request(request.body(Full::new(Bytes::from(body)))?)
            .await
            .with_context(|| format!("cannot reach Flotilla at {}; is `flotilla up` running?", self.endpoint))?;
        let status = response.status().as_u16();
        Ok((status, response.into_body().collect().await?.to_bytes()))
    }

    pub async fn ecs(&self, operation: &str, body: Value) -> anyhow::Result<Value> {
        self.call("ecs", &format!("AmazonEC2ContainerServiceV20141113.{operation}"), &body).await
    }

    pub async fn acm(&self, operation: &str, body: Value) -> anyhow::Result<Value> {
        self.call("acm", &format!("CertificateManager.{operation}"), &body).await
    }
}

/// The EC2 API version the vendored model (and so the server) speaks.
const EC2_VERSION: &str = "2016-11-15";

/// The Elastic Load Balancing v2 API version.
const ELBV2_VERSION: &str = "2015-12-01";

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// The text of every `<name>...</name>` element, in document order, entities decoded. EC2's
/// answers are flat enough for this: the CLI reads a few leaf elements (ids, error codes)
/// and needs no XML library for it.
pub fn xml_texts(xml: &str, name: &str) -> Vec<String> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(decode_entities(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

/// A Query-protocol answer as JSON, read the way the protocol writes it, without its model:
/// an element holding elements is an object of them by name, except that a list's items
/// (`<member>`) make an array, as does a self-closing element (how the protocol writes an
/// empty list); any other element is its text. Leaves stay text (`"80"`, `"true"`): without
/// the model the CLI cannot tell a number from a name made of digits. `None` when `xml` is
/// not well-formed enough to read.
pub fn xml_value(xml: &str) -> Option<Value> {
    let mut rest = skip_prolog(xml);
    let (name, value, after) = xml_element(rest)?;
    rest = skip_prolog(after);
    rest.is_empty().then(|| serde_json::json!({ name: value }))
}

/// `xml` past whitespace, the declaration and comments.
fn skip_prolog(mut xml: &str) -> &str {
    loop {
        xml = xml.trim_start();
        let end = if xml.starts_with("<?") {
            xml.find("?>").map(|e| e + 2)
        } else if xml.starts_with("<!--") {
            xml.find("-->").map(|e| e + 3)
        } else {
            return xml;
        };
        match end {
            Some(end) => xml = &xml[end..],
            None => return xml,
        }
    }
}

/// The element `xml` starts with: its name, its value (as [`xml_value`] reads it) and what
/// follows it.
fn xml_element(xml: &str) -> Option<(&str, Value, &str)> {
    let end = xml.strip_prefix('<')?.find('>')? + 1;
    let tag = &xml[1..end];
    let (tag, self_closing) = match tag.strip_suffix('/') {
        Some(tag) => (tag, true),
        None => (tag, false),
    };
    // Attributes (`xmlns`) carry nothing the CLI reads.
    let name = tag.split_whitespace().next()?;
    let mut rest = &xml[end + 1..];
    if self_closing {
        return Some((name, Value::Array(Vec::new()), rest));
    }
    let mut text = String::new();
    let mut children: Vec<(&str, Value)> = Vec::new();
    loop {
        let lt = rest.find('<')?;
        text.push_str(&rest[..lt]);
        rest = &rest[lt..];
        if let Some(close) = rest.strip_prefix("</") {
            let gt = close.find('>')?;
            if close[..gt].trim() != name {
                return None;
            }
            rest = &close[gt + 1..];
            break;
        }
        if rest.starts_with("<!--") {
            rest = &rest[rest.find("-->")? + 3..];
            continue;
        }
        let (child, value, after) = xml_element(rest)?;
        children.push((child, value));
        rest = after;
    }
    let value = if children.is_empty() {
        Value::String(decode_entities(&text))
    } else if children.iter().all(|(child, _)| *child == "member") {
        Value::Array(children.into_iter().map(|(_, v)| v).collect())
    } else {
        let mut object = serde_json::Map::new();
        for (child, value) in children {
            object.insert(child.to_owned(), value);
        }
        Value::Object(object)
    };
    Some((name, value, rest))
}

fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_texts_reads_leaf_elements_in_order() {
        let xml = "<r><subnetSet><item><subnetId>subnet-1</subnetId></item>\
                   <item><subnetId>subnet-2</subnetId></item></subnetSet><Message>a &amp; &lt;b&gt;</Message></r>";
        assert_eq!(xml_texts(xml, "subnetId"), ["subnet-1", "subnet-2"]);
        assert_eq!(xml_texts(xml, "Message"), ["a & <b>"]);
        assert!(xml_texts(xml, "vpcId").is_empty());
    }

    #[test]
    fn xml_value_reads_structures_lists_and_text() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<DescribeListenersResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
  <DescribeListenersResult>
    <Listeners>
      <member><Port>80</Port><Certificates/><DefaultActions><member><Type>forward</Type></member></DefaultActions></member>
      <member><Port>443</Port><SslPolicy>a &amp; b</SslPolicy><Empty></Empty></member>
    </Listeners>
  </DescribeListenersResult>
  <!-- a comment -->
  <ResponseMetadata><RequestId>r-1</RequestId></ResponseMetadata>
</DescribeListenersResponse>"#;
        let value = xml_value(xml).unwrap();
        let result = &value["DescribeListenersResponse"]["DescribeListenersResult"];
        assert_eq!(
            result["Listeners"],
            serde_json::json!([
                {"Port": "80", "Certificates": [], "DefaultActions": [{"Type": "forward"}]},
                {"Port": "443", "SslPolicy": "a & b", "Empty": ""},
            ])
        );
        assert_eq!(value["DescribeListenersResponse"]["ResponseMetadata"]["RequestId"], "r-1");
    }

    #[test]
    fn xml_value_refuses_what_is_not_one_well_formed_element() {
        assert!(xml_value("<a><b>1</b>").is_none());
        assert!(xml_value("<a><b>1</c></a>").is_none());
        assert!(xml_value("<a/><b/>").is_none());
        assert!(xml_value("not xml").is_none());
    }

    #[test]
    fn form_encode_leaves_only_unreserved_characters() {
        assert_eq!(form_encode("Filter.1.Name"), "Filter.1.Name");
        assert_eq!(form_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
