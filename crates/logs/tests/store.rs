//! The log store against a real redb file: ordering, tokens, AWS batch rules, retention, the
//! byte budget and durability across reopen.

use std::time::Duration;

use flotilla_logs::{
    DAY_MS, EventQuery, FilterQuery, GroupQuery, InputEvent, LogError, LogStore, LogStoreOptions, NewLogGroup,
    Position, StreamOrder, StreamQuery, now_millis,
};

fn store() -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LogStore::open(dir.path()).unwrap();
    (dir, store)
}

async fn stream_with(store: &LogStore, group: &str, stream: &str, events: &[(i64, &str)]) {
    store.ensure_group(group).await.unwrap();
    store.ensure_stream(group, stream).await.unwrap();
    let events = events.iter().map(|(t, m)| InputEvent::new(*t, *m)).collect();
    store.append(group, stream, events).await.unwrap();
}

fn messages(events: &[flotilla_logs::LogEvent]) -> Vec<&str> {
    events.iter().map(|e| e.message.as_str()).collect()
}

fn head(limit: usize) -> EventQuery {
    EventQuery { start_from_head: true, limit: Some(limit), ..Default::default() }
}

#[tokio::test]
async fn events_are_kept_in_timestamp_then_arrival_order() {
    let (_dir, store) = store();
    stream_with(&store, "g", "s", &[(30, "c"), (10, "a"), (20, "b1")]).await;
    store
        .append("g", "s", vec![InputEvent::new(20, "b2"), InputEvent::new(5, "first"), InputEvent::new(1, "")])
        .await
        .unwrap();
    let page = store.get_log_events("g", "s", &head(100)).unwrap();
    assert_eq!(messages(&page.events), ["first", "a", "b1", "b2", "c"], "empty messages are skipped");
    let stream = store.log_stream("g", "s").unwrap();
    assert_eq!((stream.first_event_timestamp, stream.last_event_timestamp), (Some(5), Some(30)));
    assert!(stream.last_ingestion_time.unwrap() >= now_millis() - 60_000);
    assert!(
        page.events.iter().all(|e| e.ingestion_time == stream.last_ingestion_time.unwrap() || e.ingestion_time > 0)
    );
}

#[tokio::test]
async fn get_log_events_walks_both_ways_and_repeats_the_token_at_the_end() {
    let (_dir, store) = store();
    let events: Vec<(i64, String)> = (0..10).map(|i| (1000 + i, format!("m{i}"))).collect();
    let refs: Vec<(i64, &str)> = events.iter().map(|(t, m)| (*t, m.as_str())).collect();
    stream_with(&store, "g", "s", &refs).await;

    // Forward from the head, 4 at a time.
    let mut seen = Vec::new();
    let mut query = head(4);
    let last_token = loop {
        let page = store.get_log_events("g", "s", &query).unwrap();
        assert!(page.next_forward_token.starts_with("f/") && page.next_backward_token.starts_with("b/"));
        if page.events.is_empty() {
            assert_eq!(Some(&page.next_forward_token), query.next_token.as_ref(), "the same token at the end");
            break page.next_forward_token;
        }
        seen.extend(page.events.iter().map(|e| e.message.clone()));
        query.next_token = Some(page.next_forward_token);
    };
    assert_eq!(seen, refs.iter().map(|(_, m)| m.to_string()).collect::<Vec<_>>());

    // New events show up behind the end token.
    store.append("g", "s", vec![InputEvent::new(2000, "late")]).await.unwrap();
    let page = store.get_log_events("g", "s", &EventQuery { next_token: Some(last_token), ..head(4) }).unwrap();
    assert_eq!(messages(&page.events), ["late"]);

    // Default: the newest page; backward tokens walk to the oldest.
    let newest = store.get_log_events("g", "s", &EventQuery { limit: Some(4), ..Default::default() }).unwrap();
    assert_eq!(messages(&newest.events), ["m7", "m8", "m9", "late"]);
    let older =
        EventQuery { next_token: Some(newest.next_backward_token.clone()), limit: Some(4), ..Default::default() };
    let older = store.get_log_events("g", "s", &older).unwrap();
    assert_eq!(messages(&older.events), ["m3", "m4", "m5", "m6"]);
    // ...and forward again from there lands where we started.
    let again = EventQuery { next_token: Some(older.next_forward_token.clone()), limit: Some(4), ..Default::default() };
    assert_eq!(messages(&store.get_log_events("g", "s", &again).unwrap().events), ["m7", "m8", "m9", "late"]);

    // Time bounds: start inclusive, end exclusive.
    let window = EventQuery { start_time: Some(1002), end_time: Some(1005), ..head(100) };
    assert_eq!(messages(&store.get_log_events("g", "s", &window).unwrap().events), ["m2", "m3", "m4"]);

    for bad in ["x", "f/12", "q/0000000000000000000000000000000000000000"] {
        let query = EventQuery { next_token: Some(bad.into()), ..head(1) };
        assert!(matches!(store.get_log_events("g", "s", &query), Err(LogError::InvalidParameter(_))), "{bad}");
    }
    assert!(matches!(store.get_log_events("g", "nope", &head(1)), Err(LogError::StreamNotFound { .. })));
}

#[tokio::test]
async fn put_log_events_applies_the_aws_batch_rules() {
    let (_dir, store) = store();
    stream_with(&store, "g", "s", &[]).await;
    let now = now_millis();
    let ev = |t: i64, m: &str| InputEvent::new(t, m);

    let unsorted = store.put_log_events("g", "s", vec![ev(now, "b"), ev(now - 1, "a")], now).await;
    assert!(matches!(unsorted, Err(LogError::InvalidParameter(m)) if m.contains("chronological")));

    let big = "x".repeat(1_048_576 - 26);
    assert!(store.put_log_events("g", "s", vec![ev(now, &big)], now).await.is_ok(), "exactly the limit fits");
    let too_big = store.put_log_events("g", "s", vec![ev(now, &big), ev(now, "y")], now).await;
    assert!(matches!(too_big, Err(LogError::InvalidParameter(m)) if m.contains("1048576")));

    let span = store.put_log_events("g", "s", vec![ev(now - DAY_MS - 1, "a"), ev(now, "b")], now).await;
    assert!(matches!(span, Err(LogError::InvalidParameter(m)) if m.contains("24 hours")));

    let batch =
        vec![ev(now - 15 * DAY_MS, "ancient"), ev(now - 1, "ok1"), ev(now, "ok2"), ev(now + 3 * 3_600_000, "future")];
    let outcome = store.put_log_events("g", "s", batch, now).await.unwrap();
    let rejected = outcome.rejected.unwrap();
    assert_eq!((rejected.too_old_end, rejected.too_new_start, rejected.expired_end), (Some(0), Some(3), None));
    assert!(!outcome.next_sequence_token.is_empty());

    store.put_retention_policy("g", 1).await.unwrap();
    let outcome =
        store.put_log_events("g", "s", vec![ev(now - 2 * DAY_MS, "expired"), ev(now, "ok3")], now).await.unwrap();
    assert_eq!(outcome.rejected.unwrap().expired_end, Some(0));

    // Responses stop at 1 MB: the big event gets a page of its own.
    let mut query = EventQuery { start_time: Some(now - 10), ..head(100) };
    let mut pages = Vec::new();
    loop {
        let page = store.get_log_events("g", "s", &query).unwrap();
        if page.events.is_empty() {
            break;
        }
        pages.push(page.events.iter().map(|e| e.message.chars().take(3).collect::<String>()).collect::<Vec<_>>());
        query.next_token = Some(page.next_forward_token);
    }
    assert_eq!(pages, [vec!["ok1"], vec!["xxx"], vec!["ok2", "ok3"]]);

    let missing = store.put_log_events("g", "nope", vec![ev(now, "x")], now).await;
    assert!(matches!(missing, Err(LogError::StreamNotFound { .. })));
}

#[tokio::test]
async fn groups_and_streams_describe_with_pages_and_orders() {
    let (_dir, store) = store();
    for name in ["/ecs/b", "/ecs/a", "/other", "/ecs/c"] {
        store.create_log_group(NewLogGroup { name: name.into(), ..Default::default() }).await.unwrap();
    }
    let again = store.create_log_group(NewLogGroup { name: "/ecs/a".into(), ..Default::default() }).await;
    assert!(matches!(again, Err(LogError::GroupExists { .. })));
    let bad = store.create_log_group(NewLogGroup { name: "has space".into(), ..Default::default() }).await;
    assert!(matches!(bad, Err(LogError::InvalidParameter(_))));

    let mut names = Vec::new();
    let mut query = GroupQuery { prefix: Some("/ecs/".into()), limit: Some(2), ..Default::default() };
    loop {
        let page = store.describe_log_groups(&query).unwrap();
        names.extend(page.items.into_iter().map(|g| g.name));
        match page.next_token {
            Some(t) => query.next_token = Some(t),
            None => break,
        }
    }
    assert_eq!(names, ["/ecs/a", "/ecs/b", "/ecs/c"]);
    let pattern = store.describe_log_groups(&GroupQuery { pattern: Some("OTH".into()), ..Default::default() }).unwrap();
    assert_eq!(pattern.items.len(), 1);

    for (stream, t) in [("web/1", 300), ("web/2", 100), ("db/1", 200)] {
        stream_with(&store, "/ecs/a", stream, &[(t, "x")]).await;
    }
    store.create_log_stream("/ecs/a", "empty").await.unwrap();
    let dup = store.create_log_stream("/ecs/a", "empty").await;
    assert!(matches!(dup, Err(LogError::StreamExists { .. })));
    let no_group = store.create_log_stream("/nope", "s").await;
    assert!(matches!(no_group, Err(LogError::GroupNotFound { .. })));

    let by_name = store.describe_log_streams("/ecs/a", &StreamQuery::default()).unwrap();
    let names: Vec<_> = by_name.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["db/1", "empty", "web/1", "web/2"]);
    let prefixed = StreamQuery { prefix: Some("web/".into()), descending: true, ..Default::default() };
    let names: Vec<_> =
        store.describe_log_streams("/ecs/a", &prefixed).unwrap().items.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["web/2", "web/1"]);

    let mut names = Vec::new();
    let mut query =
        StreamQuery { order: StreamOrder::LastEventTime, descending: true, limit: Some(1), ..Default::default() };
    loop {
        let page = store.describe_log_streams("/ecs/a", &query).unwrap();
        names.extend(page.items.into_iter().map(|s| s.name));
        match page.next_token {
            Some(t) => query.next_token = Some(t),
            None => break,
        }
    }
    assert_eq!(names, ["web/1", "db/1", "web/2", "empty"]);
    let both = StreamQuery { order: StreamOrder::LastEventTime, prefix: Some("w".into()), ..Default::default() };
    assert!(matches!(store.describe_log_streams("/ecs/a", &both), Err(LogError::InvalidParameter(_))));

    store.delete_log_stream("/ecs/a", "web/1").await.unwrap();
    assert_eq!(store.log_group("/ecs/a").unwrap().stored_bytes, 2 * 27);
    store.delete_log_group("/ecs/a").await.unwrap();
    assert!(matches!(store.log_group("/ecs/a"), Err(LogError::GroupNotFound { .. })));
    assert_eq!(store.stored_bytes().unwrap(), 0);
    // Recreated, the group starts empty: no stream of the old one leaks into it.
    store.ensure_group("/ecs/a").await.unwrap();
    assert!(store.describe_log_streams("/ecs/a", &StreamQuery::default()).unwrap().items.is_empty());
}

#[tokio::test]
async fn filter_interleaves_streams_matches_terms_and_pages() {
    let (_dir, store) = store();
    stream_with(&store, "g", "web", &[(1, "GET / 200"), (4, "GET /x 500 ERROR"), (6, "GET /y 200")]).await;
    stream_with(&store, "g", "db", &[(2, "ERROR disk full"), (3, "WARN slow query"), (5, "checkpoint")]).await;
    stream_with(&store, "g", "other", &[(7, "ERROR elsewhere")]).await;

    let all = |query: FilterQuery| -> Vec<String> {
        let mut out = Vec::new();
        let mut query = query;
        loop {
            let page = store.filter_log_events("g", &query).unwrap();
            out.extend(page.events.iter().map(|e| format!("{}:{}", e.stream, e.event.message)));
            match page.next_token {
                Some(t) => query.next_token = Some(t),
                None => return out,
            }
        }
    };
    let everything = all(FilterQuery { stream_names: Some(vec!["web".into(), "db".into()]), ..Default::default() });
    assert_eq!(everything.len(), 6);
    assert_eq!(everything[0], "web:GET / 200");
    assert_eq!(everything[1], "db:ERROR disk full");
    let paged =
        all(FilterQuery { stream_names: Some(vec!["web".into(), "db".into()]), limit: Some(2), ..Default::default() });
    assert_eq!(paged, everything, "pages of 2 return the same events");

    let errors = all(FilterQuery { pattern: Some("ERROR".into()), ..Default::default() });
    assert_eq!(errors, ["db:ERROR disk full", "web:GET /x 500 ERROR", "other:ERROR elsewhere"]);
    let either = all(FilterQuery { pattern: Some("?WARN ?checkpoint".into()), ..Default::default() });
    assert_eq!(either, ["db:WARN slow query", "db:checkpoint"]);
    let phrase = all(FilterQuery { pattern: Some("\"disk full\"".into()), ..Default::default() });
    assert_eq!(phrase, ["db:ERROR disk full"]);
    let window = all(FilterQuery { start_time: Some(3), end_time: Some(4), ..Default::default() });
    assert_eq!(window, ["db:WARN slow query", "web:GET /x 500 ERROR"], "both ends inclusive");
    let prefix =
        all(FilterQuery { stream_prefix: Some("w".into()), pattern: Some("200".into()), ..Default::default() });
    assert_eq!(prefix, ["web:GET / 200", "web:GET /y 200"]);

    let both =
        FilterQuery { stream_names: Some(vec!["web".into()]), stream_prefix: Some("w".into()), ..Default::default() };
    assert!(matches!(store.filter_log_events("g", &both), Err(LogError::InvalidParameter(_))));
    let json = FilterQuery { pattern: Some("{ $.a = 1 }".into()), ..Default::default() };
    assert!(matches!(store.filter_log_events("g", &json), Err(LogError::InvalidParameter(_))));
}

#[tokio::test]
async fn expire_applies_each_groups_retention() {
    let (_dir, store) = store();
    let now = now_millis();
    stream_with(&store, "short", "s", &[(now - 3 * DAY_MS, "old"), (now - DAY_MS / 2, "recent")]).await;
    stream_with(&store, "forever", "s", &[(now - 30 * DAY_MS, "old but kept")]).await;
    assert!(matches!(store.put_retention_policy("short", 2).await, Err(LogError::InvalidParameter(_))));
    store.put_retention_policy("short", 1).await.unwrap();
    assert_eq!(store.log_group("short").unwrap().retention_in_days, Some(1));

    assert_eq!(store.expire(now).await.unwrap(), 1);
    let page = store.get_log_events("short", "s", &head(10)).unwrap();
    assert_eq!(messages(&page.events), ["recent"]);
    let group = store.log_group("short").unwrap();
    assert_eq!(group.stored_bytes, "recent".len() as u64 + 26);
    assert_eq!(store.log_stream("short", "s").unwrap().first_event_timestamp, Some(now - DAY_MS / 2));
    assert_eq!(messages(&store.get_log_events("forever", "s", &head(10)).unwrap().events), ["old but kept"]);

    store.delete_retention_policy("short").await.unwrap();
    assert_eq!(store.log_group("short").unwrap().retention_in_days, None);
    assert_eq!(store.expire(now + 400 * DAY_MS).await.unwrap(), 0);
}

#[tokio::test]
async fn the_byte_budget_trims_the_largest_streams_oldest_events_first() {
    let dir = tempfile::tempdir().unwrap();
    let budget = 200_000;
    let store = LogStore::open_with(dir.path(), LogStoreOptions { byte_budget: budget }).unwrap();
    let line = "x".repeat(974); // 1000 bytes with the per-event overhead
    stream_with(&store, "g", "small", &[(1, &line)]).await;
    stream_with(&store, "g", "big", &[]).await;
    for batch in 0..3 {
        let events = (0..100).map(|i| InputEvent::new(batch * 100 + i, format!("{batch:03}{i:03}{line}"))).collect();
        store.append("g", "big", events).await.unwrap();
        assert!(store.stored_bytes().unwrap() <= budget, "never over budget after a write");
    }
    let small = store.get_log_events("g", "small", &head(10)).unwrap();
    assert_eq!(small.events.len(), 1, "the small stream is untouched");
    let big = store.get_log_events("g", "big", &head(10_000)).unwrap();
    assert!(big.events.len() < 300 && big.events.len() > 150, "{}", big.events.len());
    assert_eq!(big.events.last().unwrap().timestamp, 299, "the newest events survive");
    let first = big.events[0].timestamp;
    assert_eq!(store.log_stream("g", "big").unwrap().first_event_timestamp, Some(first));
    let group = store.log_group("g").unwrap();
    assert_eq!(group.stored_bytes, store.stored_bytes().unwrap());
    assert_eq!(group.stored_bytes, big.events.len() as u64 * 1006 + 1000);
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = LogStore::open(dir.path()).unwrap();
        stream_with(&store, "g", "s", &[(1, "one"), (2, "two")]).await;
        store.put_retention_policy("g", 7).await.unwrap();
        let second = LogStore::open(dir.path());
        assert!(second.is_err(), "the file is locked while open");
    }
    let store = LogStore::open(dir.path()).unwrap();
    assert_eq!(messages(&store.get_log_events("g", "s", &head(10)).unwrap().events), ["one", "two"]);
    assert_eq!(store.log_group("g").unwrap().retention_in_days, Some(7));
    // Sequence numbers keep growing across reopen: a new event with an old timestamp sorts after.
    store.append("g", "s", vec![InputEvent::new(2, "two again")]).await.unwrap();
    assert_eq!(messages(&store.get_log_events("g", "s", &head(10)).unwrap().events), ["one", "two", "two again"]);
    assert_eq!(store.stored_bytes().unwrap(), 3 * 26 + 3 + 3 + 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(LogStore::open(dir.path()).unwrap());
    store.ensure_group("g").await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let stream = format!("s{}", w % 4);
            store.ensure_stream("g", &stream).await.unwrap();
            for i in 0..10 {
                store.append("g", &stream, vec![InputEvent::new(i, format!("{w}-{i}"))]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let page = store.filter_log_events("g", &FilterQuery::default()).unwrap();
    assert_eq!(page.events.len(), 200);
    assert!(page.next_token.is_none());
}

#[tokio::test]
async fn follow_wakes_on_new_events() {
    let (_dir, store) = store();
    stream_with(&store, "g", "s", &[(1, "before")]).await;
    let end = store.end_position("g", "s").unwrap();
    let (all, next) = store.read_since("g", "s", Position::START, 10).unwrap();
    assert_eq!(messages(&all), ["before"]);
    assert_eq!(next, end);

    let mut follow = store.follow("g", "s", end);
    let writer = async {
        tokio::task::yield_now().await;
        store.append("g", "s", vec![InputEvent::new(2, "after")]).await.unwrap();
    };
    let (events, ()) = tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(follow.next(10), writer) })
        .await
        .expect("the follower wakes within the deadline");
    assert_eq!(messages(&events.unwrap()), ["after"]);
    assert!(follow.position() > end);
}

#[tokio::test]
async fn tags_and_deletion_protection() {
    let (_dir, store) = store();
    let tags = [("team".to_string(), "core".to_string())].into_iter().collect();
    store
        .create_log_group(NewLogGroup { name: "g".into(), tags, deletion_protection: true, ..Default::default() })
        .await
        .unwrap();
    store.tag_log_group("g", [("env".to_string(), "prod".to_string())].into_iter().collect()).await.unwrap();
    store.untag_log_group("g", vec!["team".into()]).await.unwrap();
    assert_eq!(store.log_group("g").unwrap().tags.into_iter().collect::<Vec<_>>(), [("env".into(), "prod".into())]);
    let reserved = store.tag_log_group("g", [("aws:x".to_string(), "1".to_string())].into_iter().collect()).await;
    assert!(matches!(reserved, Err(LogError::InvalidParameter(_))));
    assert!(matches!(store.delete_log_group("g").await, Err(LogError::DeletionProtected { .. })));
    store.put_deletion_protection("g", false).await.unwrap();
    store.delete_log_group("g").await.unwrap();
}
