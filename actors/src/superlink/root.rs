//! The SuperLink actor: root supervisor of the server side.
//!
//! ```text
//! SuperLink
//!  └─ Run (one per run)
//!      └─ ServerAppHost
//! ```
//! Supervision policy: a failing Run actor fails only its own run (recorded as
//! finished:failed with the reason); the SuperLink keeps serving every other run. This
//! overrides ractor's default, under which a supervisor stops when a child fails.
//!
//! Shutdown is a message, not a stop signal: ractor kills the children of a stopping
//! actor without letting them record why, so `Shutdown` first asks every Run to stop with
//! the given reason (or, over a durable state, to suspend so that the run resumes at the
//! next start), waits for them, and only then may the SuperLink itself be stopped.
//!
//! `ResumeRun` takes up a run an earlier SuperLink process left unfinished (see `run`).

use crate::state::{LinkState, NewRun};
use crate::superlink::run::{RunActor, RunArgs, RunMsg};
use crate::superlink::run_end::{self, RunEnd};
use crate::superlink::virtual_fleet::RunFleet;
use floret_core::{Context, RunInfo, ServerApp, UserConfig};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// How long shutdown waits for one Run actor to record its end before moving on.
const RUN_STOP_WAIT: Duration = Duration::from_secs(5);

/// The SuperLink actor (see the module doc); its arguments are the `LinkState` every run
/// is recorded in.
pub struct SuperLink;

/// Why a run could not be started or stopped.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RunControlError {
    /// No Run actor holds this run id: it does not exist or has already ended.
    #[error("no active run with id {0}")]
    NotActive(u64),
    /// The run was created but its Run actor could not start; a new run is recorded as
    /// finished:failed with `reason`.
    #[error("run {run_id} could not start: {reason}")]
    StartFailed {
        /// The run that was created, so the caller can still look it up.
        run_id: u64,
        /// Why its Run actor did not start.
        reason: String,
    },
    /// `Shutdown` has been received: no run starts or resumes from then on.
    #[error("the SuperLink is shutting down")]
    ShuttingDown,
    /// The `LinkState` refused to create the run; nothing was started.
    #[error("the run could not be recorded: {0}")]
    Storage(String),
}

/// What the SuperLink actor is asked to do: start, stop and resume runs, and shut down.
pub enum SuperLinkMsg {
    /// Creates a run and starts its ServerApp; answers with the run id.
    StartRun {
        /// The run to record; an `app.fab_hash` makes its ServerApp an external one.
        run: NewRun,
        /// The ServerApp the run hosts, already resolved (catalog or FAB).
        app: Arc<dyn ServerApp>,
        /// The run's virtual fleet on a `--simulation` SuperLink; `None`: the SuperNodes.
        fleet: Option<RunFleet>,
        /// Gets the new run's id, or why it was not started.
        reply: RpcReplyPort<Result<u64, RunControlError>>,
    },
    /// Stops an active run. Answers once the stop is handed to its Run actor, not once the
    /// end is recorded.
    StopRun {
        /// The run to stop.
        run_id: u64,
        /// Recorded as the finished:stopped reason.
        reason: String,
        /// `NotActive` when no Run actor holds the run.
        reply: RpcReplyPort<Result<(), RunControlError>>,
    },
    /// Starts a Run actor in resume mode for an unfinished run of the state.
    ResumeRun {
        /// The run as the state holds it, with its id and run config.
        run: RunInfo,
        /// Its ServerApp, built again by this process.
        app: Arc<dyn ServerApp>,
        /// Its virtual fleet on a `--simulation` SuperLink; `None`: the SuperNodes.
        fleet: Option<RunFleet>,
        /// Whether the Run actor started; a failed resume is recorded by the caller.
        reply: RpcReplyPort<Result<(), RunControlError>>,
    },
    /// Stops every active run with `reason` and refuses new ones; answers once the runs
    /// have recorded their end (or `RUN_STOP_WAIT` passed for each). With `suspend` the
    /// runs are left unfinished instead, to be resumed by the next SuperLink.
    Shutdown {
        /// Recorded as the finished:stopped reason of every run stopped.
        reason: String,
        /// Leave the runs unfinished for the next start (a durable state) instead.
        suspend: bool,
        /// Answered once every Run actor has ended or timed out.
        reply: RpcReplyPort<()>,
    },
}

/// The SuperLink actor's state: its runs, and whether it still takes new ones.
pub struct SuperLinkState {
    /// Where runs are created, and where a run whose actor failed is recorded as failed.
    state: Arc<dyn LinkState>,
    /// Active Run actors, by actor id so supervision events find their run.
    runs: HashMap<ActorId, (u64, ActorRef<RunMsg>)>,
    /// Set by `Shutdown`: runs started after it would be killed without a word.
    closing: bool,
}

impl SuperLinkState {
    /// The Run actor's arguments for `run_id`, on this SuperLink's state.
    fn run_args(
        &self,
        run_id: u64,
        run_config: UserConfig,
        app: Arc<dyn ServerApp>,
        fleet: Option<RunFleet>,
        external: bool,
    ) -> RunArgs {
        RunArgs {
            state: self.state.clone(),
            app,
            context: Context {
                run_id,
                node_id: 0,
                run_config,
                ..Context::default()
            },
            external,
            resume: false,
            fleet,
        }
    }

    /// Starts the Run actor of `args`' run; a new run whose actor cannot start is failed
    /// with why.
    async fn spawn_run(
        &mut self,
        myself: &ActorRef<SuperLinkMsg>,
        args: RunArgs,
    ) -> Result<(), RunControlError> {
        let run_id = args.context.run_id;
        let resume = args.resume;
        match Actor::spawn_linked(None, RunActor, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                self.runs.insert(actor.get_id(), (run_id, actor));
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                // A resumed run is failed by its resumer, with a reason that says so.
                if !resume {
                    run_end::record(self.state.as_ref(), run_id, &RunEnd::Failed(reason.clone()));
                }
                Err(RunControlError::StartFailed { run_id, reason })
            }
        }
    }
}

impl Actor for SuperLink {
    type Msg = SuperLinkMsg;
    type State = SuperLinkState;
    type Arguments = Arc<dyn LinkState>;

    async fn pre_start(
        &self,
        _me: ActorRef<SuperLinkMsg>,
        state: Arc<dyn LinkState>,
    ) -> Result<SuperLinkState, ActorProcessingErr> {
        Ok(SuperLinkState {
            state,
            runs: HashMap::new(),
            closing: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SuperLinkMsg>,
        msg: SuperLinkMsg,
        st: &mut SuperLinkState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SuperLinkMsg::StartRun { reply, .. } if st.closing => {
                let _ = reply.send(Err(RunControlError::ShuttingDown));
            }
            SuperLinkMsg::StartRun {
                run,
                app,
                fleet,
                reply,
            } => {
                let run_config = run.run_config.clone();
                let external = !run.app.fab_hash.is_empty();
                let result = match st.state.create_run(run) {
                    Ok(run_id) => {
                        let args = st.run_args(run_id, run_config, app, fleet, external);
                        st.spawn_run(&myself, args).await.map(|()| run_id)
                    }
                    Err(e) => Err(RunControlError::Storage(e.to_string())),
                };
                let _ = reply.send(result);
            }
            SuperLinkMsg::ResumeRun { reply, .. } if st.closing => {
                let _ = reply.send(Err(RunControlError::ShuttingDown));
            }
            SuperLinkMsg::ResumeRun {
                run,
                app,
                fleet,
                reply,
            } => {
                let external = !run.app.fab_hash.is_empty();
                let args = RunArgs {
                    resume: true,
                    ..st.run_args(run.run_id, run.run_config, app, fleet, external)
                };
                let result = st.spawn_run(&myself, args).await;
                let _ = reply.send(result);
            }
            SuperLinkMsg::StopRun {
                run_id,
                reason,
                reply,
            } => {
                let actor = st
                    .runs
                    .values()
                    .find(|(id, _)| *id == run_id)
                    .map(|(_, a)| a.clone());
                let result = match actor {
                    Some(a) => a
                        .cast(RunMsg::Stop(reason))
                        .map_err(|_| RunControlError::NotActive(run_id)),
                    None => Err(RunControlError::NotActive(run_id)),
                };
                let _ = reply.send(result);
            }
            SuperLinkMsg::Shutdown {
                reason,
                suspend,
                reply,
            } => {
                st.closing = true;
                let runs: Vec<(u64, ActorRef<RunMsg>)> = st.runs.drain().map(|(_, r)| r).collect();
                for (_, actor) in &runs {
                    let msg = if suspend {
                        RunMsg::Suspend
                    } else {
                        RunMsg::Stop(reason.clone())
                    };
                    let _ = actor.cast(msg);
                }
                for (run_id, actor) in runs {
                    if actor.wait(Some(RUN_STOP_WAIT)).await.is_err() {
                        tracing::warn!(run_id, "run did not stop within {RUN_STOP_WAIT:?}");
                    }
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<SuperLinkMsg>,
        event: SupervisionEvent,
        st: &mut SuperLinkState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                st.runs.remove(&cell.get_id());
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some((run_id, _)) = st.runs.remove(&cell.get_id()) {
                    let reason = format!("run supervisor failed: {err}");
                    tracing::error!(run_id, "{reason}");
                    run_end::record(st.state.as_ref(), run_id, &RunEnd::Failed(reason));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
