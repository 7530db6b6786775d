//! `flwr stop RUN_ID [APP_DIR] [FEDERATION]`: ends a run on a SuperLink as
//! finished:stopped.

use crate::exit_code;
use crate::project::Project;
use crate::remote::Remote;
use std::path::PathBuf;

/// Flags of `flwr stop`.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// The run to stop, as `flwr ls` lists it.
    pub run_id: u64,
    /// The app's directory, holding the pyproject.toml that names the federation.
    #[arg(default_value = ".")]
    pub app_dir: PathBuf,
    /// A federation with an address; defaults to the one named by `default`.
    pub federation: Option<String>,
}

/// Asks the federation's SuperLink to stop the run; returns the exit code.
pub async fn execute(args: StopArgs) -> anyhow::Result<i32> {
    let project = Project::load(&args.app_dir, "flwr stop RUN_ID")?;
    let remote = Remote::from_project(&project, args.federation.as_deref(), "flwr stop")?;
    let control = remote.connect().await?;
    control
        .stop_run(args.run_id)
        .await
        .map_err(|e| remote.error(e))?;
    crate::outln!("stopped run {}", args.run_id);
    Ok(exit_code::OK)
}
