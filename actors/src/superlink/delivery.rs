//! Push delivery of instructions to subscribed nodes.
//!
//! One small task per subscribed node waits on that node's own signal in the `LinkState`,
//! so a push to one node wakes one task, not all 10,000 (TARGETS.md D3); an idle
//! subscription costs a parked task and a channel, no polling. A task takes an instruction
//! off the node's queue only once the channel has room for it, so a slow or vanished
//! subscriber leaves its instructions queued rather than stranded in a buffer; what a dead
//! stream did take is redelivered when the node subscribes again. The newest subscription of a node replaces the older one:
//! a SuperNode that reconnects before the SuperLink noticed the old stream died must not
//! have half its instructions sent into the dead one.

use crate::state::LinkState;
use floret_core::Message;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{Notify, mpsc};
use tokio::task::AbortHandle;

/// Instructions buffered per subscriber: enough to overlap transport and queue, few enough
/// that little is lost with a dropped connection.
const BUFFER: usize = 8;

/// A node's live subscription; `generation` tells a replaced task from its successor.
struct Entry {
    generation: u64,
    task: AbortHandle,
}

#[derive(Default)]
struct Inner {
    next_generation: u64,
    by_node: HashMap<u64, Entry>,
    /// Nodes that have subscribed before: another `Subscribe` from one is a reconnect.
    /// A node leaves when it deactivates.
    seen: HashSet<u64>,
    closed: bool,
}

/// The delivery tasks of all subscribed nodes.
#[derive(Default)]
pub(crate) struct Subscriptions {
    inner: Mutex<Inner>,
}

impl Subscriptions {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts delivering `node_id`'s instructions, replacing an older subscription. `None`
    /// after `close`.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        state: Arc<dyn LinkState>,
        node_id: u64,
        signal: Arc<Notify>,
    ) -> Option<mpsc::Receiver<Message>> {
        let (tx, rx) = mpsc::channel(BUFFER);
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        if !inner.seen.insert(node_id) {
            crate::meter::reconnected();
        }
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let guard = Deregister {
            subs: self.clone(),
            node_id,
            generation,
        };
        let task = tokio::spawn(deliver(state, node_id, signal, tx, guard)).abort_handle();
        if let Some(old) = inner.by_node.insert(node_id, Entry { generation, task }) {
            old.task.abort();
        }
        Some(rx)
    }

    /// Ends one node's subscription (it deactivated): its stream closes now.
    pub(crate) fn end(&self, node_id: u64) {
        let mut inner = self.lock();
        inner.seen.remove(&node_id);
        if let Some(entry) = inner.by_node.remove(&node_id) {
            entry.task.abort();
        }
    }

    /// Ends every subscription and refuses new ones (SuperLink shutdown).
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for (_, entry) in inner.by_node.drain() {
            entry.task.abort();
        }
    }

    /// Subscriptions alive now.
    pub(crate) fn len(&self) -> usize {
        self.lock().by_node.len()
    }
}

/// Removes a delivery task's entry when the task ends, however it ends (including abort),
/// unless a newer subscription has taken its place.
struct Deregister {
    subs: Arc<Subscriptions>,
    node_id: u64,
    generation: u64,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        let mut inner = self.subs.lock();
        if inner
            .by_node
            .get(&self.node_id)
            .is_some_and(|e| e.generation == self.generation)
        {
            inner.by_node.remove(&self.node_id);
        }
    }
}

/// Moves the node's instructions into its channel until the subscriber goes away or the
/// node is forgotten; dropping `tx` then closes the node's stream, which tells the SuperNode
/// to reconnect.
async fn deliver(
    state: Arc<dyn LinkState>,
    node_id: u64,
    signal: Arc<Notify>,
    tx: mpsc::Sender<Message>,
    _guard: Deregister,
) {
    loop {
        // Register interest before looking, so an instruction queued in between still wakes us.
        let notified = signal.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let Ok(permit) = tx.reserve().await else {
            return;
        };
        let next = match state.pull_instructions(node_id, 1) {
            Err(_) => return,
            Ok(mut batch) => batch.pop(),
        };
        match next {
            Some(message) => {
                permit.send(floret_core::trace_context::delivered(message, node_id));
                continue;
            }
            // An idle subscriber must not hold a slot of its own channel.
            None => drop(permit),
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tx.closed() => return,
        }
    }
}
