//! The App actor on the SuperNode side: hosts one run's ClientApp.
//!
//! On the run's first message it fetches the run (`get_run`) and builds the ClientApp from
//! the catalog by `run.app.clientapp`, or, for a run of a FAB (`run.app.fab_hash`), gets
//! the FAB's app process ready (see `fab_client`); it keeps the run's `Context` (node
//! config, run config, state) from one message to the next. A FAB's ClientApp handles the
//! message in its own process, which gets the context with the message and hands it back
//! with the reply. Messages of a run are handled one at a
//! time, in order, each on a blocking thread so CPU-bound training never stalls the async
//! runtime that carries heartbeats and other runs. Every message gets a reply:
//! - content, or the ClientApp's error or panic as an error reply (`client_exec::execute`);
//! - `LOAD_CLIENT_APP_EXCEPTION` when the run or its app cannot be loaded (retried on the
//!   next message: the SuperLink may have been away for a moment);
//! - `MESSAGE_TTL_EXPIRED` when it arrived too late to be worth running.
//!
//! The host fails (a supervision event for the SuperNode) only when its blocking thread
//! dies outside the ClientApp's guard; it answers the message it held before failing.
//! It stops by itself once its run has finished (or the SuperLink no longer knows the
//! run), checked every `RUN_CHECK_INTERVAL`: a long-lived SuperNode must not keep the
//! context of every run it ever served.

use super::fab_client::{FabClient, NodeFabs};
use super::reply::{error_reply, expires_at, reply_with, spawn_push};
use crate::apps::client_exec::{execute, panic_message};
use crate::policy::backoff::Backoff;
use crate::policy::clock::unix_now;
use floret_core::trace_context::{self, phase_of};
use floret_core::{
    AppCatalog, ClientApp, Context, Fleet, FleetError, Message, Metadata, UserConfig, error_code,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How often an idle host asks whether its run is still going.
pub(super) const RUN_CHECK_INTERVAL: Duration = Duration::from_secs(60);

pub(super) struct ClientAppHost;

pub(super) struct HostArgs {
    pub(super) run_id: u64,
    pub(super) node_config: UserConfig,
    pub(super) fleet: Arc<dyn Fleet>,
    pub(super) catalog: Arc<dyn AppCatalog>,
    /// For retrying reply pushes while the SuperLink is unreachable.
    pub(super) backoff: Backoff,
    /// Runs FABs; `None` on a SuperNode that runs built-in apps only.
    pub(super) fabs: Option<NodeFabs>,
    /// How the node reaches its SuperLink, for span attributes.
    pub(super) transport: &'static str,
}

pub(super) enum HostMsg {
    Execute(Message),
    /// Stop if the run has finished.
    CheckRun,
}

/// A run's ClientApp, in this process or in an app process of its own.
enum LoadedApp {
    Builtin(Arc<ClientApp>),
    // Boxed: a FAB client holds its session and process handles, a built-in app one Arc.
    Fab(Box<FabClient>),
}

pub(super) struct HostState {
    args: HostArgs,
    /// Built on the first message that could load it.
    app: Option<LoadedApp>,
    context: Context,
}

impl HostState {
    /// Pushes `reply`, carrying the current (handling) span's trace context so that the
    /// SuperLink's span for receiving it joins the trace.
    fn push(&self, mut reply: Message, instruction: &Metadata) {
        let header = trace_context::current();
        if !header.is_empty() {
            reply.metadata.trace_context = header;
        }
        spawn_push(
            self.args.fleet.clone(),
            self.args.backoff,
            reply,
            expires_at(instruction),
        );
    }

    fn answer_error(&self, instruction: &Metadata, code: i64, reason: String) {
        tracing::warn!("{reason}");
        self.push(error_reply(instruction, code, reason), instruction);
    }

    /// Runs one instruction and pushes its reply (see the module doc).
    async fn execute(&mut self, message: Message) -> Result<(), ActorProcessingErr> {
        let md = message.metadata.clone();
        // `train` / `evaluate` / `query` in the run's trace when tracing is on.
        let traced = trace_context::message_span(
            phase_of(&md.message_type),
            &message,
            md.dst_node_id,
            self.args.transport,
        );
        let span = if traced.is_none() {
            tracing::info_span!(
                "clientapp",
                run_id = md.run_id,
                node_id = md.dst_node_id,
                message_id = %md.message_id,
                message_type = %md.message_type
            )
        } else {
            traced
        };
        if message.is_expired(unix_now()) {
            let _g = span.enter();
            self.answer_error(
                &md,
                error_code::MESSAGE_TTL_EXPIRED,
                "message TTL expired before the node could run it".into(),
            );
            return Ok(());
        }
        if let Err(reason) = self.load().instrument(span.clone()).await {
            let _g = span.enter();
            self.answer_error(&md, error_code::LOAD_CLIENT_APP_EXCEPTION, reason);
            return Ok(());
        }
        // The node's id can change between messages (re-registration); the app sees the
        // one this message was sent to.
        self.context.node_id = md.dst_node_id;
        let app = match &self.app {
            Some(LoadedApp::Builtin(app)) => app.clone(),
            _ => {
                self.execute_fab(message, &md).instrument(span).await;
                return Ok(());
            }
        };
        let mut context = std::mem::take(&mut self.context);
        let worker_span = span.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _g = worker_span.enter();
            let reply = execute(&app, &message, &mut context);
            (reply, context)
        })
        .await;
        let _g = span.enter();
        match joined {
            Ok((reply, context)) => {
                self.context = context;
                self.push(reply, &md);
                Ok(())
            }
            Err(e) => {
                let why = if e.is_panic() {
                    panic_message(e.into_panic().as_ref())
                } else {
                    "its thread was cancelled".to_string()
                };
                let reason = format!("ClientApp host failed: {why}");
                self.answer_error(&md, error_code::CLIENT_APP_RAISED_EXCEPTION, reason.clone());
                Err(reason.into())
            }
        }
    }

    /// Hands the message to the run's app process and pushes its reply (`fab_client`).
    async fn execute_fab(&mut self, mut message: Message, md: &Metadata) {
        let Some(LoadedApp::Fab(client)) = &mut self.app else {
            return;
        };
        // The app process's span becomes a child of this node's.
        let header = trace_context::current();
        if !header.is_empty() {
            message.metadata.trace_context = header;
        }
        let context = self.context.clone();
        match client.execute(message, context, expires_at(md)).await {
            Ok((payload, context)) => {
                self.context = context;
                self.push(reply_with(md, payload), md);
            }
            Err(reason) => self.answer_error(md, error_code::CLIENT_APP_RAISED_EXCEPTION, reason),
        }
    }

    async fn load(&mut self) -> Result<(), String> {
        if self.app.is_some() {
            return Ok(());
        }
        let run_id = self.args.run_id;
        let run = self
            .args
            .fleet
            .get_run(run_id)
            .await
            .map_err(|e| format!("could not fetch run {run_id} from the SuperLink: {e}"))?;
        let app = if run.app.fab_hash.is_empty() {
            LoadedApp::Builtin(Arc::new(self.builtin(&run.app.clientapp)?))
        } else {
            let fabs = self.args.fabs.as_ref().ok_or_else(|| {
                format!("run {run_id} runs a FAB, but this SuperNode runs built-in apps only")
            })?;
            let fleet = self.args.fleet.as_ref();
            LoadedApp::Fab(Box::new(fabs.load(fleet, run_id, &run.app.fab_hash).await?))
        };
        self.context.run_config = run.run_config;
        self.app = Some(app);
        Ok(())
    }

    fn builtin(&self, component: &str) -> Result<ClientApp, String> {
        self.args.catalog.client_app(component).ok_or_else(|| {
            let known: Vec<String> = self
                .args
                .catalog
                .components()
                .into_iter()
                .map(|(_, client)| client)
                .collect();
            format!(
                "unknown clientapp component {component:?}; this SuperNode knows: {}",
                known.join(", ")
            )
        })
    }
}

impl Actor for ClientAppHost {
    type Msg = HostMsg;
    type State = HostState;
    type Arguments = HostArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HostMsg>,
        args: HostArgs,
    ) -> Result<HostState, ActorProcessingErr> {
        // Ends by itself when the actor stops.
        myself.send_interval(RUN_CHECK_INTERVAL, || HostMsg::CheckRun);
        let context = Context {
            run_id: args.run_id,
            node_config: args.node_config.clone(),
            ..Context::default()
        };
        Ok(HostState {
            args,
            app: None,
            context,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HostMsg>,
        msg: HostMsg,
        st: &mut HostState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HostMsg::Execute(message) => st.execute(message).await,
            HostMsg::CheckRun => {
                let run_id = st.args.run_id;
                let over = match st.args.fleet.get_run(run_id).await {
                    Ok(run) => run.status.is_finished(),
                    Err(FleetError::UnknownRun(_)) => true,
                    // Unreachable or unsure: keep the context, ask again later.
                    Err(_) => false,
                };
                if over {
                    tracing::debug!(run_id, "run is over: stopping its ClientApp host");
                    myself.stop(None);
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::heartbeat::HeartbeatPolicy;
    use crate::state::{MemoryLinkState, NewRun, RunStore};
    use crate::superlink::fleet::LinkFleet;
    use floret_core::{RunStatus, ServerApp, SubStatus};
    use ractor::ActorStatus;

    struct NoApps;

    impl AppCatalog for NoApps {
        fn server_app(&self, _: &str) -> Option<Arc<dyn ServerApp>> {
            None
        }
        fn client_app(&self, _: &str) -> Option<ClientApp> {
            None
        }
        fn components(&self) -> Vec<(String, String)> {
            Vec::new()
        }
    }

    async fn host(state: Arc<MemoryLinkState>, run_id: u64) -> ActorRef<HostMsg> {
        let args = HostArgs {
            run_id,
            node_config: UserConfig::new(),
            fleet: Arc::new(LinkFleet::new(state, HeartbeatPolicy::default())),
            catalog: Arc::new(NoApps),
            backoff: Backoff::default(),
            fabs: None,
            transport: "memory",
        };
        Actor::spawn(None, ClientAppHost, args).await.unwrap().0
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_lives_while_its_run_does_and_stops_once_it_has_finished() {
        let state = Arc::new(MemoryLinkState::new());
        let run = state.create_run(NewRun::default()).unwrap();
        state.set_run_status(run, RunStatus::Starting, "").unwrap();
        state.set_run_status(run, RunStatus::Running, "").unwrap();
        let running = host(state.clone(), run).await;
        tokio::time::sleep(RUN_CHECK_INTERVAL * 3).await;
        assert_eq!(running.get_status(), ActorStatus::Running);
        state
            .set_run_status(run, RunStatus::Finished(SubStatus::Completed), "")
            .unwrap();
        assert!(running.wait(Some(RUN_CHECK_INTERVAL * 2)).await.is_ok());
        let forgotten = host(state, 999).await;
        assert!(
            forgotten.wait(Some(RUN_CHECK_INTERVAL * 2)).await.is_ok(),
            "a run the SuperLink does not know is over too"
        );
    }
}
