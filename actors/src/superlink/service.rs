//! `SuperLinkService`: a running SuperLink, ready to be put behind servers.
//!
//! ```text
//! SuperLinkService
//!  ├─ SuperLink actor (root supervisor; see `root`)
//!  │   └─ Run ── ServerAppHost, one per run ── app process of a FAB run (see `fabs`)
//!  ├─ sweeper task (liveness, TTL and retention; see `sweeper`)
//!  ├─ LinkFleet  ── one delivery task per subscribed node (see `delivery`)
//!  └─ LinkControl ── one task per `stream_events` reader
//! ```
//! The service is what a `flower-superlink` binary holds: it hands `fleet()` and
//! `control()` to its gRPC servers (and, to run FABs, its `LinkAppIo` to a ServerAppIo
//! server) and calls `shutdown` on SIGINT/SIGTERM.
//!
//! Restarts: a service that starts over a state holding unfinished runs (the SuperLink
//! crashed, or shut down over a durable state) resumes each one whose ServerApp it can
//! build again (a built-in app from the catalog, a FAB's from the FAB kept in the state);
//! the ServerApp's `main` runs anew and picks up its checkpoint (FedAvg does; a FAB's app
//! process does so through ServerAppIo). On a `--simulation` SuperLink a resumed run gets
//! a new virtual fleet built from the `federation_options` the state kept with it.
//! A run that cannot resume is failed with the reason, and so is one resumed
//! `RunLimits::max_resume_attempts` times in a row already: its ServerApp likely takes the
//! SuperLink down, and resuming it again would crash every start (see `limits`; a clean
//! shutdown starts its count anew). Shutdown over a durable state
//! (`LinkState::is_durable`) leaves unfinished runs as they are, for the next start; over
//! a state that dies with the process it stops them, as there is nothing to resume from.

use crate::policy::heartbeat::HeartbeatPolicy;
use crate::state::LinkState;
use crate::superlink::control::LinkControl;
use crate::superlink::fabs::LinkFabs;
use crate::superlink::fleet::LinkFleet;
use crate::superlink::limits::{self, RunLimits};
use crate::superlink::run_end::{self, RunEnd};
use crate::superlink::sweeper;
use crate::superlink::virtual_fleet::{RunFleet, VirtualFleets, check_run_kind};
use crate::superlink::{SuperLink, SuperLinkMsg};
use floret_core::{AppCatalog, ControlError, RunEvent, RunInfo, ServerApp};
use ractor::{Actor, ActorRef, call};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::task::JoinHandle;

/// Reason recorded for every run still unfinished when the SuperLink shuts down.
pub const SHUTDOWN_REASON: &str = "SuperLink shut down";

/// Why a run from an earlier SuperLink process cannot go on in this one.
const NOT_RESUMABLE: &str = "cannot resume after a SuperLink restart";

/// How long shutdown waits for the SuperLink actor to stop.
const ACTOR_STOP_WAIT: Duration = Duration::from_secs(10);

/// Why a SuperLink could not start.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// The `HeartbeatPolicy` would let a node that beats on time lose its lease; says why.
    #[error("invalid heartbeat policy: {0}")]
    Policy(String),
    /// ractor refused to spawn the SuperLink actor.
    #[error("could not start the SuperLink actor: {0}")]
    Spawn(String),
}

/// See the module doc.
pub struct SuperLinkService {
    state: Arc<dyn LinkState>,
    link: ActorRef<SuperLinkMsg>,
    link_task: JoinHandle<()>,
    sweeper: JoinHandle<()>,
    fleet: Arc<LinkFleet>,
    control: Arc<LinkControl>,
    fabs: Option<LinkFabs>,
}

impl SuperLinkService {
    /// Spawns the SuperLink actor and the sweeper over `state`; apps are resolved through
    /// `catalog`, node liveness follows `policy`.
    pub async fn start(
        state: Arc<dyn LinkState>,
        catalog: Arc<dyn AppCatalog>,
        policy: HeartbeatPolicy,
    ) -> Result<SuperLinkService, ServiceError> {
        SuperLinkService::start_with_fabs(state, catalog, policy, None).await
    }

    /// `start`, and with `fabs` the SuperLink also runs apps that come as FABs.
    pub async fn start_with_fabs(
        state: Arc<dyn LinkState>,
        catalog: Arc<dyn AppCatalog>,
        policy: HeartbeatPolicy,
        fabs: Option<LinkFabs>,
    ) -> Result<SuperLinkService, ServiceError> {
        SuperLinkService::start_with(state, catalog, policy, fabs, RunLimits::default(), None).await
    }

    /// `start_with_fabs`, with the operator's `limits` on runs instead of the defaults;
    /// with `fleets` it is a `--simulation` SuperLink, whose every run gets a virtual fleet
    /// of its own (see `virtual_fleet`).
    pub async fn start_with(
        state: Arc<dyn LinkState>,
        catalog: Arc<dyn AppCatalog>,
        policy: HeartbeatPolicy,
        fabs: Option<LinkFabs>,
        limits: RunLimits,
        fleets: Option<Arc<dyn VirtualFleets>>,
    ) -> Result<SuperLinkService, ServiceError> {
        policy.validate().map_err(ServiceError::Policy)?;
        let (link, link_task) = Actor::spawn(None, SuperLink, state.clone())
            .await
            .map_err(|e| ServiceError::Spawn(e.to_string()))?;
        let sweeper = sweeper::spawn(state.clone(), policy.sweep_interval, limits.retention);
        let resumer = Resumer {
            state: state.as_ref(),
            catalog: catalog.as_ref(),
            fabs: fabs.as_ref(),
            limits,
            fleets: fleets.clone(),
        };
        resumer.resume_runs(&link).await;
        let mut control =
            LinkControl::new(state.clone(), catalog, link.clone()).with_limits(limits);
        if let Some(fabs) = &fabs {
            control = control.with_fabs(fabs.clone());
        }
        if let Some(fleets) = fleets {
            control = control.with_fleets(fleets);
        }
        Ok(SuperLinkService {
            fleet: Arc::new(LinkFleet::new(state.clone(), policy)),
            control: Arc::new(control),
            fabs,
            state,
            link,
            link_task,
            sweeper,
        })
    }

    /// The Fleet API (SuperNodes).
    pub fn fleet(&self) -> Arc<LinkFleet> {
        self.fleet.clone()
    }

    /// The Control API (`flwr`).
    pub fn control(&self) -> Arc<LinkControl> {
        self.control.clone()
    }

    /// The state store, for inspection (tests, metrics).
    pub fn state(&self) -> Arc<dyn LinkState> {
        self.state.clone()
    }

    /// Over a state that dies with the process: stops every unfinished run as
    /// finished:stopped ("SuperLink shut down"). Over a durable state: ends the runs'
    /// ServerApps but leaves the runs unfinished, to be resumed at the next start. Either
    /// way it closes every node stream, refuses further Fleet and Control calls, and stops
    /// the actors and tasks.
    pub async fn shutdown(self) {
        let reason = SHUTDOWN_REASON.to_string();
        let suspend = self.state.is_durable();
        if call!(self.link, |reply| SuperLinkMsg::Shutdown {
            reason,
            suspend,
            reply
        })
        .is_err()
        {
            tracing::warn!("the SuperLink actor was already gone at shutdown");
        }
        for run in self.state.runs() {
            if run.status.is_finished() {
                continue;
            }
            if suspend {
                tracing::info!(
                    run_id = run.run_id,
                    status = %run.status,
                    "run left unfinished: it resumes when a SuperLink starts again over this state"
                );
                // A clean stop: the resumes so far did not crash the SuperLink.
                if let Err(e) = self.state.clear_resumes(run.run_id) {
                    tracing::warn!(
                        run_id = run.run_id,
                        "could not reset the run's resume count: {e}"
                    );
                }
                // Followers (`flwr log --stream`) learn why their stream ends.
                let _ = self.state.push_event(
                    run.run_id,
                    RunEvent::Log(format!(
                        "{SHUTDOWN_REASON}; the run resumes from its last checkpoint when the SuperLink starts again"
                    )),
                );
                continue;
            }
            // Runs without a Run actor (never started, whose actor died, or did not stop
            // in time) end here too.
            let stopped = RunEnd::Stopped(SHUTDOWN_REASON.to_string());
            run_end::record(self.state.as_ref(), run.run_id, &stopped);
        }
        if let Some(fabs) = &self.fabs {
            // Stopped runs have killed theirs; this is for any that did not stop in time.
            fabs.launcher.kill_all();
        }
        self.fleet.close();
        self.sweeper.abort();
        if self
            .link
            .stop_and_wait(None, Some(ACTOR_STOP_WAIT))
            .await
            .is_err()
        {
            tracing::warn!("the SuperLink actor did not stop within {ACTOR_STOP_WAIT:?}");
        }
        let _ = self.link_task.await;
        let _ = self.sweeper.await;
        tracing::info!("SuperLink shut down");
    }

    /// Ends the service the way a crash (SIGKILL) would: nothing is recorded, unfinished
    /// runs stay as they are in the state, ServerApps are dropped mid-round and node
    /// streams break. It exists to test crash recovery in one process (a second service
    /// over the same state plays the restarted SuperLink); a daemon calls `shutdown`.
    pub async fn abort(self) {
        self.fleet.close();
        self.sweeper.abort();
        if let Some(fabs) = &self.fabs {
            fabs.launcher.kill_all();
        }
        // A killed actor skips `post_stop` and so do the children it takes down: no Run
        // actor gets to record an end. The ServerApps' tasks are aborted as their hosts'
        // state is dropped.
        if self
            .link
            .kill_and_wait(Some(ACTOR_STOP_WAIT))
            .await
            .is_err()
        {
            tracing::warn!("the SuperLink actor did not die within {ACTOR_STOP_WAIT:?}");
        }
        let _ = self.link_task.await;
        let _ = self.sweeper.await;
    }
}

/// What a restarted SuperLink does with one unfinished run.
enum Resumption {
    /// Start it again with this ServerApp.
    Resume(Arc<dyn ServerApp>),
    /// Fail it: the reason says why it cannot go on.
    Fail(String),
}

/// What a starting SuperLink resumes unfinished runs with.
struct Resumer<'a> {
    state: &'a dyn LinkState,
    catalog: &'a dyn AppCatalog,
    fabs: Option<&'a LinkFabs>,
    limits: RunLimits,
    /// On a `--simulation` SuperLink, what builds a resumed run's virtual fleet again
    /// (from the `federation_options` the state keeps with the run).
    fleets: Option<Arc<dyn VirtualFleets>>,
}

impl Resumer<'_> {
    /// Whether `run` can resume here: it has not crashed the SuperLink too often
    /// (`limits::resume_verdict`, counted durably first), and its ServerApp, built-in or
    /// from its FAB, can be built again and asks for no larger model than allowed. A FAB's
    /// app process resumes through ServerAppIo's checkpoint calls.
    async fn resumption(&self, run: &RunInfo) -> Resumption {
        let run_id = run.run_id;
        let attempt = match self.state.count_resume(run_id) {
            Ok(attempt) => attempt,
            Err(e) => {
                // Resuming without a count could crash every start again.
                return Resumption::Fail(format!(
                    "run {run_id} {NOT_RESUMABLE}: its resume could not be counted: {e}"
                ));
            }
        };
        if let Err(reason) =
            limits::resume_verdict(run_id, attempt, self.limits.max_resume_attempts)
        {
            return Resumption::Fail(reason);
        }
        let fab_hash = &run.app.fab_hash;
        if !fab_hash.is_empty() {
            let Some(fabs) = self.fabs else {
                return Resumption::Fail(format!(
                    "run {run_id} {NOT_RESUMABLE}: its ServerApp comes as a FAB, and this \
                     SuperLink runs built-in apps only"
                ));
            };
            let resumed = match self.state.federation_options(run_id) {
                Ok(options) => fabs.resume(self.state, fab_hash, &options).await,
                Err(e) => Err(ControlError::Unavailable(e.to_string())),
            };
            return match resumed {
                Ok(app) => Resumption::Resume(app),
                Err(e) => Resumption::Fail(format!("run {run_id} {NOT_RESUMABLE}: {e}")),
            };
        }
        let Some(app) = self.catalog.server_app(&run.app.serverapp) else {
            return Resumption::Fail(format!(
                "run {run_id} {NOT_RESUMABLE}: its ServerApp {:?} is not among this \
                 SuperLink's apps",
                run.app.serverapp
            ));
        };
        // A run accepted under a larger limit (or before there was one).
        if let Some(size) = app.model_size(&run.run_config)
            && let Err(reason) = limits::check_model_size(&size, self.limits.max_model_bytes)
        {
            return Resumption::Fail(format!("run {run_id} {NOT_RESUMABLE}: {reason}"));
        }
        Resumption::Resume(app)
    }

    /// A resumed run's virtual fleet on a `--simulation` SuperLink, from the options it was
    /// submitted with; `None` on a deployment SuperLink. A run of the other kind (the
    /// SuperLink was restarted with or without `--simulation`) is refused by the same rule
    /// as at submit.
    /// A FAB run's fleet is none of the SuperLink's: its app process builds it again.
    fn fleet(&self, run: &RunInfo) -> Result<Option<RunFleet>, String> {
        let run_id = run.run_id;
        let not_resumable = |e: String| format!("run {run_id} {NOT_RESUMABLE}: {e}");
        let options = self
            .state
            .federation_options(run_id)
            .map_err(|e| not_resumable(e.to_string()))?;
        check_run_kind(self.fleets.is_some(), &options).map_err(not_resumable)?;
        if !run.app.fab_hash.is_empty() {
            return Ok(None);
        }
        Ok(self.fleets.as_ref().map(|fleets| RunFleet {
            fleets: fleets.clone(),
            options,
        }))
    }

    /// Resumes or fails every unfinished run of the state (see the module doc).
    async fn resume_runs(&self, link: &ActorRef<SuperLinkMsg>) {
        let state = self.state;
        for run in state.runs() {
            if run.status.is_finished() {
                continue;
            }
            let run_id = run.run_id;
            let failure = match self.resumption(&run).await {
                Resumption::Resume(app) => {
                    let status = run.status;
                    let fleet = match self.fleet(&run) {
                        Ok(fleet) => fleet,
                        Err(reason) => {
                            tracing::warn!(run_id, "{reason}");
                            run_end::record(state, run_id, &RunEnd::Failed(reason));
                            continue;
                        }
                    };
                    match call!(link, |reply| SuperLinkMsg::ResumeRun {
                        run,
                        app,
                        fleet,
                        reply
                    }) {
                        Ok(Ok(())) => {
                            let line = format!(
                                "run {run_id} resumed after a SuperLink restart (it was {status})"
                            );
                            tracing::info!(run_id, "{line}");
                            let _ = state.push_event(run_id, RunEvent::Log(line));
                            continue;
                        }
                        Ok(Err(e)) => format!("run {run_id} {NOT_RESUMABLE}: {e}"),
                        Err(e) => format!(
                            "run {run_id} {NOT_RESUMABLE}: the SuperLink actor is gone: {e}"
                        ),
                    }
                }
                Resumption::Fail(reason) => reason,
            };
            tracing::warn!(run_id, "{failure}");
            run_end::record(state, run_id, &RunEnd::Failed(failure));
        }
    }
}
