//! `SuperLinkService`: a running SuperLink, ready to be put behind servers.
//!
//! ```text
//! SuperLinkService
//!  ├─ SuperLink actor (root supervisor; see `superlink`)
//!  │   └─ Run ── ServerAppHost, one per run ── app process of a FAB run (see `link_fabs`)
//!  ├─ sweeper task (liveness and TTL; see `sweeper`)
//!  ├─ LinkFleet  ── one delivery task per subscribed node (see `delivery`)
//!  └─ LinkControl ── one task per `stream_events` reader
//! ```
//! The service is what a `flower-superlink` binary holds: it hands `fleet()` and
//! `control()` to its gRPC servers (and, to run FABs, its `LinkAppIo` to a ServerAppIo
//! server) and calls `shutdown` on SIGINT/SIGTERM.

use crate::heartbeat::HeartbeatPolicy;
use crate::link_control::LinkControl;
use crate::link_fabs::LinkFabs;
use crate::link_fleet::LinkFleet;
use crate::state::LinkState;
use crate::superlink::{SuperLink, SuperLinkMsg};
use crate::sweeper;
use floret_core::{AppCatalog, RunEvent, RunStatus, SubStatus};
use ractor::{Actor, ActorRef, call};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::task::JoinHandle;

/// Reason recorded for every run still unfinished when the SuperLink shuts down.
pub const SHUTDOWN_REASON: &str = "SuperLink shut down";

/// How long shutdown waits for the SuperLink actor to stop.
const ACTOR_STOP_WAIT: Duration = Duration::from_secs(10);

/// Why a SuperLink could not start.
#[derive(Debug, Error)]
pub enum ServiceError {
    #[error("invalid heartbeat policy: {0}")]
    Policy(String),
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
        policy.validate().map_err(ServiceError::Policy)?;
        let (link, link_task) = Actor::spawn(None, SuperLink, state.clone())
            .await
            .map_err(|e| ServiceError::Spawn(e.to_string()))?;
        let sweeper = sweeper::spawn(state.clone(), policy.sweep_interval);
        let mut control = LinkControl::new(state.clone(), catalog, link.clone());
        if let Some(fabs) = &fabs {
            control = control.with_fabs(fabs.clone());
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

    /// Stops every unfinished run as finished:stopped ("SuperLink shut down"), closes every
    /// node stream, refuses further Fleet and Control calls, and stops the actors and tasks.
    pub async fn shutdown(self) {
        let reason = SHUTDOWN_REASON.to_string();
        if call!(self.link, |reply| SuperLinkMsg::Shutdown { reason, reply }).is_err() {
            tracing::warn!("the SuperLink actor was already gone at shutdown");
        }
        // Runs without a Run actor (never started, or whose actor died) end here too.
        for run in self.state.runs() {
            if run.status.is_finished() {
                continue;
            }
            // Event first: a follower that sees the run finished has then seen why.
            let _ = self
                .state
                .push_event(run.run_id, RunEvent::Log(SHUTDOWN_REASON.to_string()));
            let stopped = RunStatus::Finished(SubStatus::Stopped);
            let _ = self
                .state
                .set_run_status(run.run_id, stopped, SHUTDOWN_REASON);
            self.state.purge_messages(run.run_id);
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
}
