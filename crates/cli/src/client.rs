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
        let bytes = response.into_body().collect().await?.to_bytes();
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

    pub async fn ecs(&self, operation: &str, body: Value) -> anyhow::Result<Value> {
        self.call("ecs", &format!("AmazonEC2ContainerServiceV20141113.{operation}"), &body).await
    }
}
