//! The service side of the data channel (SESSION-PROTOCOL.md section 10): the handshake,
//! acks and de-duplication of the client's input, the process's output sent in sequence and
//! resent until acknowledged, resize, and `channel_closed` when the process exits.
//!
//! The transport is two queues of binary frames (the WebSocket lives in `api`), so the same
//! code serves AWS's plugin and `flotilla exec`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_host::exec::{ExecChannel, ExecInput, ExecOutput, TermSize};
use flotilla_logs::InputEvent;
use tokio::sync::mpsc;

use crate::message::{
    ACKNOWLEDGE, Acknowledge, AgentMessage, FLAG_CLOSE_STDIN, INPUT_STREAM_DATA, OUTPUT_STREAM_DATA, SizeData,
    handshake_complete, handshake_request, payload,
};
use crate::session::{Session, Sessions};

/// An unacknowledged message is sent again after this long (the plugin's own first RTO).
const RESEND_AFTER: Duration = Duration::from_millis(200);
const TICK: Duration = Duration::from_millis(50);
/// Output is read from the process only while fewer messages than this await their ack.
const WINDOW: usize = 256;
/// Largest output payload: the agent's own stream chunks are of this order.
const CHUNK: usize = 4096;
/// How long the output of an exited process may wait for its acks before the channel closes.
const DRAIN: Duration = Duration::from_secs(5);
/// The process starts when the client reports its terminal size (its handler is then ready
/// to print); a client that never does gets the default size after this long.
const SIZE_WAIT: Duration = Duration::from_secs(1);

/// Frames in and out of one connection. `incoming` ending means the client went away.
pub struct Connection {
    pub incoming: mpsc::Receiver<Vec<u8>>,
    pub outgoing: mpsc::Sender<Vec<u8>>,
    /// The client is Flotilla's own: it gets StdErr and ExitCode payloads and may close stdin.
    pub flotilla_client: bool,
    /// Flotilla's client asked for pipes instead of a terminal.
    pub pipes: bool,
}

/// How a connection ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The session is over (`channel_closed` sent); close the socket.
    Ended,
    /// The client went away; the session waits for ResumeSession.
    Detached,
}

/// A session's stream state; it outlives a connection so that a resumed one carries on.
#[derive(Default)]
pub struct Live {
    handshake_sent: bool,
    handshake_done: Option<Instant>,
    started: bool,
    channel: Option<ExecChannel>,
    /// Input that came before the process was started.
    pending: Vec<ExecInput>,
    size: Option<TermSize>,
    out_seq: i64,
    in_expected: i64,
    in_buffer: BTreeMap<i64, AgentMessage>,
    unacked: BTreeMap<i64, (Vec<u8>, Instant)>,
    exit: Option<(i32, Instant)>,
    transcript: Vec<u8>,
}

impl Live {
    pub(crate) fn started(&self) -> bool {
        self.started
    }
}

struct Closed;

impl Sessions {
    /// Serves `session` on `conn` until the session ends or the client goes away.
    pub async fn serve(&self, session: Arc<Session>, mut conn: Connection) -> Outcome {
        // A connection still serving the session is told to give way (it is detached).
        let mut live = loop {
            session.superseded.notify_waiters();
            if let Ok(live) = tokio::time::timeout(Duration::from_millis(100), session.live.lock()).await {
                break live;
            }
        };
        let mut terminate = session.terminate.subscribe();
        let outcome = match self.run(&session, &mut live, &mut conn, &mut terminate).await {
            Ok(o) => o,
            // Flotilla's client never resumes: its going away ends the session (and the process).
            Err(Closed) if conn.flotilla_client => Outcome::Ended,
            Err(Closed) => Outcome::Detached,
        };
        match outcome {
            Outcome::Ended => {
                self.remove(&session.id);
                // Ends the process if it still runs (terminated) and its channel with it.
                live.channel = None;
                self.record(&session, std::mem::take(&mut live.transcript)).await;
            }
            Outcome::Detached => session.mark_detached(true),
        }
        outcome
    }

    async fn run(
        &self,
        session: &Session,
        live: &mut Live,
        conn: &mut Connection,
        terminate: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Outcome, Closed> {
        if !live.handshake_sent {
            live.handshake_sent = true;
            self.send(live, conn, payload::HANDSHAKE_REQUEST, handshake_request()).await?;
        } else {
            // A resumed connection: what the last one did not see acknowledged goes again.
            for (bytes, _) in live.unacked.values() {
                conn.outgoing.send(bytes.clone()).await.map_err(|_| Closed)?;
            }
        }
        let handshake_started = Instant::now();
        let mut tick = tokio::time::interval(TICK);
        loop {
            let readable = live.channel.is_some() && live.exit.is_none() && live.unacked.len() < WINDOW;
            tokio::select! {
                frame = conn.incoming.recv() => {
                    let Some(frame) = frame else { return Err(Closed) };
                    if let Some(outcome) = self.on_frame(session, live, conn, &frame, handshake_started).await? {
                        return Ok(outcome);
                    }
                }
                output = recv(&mut live.channel), if readable => {
                    self.on_output(session, live, conn, output).await?;
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    for (bytes, sent) in live.unacked.values_mut() {
                        if now.duration_since(*sent) >= RESEND_AFTER {
                            *sent = now;
                            conn.outgoing.send(bytes.clone()).await.map_err(|_| Closed)?;
                        }
                    }
                    if !live.started
                        && live.handshake_done.is_some_and(|t| now.duration_since(t) >= SIZE_WAIT)
                        && let Some(outcome) = self.start(session, live, conn).await?
                    {
                        return Ok(outcome);
                    }
                }
                _ = session.superseded.notified() => return Err(Closed),
                _ = terminate.changed() => {
                    close(session, conn, "").await;
                    return Ok(Outcome::Ended);
                }
            }
            if let Some((_, at)) = live.exit
                && (live.unacked.is_empty() || at.elapsed() >= DRAIN)
            {
                close(session, conn, "").await;
                return Ok(Outcome::Ended);
            }
        }
    }

    async fn on_frame(
        &self,
        session: &Session,
        live: &mut Live,
        conn: &mut Connection,
        frame: &[u8],
        handshake_started: Instant,
    ) -> Result<Option<Outcome>, Closed> {
        let message = match AgentMessage::decode(frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(session = %session.id, error = %e, "unreadable data channel frame dropped");
                return Ok(None);
            }
        };
        match message.message_type.as_str() {
            ACKNOWLEDGE => {
                if let Ok(ack) = serde_json::from_slice::<Acknowledge>(&message.payload) {
                    live.unacked.remove(&ack.acknowledged_message_sequence_number);
                }
                Ok(None)
            }
            INPUT_STREAM_DATA => {
                // Every copy is acked: the client resends until one of our acks arrives.
                conn.outgoing.send(message.ack().encode()).await.map_err(|_| Closed)?;
                let seq = message.sequence_number;
                if seq < live.in_expected {
                    return Ok(None);
                }
                live.in_buffer.insert(seq, message);
                while let Some(next) = live.in_buffer.remove(&live.in_expected) {
                    live.in_expected += 1;
                    if let Some(outcome) = self.on_input(session, live, conn, next, handshake_started).await? {
                        return Ok(Some(outcome));
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    async fn on_input(
        &self,
        session: &Session,
        live: &mut Live,
        conn: &mut Connection,
        message: AgentMessage,
        handshake_started: Instant,
    ) -> Result<Option<Outcome>, Closed> {
        let input = match message.payload_type {
            payload::HANDSHAKE_RESPONSE => {
                if live.handshake_done.is_none() {
                    live.handshake_done = Some(Instant::now());
                    let done = handshake_complete(handshake_started.elapsed());
                    self.send(live, conn, payload::HANDSHAKE_COMPLETE, done).await?;
                }
                return Ok(None);
            }
            payload::OUTPUT => ExecInput::Stdin(message.payload),
            payload::SIZE => {
                let Ok(size) = serde_json::from_slice::<SizeData>(&message.payload) else {
                    return Ok(None);
                };
                let size = TermSize { cols: size.cols, rows: size.rows };
                if !live.started {
                    live.size = Some(size);
                    return self.start(session, live, conn).await;
                }
                ExecInput::Resize(size)
            }
            payload::FLAG => {
                let flag = message.payload.get(..4).map(|b| u32::from_be_bytes(b.try_into().unwrap_or_default()));
                match flag {
                    Some(FLAG_CLOSE_STDIN) if conn.flotilla_client => ExecInput::CloseStdin,
                    // TerminateSession, sent by a port session's client.
                    Some(2) => {
                        close(session, conn, "").await;
                        return Ok(Some(Outcome::Ended));
                    }
                    _ => return Ok(None),
                }
            }
            _ => return Ok(None),
        };
        match &live.channel {
            Some(channel) => {
                // The process may have exited: its output tells, so a failed send is not an error.
                let _ = channel.input.send(input).await;
            }
            None => live.pending.push(input),
        }
        Ok(None)
    }

    /// Starts the process on the task's host, once the handshake is over.
    async fn start(
        &self,
        session: &Session,
        live: &mut Live,
        conn: &mut Connection,
    ) -> Result<Option<Outcome>, Closed> {
        if live.started || live.handshake_done.is_none() {
            return Ok(None);
        }
        live.started = true;
        let mut request = session.spec.request.clone();
        request.size = live.size;
        if conn.flotilla_client && conn.pipes {
            request.tty = false;
        }
        let started = match self.targets.get(&session.spec.host_id) {
            Some(target) => target.exec(request).await.map_err(|e| e.to_string()),
            None => Err(format!("the task's host {} cannot run commands now", session.spec.host_id)),
        };
        match started {
            Ok(channel) => {
                for input in live.pending.drain(..) {
                    let _ = channel.input.send(input).await;
                }
                live.channel = Some(channel);
                Ok(None)
            }
            Err(message) => {
                tracing::info!(session = %session.id, error = %message, "exec could not start");
                close(session, conn, &message).await;
                Ok(Some(Outcome::Ended))
            }
        }
    }

    async fn on_output(
        &self,
        session: &Session,
        live: &mut Live,
        conn: &mut Connection,
        output: ExecOutput,
    ) -> Result<(), Closed> {
        let (kind, bytes) = match output {
            ExecOutput::Stdout(b) => (payload::OUTPUT, b),
            ExecOutput::Stderr(b) if conn.flotilla_client => (payload::STDERR, b),
            ExecOutput::Stderr(b) => (payload::OUTPUT, b),
            ExecOutput::Exit(code) => {
                live.exit = Some((code, Instant::now()));
                if conn.flotilla_client {
                    self.send(live, conn, payload::EXIT_CODE, code.to_be_bytes().to_vec()).await?;
                }
                return Ok(());
            }
        };
        if self.logs.is_some() && session.spec.log_group.is_some() {
            live.transcript.extend_from_slice(&bytes);
        }
        for chunk in bytes.chunks(CHUNK) {
            self.send(live, conn, kind, chunk.to_vec()).await?;
        }
        Ok(())
    }

    /// Sends one sequenced output message and keeps it until it is acknowledged.
    async fn send(&self, live: &mut Live, conn: &Connection, kind: u32, body: Vec<u8>) -> Result<(), Closed> {
        let seq = live.out_seq;
        live.out_seq += 1;
        let bytes = AgentMessage::stream(OUTPUT_STREAM_DATA, seq, kind, body).encode();
        live.unacked.insert(seq, (bytes.clone(), Instant::now()));
        conn.outgoing.send(bytes).await.map_err(|_| Closed)
    }

    /// Writes the session's output to its log stream, a line an event.
    async fn record(&self, session: &Session, transcript: Vec<u8>) {
        let (Some(logs), Some(group)) = (&self.logs, &session.spec.log_group) else {
            return;
        };
        let now = flotilla_types::Timestamp::now().0;
        let text = String::from_utf8_lossy(&transcript);
        let events: Vec<InputEvent> = text
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .map(|l| InputEvent::new(now, l))
            .collect();
        let written = async {
            logs.ensure_stream(group, &session.id).await?;
            logs.append(group, &session.id, events).await
        };
        if let Err(e) = written.await {
            tracing::warn!(session = %session.id, group = %group, error = %e, "session output not logged");
        }
    }
}

/// The next output, or an exit once the host's stream ends without one.
async fn recv(channel: &mut Option<ExecChannel>) -> ExecOutput {
    match channel.as_mut() {
        Some(c) => c.output.recv().await.unwrap_or(ExecOutput::Exit(255)),
        None => std::future::pending().await,
    }
}

async fn close(session: &Session, conn: &Connection, output: &str) {
    let _ = conn.outgoing.send(AgentMessage::channel_closed(&session.id, output).encode()).await;
}
