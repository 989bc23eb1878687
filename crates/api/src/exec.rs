//! ECS Exec on the wire: ExecuteCommand's answer, SSM's ResumeSession and TerminateSession
//! (the plugin calls them at the endpoint it was given, which for ECS Exec is ECS's), and the
//! data channel's WebSocket at `/v1/data-channel/<sessionId>`. The sessions themselves and the
//! protocol are `flotilla_exec`'s.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use flotilla_exec::message::OpenDataChannel;
use flotilla_exec::{Connection, Outcome, SessionSpec, Sessions};
use flotilla_host::exec::ExecRequest;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::json::parse;
use crate::server::ApiState;

/// How long a client has, once connected, to send its OpenDataChannel frame.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecuteCommand {
    cluster: Option<String>,
    container: Option<String>,
    command: String,
    interactive: bool,
    task: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SessionRef {
    session_id: String,
}

fn sessions(state: &ApiState) -> Result<&Arc<Sessions>, ApiError> {
    state
        .exec
        .as_ref()
        .ok_or_else(|| ApiError::new("ServerException", "This server runs no exec sessions (ECS Exec is not served)."))
}

/// `ws://<the address the caller reached>/v1/data-channel/<id>`; the API serves plain HTTP,
/// so the stream does too.
fn stream_url(headers: &HeaderMap, session_id: &str) -> String {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1");
    format!("ws://{host}/v1/data-channel/{session_id}?role=publish_subscribe")
}

/// ExecuteCommand: checks the task as ECS does, then opens a session for its container.
pub(crate) async fn execute_command(state: &ApiState, headers: &HeaderMap, input: Value) -> Result<Value, ApiError> {
    let req: ExecuteCommand = parse(input)?;
    let sessions = sessions(state)?;
    if !req.interactive {
        return Err(ApiError::invalid_parameter("Interactive is the only mode supported currently."));
    }
    let command = flotilla_exec::split_command(&req.command).ok_or_else(|| {
        ApiError::invalid_parameter("command: give a command line (words, with shell quoting; no unclosed quote).")
    })?;
    let placement = state.control.exec_placement(req.cluster.as_deref(), &req.task, req.container.as_deref()).await?;
    let config = placement.exec_configuration.as_ref();
    let logging = config.and_then(|c| c.get("logging")).and_then(Value::as_str).unwrap_or("DEFAULT");
    let log_group = match logging {
        "NONE" => None,
        "OVERRIDE" => config
            .and_then(|c| c.pointer("/logConfiguration/cloudWatchLogGroupName"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => placement.container_log_group.clone(),
    };
    let spec = SessionSpec {
        host_id: placement.host_id.clone(),
        request: ExecRequest {
            task_arn: placement.task_arn.clone(),
            container: placement.container_name.clone(),
            command,
            tty: true,
            size: None,
        },
        log_group,
    };
    let (session_id, token) = sessions.create(spec);
    reap_after(sessions.clone(), flotilla_exec::TOKEN_TTL);
    Ok(json!({
        "clusterArn": placement.cluster_arn,
        "containerArn": placement.container_arn,
        "containerName": placement.container_name,
        "interactive": true,
        "session": {
            "sessionId": session_id,
            "streamUrl": stream_url(headers, &session_id),
            "tokenValue": token,
        },
        "taskArn": placement.task_arn,
    }))
}

/// The SSM operations that exec sessions answer (the rest of SSM is Parameter Store).
pub(crate) fn is_session_operation(operation: &str) -> bool {
    matches!(operation, "ResumeSession" | "TerminateSession")
}

/// `AmazonSSM.ResumeSession` / `TerminateSession`, for exec sessions.
pub(crate) fn execute_ssm(
    state: &ApiState,
    headers: &HeaderMap,
    operation: &str,
    input: Value,
) -> Result<Value, ApiError> {
    let sessions = sessions(state)?;
    let req: SessionRef = parse(input)?;
    if operation == "ResumeSession" {
        let token = sessions.resume(&req.session_id).ok_or_else(|| {
            ApiError::new("DoesNotExistException", format!("Session {} does not exist or has ended.", req.session_id))
        })?;
        Ok(json!({
            "SessionId": req.session_id,
            "TokenValue": token,
            "StreamUrl": stream_url(headers, &req.session_id),
        }))
    } else {
        sessions.terminate(&req.session_id);
        Ok(json!({ "SessionId": req.session_id }))
    }
}

/// `GET /v1/data-channel/<sessionId>`: the WebSocket; the token comes in its first frame.
pub(crate) async fn data_channel(
    State(state): State<Arc<ApiState>>,
    Path(session_id): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(sessions) = state.exec.clone() else {
        return ApiError::new("ServerException", "This server runs no exec sessions.").into_response();
    };
    upgrade.on_upgrade(move |socket| serve_socket(sessions, session_id, socket))
}

async fn refuse(mut socket: WebSocket, why: &str) {
    let frame = CloseFrame { code: axum::extract::ws::close_code::POLICY, reason: why.into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn serve_socket(sessions: Arc<Sessions>, session_id: String, mut socket: WebSocket) {
    let open = match tokio::time::timeout(OPEN_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<OpenDataChannel>(text.as_str()).ok(),
        _ => None,
    };
    let Some(open) = open else {
        return refuse(socket, "expected an OpenDataChannel message").await;
    };
    let session = match sessions.open(&session_id, &open.token_value) {
        Ok(s) => s,
        Err(e) => {
            tracing::info!(session = %session_id, error = %e, "data channel refused");
            return refuse(socket, "The session token is not valid.").await;
        }
    };
    let (to_session, incoming) = mpsc::channel::<Vec<u8>>(64);
    let (outgoing, mut from_session) = mpsc::channel::<Vec<u8>>(64);
    let conn = Connection { incoming, outgoing, flotilla_client: open.flotilla_client, pipes: open.flotilla_pipes };
    let served = tokio::spawn({
        let sessions = sessions.clone();
        async move { sessions.serve(session, conn).await }
    });
    let mut to_session = Some(to_session);
    loop {
        tokio::select! {
            received = socket.recv(), if to_session.is_some() => match received {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(tx) = &to_session
                        && tx.send(bytes.to_vec()).await.is_err()
                    {
                        to_session = None;
                    }
                }
                Some(Ok(_)) => {}
                // The client went away: the session sees its input end.
                Some(Err(_)) | None => to_session = None,
            },
            sent = from_session.recv() => match sent {
                Some(bytes) => {
                    if socket.send(Message::Binary(bytes.into())).await.is_err() {
                        to_session = None;
                    }
                }
                None => break,
            },
        }
    }
    match served.await {
        Ok(Outcome::Ended) => {
            let _ = socket.send(Message::Close(None)).await;
        }
        _ => reap_after(sessions, flotilla_exec::DETACHED_TTL),
    }
}

/// Forgets what expired by then (a token never used, a client that never came back), so that
/// an abandoned session's process does not wait for the next request to be killed.
fn reap_after(sessions: Arc<Sessions>, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after + Duration::from_secs(1)).await;
        sessions.reap();
    });
}
