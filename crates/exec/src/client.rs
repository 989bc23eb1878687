//! The client side of the data channel, as `flotilla exec` speaks it: the plugin's part of the
//! handshake, acks and de-duplication of the service's output, and its own input resent until
//! acknowledged. It asks for what only Flotilla's service sends: stderr apart and the exit code.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flotilla_host::exec::TermSize;
use tokio::sync::mpsc;

use crate::message::{
    ACKNOWLEDGE, Acknowledge, AgentMessage, CHANNEL_CLOSED, FLAG_CLOSE_STDIN, INPUT_STREAM_DATA, OUTPUT_STREAM_DATA,
    OpenDataChannel, SizeData, handshake_response, payload,
};

const RESEND_AFTER: Duration = Duration::from_millis(200);
const TICK: Duration = Duration::from_millis(50);
/// The plugin's input chunk: a larger read is split.
const CHUNK: usize = 1024;

/// What the user's side gives the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientInput {
    Stdin(Vec<u8>),
    Resize(TermSize),
    CloseStdin,
}

/// What the session gives the user's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// The command's exit status; the channel closes next.
    Exit(i32),
    /// The channel was closed by the service, with its message (an error, or empty).
    Closed(String),
}

/// Why a client session ended without the service closing the channel.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the connection to the service was lost")]
    Disconnected,
}

/// The first frame: the OpenDataChannel text message, with Flotilla's client flag; `tty`
/// false runs the command with pipes (stdout and stderr apart, stdin's end seen).
pub fn open_data_channel(token: &str, tty: bool) -> String {
    let open = OpenDataChannel {
        message_schema_version: "1.0".to_owned(),
        request_id: uuid::Uuid::new_v4().to_string(),
        token_value: token.to_owned(),
        client_id: uuid::Uuid::new_v4().to_string(),
        client_version: concat!("flotilla-", env!("CARGO_PKG_VERSION")).to_owned(),
        flotilla_client: true,
        flotilla_pipes: !tty,
    };
    serde_json::to_string(&open).unwrap_or_default()
}

struct State {
    out_seq: i64,
    in_expected: i64,
    in_buffer: BTreeMap<i64, AgentMessage>,
    unacked: BTreeMap<i64, (Vec<u8>, Instant)>,
    ready: bool,
    /// Input typed before the handshake completed.
    pending: Vec<ClientInput>,
    size: Option<TermSize>,
}

/// Runs the client side over binary frames (`incoming` from the service, `outgoing` to it;
/// the OpenDataChannel frame has been sent already) until the service closes the channel.
pub async fn run_client(
    mut incoming: mpsc::Receiver<Vec<u8>>,
    outgoing: mpsc::Sender<Vec<u8>>,
    mut input: mpsc::Receiver<ClientInput>,
    events: mpsc::Sender<ClientEvent>,
    size: Option<TermSize>,
) -> Result<(), ClientError> {
    let mut s = State {
        out_seq: 0,
        in_expected: 0,
        in_buffer: BTreeMap::new(),
        unacked: BTreeMap::new(),
        ready: false,
        pending: Vec::new(),
        size,
    };
    let mut input_open = true;
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            frame = incoming.recv() => {
                let frame = frame.ok_or(ClientError::Disconnected)?;
                let Ok(m) = AgentMessage::decode(&frame) else { continue };
                match m.message_type.as_str() {
                    ACKNOWLEDGE => {
                        if let Ok(ack) = serde_json::from_slice::<Acknowledge>(&m.payload) {
                            s.unacked.remove(&ack.acknowledged_message_sequence_number);
                        }
                    }
                    CHANNEL_CLOSED => {
                        let output = serde_json::from_slice::<serde_json::Value>(&m.payload)
                            .ok()
                            .and_then(|v| v.get("Output").and_then(|o| o.as_str()).map(str::to_owned))
                            .unwrap_or_default();
                        let _ = events.send(ClientEvent::Closed(output)).await;
                        return Ok(());
                    }
                    OUTPUT_STREAM_DATA => {
                        outgoing.send(m.ack().encode()).await.map_err(|_| ClientError::Disconnected)?;
                        if m.sequence_number < s.in_expected {
                            continue;
                        }
                        s.in_buffer.insert(m.sequence_number, m);
                        while let Some(next) = s.in_buffer.remove(&s.in_expected) {
                            s.in_expected += 1;
                            on_output(&mut s, &outgoing, &events, next).await?;
                        }
                    }
                    _ => {}
                }
            }
            typed = input.recv(), if input_open => {
                match typed {
                    Some(i) if s.ready => send_input(&mut s, &outgoing, i).await?,
                    Some(i) => s.pending.push(i),
                    None => input_open = false,
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for (bytes, sent) in s.unacked.values_mut() {
                    if now.duration_since(*sent) >= RESEND_AFTER {
                        *sent = now;
                        outgoing.send(bytes.clone()).await.map_err(|_| ClientError::Disconnected)?;
                    }
                }
            }
        }
    }
}

async fn on_output(
    s: &mut State,
    outgoing: &mpsc::Sender<Vec<u8>>,
    events: &mpsc::Sender<ClientEvent>,
    m: AgentMessage,
) -> Result<(), ClientError> {
    let event = match m.payload_type {
        payload::HANDSHAKE_REQUEST => {
            send(s, outgoing, payload::HANDSHAKE_RESPONSE, handshake_response(env!("CARGO_PKG_VERSION"))).await?;
            return Ok(());
        }
        payload::HANDSHAKE_COMPLETE => {
            s.ready = true;
            // The size tells the service this side is ready for output, as the plugin's does.
            let size = s.size.unwrap_or(TermSize { cols: 80, rows: 24 });
            send_input(s, outgoing, ClientInput::Resize(size)).await?;
            for i in std::mem::take(&mut s.pending) {
                send_input(s, outgoing, i).await?;
            }
            return Ok(());
        }
        payload::OUTPUT => ClientEvent::Stdout(m.payload),
        payload::STDERR => ClientEvent::Stderr(m.payload),
        payload::EXIT_CODE => {
            let code = m.payload.get(..4).map(|b| i32::from_be_bytes(b.try_into().unwrap_or_default()));
            ClientEvent::Exit(code.unwrap_or(255))
        }
        _ => return Ok(()),
    };
    // The user's side may have stopped reading; the session still runs to its end.
    let _ = events.send(event).await;
    Ok(())
}

async fn send_input(s: &mut State, outgoing: &mpsc::Sender<Vec<u8>>, input: ClientInput) -> Result<(), ClientError> {
    match input {
        ClientInput::Stdin(bytes) => {
            for chunk in bytes.chunks(CHUNK) {
                send(s, outgoing, payload::OUTPUT, chunk.to_vec()).await?;
            }
            Ok(())
        }
        ClientInput::Resize(size) => {
            let body = serde_json::to_vec(&SizeData { cols: size.cols, rows: size.rows }).unwrap_or_default();
            send(s, outgoing, payload::SIZE, body).await
        }
        ClientInput::CloseStdin => send(s, outgoing, payload::FLAG, FLAG_CLOSE_STDIN.to_be_bytes().to_vec()).await,
    }
}

async fn send(s: &mut State, outgoing: &mpsc::Sender<Vec<u8>>, kind: u32, body: Vec<u8>) -> Result<(), ClientError> {
    let seq = s.out_seq;
    s.out_seq += 1;
    let bytes = AgentMessage::stream(INPUT_STREAM_DATA, seq, kind, body).encode();
    s.unacked.insert(seq, (bytes.clone(), Instant::now()));
    outgoing.send(bytes).await.map_err(|_| ClientError::Disconnected)
}
