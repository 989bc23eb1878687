//! Form bodies (`application/x-www-form-urlencoded`), as both form-encoded protocols send them.

use std::collections::BTreeMap;

/// Decoded form parameters; a repeated name keeps its last value.
pub(crate) type Params = BTreeMap<String, String>;

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// `+` is a space, `%XX` a byte; a `%` not followed by two hex digits stays as it is.
pub(crate) fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The parameters of a form body; `None` if the body is not UTF-8 (each protocol names that
/// error its own way).
pub(crate) fn parse_form(body: &[u8]) -> Option<Params> {
    let text = std::str::from_utf8(body).ok()?;
    Some(
        text.split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (form_decode(k), form_decode(v))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_encoding() {
        assert_eq!(form_decode("a+b%2Fc%3D%ZZ%"), "a b/c=%ZZ%");
        let p = parse_form(b"Action=X&CidrBlock=10.0.0.0%2F16&Empty=").unwrap();
        assert_eq!(p["CidrBlock"], "10.0.0.0/16");
        assert_eq!(p["Empty"], "");
        assert!(parse_form(b"\xff=1").is_none());
    }
}
