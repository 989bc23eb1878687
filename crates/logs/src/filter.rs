//! CloudWatch Logs filter patterns for unstructured text: the term forms.
//!
//! - empty: every event;
//! - `ERROR Exception`: every term must appear (case-sensitive);
//! - `"Connection refused"`: a quoted phrase is one term;
//! - `?ERROR ?WARN`: at least one of the `?` terms must appear;
//! - `ERROR -Retrying`: a `-` term must not appear.
//!
//! JSON (`{ $.level = ... }`), space-delimited (`[ip, user, ...]`) and regular-expression
//! (`%...%`) patterns are refused as not supported rather than matched as literal text.

use crate::LogError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterPattern {
    all: Vec<String>,
    any: Vec<String>,
    none: Vec<String>,
}

impl FilterPattern {
    pub fn parse(pattern: &str) -> Result<FilterPattern, LogError> {
        let text = pattern.trim();
        let unsupported = |kind: &str| {
            LogError::invalid(format!(
                "filterPattern: {kind} filter patterns are not supported by Flotilla; use terms, \"quoted phrases\", ?any and -excluded terms."
            ))
        };
        if text.starts_with('{') {
            return Err(unsupported("JSON"));
        }
        if text.starts_with('[') {
            return Err(unsupported("space-delimited"));
        }
        if text.starts_with('%') && text.len() > 1 && text.ends_with('%') {
            return Err(unsupported("regular-expression"));
        }
        let mut out = FilterPattern::default();
        let mut chars = text.chars().peekable();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let Some(&first) = chars.peek() else { break };
            let kind = match first {
                '?' | '-' => {
                    chars.next();
                    first
                }
                _ => ' ',
            };
            let mut term = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => term.extend(chars.next()),
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => term.push(c),
                    }
                }
                if !closed {
                    return Err(LogError::invalid(format!(
                        "filterPattern: unterminated quoted phrase in '{pattern}'."
                    )));
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    term.push(c);
                }
            }
            if term.is_empty() {
                // A lone `?` or `-` (or `""`) constrains nothing.
                continue;
            }
            match kind {
                '?' => out.any.push(term),
                '-' => out.none.push(term),
                _ => out.all.push(term),
            }
        }
        Ok(out)
    }

    /// True for the empty pattern.
    pub fn matches_everything(&self) -> bool {
        self.all.is_empty() && self.any.is_empty() && self.none.is_empty()
    }

    pub fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| message.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| message.contains(t.as_str())))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, message: &str) -> bool {
        FilterPattern::parse(pattern).unwrap().matches(message)
    }

    #[test]
    fn terms_phrases_any_and_none() {
        assert!(m("", "anything"));
        assert!(m("   ", "anything"));
        assert!(m("ERROR", "2024 ERROR disk full"));
        assert!(!m("ERROR", "2024 error disk full"), "terms are case-sensitive");
        assert!(m("ERROR disk", "disk ERROR"));
        assert!(!m("ERROR disk", "ERROR memory"));
        assert!(m("\"disk full\"", "ERROR disk full"));
        assert!(!m("\"disk full\"", "full disk"));
        assert!(m("?ERROR ?WARN", "WARN low memory"));
        assert!(!m("?ERROR ?WARN", "INFO ok"));
        assert!(m("ERROR -retrying", "ERROR giving up"));
        assert!(!m("ERROR -retrying", "ERROR retrying in 5s"));
        assert!(m("?\"a b\" ?c", "x a b y"));
        assert!(m(r#""say \"hi\"""#, r#"they say "hi""#));
    }

    #[test]
    fn refuses_what_it_cannot_match() {
        for p in ["{ $.level = \"ERROR\" }", "[ip, user]", "%ERR.*%", "\"open"] {
            assert!(FilterPattern::parse(p).is_err(), "{p}");
        }
        assert!(FilterPattern::parse("").unwrap().matches_everything());
    }
}
