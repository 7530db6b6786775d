//! `LinkControl`: the SuperLink's side of the Control protocol (`flwr run/ls/log/stop`).
//!
//! Requests are checked here, before anything is created, so a typo in a component name or
//! a bad run-config value is refused with a message that says what to write instead, and
//! never leaves a failed run behind. Starting and stopping go through the SuperLink actor,
//! which owns the Run actors; reads go straight to the `LinkState`.
//!
//! A run of an app that comes as a FAB (`app.fab_hash`, `StartRun.fab`) is checked and
//! hosted by `LinkFabs` instead of the catalog; a SuperLink without it refuses such runs.
//!
//! With user authentication on, the transport asks for each caller's view
//! (`ControlFor::control_for`): runs record who started them, and a user who is not an
//! admin lists, reads, follows and stops only their own. Another user's run answers exactly
//! like a run that does not exist, so run ids do not reveal other users' activity.

use crate::policy::clock::unix_now;
use crate::state::LinkState;
use crate::state::NewRun;
use crate::superlink::fabs::LinkFabs;
use crate::superlink::limits::{self, RunLimits};
use crate::superlink::run_end::{self, RunEnd};
use crate::superlink::virtual_fleet::{RunFleet, VirtualFleets, check_run_kind};
use crate::superlink::{RunControlError, SuperLinkMsg};
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::NodeInfo;
use floret_core::RunStatus;
use floret_core::{
    AppCatalog, Caller, Control, ControlError, ControlFor, RunEvent, RunInfo, ServerApp, StartRun,
};
use ractor::{ActorRef, call};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Reason recorded for runs stopped with `flwr stop`.
pub const STOPPED_BY_USER: &str = "stopped by user";

/// How long `stop_run` waits for the run to record its end before answering anyway.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Events buffered per `stream_events` caller; a slow reader slows only its own stream.
const EVENT_BUFFER: usize = 64;

/// See the module doc. Clones share the SuperLink; each carries its own caller.
#[derive(Clone)]
pub struct LinkControl {
    state: Arc<dyn LinkState>,
    /// Resolves `serverapp`/`clientapp` components to apps.
    catalog: Arc<dyn AppCatalog>,
    link: ActorRef<SuperLinkMsg>,
    /// Runs FABs; `None` on a SuperLink that carries built-in apps only.
    fabs: Option<LinkFabs>,
    /// Whose view this is; anonymous (every run) unless made by `control_for`.
    caller: Caller,
    /// The largest model a run may ask for (`RunLimits::max_model_bytes`).
    max_model_bytes: u64,
    /// On a `--simulation` SuperLink, where each run gets its virtual fleet; `None`: runs
    /// use the SuperNodes.
    fleets: Option<Arc<dyn VirtualFleets>>,
}

impl LinkControl {
    /// The anonymous view (every run) of the SuperLink actor `link` over `state`, with
    /// built-in apps only from `catalog`; see `with_fabs` and `control_for`.
    pub fn new(
        state: Arc<dyn LinkState>,
        catalog: Arc<dyn AppCatalog>,
        link: ActorRef<SuperLinkMsg>,
    ) -> LinkControl {
        LinkControl {
            state,
            catalog,
            link,
            fabs: None,
            caller: Caller::anonymous(),
            max_model_bytes: RunLimits::default().max_model_bytes,
            fleets: None,
        }
    }

    /// Makes this a `--simulation` SuperLink: every run gets a virtual fleet from `fleets`.
    pub fn with_fleets(mut self, fleets: Arc<dyn VirtualFleets>) -> LinkControl {
        self.fleets = Some(fleets);
        self
    }

    /// The run's virtual fleet on a `--simulation` SuperLink, after checking that this
    /// SuperLink takes this kind of run (`check_run_kind`) and the run's options.
    fn fleet(&self, request: &StartRun) -> Result<Option<RunFleet>, ControlError> {
        let options = &request.federation_options;
        check_run_kind(self.fleets.is_some(), options).map_err(ControlError::Invalid)?;
        let Some(fleets) = &self.fleets else {
            return Ok(None);
        };
        let fab = request.fab.is_some() || !request.app.fab_hash.is_empty();
        fleets
            .check((!fab).then_some(&request.app), options)
            .map_err(ControlError::Invalid)?;
        if fab {
            // Its app process runs the fleet (`LinkFabs`).
            return Ok(None);
        }
        Ok(Some(RunFleet {
            fleets: fleets.clone(),
            options: options.clone(),
        }))
    }

    /// Refuses runs whose model is larger than `limits.max_model_bytes`.
    pub fn with_limits(mut self, limits: RunLimits) -> LinkControl {
        self.max_model_bytes = limits.max_model_bytes;
        self
    }

    /// Lets this SuperLink run apps that come as FABs.
    pub fn with_fabs(mut self, fabs: LinkFabs) -> LinkControl {
        self.fabs = Some(fabs);
        self
    }

    /// Managing SuperNodes is for admins when users log in: whoever may register a key
    /// may let any machine in as a SuperNode.
    fn require_admin(&self, what: &str) -> Result<(), ControlError> {
        if self.caller.may_administer() {
            return Ok(());
        }
        Err(ControlError::Forbidden(format!(
            "{what} requires the admin role, and user {:?} is not an admin (role = \"admin\" in the SuperLink's --user-auth-config)",
            self.caller.owner()
        )))
    }

    /// The run's status, if the run exists and the caller may see it.
    fn visible_status(&self, run_id: u64) -> Result<RunStatus, ControlError> {
        self.visible(run_id)?;
        self.state
            .run_status(run_id)
            .ok_or(ControlError::UnknownRun(run_id))
    }

    /// The run, if it exists and the caller may see it; another user's run is unknown.
    fn visible(&self, run_id: u64) -> Result<RunInfo, ControlError> {
        self.state
            .run(run_id)
            .filter(|run| self.caller.may_access(&run.owner))
            .ok_or(ControlError::UnknownRun(run_id))
    }

    /// The ServerApp of a built-in app, after checking both components and the run config.
    fn builtin(&self, request: &StartRun) -> Result<Arc<dyn ServerApp>, ControlError> {
        let app_ref = &request.app;
        let server_app = self
            .catalog
            .server_app(&app_ref.serverapp)
            .ok_or_else(|| self.unknown_component("serverapp", &app_ref.serverapp))?;
        // The SuperNodes resolve the clientapp, but with the same built-in apps: refusing an
        // unknown one here saves a run whose every reply would be an error.
        if self.catalog.client_app(&app_ref.clientapp).is_none() {
            return Err(self.unknown_component("clientapp", &app_ref.clientapp));
        }
        server_app
            .check_config(&request.run_config)
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        if let Some(size) = server_app.model_size(&request.run_config) {
            limits::check_model_size(&size, self.max_model_bytes).map_err(ControlError::Invalid)?;
        }
        Ok(server_app)
    }

    fn unknown_component(&self, which: &str, given: &str) -> ControlError {
        let known = self.catalog.components();
        let names: Vec<&str> = known
            .iter()
            .map(|(s, c)| if which == "serverapp" { s } else { c }.as_str())
            .collect();
        let choices = if names.is_empty() {
            "none: this SuperLink carries no apps".to_string()
        } else {
            names.join(", ")
        };
        ControlError::Invalid(format!(
            "unknown {which} component {given:?} in [tool.flwr.app.components]; \
             this SuperLink knows: {choices}"
        ))
    }

    /// Waits until the run has finished, or `STOP_WAIT` passed.
    async fn wait_finished(&self, run_id: u64) {
        let Ok(signals) = self.state.signals(run_id) else {
            return;
        };
        let deadline = tokio::time::Instant::now() + STOP_WAIT;
        loop {
            let notified = signals.events.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .state
                .run_status(run_id)
                .is_none_or(RunStatus::is_finished)
            {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(run_id, "run did not record its stop within {STOP_WAIT:?}");
                return;
            }
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> ControlError {
    ControlError::Unavailable(format!("the SuperLink actor is gone: {e}"))
}

#[async_trait]
impl Control for LinkControl {
    async fn start_run(&self, mut request: StartRun) -> Result<u64, ControlError> {
        let fleet = self.fleet(&request)?;
        let server_app = if request.fab.is_some() || !request.app.fab_hash.is_empty() {
            match &self.fabs {
                Some(fabs) => fabs.prepare(self.state.as_ref(), &mut request).await?,
                None => {
                    return Err(ControlError::Invalid(
                        "this SuperLink runs built-in apps only, not FABs".into(),
                    ));
                }
            }
        } else {
            self.builtin(&request)?
        };
        let run = NewRun {
            app: request.app,
            federation: request.federation,
            run_config: request.run_config,
            owner: self.caller.owner(),
            federation_options: request.federation_options,
        };
        let started = call!(self.link, |reply| SuperLinkMsg::StartRun {
            run,
            app: server_app,
            fleet,
            reply
        })
        .map_err(unavailable)?;
        match started {
            Ok(run_id) => Ok(run_id),
            Err(RunControlError::ShuttingDown) => Err(ControlError::Unavailable(
                RunControlError::ShuttingDown.to_string(),
            )),
            Err(e) => Err(ControlError::Invalid(e.to_string())),
        }
    }

    async fn stop_run(&self, run_id: u64) -> Result<(), ControlError> {
        let status = self.visible_status(run_id)?;
        if status.is_finished() {
            return Err(ControlError::Finished(run_id));
        }
        let stopped = call!(self.link, |reply| SuperLinkMsg::StopRun {
            run_id,
            reason: STOPPED_BY_USER.to_string(),
            reply
        })
        .map_err(unavailable)?;
        if stopped.is_err() {
            // No Run actor: it never got one, or finished in the meantime (its end stands).
            let end = RunEnd::Stopped(STOPPED_BY_USER.to_string());
            if !run_end::record(self.state.as_ref(), run_id, &end) {
                return Err(ControlError::Finished(run_id));
            }
        }
        self.wait_finished(run_id).await;
        Ok(())
    }

    async fn list_runs(&self) -> Result<Vec<RunInfo>, ControlError> {
        let mut runs = self.state.runs();
        runs.retain(|run| self.caller.may_access(&run.owner));
        Ok(runs)
    }

    async fn get_run(&self, run_id: u64) -> Result<RunInfo, ControlError> {
        self.visible(run_id)
    }

    async fn stream_events(
        &self,
        run_id: u64,
        follow: bool,
    ) -> Result<mpsc::Receiver<RunEvent>, ControlError> {
        self.visible(run_id)?;
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        tokio::spawn(stream_events(self.state.clone(), run_id, follow, tx));
        Ok(rx)
    }

    async fn register_node_key(&self, public_key: Bytes) -> Result<u64, ControlError> {
        self.require_admin("registering a SuperNode key")?;
        if public_key.is_empty() {
            return Err(ControlError::Invalid("no public key given".into()));
        }
        let node_id = self
            .state
            .allow_node_key(public_key, unix_now())
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        tracing::info!(node_id, "SuperNode key registered");
        Ok(node_id)
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ControlError> {
        self.require_admin("listing SuperNodes")?;
        Ok(self.state.nodes_info())
    }

    /// Takes the key off the allow-list and disconnects the node: its instruction stream
    /// closes, and its next call is refused as unauthenticated (the transport finds its
    /// key no longer owns the id).
    async fn unregister_node_key(&self, node_id: u64) -> Result<(), ControlError> {
        self.require_admin("unregistering a SuperNode key")?;
        if self.state.disallow_node(node_id).is_none() {
            return Err(ControlError::Invalid(format!(
                "no SuperNode with id {node_id} has a registered key: `flwr supernode list` shows them"
            )));
        }
        self.state
            .unregister_node(node_id, "its key was unregistered", unix_now());
        tracing::info!(node_id, "SuperNode key unregistered");
        Ok(())
    }
}

impl ControlFor for LinkControl {
    fn control_for(&self, caller: Caller) -> Arc<dyn Control> {
        Arc::new(LinkControl {
            caller,
            ..self.clone()
        })
    }
}

/// Sends a run's events from its first on; with `follow`, until the run has finished.
/// Ends early when the reader goes away.
async fn stream_events(
    state: Arc<dyn LinkState>,
    run_id: u64,
    follow: bool,
    tx: mpsc::Sender<RunEvent>,
) {
    let Ok(signals) = state.signals(run_id) else {
        return;
    };
    let mut cursor = 0;
    loop {
        let notified = signals.events.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // Status before events: whatever was logged before the run ended is then in `events`.
        let finished = state.run_status(run_id).is_none_or(RunStatus::is_finished);
        let Ok((events, next)) = state.events(run_id, cursor) else {
            return;
        };
        cursor = next;
        for event in events {
            if tx.send(event).await.is_err() {
                return;
            }
        }
        if !follow || finished {
            return;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tx.closed() => return,
        }
    }
}
