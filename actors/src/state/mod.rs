//! `LinkState`: everything a SuperLink knows — nodes, runs, queued instructions, replies
//! and run events. The trait is synchronous and holds no actor handles, so the in-memory
//! and the SQLite store sit behind the same actors; the rules both obey are written once,
//! in `rules`. Waiting is done through the per-run `RunSignals` and per-node signals, never
//! by polling.
//!
//! Nodes come and go: a node that deactivates or misses its heartbeats is forgotten, and
//! every instruction queued or in flight to it is answered at once with an error reply
//! (`NODE_UNAVAILABLE`), as is an instruction sent to a node that is not there. So a
//! ServerApp's round continues without waiting for a timeout, and addressing a node that
//! just vanished never fails a run.

mod batches;
mod memory;
mod node_keys;
mod nodes;
pub mod retention;
mod rules;
// The SuperLink's durable store; an app binary (floret-app) runs only the in-memory one
// and leaves SQLite, a C library, out of its build.
#[cfg(feature = "sqlite")]
mod sqlite;

pub use crate::policy::clock::unix_now;
pub use memory::MemoryLinkState;
pub use retention::Retention;
#[cfg(feature = "sqlite")]
pub use sqlite::{OpenError, SqliteLinkState};

use bytes::Bytes;
pub use floret_core::RunInfo;
use floret_core::{
    AppRef, InvalidTransition, Message, NodeAuthority, NodeInfo, NodeSet, ReplyFold, RunEvent,
    RunStatus, UserConfig,
};
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::Notify;

/// What is needed to create a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewRun {
    /// The app to run, with its FAB hash when it is not built in.
    pub app: AppRef,
    /// The name of the `pyproject.toml` federation the run was submitted through.
    pub federation: String,
    /// The app's run config with the user's overrides applied.
    pub run_config: UserConfig,
    /// The user who starts it; empty without user authentication.
    pub owner: String,
    /// The federation's `options.*` as submitted (`StartRun.federation_options`); empty
    /// for a deployment run. Kept with the run so that a `--simulation` SuperLink can build
    /// a resumed run's virtual fleet again.
    pub federation_options: UserConfig,
}

/// Why a state operation was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StateError {
    /// No run has this id (it was never created).
    #[error("no run with id {0}")]
    UnknownRun(u64),
    /// The run's state machine does not allow the requested status change.
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    /// Only a `running` run may send instructions to nodes.
    #[error("run {0} is not running, so it cannot send messages")]
    RunNotRunning(u64),
    /// The run has finished, so its event log and checkpoint are final.
    #[error("run {0} has finished; its log is closed")]
    RunFinished(u64),
    /// The node was never registered or has been forgotten (deactivated, or its lease
    /// ran out).
    #[error("node {0} is not registered")]
    UnknownNode(u64),
    /// A reply names no instruction in flight: it never existed, was answered already
    /// (a reply is accepted once) or was dropped with its run.
    #[error("reply to unknown or already answered message {0:?}")]
    UnknownReply(String),
    /// A node answered an instruction sent to another node; only the addressee may answer.
    #[error("reply to message {message_id:?} came from node {from}, but it was sent to node {to}")]
    WrongReplier {
        /// The instruction the reply answers.
        message_id: String,
        /// The node that sent the reply.
        from: u64,
        /// The node the instruction was sent to.
        to: u64,
    },
    /// The store could not carry out a write (disk full, read-only file, I/O error); the
    /// state is as it was before the call.
    #[error("the SuperLink's database refused the write: {0}")]
    Storage(String),
}

/// Wake-ups for whoever waits on a run: its ServerApp (replies) and its watchers (events).
#[derive(Debug, Default)]
pub struct RunSignals {
    /// Notified when a reply for the run arrives, and when the run's status changes (so a
    /// ServerApp waiting on replies sees that its run ended).
    pub replies: Notify,
    /// Notified when an event is appended to the run's log, and when its status changes.
    pub events: Notify,
}

/// A node's heartbeat promise and the moment it runs out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeLease {
    /// Seconds between the beats the node promised.
    pub heartbeat_interval: f64,
    /// Unix seconds after which the node counts as offline (see `heartbeat::HeartbeatPolicy`).
    pub online_until: f64,
}

/// What one `sweep` did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sweep {
    /// Nodes declared offline.
    pub offline: Vec<u64>,
    /// Instructions answered with `MESSAGE_TTL_EXPIRED`.
    pub expired: usize,
}

/// The SuperLink's state store: every concern below, in one object the actors share as
/// `Arc<dyn LinkState>`. Each concern is a trait of its own, so a reader (or a test double)
/// sees what belongs together; a trait object of `LinkState` has all their methods. Code
/// that calls them on a concrete store imports [`prelude`].
pub trait LinkState:
    RunStore + NodeStore + MessageStore + EventLog + FabStore + NodeKeyStore + CheckpointStore
{
    /// Whether this store outlives the process (a database file). When it does, unfinished
    /// runs are resumed on the next start instead of being stopped at shutdown.
    fn is_durable(&self) -> bool {
        false
    }

    /// Who this state is to SuperNodes, told them at registration: a store made fresh
    /// (`--database :memory:`, a new or replaced database file) has a new one, and a
    /// database reopened after a crash keeps its own. A SuperNode that sees it change drops
    /// everything it keeps by run or message id, since a fresh SuperLink reuses neither for
    /// the same thing. Never 0 for a SuperLink's store (0 reads as "not said"); a
    /// simulation's store, which no SuperNode sees, answers 0.
    fn incarnation(&self) -> u64;
}

/// Every trait of the state store, for code that calls their methods on a concrete store.
pub mod prelude {
    pub use super::{
        CheckpointStore, EventLog, FabStore, LinkState, MessageStore, NodeKeyStore, NodeStore,
        RunStore, SimulationStore,
    };
}

/// Runs and their status.
pub trait RunStore: Send + Sync + 'static {
    /// Creates a run in `pending` and returns its id.
    fn create_run(&self, run: NewRun) -> Result<u64, StateError>;
    /// One run, `None` if no run has that id.
    fn run(&self, run_id: u64) -> Option<RunInfo>;
    /// Every run, by id (oldest first), as `flwr ls` lists them.
    fn runs(&self) -> Vec<RunInfo>;
    /// A run's status alone, cheap enough to check on every wait.
    fn run_status(&self, run_id: u64) -> Option<RunStatus>;
    /// Moves a run to `status` if the state machine allows it; `reason` explains failures.
    fn set_run_status(
        &self,
        run_id: u64,
        status: RunStatus,
        reason: &str,
    ) -> Result<RunInfo, StateError>;
    /// The run's wake-ups, shared with every waiter on it; `UnknownRun` if it does not exist.
    fn signals(&self, run_id: u64) -> Result<Arc<RunSignals>, StateError>;
    /// Counts one more resume of a run by a restarted SuperLink and returns how many
    /// resumes that makes since the run last left a SuperLink cleanly. Durable before it
    /// returns: a run whose ServerApp crashes the SuperLink must find the count raised at
    /// the next start, or it would be resumed (and crash it) forever.
    fn count_resume(&self, run_id: u64) -> Result<u32, StateError>;
    /// Sets a run's resume count back to 0: a clean shutdown suspended it, so the resumes
    /// so far did not end in a crash and must not count towards the limit.
    fn clear_resumes(&self, run_id: u64) -> Result<(), StateError>;
    /// The `federation_options` the run was created with; `UnknownRun` if it does not exist.
    fn federation_options(&self, run_id: u64) -> Result<UserConfig, StateError>;
    /// Deletes finished runs (the ones [`Retention::expired`] names) with everything kept
    /// for them: record, event log, checkpoint, messages, and each FAB no run left refers
    /// to; a durable store then gives the freed space back to the file system. Unknown
    /// and unfinished runs among `run_ids` are left alone. Returns how many were deleted.
    fn delete_runs(&self, run_ids: &[u64]) -> Result<usize, StateError>;
}

/// The registry of connected SuperNodes and their leases.
pub trait NodeStore: Send + Sync + 'static {
    /// Registers a SuperNode under a fresh random non-zero id.
    fn create_node(&self, lease: NodeLease) -> Result<u64, StateError>;
    /// A heartbeat: renews the node's lease. `UnknownNode` once it was forgotten.
    fn renew_node(&self, node_id: u64, lease: NodeLease) -> Result<(), StateError>;
    /// Registers a node under a known id (a keyed node connecting, maybe again); renews
    /// its lease when it is registered already.
    fn activate_node(&self, node_id: u64, lease: NodeLease) -> Result<(), StateError>;
    /// Forgets a node and answers its queued and in-flight instructions with
    /// `NODE_UNAVAILABLE` ("node N unavailable: {reason}"). False if it was not registered.
    fn unregister_node(&self, node_id: u64, reason: &str, now: f64) -> bool;
    /// Every registered node that has shown it is alive since it registered (see
    /// `node_alive`): the nodes a ServerApp may sample and wait for. Shared, not copied.
    fn node_ids(&self) -> NodeSet;
    /// The node showed it is alive (a heartbeat, its instruction stream, a pull): from now
    /// on it is in `node_ids`. A node that only registered is not, so that a `RegisterNode`
    /// nobody follows up cannot hold up every round until its lease runs out. Kept in
    /// memory only: after a restart a node counts once it is back. `UnknownNode` if it is
    /// not registered.
    fn node_alive(&self, node_id: u64) -> Result<(), StateError>;
    /// Whether a node is registered now; cheap, for checks on every request.
    fn has_node(&self, node_id: u64) -> bool;
    /// Wakes whoever delivers a node's instructions: when some are queued for it, and when
    /// the node is forgotten.
    fn node_signal(&self, node_id: u64) -> Result<Arc<Notify>, StateError>;
    /// Forgets the nodes whose lease ended before `now` (as `unregister_node`) and answers
    /// instructions whose TTL ended with `MESSAGE_TTL_EXPIRED`.
    fn sweep(&self, now: f64) -> Sweep;
}

/// Instructions from ServerApps to nodes and the replies back.
pub trait MessageStore: Send + Sync + 'static {
    /// Stores instructions from a run's ServerApp, filling run id, message id, source and
    /// creation time; returns the ids in order. An instruction to a node that is not
    /// registered is answered at once with a `NODE_UNAVAILABLE` error reply.
    fn push_instructions(
        &self,
        run_id: u64,
        messages: Vec<Message>,
        now: f64,
    ) -> Result<Vec<String>, StateError>;
    /// How many shards of a phase replies can be folded in at once where they arrive
    /// (`push_instructions_folding`); 0 when this store delivers every reply whole. A
    /// simulation's store folds on its workers: as many lanes as it has workers.
    fn fold_lanes(&self) -> usize {
        0
    }
    /// `push_instructions`, and each accepted reply to these instructions goes to `fold`
    /// on the thread that pushes it (`ReplyFold`), and nothing is stored in its place
    /// (one the fold hands back is stored whole). A store with no lanes (`fold_lanes` 0)
    /// stores the replies whole.
    fn push_instructions_folding(
        &self,
        run_id: u64,
        messages: Vec<Message>,
        now: f64,
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, StateError> {
        drop(fold);
        self.push_instructions(run_id, messages, now)
    }
    /// `push_instructions_folding` of `template` to each of `nodes` (`Grid::broadcast_folding`):
    /// the ids in the order of `nodes`. A store that keeps the broadcast whole makes no
    /// message per node until one is taken; the default makes them all.
    fn push_broadcast_folding(
        &self,
        run_id: u64,
        template: Message,
        nodes: &[u64],
        now: f64,
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, StateError> {
        let messages = template.to_each(nodes);
        self.push_instructions_folding(run_id, messages, now, fold)
    }
    /// Up to `limit` queued instructions for one node, oldest first; `UnknownNode` when the
    /// node is not registered (any more). The store keeps what it hands out here until it
    /// is answered, for `redeliver`.
    fn pull_instructions(&self, node_id: u64, limit: usize) -> Result<Vec<Message>, StateError>;
    /// Puts the node's instructions taken with `pull_instructions` and not answered yet back
    /// at the head of its queue, in their order; returns how many. A reconnecting node may
    /// have lost them with its old connection; it drops those it already has by message id.
    /// A reply is still accepted only once.
    fn redeliver(&self, node_id: u64) -> Result<usize, StateError>;
    /// Stores a reply; refuses replies to unknown messages and duplicates.
    fn push_reply(&self, reply: Message, now: f64) -> Result<(), StateError>;
    /// Replies of a run not handed out yet, oldest first.
    fn take_replies(&self, run_id: u64) -> Result<Vec<Message>, StateError>;
    /// Replies of a run answering any of `message_ids`, removed from the queue.
    fn take_replies_to(
        &self,
        run_id: u64,
        message_ids: &[String],
    ) -> Result<Vec<Message>, StateError>;
    /// Drops a finished run's undelivered instructions and replies.
    fn purge_messages(&self, run_id: u64);
    /// Messages held now: instructions not answered yet plus replies not taken yet. Flat
    /// over a long run, because a message is dropped once it is answered or taken.
    fn held_messages(&self) -> usize;
}

/// Each run's event log, what `flwr log` shows.
pub trait EventLog: Send + Sync + 'static {
    /// Appends an event to a run's log; refused once the run has finished, so what
    /// `flwr log` shows of a finished run is final (a ServerApp being cancelled may still
    /// emit for a moment).
    fn push_event(&self, run_id: u64, event: RunEvent) -> Result<(), StateError>;
    /// Events from index `from` on, and the index to continue from.
    fn events(&self, run_id: u64, from: usize) -> Result<(Vec<RunEvent>, usize), StateError>;
}

/// Packed FABs, kept for nodes to fetch.
pub trait FabStore: Send + Sync + 'static {
    /// Keeps a packed FAB under its hash (lowercase hex sha256), checked by the caller.
    /// Storing the same hash again keeps one copy.
    fn store_fab(&self, fab_hash: &str, packed: Bytes) -> Result<(), StateError>;
    /// The packed FAB stored under `fab_hash`, shared rather than copied.
    fn fab(&self, fab_hash: &str) -> Option<Bytes>;
}

/// Node authentication: the allow-list of node keys (SubjectPublicKeyInfo DER) and the id
/// bound to each. As a [`NodeAuthority`] the store answers the transport's question whether
/// a verified key may act as a node.
pub trait NodeKeyStore: NodeAuthority + Send + Sync + 'static {
    /// Turns node authentication on (an allow-list was given) or off. While on, only nodes
    /// with an allowed key may register.
    fn set_node_auth(&self, required: bool);
    /// Whether node authentication is on, as last set by `set_node_auth`.
    fn node_auth(&self) -> bool;
    /// Allows a key and binds it to a node id: a fresh random one, or the one it already
    /// has. Returns the id. The node is not registered until it connects.
    fn allow_node_key(&self, public_key: Bytes, now: f64) -> Result<u64, StateError>;
    /// Takes a node's key off the allow-list; returns it, `None` if the id has no key. The
    /// caller also unregisters the node if it is connected.
    fn disallow_node(&self, node_id: u64) -> Option<Bytes>;
    /// The node id bound to an allowed key.
    fn node_id_of_key(&self, public_key: &[u8]) -> Option<u64>;
    /// Records a registration or heartbeat of a keyed node, for `flwr supernode list`.
    fn node_seen(&self, node_id: u64, now: f64);
    /// Every node with an allowed key, and every registered node without one, by id.
    fn nodes_info(&self) -> Vec<NodeInfo>;
}

/// Crash recovery: the latest checkpoint of each run's ServerApp.
pub trait CheckpointStore: Send + Sync + 'static {
    /// Keeps `checkpoint` (opaque bytes from the run's ServerApp) as the run's latest,
    /// replacing the previous one in one step: after a crash the old or the new one is
    /// there, never a mix. Refused once the run has finished.
    fn save_checkpoint(&self, run_id: u64, checkpoint: Bytes) -> Result<(), StateError>;
    /// The run's latest checkpoint, if its ServerApp saved one.
    fn checkpoint(&self, run_id: u64) -> Result<Option<Bytes>, StateError>;
    /// Drops a finished run's checkpoint: nothing resumes a finished run, no `flwr` command
    /// reads its model, and a checkpoint holds a whole model, so keeping one per run would
    /// grow the state by a model per run. An unfinished run keeps its checkpoint (it may
    /// yet be resumed): the call changes nothing for it.
    fn drop_checkpoint(&self, run_id: u64) -> Result<(), StateError>;
}

/// Replies stored and not yet taken by their grid (`SimulationStore::replies_waiting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WaitingReplies {
    /// How many.
    pub replies: usize,
    /// The bytes of their arrays.
    pub bytes: usize,
}

/// What a simulation's virtual fleet needs beyond a deployment's: node ids that never
/// expire, and instructions for any node at once. Only the in-memory store has it, since a
/// simulation never outlives its process.
pub trait SimulationStore: LinkState {
    /// Registers node ids that never expire (a simulation's virtual nodes).
    fn register_nodes(&self, node_ids: &[u64]);
    /// Up to `limit` queued instructions for any node, oldest first (a virtual fleet serves
    /// many node ids at once). One to a node the store does not know (any more) is
    /// answered in its place, stamped `now`, instead of handed out.
    fn pull_any_instructions(&self, limit: usize, now: f64) -> Vec<Message>;
    /// Wakes fleets when instructions are queued.
    fn instructions_ready(&self) -> &Notify;
    /// Replies stored, for every run, that no grid has taken yet: what a fleet has made and
    /// its ServerApp not yet folded (the fleet's backpressure).
    fn replies_waiting(&self) -> WaitingReplies;
    /// Wakes fleets when replies are taken or dropped, so `replies_waiting` may have fallen.
    fn replies_taken(&self) -> &Notify;
    /// Lets folds offered with `push_instructions_folding` take replies on the fleet's
    /// workers as they push them, `lanes` shards at a time (`MessageStore::fold_lanes`).
    fn set_fold_lanes(&self, lanes: usize);
}
