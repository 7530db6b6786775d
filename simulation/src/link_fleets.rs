//! Simulation on a remote SuperLink (`flower-superlink --simulation`): the virtual fleets
//! of its runs.
//!
//! Each run is an ordinary run of the SuperLink (its `LinkState`, its Run actor, its end
//! through `run_end`), so `flwr ls`, `flwr log`, `flwr stop` and user-auth owners work on
//! it unchanged. Its ServerApp talks to a [`FleetGrid`]: the run's status, events and
//! checkpoints go to the SuperLink's state through the run's `LinkGrid`; its messages go to
//! a store of the run's own (in memory, under the same run id), served by the same
//! `VirtualFleet` a local simulation uses, sized by the run's `options.*`. Messages stay
//! Rust values, as in a local simulation, and a message never needs to outlive the process:
//! a resumed run drops its old messages anyway.
//!
//! Every fleet takes its ClientApp calls' slots from one semaphore
//! (`--simulation-workers`, default the core count), so runs at once share the machine
//! instead of each sizing itself to all of it; a call holds as many slots as its
//! `options.backend.client-resources.num-cpus`, rounded up.

use crate::chaos::Chaos;
use crate::fleet::{FleetArgs, VirtualFleet};
use crate::{SimulationOptions, validate_chaos};
use async_trait::async_trait;
use bytes::Bytes;
use floret_actors::state::SimulationStore;
use floret_actors::state::prelude::*;
use floret_actors::{LinkGrid, MemoryLinkState, NewRun, RunStatus, VirtualFleets};
use floret_core::{
    AppCatalog, AppRef, ChaosOptions, FederationOptions, Grid, GridError, Message, NodeSet,
    ReplyFold, RunEvent, RunInfo, SubStatus, UserConfig,
};
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// The fleet builder of a `--simulation` SuperLink (see the module doc).
pub struct LinkFleets {
    /// Resolves the runs' ClientApps (the built-in apps).
    catalog: Arc<dyn AppCatalog>,
    /// ClientApp call slots shared by every run's fleet.
    slots: Arc<Semaphore>,
    /// How many slots there are in all: a call never asks for more.
    budget: usize,
    /// The most virtual SuperNodes one run may ask for: the fleet lists its node ids, so a
    /// submitted `options.num-supernodes` must not be able to exhaust the SuperLink's memory.
    max_supernodes: u64,
}

impl LinkFleets {
    /// Fleets whose ClientApps come from `catalog` and which together run at most
    /// `workers` ClientApp calls (of one CPU each) at once, of at most `max_supernodes`
    /// virtual SuperNodes a run.
    pub fn new(catalog: Arc<dyn AppCatalog>, workers: usize, max_supernodes: u64) -> LinkFleets {
        let budget = workers.max(1);
        LinkFleets {
            catalog,
            slots: Arc::new(Semaphore::new(budget)),
            budget,
            max_supernodes,
        }
    }

    /// The run's fleet size, resources and faults from its `federation_options`.
    fn options(&self, flat: &UserConfig) -> Result<(SimulationOptions, ChaosOptions), String> {
        let (simulation, chaos) = fleet_options(flat)?;
        if simulation.num_supernodes > self.max_supernodes {
            return Err(format!(
                "options.num-supernodes = {} is more than this SuperLink runs \
                 (--max-simulation-supernodes {}): lower it, or start the SuperLink with a \
                 higher --max-simulation-supernodes",
                simulation.num_supernodes, self.max_supernodes
            ));
        }
        Ok((simulation, chaos))
    }

    fn client_app(&self, app: &AppRef) -> Result<floret_core::ClientApp, String> {
        self.catalog.client_app(&app.clientapp).ok_or_else(|| {
            let known: Vec<String> = self.catalog.components().into_iter().map(|c| c.1).collect();
            format!(
                "unknown clientapp component {:?} in [tool.flwr.app.components]; this \
                 SuperLink knows: {}",
                app.clientapp,
                known.join(", ")
            )
        })
    }
}

/// A run's fleet size, resources and faults from its `federation_options`, with the
/// manifest's checks: `Err` is one line naming the key.
fn fleet_options(flat: &UserConfig) -> Result<(SimulationOptions, ChaosOptions), String> {
    let options = FederationOptions::from_flat(flat).map_err(|e| e.to_string())?;
    let num_supernodes = options.num_supernodes.ok_or(
        "the federation does not say how many virtual SuperNodes to run: set \
         options.num-supernodes = 10",
    )?;
    let simulation = SimulationOptions {
        num_supernodes,
        num_cpus: options.client_resources.num_cpus,
        num_gpus: options.client_resources.num_gpus,
    };
    simulation.validate().map_err(|e| e.to_string())?;
    validate_chaos(&options.chaos).map_err(|e| e.to_string())?;
    Ok((simulation, options.chaos))
}

/// The grid of a FAB's ServerApp process on a `--simulation` SuperLink: `remote` (the
/// process's ServerAppIo link to the SuperLink) for the run's status, events and
/// checkpoints, and a virtual fleet of the app's own `client_app` in this process, sized
/// by the run's `options` (the SuperLink checked them at submit), for its messages. The
/// fleet runs at most `workers` ClientApp calls at once: the SuperLink's
/// `--simulation-workers`, a bound per app process, since a semaphore cannot span
/// processes. The fleet ends when the grid is dropped; a stopped run's process is killed
/// by the SuperLink.
pub async fn process_grid(
    remote: Arc<dyn Grid>,
    run_config: &UserConfig,
    options: &UserConfig,
    client_app: floret_core::ClientApp,
    workers: usize,
) -> Result<Arc<dyn Grid>, String> {
    let (simulation, chaos) = fleet_options(options)?;
    let budget = workers.max(1);
    let run = NewRun {
        app: AppRef::default(),
        federation: String::new(),
        run_config: run_config.clone(),
        owner: String::new(),
        federation_options: options.clone(),
    };
    let fleet = FleetSpec {
        permits: permits(simulation.num_cpus, budget),
        simulation,
        chaos,
        client_app,
        slots: Arc::new(Semaphore::new(budget)),
    };
    start_fleet(run, fleet, RunLink::Remote(remote)).await
}

/// What a run's virtual fleet is made of.
struct FleetSpec {
    simulation: SimulationOptions,
    chaos: ChaosOptions,
    client_app: floret_core::ClientApp,
    /// The ClientApp call slots it shares.
    slots: Arc<Semaphore>,
    /// Slots one call holds.
    permits: u32,
}

/// Starts the virtual fleet of `link`'s run over a store of the run's own and returns the
/// grid around both (see the module doc).
async fn start_fleet(run: NewRun, spec: FleetSpec, link: RunLink) -> Result<Arc<dyn Grid>, String> {
    let run_id = link.grid().run_id();
    let store = Arc::new(MemoryLinkState::for_simulated_run(run_id));
    // The run's workers fold the replies they make (`Grid::send_folding`).
    store.set_fold_lanes(spec.simulation.workers());
    let created = store.create_run(run).map_err(|e| e.to_string())?;
    debug_assert_eq!(created, run_id);
    for status in [RunStatus::Starting, RunStatus::Running] {
        store
            .set_run_status(run_id, status, "")
            .map_err(|e| e.to_string())?;
    }
    let fleet_store: Arc<dyn SimulationStore> = store.clone();
    let FleetSpec {
        simulation,
        chaos,
        client_app,
        slots,
        permits,
    } = spec;
    let faults = Chaos::new(&chaos);
    let (fleet, _) = Actor::spawn(
        None,
        VirtualFleet,
        FleetArgs {
            state: fleet_store,
            client_app: Arc::new(client_app),
            num_nodes: simulation.num_supernodes,
            slots,
            permits,
            chaos: faults.clone(),
        },
    )
    .await
    .map_err(|e| format!("could not start the run's virtual fleet: {e}"))?;
    let messages = LinkGrid::new(run_id, store.clone()).map_err(|e| e.to_string())?;
    link.grid().emit(RunEvent::Log(format!(
        "simulation: {} virtual SuperNodes, {} CPU(s) per ClientApp call",
        simulation.num_supernodes, simulation.num_cpus
    )));
    if let Some(line) = faults
        .as_ref()
        .and_then(|c| c.byzantine_summary(run_id, simulation.num_supernodes))
    {
        link.grid().emit(RunEvent::Log(line));
    }
    Ok(Arc::new(FleetGrid {
        link,
        messages,
        store,
        fleet,
    }))
}

/// Slots one ClientApp call holds: its CPUs rounded up, at least 1 and at most all.
fn permits(num_cpus: f64, budget: usize) -> u32 {
    let wanted = num_cpus.ceil().clamp(1.0, budget.max(1) as f64);
    u32::try_from(wanted as u64).unwrap_or(u32::MAX)
}

#[async_trait]
impl VirtualFleets for LinkFleets {
    fn check(&self, app: Option<&AppRef>, options: &UserConfig) -> Result<(), String> {
        self.options(options)?;
        match app {
            Some(app) => self.client_app(app).map(|_| ()),
            None => Ok(()),
        }
    }

    async fn grid(
        &self,
        run: &RunInfo,
        options: &UserConfig,
        link: LinkGrid,
    ) -> Result<Arc<dyn Grid>, String> {
        let (simulation, chaos) = self.options(options)?;
        let client_app = self.client_app(&run.app)?;
        let new_run = NewRun {
            app: run.app.clone(),
            federation: run.federation.clone(),
            run_config: run.run_config.clone(),
            owner: run.owner.clone(),
            federation_options: options.clone(),
        };
        let spec = FleetSpec {
            permits: permits(simulation.num_cpus, self.budget),
            simulation,
            chaos,
            client_app,
            slots: self.slots.clone(),
        };
        start_fleet(new_run, spec, RunLink::Local(link)).await
    }
}

/// Where a simulated run's status, events and checkpoints go, and how its grid learns
/// that the run ended.
enum RunLink {
    /// The run in this SuperLink's state: a status change (`flwr stop`) ends the grid's
    /// calls and wakes its waits.
    Local(LinkGrid),
    /// The run on the SuperLink, reached from a FAB's app process over ServerAppIo: the
    /// SuperLink kills the process when the run ends.
    Remote(Arc<dyn Grid>),
}

impl RunLink {
    fn grid(&self) -> &dyn Grid {
        match self {
            RunLink::Local(link) => link,
            RunLink::Remote(remote) => remote.as_ref(),
        }
    }

    /// Fails once the run has ended: a local run's status says so; a remote one is asked
    /// of the SuperLink (`node_ids`), so that a ServerApp whose replies all fold where
    /// they are made, and which thus never waits on `receive`, still notices a SuperLink
    /// that is gone or was restarted (a restart forgets this process's token) at its next
    /// phase, instead of training on unseen.
    async fn check_running(&self) -> Result<(), GridError> {
        match self {
            RunLink::Local(link) => link.check_running(),
            RunLink::Remote(remote) => remote.node_ids().await.map(drop),
        }
    }
}

/// A simulated run's grid (see the module doc).
struct FleetGrid {
    /// The run on the SuperLink: status, events, checkpoints.
    link: RunLink,
    /// The run's messages, in `store`.
    messages: LinkGrid,
    /// The run's own store, which its fleet serves.
    store: Arc<MemoryLinkState>,
    /// Stopped with the grid.
    fleet: ActorRef<()>,
}

impl Drop for FleetGrid {
    /// The run ended, was stopped or suspended: its fleet stops, and what it had queued is
    /// dropped so that no worker serves it any more.
    fn drop(&mut self) {
        self.fleet.stop(None);
        let run_id = self.messages.run_id();
        let _ = self
            .store
            .set_run_status(run_id, RunStatus::Finished(SubStatus::Stopped), "");
        self.store.purge_messages(run_id);
    }
}

#[async_trait]
impl Grid for FleetGrid {
    fn run_id(&self) -> u64 {
        self.messages.run_id()
    }

    async fn node_ids(&self) -> Result<NodeSet, GridError> {
        self.link.check_running().await?;
        self.messages.node_ids().await
    }

    async fn send(&self, messages: Vec<Message>) -> Result<Vec<String>, GridError> {
        self.link.check_running().await?;
        self.messages.send(messages).await
    }

    fn fold_lanes(&self) -> usize {
        self.messages.fold_lanes()
    }

    async fn send_folding(
        &self,
        messages: Vec<Message>,
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, GridError> {
        self.link.check_running().await?;
        self.messages.send_folding(messages, fold).await
    }

    async fn broadcast_folding(
        &self,
        template: Message,
        nodes: &[u64],
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, GridError> {
        self.link.check_running().await?;
        self.messages.broadcast_folding(template, nodes, fold).await
    }

    async fn pull(&self, message_ids: &[String]) -> Result<Vec<Message>, GridError> {
        self.messages.pull(message_ids).await
    }

    async fn receive(&self, timeout: Duration) -> Result<Vec<Message>, GridError> {
        let RunLink::Local(link) = &self.link else {
            // A SuperLink ends such a run by killing this process, but a crashed one
            // cannot: asking it each time the ServerApp waits for replies (and sends, see
            // `RunLink::check_running`) ends the run here once it is gone or restarted.
            self.link.check_running().await?;
            return self.messages.receive(timeout).await;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // The SuperLink's run changing status (`flwr stop`) wakes this wait too.
            let ended = link.signals().replies.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            link.check_running()?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            tokio::select! {
                replies = self.messages.receive(left) => return replies,
                () = &mut ended => {}
            }
        }
    }

    fn emit(&self, event: RunEvent) {
        self.link.grid().emit(event);
    }

    async fn load_checkpoint(&self) -> Result<Option<Bytes>, GridError> {
        self.link.grid().load_checkpoint().await
    }

    async fn save_checkpoint(&self, checkpoint: Bytes) -> Result<(), GridError> {
        self.link.grid().save_checkpoint(checkpoint).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoApps;

    impl AppCatalog for NoApps {
        fn server_app(&self, _: &str) -> Option<Arc<dyn floret_core::ServerApp>> {
            None
        }
        fn client_app(&self, _: &str) -> Option<floret_core::ClientApp> {
            None
        }
        fn components(&self) -> Vec<(String, String)> {
            Vec::new()
        }
    }

    #[test]
    fn a_call_holds_its_cpus_in_slots_within_the_budget() {
        assert_eq!(permits(1.0, 8), 1);
        assert_eq!(permits(0.25, 8), 1);
        assert_eq!(permits(1.5, 8), 2);
        assert_eq!(permits(16.0, 8), 8);
        assert_eq!(permits(2.0, 0), 1);
    }

    #[test]
    fn the_fleet_options_come_from_the_wire_with_the_manifest_checks() {
        let mut flat = UserConfig::new();
        flat.insert(
            "num-supernodes".into(),
            floret_core::UserConfigValue::Int(10),
        );
        let fleets = LinkFleets::new(Arc::new(NoApps), 1, 10);
        let (simulation, chaos) = fleets.options(&flat).unwrap();
        assert_eq!(simulation.num_supernodes, 10);
        assert!(chaos.is_off());
        let e = fleets.options(&UserConfig::new()).unwrap_err();
        assert!(e.contains("set options.num-supernodes = 10"), "{e}");
        flat.insert(
            "num-supernodes".into(),
            floret_core::UserConfigValue::Int(11),
        );
        let e = fleets.options(&flat).unwrap_err();
        assert!(e.contains("--max-simulation-supernodes 10"), "{e}");
    }
}
