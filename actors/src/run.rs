//! The Run actor: one per run, owner of its status.
//!
//! ```text
//! Run
//!  └─ ServerAppHost (App)
//! ```
//! Supervision policy: the ServerApp ending normally completes the run; failing or
//! panicking fails it with the reason; either way the Run actor then stops. It never
//! restarts a ServerApp: a half-run strategy cannot be resumed from nothing.

use crate::grid::LinkGrid;
use crate::server_app_host::{COMPLETED, ServerAppArgs, ServerAppHost, ServerAppMsg};
use crate::state::LinkState;
use floret_core::{Context, RunEvent, ServerApp};
use floret_core::{RunStatus, SubStatus};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;
use tracing::Instrument;

pub struct RunActor;

pub struct RunArgs {
    pub state: Arc<dyn LinkState>,
    pub app: Arc<dyn ServerApp>,
    pub context: Context,
    /// The ServerApp is a FAB's, in its own process (see `server_app_host`).
    pub external: bool,
}

pub enum RunMsg {
    /// Stops the run (`flwr stop`); its status becomes finished:stopped.
    Stop(String),
}

pub struct RunState {
    run_id: u64,
    state: Arc<dyn LinkState>,
    host: ActorRef<ServerAppMsg>,
}

impl RunState {
    /// Records the end of the run unless it has already ended (a stop racing a failure).
    fn finish(&self, sub: SubStatus, reason: &str) {
        if !reason.is_empty() {
            let _ = self
                .state
                .push_event(self.run_id, RunEvent::Log(reason.to_string()));
        }
        match self
            .state
            .set_run_status(self.run_id, RunStatus::Finished(sub), reason)
        {
            Ok(info) => tracing::info!(run_id = self.run_id, status = %info.status, "run finished"),
            Err(e) => tracing::debug!(run_id = self.run_id, "run already finished: {e}"),
        }
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
        state.set_run_status(run_id, RunStatus::Starting, "")?;
        let grid = Arc::new(LinkGrid::new(run_id, state.clone())?);
        let host_args = ServerAppArgs {
            app: args.app,
            grid,
            context: args.context,
            external: args.external,
        };
        let (host, _) = Actor::spawn_linked(None, ServerAppHost, host_args, myself.get_cell())
            .instrument(tracing::info_span!("run", run_id))
            .await?;
        state.set_run_status(run_id, RunStatus::Running, "")?;
        host.cast(ServerAppMsg::Start)?;
        Ok(RunState {
            run_id,
            state,
            host,
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
                state.finish(SubStatus::Stopped, &reason);
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
                    state.finish(SubStatus::Completed, "");
                }
                myself.stop(None);
            }
            SupervisionEvent::ActorFailed(_, err) => {
                state.finish(SubStatus::Failed, &err.to_string());
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
        state.finish(SubStatus::Stopped, "");
        state.state.purge_messages(state.run_id);
        Ok(())
    }
}
