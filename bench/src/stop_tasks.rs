//! `stop-tasks ENDPOINT`: stops every running task of the default cluster and waits until all
//! tasks (those and any already stopping) are STOPPED, so that a benchmark interrupted half-way leaves no sandbox behind when its
//! `flotilla up` goes away (tasks outlive the server by design).

use std::time::Duration;

use anyhow::bail;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 2 {
        bail!("usage: stop-tasks ENDPOINT");
    }
    let client = flotilla_bench::client(&args[1])?;
    flotilla_bench::stop_everything(&client, Duration::from_secs(60)).await?;
    Ok(())
}
