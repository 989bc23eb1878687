//! The one paginator behind every List and Describe operation that pages with a token.
//!
//! A token encodes the sort key of the last item a page returned (base64url, so it is opaque
//! to clients and safe in any wire format); the next page starts after that key. Items added or
//! removed between two requests therefore never make a walk skip or repeat the items that were
//! there all along, which an offset cannot promise. Each service keeps its own limits and
//! words [`PageError`] in its own error messages.

use std::cmp::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// One page of results and the token for the next, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

impl<T> Page<T> {
    /// The same page with every item converted.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page { items: self.items.into_iter().map(f).collect(), next_token: self.next_token }
    }
}

/// Which way a listing walks its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Ascending,
    Descending,
}

/// Why a page cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("the page size must be between 1 and {max}, got {got}")]
    Size { got: i64, max: usize },
    #[error("the page token was not issued by this server")]
    Token,
}

/// Longest token accepted: far above any key Flotilla sorts by, far below abuse.
const MAX_TOKEN: usize = 4096;

/// The page size a request asks for: `default` if it names none, refused outside `1..=max`.
pub fn page_size(requested: Option<i64>, default: usize, max: usize) -> Result<usize, PageError> {
    match requested {
        None => Ok(default),
        Some(n) if n >= 1 && (n as u64) <= max as u64 => Ok(n as usize),
        Some(got) => Err(PageError::Size { got, max }),
    }
}

/// The page of `items` (each with its sort key, in any order; keys unique) that follows
/// `token`, at most `size` long, walking the keys in `order`.
pub fn paginate<T>(
    mut items: Vec<(String, T)>,
    order: Order,
    size: usize,
    token: Option<&str>,
) -> Result<Page<T>, PageError> {
    let after = token.map(decode_token).transpose()?;
    let walk = |a: &str, b: &str| match order {
        Order::Ascending => a.cmp(b),
        Order::Descending => b.cmp(a),
    };
    items.sort_by(|a, b| walk(&a.0, &b.0));
    let size = size.max(1);
    let mut out = Vec::new();
    let mut last_key = None;
    let mut more = false;
    for (key, item) in items {
        if after.as_deref().is_some_and(|after| walk(&key, after) != Ordering::Greater) {
            continue;
        }
        if out.len() == size {
            more = true;
            break;
        }
        last_key = Some(key);
        out.push(item);
    }
    let next_token = if more { last_key.map(|k| encode_token(&k)) } else { None };
    Ok(Page { items: out, next_token })
}

/// Leads every token, so that text a client makes up is refused rather than read as a key.
const TOKEN_VERSION: u8 = 1;

fn encode_token(key: &str) -> String {
    let mut payload = Vec::with_capacity(1 + key.len());
    payload.push(TOKEN_VERSION);
    payload.extend_from_slice(key.as_bytes());
    URL_SAFE_NO_PAD.encode(payload)
}

fn decode_token(token: &str) -> Result<String, PageError> {
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(PageError::Token);
    }
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| PageError::Token)?;
    match bytes.split_first() {
        Some((&TOKEN_VERSION, key)) => String::from_utf8(key.to_vec()).map_err(|_| PageError::Token),
        _ => Err(PageError::Token),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(keys: impl IntoIterator<Item = usize>) -> Vec<(String, usize)> {
        keys.into_iter().map(|i| (format!("k{i:03}"), i)).collect()
    }

    fn walk(all: impl Fn() -> Vec<(String, usize)>, order: Order, size: usize) -> Vec<usize> {
        let mut token = None;
        let mut seen = Vec::new();
        loop {
            let page = paginate(all(), order, size, token.as_deref()).unwrap();
            assert!(page.items.len() <= size);
            seen.extend(page.items);
            match page.next_token {
                Some(t) => token = Some(t),
                None => return seen,
            }
        }
    }

    #[test]
    fn walks_every_item_once_both_ways() {
        assert_eq!(walk(|| items((0..25).rev()), Order::Ascending, 10), (0..25).collect::<Vec<_>>());
        assert_eq!(walk(|| items(0..7), Order::Descending, 3), (0..7).rev().collect::<Vec<_>>());
        assert_eq!(walk(|| items(0..6), Order::Ascending, 3), (0..6).collect::<Vec<_>>(), "exact multiple");
    }

    #[test]
    fn survives_items_coming_and_going_between_pages() {
        let first = paginate(items(0..10), Order::Ascending, 4, None).unwrap();
        assert_eq!(first.items, [0, 1, 2, 3]);
        // Two items already returned are deleted and one is added before the cursor: an offset
        // would now skip 4 and 5; the key cursor carries on where the walk left off.
        let changed: Vec<usize> = (2..10).chain([1]).filter(|i| *i != 2 && *i != 3).collect();
        let second = paginate(items(changed), Order::Ascending, 4, first.next_token.as_deref()).unwrap();
        assert_eq!(second.items, [4, 5, 6, 7]);
    }

    #[test]
    fn tokens_are_opaque_and_checked() {
        let page = paginate(items(0..3), Order::Ascending, 1, None).unwrap();
        let token = page.next_token.unwrap();
        assert!(!token.contains("k000"), "the key is not readable in {token}");
        for forged in ["", "!!", "a", &"A".repeat(MAX_TOKEN + 4), "_w", "ff", "azAwMDA"] {
            assert_eq!(paginate(items(0..3), Order::Ascending, 1, Some(forged)), Err(PageError::Token), "{forged}");
        }
    }

    #[test]
    fn page_sizes() {
        assert_eq!(page_size(None, 10, 50), Ok(10));
        assert_eq!(page_size(Some(50), 10, 50), Ok(50));
        assert_eq!(page_size(Some(0), 10, 50), Err(PageError::Size { got: 0, max: 50 }));
        assert_eq!(page_size(Some(51), 10, 50), Err(PageError::Size { got: 51, max: 50 }));
        assert_eq!(page_size(Some(-1), 10, 50), Err(PageError::Size { got: -1, max: 50 }));
    }
}
