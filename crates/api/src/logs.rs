//! CloudWatch Logs operations: request members in, log store call, response shape out.
//!
//! Logs' wire timestamps are `long` milliseconds (the model's `Timestamp` shape), unlike ECS's
//! epoch seconds. ARNs are built here from the installation's identity; the store only knows
//! names.

use std::collections::BTreeMap;

use flotilla_control::Identity;
use flotilla_logs::{
    EventQuery, FilterQuery, GroupQuery, InputEvent, LogError, LogGroup, LogStream, NewLogGroup, StreamOrder,
    StreamQuery,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::json::{parse, strip_nulls};

/// What `flotilla up` needs to open and maintain the log store, without depending on it itself.
pub use flotilla_logs::{LogStore, LogStoreOptions, now_millis};

fn group_arn(identity: &Identity, group: &str) -> String {
    identity.log_group(group)
}

/// The log group a `logGroupName` or `logGroupIdentifier` (name or ARN) names.
fn group_name(identity: &Identity, name: Option<String>, identifier: Option<String>) -> Result<String, ApiError> {
    match (name, identifier) {
        (Some(name), None) => Ok(name),
        (None, Some(id)) => group_from_arn(identity, &id).map(|name| name.unwrap_or(id)),
        (Some(_), Some(_)) => Err(ApiError::invalid_parameter(
            "LogGroup name and LogGroup ARN are mutually exclusive parameters: give logGroupName or logGroupIdentifier, not both.",
        )),
        (None, None) => {
            Err(ApiError::invalid_parameter("Either logGroupName or logGroupIdentifier must be specified."))
        }
    }
}

/// `Some(name)` for a log group ARN of this installation, `None` for something that is not an
/// ARN; an ARN of another account, region or resource type names nothing here.
fn group_from_arn(identity: &Identity, text: &str) -> Result<Option<String>, ApiError> {
    let Some(rest) = text.strip_prefix("arn:") else { return Ok(None) };
    let not_here =
        || ApiError::new("ResourceNotFoundException", format!("The specified log group does not exist: {text}"));
    let parts: Vec<&str> = rest.splitn(6, ':').collect();
    let [_, "logs", region, account, "log-group", resource] = parts.as_slice() else { return Err(not_here()) };
    if *region != identity.region || *account != identity.account {
        return Err(not_here());
    }
    let name = resource.strip_suffix(":*").unwrap_or(resource);
    if name.is_empty() || name.contains(':') {
        return Err(not_here());
    }
    Ok(Some(name.to_owned()))
}

fn group_json(identity: &Identity, g: &LogGroup) -> Value {
    let arn = group_arn(identity, &g.name);
    json!({
        "logGroupName": g.name,
        "creationTime": g.creation_time,
        "retentionInDays": g.retention_in_days,
        "metricFilterCount": 0,
        "arn": format!("{arn}:*"),
        "logGroupArn": arn,
        "storedBytes": g.stored_bytes,
        "logGroupClass": g.class,
        "deletionProtectionEnabled": g.deletion_protection,
    })
}

fn stream_json(identity: &Identity, group: &str, s: &LogStream) -> Value {
    json!({
        "logStreamName": s.name,
        "creationTime": s.creation_time,
        "firstEventTimestamp": s.first_event_timestamp,
        "lastEventTimestamp": s.last_event_timestamp,
        "lastIngestionTime": s.last_ingestion_time,
        "uploadSequenceToken": s.upload_sequence_token(),
        "arn": identity.log_stream(group, &s.name),
        // CloudWatch Logs reports 0 for streams since 2019; the group carries the real figure.
        "storedBytes": 0,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateLogGroup {
    log_group_name: String,
    log_group_class: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    kms_key_id: Option<String>,
    #[serde(default)]
    deletion_protection_enabled: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupRef {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeLogGroups {
    log_group_name_prefix: Option<String>,
    log_group_name_pattern: Option<String>,
    log_group_class: Option<String>,
    log_group_identifiers: Option<Vec<String>>,
    limit: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StreamRef {
    log_group_name: String,
    log_stream_name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DescribeLogStreams {
    #[serde(flatten)]
    group: GroupRef,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    #[serde(default)]
    descending: bool,
    limit: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireEvent {
    timestamp: i64,
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PutLogEvents {
    log_group_name: String,
    log_stream_name: String,
    log_events: Vec<WireEvent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GetLogEvents {
    #[serde(flatten)]
    group: GroupRef,
    log_stream_name: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    limit: Option<usize>,
    #[serde(default)]
    start_from_head: bool,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FilterLogEvents {
    #[serde(flatten)]
    group: GroupRef,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    limit: Option<usize>,
    next_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PutRetentionPolicy {
    log_group_name: String,
    retention_in_days: i32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagLogGroup {
    log_group_name: String,
    tags: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UntagLogGroup {
    log_group_name: String,
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TagResource {
    resource_arn: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    tag_keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeletionProtection {
    log_group_identifier: String,
    deletion_protection_enabled: bool,
}

/// The log group a tagging ARN names; only log groups carry tags here.
fn tagged_group(identity: &Identity, arn: &str) -> Result<String, ApiError> {
    group_from_arn(identity, arn)?.ok_or_else(|| {
        ApiError::invalid_parameter(format!(
            "resourceArn: '{arn}' is not a log group ARN (arn:aws:logs:...:log-group:NAME)."
        ))
    })
}

/// Every CloudWatch Logs operation Flotilla serves, each with its typed input.
pub(crate) enum LogsRequest {
    CreateLogGroup(CreateLogGroup),
    DeleteLogGroup(GroupRef),
    DescribeLogGroups(DescribeLogGroups),
    PutRetentionPolicy(PutRetentionPolicy),
    DeleteRetentionPolicy(GroupRef),
    PutLogGroupDeletionProtection(DeletionProtection),
    CreateLogStream(StreamRef),
    DeleteLogStream(StreamRef),
    DescribeLogStreams(DescribeLogStreams),
    PutLogEvents(PutLogEvents),
    GetLogEvents(GetLogEvents),
    FilterLogEvents(FilterLogEvents),
    TagLogGroup(TagLogGroup),
    UntagLogGroup(UntagLogGroup),
    ListTagsLogGroup(GroupRef),
    TagResource(TagResource),
    UntagResource(TagResource),
    ListTagsForResource(TagResource),
}

impl LogsRequest {
    /// Reads one operation's model-checked input into its variant; an operation Flotilla does
    /// not serve is refused here, before anything runs.
    pub(crate) fn parse(operation: &str, input: Value) -> Result<LogsRequest, ApiError> {
        Ok(match operation {
            "CreateLogGroup" => LogsRequest::CreateLogGroup(parse(input)?),
            "DeleteLogGroup" => LogsRequest::DeleteLogGroup(parse(input)?),
            "DescribeLogGroups" => LogsRequest::DescribeLogGroups(parse(input)?),
            "PutRetentionPolicy" => LogsRequest::PutRetentionPolicy(parse(input)?),
            "DeleteRetentionPolicy" => LogsRequest::DeleteRetentionPolicy(parse(input)?),
            "PutLogGroupDeletionProtection" => LogsRequest::PutLogGroupDeletionProtection(parse(input)?),
            "CreateLogStream" => LogsRequest::CreateLogStream(parse(input)?),
            "DeleteLogStream" => LogsRequest::DeleteLogStream(parse(input)?),
            "DescribeLogStreams" => LogsRequest::DescribeLogStreams(parse(input)?),
            "PutLogEvents" => LogsRequest::PutLogEvents(parse(input)?),
            "GetLogEvents" => LogsRequest::GetLogEvents(parse(input)?),
            "FilterLogEvents" => LogsRequest::FilterLogEvents(parse(input)?),
            "TagLogGroup" => LogsRequest::TagLogGroup(parse(input)?),
            "UntagLogGroup" => LogsRequest::UntagLogGroup(parse(input)?),
            "ListTagsLogGroup" => LogsRequest::ListTagsLogGroup(parse(input)?),
            "TagResource" => LogsRequest::TagResource(parse(input)?),
            "UntagResource" => LogsRequest::UntagResource(parse(input)?),
            "ListTagsForResource" => LogsRequest::ListTagsForResource(parse(input)?),
            other => {
                return Err(ApiError::new(
                    "UnsupportedFeatureException",
                    format!("Flotilla does not implement CloudWatch Logs {other} yet."),
                ));
            }
        })
    }
}

/// Runs one request; the one place its `Result` becomes the answer.
pub(crate) async fn execute(logs: &LogStore, identity: &Identity, request: LogsRequest) -> Result<Value, ApiError> {
    let answer = match request {
        LogsRequest::CreateLogGroup(req) => {
            if req.kms_key_id.is_some() {
                return Err(ApiError::invalid_parameter(
                    "kmsKeyId: Flotilla does not encrypt log groups with KMS keys; create the group without one.",
                ));
            }
            logs.create_log_group(NewLogGroup {
                name: req.log_group_name,
                class: req.log_group_class,
                tags: req.tags,
                deletion_protection: req.deletion_protection_enabled,
            })
            .await?;
            json!({})
        }
        LogsRequest::DeleteLogGroup(req) => {
            logs.delete_log_group(&group_name(identity, req.log_group_name, None)?).await?;
            json!({})
        }
        LogsRequest::DescribeLogGroups(req) => {
            if let Some(ids) = req.log_group_identifiers {
                if req.log_group_name_prefix.is_some() || req.log_group_name_pattern.is_some() {
                    return Err(ApiError::invalid_parameter(
                        "logGroupIdentifiers cannot be combined with logGroupNamePrefix or logGroupNamePattern.",
                    ));
                }
                let mut groups = Vec::new();
                for id in ids {
                    let name = match group_from_arn(identity, &id) {
                        Ok(name) => name.unwrap_or(id),
                        Err(_) => continue,
                    };
                    match logs.log_group(&name) {
                        Ok(g) => groups.push(group_json(identity, &g)),
                        Err(LogError::GroupNotFound { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                json!({ "logGroups": groups })
            } else {
                let page = logs.describe_log_groups(&GroupQuery {
                    prefix: req.log_group_name_prefix,
                    pattern: req.log_group_name_pattern,
                    class: req.log_group_class,
                    limit: req.limit,
                    next_token: req.next_token,
                })?;
                let groups: Vec<Value> = page.items.iter().map(|g| group_json(identity, g)).collect();
                json!({ "logGroups": groups, "nextToken": page.next_token })
            }
        }
        LogsRequest::PutRetentionPolicy(req) => {
            logs.put_retention_policy(&req.log_group_name, req.retention_in_days).await?;
            json!({})
        }
        LogsRequest::DeleteRetentionPolicy(req) => {
            logs.delete_retention_policy(&group_name(identity, req.log_group_name, None)?).await?;
            json!({})
        }
        LogsRequest::PutLogGroupDeletionProtection(req) => {
            let name = group_name(identity, None, Some(req.log_group_identifier))?;
            logs.put_deletion_protection(&name, req.deletion_protection_enabled).await?;
            json!({})
        }
        LogsRequest::CreateLogStream(req) => {
            logs.create_log_stream(&req.log_group_name, &req.log_stream_name).await?;
            json!({})
        }
        LogsRequest::DeleteLogStream(req) => {
            logs.delete_log_stream(&req.log_group_name, &req.log_stream_name).await?;
            json!({})
        }
        LogsRequest::DescribeLogStreams(req) => {
            let group = group_name(identity, req.group.log_group_name, req.group.log_group_identifier)?;
            let order = match req.order_by.as_deref() {
                Some("LastEventTime") => StreamOrder::LastEventTime,
                _ => StreamOrder::LogStreamName,
            };
            let page = logs.describe_log_streams(
                &group,
                &StreamQuery {
                    prefix: req.log_stream_name_prefix,
                    order,
                    descending: req.descending,
                    limit: req.limit,
                    next_token: req.next_token,
                },
            )?;
            let streams: Vec<Value> = page.items.iter().map(|s| stream_json(identity, &group, s)).collect();
            json!({ "logStreams": streams, "nextToken": page.next_token })
        }
        LogsRequest::PutLogEvents(req) => {
            // sequenceToken is ignored, as CloudWatch Logs now does.
            let events = req.log_events.into_iter().map(|e| InputEvent::new(e.timestamp, e.message)).collect();
            let outcome = logs.put_log_events(&req.log_group_name, &req.log_stream_name, events, now_millis()).await?;
            let rejected = outcome.rejected.map(|r| {
                json!({
                    "tooNewLogEventStartIndex": r.too_new_start,
                    "tooOldLogEventEndIndex": r.too_old_end,
                    "expiredLogEventEndIndex": r.expired_end,
                })
            });
            json!({ "nextSequenceToken": outcome.next_sequence_token, "rejectedLogEventsInfo": rejected })
        }
        LogsRequest::GetLogEvents(req) => {
            let group = group_name(identity, req.group.log_group_name, req.group.log_group_identifier)?;
            let page = logs.get_log_events(
                &group,
                &req.log_stream_name,
                &EventQuery {
                    start_time: req.start_time,
                    end_time: req.end_time,
                    limit: req.limit,
                    start_from_head: req.start_from_head,
                    next_token: req.next_token,
                },
            )?;
            let events: Vec<Value> = page
                .events
                .iter()
                .map(|e| json!({"timestamp": e.timestamp, "message": e.message, "ingestionTime": e.ingestion_time}))
                .collect();
            json!({
                "events": events,
                "nextForwardToken": page.next_forward_token,
                "nextBackwardToken": page.next_backward_token,
            })
        }
        LogsRequest::FilterLogEvents(req) => {
            let group = group_name(identity, req.group.log_group_name, req.group.log_group_identifier)?;
            let page = logs.filter_log_events(
                &group,
                &FilterQuery {
                    stream_names: req.log_stream_names,
                    stream_prefix: req.log_stream_name_prefix,
                    start_time: req.start_time,
                    end_time: req.end_time,
                    pattern: req.filter_pattern,
                    limit: req.limit,
                    next_token: req.next_token,
                },
            )?;
            let events: Vec<Value> = page
                .events
                .iter()
                .map(|f| {
                    json!({
                        "logStreamName": f.stream,
                        "timestamp": f.event.timestamp,
                        "message": f.event.message,
                        "ingestionTime": f.event.ingestion_time,
                        "eventId": f.event_id(),
                    })
                })
                .collect();
            // Always empty since May 2020, as CloudWatch Logs documents.
            json!({ "events": events, "searchedLogStreams": [], "nextToken": page.next_token })
        }
        LogsRequest::TagLogGroup(req) => {
            logs.tag_log_group(&req.log_group_name, req.tags).await?;
            json!({})
        }
        LogsRequest::UntagLogGroup(req) => {
            logs.untag_log_group(&req.log_group_name, req.tags).await?;
            json!({})
        }
        LogsRequest::ListTagsLogGroup(req) => {
            let group = logs.log_group(&group_name(identity, req.log_group_name, None)?)?;
            json!({ "tags": group.tags })
        }
        LogsRequest::TagResource(req) => {
            logs.tag_log_group(&tagged_group(identity, &req.resource_arn)?, req.tags).await?;
            json!({})
        }
        LogsRequest::UntagResource(req) => {
            logs.untag_log_group(&tagged_group(identity, &req.resource_arn)?, req.tag_keys).await?;
            json!({})
        }
        LogsRequest::ListTagsForResource(req) => {
            let group = logs.log_group(&tagged_group(identity, &req.resource_arn)?)?;
            json!({ "tags": group.tags })
        }
    };
    Ok(strip_nulls(answer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ServiceModel;

    fn identity() -> Identity {
        Identity { region: "us-east-1".into(), account: "000000000000".into() }
    }

    fn model() -> ServiceModel {
        ServiceModel::parse(include_str!("../model/logs.json"))
    }

    async fn call(logs: &LogStore, operation: &str, body: Value) -> Result<Value, ApiError> {
        let input = model().check_input(operation, body).expect("operation in the model")?;
        execute(logs, &identity(), LogsRequest::parse(operation, input)?).await
    }

    #[test]
    fn group_arns_resolve_only_for_this_installation() {
        let id = identity();
        assert_eq!(group_from_arn(&id, "/ecs/a").unwrap(), None);
        let arn = "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/a";
        assert_eq!(group_from_arn(&id, arn).unwrap().as_deref(), Some("/ecs/a"));
        assert_eq!(group_from_arn(&id, &format!("{arn}:*")).unwrap().as_deref(), Some("/ecs/a"));
        for other in [
            "arn:aws:logs:eu-west-1:000000000000:log-group:/ecs/a",
            "arn:aws:logs:us-east-1:111111111111:log-group:/ecs/a",
            "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/a:log-stream:s",
            "arn:aws:ecs:us-east-1:000000000000:cluster/a",
        ] {
            assert_eq!(group_from_arn(&id, other).unwrap_err().code, "ResourceNotFoundException", "{other}");
        }
    }

    #[tokio::test]
    async fn operations_answer_in_wire_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogStore::open(dir.path()).unwrap();
        call(&logs, "CreateLogGroup", json!({"logGroupName": "/ecs/app", "tags": {"team": "core"}})).await.unwrap();
        let again = call(&logs, "CreateLogGroup", json!({"logGroupName": "/ecs/app"})).await.unwrap_err();
        assert_eq!(again.code, "ResourceAlreadyExistsException");
        call(&logs, "CreateLogStream", json!({"logGroupName": "/ecs/app", "logStreamName": "s"})).await.unwrap();
        let now = now_millis();
        let put = json!({"logGroupName": "/ecs/app", "logStreamName": "s",
            "logEvents": [{"timestamp": now, "message": "hello"}, {"timestamp": now + 10 * 3_600_000, "message": "later"}]});
        let out = call(&logs, "PutLogEvents", put).await.unwrap();
        assert_eq!(out["rejectedLogEventsInfo"], json!({"tooNewLogEventStartIndex": 1}));
        assert!(out["nextSequenceToken"].is_string());

        let by_arn = json!({"logGroupIdentifier": "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/app:*",
            "logStreamName": "s", "startFromHead": true});
        let got = call(&logs, "GetLogEvents", by_arn).await.unwrap();
        assert_eq!(got["events"][0]["message"], "hello");
        assert_eq!(got["events"][0]["timestamp"], now);
        assert!(got["events"][0]["ingestionTime"].is_i64());

        let groups = call(&logs, "DescribeLogGroups", json!({})).await.unwrap();
        let g = &groups["logGroups"][0];
        assert_eq!(g["arn"], "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/app:*");
        assert_eq!(g["storedBytes"], 5 + 26);
        assert!(g.get("retentionInDays").is_none(), "absent, not null");
        assert!(groups.get("nextToken").is_none());

        let bad = call(&logs, "PutRetentionPolicy", json!({"logGroupName": "/ecs/app", "retentionInDays": 2}))
            .await
            .unwrap_err();
        assert_eq!(bad.code, "InvalidParameterException");
        assert!(bad.message.contains("retentionInDays"), "{}", bad.message);
        let wrong_type = model().check_input("GetLogEvents", json!({"logStreamName": "s", "limit": "ten"}));
        assert_eq!(wrong_type.unwrap().unwrap_err().code, "SerializationException");
        let neither = call(&logs, "GetLogEvents", json!({"logStreamName": "s"})).await.unwrap_err();
        assert_eq!(neither.code, "InvalidParameterException");
        let missing = call(&logs, "DeleteLogGroup", json!({"logGroupName": "/nope"})).await.unwrap_err();
        assert_eq!(missing.code, "ResourceNotFoundException");
        let tags = call(
            &logs,
            "ListTagsForResource",
            json!({"resourceArn": "arn:aws:logs:us-east-1:000000000000:log-group:/ecs/app"}),
        )
        .await
        .unwrap();
        assert_eq!(tags, json!({"tags": {"team": "core"}}));
    }
}
