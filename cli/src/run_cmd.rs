//! `flwr run [APP_DIR] [FEDERATION] [--run-config "k=v ..."] [--stream] [--format ...]
//! [--profile ...] [--output-dir DIR]`.
//!
//! A built-in app (`apps/digits`) runs as a local simulation in this process for a
//! federation without `address`, or is submitted to a SuperLink (see `submit`) for one
//! with it. A user's app (a Cargo crate, as `flwr new` makes) is built first (see
//! `build_cmd`): a local simulation runs the app's own binary in its `simulation` mode,
//! which ends in `floret_app::simulate`; a SuperLink receives the app as a FAB.
//!
//! A Flower app in Python (components `pkg.module:attr`, no Cargo.toml) runs in the
//! user's Python through `floret-python` (see `python_cmd`).
//!
//! A run that `flwr` follows to its end (every local simulation, `--stream` on a
//! SuperLink) leaves its history files behind (see `run_report`).

use crate::build_cmd::{self, CacheArgs, Profile};
use crate::project::Project;
use crate::registry::BuiltinCatalog;
use crate::report::Format;
use crate::run_report::Destination;
use crate::{UserError, python_cmd, registry, submit};
use anyhow::Context as _;
use floret_core::AppCatalog;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use floret_app::simulate::{Output, Prepared, app_ref, prepare, simulate};

/// Flags of `flwr run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The app's directory, holding its pyproject.toml.
    #[arg(default_value = ".")]
    pub app_dir: PathBuf,
    /// A federation of [tool.flwr.federations]; defaults to the one named by `default`.
    pub federation: Option<String>,
    /// Run-config overrides as TOML values: "num-server-rounds=5 lr=0.1 name='a b'". A key
    /// repeated within one flag is an error; a later flag overrides an earlier one.
    #[arg(long = "run-config", short = 'c', value_name = "K=V ...")]
    pub run_config: Vec<String>,
    /// Follow the run's logs until it ends (a local simulation always does; on a SuperLink,
    /// Ctrl-C detaches and the run goes on).
    #[arg(long)]
    pub stream: bool,
    /// Output format of the final report.
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
    /// Cargo profile a user's app crate is built with (built-in apps ignore it).
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    pub profile: Profile,
    /// Where a user's app crate is built (see `flwr build --help`).
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Where the run's history.json, history.csv and metrics.svg go; default a new
    /// APP_DIR/runs/<UTC time>-run-<id>/ per run. Not used when the command only submits.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// The Python that runs a Flower app written in Python (it needs `flwr` and the app's
    /// own dependencies) [default: python3 on PATH].
    #[arg(long, env = "FLORET_PYTHON", value_name = "PATH")]
    pub python: Option<PathBuf>,
}

impl RunArgs {
    /// Where and how a local simulation of this command reports (`--format`, `--output-dir`).
    pub(crate) fn output(&self) -> Output<'_> {
        Output {
            format: self.format,
            dir: self.output_dir.as_deref(),
        }
    }
}

/// Runs the app and returns the process exit code.
pub async fn execute(args: RunArgs) -> anyhow::Result<i32> {
    let prepared = prepare(
        &args.app_dir,
        args.federation.as_deref(),
        &args.run_config,
        "flwr run",
    )?;
    if python_cmd::is_python_app(&args, &prepared) {
        return python_cmd::execute(&args, prepared).await;
    }
    if is_app_crate(&args.app_dir, &prepared.project) {
        return run_app_crate(&args, prepared).await;
    }
    let Prepared {
        project,
        federation,
        run_config,
    } = prepared;
    if federation.address.is_some() {
        return submit::execute(&args, &project, &federation, run_config, None).await;
    }
    let (server_app, client_app) = registry::resolve(&BuiltinCatalog, &project.manifest)
        .map_err(|e| {
            UserError::new(format!(
                "{e}, or make your own app with `flwr new NAME` (an app directory with a Cargo.toml)"
            ))
        })?;
    simulate(
        &project,
        &federation,
        run_config,
        args.output(),
        server_app,
        client_app,
    )
    .await
}

/// A user's app: a Cargo crate whose components are not built into this binary. Built-in
/// apps have a Cargo.toml too (`apps/digits`), and keep running in-process.
fn is_app_crate(app_dir: &Path, project: &Project) -> bool {
    let manifest = &project.manifest;
    let builtin = BuiltinCatalog.server_app(&manifest.serverapp).is_some()
        && BuiltinCatalog.client_app(&manifest.clientapp).is_some();
    !builtin && app_dir.join("Cargo.toml").is_file()
}

/// Builds the app crate, then runs its binary's simulation mode (output and exit code
/// pass through) or submits its FAB to the federation's SuperLink.
async fn run_app_crate(args: &RunArgs, prepared: Prepared) -> anyhow::Result<i32> {
    if prepared.federation.address.is_none() {
        // The app binary checks it again; checking first spares a build for nothing.
        Destination::prepare(args.output_dir.as_deref(), prepared.project.dir())?;
    }
    let binary =
        build_cmd::cargo_build(&args.app_dir, &prepared.project, args.profile, &args.cache)?;
    if prepared.federation.address.is_some() {
        let fab = build_cmd::pack(&prepared.project, &binary)?;
        return submit::execute(
            args,
            &prepared.project,
            &prepared.federation,
            prepared.run_config,
            Some(fab),
        )
        .await;
    }
    let mut command = Command::new(&binary);
    command
        .arg("simulation")
        .arg(&args.app_dir)
        .arg(&prepared.federation.name);
    for overrides in &args.run_config {
        command.arg("--run-config").arg(overrides);
    }
    command.arg("--format").arg(match args.format {
        Format::Default => "default",
        Format::Json => "json",
    });
    if let Some(dir) = &args.output_dir {
        command.arg("--output-dir").arg(dir);
    }
    let mut child = tokio::process::Command::from(command)
        .spawn()
        .with_context(|| format!("cannot start the app's binary {}", binary.display()))?;
    // Ctrl-C at a terminal reaches the whole foreground process group: the app's binary
    // writes the history of its finished rounds and exits 130. `flwr` outlives it, so the
    // shell's prompt comes back after the binary's last line and with its exit code.
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = tokio::signal::ctrl_c() => {
                if signal.is_err() {
                    break child.wait().await;
                }
            }
        }
    }
    .with_context(|| format!("lost the app's binary {}", binary.display()))?;
    match status.code() {
        Some(code) => Ok(code),
        None => Err(anyhow::anyhow!(
            "the app's binary {} was killed ({status})",
            binary.display()
        )),
    }
}
