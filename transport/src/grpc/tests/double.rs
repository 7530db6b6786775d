//! In-memory `Fleet` and `Control` for the far side of the wire: just enough state to see
//! what arrived and to answer with each kind of error.

use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{
    AppRef, Control, ControlError, Fleet, FleetError, Message, RegisterNode, Registration,
    RunEvent, RunInfo, RunStatus, StartRun, SubStatus, UserConfig,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::{Notify, mpsc};

/// The incarnation the double answers every registration with, as a SuperLink would.
pub(super) const INCARNATION: u64 = 0x1ce;

#[derive(Default)]
struct Node {
    registration: RegisterNode,
    last_heartbeat: Option<f64>,
    queue: VecDeque<Message>,
    subscriber: Option<mpsc::Sender<Message>>,
}

#[derive(Default)]
struct FleetState {
    next_node: u64,
    nodes: HashMap<u64, Node>,
    runs: HashMap<u64, RunInfo>,
    fabs: HashMap<String, Bytes>,
    pushed: Vec<(u64, Message)>,
    deactivated: Vec<u64>,
}

#[derive(Default)]
pub(crate) struct FakeFleet {
    state: Mutex<FleetState>,
    /// Wakes waiters whenever messages are pushed.
    pushed: Notify,
    /// PullMessages calls: Subscribe must not need any.
    pub(crate) pulls: AtomicUsize,
}

impl FakeFleet {
    fn state(&self) -> std::sync::MutexGuard<'_, FleetState> {
        self.state.lock().unwrap()
    }

    /// Queues an instruction; a subscribed node gets it at once.
    pub(crate) fn queue(&self, node_id: u64, message: Message) {
        let mut state = self.state();
        let node = state
            .nodes
            .get_mut(&node_id)
            .expect("queue to a registered node");
        let unsent = match &node.subscriber {
            Some(tx) => tx.try_send(message).err().map(|e| e.into_inner()),
            None => Some(message),
        };
        node.queue.extend(unsent);
    }

    pub(crate) fn add_run(&self, run: RunInfo) {
        self.state().runs.insert(run.run_id, run);
    }

    pub(crate) fn add_fab(&self, fab_hash: &str, fab: Bytes) {
        self.state().fabs.insert(fab_hash.to_string(), fab);
    }

    pub(crate) fn registration(&self, node_id: u64) -> Option<(RegisterNode, Option<f64>)> {
        let state = self.state();
        let node = state.nodes.get(&node_id)?;
        Some((node.registration.clone(), node.last_heartbeat))
    }

    pub(crate) fn deactivated(&self) -> Vec<u64> {
        self.state().deactivated.clone()
    }

    /// Waits until at least `n` messages have been pushed, and returns them.
    pub(crate) async fn wait_pushed(&self, n: usize) -> Vec<(u64, Message)> {
        loop {
            let notified = self.pushed.notified();
            {
                let state = self.state();
                if state.pushed.len() >= n {
                    return state.pushed.clone();
                }
            }
            notified.await;
        }
    }

    fn known(state: &FleetState, node_id: u64) -> Result<(), FleetError> {
        if state.nodes.contains_key(&node_id) {
            Ok(())
        } else {
            Err(FleetError::UnknownNode(node_id))
        }
    }
}

#[async_trait]
impl Fleet for FakeFleet {
    async fn register_node(&self, request: RegisterNode) -> Result<Registration, FleetError> {
        if request.heartbeat_interval <= 0.0 {
            return Err(FleetError::Invalid(
                "heartbeat_interval must be positive".into(),
            ));
        }
        let mut state = self.state();
        state.next_node += 1;
        let id = state.next_node;
        state.nodes.insert(
            id,
            Node {
                registration: request,
                ..Node::default()
            },
        );
        Ok(Registration {
            node_id: id,
            incarnation: INCARNATION,
        })
    }

    async fn check_node(&self, node_id: u64) -> Result<(), FleetError> {
        Self::known(&self.state(), node_id)
    }

    async fn deactivate_node(&self, node_id: u64) -> Result<(), FleetError> {
        let mut state = self.state();
        Self::known(&state, node_id)?;
        state.nodes.remove(&node_id);
        state.deactivated.push(node_id);
        Ok(())
    }

    async fn heartbeat(&self, node_id: u64, heartbeat_interval: f64) -> Result<(), FleetError> {
        let mut state = self.state();
        Self::known(&state, node_id)?;
        if let Some(node) = state.nodes.get_mut(&node_id) {
            node.last_heartbeat = Some(heartbeat_interval);
        }
        Ok(())
    }

    async fn pull_messages(&self, node_id: u64) -> Result<Vec<Message>, FleetError> {
        self.pulls.fetch_add(1, Ordering::SeqCst);
        let mut state = self.state();
        Self::known(&state, node_id)?;
        Ok(state
            .nodes
            .get_mut(&node_id)
            .map(|n| n.queue.drain(..).collect())
            .unwrap_or_default())
    }

    async fn push_messages(&self, node_id: u64, messages: Vec<Message>) -> Result<(), FleetError> {
        {
            let mut state = self.state();
            Self::known(&state, node_id)?;
            state
                .pushed
                .extend(messages.into_iter().map(|m| (node_id, m)));
        }
        self.pushed.notify_waiters();
        Ok(())
    }

    async fn get_run(&self, run_id: u64) -> Result<RunInfo, FleetError> {
        self.state()
            .runs
            .get(&run_id)
            .cloned()
            .ok_or(FleetError::UnknownRun(run_id))
    }

    async fn get_fab(&self, fab_hash: &str) -> Result<Bytes, FleetError> {
        self.state().fabs.get(fab_hash).cloned().ok_or_else(|| {
            FleetError::Invalid(format!("this SuperLink has no FAB with hash {fab_hash}"))
        })
    }

    async fn subscribe(&self, node_id: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        let mut state = self.state();
        Self::known(&state, node_id)?;
        let (tx, rx) = mpsc::channel(64);
        if let Some(node) = state.nodes.get_mut(&node_id) {
            while let Some(m) = node.queue.pop_front() {
                if let Err(e) = tx.try_send(m) {
                    node.queue.push_front(e.into_inner());
                    break;
                }
            }
            node.subscriber = Some(tx);
        }
        Ok(rx)
    }
}

pub(crate) fn run_info(run_id: u64, status: RunStatus) -> RunInfo {
    let mut run_config = UserConfig::new();
    run_config.insert(
        "num-server-rounds".into(),
        floret_core::UserConfigValue::Int(3),
    );
    RunInfo {
        run_id,
        app: AppRef {
            name: "quickstart".into(),
            serverapp: "quickstart.server_app:app".into(),
            clientapp: "quickstart.client_app:app".into(),
            fab_hash: String::new(),
        },
        federation: "lan".into(),
        run_config,
        status,
        reason: String::new(),
        created_at: 1_700_000_000.0,
        status_changed_at: 1_700_000_001.5,
        owner: String::new(),
    }
}

#[derive(Default)]
struct ControlState {
    runs: BTreeMap<u64, RunInfo>,
    started: Vec<StartRun>,
    events: HashMap<u64, Vec<RunEvent>>,
    followers: HashMap<u64, Vec<mpsc::Sender<RunEvent>>>,
}

#[derive(Default)]
pub(crate) struct FakeControl {
    state: Mutex<ControlState>,
}

impl FakeControl {
    fn state(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap()
    }

    pub(crate) fn started(&self) -> Vec<StartRun> {
        self.state().started.clone()
    }

    /// Records an event and sends it to followers.
    pub(crate) fn emit(&self, run_id: u64, event: RunEvent) {
        let mut state = self.state();
        state.events.entry(run_id).or_default().push(event.clone());
        for f in state.followers.get(&run_id).into_iter().flatten() {
            let _ = f.try_send(event.clone());
        }
    }

    /// Ends the run: followers' streams close.
    pub(crate) fn finish(&self, run_id: u64) {
        let mut state = self.state();
        state.followers.remove(&run_id);
        if let Some(run) = state.runs.get_mut(&run_id) {
            run.status = RunStatus::Finished(SubStatus::Completed);
        }
    }
}

#[async_trait]
impl Control for FakeControl {
    async fn start_run(&self, request: StartRun) -> Result<u64, ControlError> {
        if request.app.name.is_empty() {
            return Err(ControlError::Invalid(
                "no app named \"\": pass an app directory".into(),
            ));
        }
        let mut state = self.state();
        let run_id = state.runs.len() as u64 + 1;
        let mut run = run_info(run_id, RunStatus::Pending);
        run.app = request.app.clone();
        run.federation = request.federation.clone();
        run.run_config = request.run_config.clone();
        state.runs.insert(run_id, run);
        state.started.push(request);
        Ok(run_id)
    }

    async fn stop_run(&self, run_id: u64) -> Result<(), ControlError> {
        let mut state = self.state();
        let run = state
            .runs
            .get_mut(&run_id)
            .ok_or(ControlError::UnknownRun(run_id))?;
        if run.status.is_finished() {
            return Err(ControlError::Finished(run_id));
        }
        run.status = RunStatus::Finished(SubStatus::Stopped);
        run.reason = "stopped by the user".into();
        Ok(())
    }

    async fn list_runs(&self) -> Result<Vec<RunInfo>, ControlError> {
        Ok(self.state().runs.values().cloned().collect())
    }

    async fn get_run(&self, run_id: u64) -> Result<RunInfo, ControlError> {
        self.state()
            .runs
            .get(&run_id)
            .cloned()
            .ok_or(ControlError::UnknownRun(run_id))
    }

    async fn stream_events(
        &self,
        run_id: u64,
        follow: bool,
    ) -> Result<mpsc::Receiver<RunEvent>, ControlError> {
        let mut state = self.state();
        if !state.runs.contains_key(&run_id) {
            return Err(ControlError::UnknownRun(run_id));
        }
        let (tx, rx) = mpsc::channel(256);
        for e in state.events.get(&run_id).into_iter().flatten() {
            let _ = tx.try_send(e.clone());
        }
        let finished = state
            .runs
            .get(&run_id)
            .is_some_and(|r| r.status.is_finished());
        if follow && !finished {
            state.followers.entry(run_id).or_default().push(tx);
        }
        Ok(rx)
    }
}
