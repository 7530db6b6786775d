//! `LinkFleet`: the SuperLink's side of the Fleet protocol, served straight from its
//! `LinkState`. The gRPC server wraps it; tests and in-process deployments hand it to a
//! SuperNode as is, which makes it the in-memory transport too.
//!
//! Every call is a short, synchronous state operation except `subscribe`, which starts a
//! per-node delivery task (see `delivery`) after putting back in the queue whatever the
//! node was sent and has not answered: its previous stream may have died with those
//! instructions in it, and the SuperNode drops the ones it already has. Liveness follows `HeartbeatPolicy`: registering
//! and every heartbeat renew a node's lease; the sweeper forgets nodes whose lease ran out.
//! A node is offered to ServerApps only once it has heartbeated, subscribed or pulled
//! after registering (`NodeStore::node_alive`): registering alone proves nothing.

use crate::policy::clock::unix_now;
use crate::policy::heartbeat::{HeartbeatPolicy, check_interval};
use crate::state::{LinkState, NodeLease, StateError};
use crate::superlink::delivery::Subscriptions;
use crate::superlink::run_end::{self, RunEnd};
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{Fleet, FleetError, Message, RegisterNode, Registration, RunInfo, trace_context};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Why the instructions of a keyed node's previous session are answered when its key
/// registers again: the ServerApp learns it must not wait for those replies.
const REPLACED: &str =
    "it restarted, and its new session does not have the work sent to the old one";

/// See the module doc.
pub struct LinkFleet {
    state: Arc<dyn LinkState>,
    /// Turns a node's promised interval into its lease.
    policy: HeartbeatPolicy,
    subscriptions: Arc<Subscriptions>,
    /// Set at SuperLink shutdown: from then on every call is `Unavailable`, so nodes back off
    /// and reconnect to whatever SuperLink comes next instead of talking to a dead one.
    closed: AtomicBool,
}

impl LinkFleet {
    /// Serves the Fleet protocol from `state`, leasing nodes by `policy` (validated by the
    /// caller: see `SuperLinkService::start`). Open, with no node subscribed.
    pub fn new(state: Arc<dyn LinkState>, policy: HeartbeatPolicy) -> LinkFleet {
        LinkFleet {
            state,
            policy,
            subscriptions: Arc::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// Nodes with a live instruction stream.
    pub fn subscribers(&self) -> usize {
        self.subscriptions.len()
    }

    /// Refuses every further call and closes every instruction stream.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.subscriptions.close();
    }

    fn check_open(&self) -> Result<(), FleetError> {
        if self.closed.load(Ordering::SeqCst) {
            Err(FleetError::Unavailable(
                "the SuperLink is shutting down".into(),
            ))
        } else {
            Ok(())
        }
    }

    fn lease(&self, heartbeat_interval: f64) -> Result<NodeLease, FleetError> {
        check_interval(heartbeat_interval).map_err(FleetError::Invalid)?;
        Ok(NodeLease {
            heartbeat_interval,
            online_until: self.policy.online_until(unix_now(), heartbeat_interval),
        })
    }

    /// Registration under node authentication: only an allowed key, and always under the
    /// id bound to it, so a restarted SuperNode keeps its identity.
    fn register_keyed(&self, public_key: &[u8], lease: NodeLease) -> Result<u64, FleetError> {
        if public_key.is_empty() {
            return Err(FleetError::Unauthenticated(
                "this SuperLink requires node authentication: start the SuperNode with --auth-supernode-private-key".into(),
            ));
        }
        let node_id = self.state.node_id_of_key(public_key).ok_or_else(|| {
            FleetError::Unauthenticated(
                "the SuperNode's public key is not on the SuperLink's allow-list: add it with `flwr supernode register` or --auth-list-public-keys".into(),
            )
        })?;
        // If the key's node is still registered, the SuperNode restarted before its old
        // session's lease ran out (a running SuperNode that reconnects heartbeats under its
        // id and does not register). The old process is gone with whatever it was sent:
        // answer that now, as the sweep would after two missed heartbeats, and register
        // the node afresh under its id.
        let now = unix_now();
        self.subscriptions.end(node_id);
        if self.state.unregister_node(node_id, REPLACED, now) {
            tracing::info!(
                node_id,
                "a restarted SuperNode replaced its previous session"
            );
        }
        self.state
            .activate_node(node_id, lease)
            .map_err(fleet_error)?;
        self.state.node_seen(node_id, now);
        tracing::info!(
            node_id,
            heartbeat_interval = lease.heartbeat_interval,
            "authenticated node registered"
        );
        Ok(node_id)
    }

    fn known(&self, node_id: u64) -> Result<(), FleetError> {
        if self.state.has_node(node_id) {
            Ok(())
        } else {
            Err(FleetError::UnknownNode(node_id))
        }
    }
}

impl LinkFleet {
    /// A reply the state could not store (its database is full or failing) is lost, and
    /// the round waiting for it would wait out its timeout with the run showing `running`:
    /// the run is failed at once instead, with the reason, for `flwr ls` to show. Only a
    /// running run is failed (a node names the run of its reply, which a stale reply may
    /// name wrongly).
    fn fail_run(&self, run_id: u64, node_id: u64, e: &StateError) {
        if self.state.run_status(run_id) != Some(floret_core::RunStatus::Running) {
            return;
        }
        let reason = format!("a reply from node {node_id} could not be stored: {e}");
        tracing::error!(run_id, node_id, "{reason}");
        run_end::record(self.state.as_ref(), run_id, &RunEnd::Failed(reason));
    }
}

fn fleet_error(e: StateError) -> FleetError {
    match e {
        StateError::UnknownNode(n) => FleetError::UnknownNode(n),
        StateError::UnknownRun(r) => FleetError::UnknownRun(r),
        e @ StateError::Storage(_) => FleetError::Unavailable(e.to_string()),
        other => FleetError::Invalid(other.to_string()),
    }
}

#[async_trait]
impl Fleet for LinkFleet {
    async fn register_node(&self, request: RegisterNode) -> Result<Registration, FleetError> {
        self.check_open()?;
        let lease = self.lease(request.heartbeat_interval)?;
        let node_id = if self.state.node_auth() {
            self.register_keyed(&request.public_key, lease)?
        } else {
            let node_id = self.state.create_node(lease).map_err(fleet_error)?;
            tracing::info!(
                node_id,
                heartbeat_interval = request.heartbeat_interval,
                "node registered"
            );
            node_id
        };
        Ok(Registration {
            node_id,
            incarnation: self.state.incarnation(),
        })
    }

    async fn deactivate_node(&self, node_id: u64) -> Result<(), FleetError> {
        self.check_open()?;
        self.subscriptions.end(node_id);
        if self
            .state
            .unregister_node(node_id, "it deactivated", unix_now())
        {
            tracing::info!(node_id, "node deactivated");
            Ok(())
        } else {
            Err(FleetError::UnknownNode(node_id))
        }
    }

    async fn heartbeat(&self, node_id: u64, heartbeat_interval: f64) -> Result<(), FleetError> {
        self.check_open()?;
        let lease = self.lease(heartbeat_interval)?;
        self.state.renew_node(node_id, lease).map_err(fleet_error)?;
        self.state.node_alive(node_id).map_err(fleet_error)?;
        self.state.node_seen(node_id, unix_now());
        Ok(())
    }

    async fn pull_messages(&self, node_id: u64) -> Result<Vec<Message>, FleetError> {
        self.check_open()?;
        let messages = self
            .state
            .pull_instructions(node_id, usize::MAX)
            .map_err(fleet_error)?;
        // A node that polls instead of subscribing (as Flower's SuperNodes do) is alive too.
        self.state.node_alive(node_id).map_err(fleet_error)?;
        Ok(messages
            .into_iter()
            .map(|m| trace_context::delivered(m, node_id))
            .collect())
    }

    /// Stores every acceptable reply; if some were refused (not sent to this node, already
    /// answered, run gone) the others still count and the error lists the refused ones.
    async fn push_messages(&self, node_id: u64, messages: Vec<Message>) -> Result<(), FleetError> {
        self.check_open()?;
        self.known(node_id)?;
        let total = messages.len();
        let now = unix_now();
        let mut refused = Vec::new();
        for reply in messages {
            let span = trace_context::message_span("receive reply", &reply, node_id, "");
            let _entered = span.enter();
            let claimed = reply.metadata.src_node_id;
            let outcome = if claimed != node_id {
                Err(format!(
                    "reply claims to come from node {claimed}, but node {node_id} pushed it"
                ))
            } else if let Err(e) = floret_core::message::validate_ttl(reply.metadata.ttl) {
                Err(e.to_string())
            } else {
                let run_id = reply.metadata.run_id;
                self.state.push_reply(reply, now).map_err(|e| {
                    if matches!(e, StateError::Storage(_)) {
                        self.fail_run(run_id, node_id, &e);
                    }
                    e.to_string()
                })
            };
            if let Err(reason) = outcome {
                tracing::debug!(node_id, "reply refused: {reason}");
                refused.push(reason);
            }
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(FleetError::Invalid(format!(
                "refused {} of {total} replies: {}",
                refused.len(),
                refused.join("; ")
            )))
        }
    }

    async fn get_run(&self, run_id: u64) -> Result<RunInfo, FleetError> {
        self.check_open()?;
        self.state.run(run_id).ok_or(FleetError::UnknownRun(run_id))
    }

    async fn get_fab(&self, fab_hash: &str) -> Result<Bytes, FleetError> {
        self.check_open()?;
        self.state.fab(fab_hash).ok_or_else(|| {
            FleetError::Invalid(format!("this SuperLink has no FAB with hash {fab_hash:?}"))
        })
    }

    async fn check_node(&self, node_id: u64) -> Result<(), FleetError> {
        self.check_open()?;
        self.known(node_id)
    }

    async fn subscribe(&self, node_id: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        self.check_open()?;
        let signal = self.state.node_signal(node_id).map_err(fleet_error)?;
        self.state.node_alive(node_id).map_err(fleet_error)?;
        // A new stream means the old one is gone, maybe with instructions in it.
        let again = self.state.redeliver(node_id).map_err(fleet_error)?;
        if again > 0 {
            tracing::info!(
                node_id,
                count = again,
                "redelivering unanswered instructions"
            );
        }
        self.subscriptions
            .subscribe(self.state.clone(), node_id, signal)
            .ok_or_else(|| FleetError::Unavailable("the SuperLink is shutting down".into()))
    }
}
