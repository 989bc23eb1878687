//! `maxResults` / `nextToken` pagination for ECS listings: [`flotilla_types::page`] with
//! ECS's limits and messages.

pub use flotilla_types::page::Page;
use flotilla_types::page::{self, Order, PageError};

use crate::ControlError;

fn refused(e: PageError, limit: i32) -> ControlError {
    match e {
        PageError::Size { got, .. } => {
            ControlError::invalid(format!("maxResults must be between 1 and {limit}, got {got}."))
        }
        PageError::Token => {
            ControlError::invalid("Invalid nextToken: pass the nextToken from the previous response unchanged.")
        }
    }
}

/// The page of `items` (each with its sort key) that follows `next_token`; at most `limit` per
/// page, `limit` if the request names no size.
pub(crate) fn paginate<T>(
    items: Vec<(String, T)>,
    max_results: Option<i32>,
    next_token: Option<&str>,
    limit: i32,
) -> Result<Page<T>, ControlError> {
    walk(items, Order::Ascending, max_results, next_token, limit, limit)
}

/// Like [`paginate`] for listings whose unsized page is smaller than the largest allowed
/// (ListServices: 10, up to 100).
pub(crate) fn paginate_by<T>(
    items: Vec<(String, T)>,
    max_results: Option<i32>,
    next_token: Option<&str>,
    default: i32,
    limit: i32,
) -> Result<Page<T>, ControlError> {
    walk(items, Order::Ascending, max_results, next_token, default, limit)
}

/// Like [`paginate`] for lists walked in descending key order.
pub(crate) fn paginate_desc<T>(
    items: Vec<(String, T)>,
    max_results: Option<i32>,
    next_token: Option<&str>,
    limit: i32,
) -> Result<Page<T>, ControlError> {
    walk(items, Order::Descending, max_results, next_token, limit, limit)
}

fn walk<T>(
    items: Vec<(String, T)>,
    order: Order,
    max_results: Option<i32>,
    next_token: Option<&str>,
    default: i32,
    limit: i32,
) -> Result<Page<T>, ControlError> {
    let size =
        page::page_size(max_results.map(i64::from), default as usize, limit as usize).map_err(|e| refused(e, limit))?;
    page::paginate(items, order, size, next_token).map_err(|e| refused(e, limit))
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
