//! The virtual fleet: N simulated SuperNodes served by a bounded pool of workers.
//!
//! No node owns a task, a channel or a queue: node identities are computed (`node_ids`),
//! a node's `Context.state` is stored only once its ClientApp wrote something, and
//! instructions wait in the `LinkState` until a worker takes them. At most `workers`
//! ClientApp calls run at once (slots shared with the other runs' fleets on a
//! `--simulation` SuperLink), each on a blocking thread so CPU-bound training never
//! stalls the async runtime that carries the ServerApp and the actors.
//!
//! With `options.chaos.*` set, `ChaosDelivery` decides each reply's fate and a Byzantine
//! node's train replies are poisoned (see `chaos`); without, a reply is pushed as soon as it
//! is computed, as it always was.
//!
//! Backpressure (`pace`): workers take no instruction while the replies waiting for the
//! ServerApp are over their budget, or while the oldest instruction still served is too
//! far behind; the dispatcher waits until the ServerApp takes replies
//! (`SimulationStore::replies_taken`) or a worker finishes. What the fleet has made and the
//! ServerApp not yet folded is bounded by the worker count, never by the number of nodes.

use crate::chaos::{Chaos, Fault};
use crate::node_ids::{node_id, node_index};
use crate::pace::{Budget, REPLY_OVERHEAD, Window, reply_cost};
use floret_actors::LinkState;
use floret_actors::apps::client_exec::execute;
use floret_actors::state::SimulationStore;
use floret_actors::state::unix_now;
use floret_core::hashing::FastHashMap;
use floret_core::trace_context;
use floret_core::{
    ClientApp, Context, Message, MessageError, Payload, RecordDict, UserConfig, UserConfigValue,
    error_code,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

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
    node_state: Mutex<FastHashMap<(u64, u64), RecordDict>>,
    /// Run configs, fetched once per run rather than once per message.
    run_configs: Mutex<FastHashMap<u64, UserConfig>>,
    /// Present only when faults are injected, so the fault-free path tests one `Option`.
    chaos: Option<ChaosDelivery>,
    /// How much may wait for the ServerApp before workers pause.
    budget: Budget,
    /// How far ahead of the oldest instruction still served workers may take new ones.
    window: Mutex<Window>,
    /// Woken when a worker finishes an instruction (the window may have opened).
    served: Notify,
}

/// An instruction's place in the window, given back when it is dropped.
struct Place<'a> {
    shared: &'a Shared,
    n: u64,
    /// What its reply costs, once known.
    cost: usize,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let opened = {
            let mut window = self.shared.window.lock().unwrap_or_else(|p| p.into_inner());
            let was_open = window.is_open();
            window.done(self.n, self.cost);
            !was_open && window.is_open()
        };
        // Only a closed window has a dispatcher waiting on it.
        if opened {
            self.shared.served.notify_waiters();
        }
    }
}

/// What `Shared::take` found.
enum Take {
    /// The next instruction and its number in the window.
    Next(u64, Message),
    /// None queued.
    Empty,
    /// Workers must pause (budget or window).
    Full,
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
    held: Mutex<FastHashMap<u64, Held>>,
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
    /// The next instruction, unless none is queued or workers must pause. The window is
    /// not locked while the state is: two workers taking at once may number their
    /// instructions out of queue order, which only blurs the window's bound by a worker.
    fn take(&self) -> Take {
        if !self.budget.has_room(self.state.replies_waiting()) || !self.window_open() {
            return Take::Full;
        }
        match self.state.pull_any_instructions(1, unix_now()).pop() {
            Some(message) => {
                let n = self.window.lock().unwrap_or_else(|p| p.into_inner()).take();
                Take::Next(n, message)
            }
            None => Take::Empty,
        }
    }

    fn window_open(&self) -> bool {
        self.window
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_open()
    }

    /// Serves instruction `n` and frees its place in the window, even if serving panics (a
    /// number left in the window would close it for good).
    fn serve_numbered(&self, n: u64, message: Message) {
        let mut place = Place {
            shared: self,
            n,
            cost: REPLY_OVERHEAD,
        };
        place.cost = self.serve(message);
    }

    /// Returns once workers may go on, or after `RECHECK`: when the ServerApp has taken
    /// replies or a worker has finished.
    async fn wait_for_room(&self) {
        let taken = self.state.replies_taken().notified();
        let served = self.served.notified();
        tokio::pin!(taken, served);
        taken.as_mut().enable();
        served.as_mut().enable();
        if self.budget.has_room(self.state.replies_waiting()) && self.window_open() {
            return;
        }
        let _ = tokio::time::timeout(RECHECK, async {
            tokio::select! {
                () = taken => {}
                () = served => {}
            }
        })
        .await;
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

    /// Runs one instruction on its virtual node and stores the reply (or holds it back, under
    /// chaos); returns what the reply costs (`pace::reply_cost`).
    fn serve(&self, message: Message) -> usize {
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
            let cost = reply_cost(&reply);
            push(self.state.as_ref(), reply);
            return cost;
        };
        chaos.release_before(&self.state, &message);
        // What the node sends: a Byzantine node's train reply is poisoned here, so that a
        // straggler's or a slow link's reply is poisoned too.
        let sent = |message: &Message| chaos.chaos.poison(message, self.answer(message));
        let reply = match chaos.chaos.fault_of(&message) {
            Fault::Dropout => message.reply(Payload::Error(MessageError::new(
                error_code::NODE_UNAVAILABLE,
                format!("node {node} unavailable: simulated dropout (options.chaos.dropout-rate)"),
            ))),
            Fault::Straggler => {
                let reply = sent(&message);
                let cost = reply_cost(&reply);
                chaos.hold(&self.state, &message, reply);
                return cost;
            }
            Fault::None => sent(&message),
        };
        let cost = reply_cost(&reply);
        chaos.send_after(&self.state, reply, chaos.chaos.latency_of(&message));
        cost
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
/// until `pace` says to pause.
async fn dispatch(shared: Arc<Shared>, slots: Arc<Semaphore>, permits: u32) {
    loop {
        let notified = shared.state.instructions_ready().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Ok(slot) = slots.clone().acquire_many_owned(permits).await else {
            return;
        };
        let (n, first) = match shared.take() {
            Take::Next(n, message) => (n, message),
            Take::Empty => {
                drop(slot);
                notified.await;
                continue;
            }
            Take::Full => {
                drop(slot);
                shared.wait_for_room().await;
                continue;
            }
        };
        let worker = shared.clone();
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            let mut next = Some((n, first));
            while let Some((n, message)) = next {
                worker.serve_numbered(n, message);
                next = match worker.take() {
                    Take::Next(n, message) => Some((n, message)),
                    Take::Empty | Take::Full => None,
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
        let workers = (args.slots.available_permits() / args.permits.max(1) as usize).max(1);
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
            budget: Budget::for_workers(workers),
            window: Mutex::new(Window::for_workers(workers)),
            served: Notify::new(),
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
