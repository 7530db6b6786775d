//! The app model: a ServerApp drives a run through a `Grid`; a ClientApp answers messages
//! with one handler per message type. Both are plain Rust values, so the same app runs in a
//! simulation, behind a SuperNode, or in its own process.

use crate::context::Context;
use crate::hashing::FastHashMap;
use crate::message::{Message, validate_message_type};
use crate::records::{MetricRecord, RecordDict, RecordError};
use crate::user_config::{UserConfig, UserConfigValue};
use async_trait::async_trait;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why an app could not do its work. Returned by handlers and by `ServerApp::main`.
#[derive(Debug, Error)]
pub enum AppError {
    /// A record was missing or of another type than the app expected.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Arrays could not be converted (wrong dtype or shape).
    #[error(transparent)]
    Array(#[from] crate::array::ArrayError),
    /// The runtime could not carry out a Grid call.
    #[error(transparent)]
    Grid(#[from] GridError),
    /// A message arrived for a type this ClientApp registered no handler for.
    #[error("this ClientApp has no handler for message type {found:?} (it handles: {handled})")]
    NoHandler {
        /// The message type that arrived.
        found: String,
        /// The types this app handles, comma-separated, so the error shows the choices.
        handled: String,
    },
    /// The run or node config lacks a key or holds a value of another type.
    #[error("run config: {0}")]
    Config(String),
    /// Any other failure, in the app's own words.
    #[error("{0}")]
    Other(String),
}

impl AppError {
    /// An `Other` error from anything printable.
    pub fn other(reason: impl fmt::Display) -> Self {
        AppError::Other(reason.to_string())
    }
}

/// A handler answers one message with the content of its reply.
pub type Handler = dyn Fn(&Message, &mut Context) -> Result<RecordDict, AppError> + Send + Sync;

/// The rest of a ClientApp as a mod sees it: the next mod, or the handler itself.
pub type Next<'a> = &'a dyn Fn(&Message, &mut Context) -> Result<RecordDict, AppError>;

/// A ClientApp mod (Flower's `ClientApp(mods=[...])`): wraps every message's handling, may
/// look at or change the message and the reply's content, and calls `next` to go on (or
/// answers itself). Differential privacy's client side (`floret_strategies::dp`) is mods.
pub type Mod =
    dyn Fn(&Message, &mut Context, Next<'_>) -> Result<RecordDict, AppError> + Send + Sync;

/// A ClientApp: message type -> handler (`train`, `evaluate`, `query`, `train.<name>`, ...).
#[derive(Clone, Default)]
pub struct ClientApp {
    handlers: FastHashMap<String, Arc<Handler>>,
    /// Answers every type no handler is registered for: an app that dispatches by type
    /// itself (a Python ClientApp behind `floret-python`) registers only this.
    fallback: Option<Arc<Handler>>,
    /// Outermost first, as Flower's `mods` list.
    mods: Vec<Arc<Mod>>,
}

impl fmt::Debug for ClientApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientApp")
            .field("handles", &self.handled())
            .finish()
    }
}

impl ClientApp {
    /// An app that handles nothing yet; add handlers with `train`, `evaluate`, `query` or `on`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `message_type`; an invalid type is refused at build time,
    /// not when the first message arrives.
    pub fn on<F>(
        mut self,
        message_type: &str,
        handler: F,
    ) -> Result<Self, crate::message::InvalidMessageType>
    where
        F: Fn(&Message, &mut Context) -> Result<RecordDict, AppError> + Send + Sync + 'static,
    {
        validate_message_type(message_type)?;
        self.handlers
            .insert(message_type.to_string(), Arc::new(handler));
        Ok(self)
    }

    /// Registers the handler for `train` messages.
    pub fn train<F>(self, handler: F) -> Self
    where
        F: Fn(&Message, &mut Context) -> Result<RecordDict, AppError> + Send + Sync + 'static,
    {
        self.register_builtin(crate::message::message_type::TRAIN, handler)
    }

    /// Registers the handler for `evaluate` messages.
    pub fn evaluate<F>(self, handler: F) -> Self
    where
        F: Fn(&Message, &mut Context) -> Result<RecordDict, AppError> + Send + Sync + 'static,
    {
        self.register_builtin(crate::message::message_type::EVALUATE, handler)
    }

    /// Registers the handler for `query` messages.
    pub fn query<F>(self, handler: F) -> Self
    where
        F: Fn(&Message, &mut Context) -> Result<RecordDict, AppError> + Send + Sync + 'static,
    {
        self.register_builtin(crate::message::message_type::QUERY, handler)
    }

    fn register_builtin<F>(mut self, message_type: &str, handler: F) -> Self
    where
        F: Fn(&Message, &mut Context) -> Result<RecordDict, AppError> + Send + Sync + 'static,
    {
        self.handlers
            .insert(message_type.to_string(), Arc::new(handler));
        self
    }

    /// Registers the handler for every message type that has no handler of its own, for an
    /// app that answers any type itself (a Flower app in Python decides by type on its side,
    /// and says so in its reply).
    pub fn fallback<F>(mut self, handler: F) -> Self
    where
        F: Fn(&Message, &mut Context) -> Result<RecordDict, AppError> + Send + Sync + 'static,
    {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// Adds `m` inside the mods added before it (the first mod added sees a message first
    /// and its reply last, as the first of Flower's `mods`). One line per mod:
    /// `client_app().with_mod(dp::fixed_clipping_mod())`.
    pub fn with_mod<F>(mut self, m: F) -> Self
    where
        F: Fn(&Message, &mut Context, Next<'_>) -> Result<RecordDict, AppError>
            + Send
            + Sync
            + 'static,
    {
        self.mods.push(Arc::new(m));
        self
    }

    /// The message types this app answers, sorted.
    pub fn handled(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.handlers.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Runs the message through the mods and the handler registered for its type.
    pub fn handle(&self, message: &Message, context: &mut Context) -> Result<RecordDict, AppError> {
        self.through(&self.mods, message, context)
    }

    fn through(
        &self,
        mods: &[Arc<Mod>],
        message: &Message,
        context: &mut Context,
    ) -> Result<RecordDict, AppError> {
        match mods.split_first() {
            Some((first, rest)) => first(message, context, &|m: &Message, c: &mut Context| {
                self.through(rest, m, c)
            }),
            None => self.handler(message, context),
        }
    }

    /// Runs the handler registered for the message's type.
    fn handler(&self, message: &Message, context: &mut Context) -> Result<RecordDict, AppError> {
        let t = &message.metadata.message_type;
        match self.handlers.get(t).or(self.fallback.as_ref()) {
            Some(h) => h(message, context),
            None => Err(AppError::NoHandler {
                found: t.clone(),
                handled: self.handled().join(", "),
            }),
        }
    }
}

/// A ServerApp: the code that drives one run, usually by running a strategy.
#[async_trait]
pub trait ServerApp: Send + Sync {
    /// Drives the run to its end; an error fails the run and its text becomes the run's failure
    /// reason.
    async fn main(&self, grid: &dyn Grid, context: Context) -> Result<(), AppError>;

    /// Checks a run config before the run is created, so that a bad value is refused when
    /// the user submits it (`flwr run` exits with 2) instead of failing the run later.
    fn check_config(&self, _run_config: &UserConfig) -> Result<(), AppError> {
        Ok(())
    }

    /// The model this app would allocate for `run_config`, when the config decides it
    /// (`None`: a fixed or unknown size, or a config `check_config` refuses). The SuperLink
    /// compares it with its model size limit when the run is submitted, so that a config
    /// asking for more memory than the operator allows is refused with a message instead
    /// of aborting the SuperLink on allocation.
    fn model_size(&self, _run_config: &UserConfig) -> Option<ModelSize> {
        None
    }
}

/// The size of the model a run config asks for, and what in the config sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSize {
    /// The model's bytes (its arrays' data).
    pub bytes: u64,
    /// The run config that sets it, as a user would write it to change it, e.g.
    /// `total-params=2000000000 (float32)`: error messages name it.
    pub set_by: String,
}

/// Finds apps by the component strings of their `pyproject.toml`
/// (`serverapp = "digits.server_app:app"`): the built-in apps, and later installed FABs.
pub trait AppCatalog: Send + Sync {
    /// The ServerApp named by `component`, or `None` when no app has that name.
    fn server_app(&self, component: &str) -> Option<Arc<dyn ServerApp>>;
    /// The ClientApp named by `component`, or `None` when no app has that name.
    fn client_app(&self, component: &str) -> Option<ClientApp>;
    /// Every known `(serverapp, clientapp)` pair, for error messages that list the choices.
    fn components(&self) -> Vec<(String, String)>;
}

/// Why the runtime could not carry out a Grid call.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum GridError {
    /// The run was stopped (by the user, or because the SuperLink is shutting down).
    #[error("the run was stopped")]
    Stopped,
    /// The connection to the runtime is gone, with why.
    #[error("the link is gone: {0}")]
    Disconnected(String),
    /// A message was refused before it was queued, with why.
    #[error("invalid message: {0}")]
    InvalidMessage(String),
    /// The runtime cannot do this at all (e.g. checkpoints without a state to keep them in).
    #[error("{0} is not supported here")]
    Unsupported(String),
    /// The SuperLink's state failed to store or read what the call needed.
    #[error("the SuperLink could not store it: {0}")]
    Storage(String),
}

/// The set of node ids a run can reach, shared rather than copied each round.
pub type NodeSet = Arc<[u64]>;

/// How a ServerApp reaches the nodes of its run (Flower's Grid).
#[async_trait]
pub trait Grid: Send + Sync {
    /// The run this grid serves.
    fn run_id(&self) -> u64;

    /// Nodes that are connected now.
    async fn node_ids(&self) -> Result<NodeSet, GridError>;

    /// Queues messages for delivery and returns their ids, in order. The runtime fills in
    /// run id, message id, source node and creation time.
    async fn send(&self, messages: Vec<Message>) -> Result<Vec<String>, GridError>;

    /// Replies that have arrived for any of `message_ids`, without waiting.
    async fn pull(&self, message_ids: &[String]) -> Result<Vec<Message>, GridError>;

    /// Replies to messages sent through this grid that have not been handed out yet. Waits up
    /// to `timeout` for the first one, then returns all that are ready. This is what lets a
    /// strategy fold replies while the rest are still being computed.
    async fn receive(&self, timeout: Duration) -> Result<Vec<Message>, GridError>;

    /// Reports progress of the run to whoever watches it (`flwr run`, `flwr log`).
    fn emit(&self, event: RunEvent);

    /// The checkpoint an earlier start of this run's ServerApp left behind (one that a
    /// SuperLink crash or restart cut short), or `None` for a run that starts from the
    /// beginning. A ServerApp that checkpoints reads this first and resumes from it.
    ///
    /// Once this grid has saved a checkpoint itself it answers `None`: the ServerApp is
    /// past its resume point, and a strategy started a second time within the same `main`
    /// must begin afresh rather than resume from where the first one ended.
    async fn load_checkpoint(&self) -> Result<Option<bytes::Bytes>, GridError> {
        Ok(None)
    }

    /// Keeps `checkpoint` as the run's latest, replacing the previous one, in the
    /// SuperLink's state (on disk when it has a database), so that a SuperLink restarted
    /// after a crash resumes the run from it. `Unsupported` where nothing can be kept.
    async fn save_checkpoint(&self, _checkpoint: bytes::Bytes) -> Result<(), GridError> {
        Err(GridError::Unsupported("saving a checkpoint".into()))
    }

    /// How many shards of a phase (see `ReplyFold`) this grid's side can fold at once. A
    /// strategy sends a phase's messages striped over that many shards, so that replies
    /// made at the same time belong to different shards and fold in parallel. 1 (send in
    /// canonical order) unless the grid folds replies where they are made.
    fn fold_lanes(&self) -> usize {
        1
    }

    /// `send`, offering `fold` the replies where they arrive: a grid that can (a
    /// simulation, whose workers make the replies) folds each one on the thread that made
    /// it and delivers nothing in its place (the fold knows what it took); one that cannot
    /// delivers every reply whole, for the ServerApp to fold. The default sends only.
    ///
    /// A strategy waits for the fold beside `receive`, and stops waiting on `receive` once
    /// the fold has every reply: a grid that folds where replies arrive must therefore
    /// lose nothing when a `receive` in progress is dropped (the in-memory ones take their
    /// replies without awaiting in between).
    async fn send_folding(
        &self,
        messages: Vec<Message>,
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, GridError> {
        drop(fold);
        self.send(messages).await
    }

    /// `send_folding` of one message to each of `nodes`: `template` with its destination
    /// set to each node in turn (a strategy's phase sends one content to every sampled
    /// node). Returns the ids in the order of `nodes`. A grid that keeps such a broadcast
    /// as one content and a list of nodes (a simulation's) makes no message per node until
    /// a worker takes it; the default makes them all and calls `send_folding`.
    async fn broadcast_folding(
        &self,
        template: Message,
        nodes: &[u64],
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, GridError> {
        let messages = template.to_each(nodes);
        self.send_folding(messages, fold).await
    }

    /// Sends `messages` and waits up to `timeout` for all their replies; replies that are
    /// not there by then are simply absent from the result.
    async fn send_and_receive(
        &self,
        messages: Vec<Message>,
        timeout: Duration,
    ) -> Result<Vec<Message>, GridError> {
        let ids = self.send(messages).await?;
        let mut waiting: std::collections::HashSet<String> = ids.into_iter().collect();
        let mut replies = Vec::with_capacity(waiting.len());
        let deadline = tokio::time::Instant::now() + timeout;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            for reply in self.receive(left).await? {
                if waiting.remove(&reply.metadata.reply_to_message_id) {
                    replies.push(reply);
                }
            }
        }
        Ok(replies)
    }
}

/// A phase's aggregate, folded where the replies arrive instead of where the ServerApp
/// runs (`Grid::send_folding`).
///
/// Why: in a simulation the workers make the replies; if each reply had to travel, whole,
/// to the ServerApp's one fold, that fold would be the run's serial part, and replies
/// would pile up waiting for it. Folding on the worker that made a reply spreads the
/// arithmetic over the workers and frees the reply at once. The strategy decides what a
/// fold is and in which order replies are added (Floret's strategies keep a canonical
/// order, so the result does not depend on which thread folds what); the grid only hands
/// over the replies of the messages it sent with the fold, after checking who sent them.
pub trait ReplyFold: Send + Sync {
    /// Takes `reply` and folds it (now, or when its turn comes) and returns `None`: the
    /// grid delivers nothing in its place, the fold has counted it (folded, or left out
    /// and why). Returns the reply itself, untouched, when the fold does not take it (it
    /// is closed, or the reply is not one it waits for): the grid delivers it whole.
    fn fold(&self, reply: Message) -> Option<Message>;
}

/// Counts and aggregated metrics of one phase (train or evaluate) of a round.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct PhaseSummary {
    /// Messages sent: one per sampled node.
    pub sampled: u64,
    /// Replies that arrived in time and were used.
    pub replies: u64,
    /// Replies that arrived but were left out (an error, wrong arrays, no weight).
    pub failures: u64,
    /// Replies that answered no message of this phase (late from an earlier one, or repeated).
    pub late: u64,
    /// The metrics of the used replies, aggregated.
    pub metrics: MetricRecord,
}

/// What happened in one server round.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RoundSummary {
    /// The round's number, from 1.
    pub round: u64,
    /// The train phase, or `None` when the round did not train.
    pub train: Option<PhaseSummary>,
    /// The evaluate phase, or `None` when the round did not evaluate on the clients.
    pub evaluate: Option<PhaseSummary>,
    /// Metrics of the server-side (centralised) evaluation of the round's global model.
    pub central: Option<MetricRecord>,
}

/// Progress of a run, as shown to the user.
// A few events per round: their size does not matter, and unboxed they are simpler to match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum RunEvent {
    /// A line of text for the run's log.
    Log(String),
    /// A round begins.
    RoundStarted {
        /// The round's number, from 1.
        round: u64,
        /// How many rounds the run has in all.
        num_rounds: u64,
    },
    /// A round ended; what happened in it.
    RoundFinished(RoundSummary),
}

/// Typed access to run and node configuration, with errors that name the key.
impl Context {
    /// An integer from the run config; a float is refused.
    pub fn run_config_i64(&self, key: &str) -> Result<i64, AppError> {
        config_i64(&self.run_config, "run config", key)
    }

    /// A number from the run config, as a float (an integer converts).
    pub fn run_config_f64(&self, key: &str) -> Result<f64, AppError> {
        config_f64(&self.run_config, "run config", key)
    }

    /// A string from the run config.
    pub fn run_config_str(&self, key: &str) -> Result<&str, AppError> {
        match config_get(&self.run_config, "run config", key)? {
            UserConfigValue::Str(s) => Ok(s),
            other => Err(type_error("run config", key, "a string", other)),
        }
    }

    /// A boolean from the run config.
    pub fn run_config_bool(&self, key: &str) -> Result<bool, AppError> {
        match config_get(&self.run_config, "run config", key)? {
            UserConfigValue::Bool(b) => Ok(*b),
            other => Err(type_error("run config", key, "a bool", other)),
        }
    }

    /// An integer from the node config (e.g. `partition-id`); a float is refused.
    pub fn node_config_i64(&self, key: &str) -> Result<i64, AppError> {
        config_i64(&self.node_config, "node config", key)
    }
}

fn config_get<'a>(
    cfg: &'a UserConfig,
    what: &str,
    key: &str,
) -> Result<&'a UserConfigValue, AppError> {
    cfg.get(key).ok_or_else(|| {
        let keys: Vec<&str> = cfg.keys().map(String::as_str).collect();
        AppError::Config(format!(
            "{what} has no key {key:?} (keys: {})",
            keys.join(", ")
        ))
    })
}

fn config_i64(cfg: &UserConfig, what: &str, key: &str) -> Result<i64, AppError> {
    match config_get(cfg, what, key)? {
        UserConfigValue::Int(v) => Ok(*v),
        other => Err(type_error(what, key, "an int", other)),
    }
}

fn config_f64(cfg: &UserConfig, what: &str, key: &str) -> Result<f64, AppError> {
    match config_get(cfg, what, key)? {
        UserConfigValue::Float(v) => Ok(*v),
        UserConfigValue::Int(v) => Ok(*v as f64),
        other => Err(type_error(what, key, "a number", other)),
    }
}

fn type_error(what: &str, key: &str, expected: &str, found: &UserConfigValue) -> AppError {
    AppError::Config(format!(
        "{what} key {key:?} must be {expected}, but is the {} {found}",
        found.type_name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::MetricRecord;

    fn app() -> ClientApp {
        ClientApp::new()
            .train(|_, ctx| {
                let mut m = MetricRecord::new();
                m.insert("node", ctx.node_id as i64);
                Ok(RecordDict::new().with("metrics", m))
            })
            .on("query.stats", |_, _| Ok(RecordDict::new()))
            .unwrap()
    }

    /// Mods wrap in order, the first outermost, and see every message type; one may answer
    /// without calling the handler.
    #[test]
    fn mods_wrap_the_handler_outermost_first() {
        let tag = |name: &'static str| {
            move |m: &Message, c: &mut Context, next: Next<'_>| {
                let mut out = next(m, c)?;
                let mut trail = out.metric_record("metrics").cloned().unwrap_or_default();
                let depth = trail.len() as i64;
                trail.insert(name, depth);
                out.insert("metrics", trail);
                Ok(out)
            }
        };
        let app = app().with_mod(tag("outer")).with_mod(tag("inner"));
        let msg = Message::new(RecordDict::new(), 4, "train");
        let out = app.handle(&msg, &mut Context::default()).unwrap();
        let m = out.metric_record("metrics").unwrap();
        // The handler wrote "node"; "inner" saw it first, "outer" last.
        assert_eq!(m.get_f64("inner").unwrap(), 1.0);
        assert_eq!(m.get_f64("outer").unwrap(), 2.0);
        let refusing = app.with_mod(|_: &Message, _: &mut Context, _: Next<'_>| {
            Err(AppError::other("refused by a mod"))
        });
        let err = refusing.handle(&msg, &mut Context::default()).unwrap_err();
        assert_eq!(err.to_string(), "refused by a mod");
    }

    #[test]
    fn dispatches_on_message_type() {
        let mut ctx = Context {
            node_id: 4,
            ..Context::default()
        };
        let msg = Message::new(RecordDict::new(), 4, "train");
        let out = app().handle(&msg, &mut ctx).unwrap();
        assert_eq!(
            out.metric_record("metrics")
                .unwrap()
                .get_f64("node")
                .unwrap(),
            4.0
        );
    }

    #[test]
    fn unknown_type_lists_the_handled_ones() {
        let msg = Message::new(RecordDict::new(), 1, "evaluate");
        let err = app().handle(&msg, &mut Context::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this ClientApp has no handler for message type \"evaluate\" (it handles: query.stats, train)"
        );
    }

    /// The fallback answers the types no handler is registered for, and only those.
    #[test]
    fn fallback_answers_every_unregistered_type() {
        let app = app().fallback(|m, _| {
            let mut c = crate::records::ConfigRecord::new();
            c.insert("seen", m.metadata.message_type.clone());
            Ok(RecordDict::new().with("fallback", c))
        });
        for t in ["evaluate", "query", "train.custom"] {
            let msg = Message::new(RecordDict::new(), 1, t);
            let out = app.handle(&msg, &mut Context::default()).unwrap();
            assert!(out.get("fallback").is_some(), "{t}");
        }
        let msg = Message::new(RecordDict::new(), 1, "train");
        let out = app.handle(&msg, &mut Context::default()).unwrap();
        assert!(out.get("fallback").is_none());
        assert!(out.metric_record("metrics").is_ok());
    }

    #[test]
    fn invalid_custom_type_is_refused_at_registration() {
        assert!(
            ClientApp::new()
                .on("fit", |_, _| Ok(RecordDict::new()))
                .is_err()
        );
    }

    #[test]
    fn run_config_accessors_name_the_key() {
        let mut ctx = Context::default();
        ctx.run_config
            .insert("lr".into(), UserConfigValue::Float(0.1));
        ctx.run_config
            .insert("rounds".into(), UserConfigValue::Int(3));
        assert_eq!(ctx.run_config_f64("rounds").unwrap(), 3.0);
        let err = ctx.run_config_i64("lr").unwrap_err().to_string();
        assert!(err.contains("\"lr\" must be an int"), "{err}");
        let err = ctx.run_config_i64("epochs").unwrap_err().to_string();
        assert!(err.contains("keys: lr, rounds"), "{err}");
    }
}
