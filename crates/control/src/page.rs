//! `maxResults` / `nextToken` pagination over key-ordered listings.

use crate::ControlError;

/// One page of results and the token for the next, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// Splits `items` (already in order, each with its sort key) into the page that starts after
/// `next_token`. Tokens are the hex of the last key returned, so they stay valid across writes.
pub(crate) fn paginate<T>(
    items: Vec<(String, T)>,
    max_results: Option<i32>,
    next_token: Option<&str>,
    limit: i32,
) -> Result<Page<T>, ControlError> {
    let max = match max_results {
        None => limit as usize,
        Some(n) if (1..=limit).contains(&n) => n as usize,
        Some(n) => {
            return Err(ControlError::invalid(format!("maxResults must be between 1 and {limit}, got {n}.")));
        }
    };
    let after = match next_token {
        None => None,
        Some(token) => Some(decode_token(token)?),
    };
    let mut out = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for (key, item) in items {
        if after.as_deref().is_some_and(|a| key.as_str() <= a) {
            continue;
        }
        if out.len() == max {
            more = true;
            break;
        }
        last_key = Some(key);
        out.push(item);
    }
    let next_token = if more { last_key.map(|k| encode_token(&k)) } else { None };
    Ok(Page { items: out, next_token })
}

/// Like [`paginate`] for lists walked in descending key order.
pub(crate) fn paginate_desc<T>(
    items: Vec<(String, T)>,
    max_results: Option<i32>,
    next_token: Option<&str>,
    limit: i32,
) -> Result<Page<T>, ControlError> {
    // Invert each key byte so that descending order becomes ascending for the token compare.
    let inverted =
        items.into_iter().map(|(k, v)| (k.bytes().map(|b| format!("{:02x}", 255 - b)).collect(), v)).collect();
    paginate(inverted, max_results, next_token, limit)
}

fn encode_token(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Result<String, ControlError> {
    let bad = || ControlError::invalid("Invalid nextToken: pass the nextToken from the previous response unchanged.");
    if token.is_empty() || !token.len().is_multiple_of(2) || token.len() > 4096 {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(&token[i..i + 2], 16)).collect();
    String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<(String, usize)> {
        (0..n).map(|i| (format!("k{i:03}"), i)).collect()
    }

    #[test]
    fn walks_every_item_once() {
        let mut token = None;
        let mut seen = Vec::new();
        loop {
            let page = paginate(keys(25), Some(10), token.as_deref(), 100).unwrap();
            seen.extend(page.items);
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, (0..25).collect::<Vec<_>>());
    }

    #[test]
    fn descending_walk() {
        let items: Vec<_> = keys(5).into_iter().rev().collect();
        let first = paginate_desc(items.clone(), Some(3), None, 100).unwrap();
        assert_eq!(first.items, [4, 3, 2]);
        let second = paginate_desc(items, Some(3), first.next_token.as_deref(), 100).unwrap();
        assert_eq!(second.items, [1, 0]);
        assert_eq!(second.next_token, None);
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(paginate(keys(3), Some(0), None, 100).is_err());
        assert!(paginate(keys(3), Some(101), None, 100).is_err());
        assert!(paginate(keys(3), None, Some("zz"), 100).is_err());
        assert!(paginate(keys(3), None, Some("abc"), 100).is_err());
    }
}
