//! The App actor on the SuperLink side: hosts one run's ServerApp.
//!
//! `main` is a long async function, so it runs in its own task while the actor stays free
//! to be stopped. When the task ends the actor ends with it: normally when `main` returned
//! `Ok`, as a failure (seen by the Run actor, its supervisor) when `main` returned an error
//! or panicked. The failure reason says which; for a FAB's ServerApp, which runs in its
//! own process, it is the process's own report ("ServerApp panicked: ...") or how the
//! process ended, as is.

use crate::apps::client_exec::panic_message;
use floret_core::{Context, Grid, ServerApp};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use tokio::task::AbortHandle;
use tracing::Instrument;

/// Exit reason of a ServerApp whose `main` returned `Ok`.
pub const COMPLETED: &str = "completed";

/// The App actor hosting one run's ServerApp (see the module doc).
pub struct ServerAppHost;

/// What the Run actor hands its ServerAppHost at spawn; taken by `Start`.
pub struct ServerAppArgs {
    /// The ServerApp whose `main` the actor runs.
    pub app: Arc<dyn ServerApp>,
    /// The run's view of the link (`LinkGrid`, or a virtual fleet's grid on a
    /// `--simulation` SuperLink), which `main` talks to.
    pub grid: Arc<dyn Grid>,
    /// Handed to `main` as is.
    pub context: Context,
    /// The app is a FAB's, in its own process (see the module doc).
    pub external: bool,
}

/// What a ServerAppHost is told: by the Run actor to start, by its own task that `main`
/// ended.
pub enum ServerAppMsg {
    /// Starts `main`; sent by the Run actor once the run is `running`.
    Start,
    /// `main` ended: its own error, or the panic message.
    Exited(Result<Result<(), String>, String>),
}

/// The ServerAppHost's state: the app until it starts, then the task running `main`.
pub struct ServerAppState {
    /// `Some` until `Start` takes it, so a second `Start` does nothing.
    args: Option<ServerAppArgs>,
    /// An external app's error is its process's own report, passed on without a prefix.
    external: bool,
    /// Cancels `main` when the actor ends, however it ends: a stopping Run actor kills its
    /// children, which skips `post_stop` but drops their state. So a stopped run's
    /// ServerApp, and a FAB's app process with it, never linger.
    task: Option<AbortOnDrop>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Actor for ServerAppHost {
    type Msg = ServerAppMsg;
    type State = ServerAppState;
    type Arguments = ServerAppArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        args: ServerAppArgs,
    ) -> Result<ServerAppState, ActorProcessingErr> {
        Ok(ServerAppState {
            external: args.external,
            args: Some(args),
            task: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut ServerAppState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ServerAppMsg::Start => {
                let Some(ServerAppArgs {
                    app, grid, context, ..
                }) = state.args.take()
                else {
                    return Ok(());
                };
                let run_id = context.run_id;
                let span = run_span(run_id);
                let main = tokio::spawn(
                    async move {
                        app.main(grid.as_ref(), context)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    .instrument(span),
                );
                state.task = Some(AbortOnDrop(main.abort_handle()));
                tokio::spawn(async move {
                    let outcome = match main.await {
                        Ok(result) => Ok(result),
                        Err(e) if e.is_panic() => Err(panic_message(e.into_panic().as_ref())),
                        Err(_) => Err("ServerApp task was cancelled".to_string()),
                    };
                    if myself.cast(ServerAppMsg::Exited(outcome)).is_err() {
                        tracing::debug!(run_id, "ServerApp ended after its host stopped");
                    }
                });
                Ok(())
            }
            ServerAppMsg::Exited(Ok(Ok(()))) => {
                myself.stop(Some(COMPLETED.to_string()));
                Ok(())
            }
            ServerAppMsg::Exited(Ok(Err(e))) if state.external => Err(e.into()),
            ServerAppMsg::Exited(Ok(Err(e))) => {
                Err(format!("ServerApp returned an error: {e}").into())
            }
            ServerAppMsg::Exited(Err(panic)) => Err(format!("ServerApp panicked: {panic}").into()),
        }
    }
}

/// The root of a run's trace: every round, message and node span of the run descends from
/// it. Its `trace_id` field puts the trace id on every log line of the run.
fn run_span(run_id: u64) -> tracing::Span {
    let span = tracing::info_span!("run", run_id, trace_id = tracing::field::Empty);
    if floret_core::trace_context::enabled()
        && let Some(id) = floret_core::trace_context::trace_id(&span)
    {
        span.record("trace_id", id);
    }
    span
}
