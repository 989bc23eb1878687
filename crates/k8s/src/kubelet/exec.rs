//! `kubectl exec` on a Fargate node: `GET /exec/<namespace>/<pod>/<container>?command=...`
//! upgraded to a WebSocket with Kubernetes' channel protocol (`v5.channel.k8s.io`,
//! `v4.channel.k8s.io`: every binary message starts with its stream: 0 stdin, 1 stdout,
//! 2 stderr, 3 the final status, 4 a terminal resize; v5 adds 255, a stream's close). The
//! API server passes the upgrade through to the node. The command runs through Flotilla's own
//! exec path (`Control::exec_placement`, the task's host's `ExecTarget`), as ECS Exec does.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flotilla_control::Control;
use flotilla_host::exec::{ExecInput, ExecOutput, ExecRequest, ExecTargets, TermSize};
use futures::{SinkExt, StreamExt};
use serde_json::json;

use super::NodeState;

/// Where a node's pod's commands run: the control plane (which host runs the task) and the
/// hosts that take commands.
#[derive(Clone)]
pub struct PodExec {
    pub control: Arc<Control>,
    pub targets: ExecTargets,
}

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The query as the API server forwards it: `command` repeated, `input`/`output`/`error`/`tty`.
fn options(query: &[(String, String)]) -> (Vec<String>, bool, bool) {
    let mut command = Vec::new();
    let (mut tty, mut stdin) = (false, false);
    for (key, value) in query {
        let on = value == "1" || value == "true";
        match key.as_str() {
            "command" => command.push(value.clone()),
            "tty" => tty = on,
            "input" | "stdin" => stdin = on,
            _ => {}
        }
    }
    (command, tty, stdin)
}

pub(super) async fn exec(
    State(state): State<Arc<NodeState>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<Vec<(String, String)>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let node = &state.node;
    if namespace != node.namespace || pod != node.pod {
        return (StatusCode::NOT_FOUND, format!("pod {namespace}/{pod} is not on this node\n")).into_response();
    }
    let Some(exec) = state.exec.clone() else {
        return (StatusCode::NOT_IMPLEMENTED, "exec is not served by this node\n").into_response();
    };
    let (command, tty, stdin) = options(&query);
    if command.is_empty() {
        return (StatusCode::BAD_REQUEST, "you must specify at least one command for the container\n").into_response();
    }
    let placement = exec.control.exec_placement(Some(&node.ecs_cluster), &node.task_arn, Some(&container)).await;
    let placement = match placement {
        Ok(p) => p,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("container {container} cannot run commands: {e}\n"))
                .into_response();
        }
    };
    let Some(target) = exec.targets.get(&placement.host_id) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "the pod's host takes no commands now\n").into_response();
    };
    let request = ExecRequest { task_arn: node.task_arn.clone(), container, command, tty, size: None };
    upgrade.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"]).on_upgrade(move |socket| async move {
        let channel = target.exec(request).await;
        relay(socket, channel, stdin).await;
    })
}

fn frame(stream: u8, data: &[u8]) -> Message {
    let mut out = Vec::with_capacity(data.len() + 1);
    out.push(stream);
    out.extend_from_slice(data);
    Message::Binary(out.into())
}

/// The final status on stream 3, as the kubelet writes it.
fn status(exit: Result<i32, String>) -> Message {
    let body = match exit {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command, exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"}),
    };
    frame(STATUS, body.to_string().as_bytes())
}

async fn relay(
    socket: WebSocket,
    channel: Result<flotilla_host::exec::ExecChannel, flotilla_host::exec::ExecError>,
    stdin: bool,
) {
    let (mut sink, mut stream) = socket.split();
    let mut channel = match channel {
        Ok(c) => c,
        Err(e) => {
            let _ = sink.send(status(Err(e.to_string()))).await;
            let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
            return;
        }
    };
    if !stdin {
        let _ = channel.input.send(ExecInput::CloseStdin).await;
    }
    let input = channel.input.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            let data = match message {
                Message::Binary(b) => b.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&kind, body)) = data.split_first() else { continue };
            let sent = match kind {
                STDIN if !body.is_empty() => input.send(ExecInput::Stdin(body.to_vec())).await,
                RESIZE => match serde_json::from_slice::<serde_json::Value>(body) {
                    Ok(size) => {
                        let cols = size["Width"].as_u64().unwrap_or(80) as u16;
                        let rows = size["Height"].as_u64().unwrap_or(24) as u16;
                        input.send(ExecInput::Resize(TermSize { cols, rows })).await
                    }
                    Err(_) => Ok(()),
                },
                CLOSE if body.first() == Some(&STDIN) => input.send(ExecInput::CloseStdin).await,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
    });
    let mut exit = Err("the command's output ended without an exit status".to_owned());
    while let Some(output) = channel.output.recv().await {
        let message = match output {
            ExecOutput::Stdout(data) => frame(STDOUT, &data),
            ExecOutput::Stderr(data) => frame(STDERR, &data),
            ExecOutput::Exit(code) => {
                exit = Ok(code);
                break;
            }
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
    let _ = sink.send(status(exit)).await;
    // A normal closure: clients read it as every stream's end (without a code, as an error).
    let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "".into() }))).await;
    reader.abort();
    // Dropping the input ends the process if it still runs (the host's invariant).
    drop(channel);
}

#[cfg(test)]
mod tests {
    /// What axum's `Query` makes of a query string.
    fn serde_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
        let uri: axum::http::Uri = format!("/x?{query}").parse().unwrap();
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn the_api_server_s_query_is_read() {
        let parse = |q: &str| serde_urlencoded_pairs(q);
        let (command, tty, stdin) =
            super::options(&parse("command=sh&command=-c&command=echo+hi%3B+exit+3&output=1&error=1"));
        assert_eq!(command, ["sh", "-c", "echo hi; exit 3"]);
        assert!(!tty && !stdin);
        let (_, tty, stdin) = super::options(&parse("command=sh&input=1&output=1&tty=1"));
        assert!(tty && stdin);
    }
}
