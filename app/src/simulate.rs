//! The run a user's app binary and `flwr run` share: an app directory read for a run
//! (`prepare`), and a local simulation of it reported as `flwr run` reports (`simulate`).

use crate::project::Project;
use crate::report::{Ending, Format, HistoryTarget, Reporter};
use crate::run_report::Destination;
use crate::{UserError, exit_code};
use floret_actors::state::SimulationStore;
use floret_actors::{MemoryLinkState, RunStatus, SubStatus};
use floret_core::run_config::{apply_overrides, parse_overrides_many};
use floret_core::{AppRef, ClientApp, Federation, ServerApp, UserConfig};
use floret_simulation::SimulationRun;
use floret_simulation::{SimulationError, SimulationOptions};
use std::path::Path;
use std::sync::Arc;
use tokio::time::Instant;

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
        // The faults drawn per message; Byzantine nodes have a line of their own, from the
        // simulation, that says how many of the fleet attack.
        let chaos = &federation.options.chaos;
        let per_message = chaos.dropout_rate > 0.0
            || chaos.straggler_rate > 0.0
            || !chaos.latency.is_zero()
            || !chaos.latency_jitter.is_zero();
        if per_message {
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
