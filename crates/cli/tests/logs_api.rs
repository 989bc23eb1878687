//! CloudWatch Logs through the real AWS CLI (and raw signed calls where the CLI would refuse
//! a request before sending it), against the real server.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Server;
use serde_json::{Value, json};

const GROUP: &str = "/ecs/fargate-task";
const STREAM: &str = "ecs/web-app/0123456789abcdef";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn messages(page: &Value) -> Vec<String> {
    page["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_owned()).collect()
}

fn put(server: &Server, stream: &str, events: &[(i64, &str)]) -> Value {
    let events: Vec<Value> = events.iter().map(|(t, m)| json!({"timestamp": t, "message": m})).collect();
    server.aws_json(&[
        "logs",
        "put-log-events",
        "--log-group-name",
        GROUP,
        "--log-stream-name",
        stream,
        "--log-events",
        &Value::Array(events).to_string(),
    ])
}

/// A signed call with a body the AWS CLI would refuse to send; returns the error code and message.
fn raw_error(server: &Server, operation: &str, body: Value) -> (String, String) {
    let client = server.client();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = runtime
        .block_on(client.call("logs", &format!("Logs_20140328.{operation}"), &body))
        .expect_err("the server refuses the request");
    let aws = err.downcast::<flotilla_cli::client::AwsError>().expect("an AWS error answer");
    (aws.code, aws.message)
}

#[test]
fn groups_streams_and_events_through_the_aws_cli() {
    let server = Server::start();
    assert_eq!(server.aws_json(&["logs", "create-log-group", "--log-group-name", GROUP]), Value::Null);
    let dup = server.aws_err(&["logs", "create-log-group", "--log-group-name", GROUP]);
    assert!(dup.contains("ResourceAlreadyExistsException"), "{dup}");
    server.aws_json(&["logs", "create-log-group", "--log-group-name", "/ecs/other", "--tags", "team=core"]);

    let groups = server.aws_json(&["logs", "describe-log-groups", "--log-group-name-prefix", "/ecs/fargate"]);
    let g = &groups["logGroups"][0];
    assert_eq!(groups["logGroups"].as_array().unwrap().len(), 1);
    assert_eq!(g["logGroupName"], GROUP);
    assert_eq!(g["arn"], format!("arn:aws:logs:us-east-1:000000000000:log-group:{GROUP}:*"));
    assert_eq!(g["logGroupClass"], "STANDARD");
    assert!(g["creationTime"].as_i64().unwrap() > 1_600_000_000_000, "creationTime is epoch ms: {}", g["creationTime"]);
    // The CLI walks pages of one to get both groups.
    let paged = server.aws_json(&["logs", "describe-log-groups", "--page-size", "1"]);
    assert_eq!(paged["logGroups"].as_array().unwrap().len(), 2);
    let tags = server.aws_json(&["logs", "list-tags-log-group", "--log-group-name", "/ecs/other"]);
    assert_eq!(tags["tags"], json!({"team": "core"}));

    server.aws_json(&["logs", "create-log-stream", "--log-group-name", GROUP, "--log-stream-name", STREAM]);
    server.aws_json(&["logs", "create-log-stream", "--log-group-name", GROUP, "--log-stream-name", "ecs/db/1"]);
    let missing = server.aws_err(&["logs", "create-log-stream", "--log-group-name", "/nope", "--log-stream-name", "s"]);
    assert!(missing.contains("ResourceNotFoundException"), "{missing}");

    let t = now_ms() - 60_000;
    let lines: Vec<String> = (0..7).map(|i| format!("line {i}")).collect();
    let events: Vec<(i64, &str)> = lines.iter().enumerate().map(|(i, m)| (t + i as i64, m.as_str())).collect();
    let put_out = put(&server, STREAM, &events);
    assert!(put_out["nextSequenceToken"].is_string());
    assert!(put_out.get("rejectedLogEventsInfo").is_none());
    put(&server, "ecs/db/1", &[(t + 3, "db ERROR disk full"), (t + 10, "db WARN slow")]);

    // Default: the newest events; --start-from-head: the oldest, and forward tokens walk on.
    let newest = server.aws_json(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        GROUP,
        "--log-stream-name",
        STREAM,
        "--limit",
        "3",
    ]);
    assert_eq!(messages(&newest), ["line 4", "line 5", "line 6"]);
    let mut walked = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut args = vec![
            "logs",
            "get-log-events",
            "--log-group-name",
            GROUP,
            "--log-stream-name",
            STREAM,
            "--start-from-head",
            "--limit",
            "3",
        ];
        if let Some(t) = &token {
            args.extend(["--next-token", t.as_str()]);
        }
        let page = server.aws_json(&args);
        let next = page["nextForwardToken"].as_str().unwrap().to_owned();
        assert!(next.starts_with("f/") && page["nextBackwardToken"].as_str().unwrap().starts_with("b/"));
        let events = messages(&page);
        if events.is_empty() {
            assert_eq!(Some(&next), token.as_ref(), "at the end the same token comes back");
            break;
        }
        assert!(
            page["events"][0]["ingestionTime"].as_i64().unwrap() >= page["events"][0]["timestamp"].as_i64().unwrap()
        );
        walked.extend(events);
        token = Some(next);
    }
    assert_eq!(walked, lines);
    // The backward token of the newest page leads to the events before it.
    let back = newest["nextBackwardToken"].as_str().unwrap();
    let older = server.aws_json(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        GROUP,
        "--log-stream-name",
        STREAM,
        "--limit",
        "3",
        "--next-token",
        back,
    ]);
    assert_eq!(messages(&older), ["line 1", "line 2", "line 3"]);

    // Streams, by name and by last event time.
    let streams = server.aws_json(&["logs", "describe-log-streams", "--log-group-name", GROUP]);
    let names: Vec<&str> =
        streams["logStreams"].as_array().unwrap().iter().map(|s| s["logStreamName"].as_str().unwrap()).collect();
    assert_eq!(names, ["ecs/db/1", STREAM]);
    let latest = server.aws_json(&[
        "logs",
        "describe-log-streams",
        "--log-group-name",
        GROUP,
        "--order-by",
        "LastEventTime",
        "--descending",
        "--max-items",
        "1",
    ]);
    let s = &latest["logStreams"][0];
    assert_eq!(s["logStreamName"], "ecs/db/1");
    assert_eq!(s["lastEventTimestamp"], t + 10);
    assert_eq!(s["firstEventTimestamp"], t + 3);
    assert_eq!(s["arn"], format!("arn:aws:logs:us-east-1:000000000000:log-group:{GROUP}:log-stream:ecs/db/1"));

    // Filter: interleaved across streams, terms, ?-terms, phrases; the CLI pages with --page-size.
    let all = server.aws_json(&["logs", "filter-log-events", "--log-group-name", GROUP, "--page-size", "2"]);
    let all = messages(&all);
    assert_eq!(all.len(), 9);
    // Equal timestamps keep arrival order: line 3 was stored before the db event at t+3.
    assert_eq!(&all[..5], ["line 0", "line 1", "line 2", "line 3", "db ERROR disk full"]);
    let errors =
        server.aws_json(&["logs", "filter-log-events", "--log-group-name", GROUP, "--filter-pattern", "ERROR"]);
    assert_eq!(messages(&errors), ["db ERROR disk full"]);
    assert_eq!(errors["events"][0]["logStreamName"], "ecs/db/1");
    assert!(errors["events"][0]["eventId"].is_string());
    let either = server.aws_json(&[
        "logs",
        "filter-log-events",
        "--log-group-name",
        GROUP,
        "--filter-pattern",
        "?WARN ?\"line 5\"",
    ]);
    assert_eq!(messages(&either), ["line 5", "db WARN slow"]);
    let named = server.aws_json(&[
        "logs",
        "filter-log-events",
        "--log-group-name",
        GROUP,
        "--log-stream-names",
        STREAM,
        "--filter-pattern",
        "line -3",
        "--start-time",
        &(t + 2).to_string(),
        "--end-time",
        &(t + 4).to_string(),
    ]);
    assert_eq!(messages(&named), ["line 2", "line 4"]);

    // Delete a stream, then the group.
    server.aws_json(&["logs", "delete-log-stream", "--log-group-name", GROUP, "--log-stream-name", "ecs/db/1"]);
    server.aws_json(&["logs", "delete-log-group", "--log-group-name", GROUP]);
    let gone = server.aws_err(&["logs", "get-log-events", "--log-group-name", GROUP, "--log-stream-name", STREAM]);
    assert!(gone.contains("ResourceNotFoundException"), "{gone}");
}

#[test]
fn put_log_events_rules_and_retention() {
    let server = Server::start();
    server.aws_json(&["logs", "create-log-group", "--log-group-name", GROUP]);
    server.aws_json(&["logs", "create-log-stream", "--log-group-name", GROUP, "--log-stream-name", STREAM]);
    let now = now_ms();

    let unsorted = server.aws(&[
        "logs",
        "put-log-events",
        "--log-group-name",
        GROUP,
        "--log-stream-name",
        STREAM,
        "--log-events",
        &json!([{"timestamp": now, "message": "b"}, {"timestamp": now - 5, "message": "a"}]).to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&unsorted.stderr);
    assert!(!unsorted.status.success() && stderr.contains("InvalidParameterException"), "{stderr}");
    assert!(stderr.contains("chronological"), "{stderr}");

    let out =
        put(&server, STREAM, &[(now - 20 * 86_400_000, "too old"), (now, "kept"), (now + 5 * 3_600_000, "too new")]);
    assert_eq!(out["rejectedLogEventsInfo"], json!({"tooOldLogEventEndIndex": 0, "tooNewLogEventStartIndex": 2}));

    let bad = server.aws_err(&["logs", "put-retention-policy", "--log-group-name", GROUP, "--retention-in-days", "2"]);
    assert!(bad.contains("InvalidParameterException") && bad.contains("retentionInDays"), "{bad}");
    server.aws_json(&["logs", "put-retention-policy", "--log-group-name", GROUP, "--retention-in-days", "1"]);
    let g = server.aws_json(&["logs", "describe-log-groups", "--log-group-name-prefix", GROUP]);
    assert_eq!(g["logGroups"][0]["retentionInDays"], 1);
    assert_eq!(g["logGroups"][0]["storedBytes"], 4 + 26);
    let out = put(&server, STREAM, &[(now - 2 * 86_400_000, "expired"), (now, "kept too")]);
    assert_eq!(out["rejectedLogEventsInfo"]["expiredLogEventEndIndex"], 0);
    server.aws_json(&["logs", "delete-retention-policy", "--log-group-name", GROUP]);
    let g = server.aws_json(&["logs", "describe-log-groups", "--log-group-name-prefix", GROUP]);
    assert!(g["logGroups"][0].get("retentionInDays").is_none());

    let page = server.aws_json(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        GROUP,
        "--log-stream-name",
        STREAM,
        "--start-from-head",
    ]);
    assert_eq!(messages(&page), ["kept", "kept too"]);
}

#[test]
fn the_server_refuses_what_the_model_forbids() {
    let server = Server::start();
    server.aws_json(&["logs", "create-log-group", "--log-group-name", GROUP]);
    // Wrong types and missing members, which the CLI itself would not send.
    let (code, message) = raw_error(&server, "DescribeLogGroups", json!({"limit": "ten"}));
    assert_eq!(code, "SerializationException");
    assert!(message.contains("limit"), "{message}");
    let (code, message) = raw_error(&server, "CreateLogGroup", json!({"logGroupName": 42}));
    assert_eq!(code, "SerializationException");
    assert!(message.contains("logGroupName"), "{message}");
    let (code, message) = raw_error(&server, "PutLogEvents", json!({"logGroupName": GROUP, "logStreamName": "s"}));
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("logEvents"), "{message}");
    let (code, message) = raw_error(&server, "DescribeLogGroups", json!({"limit": 51}));
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("limit"), "{message}");
    let (code, _) = raw_error(&server, "CreateLogGroup", json!({"logGroupName": "bad name!"}));
    assert_eq!(code, "InvalidParameterException");
    let (code, message) = raw_error(&server, "GetLogEvents", json!({"logStreamName": "s"}));
    assert_eq!(code, "InvalidParameterException");
    assert!(message.contains("logGroupName"), "{message}");
    let (code, _) = raw_error(&server, "LaunchRockets", json!({}));
    assert_eq!(code, "UnknownOperationException");

    let bad_token = server.aws_err(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        GROUP,
        "--log-stream-name",
        "s",
        "--next-token",
        "f/forged",
    ]);
    assert!(bad_token.contains("InvalidParameterException") && bad_token.contains("nextToken"), "{bad_token}");
}

#[test]
fn logs_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    server.aws_json(&["logs", "create-log-group", "--log-group-name", GROUP]);
    server.aws_json(&["logs", "create-log-stream", "--log-group-name", GROUP, "--log-stream-name", STREAM]);
    put(&server, STREAM, &[(now_ms(), "acknowledged before the crash")]);
    server.kill9();

    let server = Server::start_in(dir.path());
    common::wait_for("the restarted server to answer", Duration::from_secs(30), || {
        server.aws(&["logs", "describe-log-groups"]).status.success()
    });
    let page = server.aws_json(&[
        "logs",
        "get-log-events",
        "--log-group-name",
        GROUP,
        "--log-stream-name",
        STREAM,
        "--start-from-head",
    ]);
    assert_eq!(messages(&page), ["acknowledged before the crash"]);
    // The control-plane store does not hold log data.
    assert!(dir.path().join("logs").join("logs.redb").exists());
}
