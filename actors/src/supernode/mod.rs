//! The SuperNode: root of the client process. It keeps a node registered with its
//! SuperLink and serves the ClientApps of every run that sends it work.
//!
//! ```text
//! SuperNode (actor; `SuperNode::run` drives it until told to stop)
//!  ├─ link session, replaced as a whole on every (re)connect (see `session`)
//!  │   ├─ heartbeat task (beats at 0.8 x interval +- 10 %)
//!  │   └─ instruction reader (the SuperLink's push stream -> SuperNode)
//!  ├─ reply pushers, one short task per reply (see `reply`)
//!  └─ ClientAppHost, one actor per run (see `client_app_host`)
//!      └─ app process of a FAB run (see `fab_client`), restarted on the run's next
//!         message when it dies
//! ```
//!
//! Connecting: register (or, when it already has an id, heartbeat to check the SuperLink
//! still knows it), subscribe to its instructions, then pull once to catch anything queued
//! while it was away. While the SuperLink is unreachable it retries with capped, jittered
//! exponential backoff (`backoff`); `max_retries` and `max_wait_time` bound one outage, and
//! exhausting them ends `run` with `SuperNodeError::GaveUp`. When the SuperLink answers
//! `UnknownNode` (it restarted, or declared this node offline) the node registers again by
//! itself, under a new id, and carries on; Flower's SuperNodes exit there.
//!
//! Each registration also tells the SuperLink's incarnation. A new one means a SuperLink
//! on fresh state (`--database :memory:`, a replaced database file), whose run and message
//! ids may repeat the last one's for other runs: the node then stops its ClientApp hosts
//! (with their run configs and node state) and forgets the instruction ids it saw, so a
//! new run gets a fresh ClientApp and no instruction of it is taken for a duplicate.
//!
//! Supervision policies (overriding ractor's default, under which a supervisor stops when
//! a child fails):
//! - A ClientApp that returns an error or panics is not a failure: `client_exec` turns it
//!   into an error reply and the host serves the run's next message with its context.
//! - A ClientAppHost that fails (its blocking thread died outside the ClientApp's guard)
//!   has answered the message it held; the SuperNode forgets it and keeps serving, and the
//!   run's next message starts a fresh host with a fresh context. Hosts are never restarted
//!   eagerly: a host costs nothing until its run sends work.
//! - A failing link session (heartbeat refused, stream closed) is dropped whole and the
//!   SuperNode reconnects; instructions already taken on keep running meanwhile.
//! - An app process of a FAB run that dies costs the message it held an error reply; its
//!   host starts a new one for the run's next message. At shutdown every app process is
//!   killed.

mod client_app_host;
mod config;
mod fab_client;
mod node_appio;
mod recent;
mod reply;
mod session;

use crate::policy::backoff::RetryDecision;
use client_app_host::{ClientAppHost, HostArgs, HostMsg};
pub use config::{SuperNodeConfig, SuperNodeError};
pub use fab_client::NodeFabs;
use floret_core::{AppCatalog, Fleet, FleetError, Message, RegisterNode, Registration, error_code};
pub use node_appio::NodeAppIo;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use recent::RecentIds;
use session::{Session, SessionArgs};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a stopping SuperNode waits for the SuperLink to acknowledge its leaving.
const DEACTIVATE_WAIT: Duration = Duration::from_secs(3);

/// How long `run` waits for the actor to take the shutdown (it may be in the middle of a
/// slow connection attempt) before stopping it without deactivating.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Instruction ids remembered for de-duplication.
const RECENT_IDS: usize = 4096;

/// See the module doc.
pub struct SuperNode;

impl SuperNode {
    /// Runs a SuperNode until `shutdown` completes (then it deactivates itself, best
    /// effort, and returns `Ok`) or until it gives up on its SuperLink (`Err`).
    pub async fn run(
        config: SuperNodeConfig,
        fleet: Arc<dyn Fleet>,
        catalog: Arc<dyn AppCatalog>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), SuperNodeError> {
        SuperNode::run_with_fabs(config, fleet, catalog, None, shutdown).await
    }

    /// `run`, and with `fabs` the node also runs apps that come as FABs.
    pub async fn run_with_fabs(
        config: SuperNodeConfig,
        fleet: Arc<dyn Fleet>,
        catalog: Arc<dyn AppCatalog>,
        fabs: Option<NodeFabs>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), SuperNodeError> {
        config.validate()?;
        let (exit, mut exited) = oneshot::channel();
        let args = NodeArgs {
            config,
            fleet,
            catalog,
            fabs: fabs.clone(),
            exit,
        };
        let (node, handle) = Actor::spawn(None, SuperNodeActor, args)
            .await
            .map_err(|e| SuperNodeError::Spawn(e.to_string()))?;
        tokio::pin!(shutdown);
        let crashed = |_| SuperNodeError::Crashed("see the log for the actor's error".into());
        let result = tokio::select! {
            result = &mut exited => result.map_err(crashed).and_then(|r| r),
            () = &mut shutdown => {
                let asked = node.call(SuperNodeMsg::Shutdown, Some(SHUTDOWN_WAIT)).await;
                match asked {
                    Ok(CallResult::Success(())) | Err(_) | Ok(CallResult::SenderError) => {
                        exited.await.map_err(crashed).and_then(|r| r)
                    }
                    Ok(CallResult::Timeout) => {
                        tracing::warn!("SuperNode busy at shutdown: stopping without deactivating");
                        Ok(())
                    }
                }
            }
        };
        node.kill();
        let _ = handle.await;
        if let Some(fabs) = fabs {
            // Also when the actor died or timed out before it could.
            fabs.io.close();
            fabs.launcher.kill_all();
        }
        result
    }
}

/// The actor behind `SuperNode::run`.
struct SuperNodeActor;

struct NodeArgs {
    config: SuperNodeConfig,
    fleet: Arc<dyn Fleet>,
    catalog: Arc<dyn AppCatalog>,
    fabs: Option<NodeFabs>,
    /// Where `run` learns how the SuperNode ended.
    exit: oneshot::Sender<Result<(), SuperNodeError>>,
}

pub(crate) enum SuperNodeMsg {
    /// Try to (re)connect now.
    Connect,
    /// The link of `session` broke.
    LinkLost { session: u64, error: FleetError },
    /// An instruction from the SuperLink.
    Instruction(Message),
    /// Deactivate and stop.
    Shutdown(RpcReplyPort<()>),
}

/// The SuperLink being unreachable: since when, and how many attempts failed.
struct Outage {
    since: Instant,
    failures: u32,
}

struct NodeState {
    config: Arc<SuperNodeConfig>,
    fleet: Arc<dyn Fleet>,
    catalog: Arc<dyn AppCatalog>,
    fabs: Option<NodeFabs>,
    /// The id the SuperLink knows this node by; `None` until registered, and again once
    /// the SuperLink has forgotten it.
    node_id: Option<u64>,
    /// Number of the current link session; events of older ones are stale.
    session: u64,
    link: Option<Session>,
    /// `Some` while not connected.
    outage: Option<Outage>,
    hosts: HashMap<u64, ActorRef<HostMsg>>,
    /// Run of each host, so supervision events find their entry.
    host_runs: HashMap<ActorId, u64>,
    recent: RecentIds,
    /// The SuperLink incarnation of the last registration; `None` before the first, and
    /// while only SuperLinks that do not say (0) have answered.
    incarnation: Option<u64>,
    exit: Option<oneshot::Sender<Result<(), SuperNodeError>>>,
}

impl NodeState {
    fn finish(&mut self, myself: &ActorRef<SuperNodeMsg>, result: Result<(), SuperNodeError>) {
        if let Err(e) = &result {
            tracing::error!("{e}");
        }
        if let Some(exit) = self.exit.take() {
            let _ = exit.send(result);
        }
        self.link = None;
        myself.stop(None);
    }

    /// Registers and keeps the new id at once: if the next call of the connection attempt
    /// fails, the retry heartbeats under this id instead of registering a second node that
    /// the SuperLink would sample until its lease ran out.
    async fn register(&mut self) -> Result<u64, FleetError> {
        let request = RegisterNode {
            heartbeat_interval: self.config.heartbeat_interval.as_secs_f64(),
            ..RegisterNode::default()
        };
        let Registration {
            node_id,
            incarnation,
        } = self.fleet.register_node(request).await?;
        self.met_incarnation(incarnation);
        match self.node_id.replace(node_id) {
            Some(old) if old != node_id => {
                tracing::info!(
                    node_id,
                    old_node_id = old,
                    "registered again under a new id"
                )
            }
            _ => tracing::info!(node_id, superlink = %self.config.superlink, "registered"),
        }
        Ok(node_id)
    }

    /// Drops every cache keyed by run or message id when `incarnation` is a SuperLink
    /// other than the one these caches were filled by (see the module doc).
    fn met_incarnation(&mut self, incarnation: u64) {
        if incarnation == 0 {
            return;
        }
        match self.incarnation.replace(incarnation) {
            Some(old) if old != incarnation => {
                let hosts = self.hosts.len();
                for host in self.hosts.values() {
                    host.stop(None);
                }
                self.hosts.clear();
                self.host_runs.clear();
                self.recent.clear();
                tracing::info!(
                    superlink = %self.config.superlink,
                    old_incarnation = %format_args!("{old:x}"),
                    incarnation = %format_args!("{incarnation:x}"),
                    hosts,
                    "the SuperLink started on fresh state: dropped the ClientApps, run configs, \
                     node state and instruction ids kept for its predecessor's runs"
                );
            }
            _ => {}
        }
    }

    /// One connection attempt: a node id the SuperLink knows, and its instruction stream.
    /// Also says whether the id is a fresh registration.
    async fn try_connect(&mut self) -> Result<(u64, bool, mpsc::Receiver<Message>), FleetError> {
        let interval = self.config.heartbeat_interval.as_secs_f64();
        let (node_id, fresh) = match self.node_id {
            Some(id) => match self.fleet.heartbeat(id, interval).await {
                Ok(()) => (id, false),
                Err(FleetError::UnknownNode(_)) => (self.register().await?, true),
                Err(e) => return Err(e),
            },
            None => (self.register().await?, true),
        };
        match self.fleet.subscribe(node_id).await {
            Ok(rx) => Ok((node_id, fresh, rx)),
            // Forgotten between the two calls: once more from the start.
            Err(FleetError::UnknownNode(_)) => {
                let node_id = self.register().await?;
                Ok((node_id, true, self.fleet.subscribe(node_id).await?))
            }
            Err(e) => Err(e),
        }
    }

    async fn connect(&mut self, myself: &ActorRef<SuperNodeMsg>) {
        if self.link.is_some() {
            return;
        }
        match self.try_connect().await {
            Ok((node_id, fresh, instructions)) => {
                self.connected(myself, node_id, fresh, instructions).await
            }
            Err(error @ (FleetError::Unavailable(_) | FleetError::UnknownNode(_))) => {
                self.retry_later(myself, error)
            }
            Err(error) => {
                let superlink = self.config.superlink.clone();
                self.finish(myself, Err(SuperNodeError::Refused { superlink, error }));
            }
        }
    }

    async fn connected(
        &mut self,
        myself: &ActorRef<SuperNodeMsg>,
        node_id: u64,
        fresh: bool,
        instructions: mpsc::Receiver<Message>,
    ) {
        self.node_id = Some(node_id);
        if !fresh {
            tracing::info!(node_id, "reconnected");
        }
        self.outage = None;
        if self.session > 0 {
            // Not the first session: the link was lost and is back.
            crate::meter::reconnected();
        }
        self.session += 1;
        let args = SessionArgs {
            node: myself.clone(),
            session: self.session,
            node_id,
            fleet: self.fleet.clone(),
            interval: self.config.heartbeat_interval,
            policy: self.config.heartbeat,
        };
        self.link = Some(Session::start(args, instructions));
        // Whatever was queued while we were away and is not on the stream yet.
        match self.fleet.pull_messages(node_id).await {
            Ok(queued) => {
                for message in queued {
                    self.instruction(myself, message).await;
                }
            }
            Err(error) => self.link_lost(myself, self.session, error),
        }
    }

    fn retry_later(&mut self, myself: &ActorRef<SuperNodeMsg>, error: FleetError) {
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: Instant::now(),
            failures: 0,
        });
        outage.failures += 1;
        let elapsed = outage.since.elapsed();
        let failures = outage.failures;
        let decision = self.config.budget().after_failure(
            &self.config.backoff,
            failures,
            elapsed,
            rand::random(),
        );
        match decision {
            RetryDecision::RetryAfter(delay) => {
                tracing::info!(
                    superlink = %self.config.superlink,
                    attempt = failures,
                    "SuperLink unreachable ({error}); retrying in {:.1} s",
                    delay.as_secs_f64()
                );
                myself.send_after(delay, || SuperNodeMsg::Connect);
            }
            RetryDecision::GiveUp(limit) => {
                let gave_up = SuperNodeError::GaveUp {
                    superlink: self.config.superlink.clone(),
                    attempts: failures,
                    elapsed,
                    limit,
                    last_error: error,
                };
                self.finish(myself, Err(gave_up));
            }
        }
    }

    fn link_lost(&mut self, myself: &ActorRef<SuperNodeMsg>, session: u64, error: FleetError) {
        if session != self.session || self.link.is_none() {
            return;
        }
        self.link = None;
        if let FleetError::UnknownNode(id) = error {
            tracing::warn!(
                node_id = id,
                "the SuperLink forgot this node; registering again"
            );
        } else {
            tracing::warn!(node_id = ?self.node_id, "link to the SuperLink lost: {error}");
        }
        self.outage = Some(Outage {
            since: Instant::now(),
            failures: 0,
        });
        let _ = myself.cast(SuperNodeMsg::Connect);
    }

    /// Hands an instruction to its run's host, starting one if needed.
    async fn instruction(&mut self, myself: &ActorRef<SuperNodeMsg>, message: Message) {
        if let Err(e) = floret_core::message::validate_ttl(message.metadata.ttl) {
            // No reply: it would carry the same TTL, and the SuperLink expires the
            // instruction on its own clock anyway.
            tracing::warn!(message_id = %message.metadata.message_id, "instruction refused: {e}");
            return;
        }
        if !self.recent.insert(&message.metadata.message_id) {
            tracing::debug!(message_id = %message.metadata.message_id, "duplicate instruction dropped");
            return;
        }
        let run_id = message.metadata.run_id;
        let host = match self.hosts.get(&run_id) {
            Some(host) => host.clone(),
            None => match self.spawn_host(myself, run_id).await {
                Ok(host) => host,
                Err(reason) => {
                    self.answer(&message, error_code::LOAD_CLIENT_APP_EXCEPTION, reason);
                    return;
                }
            },
        };
        if let Err(ractor::MessagingErr::SendErr(HostMsg::Execute(message))) =
            host.cast(HostMsg::Execute(message))
        {
            // The host stopped between our lookup and the send.
            let reason = format!("the ClientApp host of run {run_id} has stopped");
            self.answer(&message, error_code::LOAD_CLIENT_APP_EXCEPTION, reason);
        }
    }

    async fn spawn_host(
        &mut self,
        myself: &ActorRef<SuperNodeMsg>,
        run_id: u64,
    ) -> Result<ActorRef<HostMsg>, String> {
        let args = HostArgs {
            run_id,
            node_config: self.config.node_config.clone(),
            fleet: self.fleet.clone(),
            catalog: self.catalog.clone(),
            backoff: self.config.backoff,
            fabs: self.fabs.clone(),
            transport: self.config.transport,
        };
        let (host, _) = Actor::spawn_linked(None, ClientAppHost, args, myself.get_cell())
            .await
            .map_err(|e| format!("could not start a ClientApp host for run {run_id}: {e}"))?;
        self.hosts.insert(run_id, host.clone());
        self.host_runs.insert(host.get_id(), run_id);
        Ok(host)
    }

    fn answer(&self, instruction: &Message, code: i64, reason: String) {
        tracing::warn!(run_id = instruction.metadata.run_id, "{reason}");
        let md = &instruction.metadata;
        reply::spawn_push(
            self.fleet.clone(),
            self.config.backoff,
            reply::error_reply(md, code, reason),
            reply::expires_at(md),
        );
    }

    async fn shutdown(&mut self, myself: &ActorRef<SuperNodeMsg>) {
        self.link = None;
        if let Some(node_id) = self.node_id {
            match tokio::time::timeout(DEACTIVATE_WAIT, self.fleet.deactivate_node(node_id)).await {
                Ok(Ok(())) => tracing::info!(node_id, "deactivated"),
                Ok(Err(e)) => tracing::info!(node_id, "could not deactivate: {e}"),
                Err(_) => tracing::info!(node_id, "deactivation timed out"),
            }
        }
        if let Some(fabs) = &self.fabs {
            // Hosts waiting on an app process give up, so that they can stop.
            fabs.io.close();
            fabs.launcher.kill_all();
        }
        for host in self.hosts.values() {
            host.stop(None);
        }
        self.finish(myself, Ok(()));
    }
}

impl Actor for SuperNodeActor {
    type Msg = SuperNodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SuperNodeMsg>,
        args: NodeArgs,
    ) -> Result<NodeState, ActorProcessingErr> {
        myself.cast(SuperNodeMsg::Connect)?;
        Ok(NodeState {
            config: Arc::new(args.config),
            fleet: args.fleet,
            catalog: args.catalog,
            fabs: args.fabs,
            node_id: None,
            session: 0,
            link: None,
            outage: None,
            hosts: HashMap::new(),
            host_runs: HashMap::new(),
            recent: RecentIds::new(RECENT_IDS),
            incarnation: None,
            exit: Some(args.exit),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SuperNodeMsg>,
        msg: SuperNodeMsg,
        st: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SuperNodeMsg::Connect => st.connect(&myself).await,
            SuperNodeMsg::LinkLost { session, error } => st.link_lost(&myself, session, error),
            SuperNodeMsg::Instruction(message) => st.instruction(&myself, message).await,
            SuperNodeMsg::Shutdown(reply) => {
                st.shutdown(&myself).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<SuperNodeMsg>,
        event: SupervisionEvent,
        st: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        if let Some(run_id) = st.host_runs.remove(&cell.get_id()) {
            if st
                .hosts
                .get(&run_id)
                .is_some_and(|h| h.get_id() == cell.get_id())
            {
                st.hosts.remove(&run_id);
            }
            if let Some(err) = failure {
                tracing::warn!(
                    run_id,
                    "ClientApp host failed ({err}); the run's next message starts a fresh one"
                );
            }
        }
        Ok(())
    }
}
