//! The virtual fleet: N simulated SuperNodes served by a bounded pool of workers.
//!
//! No node owns a task, a channel or a queue: node identities are computed (`node_ids`),
//! a node's `Context.state` is stored only once its ClientApp wrote something, and
//! instructions wait in the `LinkState` until a worker takes them. At most `workers`
//! ClientApp calls run at once, each on a blocking thread so CPU-bound training never
//! stalls the async runtime that carries the ServerApp and the actors.

use crate::node_ids::{node_id, node_index};
use floret_actors::LinkState;
use floret_actors::client_exec::execute;
use floret_actors::state::unix_now;
use floret_core::{
    ClientApp, Context, Message, MessageError, Payload, RecordDict, UserConfig, UserConfigValue,
    error_code,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// What the fleet serves and with how many workers.
pub struct FleetArgs {
    pub state: Arc<dyn LinkState>,
    pub client_app: Arc<ClientApp>,
    pub num_nodes: u64,
    pub workers: usize,
}

/// State shared by the dispatcher and the workers.
struct Shared {
    state: Arc<dyn LinkState>,
    app: Arc<ClientApp>,
    num_nodes: u64,
    /// `Context.state` of (run, node) pairs whose ClientApp stored something.
    node_state: Mutex<HashMap<(u64, u64), RecordDict>>,
    /// Run configs, fetched once per run rather than once per message.
    run_configs: Mutex<HashMap<u64, UserConfig>>,
}

impl Shared {
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
        let reply = if message.is_expired(unix_now()) {
            message.reply(Payload::Error(MessageError::new(
                error_code::MESSAGE_TTL_EXPIRED,
                "message TTL expired before the node could run it",
            )))
        } else {
            let mut context = self.context(run_id, node);
            let reply = execute(&self.app, &message, &mut context);
            if !context.state.is_empty() {
                self.node_state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((run_id, node), context.state);
            }
            reply
        };
        if let Err(e) = self.state.push_reply(reply, unix_now()) {
            tracing::debug!(run_id, node_id = node, "reply dropped: {e}");
        }
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
/// instructions until none is left, so small jobs do not pay a thread hand-off each.
async fn dispatch(shared: Arc<Shared>, workers: usize) {
    let slots = Arc::new(Semaphore::new(workers));
    loop {
        let notified = shared.state.instructions_ready().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Ok(slot) = slots.clone().acquire_owned().await else {
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
                next = worker.state.pull_any_instructions(1).pop();
            }
        });
    }
}

/// The fleet actor: owns the dispatcher and registers the virtual node ids.
pub struct VirtualFleet;

pub struct FleetState {
    dispatcher: JoinHandle<()>,
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
        let shared = Arc::new(Shared {
            state: args.state,
            app: args.client_app,
            num_nodes: args.num_nodes,
            node_state: Mutex::default(),
            run_configs: Mutex::default(),
        });
        let dispatcher = tokio::spawn(dispatch(shared, args.workers.max(1)));
        Ok(FleetState { dispatcher })
    }

    async fn post_stop(
        &self,
        _me: ActorRef<()>,
        state: &mut FleetState,
    ) -> Result<(), ActorProcessingErr> {
        state.dispatcher.abort();
        Ok(())
    }
}
