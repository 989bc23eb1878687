//! The service and client sides against each other, over queues that lose nothing, with a
//! host that answers from memory (the real hosts are in `crates/cli/tests/exec.rs`).

use std::sync::Arc;

use flotilla_host::BoxFuture;
use flotilla_host::exec::{ExecChannel, ExecError, ExecInput, ExecOutput, ExecRequest, ExecTarget, ExecTargets};
use tokio::sync::mpsc;

use crate::message::{AgentMessage, OpenDataChannel};
use crate::*;

/// Echoes stdin back; `exit N` on stdin exits with N; says its argv and size first.
struct EchoHost;

impl ExecTarget for EchoHost {
    fn exec(&self, request: ExecRequest) -> BoxFuture<'_, Result<ExecChannel, ExecError>> {
        Box::pin(async move {
            if request.container != "web" {
                return Err(ExecError::ContainerNotFound(request.container));
            }
            let (in_tx, mut in_rx) = mpsc::channel(16);
            let (out_tx, out_rx) = mpsc::channel(16);
            tokio::spawn(async move {
                let size = request.size.map(|s| format!("{}x{}", s.cols, s.rows)).unwrap_or_default();
                let _ = out_tx.send(ExecOutput::Stdout(format!("{:?} {size}\n", request.command).into_bytes())).await;
                while let Some(input) = in_rx.recv().await {
                    match input {
                        ExecInput::Stdin(b) if b.starts_with(b"exit ") => {
                            let code = String::from_utf8_lossy(&b[5..]).trim().parse().unwrap_or(1);
                            let _ = out_tx.send(ExecOutput::Stderr(b"bye\n".to_vec())).await;
                            let _ = out_tx.send(ExecOutput::Exit(code)).await;
                            return;
                        }
                        ExecInput::Stdin(b) => {
                            let _ = out_tx.send(ExecOutput::Stdout(b)).await;
                        }
                        ExecInput::Resize(s) => {
                            let _ = out_tx.send(ExecOutput::Stdout(format!("[{}x{}]", s.cols, s.rows).into())).await;
                        }
                        ExecInput::CloseStdin => {}
                    }
                }
            });
            Ok(ExecChannel { input: in_tx, output: out_rx })
        })
    }
}

fn sessions() -> Arc<Sessions> {
    let targets = ExecTargets::new();
    targets.register("h1", Arc::new(EchoHost));
    Arc::new(Sessions::new(targets, None))
}

fn spec(container: &str) -> SessionSpec {
    SessionSpec {
        host_id: "h1".into(),
        request: ExecRequest {
            task_arn: "arn:t".into(),
            container: container.into(),
            command: split_command("sh -c 'echo hi'").unwrap(),
            tty: true,
            size: None,
        },
        log_group: None,
    }
}

/// Connects a client to `session`, returning its input and events.
fn connect(
    sessions: &Arc<Sessions>,
    id: &str,
    token: &str,
) -> (mpsc::Sender<ClientInput>, mpsc::Receiver<ClientEvent>, tokio::task::JoinHandle<Outcome>) {
    let session = sessions.open(id, token).unwrap();
    let (to_service, from_client) = mpsc::channel(64);
    let (to_client, from_service) = mpsc::channel(64);
    let conn = Connection { incoming: from_client, outgoing: to_client, flotilla_client: true, pipes: false };
    let s = sessions.clone();
    let served = tokio::spawn(async move { s.serve(session, conn).await });
    let (input_tx, input_rx) = mpsc::channel(16);
    let (event_tx, event_rx) = mpsc::channel(64);
    let size = Some(flotilla_host::exec::TermSize { cols: 100, rows: 30 });
    tokio::spawn(run_client(from_service, to_service, input_rx, event_tx, size));
    (input_tx, event_rx, served)
}

#[tokio::test]
async fn a_session_runs_its_command_and_ends_with_its_exit_code() {
    let sessions = sessions();
    let (id, token) = sessions.create(spec("web"));
    let (input, mut events, served) = connect(&sessions, &id, &token);
    input.send(ClientInput::Stdin(b"ping\n".to_vec())).await.unwrap();
    input.send(ClientInput::Stdin(b"exit 7".to_vec())).await.unwrap();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut exit = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await.expect("session ends").expect("events") {
            ClientEvent::Stdout(b) => stdout.extend(b),
            ClientEvent::Stderr(b) => stderr.extend(b),
            ClientEvent::Exit(c) => exit = Some(c),
            ClientEvent::Closed(_) => break,
        }
    }
    let stdout = String::from_utf8(stdout).unwrap();
    assert!(stdout.starts_with("[\"sh\", \"-c\", \"echo hi\"] 100x30\n"), "{stdout}");
    assert!(stdout.contains("ping\n"), "{stdout}");
    assert_eq!(stderr, b"bye\n");
    assert_eq!(exit, Some(7));
    assert_eq!(served.await.unwrap(), Outcome::Ended);
    assert!(sessions.is_empty());
}

#[tokio::test]
async fn a_command_that_cannot_start_closes_the_channel_with_why() {
    let sessions = sessions();
    let (id, token) = sessions.create(spec("nope"));
    let (_input, mut events, _) = connect(&sessions, &id, &token);
    loop {
        if let ClientEvent::Closed(why) = events.recv().await.unwrap() {
            assert!(why.contains("nope"), "{why}");
            break;
        }
    }
}

#[tokio::test]
async fn lost_output_is_sent_again_until_acknowledged() {
    let sessions = sessions();
    let (id, token) = sessions.create(spec("web"));
    let session = sessions.open(&id, &token).unwrap();
    let (to_service, from_client) = mpsc::channel(64);
    let (to_client, mut from_service) = mpsc::channel(64);
    let s = sessions.clone();
    tokio::spawn(async move {
        s.serve(
            session,
            Connection { incoming: from_client, outgoing: to_client, flotilla_client: false, pipes: false },
        )
        .await
    });
    // A bare client that drops the first copy of every output message, as the plugin does
    // before its shell handler is ready.
    let request = AgentMessage::decode(&from_service.recv().await.unwrap()).unwrap();
    assert_eq!(request.payload_type, message::payload::HANDSHAKE_REQUEST);
    to_service.send(request.ack().encode()).await.unwrap();
    let response = message::handshake_response("1.2.677.0");
    let response = AgentMessage::stream(message::INPUT_STREAM_DATA, 0, message::payload::HANDSHAKE_RESPONSE, response);
    to_service.send(response.encode()).await.unwrap();
    let size = AgentMessage::stream(
        message::INPUT_STREAM_DATA,
        1,
        message::payload::SIZE,
        br#"{"cols":300,"rows":100}"#.to_vec(),
    );
    to_service.send(size.encode()).await.unwrap();
    let mut seen = std::collections::HashMap::<i64, u32>::new();
    loop {
        let m = AgentMessage::decode(&from_service.recv().await.unwrap()).unwrap();
        if m.message_type != message::OUTPUT_STREAM_DATA {
            continue;
        }
        let copies = seen.entry(m.sequence_number).or_default();
        *copies += 1;
        if m.payload_type == message::payload::OUTPUT && *copies == 1 {
            continue;
        }
        to_service.send(m.ack().encode()).await.unwrap();
        if m.payload_type == message::payload::OUTPUT {
            assert_eq!(m.payload, b"[\"sh\", \"-c\", \"echo hi\"] 300x100\n");
            break;
        }
    }
    let _ = OpenDataChannel::default();
}

#[test]
fn commands_split_as_a_shell_splits_words() {
    assert_eq!(split_command("sh -c 'id; hostname'").unwrap(), ["sh", "-c", "id; hostname"]);
    assert_eq!(split_command(r#"echo "a b" c\ d"#).unwrap(), ["echo", "a b", "c d"]);
    assert!(split_command("  ").is_none());
    assert!(split_command("echo 'open").is_none());
}

#[tokio::test]
async fn a_resumed_session_carries_on_where_the_last_connection_left_it() {
    use message::{AgentMessage, INPUT_STREAM_DATA, OUTPUT_STREAM_DATA, payload};
    let sessions = sessions();
    let (id, token) = sessions.create(spec("web"));
    let attach = |token: String| {
        let session = sessions.open(&id, &token).unwrap();
        let (to_service, from_client) = mpsc::channel(64);
        let (to_client, from_service) = mpsc::channel(64);
        let s = sessions.clone();
        let conn = Connection { incoming: from_client, outgoing: to_client, flotilla_client: false, pipes: false };
        (to_service, from_service, tokio::spawn(async move { s.serve(session, conn).await }))
    };
    let (to_service, mut from_service, served) = attach(token);
    let request = AgentMessage::decode(&from_service.recv().await.unwrap()).unwrap();
    to_service.send(request.ack().encode()).await.unwrap();
    let response = message::handshake_response("1.2.677.0");
    to_service
        .send(AgentMessage::stream(INPUT_STREAM_DATA, 0, payload::HANDSHAKE_RESPONSE, response).encode())
        .await
        .unwrap();
    let size = br#"{"cols":80,"rows":24}"#.to_vec();
    to_service.send(AgentMessage::stream(INPUT_STREAM_DATA, 1, payload::SIZE, size).encode()).await.unwrap();
    // Wait for the command's first output, and leave it unacknowledged.
    loop {
        let m = AgentMessage::decode(&from_service.recv().await.unwrap()).unwrap();
        if m.message_type == OUTPUT_STREAM_DATA && m.payload_type == payload::OUTPUT {
            break;
        }
    }
    // The client reconnects before the service noticed the first connection was lost.
    let token = sessions.resume(&id).expect("the session is still open");
    let (old_to_service, _old_from_service, old_served) = (to_service, from_service, served);
    let (to_service, mut from_service, served) = attach(token);
    assert_eq!(old_served.await.unwrap(), Outcome::Detached, "the old connection gives way");
    drop(old_to_service);
    let resent = loop {
        let m = AgentMessage::decode(&from_service.recv().await.unwrap()).unwrap();
        if m.payload_type == payload::OUTPUT {
            break m;
        }
    };
    assert_eq!(resent.sequence_number, 2, "the unacked output is sent again, same sequence");
    to_service.send(resent.ack().encode()).await.unwrap();
    to_service
        .send(AgentMessage::stream(INPUT_STREAM_DATA, 2, payload::OUTPUT, b"exit 3".to_vec()).encode())
        .await
        .unwrap();
    let mut closed = false;
    while let Some(frame) = from_service.recv().await {
        let m = AgentMessage::decode(&frame).unwrap();
        if m.message_type == message::CHANNEL_CLOSED {
            closed = true;
            break;
        }
        if m.message_type == OUTPUT_STREAM_DATA {
            to_service.send(m.ack().encode()).await.unwrap();
        }
    }
    assert!(closed);
    assert_eq!(served.await.unwrap(), Outcome::Ended);
}
