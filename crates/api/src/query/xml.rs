//! XML answers of the form-encoded services, written by walking the operation's output shape
//! in the vendored model: elements are named by each member's `locationName` (else its name);
//! a list is its items inside the member's element (each item named by the list member's
//! `locationName`, else `member`) or, flattened, the items themselves; a map is `<entry>`s of
//! `<key>` and `<value>`; timestamps are ISO 8601. A value the shape does not allow (an
//! unknown member, a wrong type) is a bug in a handler and fails the request rather than
//! reaching a client. The envelopes around it are each protocol's own (`ec2/xml.rs`,
//! `query/mod.rs`).

use std::fmt::Write;

use flotilla_types::Timestamp;
use serde_json::Value;

use super::model::{QueryModel, Shape};

pub(crate) const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not representable in XML 1.0 at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Writes the members of `value`, a structure of shape `shape_name`, as elements; `path`
/// names where in the answer it is, for the handler's bug report.
pub(crate) fn write_members(
    model: &QueryModel,
    shape_name: &str,
    value: &Value,
    path: &str,
    out: &mut String,
) -> Result<(), String> {
    let shape = model.shape(shape_name);
    let Value::Object(map) = value else {
        return Err(format!("{path}: {shape_name} is a structure, the handler gave {value}"));
    };
    if let Some(unknown) = map.keys().find(|k| !shape.members.contains_key(*k)) {
        return Err(format!("{path}: {unknown} is not a member of {shape_name}"));
    }
    for (member, reference) in &shape.members {
        if let Some(v) = map.get(member) {
            if v.is_null() {
                continue;
            }
            write_value(model, &reference.shape, reference.xml_name(member), v, &format!("{path}.{member}"), out)?;
        }
    }
    Ok(())
}

fn write_value(
    model: &QueryModel,
    shape_name: &str,
    element: &str,
    value: &Value,
    path: &str,
    out: &mut String,
) -> Result<(), String> {
    let shape = model.shape(shape_name);
    let wrong = |expected: &str| format!("{path}: {shape_name} wants {expected}, the handler gave {value}");
    match shape.kind.as_str() {
        "structure" => {
            let _ = write!(out, "<{element}>");
            write_members(model, shape_name, value, path, out)?;
            let _ = write!(out, "</{element}>");
        }
        "list" => {
            let Value::Array(items) = value else { return Err(wrong("a list")) };
            let member = shape.member.as_ref().expect("list shapes have a member");
            if shape.flattened {
                let item = member.location_name.as_deref().unwrap_or(element);
                for (i, v) in items.iter().enumerate() {
                    write_value(model, &member.shape, item, v, &format!("{path}[{i}]"), out)?;
                }
                return Ok(());
            }
            if items.is_empty() {
                let _ = write!(out, "<{element}/>");
                return Ok(());
            }
            let _ = write!(out, "<{element}>");
            let item = member.location_name.as_deref().unwrap_or("member");
            for (i, v) in items.iter().enumerate() {
                write_value(model, &member.shape, item, v, &format!("{path}[{i}]"), out)?;
            }
            let _ = write!(out, "</{element}>");
        }
        "map" => {
            let Value::Object(map) = value else { return Err(wrong("a map")) };
            write_map(model, shape, element, map, path, out)?;
        }
        "string" => {
            let Value::String(s) = value else { return Err(wrong("a string")) };
            if let Some(allowed) = &shape.enumeration
                && !allowed.contains(s)
            {
                return Err(format!("{path}: '{s}' is not one of {shape_name}'s values"));
            }
            let _ = write!(out, "<{element}>{}</{element}>", escape(s));
        }
        "timestamp" => {
            // Handlers give either the text itself or seconds since the epoch, as the JSON
            // services do.
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => Timestamp((n.as_f64().unwrap_or_default() * 1000.0).round() as i64).rfc3339(),
                _ => return Err(wrong("a timestamp")),
            };
            let _ = write!(out, "<{element}>{}</{element}>", escape(&text));
        }
        "blob" => {
            let Value::String(s) = value else { return Err(wrong("base64 text")) };
            let _ = write!(out, "<{element}>{}</{element}>", escape(s));
        }
        "boolean" => {
            let Value::Bool(b) = value else { return Err(wrong("a boolean")) };
            let _ = write!(out, "<{element}>{b}</{element}>");
        }
        "integer" | "long" => {
            let Some(n) = value.as_i64() else { return Err(wrong("an integer")) };
            let _ = write!(out, "<{element}>{n}</{element}>");
        }
        "double" | "float" => {
            let Some(n) = value.as_f64() else { return Err(wrong("a number")) };
            let _ = write!(out, "<{element}>{n}</{element}>");
        }
        other => return Err(format!("{path}: cannot write a {other}")),
    }
    Ok(())
}

/// `<element><entry><key>k</key><value>v</value></entry>...</element>`, or the entries alone
/// when flattened.
fn write_map(
    model: &QueryModel,
    shape: &Shape,
    element: &str,
    map: &serde_json::Map<String, Value>,
    path: &str,
    out: &mut String,
) -> Result<(), String> {
    let key = shape.key.as_ref().expect("map shapes have a key");
    let val = shape.value.as_ref().expect("map shapes have a value");
    let key_name = key.location_name.as_deref().unwrap_or("key");
    let value_name = val.location_name.as_deref().unwrap_or("value");
    let entry = if shape.flattened { element } else { "entry" };
    if !shape.flattened {
        let _ = write!(out, "<{element}>");
    }
    for (k, v) in map {
        let _ = write!(out, "<{entry}>");
        write_value(model, &key.shape, key_name, &Value::String(k.clone()), &format!("{path}.{k}"), out)?;
        write_value(model, &val.shape, value_name, v, &format!("{path}.{k}"), out)?;
        let _ = write!(out, "</{entry}>");
    }
    if !shape.flattened {
        let _ = write!(out, "</{element}>");
    }
    Ok(())
}
