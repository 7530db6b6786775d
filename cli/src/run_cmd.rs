//! `flwr run [APP_DIR] [FEDERATION] [--run-config "k=v ..."] [--stream] [--format ...]
//! [--profile ...] [--output-dir DIR]`.
//!
//! A built-in app (`apps/digits`) runs as a local simulation in this process for a
//! federation without `address`, or is submitted to a SuperLink (see `submit`) for one
//! with it. A user's app (a Cargo crate, as `flwr new` makes) is built first (see
//! `build_cmd`): a local simulation runs the app's own binary in its `simulation` mode,
//! which ends in `simulate` below; a SuperLink receives the app as a FAB.
//!
//! A run that `flwr` follows to its end (every local simulation, `--stream` on a
//! SuperLink) leaves its history files behind (see `run_report`).

use crate::build_cmd::{self, Profile};
use crate::project::Project;
use crate::registry::BuiltinCatalog;
use crate::report::{Ending, Format, HistoryTarget, Reporter};
use crate::run_report::Destination;
use crate::{UserError, exit_code, registry, submit};
use anyhow::Context as _;
use floret_actors::state::SimulationStore;
use floret_actors::{MemoryLinkState, RunStatus, SubStatus};
use floret_core::run_config::{apply_overrides, parse_overrides_many};
use floret_core::{AppCatalog, AppRef, ClientApp, Federation, ServerApp, UserConfig};
use floret_simulation::{SimulationError, SimulationOptions, SimulationRun};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use tokio::time::Instant;

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
    /// Where the run's history.json, history.csv and metrics.svg go; default a new
    /// APP_DIR/runs/<UTC time>-run-<id>/ per run. Not used when the command only submits.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

/// An app directory read for a run: its manifest, the chosen federation, and the run
/// config with the user's overrides applied and checked against the manifest's keys.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The app directory and its manifest.
    pub project: Project,
    /// The federation chosen by name or by the manifest's `default`.
    pub federation: Federation,
    /// The manifest's run config with the overrides applied.
    pub run_config: UserConfig,
}

/// Reads `app_dir` and checks the federation and run-config overrides; `command` shapes
/// the hint when `pyproject.toml` is missing.
pub fn prepare(
    app_dir: &Path,
    federation: Option<&str>,
    run_config: &[String],
    command: &str,
) -> anyhow::Result<Prepared> {
    let project = Project::load(app_dir, command)?;
    let manifest = &project.manifest;
    let federation = manifest
        .federation(federation)
        .map_err(|e| UserError::new(e.to_string()))?
        .clone();
    let overrides = parse_overrides_many(run_config)
        .map_err(|e| UserError::new(format!("--run-config: {e}")))?;
    let run_config = apply_overrides(&manifest.config, &overrides)
        .map_err(|e| UserError::new(format!("--run-config: {e}")))?;
    Ok(Prepared {
        project,
        federation,
        run_config,
    })
}

/// Runs the app and returns the process exit code.
pub async fn execute(args: RunArgs) -> anyhow::Result<i32> {
    let prepared = prepare(
        &args.app_dir,
        args.federation.as_deref(),
        &args.run_config,
        "flwr run",
    )?;
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
        Output {
            format: args.format,
            dir: args.output_dir.as_deref(),
        },
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
    let binary = build_cmd::cargo_build(&args.app_dir, &prepared.project, args.profile)?;
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
    let status = command
        .status()
        .with_context(|| format!("cannot start the app's binary {}", binary.display()))?;
    match status.code() {
        Some(code) => Ok(code),
        None => Err(anyhow::anyhow!(
            "the app's binary {} was killed ({status})",
            binary.display()
        )),
    }
}

/// The app's reference as runs record it (built-in apps have no bundle hash).
pub fn app_ref(project: &Project) -> AppRef {
    let manifest = &project.manifest;
    AppRef {
        name: manifest.name.clone(),
        serverapp: manifest.serverapp.clone(),
        clientapp: manifest.clientapp.clone(),
        fab_hash: String::new(),
    }
}

/// How a simulation reports: the console format and `--output-dir`.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    /// `--format`.
    pub format: Format,
    /// `--output-dir`; `None`: a new directory under the app's `runs/`.
    pub dir: Option<&'a Path>,
}

/// Runs `server_app` and `client_app` on a local simulation of `federation`, reporting as
/// `output` says; returns the exit code. Shared by `flwr run` (built-in apps) and the
/// simulation mode of a user's app binary.
pub async fn simulate(
    project: &Project,
    federation: &Federation,
    run_config: UserConfig,
    output: Output<'_>,
    server_app: Arc<dyn ServerApp>,
    client_app: ClientApp,
) -> anyhow::Result<i32> {
    let format = output.format;
    let manifest = &project.manifest;
    let num_supernodes = federation.options.num_supernodes.ok_or_else(|| {
        UserError::new(format!(
            "federation {:?} has no options.num-supernodes: add options.num-supernodes = 10",
            federation.name
        ))
    })?;
    server_app
        .check_config(&run_config)
        .map_err(|e| UserError::new(format!("{}: {e}", project.manifest_path.display())))?;
    let options = SimulationOptions {
        num_supernodes,
        num_cpus: federation.options.client_resources.num_cpus,
        num_gpus: federation.options.client_resources.num_gpus,
    };
    let run = SimulationRun {
        app: app_ref(project),
        federation: federation.name.clone(),
        run_config,
        server_app,
        client_app,
    };
    if options.num_gpus > 0.0 {
        tracing::info!(
            num_gpus = options.num_gpus,
            "client-resources.num-gpus recorded; the built-in runtime schedules CPUs only"
        );
    }
    let destination = Destination::prepare(output.dir, project.dir())?;
    let mut reporter = Reporter::new(format).with_history(HistoryTarget {
        destination,
        app: manifest.name.clone(),
        federation: federation.name.clone(),
    });
    if format == Format::Default {
        eprintln!(
            "running {} on {} ({} virtual SuperNodes, {} at a time)",
            manifest.name,
            federation.name,
            num_supernodes,
            options.workers()
        );
        let chaos = &federation.options.chaos;
        if !chaos.is_off() {
            eprintln!(
                "chaos: dropout-rate {}, straggler-rate {}, latency {:?} + up to {:?} jitter, seed {}",
                chaos.dropout_rate,
                chaos.straggler_rate,
                chaos.latency,
                chaos.latency_jitter,
                chaos.seed
            );
        }
    }
    let started = Instant::now();
    let state: Arc<dyn SimulationStore> = Arc::new(MemoryLinkState::for_simulation());
    let chaos = &federation.options.chaos;
    let finished = {
        let simulation = floret_simulation::run_with(&options, chaos, state.clone(), run, |e| {
            reporter.on_event(e);
        });
        tokio::select! {
            outcome = simulation => Some(outcome),
            // Listening fails only where no signal handler can be installed: run on.
            Ok(()) = tokio::signal::ctrl_c() => None,
        }
    };
    let Some(outcome) = finished else {
        // Ctrl-C: the simulation is dropped mid-round; the rounds it finished are kept.
        let run_id = state.runs().iter().map(|r| r.run_id).max().unwrap_or(0);
        eprintln!("stopped by Ctrl-C");
        reporter.stop_early(Ending {
            run_id,
            status: RunStatus::Finished(SubStatus::Stopped),
            reason: "stopped by Ctrl-C",
            wall: started.elapsed(),
        });
        return Ok(exit_code::DETACHED);
    };
    let outcome = outcome.map_err(|e| match e {
        SimulationError::Options(msg) => anyhow::Error::from(UserError::new(msg)),
        other => anyhow::Error::from(other),
    })?;
    reporter.finish(Ending {
        run_id: outcome.run_id,
        status: outcome.status,
        reason: &outcome.reason,
        wall: started.elapsed(),
    });
    Ok(match outcome.status {
        RunStatus::Finished(SubStatus::Completed) => exit_code::OK,
        _ => exit_code::RUN_FAILED,
    })
}
