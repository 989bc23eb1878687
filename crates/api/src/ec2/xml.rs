//! EC2 responses as XML, written by walking the operation's output shape in the vendored
//! model: elements are named by each member's `locationName`, lists are `<item>`s. A value
//! the shape does not allow (an unknown member, a wrong type) is a bug in a handler and fails
//! the request rather than reaching a client.

use std::fmt::Write;

use serde_json::Value;

use super::model::{Ec2Model, Shape};

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

const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// `<{operation}Response xmlns=...><requestId>..</requestId>...</{operation}Response>`.
pub(crate) fn response(model: &Ec2Model, operation: &str, request_id: &str, value: &Value) -> Result<String, String> {
    let root = format!("{operation}Response");
    let mut out = format!(
        "{DECLARATION}\n<{root} xmlns=\"{}/\"><requestId>{}</requestId>",
        model.metadata.xml_namespace.trim_end_matches('/'),
        escape(request_id)
    );
    let output = model.operations.get(operation).and_then(|op| op.output.as_ref());
    match output {
        Some(output) => {
            let shape = model.shape(&output.shape);
            write_members(model, shape, &output.shape, value, operation, &mut out)?;
        }
        // Operations without output still answer `<return>true</return>`, as EC2 does.
        None => out.push_str("<return>true</return>"),
    }
    let _ = write!(out, "</{root}>");
    Ok(out)
}

/// `<Response><Errors><Error><Code>..</Code><Message>..</Message></Error></Errors><RequestID>..`.
pub(crate) fn error(code: &str, message: &str, request_id: &str) -> String {
    format!(
        "{DECLARATION}\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(code),
        escape(message),
        escape(request_id)
    )
}

fn write_members(
    model: &Ec2Model,
    shape: &Shape,
    shape_name: &str,
    value: &Value,
    path: &str,
    out: &mut String,
) -> Result<(), String> {
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
    model: &Ec2Model,
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
            write_members(model, shape, shape_name, value, path, out)?;
            let _ = write!(out, "</{element}>");
        }
        "list" => {
            let Value::Array(items) = value else { return Err(wrong("a list")) };
            let member = shape.member.as_ref().expect("list shapes have a member");
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
        "string" | "timestamp" | "blob" => {
            let Value::String(s) = value else { return Err(wrong("a string")) };
            if let Some(allowed) = &shape.enumeration
                && !allowed.contains(s)
            {
                return Err(format!("{path}: '{s}' is not one of {shape_name}'s values"));
            }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::model::MODEL;
    use super::*;

    #[test]
    fn writes_location_names_and_items() {
        let vpc = json!({"Vpc": {"VpcId": "vpc-1", "IsDefault": false, "State": "available",
            "Tags": [{"Key": "Name", "Value": "a<b"}], "CidrBlockAssociationSet": []}});
        let xml = response(&MODEL, "CreateVpc", "req-1", &vpc).unwrap();
        assert!(xml.starts_with("<?xml"), "{xml}");
        assert!(xml.contains(r#"<CreateVpcResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>req-1</requestId><vpc>"#), "{xml}");
        assert!(xml.contains("<tagSet><item><key>Name</key><value>a&lt;b</value></item></tagSet>"), "{xml}");
        assert!(xml.contains("<cidrBlockAssociationSet/>"), "{xml}");
        assert!(xml.contains("<isDefault>false</isDefault>"), "{xml}");
        assert!(xml.ends_with("</vpc></CreateVpcResponse>"), "{xml}");
    }

    #[test]
    fn refuses_values_outside_the_shape() {
        let err = response(&MODEL, "CreateVpc", "r", &json!({"Vpc": {"Bogus": 1}})).unwrap_err();
        assert!(err.contains("Bogus"), "{err}");
        let err = response(&MODEL, "CreateVpc", "r", &json!({"Vpc": {"IsDefault": "yes"}})).unwrap_err();
        assert!(err.contains("IsDefault"), "{err}");
        let err = response(&MODEL, "CreateVpc", "r", &json!({"Vpc": {"State": "sleepy"}})).unwrap_err();
        assert!(err.contains("sleepy"), "{err}");
    }

    #[test]
    fn operations_without_output_return_true() {
        let xml = response(&MODEL, "CreateTags", "r", &json!({})).unwrap();
        assert!(xml.contains("<return>true</return></CreateTagsResponse>"), "{xml}");
    }

    #[test]
    fn errors_have_ec2s_envelope() {
        assert_eq!(
            error("InvalidSubnet.Range", "The CIDR '10.1.0.0/24' is invalid & <bad>", "r-1"),
            format!(
                "{DECLARATION}\n<Response><Errors><Error><Code>InvalidSubnet.Range</Code><Message>The CIDR &apos;10.1.0.0/24&apos; is invalid &amp; &lt;bad&gt;</Message></Error></Errors><RequestID>r-1</RequestID></Response>"
            )
        );
    }
}
