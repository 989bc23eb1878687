//! Form-encoded requests read into the JSON shape of the operation's input (members by their
//! model names, values typed), walking the model the way botocore walked it to write them.
//! Both form-encoded protocols share this walk; they differ in how a member is named on the
//! wire and how a list is spelled, which [`Dialect`] says, and in how they word a problem,
//! which each caller does from the [`Problem`]s found.
//!
//! - `ec2`: a member is `queryName`, else `locationName` capitalised, else its own name; a
//!   list is always `Name.1`, `Name.2`, ... (botocore's `EC2Serializer`).
//! - `query` (ELBv2): a member is `locationName`, else its own name; a list is
//!   `Name.member.1` (the member's `locationName` instead of `member` if it has one), or
//!   `Name.1` when flattened; a map is `Name.entry.1.key` / `Name.entry.1.value`
//!   (`Name.1.key` flattened) (botocore's `QuerySerializer`).
//!
//! In both, an empty list is `Name=` with nothing after it; booleans are `true`/`false`;
//! timestamps and blobs reach handlers as the text that was sent.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::form::Params;
use super::model::{QueryModel, Shape, ShapeRef};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    Ec2,
    Query,
}

/// One parameter the model refuses.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Problem {
    /// The parameter's name on the wire (`Tags.member.1.Key`).
    pub wire: String,
    /// Its place in the input, as AWS's validation messages name it: members in lower camel
    /// case, list items as `N.member` (`tags.1.member.key`).
    pub path: String,
    pub kind: ProblemKind,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ProblemKind {
    /// A required member is absent.
    Missing,
    /// A string outside the shape's `enum`.
    NotOneOf { value: String, allowed: Vec<String> },
    /// Text that is not of the shape's type; `expected` says what it should be.
    NotA { value: String, expected: &'static str },
    /// A string's or list's length outside `min..=max`; `value` is the string (`None` for a
    /// list), `count` its length.
    Length { value: Option<String>, count: usize, min: Option<f64>, max: Option<f64> },
    /// A number outside `min..=max`.
    Range { value: String, min: Option<f64>, max: Option<f64> },
}

/// A request's input as read: what the model allows, what it refused, and the parameters it
/// does not know (besides `Action` and `Version`).
pub(crate) struct Input {
    pub value: Value,
    pub problems: Vec<Problem>,
    pub unknown: Vec<String>,
}

/// The input of `operation` read from `params`; `None` if the model has no such operation.
pub(crate) fn read_input(model: &QueryModel, dialect: Dialect, operation: &str, params: &Params) -> Option<Input> {
    let op = model.operations.get(operation)?;
    let mut reader = Reader { model, dialect, params, used: BTreeSet::new(), problems: Vec::new() };
    let value = match &op.input {
        Some(input) => reader.structure(model.shape(&input.shape), "", ""),
        None => None,
    };
    let unknown = params
        .keys()
        .filter(|k| !reader.used.contains(k.as_str()) && !matches!(k.as_str(), "Action" | "Version"))
        .cloned()
        .collect();
    Some(Input { value: value.unwrap_or_else(|| Value::Object(Map::new())), problems: reader.problems, unknown })
}

struct Reader<'a> {
    model: &'a QueryModel,
    dialect: Dialect,
    params: &'a Params,
    used: BTreeSet<&'a str>,
    problems: Vec<Problem>,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() { name.to_owned() } else { format!("{prefix}.{name}") }
}

/// `TargetGroupArn` -> `targetGroupArn`, as AWS's validation messages name members.
fn lower_camel(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map(|c| c.to_ascii_lowercase().to_string() + chars.as_str()).unwrap_or_default()
}

impl<'a> Reader<'a> {
    /// Parameters whose names start with `prefix.`.
    fn under(&self, prefix: &str) -> impl Iterator<Item = (&'a String, &'a String)> + use<'a> {
        let start = format!("{prefix}.");
        self.params.range(start.clone()..).take_while(move |(k, _)| k.starts_with(&start))
    }

    /// The item numbers (1, 2, ...) present under `prefix`, in numeric order.
    fn indices(&self, prefix: &str) -> BTreeSet<usize> {
        self.under(prefix)
            .filter_map(|(k, _)| k[prefix.len() + 1..].split('.').next()?.parse::<usize>().ok())
            .filter(|&i| i >= 1)
            .collect()
    }

    fn problem(&mut self, wire: &str, path: &str, kind: ProblemKind) {
        self.problems.push(Problem { wire: wire.to_owned(), path: path.to_owned(), kind });
    }

    fn member_name(&self, reference: &ShapeRef, member: &str) -> String {
        match self.dialect {
            Dialect::Ec2 => reference.ec2_name(member),
            Dialect::Query => reference.xml_name(member).to_owned(),
        }
    }

    /// Reads the value of shape `shape_name` at wire name `name`; `None` if it is absent or
    /// refused (the refusal is recorded).
    fn read(&mut self, shape_name: &str, name: &str, path: &str) -> Option<Value> {
        let shape = self.model.shape(shape_name);
        match shape.kind.as_str() {
            "structure" => self.structure(shape, name, path),
            "list" => self.list(shape, name, path),
            "map" => self.map(shape, name, path),
            _ => {
                let (key, raw) = self.params.get_key_value(name)?;
                self.used.insert(key.as_str());
                match scalar(shape, raw) {
                    Ok(v) => Some(v),
                    Err(kind) => {
                        self.problem(name, path, kind);
                        None
                    }
                }
            }
        }
    }

    /// `Name=` with nothing after it: the protocols' empty list.
    fn empty_marker(&mut self, name: &str) -> bool {
        match self.params.get_key_value(name) {
            Some((key, v)) if v.is_empty() => {
                self.used.insert(key.as_str());
                true
            }
            _ => false,
        }
    }

    fn list(&mut self, shape: &'a Shape, name: &str, path: &str) -> Option<Value> {
        let member = shape.member.as_ref().expect("list shapes have a member");
        let prefix = match self.dialect {
            Dialect::Ec2 => name.to_owned(),
            Dialect::Query if shape.flattened => match &member.location_name {
                Some(item) => match name.rsplit_once('.') {
                    Some((parent, _)) => format!("{parent}.{item}"),
                    None => item.clone(),
                },
                None => name.to_owned(),
            },
            Dialect::Query => format!("{name}.{}", member.location_name.as_deref().unwrap_or("member")),
        };
        let indices = self.indices(&prefix);
        let items = if indices.is_empty() {
            if !self.empty_marker(name) {
                return None;
            }
            Vec::new()
        } else {
            let mut items = Vec::with_capacity(indices.len());
            for i in indices {
                let item_path = format!("{path}.{i}.member");
                if let Some(v) = self.read(&member.shape, &format!("{prefix}.{i}"), &item_path) {
                    items.push(v);
                }
            }
            items
        };
        let count = items.len();
        if shape.min.is_some_and(|min| (count as f64) < min) || shape.max.is_some_and(|max| count as f64 > max) {
            self.problem(name, path, ProblemKind::Length { value: None, count, min: shape.min, max: shape.max });
            return None;
        }
        Some(Value::Array(items))
    }

    fn map(&mut self, shape: &'a Shape, name: &str, path: &str) -> Option<Value> {
        let key_ref = shape.key.as_ref().expect("map shapes have a key");
        let value_ref = shape.value.as_ref().expect("map shapes have a value");
        let prefix =
            if shape.flattened || self.dialect == Dialect::Ec2 { name.to_owned() } else { format!("{name}.entry") };
        let key_name = key_ref.location_name.as_deref().unwrap_or("key");
        let value_name = value_ref.location_name.as_deref().unwrap_or("value");
        let indices = self.indices(&prefix);
        if indices.is_empty() {
            return None;
        }
        let mut out = Map::new();
        for i in indices {
            let entry = format!("{prefix}.{i}");
            let key_param = format!("{entry}.{key_name}");
            let Some(Value::String(key)) = self.read(&key_ref.shape, &key_param, &format!("{path}.{i}.key")) else {
                if !self.params.contains_key(&key_param) {
                    self.problem(&key_param, &format!("{path}.{i}.key"), ProblemKind::Missing);
                }
                continue;
            };
            let value_path = format!("{path}.{key}");
            if let Some(v) = self.read(&value_ref.shape, &format!("{entry}.{value_name}"), &value_path) {
                out.insert(key, v);
            }
        }
        Some(Value::Object(out))
    }

    /// The structure at `prefix` (`""`: the input itself, always present).
    fn structure(&mut self, shape: &'a Shape, prefix: &str, path: &str) -> Option<Value> {
        if !prefix.is_empty() && self.under(prefix).next().is_none() {
            return None;
        }
        let mut out = Map::new();
        for (member, reference) in &shape.members {
            let name = join(prefix, &self.member_name(reference, member));
            let member_path = join(path, &lower_camel(member));
            if let Some(v) = self.read(&reference.shape, &name, &member_path) {
                out.insert(member.clone(), v);
            }
        }
        for required in &shape.required {
            let wire = join(prefix, &self.member_name(&shape.members[required], required));
            // A member present but refused has its own problem already.
            if !out.contains_key(required) && !self.problems.iter().any(|p| p.wire == wire) {
                let member_path = join(path, &lower_camel(required));
                self.problem(&wire, &member_path, ProblemKind::Missing);
            }
        }
        Some(Value::Object(out))
    }
}

fn scalar(shape: &Shape, raw: &str) -> Result<Value, ProblemKind> {
    let out_of = |min: Option<f64>, max: Option<f64>, n: f64| min.is_some_and(|m| n < m) || max.is_some_and(|m| n > m);
    match shape.kind.as_str() {
        "string" => {
            if let Some(allowed) = &shape.enumeration
                && !allowed.iter().any(|a| a == raw)
            {
                return Err(ProblemKind::NotOneOf { value: raw.to_owned(), allowed: allowed.clone() });
            }
            let count = raw.chars().count();
            if out_of(shape.min, shape.max, count as f64) {
                return Err(ProblemKind::Length { value: Some(raw.to_owned()), count, min: shape.min, max: shape.max });
            }
            Ok(Value::String(raw.to_owned()))
        }
        "integer" | "long" => {
            let not_a = |expected| ProblemKind::NotA { value: raw.to_owned(), expected };
            let n: i64 = raw.trim().parse().map_err(|_| not_a("an integer"))?;
            if shape.kind == "integer" && i32::try_from(n).is_err() {
                return Err(not_a("a 32-bit integer"));
            }
            if out_of(shape.min, shape.max, n as f64) {
                return Err(ProblemKind::Range { value: raw.to_owned(), min: shape.min, max: shape.max });
            }
            Ok(Value::from(n))
        }
        "boolean" => match raw.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(ProblemKind::NotA { value: raw.to_owned(), expected: "true or false" }),
        },
        "double" | "float" => {
            let n: f64 =
                raw.trim().parse().map_err(|_| ProblemKind::NotA { value: raw.to_owned(), expected: "a number" })?;
            if out_of(shape.min, shape.max, n) {
                return Err(ProblemKind::Range { value: raw.to_owned(), min: shape.min, max: shape.max });
            }
            Ok(serde_json::Number::from_f64(n).map(Value::Number).unwrap_or(Value::Null))
        }
        _ => Ok(Value::String(raw.to_owned())),
    }
}
