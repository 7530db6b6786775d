//! The two protocols of a deployment, as traits over core types.
//!
//! `Fleet` is what a SuperNode asks of its SuperLink; `Control` is what the `flwr` CLI asks.
//! The SuperLink implements both over its state; each transport (gRPC, QUIC) carries them
//! and offers a client that implements the same trait. So a SuperNode is written against
//! `dyn Fleet` and runs unchanged in-process, over gRPC, over QUIC, or through a
//! fault-injecting wrapper in the chaos tests.

use crate::app::RunEvent;
use crate::message::Message;
use crate::run::AppRef;
use crate::run::RunInfo;
use crate::user_config::UserConfig;
use async_trait::async_trait;
use bytes::Bytes;
use thiserror::Error;
use tokio::sync::mpsc;

/// Why the SuperLink refused a fleet request, or could not be reached.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FleetError {
    /// The SuperLink does not know this node (it restarted, or declared the node offline):
    /// the SuperNode registers again.
    #[error("node {0} is not registered with this SuperLink")]
    UnknownNode(u64),
    /// The request names a run the SuperLink does not have.
    #[error("no run with id {0}")]
    UnknownRun(u64),
    /// The request is malformed or asks for something the SuperLink does not serve; why.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// Transport-level failure: connection refused, reset, timed out. Worth retrying.
    #[error("SuperLink unavailable: {0}")]
    Unavailable(String),
    /// Node authentication refused the request: the node's key is not on the allow-list
    /// (any more), the request was not signed, signed badly, replayed or too old. Not worth
    /// retrying with the same key.
    #[error("not authenticated: {0}")]
    Unauthenticated(String),
}

/// A SuperNode introducing itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegisterNode {
    /// The node's public key (SubjectPublicKeyInfo DER) when node authentication is on. The
    /// gRPC service fills it with the key that signed the request, so it is verified.
    pub public_key: Bytes,
    /// Seconds between the heartbeats this node promises to send.
    pub heartbeat_interval: f64,
}

/// What a SuperLink answers a registering node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Registration {
    /// The id the node goes by from now on.
    pub node_id: u64,
    /// Who the SuperLink is: a new value means a SuperLink on fresh state, whose run and
    /// message ids may repeat the last one's for other things, so the node drops whatever
    /// it keeps by those ids. 0 when the SuperLink does not say; the node keeps its caches.
    pub incarnation: u64,
}

/// SuperNode -> SuperLink.
#[async_trait]
pub trait Fleet: Send + Sync {
    /// Registers and activates a node; returns its id and the SuperLink's incarnation.
    async fn register_node(&self, request: RegisterNode) -> Result<Registration, FleetError>;
    /// A node leaving on purpose: its pending messages are answered with errors at once.
    async fn deactivate_node(&self, node_id: u64) -> Result<(), FleetError>;
    /// "Still here"; `heartbeat_interval` may change from one beat to the next.
    async fn heartbeat(&self, node_id: u64, heartbeat_interval: f64) -> Result<(), FleetError>;
    /// Instructions queued for the node, oldest first.
    async fn pull_messages(&self, node_id: u64) -> Result<Vec<Message>, FleetError>;
    /// Replies from the node.
    async fn push_messages(&self, node_id: u64, messages: Vec<Message>) -> Result<(), FleetError>;
    /// The run a message belongs to: which app, which config.
    async fn get_run(&self, run_id: u64) -> Result<RunInfo, FleetError>;
    /// A FAB (app bundle) by its sha256, for runs of apps that are not built in.
    async fn get_fab(&self, fab_hash: &str) -> Result<Bytes, FleetError> {
        Err(FleetError::Invalid(format!(
            "this SuperLink does not serve app bundles (asked for FAB {fab_hash})"
        )))
    }
    /// `Ok` if `node_id` is registered, else [`FleetError::UnknownNode`]. The transport asks
    /// before it keeps chunks a node uploads, so that an id nobody registered cannot make
    /// the SuperLink hold anything. By default every id passes (test doubles).
    async fn check_node(&self, node_id: u64) -> Result<(), FleetError> {
        let _ = node_id;
        Ok(())
    }
    /// Instructions for the node as soon as they are queued (push, not poll). The channel
    /// closes when the link drops; the node then reconnects and subscribes again.
    async fn subscribe(&self, node_id: u64) -> Result<mpsc::Receiver<Message>, FleetError>;
}

/// Why the SuperLink refused a control request, or could not be reached.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ControlError {
    /// No run has this id (or the caller may not see it).
    #[error("no run with id {0}: `flwr ls` lists the runs")]
    UnknownRun(u64),
    /// The run has already ended, so it cannot be stopped.
    #[error("run {0} has already finished")]
    Finished(u64),
    /// The run request itself is wrong: unknown app component, bad run config.
    #[error("{0}")]
    Invalid(String),
    /// Transport-level failure: connection refused, reset, timed out. Worth retrying.
    #[error("SuperLink unavailable: {0}")]
    Unavailable(String),
    /// The call carried no valid login (user authentication is on): the message says how
    /// to log in.
    #[error("{0}")]
    Unauthenticated(String),
    /// The call's access token has expired: refresh it and call again.
    #[error("the access token has expired")]
    TokenExpired,
    /// The caller is logged in, but the call needs a role they do not have (managing
    /// SuperNode keys needs an admin): logging in again would not help, so it is not
    /// `Unauthenticated`. The message names the role.
    #[error("{0}")]
    Forbidden(String),
}

/// `flwr run` against a SuperLink.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StartRun {
    /// The app to run, with its FAB hash when it is not built in.
    pub app: AppRef,
    /// The name of the `pyproject.toml` federation the run is submitted through.
    pub federation: String,
    /// The app's run config with the user's overrides applied.
    pub run_config: UserConfig,
    /// The federation's `options.*`, flattened (`num-supernodes`, ...).
    pub federation_options: UserConfig,
    /// The packed FAB when the app is not built into the daemons; its sha256 is
    /// `app.fab_hash`.
    pub fab: Option<Bytes>,
}

/// `flwr` CLI -> SuperLink.
#[async_trait]
pub trait Control: Send + Sync {
    /// Creates the run, starts its ServerApp and returns the run's id.
    async fn start_run(&self, request: StartRun) -> Result<u64, ControlError>;
    /// Stops an unfinished run: it ends as `finished:stopped`.
    async fn stop_run(&self, run_id: u64) -> Result<(), ControlError>;
    /// The runs the caller may see (all of them without user authentication).
    async fn list_runs(&self) -> Result<Vec<RunInfo>, ControlError>;
    /// One run the caller may see.
    async fn get_run(&self, run_id: u64) -> Result<RunInfo, ControlError>;
    /// The run's events from its start. With `follow`, the channel stays open until the run
    /// has finished; without, it closes after the events recorded so far.
    async fn stream_events(
        &self,
        run_id: u64,
        follow: bool,
    ) -> Result<mpsc::Receiver<RunEvent>, ControlError>;

    // Node authentication (`flwr supernode register/list/unregister`). Defaults refuse, so
    // a Control without node keys (a test double) need not implement them.

    /// Adds a SuperNode public key (SubjectPublicKeyInfo DER) to the allow-list and returns
    /// the node id it will have; the same key again returns the same id.
    async fn register_node_key(&self, public_key: Bytes) -> Result<u64, ControlError> {
        let _ = public_key;
        Err(ControlError::Invalid(
            "this SuperLink does not manage SuperNode keys".into(),
        ))
    }
    /// The SuperNodes the SuperLink knows: those with an allowed key, and those connected.
    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ControlError> {
        Err(ControlError::Invalid(
            "this SuperLink does not manage SuperNode keys".into(),
        ))
    }
    /// Removes a node's key from the allow-list and disconnects it: its next call fails
    /// as unauthenticated.
    async fn unregister_node_key(&self, node_id: u64) -> Result<(), ControlError> {
        let _ = node_id;
        Err(ControlError::Invalid(
            "this SuperLink does not manage SuperNode keys".into(),
        ))
    }
}

/// One SuperNode as `flwr supernode list` shows it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeInfo {
    /// The node's id, as the SuperLink assigned it.
    pub node_id: u64,
    /// SubjectPublicKeyInfo DER; empty for a node that connected without a key (node
    /// authentication off).
    pub public_key: Bytes,
    /// Connected, with a live heartbeat lease.
    pub online: bool,
    /// Unix seconds when the key was allowed (or the node connected, without a key).
    pub registered_at: f64,
    /// Unix seconds of the last registration or heartbeat, if any.
    pub last_seen: Option<f64>,
}

/// Who may act as a SuperNode, asked by a transport that verified a request's signature.
/// The SuperLink's state implements it over its allow-list.
pub trait NodeAuthority: Send + Sync {
    /// Whether a key (SubjectPublicKeyInfo DER) is on the allow-list.
    fn admits(&self, public_key: &[u8]) -> bool;
    /// Whether `node_id` is the node bound to that key.
    fn owns(&self, node_id: u64, public_key: &[u8]) -> bool;
}
