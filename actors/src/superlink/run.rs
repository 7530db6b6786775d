//! The Run actor: one per run, owner of its status.
//!
//! It moves the run through starting and running, and records its end through
//! `run_end::record`, the one way every path ends a run (the paths that find a run without
//! a Run actor use it too, so the record is the same whoever writes it).
//!
//! ```text
//! Run
//!  └─ ServerAppHost (App)
//! ```
//! Supervision policy: the ServerApp ending normally completes the run; failing or
//! panicking fails it with the reason; either way the Run actor then stops. It never
//! restarts a ServerApp within a process: a half-run strategy cannot be resumed from
//! nothing.
//!
//! Across processes it can: a SuperLink that starts over a state holding an unfinished run
//! starts a Run actor for it in resume mode (`RunArgs::resume`). The run's stale messages
//! are dropped first, the status moves on from wherever it was left (no step is repeated,
//! so the state machine stays as it is), and the ServerApp's `main` runs again, reading its
//! checkpoint through the grid. `RunMsg::Suspend` is the other half: the actor ends without
//! recording an end, so the run resumes at the next start (graceful shutdown over a durable
//! state).

use crate::state::LinkState;
use crate::superlink::grid::LinkGrid;
use crate::superlink::run_end::{self, RunEnd};
use crate::superlink::server_app_host::{COMPLETED, ServerAppArgs, ServerAppHost, ServerAppMsg};
use crate::superlink::virtual_fleet::RunFleet;
use floret_core::{Context, Grid, RunStatus, ServerApp};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;
use tracing::Instrument;

/// The Run actor (see the module doc).
pub struct RunActor;

/// What the SuperLink hands a Run actor at spawn.
pub struct RunArgs {
    /// The state the run's status, messages and end are recorded in.
    pub state: Arc<dyn LinkState>,
    /// The ServerApp the run hosts.
    pub app: Arc<dyn ServerApp>,
    /// The ServerApp's context; `run_id` names the run the actor owns.
    pub context: Context,
    /// The ServerApp is a FAB's, in its own process (see `server_app_host`).
    pub external: bool,
    /// The run was left unfinished by an earlier SuperLink process and is taken up again
    /// (see the module doc).
    pub resume: bool,
    /// On a `--simulation` SuperLink, the run's virtual fleet: its ServerApp talks to that
    /// instead of the SuperNodes (see `virtual_fleet`).
    pub fleet: Option<RunFleet>,
}

/// What a Run actor is asked by the SuperLink; both end the actor and its ServerApp.
pub enum RunMsg {
    /// Stops the run (`flwr stop`); its status becomes finished:stopped.
    Stop(String),
    /// Ends the Run actor and its ServerApp but leaves the run unfinished in the state, to
    /// be resumed by the next SuperLink over it.
    Suspend,
}

/// The Run actor's state: its run and the ServerApp host it supervises.
pub struct RunState {
    run_id: u64,
    state: Arc<dyn LinkState>,
    /// Stopped with the run; its end (or failure) tells the actor how the run ended.
    host: ActorRef<ServerAppMsg>,
    /// Set by `Suspend`: `post_stop` then records nothing.
    suspended: bool,
}

impl RunState {
    /// Records the end of the run unless it has already ended (a stop racing a failure).
    fn finish(&self, end: RunEnd) {
        run_end::record(self.state.as_ref(), self.run_id, &end);
    }
}

impl Actor for RunActor {
    type Msg = RunMsg;
    type State = RunState;
    type Arguments = RunArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RunMsg>,
        args: RunArgs,
    ) -> Result<RunState, ActorProcessingErr> {
        let run_id = args.context.run_id;
        let state = args.state;
        if args.resume {
            // Instructions and replies of the process that went down: a reply computed for
            // the old ServerApp must not be taken for one of the new ServerApp's.
            state.purge_messages(run_id);
            tracing::info!(run_id, "resuming run after a SuperLink restart");
        }
        // A resumed run may already be starting or running; only the steps still ahead
        // are taken.
        if state.run_status(run_id) == Some(RunStatus::Pending) {
            state.set_run_status(run_id, RunStatus::Starting, "")?;
        }
        let link = LinkGrid::new(run_id, state.clone())?;
        let grid: Arc<dyn Grid> = match args.fleet {
            None => Arc::new(link),
            Some(fleet) => {
                let run = state
                    .run(run_id)
                    .ok_or(crate::state::StateError::UnknownRun(run_id))?;
                fleet.fleets.grid(&run, &fleet.options, link).await?
            }
        };
        let host_args = ServerAppArgs {
            app: args.app,
            grid,
            context: args.context,
            external: args.external,
        };
        let (host, _) = Actor::spawn_linked(None, ServerAppHost, host_args, myself.get_cell())
            .instrument(tracing::debug_span!("start run", run_id))
            .await?;
        if state.run_status(run_id) != Some(RunStatus::Running) {
            state.set_run_status(run_id, RunStatus::Running, "")?;
        }
        host.cast(ServerAppMsg::Start)?;
        Ok(RunState {
            run_id,
            state,
            host,
            suspended: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<RunMsg>,
        msg: RunMsg,
        state: &mut RunState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RunMsg::Stop(reason) => {
                state.finish(RunEnd::Stopped(reason));
                state.host.stop(None);
                myself.stop(None);
            }
            RunMsg::Suspend => {
                state.suspended = true;
                state.host.stop(None);
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<RunMsg>,
        event: SupervisionEvent,
        state: &mut RunState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(_, _, reason) => {
                if reason.as_deref() == Some(COMPLETED) {
                    state.finish(RunEnd::Completed);
                }
                myself.stop(None);
            }
            SupervisionEvent::ActorFailed(_, err) => {
                state.finish(RunEnd::Failed(err.to_string()));
                myself.stop(None);
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _me: ActorRef<RunMsg>,
        state: &mut RunState,
    ) -> Result<(), ActorProcessingErr> {
        if state.suspended {
            tracing::info!(
                run_id = state.run_id,
                "run suspended; it resumes at the next start"
            );
            return Ok(());
        }
        // Stopped without being told why (the SuperLink actor itself stopped); a no-op
        // when the end was recorded above.
        state.finish(RunEnd::Stopped(String::new()));
        Ok(())
    }
}
