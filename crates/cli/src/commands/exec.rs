//! `flotilla exec TASK [--container NAME] [-i] [-t] -- CMD...`: ECS Exec's session, natively.
//! The command runs in the container through ExecuteCommand and the same data channel that
//! AWS's plugin speaks; Flotilla's client also gets the command's exit status (and, without
//! `-t`, its stderr apart), so `flotilla exec` exits with it.

use std::io::{Read, Write};

use anyhow::{Context, bail};
use flotilla_cli::client::Client;
use flotilla_exec::{ClientEvent, ClientInput, open_data_channel, run_client};
use flotilla_host::exec::TermSize;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// What `flotilla exec` was asked.
pub struct ExecArgs {
    pub cluster: Option<String>,
    pub task: String,
    pub container: Option<String>,
    pub interactive: bool,
    pub tty: bool,
    pub command: Vec<String>,
}

/// The local terminal in raw mode while the session runs; restored on drop.
struct RawMode(libc::termios);

impl RawMode {
    fn enter() -> Option<RawMode> {
        // SAFETY: termios is plain data; tcgetattr fills it or fails (stdin not a terminal).
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a valid termios pointer.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: a valid termios pointer.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: fd 0 and a valid termios pointer.
        (unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) } == 0).then_some(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: fd 0 and the termios saved from it.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

/// The local terminal's size, if stdin or stdout is one.
fn terminal_size() -> Option<TermSize> {
    for fd in [1, 0] {
        // SAFETY: winsize is plain data and TIOCGWINSZ fills it or fails.
        let mut w: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd number and a valid winsize pointer.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut w) } == 0 && w.ws_col > 0 {
            return Some(TermSize { cols: w.ws_col, rows: w.ws_row });
        }
    }
    None
}

/// Runs the command; returns its exit status.
pub async fn run(client: &Client, args: ExecArgs) -> anyhow::Result<i32> {
    if args.command.is_empty() {
        bail!("give the command to run after `--`, e.g. `flotilla exec TASK -it -- sh`");
    }
    let line = flotilla_exec::join_command(&args.command).context("the command holds a NUL byte")?;
    let mut body = json!({ "task": args.task, "command": line, "interactive": true });
    if let Some(c) = &args.cluster {
        body["cluster"] = json!(c);
    }
    if let Some(c) = &args.container {
        body["container"] = json!(c);
    }
    let answer = client.call("ecs", "AmazonEC2ContainerServiceV20141113.ExecuteCommand", &body).await?;
    let session = &answer["session"];
    let (Some(url), Some(token)) = (session["streamUrl"].as_str(), session["tokenValue"].as_str()) else {
        bail!("the server's ExecuteCommand answer has no session");
    };
    // Nagle off: the channel's frames are small and answered one by one.
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::Text(open_data_channel(token, args.tty).into())).await.context("data channel closed")?;

    let (to_client, incoming) = mpsc::channel::<Vec<u8>>(64);
    let (outgoing, mut to_socket) = mpsc::channel::<Vec<u8>>(64);
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Binary(b) = message
                && to_client.send(b.to_vec()).await.is_err()
            {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(frame) = to_socket.recv().await {
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });

    let (input, input_rx) = mpsc::channel::<ClientInput>(16);
    let (events_tx, mut events) = mpsc::channel::<ClientEvent>(64);
    let size = if args.tty { terminal_size() } else { None };
    let session = tokio::spawn(run_client(incoming, outgoing, input_rx, events_tx, size));
    let raw = if args.tty { RawMode::enter() } else { None };
    forward_stdin(input.clone(), args.interactive);
    if args.tty {
        forward_resizes(input);
    }

    let mut status = None;
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut why = String::new();
    while let Some(event) = events.recv().await {
        match event {
            ClientEvent::Stdout(b) => {
                stdout.write_all(&b)?;
                stdout.flush()?;
            }
            ClientEvent::Stderr(b) => {
                stderr.write_all(&b)?;
                stderr.flush()?;
            }
            ClientEvent::Exit(code) => status = Some(code),
            ClientEvent::Closed(message) => {
                why = message;
                break;
            }
        }
    }
    drop(raw);
    if let Ok(Err(e)) = session.await {
        bail!("{e}");
    }
    match status {
        Some(code) => Ok(code),
        None if !why.is_empty() => bail!("{why}"),
        None => bail!("the session ended without the command's exit status"),
    }
}

/// Copies stdin into the session (with `-i`), then says it is closed. A thread, since a read
/// of a terminal cannot be cancelled; the process exits under it when the session ends.
fn forward_stdin(input: mpsc::Sender<ClientInput>, interactive: bool) {
    std::thread::spawn(move || {
        if interactive {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 4096];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.blocking_send(ClientInput::Stdin(buf[..n].to_vec())).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        let _ = input.blocking_send(ClientInput::CloseStdin);
    });
}

/// Sends the terminal's new size on every SIGWINCH.
fn forward_resizes(input: mpsc::Sender<ClientInput>) {
    let Ok(mut winch) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()) else {
        return;
    };
    tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some(size) = terminal_size()
                && input.send(ClientInput::Resize(size)).await.is_err()
            {
                return;
            }
        }
    });
}
