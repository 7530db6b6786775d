//! `flwr log RUN_ID [APP_DIR] [FEDERATION] [--stream | --show]`: a run's log from a
//! SuperLink as text, one line per log entry and per finished round. `--stream` (the
//! default, as in Flower) follows it until the run ends; `--show` prints what was logged
//! so far and exits.

use crate::exit_code;
use crate::follow::{Followed, follow};
use crate::project::Project;
use crate::remote::Remote;
use crate::report::summary_line;
use floret_core::RunEvent;
use std::path::PathBuf;

/// Flags of `flwr log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The run, as `flwr run` printed it or `flwr ls` lists it.
    pub run_id: u64,
    /// The app's directory, holding the pyproject.toml that names the federation.
    #[arg(default_value = ".")]
    pub app_dir: PathBuf,
    /// A federation with an address; defaults to the one named by `default`.
    pub federation: Option<String>,
    /// Follow the log until the run ends (the default).
    #[arg(long, conflicts_with = "show")]
    pub stream: bool,
    /// Print what was logged so far and exit.
    #[arg(long)]
    pub show: bool,
}

/// Prints the run's log to stdout (following it unless `--show`), then its final status on
/// stderr; returns the exit code, `DETACHED` after Ctrl-C.
pub async fn execute(args: LogArgs) -> anyhow::Result<i32> {
    let project = Project::load(&args.app_dir, "flwr log RUN_ID")?;
    let remote = Remote::from_project(&project, args.federation.as_deref(), "flwr log")?;
    let control = remote.connect().await?;
    // Asking first turns an unknown id into its own clear error before any output.
    control
        .get_run(args.run_id)
        .await
        .map_err(|e| remote.error(e))?;
    let followed = follow(control.as_ref(), args.run_id, !args.show, |event| {
        if let Some(line) = event_line(event) {
            // A closed pipe (`flwr log 1 --stream | head`) ends the command quietly.
            crate::outln!("{line}");
        }
    })
    .await
    .map_err(|e| remote.error(e))?;
    if followed == Followed::Detached {
        return Ok(exit_code::DETACHED);
    }
    let info = control
        .get_run(args.run_id)
        .await
        .map_err(|e| remote.error(e))?;
    let mut status = format!("run {} {}", args.run_id, info.status);
    if !info.reason.is_empty() {
        status.push_str(&format!(": {}", info.reason));
    }
    eprintln!("{status}");
    Ok(exit_code::OK)
}

/// A run event as a line of text; round starts are left out, the strategy logs them.
pub fn event_line(event: &RunEvent) -> Option<String> {
    match event {
        RunEvent::Log(line) => Some(line.clone()),
        RunEvent::RoundStarted { .. } => None,
        RunEvent::RoundFinished(summary) => Some(format!(
            "round {} done: {}",
            summary.round,
            summary_line(summary)
        )),
    }
}
