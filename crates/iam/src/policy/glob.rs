//! Wildcard matching as IAM does it, and policy variables (`${aws:username}`).
//!
//! `*` matches any run of characters and `?` any one character. In a resource ARN (the
//! `arn:` patterns of `Resource`, `NotResource` and the `Arn*` operators) a wildcard stays
//! inside its colon-separated segment, except a `*` that ends a segment, which may run past
//! colons (IAM's documented rule: `arn:aws:ecs:*:*:cluster/*` matches any region and account,
//! `arn:aws:ecs:us-*-1:...` does not reach into the account).

use std::borrow::Cow;

use super::ContextKeys;

/// One compiled pattern element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tok {
    Lit(u8),
    /// `*`; `cross` when it may match colons too.
    Star {
        cross: bool,
    },
    /// `?`; `cross` when it may match a colon.
    One {
        cross: bool,
    },
}

/// A pattern as written: text with wildcards, variables and `${*}`-style escapes.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    parts: Vec<Part>,
    /// Compiled once when there are no variables (the common case, and the hot path).
    fixed: Option<Pattern>,
    /// The text itself when there are no variables, for `resolve` without allocating.
    fixed_text: Option<String>,
    arn: bool,
    fold_case: bool,
}

/// A compiled pattern, with the shapes every request meets most answered without a walk.
#[derive(Clone, Debug)]
enum Pattern {
    /// `*`.
    Any,
    /// No wildcards.
    Literal(Vec<u8>),
    /// Literal text then one `*` that may cross colons (`ecs:Describe*`, `arn:...:cluster/*`).
    Prefix(Vec<u8>),
    /// Every wildcard may cross colons: linear-time matching, after a comparison of the
    /// literal text before the first wildcard (where most patterns already differ).
    Greedy {
        prefix: Vec<u8>,
        toks: Vec<Tok>,
    },
    Segments(Vec<Tok>),
}

impl Pattern {
    fn new(toks: Vec<Tok>) -> Pattern {
        if toks == [Tok::Star { cross: true }] {
            Pattern::Any
        } else if toks.iter().all(|t| matches!(t, Tok::Lit(_))) {
            Pattern::Literal(toks.iter().map(|t| if let Tok::Lit(b) = t { *b } else { 0 }).collect())
        } else if toks.iter().all(|t| !matches!(t, Tok::Star { cross: false } | Tok::One { cross: false })) {
            let prefix: Vec<u8> =
                toks.iter().map_while(|t| if let Tok::Lit(b) = t { Some(*b) } else { None }).collect();
            if toks[prefix.len()..] == [Tok::Star { cross: true }] {
                Pattern::Prefix(prefix)
            } else {
                Pattern::Greedy { prefix, toks }
            }
        } else {
            Pattern::Segments(toks)
        }
    }

    fn matches(&self, s: &[u8]) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Literal(l) => l == s,
            Pattern::Prefix(p) => s.starts_with(p),
            Pattern::Greedy { prefix, toks } => {
                s.starts_with(prefix) && glob_greedy(&toks[prefix.len()..], &s[prefix.len()..])
            }
            Pattern::Segments(toks) => glob_segments(toks, s, &mut 0),
        }
    }
}

#[derive(Clone, Debug)]
enum Part {
    /// Policy text: `*` and `?` are wildcards in it.
    Text(String),
    /// A value that is always literal (an escape such as `${*}`).
    Literal(String),
    Var {
        key: String,
        default: Option<String>,
    },
}

impl Template {
    /// `variables` is false for `2008-10-17` documents, where `${...}` is plain text.
    /// `arn` makes wildcards segment-aware when the text starts with `arn:`; `fold_case`
    /// matches case-insensitively (actions).
    pub(crate) fn new(text: &str, variables: bool, arn: bool, fold_case: bool) -> Template {
        let text = if fold_case { text.to_ascii_lowercase() } else { text.to_owned() };
        let arn = arn && text.starts_with("arn:");
        let parts = if variables { split_variables(&text) } else { vec![Part::Text(text)] };
        let mut template = Template { parts, fixed: None, fixed_text: None, arn, fold_case };
        if template.parts.iter().all(|p| !matches!(p, Part::Var { .. })) {
            template.fixed = template.compile(ContextKeys::default()).map(Pattern::new);
            template.fixed_text = template.resolve_parts(ContextKeys::default());
        }
        template
    }

    /// The text with variables resolved from `keys`, wildcards kept as written (for
    /// `StringEquals`-style comparisons, where `*` is an ordinary character). `None` when a
    /// variable has no value and no default.
    pub(crate) fn resolve(&self, keys: ContextKeys<'_>) -> Option<Cow<'_, str>> {
        match &self.fixed_text {
            Some(text) => Some(Cow::Borrowed(text)),
            None => self.resolve_parts(keys).map(Cow::Owned),
        }
    }

    fn resolve_parts(&self, keys: ContextKeys<'_>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(s) | Part::Literal(s) => out.push_str(s),
                Part::Var { key, default } => out.push_str(lookup(keys, key, default.as_deref())?),
            }
        }
        Some(out)
    }

    /// Whether `subject` matches this pattern. `None` (no match) when a variable is unresolved.
    pub(crate) fn matches(&self, subject: &str, keys: ContextKeys<'_>) -> bool {
        match &self.fixed {
            Some(pattern) => pattern.matches(subject.as_bytes()),
            None => match self.compile(keys) {
                Some(toks) => glob(&toks, subject.as_bytes()),
                None => false,
            },
        }
    }

    fn compile(&self, keys: ContextKeys<'_>) -> Option<Vec<Tok>> {
        // The raw shape decides which stars end a segment: build the text first, remembering
        // which bytes are wildcards.
        let mut bytes: Vec<(u8, bool)> = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(s) => bytes.extend(s.bytes().map(|b| (b, b == b'*' || b == b'?'))),
                Part::Literal(s) => bytes.extend(s.bytes().map(|b| (b, false))),
                Part::Var { key, default } => {
                    let value = lookup(keys, key, default.as_deref())?;
                    let value = if self.fold_case { value.to_ascii_lowercase() } else { value.to_owned() };
                    bytes.extend(value.bytes().map(|b| (b, false)));
                }
            }
        }
        let mut toks = Vec::with_capacity(bytes.len());
        for (i, &(b, wild)) in bytes.iter().enumerate() {
            toks.push(match (b, wild) {
                (b'*', true) => {
                    let ends_segment = bytes.get(i + 1).is_none_or(|&(n, _)| n == b':');
                    Tok::Star { cross: !self.arn || ends_segment }
                }
                (b'?', true) => Tok::One { cross: !self.arn },
                (b, _) => Tok::Lit(b),
            });
        }
        Some(toks)
    }
}

fn lookup<'a>(keys: ContextKeys<'a>, key: &str, default: Option<&'a str>) -> Option<&'a str> {
    keys.first(key).or(default)
}

/// Splits `${...}` out of `text`: `${*}`, `${?}` and `${$}` are the literal characters,
/// `${key}` and `${key, 'default'}` are variables (key names compared lowercased).
fn split_variables(text: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else { break };
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        let inner = rest[start + 2..start + len].trim();
        parts.push(match inner {
            "*" | "?" | "$" => Part::Literal(inner.to_owned()),
            _ => match inner.split_once(',') {
                Some((key, default)) => {
                    let default = default.trim().trim_matches('\'').to_owned();
                    Part::Var { key: key.trim().to_ascii_lowercase(), default: Some(default) }
                }
                None => Part::Var { key: inner.to_ascii_lowercase(), default: None },
            },
        });
        rest = &rest[start + len + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    parts
}

/// Matches `s` against `pat`. Backtracks only to the latest star when every star may cross
/// colons (the classic linear-time case); otherwise recursion bounded by the pattern's stars.
pub(crate) fn glob(pat: &[Tok], s: &[u8]) -> bool {
    if pat.iter().all(|t| !matches!(t, Tok::Star { cross: false } | Tok::One { cross: false })) {
        return glob_greedy(pat, s);
    }
    glob_segments(pat, s, &mut 0)
}

fn glob_greedy(pat: &[Tok], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match pat.get(p) {
            Some(Tok::Star { .. }) => {
                star = Some((p, i));
                p += 1;
            }
            Some(Tok::One { .. }) => {
                p += 1;
                i += 1;
            }
            Some(Tok::Lit(c)) if *c == s[i] => {
                p += 1;
                i += 1;
            }
            _ => match star {
                Some((sp, si)) => {
                    p = sp + 1;
                    i = si + 1;
                    star = Some((sp, si + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|t| matches!(t, Tok::Star { .. }))
}

/// Backtracking for segment-bound wildcards; `steps` caps pathological patterns.
fn glob_segments(pat: &[Tok], s: &[u8], steps: &mut u32) -> bool {
    *steps += 1;
    if *steps > 100_000 {
        return false;
    }
    match pat.first() {
        None => s.is_empty(),
        Some(Tok::Lit(c)) => s.first() == Some(c) && glob_segments(&pat[1..], &s[1..], steps),
        Some(Tok::One { cross }) => match s.first() {
            Some(&b) if *cross || b != b':' => glob_segments(&pat[1..], &s[1..], steps),
            _ => false,
        },
        Some(Tok::Star { cross }) => {
            for i in 0..=s.len() {
                if glob_segments(&pat[1..], &s[i..], steps) {
                    return true;
                }
                if i < s.len() && !cross && s[i] == b':' {
                    return false;
                }
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pat: &str, s: &str) -> bool {
        Template::new(pat, true, true, false).matches(s, ContextKeys::default())
    }

    #[test]
    fn wildcards() {
        assert!(m("*", "arn:aws:ecs:us-east-1:1:cluster/a"));
        assert!(m("arn:aws:ecs:*:*:cluster/*", "arn:aws:ecs:us-east-1:1:cluster/a"));
        assert!(m("arn:aws:ecs:us-east-1:1:cluster/a?c", "arn:aws:ecs:us-east-1:1:cluster/abc"));
        assert!(!m("arn:aws:ecs:us-east-1:1:cluster/a?c", "arn:aws:ecs:us-east-1:1:cluster/ac"));
        assert!(!m("arn:aws:ecs:us-*-1:1:cluster/a", "arn:aws:ecs:us-east:x-1:1:cluster/a"));
        assert!(m("arn:aws:ecs:us-*-1:1:cluster/a", "arn:aws:ecs:us-east-1:1:cluster/a"));
        assert!(m("arn:aws:ssm:*:*:parameter/app/*", "arn:aws:ssm:r:1:parameter/app/a/b:c"));
        assert!(!m("arn:aws:ecs:*:*:cluster/a", "arn:aws:ecs:r:1:cluster/ab"));
        assert!(m("a*b*c*d", "axxbyycxxd"));
        assert!(!m("a*b*c*d", "axxbyycxx"));
    }

    #[test]
    fn variables_and_escapes() {
        let keys = ContextKeys(&[("aws:username", "alice")]);
        let t = Template::new("arn:aws:iam::1:user/${aws:username}", true, true, false);
        assert!(t.matches("arn:aws:iam::1:user/alice", keys));
        assert!(!t.matches("arn:aws:iam::1:user/bob", keys));
        assert!(!t.matches("arn:aws:iam::1:user/alice", ContextKeys::default()));
        let t = Template::new("a${*}b", true, false, false);
        assert!(t.matches("a*b", keys) && !t.matches("axb", keys));
        let t = Template::new("x/${aws:nothing, 'none'}", true, false, false);
        assert_eq!(t.resolve(keys).as_deref(), Some("x/none"));
        let t = Template::new("x/${aws:username}", false, false, false);
        assert!(t.matches("x/${aws:username}", keys));
    }
}
