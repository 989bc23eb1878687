//! `limit` / `nextToken` paging for the Describe operations.

use crate::LogError;

/// One page of results and the token for the next, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// Takes the page of `items` (each with its sort key, unsorted) that follows `token`, in
/// ascending or descending key order. Tokens are the hex of the last key returned, so they stay
/// valid while items come and go.
pub(crate) fn paginate<T>(
    mut items: Vec<(String, T)>,
    descending: bool,
    limit: usize,
    token: Option<&str>,
) -> Result<Page<T>, LogError> {
    let after = token.map(decode_token).transpose()?;
    items.sort_by(|a, b| if descending { b.0.cmp(&a.0) } else { a.0.cmp(&b.0) });
    let mut out = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for (key, item) in items {
        if let Some(after) = &after {
            let passed = if descending { key.as_str() >= after.as_str() } else { key.as_str() <= after.as_str() };
            if passed {
                continue;
            }
        }
        if out.len() == limit {
            more = true;
            break;
        }
        last_key = Some(key);
        out.push(item);
    }
    Ok(Page { items: out, next_token: if more { last_key.map(|k| encode_token(&k)) } else { None } })
}

fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Result<String, LogError> {
    let bad =
        || LogError::invalid("The specified nextToken is invalid: pass the one from the previous response unchanged.");
    if token.is_empty() || !token.len().is_multiple_of(2) || token.len() > 4096 {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or("zz"), 16)).collect();
    String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<(String, usize)> {
        (0..n).rev().map(|i| (format!("k{i:03}"), i)).collect()
    }

    fn walk(descending: bool) -> Vec<usize> {
        let mut token = None;
        let mut seen = Vec::new();
        loop {
            let page = paginate(items(7), descending, 3, token.as_deref()).unwrap();
            assert!(page.items.len() <= 3);
            seen.extend(page.items);
            match page.next_token {
                Some(t) => token = Some(t),
                None => return seen,
            }
        }
    }

    #[test]
    fn walks_every_item_once_both_ways() {
        assert_eq!(walk(false), (0..7).collect::<Vec<_>>());
        assert_eq!(walk(true), (0..7).rev().collect::<Vec<_>>());
    }

    #[test]
    fn refuses_forged_tokens() {
        for token in ["", "abc", "zz", "ff"] {
            assert!(paginate(items(2), false, 1, Some(token)).is_err(), "{token}");
        }
    }
}
