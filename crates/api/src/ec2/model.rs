//! The vendored EC2 model (`model/ec2.json`, a subset of botocore's: see
//! `scripts/vendor-model.py --ops`) with what the `ec2` protocol needs beyond the JSON
//! services: each member's `locationName`/`queryName`, which name it on the wire.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub(crate) struct Ec2Model {
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
    pub min: Option<f64>,
    pub max: Option<f64>,
    #[serde(rename = "enum")]
    pub enumeration: Option<Vec<String>>,
}

impl ShapeRef {
    /// The name a request gives this member: `queryName`, else `locationName` capitalised,
    /// else the member's own name (botocore's `EC2Serializer`).
    pub fn query_name<'a>(&'a self, member: &'a str) -> String {
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

    /// The element name a response gives this member.
    pub fn xml_name<'a>(&'a self, member: &'a str) -> &'a str {
        self.location_name.as_deref().unwrap_or(member)
    }
}

impl Ec2Model {
    pub fn shape(&self, name: &str) -> &Shape {
        self.shapes.get(name).expect("the model refers only to shapes it defines")
    }
}

pub(crate) static MODEL: LazyLock<Ec2Model> =
    LazyLock::new(|| serde_json::from_str(include_str!("../../model/ec2.json")).expect("vendored EC2 model is valid"));
