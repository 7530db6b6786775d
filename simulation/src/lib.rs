//! floret-simulation: a whole federation in one process.
//!
//! The same SuperLink, Run and ServerApp actors as a deployment, with the fleet side
//! replaced by a virtual fleet of N node identities and a worker pool sized by
//! `options.backend.client-resources.num-cpus`. Messages move as Rust values over the
//! in-memory `LinkState`, so model data is shared (`Bytes`, `Arc`) and never copied.
//! `LinkFleets` gives the runs of a `flower-superlink --simulation` the same virtual fleet
//! (see `link_fleets`). Depends on floret-actors and floret-core; not on any transport.

mod byzantine;
pub mod chaos;
mod fleet;
mod link_fleets;
pub mod node_ids;
pub mod pace;

pub use chaos::{Chaos, Fault};
pub use floret_core::ChaosOptions;
pub use link_fleets::{LinkFleets, process_grid};

use fleet::{FleetArgs, VirtualFleet};
use floret_actors::state::SimulationStore;
use floret_actors::{
    LinkState, MemoryLinkState, NewRun, RunStatus, StateError, SuperLink, SuperLinkMsg,
};
use floret_core::{
    AppError, AppRef, ClientApp, Context, Grid, ModelSize, RunEvent, ServerApp, UserConfig,
};
use ractor::{Actor, call};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::Semaphore;

/// The federation's `options.*`, as read from `pyproject.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulationOptions {
    /// How many virtual SuperNodes the fleet has (`options.num-supernodes`); at least 1.
    /// Their ids come from `node_ids`, so the count costs no per-node memory.
    pub num_supernodes: u64,
    /// CPUs one ClientApp call may use; concurrency is available cores / num_cpus.
    pub num_cpus: f64,
    /// Accepted and recorded; the built-in runtime does not schedule GPUs.
    pub num_gpus: f64,
}

impl SimulationOptions {
    /// How many ClientApp calls run at once.
    pub fn workers(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ((cores as f64 / self.num_cpus).floor() as usize).max(1)
    }

    pub(crate) fn validate(&self) -> Result<(), SimulationError> {
        if self.num_supernodes == 0 {
            return Err(SimulationError::Options(
                "options.num-supernodes must be at least 1: set options.num-supernodes = 10".into(),
            ));
        }
        if !(self.num_cpus.is_finite() && self.num_cpus > 0.0) {
            return Err(SimulationError::Options(format!(
                "options.backend.client-resources.num-cpus must be a positive number (got {}): set it to 1",
                self.num_cpus
            )));
        }
        if !(self.num_gpus.is_finite() && self.num_gpus >= 0.0) {
            return Err(SimulationError::Options(format!(
                "options.backend.client-resources.num-gpus must be 0 or more (got {})",
                self.num_gpus
            )));
        }
        Ok(())
    }
}

/// The app and configuration of one simulated run.
pub struct SimulationRun {
    /// The app as the run records it: its name and component strings.
    pub app: AppRef,
    /// The name of the `pyproject.toml` federation the run was started through.
    pub federation: String,
    /// The app's run config with the user's overrides applied.
    pub run_config: UserConfig,
    /// The ServerApp the run's actor drives.
    pub server_app: Arc<dyn ServerApp>,
    /// The ClientApp every virtual node calls; one instance shared by the worker pool.
    pub client_app: ClientApp,
}

/// How a simulated run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The id the in-process SuperLink gave the run.
    pub run_id: u64,
    /// The run's final status, always a finished one.
    pub status: RunStatus,
    /// Why the run failed or was stopped; empty when it completed.
    pub reason: String,
}

/// Why a simulation could not run to its end. A run that started and then failed is not
/// an error here but an [`Outcome`] with a failed status.
#[derive(Debug, Error)]
pub enum SimulationError {
    /// An option is out of range; the message names the `options.*` key and a fix.
    #[error("{0}")]
    Options(String),
    /// The fleet or SuperLink actor could not be spawned, or the SuperLink refused to
    /// start the run.
    #[error("could not start the simulation's actors: {0}")]
    Spawn(String),
    /// The in-memory state refused an operation while following the run.
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs one app on a fresh in-process federation, calling `on_event` for every run event
/// in order, and returns when the run has finished.
pub async fn run(
    options: &SimulationOptions,
    run: SimulationRun,
    on_event: impl FnMut(&RunEvent),
) -> Result<Outcome, SimulationError> {
    let state: Arc<dyn SimulationStore> = Arc::new(MemoryLinkState::for_simulation());
    run_with(options, &ChaosOptions::default(), state, run, on_event).await
}

/// `run` with the faults of `chaos` injected (`options.chaos.*`, see `chaos`), on the
/// in-memory state the caller gives (fresh and empty), so that a test can watch what it
/// holds.
/// A separate function rather than fields of `SimulationOptions`, so that code building
/// options for a fault-free run does not change.
pub async fn run_with(
    options: &SimulationOptions,
    chaos: &ChaosOptions,
    state: Arc<dyn SimulationStore>,
    run: SimulationRun,
    mut on_event: impl FnMut(&RunEvent),
) -> Result<Outcome, SimulationError> {
    options.validate()?;
    validate_chaos(chaos)?;
    let faults = Chaos::new(chaos);
    // The workers fold the replies they make, as many shards at once as there are workers.
    state.set_fold_lanes(options.workers());
    let spawn_err = |e: ractor::SpawnErr| SimulationError::Spawn(e.to_string());
    let (fleet, fleet_handle) = Actor::spawn(
        None,
        VirtualFleet,
        FleetArgs {
            state: state.clone(),
            client_app: Arc::new(run.client_app),
            num_nodes: options.num_supernodes,
            slots: Arc::new(Semaphore::new(options.workers())),
            permits: 1,
            chaos: faults.clone(),
        },
    )
    .await
    .map_err(spawn_err)?;
    let link_state: Arc<dyn LinkState> = state.clone();
    let (link, link_handle) = Actor::spawn(None, SuperLink, link_state)
        .await
        .map_err(spawn_err)?;
    let new_run = NewRun {
        app: run.app,
        federation: run.federation,
        run_config: run.run_config,
        owner: String::new(),
        federation_options: UserConfig::new(),
    };
    let server_app: Arc<dyn ServerApp> = match faults {
        Some(chaos) if chaos.has_byzantine() => Arc::new(AnnouncingByzantine {
            app: run.server_app,
            chaos,
            num_nodes: options.num_supernodes,
        }),
        _ => run.server_app,
    };
    let started = call!(link, |reply| SuperLinkMsg::StartRun {
        run: new_run,
        app: server_app,
        fleet: None,
        reply
    });
    let outcome = match started {
        Ok(Ok(run_id)) => follow(state.as_ref(), run_id, &mut on_event).await,
        Ok(Err(e)) => Err(SimulationError::Spawn(e.to_string())),
        Err(e) => Err(SimulationError::Spawn(e.to_string())),
    };
    link.stop(None);
    fleet.stop(None);
    let _ = link_handle.await;
    let _ = fleet_handle.await;
    outcome
}

/// A ServerApp that first says how many of the fleet's nodes are Byzantine, so that the
/// line comes once and before the run's first round (a `--simulation` SuperLink's fleet
/// says it when it starts, before the ServerApp; see `link_fleets`).
struct AnnouncingByzantine {
    app: Arc<dyn ServerApp>,
    chaos: Chaos,
    num_nodes: u64,
}

#[async_trait::async_trait]
impl ServerApp for AnnouncingByzantine {
    async fn main(&self, grid: &dyn Grid, context: Context) -> Result<(), AppError> {
        if let Some(line) = self.chaos.byzantine_summary(grid.run_id(), self.num_nodes) {
            grid.emit(RunEvent::Log(line));
        }
        self.app.main(grid, context).await
    }

    fn check_config(&self, run_config: &UserConfig) -> Result<(), AppError> {
        self.app.check_config(run_config)
    }

    fn model_size(&self, run_config: &UserConfig) -> Option<ModelSize> {
        self.app.model_size(run_config)
    }
}

/// The manifest checks these already; options built in code get the same checks.
pub(crate) fn validate_chaos(chaos: &ChaosOptions) -> Result<(), SimulationError> {
    for (key, rate, of_what) in [
        ("dropout-rate", chaos.dropout_rate, "the sampled nodes"),
        ("straggler-rate", chaos.straggler_rate, "the sampled nodes"),
        ("byzantine-rate", chaos.byzantine_rate, "the fleet's nodes"),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(SimulationError::Options(format!(
                "options.chaos.{key} must be a fraction between 0 and 1 (got {rate}): set options.chaos.{key} = 0.3 for 30 % of {of_what}"
            )));
        }
    }
    if chaos.dropout_rate + chaos.straggler_rate > 1.0 {
        return Err(SimulationError::Options(format!(
            "options.chaos.dropout-rate plus options.chaos.straggler-rate is more than 1 ({} + {}): lower one of them",
            chaos.dropout_rate, chaos.straggler_rate
        )));
    }
    Ok(())
}

/// Streams a run's events until it has finished.
async fn follow(
    state: &dyn LinkState,
    run_id: u64,
    on_event: &mut impl FnMut(&RunEvent),
) -> Result<Outcome, SimulationError> {
    let signals = state.signals(run_id)?;
    let mut cursor = 0;
    loop {
        let notified = signals.events.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Read the status first: events pushed before it finished are then all in `events`.
        let info = state.run(run_id).ok_or(StateError::UnknownRun(run_id))?;
        let (events, next) = state.events(run_id, cursor)?;
        cursor = next;
        events.iter().for_each(&mut *on_event);
        if info.status.is_finished() {
            return Ok(Outcome {
                run_id,
                status: info.status,
                reason: info.reason,
            });
        }
        notified.await;
    }
}
