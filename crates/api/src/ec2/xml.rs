//! EC2's envelopes around the shared XML writer (`query/xml.rs`): `<requestId>` first in every
//! answer, `<return>true</return>` for actions without output, and EC2's own error document.

use std::fmt::Write;

use serde_json::Value;

use crate::query::model::QueryModel;
use crate::query::xml::{DECLARATION, escape, write_members};

/// `<{operation}Response xmlns=...><requestId>..</requestId>...</{operation}Response>`.
pub(crate) fn response(model: &QueryModel, operation: &str, request_id: &str, value: &Value) -> Result<String, String> {
    let root = format!("{operation}Response");
    let mut out = format!(
        "{DECLARATION}\n<{root} xmlns=\"{}/\"><requestId>{}</requestId>",
        model.metadata.xml_namespace.trim_end_matches('/'),
        escape(request_id)
    );
    let output = model.operations.get(operation).and_then(|op| op.output.as_ref());
    match output {
        Some(output) => write_members(model, &output.shape, value, operation, &mut out)?,
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::query::model::EC2 as MODEL;

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
