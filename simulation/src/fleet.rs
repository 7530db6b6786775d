//! The virtual fleet: N simulated SuperNodes served by a bounded pool of workers.
//!
//! No node owns a task, a channel or a queue: node identities are computed (`node_ids`),
//! a node's `Context.state` is stored only once its ClientApp wrote something, and
//! instructions wait in the `LinkState` until a worker takes them. At most `workers`
//! ClientApp calls run at once (slots shared with the other runs' fleets on a
//! `--simulation` SuperLink), each on a blocking thread so CPU-bound training never
//! stalls the async runtime that carries the ServerApp and the actors.
//!
//! With `options.chaos.*` set, `ChaosDelivery` decides each reply's fate (see `chaos`);
//! without, a reply is pushed as soon as it is computed, as it always was.
//!
//! Backpressure: workers stop taking instructions while the replies waiting in the state
//! for the ServerApp to take them cost `WAITING_BYTES_PER_WORKER` per worker, and the
//! dispatcher waits until it has taken some (`SimulationStore::replies_taken`). Workers
//! faster than the ServerApp's fold would otherwise fill memory with replies (S5: ten
//! thousand 4 MB replies, 41 GB at 16 workers); now what waits is bounded by the worker
//! count, never by the number of nodes. The bound is in bytes, not replies: a model of
//! 4 MB waits two replies per worker, one of 4 KB two thousand, so small replies do not
//! pay a pause and a wake-up every other reply.

use crate::chaos::{Chaos, Fault};
use crate::node_ids::{node_id, node_index};
use floret_actors::LinkState;
use floret_actors::apps::client_exec::execute;
use floret_actors::state::SimulationStore;
use floret_actors::state::unix_now;
use floret_core::trace_context;
use floret_core::{
    ClientApp, Context, Message, MessageError, Payload, RecordDict, UserConfig, UserConfigValue,
    error_code,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

/// What the replies waiting in the state, unfolded, may cost per worker before workers
/// pause: their arrays' bytes plus `REPLY_OVERHEAD` each. Two 4 MB replies a worker keep
/// every worker busy while the ServerApp folds the previous batch.
pub const WAITING_BYTES_PER_WORKER: usize = 8 << 20;
/// What a waiting reply costs besides its arrays (its metadata, ids and metrics), so
/// replies without arrays are bounded too.
pub const REPLY_OVERHEAD: usize = 1 << 10;
/// How often a paused dispatcher looks again even without a wake-up (a store that drops
/// replies without notifying must not stall the fleet).
const RECHECK: Duration = Duration::from_millis(50);

/// What the fleet serves and with how many workers.
pub(crate) struct FleetArgs {
    pub state: Arc<dyn SimulationStore>,
    pub client_app: Arc<ClientApp>,
    pub num_nodes: u64,
    /// Worker slots, shared by every fleet of a `--simulation` SuperLink.
    pub slots: Arc<Semaphore>,
    /// Slots one ClientApp call holds.
    pub permits: u32,
    /// Faults to inject; `None` for a fault-free fleet.
    pub chaos: Option<Chaos>,
}

/// State shared by the dispatcher and the workers.
struct Shared {
    state: Arc<dyn SimulationStore>,
    app: Arc<ClientApp>,
    num_nodes: u64,
    /// `Context.state` of (run, node) pairs whose ClientApp stored something.
    node_state: Mutex<HashMap<(u64, u64), RecordDict>>,
    /// Run configs, fetched once per run rather than once per message.
    run_configs: Mutex<HashMap<u64, UserConfig>>,
    /// Present only when faults are injected, so the fault-free path tests one `Option`.
    chaos: Option<ChaosDelivery>,
    /// What the replies waiting in the state may cost before workers pause
    /// (`WAITING_BYTES_PER_WORKER` per worker).
    max_waiting: usize,
}

/// A run's current phase and the straggler replies held back until it moves past it.
struct Held {
    /// The phase of the newest instruction served: (group id, message type).
    phase: (String, String),
    /// When that phase's instructions were created; phases are created one after another,
    /// so this orders them even when a slow worker serves an old instruction late.
    created_at: f64,
    /// Straggler replies to `phase`.
    replies: Vec<Message>,
}

fn phase_of(message: &Message) -> (String, String) {
    let md = &message.metadata;
    (md.group_id.clone(), md.message_type.clone())
}

/// How replies travel when faults are injected.
struct ChaosDelivery {
    chaos: Chaos,
    /// Where delayed replies are pushed from: workers are blocking threads.
    runtime: tokio::runtime::Handle,
    held: Mutex<HashMap<u64, Held>>,
    /// Replies on their way; aborted when the fleet stops.
    delayed: Mutex<JoinSet<()>>,
}

impl ChaosDelivery {
    /// Notes the phase of an instruction about to be served; when it is a newer phase of
    /// its run, releases the stragglers held for the previous one. The strategy sends a
    /// phase only after the previous one ended, so they arrive late.
    fn release_before(&self, state: &Arc<dyn SimulationStore>, message: &Message) {
        let md = &message.metadata;
        let released = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let current = held.entry(md.run_id).or_insert_with(|| Held {
                phase: phase_of(message),
                created_at: md.created_at,
                replies: Vec::new(),
            });
            let phase = phase_of(message);
            if md.created_at > current.created_at && current.phase != phase {
                current.phase = phase;
                current.created_at = md.created_at;
                std::mem::take(&mut current.replies)
            } else {
                Vec::new()
            }
        };
        for reply in released {
            push(state.as_ref(), reply);
        }
    }

    /// Keeps a straggler's reply until its run's next phase starts. When that phase has
    /// already started (the ClientApp outlived its phase), the reply is late as it is and
    /// goes now.
    fn hold(&self, state: &Arc<dyn SimulationStore>, message: &Message, reply: Message) {
        let phase = phase_of(message);
        let late = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            match held.get_mut(&message.metadata.run_id) {
                Some(current) if current.phase == phase => {
                    current.replies.push(reply);
                    None
                }
                _ => Some(reply),
            }
        };
        if let Some(reply) = late {
            push(state.as_ref(), reply);
        }
    }

    /// Pushes `reply` after `delay` on a tokio timer, so no worker waits for it.
    fn send_after(&self, state: &Arc<dyn SimulationStore>, reply: Message, delay: Duration) {
        if delay.is_zero() {
            push(state.as_ref(), reply);
            return;
        }
        let state = state.clone();
        let mut delayed = self.delayed.lock().unwrap_or_else(|p| p.into_inner());
        while delayed.try_join_next().is_some() {}
        delayed.spawn_on(
            async move {
                tokio::time::sleep(delay).await;
                push(state.as_ref(), reply);
            },
            &self.runtime,
        );
    }

    fn stop(&self) {
        self.delayed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Stores a reply; one the state refuses (its run has finished) is only logged.
fn push(state: &dyn LinkState, reply: Message) {
    let run_id = reply.metadata.run_id;
    let node = reply.metadata.src_node_id;
    if let Err(e) = state.push_reply(reply, unix_now()) {
        tracing::debug!(run_id, node_id = node, "reply dropped: {e}");
    }
}

impl Shared {
    /// Whether a worker may compute another reply now.
    fn has_room(&self) -> bool {
        let waiting = self.state.replies_waiting();
        waiting.bytes + waiting.replies * REPLY_OVERHEAD < self.max_waiting
    }

    /// Returns once the ServerApp has taken enough replies for workers to go on.
    async fn room(&self) {
        loop {
            let taken = self.state.replies_taken().notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if self.has_room() {
                return;
            }
            let _ = tokio::time::timeout(RECHECK, taken).await;
        }
    }

    fn run_config(&self, run_id: u64) -> UserConfig {
        let mut cache = self.run_configs.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(run_id)
            .or_insert_with(|| {
                self.state
                    .run(run_id)
                    .map(|r| r.run_config)
                    .unwrap_or_default()
            })
            .clone()
    }

    /// Runs one instruction on its virtual node and stores the reply.
    fn serve(&self, message: Message) {
        let run_id = message.metadata.run_id;
        let node = message.metadata.dst_node_id;
        let _span = tracing::debug_span!(
            "clientapp",
            run_id,
            node_id = node,
            message_id = %message.metadata.message_id,
            message_type = %message.metadata.message_type
        )
        .entered();
        let Some(chaos) = &self.chaos else {
            let reply = self.answer(&message);
            push(self.state.as_ref(), reply);
            return;
        };
        chaos.release_before(&self.state, &message);
        match chaos.chaos.fault_of(&message) {
            Fault::Dropout => {
                let reply = message.reply(Payload::Error(MessageError::new(
                    error_code::NODE_UNAVAILABLE,
                    format!(
                        "node {node} unavailable: simulated dropout (options.chaos.dropout-rate)"
                    ),
                )));
                chaos.send_after(&self.state, reply, chaos.chaos.latency_of(&message));
            }
            Fault::Straggler => {
                let reply = self.answer(&message);
                chaos.hold(&self.state, &message, reply);
            }
            Fault::None => {
                let reply = self.answer(&message);
                chaos.send_after(&self.state, reply, chaos.chaos.latency_of(&message));
            }
        }
    }

    /// Runs the ClientApp on the message's node (or answers an expired message) and keeps
    /// what the app stored in its node state.
    fn answer(&self, message: &Message) -> Message {
        let run_id = message.metadata.run_id;
        let node = message.metadata.dst_node_id;
        if message.is_expired(unix_now()) {
            return message.reply(Payload::Error(MessageError::new(
                error_code::MESSAGE_TTL_EXPIRED,
                "message TTL expired before the node could run it",
            )));
        }
        let span = trace_context::message_span(
            trace_context::phase_of(&message.metadata.message_type),
            message,
            node,
            "memory",
        );
        let _entered = span.enter();
        let mut context = self.context(run_id, node);
        let mut reply = execute(&self.app, message, &mut context);
        let header = trace_context::traceparent(&span);
        if !header.is_empty() {
            reply.metadata.trace_context = header;
        }
        if !context.state.is_empty() {
            self.node_state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((run_id, node), context.state);
        }
        reply
    }

    fn context(&self, run_id: u64, node: u64) -> Context {
        let mut node_config = UserConfig::with_capacity(2);
        let index = node_index(node);
        node_config.insert("partition-id".into(), UserConfigValue::Int(index as i64));
        node_config.insert(
            "num-partitions".into(),
            UserConfigValue::Int(self.num_nodes as i64),
        );
        let state = self
            .node_state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(run_id, node))
            .unwrap_or_default();
        Context {
            run_id,
            node_id: node,
            node_config,
            state,
            run_config: self.run_config(run_id),
        }
    }
}

/// Hands queued instructions to at most `workers` blocking workers. A worker keeps taking
/// instructions until none is left, so small jobs do not pay a thread hand-off each, or
/// until the replies waiting for the ServerApp reach the bound.
async fn dispatch(shared: Arc<Shared>, slots: Arc<Semaphore>, permits: u32) {
    loop {
        shared.room().await;
        let notified = shared.state.instructions_ready().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Ok(slot) = slots.clone().acquire_many_owned(permits).await else {
            return;
        };
        let Some(first) = shared.state.pull_any_instructions(1).pop() else {
            drop(slot);
            notified.await;
            continue;
        };
        let worker = shared.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut next = Some(first);
            while let Some(message) = next {
                worker.serve(message);
                next = if worker.has_room() {
                    worker.state.pull_any_instructions(1).pop()
                } else {
                    None
                };
            }
        });
    }
}

/// The fleet actor: owns the dispatcher and registers the virtual node ids.
pub(crate) struct VirtualFleet;

pub(crate) struct FleetState {
    dispatcher: JoinHandle<()>,
    shared: Arc<Shared>,
}

impl Actor for VirtualFleet {
    type Msg = ();
    type State = FleetState;
    type Arguments = FleetArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<()>,
        args: FleetArgs,
    ) -> Result<FleetState, ActorProcessingErr> {
        let ids: Vec<u64> = (0..args.num_nodes).map(node_id).collect();
        args.state.register_nodes(&ids);
        // The slots are this fleet's alone in a local simulation; on a `--simulation`
        // SuperLink, those free now stand for what this run's fleet may use.
        let permits = args.permits.max(1) as usize;
        let workers = (args.slots.available_permits() / permits).max(1);
        let shared = Arc::new(Shared {
            state: args.state,
            app: args.client_app,
            num_nodes: args.num_nodes,
            node_state: Mutex::default(),
            run_configs: Mutex::default(),
            chaos: args.chaos.map(|chaos| ChaosDelivery {
                chaos,
                runtime: tokio::runtime::Handle::current(),
                held: Mutex::default(),
                delayed: Mutex::default(),
            }),
            max_waiting: WAITING_BYTES_PER_WORKER * workers,
        });
        let dispatcher = tokio::spawn(dispatch(shared.clone(), args.slots, args.permits.max(1)));
        Ok(FleetState { dispatcher, shared })
    }

    async fn post_stop(
        &self,
        _me: ActorRef<()>,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        state.dispatcher.abort();
        if let Some(chaos) = &state.shared.chaos {
            chaos.stop();
        }
        Ok(())
    }
}
