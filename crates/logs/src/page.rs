//! `limit` / `nextToken` paging for the Describe operations: [`flotilla_types::page`] with
//! CloudWatch Logs' messages.

pub use flotilla_types::page::Page;
use flotilla_types::page::{self, Order, PageError};

use crate::LogError;

/// Takes the page of `items` (each with its sort key, unsorted) that follows `token`, in
/// ascending or descending key order.
pub(crate) fn paginate<T>(
    items: Vec<(String, T)>,
    descending: bool,
    limit: usize,
    token: Option<&str>,
) -> Result<Page<T>, LogError> {
    let order = if descending { Order::Descending } else { Order::Ascending };
    page::paginate(items, order, limit, token).map_err(|e| match e {
        PageError::Size { got, max } => LogError::invalid(format!("limit must be between 1 and {max}, got {got}.")),
        PageError::Token => {
            LogError::invalid("The specified nextToken is invalid: pass the one from the previous response unchanged.")
        }
    })
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
