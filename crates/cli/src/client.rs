//! A small SigV4-signing client for Flotilla's AWS JSON APIs, used by the CLI and benchmarks.

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
        let mut form = format!("Action={}&Version={EC2_VERSION}", form_encode(action));
        for (name, value) in params {
            form.push_str(&format!("&{}={}", form_encode(name), form_encode(value)));
        }
        let headers = vec![
            ("content-type".to_owned(), "application/x-www-form-urlencoded; charset=utf-8".to_owned()),
            ("host".to_owned(), self.host.clone()),
        ];
        let (status, bytes) = self.post("ec2", headers, form.into_bytes()).await?;
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
}

/// The EC2 API version the vendored model (and so the server) speaks.
const EC2_VERSION: &str = "2016-11-15";

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
        out.push(
            after[..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = &after[end + close.len()..];
    }
    out
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
    fn form_encode_leaves_only_unreserved_characters() {
        assert_eq!(form_encode("Filter.1.Name"), "Filter.1.Name");
        assert_eq!(form_encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
