//! An in-memory `Grid` for tests: each node answers with a closure, after a delay on tokio's
//! clock (so `start_paused` tests run instantly), and nodes may join late.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{
    Array, ArrayRecord, Grid, GridError, Message, MetricRecord, NodeSet, Payload, RecordDict,
    RunEvent,
};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What a node does with a message.
pub(crate) enum Answer {
    /// Replies with `payload` after `after`.
    Reply { after: Duration, payload: Payload },
    /// Replies twice with the same payload (a retransmission).
    Twice(Payload),
    /// Never replies.
    Silent,
}

impl Answer {
    pub(crate) fn now(payload: Payload) -> Answer {
        Answer::Reply {
            after: Duration::ZERO,
            payload,
        }
    }
}

pub(crate) type Behaviour = Arc<dyn Fn(&Message) -> Answer + Send + Sync>;

struct Node {
    id: u64,
    joins_at: Duration,
    behaviour: Behaviour,
}

pub(crate) struct TestGrid {
    start: Instant,
    nodes: Vec<Node>,
    next_id: AtomicU64,
    tx: mpsc::UnboundedSender<Message>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>,
    pub events: Mutex<Vec<RunEvent>>,
    /// Every message sent, with the ids the grid gave it.
    pub sent: Mutex<Vec<Message>>,
    /// The run's checkpoint, as a SuperLink's state would keep it.
    pub checkpoint: Mutex<Option<Bytes>>,
    /// What `save_checkpoint` answers instead of keeping the checkpoint.
    pub save_error: Option<GridError>,
    /// After this many saved checkpoints the grid is gone (a SuperLink crash): every call
    /// that reaches nodes fails.
    pub crash_after_saves: Option<usize>,
    saves: AtomicUsize,
}

impl TestGrid {
    pub(crate) fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        TestGrid {
            start: Instant::now(),
            nodes: Vec::new(),
            next_id: AtomicU64::new(1),
            tx,
            rx: tokio::sync::Mutex::new(rx),
            events: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
            checkpoint: Mutex::new(None),
            save_error: None,
            crash_after_saves: None,
            saves: AtomicUsize::new(0),
        }
    }

    /// A grid holding `checkpoint`, as a restarted SuperLink's would.
    pub(crate) fn with_checkpoint(self, checkpoint: Option<Bytes>) -> Self {
        *self.checkpoint.lock().unwrap() = checkpoint;
        self
    }

    pub(crate) fn crashing_after_saves(mut self, saves: usize) -> Self {
        self.crash_after_saves = Some(saves);
        self
    }

    pub(crate) fn failing_saves(mut self, error: GridError) -> Self {
        self.save_error = Some(error);
        self
    }

    fn check_alive(&self) -> Result<(), GridError> {
        match self.crash_after_saves {
            Some(k) if self.saves.load(Ordering::SeqCst) >= k => {
                Err(GridError::Disconnected("the SuperLink crashed".into()))
            }
            _ => Ok(()),
        }
    }

    /// A node connected from the start.
    pub(crate) fn node(
        self,
        id: u64,
        f: impl Fn(&Message) -> Answer + Send + Sync + 'static,
    ) -> Self {
        self.node_joining(id, Duration::ZERO, f)
    }

    /// A node that connects `at` after the grid was made.
    pub(crate) fn node_joining(
        mut self,
        id: u64,
        at: Duration,
        f: impl Fn(&Message) -> Answer + Send + Sync + 'static,
    ) -> Self {
        self.nodes.push(Node {
            id,
            joins_at: at,
            behaviour: Arc::new(f),
        });
        self
    }

    pub(crate) fn logs(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                RunEvent::Log(l) => Some(l.clone()),
                _ => None,
            })
            .collect()
    }

    pub(crate) fn sent_of_type(&self, kind: &str) -> Vec<Message> {
        let sent = self.sent.lock().unwrap();
        sent.iter()
            .filter(|m| m.metadata.message_type == kind)
            .cloned()
            .collect()
    }
}

#[async_trait]
impl Grid for TestGrid {
    fn run_id(&self) -> u64 {
        7
    }

    async fn node_ids(&self) -> Result<NodeSet, GridError> {
        self.check_alive()?;
        let elapsed = self.start.elapsed();
        Ok(self
            .nodes
            .iter()
            .filter(|n| n.joins_at <= elapsed)
            .map(|n| n.id)
            .collect::<Vec<u64>>()
            .into())
    }

    async fn send(&self, messages: Vec<Message>) -> Result<Vec<String>, GridError> {
        self.check_alive()?;
        let mut ids = Vec::with_capacity(messages.len());
        for mut m in messages {
            let id = format!("m{}", self.next_id.fetch_add(1, Ordering::Relaxed));
            m.metadata.message_id = id.clone();
            m.metadata.run_id = 7;
            ids.push(id);
            self.sent.lock().unwrap().push(m.clone());
            let Some(node) = self.nodes.iter().find(|n| n.id == m.metadata.dst_node_id) else {
                continue;
            };
            let (after, replies) = match (node.behaviour)(&m) {
                Answer::Reply { after, payload } => (after, vec![m.reply(payload)]),
                Answer::Twice(payload) => (
                    Duration::ZERO,
                    vec![m.reply(payload.clone()), m.reply(payload)],
                ),
                Answer::Silent => continue,
            };
            let tx = self.tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                for reply in replies {
                    let _ = tx.send(reply);
                }
            });
        }
        Ok(ids)
    }

    async fn pull(&self, _: &[String]) -> Result<Vec<Message>, GridError> {
        Ok(Vec::new())
    }

    async fn receive(&self, timeout: Duration) -> Result<Vec<Message>, GridError> {
        let mut rx = self.rx.lock().await;
        let mut out = Vec::new();
        if let Ok(Some(first)) = tokio::time::timeout(timeout, rx.recv()).await {
            out.push(first);
            while let Ok(more) = rx.try_recv() {
                out.push(more);
            }
        }
        Ok(out)
    }

    fn emit(&self, event: RunEvent) {
        self.events.lock().unwrap().push(event);
    }

    async fn load_checkpoint(&self) -> Result<Option<Bytes>, GridError> {
        // As the real grids: past its own first save, a ServerApp has nothing to resume.
        if self.saves.load(Ordering::SeqCst) > 0 {
            return Ok(None);
        }
        Ok(self.checkpoint.lock().unwrap().clone())
    }

    async fn save_checkpoint(&self, checkpoint: Bytes) -> Result<(), GridError> {
        if let Some(e) = &self.save_error {
            return Err(e.clone());
        }
        *self.checkpoint.lock().unwrap() = Some(checkpoint);
        self.saves.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// A model of one float32 array "w".
pub(crate) fn model(values: &[f32]) -> ArrayRecord {
    let mut a = ArrayRecord::new();
    a.insert("w", Array::from_slice(values));
    a
}

pub(crate) fn metrics(num_examples: i64, loss: f64) -> MetricRecord {
    let mut m = MetricRecord::new();
    m.insert("num-examples", num_examples);
    m.insert("loss", loss);
    m
}

/// The round a message belongs to, from its config.
pub(crate) fn round_of(m: &Message) -> i64 {
    m.content()
        .ok()
        .and_then(|c| c.config_record("config").ok())
        .and_then(|c| c.get_i64("server-round").ok())
        .unwrap_or(-1)
}

/// A well-behaved node: trains to `values` on `n` examples (loss `loss`) and evaluates
/// with the same `n` and loss.
pub(crate) fn client(
    values: Vec<f32>,
    n: i64,
    loss: f64,
) -> impl Fn(&Message) -> Answer + Send + Sync {
    move |m: &Message| {
        let content = if m.metadata.message_type == "train" {
            RecordDict::new()
                .with("arrays", model(&values))
                .with("metrics", metrics(n, loss))
        } else {
            RecordDict::new().with("metrics", metrics(n, loss))
        };
        Answer::now(Payload::Content(content))
    }
}

pub(crate) fn values(arrays: &ArrayRecord) -> Vec<f32> {
    arrays
        .get("w")
        .unwrap()
        .values::<f32>()
        .unwrap()
        .into_owned()
}
