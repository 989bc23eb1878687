//! The vendored models of the form-encoded services (`model/ec2.json`, `model/elbv2.json`,
//! subsets or all of botocore's) with what their protocols need beyond the JSON services:
//! each member's `locationName`/`queryName`, flattened lists, the result wrapper of each
//! operation's output and the wire code and status of each error shape.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(crate) struct QueryModel {
    pub metadata: Metadata,
    pub operations: HashMap<String, Operation>,
    pub shapes: HashMap<String, Shape>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Metadata {
    pub xml_namespace: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Operation {
    pub input: Option<ShapeRef>,
    pub output: Option<ShapeRef>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShapeRef {
    pub shape: String,
    pub location_name: Option<String>,
    pub query_name: Option<String>,
    /// The element around an operation's output (`<CreateLoadBalancerResult>`).
    pub result_wrapper: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Shape {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub required: Vec<String>,
    /// Ordered, so that responses come out the same every time.
    #[serde(default)]
    pub members: BTreeMap<String, ShapeRef>,
    pub member: Option<ShapeRef>,
    pub key: Option<ShapeRef>,
    pub value: Option<ShapeRef>,
    #[serde(default)]
    pub flattened: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(rename = "enum")]
    pub enumeration: Option<Vec<String>>,
    /// On error shapes: the code on the wire and the HTTP status.
    pub error: Option<ErrorTrait>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorTrait {
    pub code: Option<String>,
    pub http_status_code: Option<u16>,
}

impl ShapeRef {
    /// The name an EC2 request gives this member: `queryName`, else `locationName`
    /// capitalised, else the member's own name (botocore's `EC2Serializer`).
    pub fn ec2_name<'a>(&'a self, member: &'a str) -> String {
        if let Some(q) = &self.query_name {
            return q.clone();
        }
        match &self.location_name {
            Some(l) => {
                let mut chars = l.chars();
                chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
            }
            None => member.to_owned(),
        }
    }

    /// The name a Query request or any XML response gives this member: its `locationName`,
    /// else its own name (botocore's `QuerySerializer`).
    pub fn xml_name<'a>(&'a self, member: &'a str) -> &'a str {
        self.location_name.as_deref().unwrap_or(member)
    }
}

impl QueryModel {
    pub fn parse(json: &str) -> QueryModel {
        serde_json::from_str(json).expect("vendored Query model is valid")
    }

    pub fn shape(&self, name: &str) -> &Shape {
        self.shapes.get(name).expect("the model refers only to shapes it defines")
    }

    /// The error shape whose wire code is `code`, if the model declares one.
    pub fn error(&self, code: &str) -> Option<&ErrorTrait> {
        self.shapes.values().filter_map(|s| s.error.as_ref()).find(|e| e.code.as_deref() == Some(code))
    }
}

pub(crate) static EC2: LazyLock<QueryModel> = LazyLock::new(|| QueryModel::parse(include_str!("../../model/ec2.json")));

pub(crate) static ELBV2: LazyLock<QueryModel> =
    LazyLock::new(|| QueryModel::parse(include_str!("../../model/elbv2.json")));
