//! The in-memory `LinkState`: one mutex over plain maps. Fast and simple; forgets
//! everything on restart (the SQLite store is for that). Every critical section is short
//! and synchronous, so callers on the async runtime never wait long and never hold the
//! lock across an `.await`.

use super::batches::{Batches, Prepared};
use super::node_keys::NodeKeys;
use super::nodes::Nodes;
use super::rules::{self, Inflight, RunIds};
use super::{
    CheckpointStore, EventLog, FabStore, LinkState, MessageStore, NewRun, NodeKeyStore, NodeLease,
    NodeStore, RunInfo, RunSignals, RunStore, SimulationStore, StateError, Sweep, WaitingReplies,
    unix_now,
};
use bytes::Bytes;
use floret_core::hashing::FastHashMap;
use floret_core::{
    Message, MessageError, NodeAuthority, NodeInfo, NodeSet, ReplyFold, RunEvent, RunStatus,
    UserConfig,
};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Instructions a push stores per hold of the lock: workers take the first ones while the
/// rest are stored.
const PUSH_CHUNK: usize = 4096;

#[derive(Default)]
struct Run {
    info: Option<RunInfo>,
    replies: VecDeque<Message>,
    /// Array bytes of `replies`.
    reply_bytes: usize,
    events: Vec<RunEvent>,
    signals: Arc<RunSignals>,
    checkpoint: Option<Bytes>,
    /// Resumes since the run last left a SuperLink cleanly (`RunStore::count_resume`).
    resumes: u32,
    /// `NewRun::federation_options`.
    federation_options: UserConfig,
}

struct Inner {
    /// How runs are numbered: random, or 1, 2, 3, … in a simulation.
    run_ids: RunIds,
    /// The highest run id so far (sequential numbering counts on from it).
    last_run_id: u64,
    /// This store's part of every message id (`rules::message_id`); 0 in a simulation.
    lifetime: u32,
    next_message: u64,
    runs: FastHashMap<u64, Run>,
    nodes: Nodes,
    /// The allow-list of node keys (node authentication).
    keys: NodeKeys,
    /// Per-node queues exist only while a node has something queued.
    queues: FastHashMap<u64, VecDeque<Message>>,
    /// Nodes in the order their queues became non-empty, for `pull_any_instructions`.
    ready: VecDeque<u64>,
    /// Every instruction without a reply yet, queued or already delivered, by message id.
    inflight: FastHashMap<String, Inflight>,
    /// Instructions handed to a node by `pull_instructions` and not answered yet, per node,
    /// for `redeliver`. Content is shared (`Bytes`), so a copy here costs little.
    delivered: FastHashMap<u64, Vec<Message>>,
    /// Packed FABs by hash: runs of the same build share one copy.
    fabs: HashMap<String, Bytes>,
    /// The pushes of a store with fold lanes, which a virtual fleet serves: each kept as
    /// one entry instead of in `queues` and `inflight` (`batches`).
    batches: Batches,
}

/// See the module doc.
pub struct MemoryLinkState {
    inner: Mutex<Inner>,
    instructions: Notify,
    /// Woken when a grid takes replies or they are dropped (`SimulationStore::replies_taken`).
    replies_taken: Notify,
    /// `SimulationStore::replies_waiting`, published under the lock whenever a grid's
    /// replies come or go, so that a fleet asking before every call does not take the lock.
    /// Replies the store makes itself (a missing node's error) show at the next publish.
    waiting_replies: AtomicUsize,
    waiting_bytes: AtomicUsize,
    /// Drawn when the store is made: a SuperLink on a fresh in-memory store is a new
    /// incarnation to its SuperNodes (`LinkState::incarnation`).
    incarnation: u64,
    /// `MessageStore::fold_lanes`: 0 (replies stored whole) unless a simulation, whose
    /// workers push the replies, sets it with `set_fold_lanes`.
    fold_lanes: AtomicUsize,
}

impl Default for MemoryLinkState {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryLinkState {
    /// An empty store for a SuperLink: no runs, no nodes, node authentication off; random
    /// run ids and a random incarnation, so SuperNodes that outlive a SuperLink restarted
    /// with `--database :memory:` never mistake its runs for the last one's.
    pub fn new() -> Self {
        Self::with(
            RunIds::Random,
            rand::random(),
            rules::incarnation(rand::random),
        )
    }

    /// An empty store for a simulation: runs numbered 1, 2, 3, … and message ids without a
    /// random part, so a seeded simulation (whose chaos draws are keyed by run id) repeats
    /// exactly. No SuperNode outlives a simulation's store, so nothing can mistake its ids.
    pub fn for_simulation() -> Self {
        Self::with(RunIds::Sequential, 0, 0)
    }

    /// An empty simulation store whose first run gets the id `run_id`: where the virtual
    /// fleet of a `--simulation` SuperLink's run keeps that run's messages, under the id
    /// the SuperLink gave it, so ClientApps and replies see the run's real id.
    pub fn for_simulated_run(run_id: u64) -> Self {
        let store = Self::for_simulation();
        store.lock().last_run_id = run_id.saturating_sub(1);
        store
    }

    /// `push_instructions`, the replies going to `fold` when there is one.
    fn push(
        &self,
        run_id: u64,
        messages: Vec<Message>,
        now: f64,
        fold: Option<Arc<dyn ReplyFold>>,
    ) -> Result<Vec<String>, StateError> {
        if self.keeps_pushes_whole() {
            return self.push_batch(run_id, messages.len(), |numbers| {
                Batches::prepare(numbers, messages, now, fold)
            });
        }
        // Numbers are taken under the lock; the ids, stamps and flight records are made
        // outside it, and the messages go in by chunks, so that a round of a million
        // instructions neither stops the workers for its whole length nor waits for them.
        let (lifetime, first) = self.take_numbers(run_id, messages.len())?;
        let total = messages.len();
        let mut ids = Vec::with_capacity(total);
        let mut last_phase = None;
        let mut messages = messages.into_iter().zip(first..);
        let mut chunk = Vec::with_capacity(PUSH_CHUNK.min(total));
        loop {
            chunk.extend(messages.by_ref().take(PUSH_CHUNK).map(|(mut m, counter)| {
                let id = rules::message_id(run_id, lifetime, counter);
                ids.push(id.clone());
                rules::stamp_instruction(&mut m.metadata, run_id, id, now);
                (
                    Inflight::sharing(&m.metadata, &mut last_phase, fold.as_ref()),
                    m,
                )
            }));
            if chunk.is_empty() {
                break;
            }
            let mut inner = self.lock();
            // A stop since the last chunk purged what went before: send nothing more.
            inner.check_can_send(run_id)?;
            if ids.len() == chunk.len() {
                inner.inflight.reserve(total);
            }
            for (flight, m) in chunk.drain(..) {
                let id = m.metadata.message_id.clone();
                let dst = m.metadata.dst_node_id;
                if !inner.nodes.contains(dst) {
                    let error = rules::node_unavailable(dst, rules::NOT_CONNECTED);
                    inner.answer(id, &flight, error, now);
                    continue;
                }
                inner.inflight.insert(id, flight);
                let queue = inner
                    .queues
                    .entry(dst)
                    .or_insert_with(|| VecDeque::with_capacity(1));
                let was_empty = queue.is_empty();
                queue.push_back(m);
                if was_empty {
                    inner.ready.push_back(dst);
                }
                inner.nodes.notify(dst);
            }
            drop(inner);
            self.instructions.notify_waiters();
        }
        Ok(ids)
    }

    /// Whether pushes are kept whole (`batches`): in a store with fold lanes, which only a
    /// virtual fleet serves (`pull_any_instructions`; no SuperNode pulls from it).
    fn keeps_pushes_whole(&self) -> bool {
        self.fold_lanes() > 0
    }

    /// Takes `count` message numbers for a push to run `run_id`, if it may send: the
    /// store's lifetime tag and the first number.
    fn take_numbers(&self, run_id: u64, count: usize) -> Result<(u32, u64), StateError> {
        let mut inner = self.lock();
        inner.check_can_send(run_id)?;
        let first = inner.next_message + 1;
        inner.next_message += count as u64;
        Ok((inner.lifetime, first))
    }

    /// `push` for a store a virtual fleet serves: the push of `count` instructions that
    /// `prepare` makes from its numbers is kept whole (`batches`), added under one hold of
    /// the lock; its messages are stamped as the workers take them. The ServerApp's thread
    /// then spends on a million instructions little more than their ids.
    fn push_batch(
        &self,
        run_id: u64,
        count: usize,
        prepare: impl FnOnce((u64, u32, u64)) -> Prepared,
    ) -> Result<Vec<String>, StateError> {
        let (lifetime, first) = self.take_numbers(run_id, count)?;
        let ids = (first..)
            .take(count)
            .map(|counter| rules::message_id(run_id, lifetime, counter))
            .collect();
        let prepared = prepare((run_id, lifetime, first));
        let refused = {
            let mut inner = self.lock();
            // A stop since the numbers were taken purged the run: send nothing.
            match inner.check_can_send(run_id) {
                Ok(()) => {
                    inner.batches.add(prepared);
                    None
                }
                Err(e) => Some((e, prepared)),
            }
        };
        if let Some((e, prepared)) = refused {
            drop(prepared);
            return Err(e);
        }
        self.instructions.notify_waiters();
        Ok(ids)
    }

    /// Lets a fold offered with `push_instructions_folding` take the replies as they are
    /// pushed, on the pushing thread, `lanes` shards at a time: for a simulation, whose
    /// workers push replies from blocking threads. A SuperLink's store leaves it at 0, so
    /// no fold ever runs on a Fleet API task.
    pub fn set_fold_lanes(&self, lanes: usize) {
        self.fold_lanes.store(lanes, Ordering::Relaxed);
    }

    fn with(run_ids: RunIds, lifetime: u32, incarnation: u64) -> Self {
        MemoryLinkState {
            inner: Mutex::new(Inner {
                run_ids,
                last_run_id: 0,
                lifetime,
                next_message: 0,
                runs: FastHashMap::default(),
                nodes: Nodes::default(),
                keys: NodeKeys::default(),
                queues: FastHashMap::default(),
                ready: VecDeque::new(),
                inflight: FastHashMap::default(),
                delivered: FastHashMap::default(),
                fabs: HashMap::new(),
                batches: Batches::default(),
            }),
            instructions: Notify::new(),
            replies_taken: Notify::new(),
            waiting_replies: AtomicUsize::new(0),
            waiting_bytes: AtomicUsize::new(0),
            incarnation,
            fold_lanes: AtomicUsize::new(0),
        }
    }

    /// A poisoned lock means a panic mid-update elsewhere; the maps are still structurally
    /// valid (every update is a single insert/remove), so keep serving.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    /// Refuses instructions for a run that is not running.
    fn check_can_send(&mut self, run_id: u64) -> Result<(), StateError> {
        let status = self
            .run_mut(run_id)?
            .info
            .as_ref()
            .ok_or(StateError::UnknownRun(run_id))?
            .status;
        rules::check_can_send(run_id, status)
    }

    fn run_mut(&mut self, run_id: u64) -> Result<&mut Run, StateError> {
        self.runs
            .get_mut(&run_id)
            .filter(|r| r.info.is_some())
            .ok_or(StateError::UnknownRun(run_id))
    }

    /// The run, if its log and checkpoint are still open.
    fn open_run_mut(&mut self, run_id: u64) -> Result<&mut Run, StateError> {
        let run = self.run_mut(run_id)?;
        if let Some(info) = &run.info {
            rules::check_open(run_id, info.status)?;
        }
        Ok(run)
    }

    fn next_id(&mut self, run_id: u64) -> String {
        self.next_message += 1;
        rules::message_id(run_id, self.lifetime, self.next_message)
    }

    /// Moves up to `limit` of `node_id`'s queued instructions to `out`; whether some are
    /// left.
    fn take_from_queue(&mut self, node_id: u64, limit: usize, out: &mut Vec<Message>) -> bool {
        // One lookup: at a million queued nodes each is a cache miss.
        let Entry::Occupied(mut q) = self.queues.entry(node_id) else {
            return false;
        };
        while out.len() < limit {
            match q.get_mut().pop_front() {
                Some(m) => out.push(m),
                None => break,
            }
        }
        if q.get().is_empty() {
            q.remove();
            return false;
        }
        true
    }

    /// Forgets the delivered copy of `message_id` sent to `node`.
    fn undeliver(&mut self, node: u64, message_id: &str) {
        if let Some(list) = self.delivered.get_mut(&node) {
            list.retain(|m| m.metadata.message_id != message_id);
            if list.is_empty() {
                self.delivered.remove(&node);
            }
        }
    }

    /// Stores a reply the SuperLink writes in the node's place and wakes the run.
    fn answer(&mut self, reply_to: String, flight: &Inflight, error: MessageError, now: f64) {
        let id = self.next_id(flight.run_id);
        let reply = rules::error_reply(flight, reply_to, id, error, now);
        if let Ok(run) = self.run_mut(flight.run_id) {
            run.replies.push_back(reply);
            run.signals.replies.notify_waiters();
        }
    }

    /// Forgets `gone` nodes and answers everything sent to them, in one pass over the
    /// instructions in flight however many nodes leave at once.
    fn drop_nodes(&mut self, gone: &HashSet<u64>, reason: &str, now: f64) {
        if gone.is_empty() {
            return;
        }
        for &node in gone {
            self.nodes.remove(node);
            self.queues.remove(&node);
            self.delivered.remove(&node);
        }
        let Inner { queues, ready, .. } = self;
        ready.retain(|n| queues.contains_key(n));
        let ids: Vec<String> = self
            .inflight
            .iter()
            .filter(|(_, f)| gone.contains(&f.dst_node_id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(flight) = self.inflight.remove(&id) {
                let error = rules::node_unavailable(flight.dst_node_id, reason);
                self.answer(id, &flight, error, now);
            }
        }
        for (id, flight) in self.batches.drop_nodes(gone) {
            let error = rules::node_unavailable(flight.dst_node_id, reason);
            self.answer(id, &flight, error, now);
        }
    }

    /// Answers instructions whose TTL ended, taking those still queued off their queue.
    fn expire(&mut self, now: f64) -> usize {
        let ids: Vec<String> = self
            .inflight
            .iter()
            .filter(|(_, f)| f.is_expired(now))
            .map(|(id, _)| id.clone())
            .collect();
        let mut touched = HashSet::new();
        for id in &ids {
            if let Some(flight) = self.inflight.remove(id) {
                touched.insert(flight.dst_node_id);
                self.undeliver(flight.dst_node_id, id);
                let error = rules::ttl_expired(&flight);
                self.answer(id.clone(), &flight, error, now);
            }
        }
        if !ids.is_empty() {
            let expired: HashSet<&str> = ids.iter().map(String::as_str).collect();
            for node in touched {
                if let Some(q) = self.queues.get_mut(&node) {
                    q.retain(|m| !expired.contains(m.metadata.message_id.as_str()));
                    if q.is_empty() {
                        self.queues.remove(&node);
                    }
                }
            }
            let Inner { queues, ready, .. } = self;
            ready.retain(|n| queues.contains_key(n));
        }
        let batched = self.batches.expire(now);
        let expired = ids.len() + batched.len();
        for (id, flight) in batched {
            let error = rules::ttl_expired(&flight);
            self.answer(id, &flight, error, now);
        }
        expired
    }
}

impl RunStore for MemoryLinkState {
    fn create_run(&self, run: NewRun) -> Result<u64, StateError> {
        let mut inner = self.lock();
        let run_id = rules::new_run_id(inner.run_ids, inner.last_run_id, rand::random, |id| {
            inner.runs.contains_key(&id)
        });
        inner.last_run_id = inner.last_run_id.max(run_id);
        let federation_options = run.federation_options.clone();
        inner.runs.insert(
            run_id,
            Run {
                info: Some(rules::new_run(run_id, run, unix_now())),
                federation_options,
                ..Run::default()
            },
        );
        Ok(run_id)
    }

    fn run(&self, run_id: u64) -> Option<RunInfo> {
        self.lock().runs.get(&run_id).and_then(|r| r.info.clone())
    }

    fn federation_options(&self, run_id: u64) -> Result<UserConfig, StateError> {
        let inner = self.lock();
        match inner.runs.get(&run_id) {
            Some(run) if run.info.is_some() => Ok(run.federation_options.clone()),
            _ => Err(StateError::UnknownRun(run_id)),
        }
    }

    fn runs(&self) -> Vec<RunInfo> {
        let mut v: Vec<RunInfo> = self
            .lock()
            .runs
            .values()
            .filter_map(|r| r.info.clone())
            .collect();
        rules::sort_for_listing(&mut v);
        v
    }

    fn run_status(&self, run_id: u64) -> Option<RunStatus> {
        self.lock()
            .runs
            .get(&run_id)
            .and_then(|r| r.info.as_ref().map(|i| i.status))
    }

    fn set_run_status(
        &self,
        run_id: u64,
        status: RunStatus,
        reason: &str,
    ) -> Result<RunInfo, StateError> {
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        let info = run.info.as_mut().ok_or(StateError::UnknownRun(run_id))?;
        rules::set_status(info, status, reason, unix_now())?;
        let out = info.clone();
        // Whoever waits on replies or events must see that the run ended.
        run.signals.replies.notify_waiters();
        run.signals.events.notify_waiters();
        Ok(out)
    }

    fn signals(&self, run_id: u64) -> Result<Arc<RunSignals>, StateError> {
        Ok(self.lock().run_mut(run_id)?.signals.clone())
    }

    fn count_resume(&self, run_id: u64) -> Result<u32, StateError> {
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        run.resumes = run.resumes.saturating_add(1);
        Ok(run.resumes)
    }

    fn clear_resumes(&self, run_id: u64) -> Result<(), StateError> {
        self.lock().run_mut(run_id)?.resumes = 0;
        Ok(())
    }

    fn delete_runs(&self, run_ids: &[u64]) -> Result<usize, StateError> {
        let mut deleted = Vec::new();
        {
            let mut inner = self.lock();
            for run_id in run_ids {
                let finished = inner
                    .runs
                    .get(run_id)
                    .and_then(|r| r.info.as_ref())
                    .is_some_and(|i| i.status.is_finished());
                if finished && let Some(run) = inner.runs.remove(run_id) {
                    deleted.push((*run_id, run));
                }
            }
            let referenced: HashSet<String> = inner
                .runs
                .values()
                .filter_map(|r| r.info.as_ref())
                .map(|i| rules::fab_key(&i.app.fab_hash))
                .collect();
            for (_, run) in &deleted {
                if let Some(info) = &run.info {
                    let key = rules::fab_key(&info.app.fab_hash);
                    if !referenced.contains(&key) {
                        inner.fabs.remove(&key);
                    }
                }
            }
        }
        // A finished run's messages were purged when it ended; purge again in case.
        for (run_id, run) in &deleted {
            self.purge_messages(*run_id);
            // Whoever still follows the run sees it gone rather than waiting on.
            run.signals.events.notify_waiters();
            run.signals.replies.notify_waiters();
        }
        Ok(deleted.len())
    }
}

impl NodeStore for MemoryLinkState {
    fn create_node(&self, lease: NodeLease) -> Result<u64, StateError> {
        let mut inner = self.lock();
        loop {
            let id = inner.nodes.create(lease);
            // Ids bound to allowed keys are reserved for their nodes.
            if !inner.keys.has_id(id) {
                return Ok(id);
            }
            inner.nodes.remove(id);
        }
    }

    fn renew_node(&self, node_id: u64, lease: NodeLease) -> Result<(), StateError> {
        self.lock().nodes.renew(node_id, lease)
    }

    fn activate_node(&self, node_id: u64, lease: NodeLease) -> Result<(), StateError> {
        self.lock().nodes.activate(node_id, lease);
        Ok(())
    }

    fn unregister_node(&self, node_id: u64, reason: &str, now: f64) -> bool {
        let mut inner = self.lock();
        if !inner.nodes.contains(node_id) {
            return false;
        }
        inner.drop_nodes(&HashSet::from([node_id]), reason, now);
        true
    }

    fn node_ids(&self) -> NodeSet {
        self.lock().nodes.set()
    }

    fn node_alive(&self, node_id: u64) -> Result<(), StateError> {
        self.lock().nodes.alive(node_id)
    }

    fn has_node(&self, node_id: u64) -> bool {
        self.lock().nodes.contains(node_id)
    }

    fn node_signal(&self, node_id: u64) -> Result<Arc<Notify>, StateError> {
        self.lock().nodes.signal(node_id)
    }

    fn sweep(&self, now: f64) -> Sweep {
        let mut inner = self.lock();
        let offline = inner.nodes.overdue(now);
        let gone: HashSet<u64> = offline.iter().copied().collect();
        inner.drop_nodes(&gone, rules::OFFLINE, now);
        let expired = inner.expire(now);
        Sweep { offline, expired }
    }
}

impl MessageStore for MemoryLinkState {
    fn push_instructions(
        &self,
        run_id: u64,
        messages: Vec<Message>,
        now: f64,
    ) -> Result<Vec<String>, StateError> {
        self.push(run_id, messages, now, None)
    }

    fn fold_lanes(&self) -> usize {
        self.fold_lanes.load(Ordering::Relaxed)
    }

    fn push_instructions_folding(
        &self,
        run_id: u64,
        messages: Vec<Message>,
        now: f64,
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, StateError> {
        let fold = (self.fold_lanes() > 0).then_some(fold);
        self.push(run_id, messages, now, fold)
    }

    fn push_broadcast_folding(
        &self,
        run_id: u64,
        template: Message,
        nodes: &[u64],
        now: f64,
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, StateError> {
        if !self.keeps_pushes_whole() {
            let messages = template.to_each(nodes);
            return self.push_instructions_folding(run_id, messages, now, fold);
        }
        self.push_batch(run_id, nodes.len(), |numbers| {
            Batches::prepare_broadcast(numbers, template, nodes, now, Some(fold))
        })
    }

    fn pull_instructions(&self, node_id: u64, limit: usize) -> Result<Vec<Message>, StateError> {
        let mut inner = self.lock();
        if !inner.nodes.contains(node_id) {
            return Err(StateError::UnknownNode(node_id));
        }
        let mut out = Vec::new();
        inner.take_from_queue(node_id, limit, &mut out);
        if !out.is_empty() {
            inner
                .delivered
                .entry(node_id)
                .or_default()
                .extend(out.iter().cloned());
        }
        Ok(out)
    }

    fn redeliver(&self, node_id: u64) -> Result<usize, StateError> {
        let mut inner = self.lock();
        if !inner.nodes.contains(node_id) {
            return Err(StateError::UnknownNode(node_id));
        }
        let Some(again) = inner.delivered.remove(&node_id) else {
            return Ok(0);
        };
        let count = again.len();
        let queue = inner.queues.entry(node_id).or_default();
        let was_empty = queue.is_empty();
        rules::requeue(queue, again);
        if was_empty {
            inner.ready.push_back(node_id);
        }
        inner.nodes.notify(node_id);
        Ok(count)
    }

    fn push_reply(&self, mut reply: Message, now: f64) -> Result<(), StateError> {
        let mut inner = self.lock();
        let md = &reply.metadata;
        let flight = match inner
            .batches
            .accept(&md.reply_to_message_id, md.src_node_id)
        {
            Some(accepted) => accepted?,
            None => {
                // One lookup in a map of the instructions in flight.
                let Entry::Occupied(flight) = inner.inflight.entry(md.reply_to_message_id.clone())
                else {
                    return Err(StateError::UnknownReply(md.reply_to_message_id.clone()));
                };
                rules::check_replier(flight.key(), md.src_node_id, flight.get().dst_node_id)?;
                let (id, flight) = flight.remove_entry();
                inner.undeliver(flight.dst_node_id, &id);
                flight
            }
        };
        let run_id = flight.run_id;
        let reply_id = inner.next_id(run_id);
        rules::stamp_reply(&mut reply.metadata, run_id, reply_id, now);
        if let Some(fold) = flight.push.fold.as_ref() {
            // Accepted and stamped: fold it here, on the pushing worker, without the lock;
            // nothing is stored in its place unless the fold hands it back.
            inner.run_mut(run_id)?;
            drop(inner);
            match fold.fold(reply) {
                None => return Ok(()),
                Some(back) => reply = back,
            }
            inner = self.lock();
        }
        let run = inner.run_mut(run_id)?;
        run.reply_bytes += reply.array_bytes();
        run.replies.push_back(reply);
        run.signals.replies.notify_waiters();
        self.publish_waiting(&inner);
        Ok(())
    }

    fn take_replies(&self, run_id: u64) -> Result<Vec<Message>, StateError> {
        let taken = {
            let mut inner = self.lock();
            let run = inner.run_mut(run_id)?;
            run.reply_bytes = 0;
            let taken = run.replies.drain(..).collect();
            self.publish_waiting(&inner);
            taken
        };
        self.replies_taken.notify_waiters();
        Ok(taken)
    }

    fn take_replies_to(
        &self,
        run_id: u64,
        message_ids: &[String],
    ) -> Result<Vec<Message>, StateError> {
        let wanted: HashSet<&str> = message_ids.iter().map(String::as_str).collect();
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        let (hit, keep): (VecDeque<Message>, VecDeque<Message>) = run
            .replies
            .drain(..)
            .partition(|m| wanted.contains(m.metadata.reply_to_message_id.as_str()));
        run.replies = keep;
        run.reply_bytes = run.replies.iter().map(Message::array_bytes).sum();
        self.publish_waiting(&inner);
        drop(inner);
        self.replies_taken.notify_waiters();
        Ok(hit.into())
    }

    fn purge_messages(&self, run_id: u64) {
        let mut inner = self.lock();
        inner.batches.purge(run_id);
        inner.inflight.retain(|_, f| f.run_id != run_id);
        for q in inner.queues.values_mut() {
            q.retain(|m| m.metadata.run_id != run_id);
        }
        inner.queues.retain(|_, q| !q.is_empty());
        for list in inner.delivered.values_mut() {
            list.retain(|m| m.metadata.run_id != run_id);
        }
        inner.delivered.retain(|_, list| !list.is_empty());
        let Inner { queues, ready, .. } = &mut *inner;
        ready.retain(|n| queues.contains_key(n));
        if let Some(run) = inner.runs.get_mut(&run_id) {
            run.replies.clear();
            run.reply_bytes = 0;
        }
        self.publish_waiting(&inner);
        drop(inner);
        self.replies_taken.notify_waiters();
    }

    fn held_messages(&self) -> usize {
        let inner = self.lock();
        inner.inflight.len()
            + inner.batches.held()
            + inner.runs.values().map(|r| r.replies.len()).sum::<usize>()
    }
}

impl EventLog for MemoryLinkState {
    fn push_event(&self, run_id: u64, event: RunEvent) -> Result<(), StateError> {
        let mut inner = self.lock();
        let run = inner.open_run_mut(run_id)?;
        run.events.push(event);
        run.signals.events.notify_waiters();
        Ok(())
    }

    fn events(&self, run_id: u64, from: usize) -> Result<(Vec<RunEvent>, usize), StateError> {
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        let start = from.min(run.events.len());
        Ok((run.events[start..].to_vec(), run.events.len()))
    }
}

impl FabStore for MemoryLinkState {
    fn store_fab(&self, fab_hash: &str, packed: Bytes) -> Result<(), StateError> {
        self.lock()
            .fabs
            .entry(rules::fab_key(fab_hash))
            .or_insert(packed);
        Ok(())
    }

    fn fab(&self, fab_hash: &str) -> Option<Bytes> {
        self.lock().fabs.get(&rules::fab_key(fab_hash)).cloned()
    }
}

impl NodeKeyStore for MemoryLinkState {
    fn set_node_auth(&self, required: bool) {
        self.lock().keys.required = required;
    }

    fn node_auth(&self) -> bool {
        self.lock().keys.required
    }

    fn allow_node_key(&self, public_key: Bytes, now: f64) -> Result<u64, StateError> {
        let mut inner = self.lock();
        let Inner { keys, nodes, .. } = &mut *inner;
        Ok(keys.allow(
            public_key,
            |keys| loop {
                let id: u64 = rand::random();
                if id != 0 && !nodes.contains(id) && !keys.has_id(id) {
                    break id;
                }
            },
            now,
        ))
    }

    fn disallow_node(&self, node_id: u64) -> Option<Bytes> {
        self.lock().keys.remove(node_id)
    }

    fn node_id_of_key(&self, public_key: &[u8]) -> Option<u64> {
        self.lock().keys.id_of(public_key)
    }

    fn node_seen(&self, node_id: u64, now: f64) {
        self.lock().keys.seen(node_id, now);
    }

    fn nodes_info(&self) -> Vec<NodeInfo> {
        let inner = self.lock();
        let keyed: Vec<NodeInfo> = inner
            .keys
            .entries()
            .map(|(key, e)| NodeInfo {
                node_id: e.node_id,
                public_key: key.clone(),
                online: inner.nodes.is_alive(e.node_id),
                registered_at: e.allowed_at,
                last_seen: e.last_seen,
            })
            .collect();
        rules::nodes_info(keyed, &inner.nodes.registered())
    }
}

impl CheckpointStore for MemoryLinkState {
    fn save_checkpoint(&self, run_id: u64, checkpoint: Bytes) -> Result<(), StateError> {
        let mut inner = self.lock();
        let run = inner.open_run_mut(run_id)?;
        run.checkpoint = Some(checkpoint);
        Ok(())
    }

    fn checkpoint(&self, run_id: u64) -> Result<Option<Bytes>, StateError> {
        Ok(self.lock().run_mut(run_id)?.checkpoint.clone())
    }

    fn drop_checkpoint(&self, run_id: u64) -> Result<(), StateError> {
        let mut inner = self.lock();
        let run = inner.run_mut(run_id)?;
        if run.info.as_ref().is_some_and(|i| i.status.is_finished()) {
            run.checkpoint = None;
        }
        Ok(())
    }
}

impl LinkState for MemoryLinkState {
    fn incarnation(&self) -> u64 {
        self.incarnation
    }
}

impl MemoryLinkState {
    /// Recounts the replies waiting in every run (a simulation store has few runs) for
    /// `replies_waiting`; called with the lock held, so publishes happen in order.
    fn publish_waiting(&self, inner: &Inner) {
        let (replies, bytes) = inner
            .runs
            .values()
            .fold((0, 0), |(n, b), r| (n + r.replies.len(), b + r.reply_bytes));
        self.waiting_replies.store(replies, Ordering::Relaxed);
        self.waiting_bytes.store(bytes, Ordering::Relaxed);
    }
}

impl SimulationStore for MemoryLinkState {
    fn set_fold_lanes(&self, lanes: usize) {
        MemoryLinkState::set_fold_lanes(self, lanes);
    }

    fn register_nodes(&self, node_ids: &[u64]) {
        self.lock().nodes.add_permanent(node_ids);
    }

    fn pull_any_instructions(&self, limit: usize, now: f64) -> Vec<Message> {
        let mut inner = self.lock();
        let mut out = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            let Some(node) = inner.ready.pop_front() else {
                break;
            };
            if inner.take_from_queue(node, limit, &mut out) {
                // Still has messages: keep its turn for the next call.
                inner.ready.push_front(node);
                break;
            }
        }
        if out.len() < limit {
            let mut gone = Vec::new();
            let Inner { batches, nodes, .. } = &mut *inner;
            batches.take(limit, |node| nodes.contains(node), &mut out, &mut gone);
            for (id, flight) in gone {
                let error = rules::node_unavailable(flight.dst_node_id, rules::NOT_CONNECTED);
                inner.answer(id, &flight, error, now);
            }
        }
        out
    }

    fn instructions_ready(&self) -> &Notify {
        &self.instructions
    }

    fn replies_waiting(&self) -> WaitingReplies {
        WaitingReplies {
            replies: self.waiting_replies.load(Ordering::Relaxed),
            bytes: self.waiting_bytes.load(Ordering::Relaxed),
        }
    }

    fn replies_taken(&self) -> &Notify {
        &self.replies_taken
    }
}

impl NodeAuthority for MemoryLinkState {
    fn admits(&self, public_key: &[u8]) -> bool {
        self.lock().keys.id_of(public_key).is_some()
    }

    fn owns(&self, node_id: u64, public_key: &[u8]) -> bool {
        self.lock().keys.id_of(public_key) == Some(node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{MessageError, Payload, RecordDict, error_code};

    fn running_run(state: &MemoryLinkState) -> u64 {
        let id = state.create_run(NewRun::default()).unwrap();
        state.set_run_status(id, RunStatus::Starting, "").unwrap();
        state.set_run_status(id, RunStatus::Running, "").unwrap();
        id
    }

    #[test]
    fn instructions_reach_their_node_and_replies_their_run() {
        let s = MemoryLinkState::new();
        s.register_nodes(&[5, 6]);
        let run = running_run(&s);
        let ids = s
            .push_instructions(run, vec![Message::new(RecordDict::new(), 6, "train")], 1.0)
            .unwrap();
        assert!(s.pull_instructions(5, 10).unwrap().is_empty());
        let got = s.pull_instructions(6, 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].metadata.message_id, ids[0]);
        assert_eq!(got[0].metadata.run_id, run);
        s.push_reply(got[0].reply(Payload::Content(RecordDict::new())), 2.0)
            .unwrap();
        let replies = s.take_replies(run).unwrap();
        assert_eq!(replies[0].metadata.reply_to_message_id, ids[0]);
    }

    #[test]
    fn a_reply_is_accepted_once_and_only_from_its_node() {
        let s = MemoryLinkState::new();
        s.register_nodes(&[5]);
        let run = running_run(&s);
        s.push_instructions(run, vec![Message::new(RecordDict::new(), 5, "train")], 1.0)
            .unwrap();
        let msg = s.pull_any_instructions(1, 0.0).remove(0);
        let mut forged = msg.reply(Payload::Error(MessageError::new(0, "x")));
        forged.metadata.src_node_id = 9;
        assert!(matches!(
            s.push_reply(forged, 2.0),
            Err(StateError::WrongReplier { .. })
        ));
        let reply = msg.reply(Payload::Content(RecordDict::new()));
        s.push_reply(reply.clone(), 2.0).unwrap();
        assert!(matches!(
            s.push_reply(reply, 3.0),
            Err(StateError::UnknownReply(_))
        ));
    }

    #[test]
    fn only_running_runs_send() {
        let s = MemoryLinkState::new();
        s.register_nodes(&[1]);
        let pending = s.create_run(NewRun::default()).unwrap();
        let msg = || vec![Message::new(RecordDict::new(), 1, "train")];
        assert_eq!(
            s.push_instructions(pending, msg(), 0.0),
            Err(StateError::RunNotRunning(pending))
        );
    }

    fn lease(until: f64) -> NodeLease {
        NodeLease {
            heartbeat_interval: 10.0,
            online_until: until,
        }
    }

    fn only_error(s: &MemoryLinkState, run: u64) -> MessageError {
        let mut replies = s.take_replies(run).unwrap();
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies.remove(0).error().expect("an error reply").clone()
    }

    #[test]
    fn an_instruction_to_an_unknown_node_is_answered_at_once() {
        let s = MemoryLinkState::new();
        let run = running_run(&s);
        let msg = Message::new(RecordDict::new(), 42, "train").with_group_id("3");
        let ids = s.push_instructions(run, vec![msg], 5.0).unwrap();
        let reply = s.take_replies(run).unwrap().remove(0);
        assert_eq!(reply.metadata.reply_to_message_id, ids[0]);
        assert_eq!(reply.metadata.src_node_id, 42);
        assert_eq!(reply.metadata.group_id, "3");
        let err = reply.error().unwrap();
        assert_eq!(err.code, error_code::NODE_UNAVAILABLE);
        assert!(
            err.reason.starts_with("node 42 unavailable: "),
            "{}",
            err.reason
        );
    }

    #[test]
    fn a_leaving_node_has_its_queued_and_delivered_instructions_answered() {
        let s = MemoryLinkState::new();
        let node = s.create_node(lease(100.0)).unwrap();
        assert_ne!(node, 0);
        let run = running_run(&s);
        let two = vec![
            Message::new(RecordDict::new(), node, "train"),
            Message::new(RecordDict::new(), node, "evaluate"),
        ];
        s.push_instructions(run, two, 1.0).unwrap();
        let delivered = s.pull_instructions(node, 1).unwrap();
        assert!(s.unregister_node(node, "it deactivated", 2.0));
        let replies = s.take_replies(run).unwrap();
        assert_eq!(replies.len(), 2);
        for r in &replies {
            assert_eq!(
                r.error().map(|e| e.reason.clone()),
                Some(format!("node {node} unavailable: it deactivated"))
            );
        }
        assert!(s.node_ids().is_empty());
        assert_eq!(
            s.pull_instructions(node, 1),
            Err(StateError::UnknownNode(node))
        );
        let late = delivered[0].reply(Payload::Content(RecordDict::new()));
        assert!(
            s.push_reply(late, 3.0).is_err(),
            "a late reply to an answered instruction is refused"
        );
        assert!(!s.unregister_node(node, "again", 3.0));
    }

    #[test]
    fn sweep_forgets_nodes_past_their_lease_only() {
        let s = MemoryLinkState::new();
        let late = s.create_node(lease(10.0)).unwrap();
        let fine = s.create_node(lease(30.0)).unwrap();
        s.register_nodes(&[7]);
        let run = running_run(&s);
        s.push_instructions(
            run,
            vec![Message::new(RecordDict::new(), late, "train")],
            1.0,
        )
        .unwrap();
        assert_eq!(
            s.sweep(10.0),
            Sweep::default(),
            "the lease end itself is still online"
        );
        let sweep = s.sweep(10.5);
        assert_eq!(sweep.offline, vec![late]);
        assert_eq!(only_error(&s, run).code, error_code::NODE_UNAVAILABLE);
        s.renew_node(fine, lease(40.0)).unwrap();
        s.node_alive(fine).unwrap();
        assert!(s.sweep(35.0).offline.is_empty());
        assert_eq!(
            s.renew_node(late, lease(50.0)),
            Err(StateError::UnknownNode(late))
        );
        let mut left = s.node_ids().to_vec();
        left.sort_unstable();
        let mut want = vec![7, fine];
        want.sort_unstable();
        assert_eq!(left, want, "virtual nodes never expire");
    }

    #[test]
    fn sweep_answers_expired_instructions_queued_or_delivered() {
        let s = MemoryLinkState::new();
        s.register_nodes(&[1, 2]);
        let run = running_run(&s);
        let mut short = Message::new(RecordDict::new(), 1, "train");
        short.metadata.ttl = 5.0;
        let mut delivered = Message::new(RecordDict::new(), 2, "train");
        delivered.metadata.ttl = 5.0;
        s.push_instructions(run, vec![short, delivered], 100.0)
            .unwrap();
        s.pull_instructions(2, 1).unwrap();
        assert_eq!(s.sweep(104.0).expired, 0);
        assert_eq!(s.sweep(106.0).expired, 2);
        let replies = s.take_replies(run).unwrap();
        assert_eq!(replies.len(), 2);
        assert!(
            replies
                .iter()
                .all(|r| r.error().map(|e| e.code) == Some(error_code::MESSAGE_TTL_EXPIRED))
        );
        assert!(
            s.pull_instructions(1, 10).unwrap().is_empty(),
            "taken off the queue"
        );
        assert!(s.pull_any_instructions(10, 0.0).is_empty());
    }

    #[tokio::test]
    async fn a_node_signal_fires_on_its_instructions_only_and_when_it_leaves() {
        let s = MemoryLinkState::new();
        let a = s.create_node(lease(100.0)).unwrap();
        let b = s.create_node(lease(100.0)).unwrap();
        let run = running_run(&s);
        let sig_a = s.node_signal(a).unwrap();
        let sig_b = s.node_signal(b).unwrap();
        let wait_a = sig_a.notified();
        let wait_b = sig_b.notified();
        tokio::pin!(wait_a, wait_b);
        wait_a.as_mut().enable();
        wait_b.as_mut().enable();
        s.push_instructions(run, vec![Message::new(RecordDict::new(), a, "train")], 1.0)
            .unwrap();
        let poll = |f: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>| {
            let waker = std::task::Waker::noop();
            f.poll(&mut std::task::Context::from_waker(waker))
                .is_ready()
        };
        use std::future::Future;
        assert!(poll(wait_a.as_mut()));
        assert!(!poll(wait_b.as_mut()));
        s.unregister_node(b, "bye", 2.0);
        assert!(poll(wait_b.as_mut()));
    }

    #[test]
    fn redeliver_requeues_unanswered_deliveries_in_order_and_a_reply_counts_once() {
        let s = MemoryLinkState::new();
        let node = s.create_node(lease(100.0)).unwrap();
        let run = running_run(&s);
        let msgs = ["train", "evaluate", "query"].map(|t| Message::new(RecordDict::new(), node, t));
        s.push_instructions(run, msgs.to_vec(), 1.0).unwrap();
        let first = s.pull_instructions(node, 2).unwrap();
        s.push_reply(first[0].reply(Payload::Content(RecordDict::new())), 2.0)
            .unwrap();
        assert_eq!(s.redeliver(node), Ok(1), "only the unanswered one");
        let types: Vec<String> = s
            .pull_instructions(node, 10)
            .unwrap()
            .iter()
            .map(|m| m.metadata.message_type.clone())
            .collect();
        assert_eq!(types, ["evaluate", "query"]);
        let again = first[1].reply(Payload::Content(RecordDict::new()));
        s.push_reply(again.clone(), 3.0).unwrap();
        assert!(
            s.push_reply(again, 3.0).is_err(),
            "a reply is accepted once"
        );
        assert_eq!(s.redeliver(node), Ok(1), "the query is still out");
        assert_eq!(s.redeliver(7), Err(StateError::UnknownNode(7)));
    }

    /// A push of several chunks (`PUSH_CHUNK`) is stored as one: ids in order, each node's
    /// instruction queued, a missing node answered, and a later chunk's error reply filed
    /// under the round like the first chunk's.
    #[test]
    fn a_push_of_many_chunks_queues_every_instruction_in_order() {
        let s = MemoryLinkState::for_simulation();
        let count = 2 * PUSH_CHUNK as u64 + 5;
        let present: Vec<u64> = (1..count).collect();
        s.register_nodes(&present);
        let run = running_run(&s);
        // Node `count` is not registered and comes last, in the third chunk.
        let msgs: Vec<Message> = (1..=count)
            .map(|n| Message::new(RecordDict::new(), n, "train").with_group_id("4"))
            .collect();
        let ids = s.push_instructions(run, msgs, 0.0).unwrap();
        assert_eq!(ids.len() as u64, count);
        let pulled = s.pull_any_instructions(usize::MAX, 0.0);
        assert_eq!(pulled.len() as u64, count - 1);
        for (m, (node, id)) in pulled.iter().zip(present.iter().zip(&ids)) {
            assert_eq!(
                (m.metadata.dst_node_id, &m.metadata.message_id),
                (*node, id)
            );
        }
        let error = s.take_replies(run).unwrap().remove(0);
        assert_eq!(error.metadata.reply_to_message_id, ids[count as usize - 1]);
        assert_eq!(
            (
                error.metadata.group_id.as_str(),
                error.metadata.message_type.as_str()
            ),
            ("4", "train")
        );
    }

    #[test]
    fn pull_any_serves_nodes_in_arrival_order() {
        let s = MemoryLinkState::new();
        s.register_nodes(&[1, 2, 3]);
        let run = running_run(&s);
        let msgs = [3, 1, 3, 2].map(|n| Message::new(RecordDict::new(), n, "train"));
        s.push_instructions(run, msgs.to_vec(), 0.0).unwrap();
        let order: Vec<u64> = s
            .pull_any_instructions(10, 0.0)
            .iter()
            .map(|m| m.metadata.dst_node_id)
            .collect();
        assert_eq!(order, [3, 3, 1, 2]);
        assert!(s.pull_any_instructions(10, 0.0).is_empty());
    }

    /// Takes the replies of even nodes, hands back the others.
    struct EvenFold(Mutex<Vec<u64>>);

    impl ReplyFold for EvenFold {
        fn fold(&self, reply: Message) -> Option<Message> {
            let node = reply.metadata.src_node_id;
            if node % 2 == 1 {
                return Some(reply);
            }
            self.0.lock().unwrap().push(node);
            None
        }
    }

    #[test]
    fn a_store_with_fold_lanes_keeps_a_push_whole_and_stores_nothing_for_a_folded_reply() {
        let s = MemoryLinkState::for_simulation();
        s.set_fold_lanes(2);
        s.register_nodes(&[1, 2, 3, 4]);
        let run = running_run(&s);
        let fold = Arc::new(EvenFold(Mutex::new(Vec::new())));
        let msgs = [4, 1, 2, 9].map(|n| Message::new(RecordDict::new(), n, "train"));
        let ids = s
            .push_instructions_folding(run, msgs.to_vec(), 5.0, fold.clone())
            .unwrap();
        assert_eq!(s.held_messages(), 4);
        let taken = s.pull_any_instructions(10, 6.0);
        let got: Vec<(u64, &str)> = taken
            .iter()
            .map(|m| (m.metadata.dst_node_id, m.metadata.message_id.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (4, ids[0].as_str()),
                (1, ids[1].as_str()),
                (2, ids[2].as_str())
            ],
            "in push order; node 9 is unknown"
        );
        assert!(taken.iter().all(|m| m.metadata.created_at == 5.0));
        let unknown = s.take_replies(run).unwrap();
        assert_eq!(unknown.len(), 1, "node 9 is answered in its place");
        assert_eq!(unknown[0].metadata.reply_to_message_id, ids[3]);
        let mut wrong = taken[0].reply(Payload::Content(RecordDict::new()));
        wrong.metadata.src_node_id = 2;
        assert!(matches!(
            s.push_reply(wrong, 7.0),
            Err(StateError::WrongReplier { .. })
        ));
        for m in &taken {
            s.push_reply(m.reply(Payload::Content(RecordDict::new())), 7.0)
                .unwrap();
        }
        assert_eq!(*fold.0.lock().unwrap(), [4, 2], "folded where pushed");
        let whole = s.take_replies(run).unwrap();
        assert_eq!(
            whole.len(),
            1,
            "only the reply the fold handed back is stored"
        );
        assert_eq!(whole[0].metadata.src_node_id, 1);
        assert!(matches!(
            s.push_reply(taken[1].reply(Payload::Content(RecordDict::new())), 8.0),
            Err(StateError::UnknownReply(_))
        ));
        assert_eq!(s.held_messages(), 0);
    }

    #[tokio::test]
    async fn replies_waiting_counts_until_a_grid_takes_them_and_taking_wakes_fleets() {
        let s = MemoryLinkState::new();
        s.register_nodes(&[1, 2]);
        let run = running_run(&s);
        let msgs = [1, 2].map(|n| Message::new(RecordDict::new(), n, "train"));
        s.push_instructions(run, msgs.to_vec(), 0.0).unwrap();
        for m in s.pull_any_instructions(10, 0.0) {
            s.push_reply(m.reply(Payload::Content(RecordDict::new())), 1.0)
                .unwrap();
        }
        assert_eq!(
            s.replies_waiting(),
            WaitingReplies {
                replies: 2,
                bytes: 0
            }
        );
        let taken = s.replies_taken().notified();
        tokio::pin!(taken);
        taken.as_mut().enable();
        assert_eq!(s.take_replies(run).unwrap().len(), 2);
        assert_eq!(s.replies_waiting(), WaitingReplies::default());
        tokio::time::timeout(std::time::Duration::from_secs(1), taken)
            .await
            .expect("taking replies wakes a waiting fleet");
    }

    #[test]
    fn finished_runs_refuse_status_changes() {
        let s = MemoryLinkState::new();
        let run = running_run(&s);
        s.set_run_status(
            run,
            RunStatus::Finished(floret_core::SubStatus::Completed),
            "",
        )
        .unwrap();
        assert!(matches!(
            s.set_run_status(run, RunStatus::Running, ""),
            Err(StateError::Transition(_))
        ));
    }

    #[test]
    fn events_are_read_from_a_cursor() {
        let s = MemoryLinkState::new();
        let run = s.create_run(NewRun::default()).unwrap();
        s.push_event(run, RunEvent::Log("a".into())).unwrap();
        s.push_event(run, RunEvent::Log("b".into())).unwrap();
        let (first, next) = s.events(run, 0).unwrap();
        assert_eq!(first.len(), 2);
        s.push_event(run, RunEvent::Log("c".into())).unwrap();
        let (more, _) = s.events(run, next).unwrap();
        assert_eq!(more, vec![RunEvent::Log("c".into())]);
        s.set_run_status(
            run,
            RunStatus::Finished(floret_core::SubStatus::Stopped),
            "",
        )
        .unwrap();
        assert_eq!(
            s.push_event(run, RunEvent::Log("late".into())),
            Err(StateError::RunFinished(run))
        );
    }
}
