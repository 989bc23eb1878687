//! ECS Exec test helpers: AWS's plugin, a client that keeps stdin open, a bare data channel.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;

/// The directory of AWS's session-manager-plugin: `FLOTILLA_SSM_PLUGIN` (the binary), else
/// `shared/tools` beside the repository, else `PATH`. Missing is a failure, not a skip.
pub fn plugin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FLOTILLA_SSM_PLUGIN") {
        return PathBuf::from(p).parent().unwrap().to_owned();
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tools");
    if beside.join("session-manager-plugin").exists() {
        return beside;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("session-manager-plugin").exists() {
            return dir;
        }
    }
    panic!("AWS's session-manager-plugin is needed: set FLOTILLA_SSM_PLUGIN, or put it in ../shared/tools or on PATH");
}

/// Runs `child` to its end within `deadline`, feeding `stdin` and keeping it open until then.
pub fn run_with_open_stdin(mut command: Command, stdin: &[u8], deadline: Duration) -> Output {
    let mut child = command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("timed out: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// Opens the data channel of `url` with `token` and returns the first answer: a binary
/// frame (the handshake) or the close frame's reason.
pub async fn first_answer(url: &str, token: &str) -> Result<Vec<u8>, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = json!({"MessageSchemaVersion": "1.0", "RequestId": "r", "TokenValue": token, "ClientId": "c"});
    ws.send(tokio_tungstenite::tungstenite::Message::Text(open.to_string().into())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("an answer") {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => Ok(b.to_vec()),
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(frame))) => {
            Err(frame.map(|f| f.reason.to_string()).unwrap_or_default())
        }
        other => Err(format!("{other:?}")),
    }
}

impl super::Server {
    /// `aws ecs execute-command --interactive` with AWS's plugin on PATH, stdin kept open.
    pub fn execute_command(&self, cluster: &str, task: &str, container: &str, command: &str) -> Output {
        let mut path = plugin_dir().into_os_string();
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        let mut aws = self.aws_command();
        aws.env("PATH", path)
            .args(["ecs", "execute-command", "--cluster", cluster, "--task", task, "--container", container])
            .args(["--interactive", "--command", command]);
        run_with_open_stdin(aws, b"", Duration::from_secs(60))
    }

    /// `flotilla exec` against this server (not yet run).
    pub fn flotilla_exec(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        command
            .arg("exec")
            .args(args)
            .env("FLOTILLA_ENDPOINT", self.endpoint())
            .env("FLOTILLA_ACCESS_KEY_ID", super::ACCESS_KEY)
            .env("FLOTILLA_SECRET_ACCESS_KEY", super::SECRET_KEY)
            .env("FLOTILLA_DATA_DIR", &self.data_dir);
        command
    }
}
