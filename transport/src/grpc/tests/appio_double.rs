//! In-memory `ServerAppIo` and `ClientAppIo` for the far side of the wire (one run, one
//! token, and a virtual fleet that answers every message at once), served on 127.0.0.1 with
//! a client for each.

use super::{big_array, localhost};
use crate::grpc::{
    ClientAppIoClient, Server, ServerAppIoClient, bind_clientappio, bind_serverappio,
    clientappio_client, serverappio_client,
};
use async_trait::async_trait;
use floret_core::{
    AppIoError, AppOutcome, ArrayRecord, ClientAppIo, ClientTask, Context, Message, MetricRecord,
    NodeSet, Payload, RecordDict, RunEvent, ServerAppIo, UserConfigValue,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

pub(crate) const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// How a node of the virtual fleet answers a message.
pub(crate) type Responder = dyn Fn(&Message) -> Payload + Send + Sync;

#[derive(Default)]
struct LinkState {
    next_id: u64,
    sent: Vec<Message>,
    /// Replies not handed out yet.
    replies: Vec<Message>,
    events: Vec<RunEvent>,
    outcome: Option<AppOutcome>,
    waiting: VecDeque<String>,
    checkpoint: Option<bytes::Bytes>,
}

/// A SuperLink's ServerAppIo for one run.
pub(crate) struct FakeServerAppIo {
    context: Context,
    nodes: Vec<u64>,
    responder: Box<Responder>,
    /// Set to answer every call with `Stopped`.
    stopped: std::sync::atomic::AtomicBool,
    state: Mutex<LinkState>,
    replied: Notify,
}

impl FakeServerAppIo {
    pub(crate) fn new(
        context: Context,
        nodes: Vec<u64>,
        responder: impl Fn(&Message) -> Payload + Send + Sync + 'static,
    ) -> Self {
        FakeServerAppIo {
            context,
            nodes,
            responder: Box::new(responder),
            stopped: Default::default(),
            state: Mutex::default(),
            replied: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LinkState> {
        self.state.lock().unwrap()
    }

    /// Refuses unknown tokens and tokens of a finished run, as a SuperLink does.
    fn check(&self, token: &str) -> Result<(), AppIoError> {
        if token != TOKEN || self.state().outcome.is_some() {
            return Err(AppIoError::BadToken);
        }
        if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(AppIoError::Stopped);
        }
        Ok(())
    }

    pub(crate) fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn sent(&self) -> Vec<Message> {
        self.state().sent.clone()
    }

    pub(crate) fn events(&self) -> Vec<RunEvent> {
        self.state().events.clone()
    }

    pub(crate) fn outcome(&self) -> Option<AppOutcome> {
        self.state().outcome.clone()
    }

    pub(crate) fn wait_for_claim(&self, token: &str) {
        self.state().waiting.push_back(token.to_string());
    }
}

#[async_trait]
impl ServerAppIo for FakeServerAppIo {
    async fn context(&self, token: &str) -> Result<Context, AppIoError> {
        self.check(token)?;
        Ok(self.context.clone())
    }

    async fn node_ids(&self, token: &str) -> Result<NodeSet, AppIoError> {
        self.check(token)?;
        Ok(self.nodes.clone().into())
    }

    async fn send(&self, token: &str, messages: Vec<Message>) -> Result<Vec<String>, AppIoError> {
        self.check(token)?;
        let mut ids = Vec::with_capacity(messages.len());
        {
            let mut state = self.state();
            for mut m in messages {
                if !self.nodes.contains(&m.metadata.dst_node_id) {
                    return Err(AppIoError::Invalid(format!(
                        "no node {} in this run",
                        m.metadata.dst_node_id
                    )));
                }
                state.next_id += 1;
                m.metadata.message_id = format!("m{}", state.next_id);
                m.metadata.run_id = self.context.run_id;
                let mut reply = m.reply((self.responder)(&m));
                reply.metadata.message_id = format!("r{}", state.next_id);
                ids.push(m.metadata.message_id.clone());
                state.sent.push(m);
                state.replies.push(reply);
            }
        }
        self.replied.notify_waiters();
        Ok(ids)
    }

    async fn pull(&self, token: &str, message_ids: &[String]) -> Result<Vec<Message>, AppIoError> {
        self.check(token)?;
        let mut state = self.state();
        let (pulled, kept) = std::mem::take(&mut state.replies)
            .into_iter()
            .partition(|r| message_ids.contains(&r.metadata.reply_to_message_id));
        state.replies = kept;
        Ok(pulled)
    }

    async fn receive(&self, token: &str, timeout: Duration) -> Result<Vec<Message>, AppIoError> {
        self.check(token)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.replied.notified();
            {
                let mut state = self.state();
                if !state.replies.is_empty() {
                    return Ok(std::mem::take(&mut state.replies));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn emit(&self, token: &str, event: RunEvent) -> Result<(), AppIoError> {
        self.check(token)?;
        self.state().events.push(event);
        Ok(())
    }

    async fn finish(&self, token: &str, outcome: AppOutcome) -> Result<(), AppIoError> {
        self.check(token)?;
        self.state().outcome = Some(outcome);
        Ok(())
    }

    async fn load_checkpoint(&self, token: &str) -> Result<Option<bytes::Bytes>, AppIoError> {
        self.check(token)?;
        Ok(self.state().checkpoint.clone())
    }

    async fn save_checkpoint(
        &self,
        token: &str,
        checkpoint: bytes::Bytes,
    ) -> Result<(), AppIoError> {
        self.check(token)?;
        self.state().checkpoint = Some(checkpoint);
        Ok(())
    }

    async fn claim(&self) -> Result<Option<String>, AppIoError> {
        Ok(self.state().waiting.pop_front())
    }
}

#[derive(Default)]
struct NodeState {
    tasks: VecDeque<ClientTask>,
    completed: Vec<(String, Payload, Context)>,
    waiting: VecDeque<String>,
}

/// A SuperNode's ClientAppIo for one run.
#[derive(Default)]
pub(crate) struct FakeClientAppIo {
    state: Mutex<NodeState>,
    queued: Notify,
}

impl FakeClientAppIo {
    fn state(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.state.lock().unwrap()
    }

    pub(crate) fn queue(&self, task: ClientTask) {
        self.state().tasks.push_back(task);
        self.queued.notify_waiters();
    }

    pub(crate) fn completed(&self) -> Vec<(String, Payload, Context)> {
        self.state().completed.clone()
    }

    pub(crate) fn wait_for_claim(&self, token: &str) {
        self.state().waiting.push_back(token.to_string());
    }
}

fn check(token: &str) -> Result<(), AppIoError> {
    if token == TOKEN {
        Ok(())
    } else {
        Err(AppIoError::BadToken)
    }
}

#[async_trait]
impl ClientAppIo for FakeClientAppIo {
    async fn next_task(
        &self,
        token: &str,
        timeout: Duration,
    ) -> Result<Option<ClientTask>, AppIoError> {
        check(token)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.queued.notified();
            if let Some(task) = self.state().tasks.pop_front() {
                return Ok(Some(task));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn complete_task(
        &self,
        token: &str,
        message_id: &str,
        reply: Payload,
        context: Context,
    ) -> Result<(), AppIoError> {
        check(token)?;
        if message_id.is_empty() {
            return Err(AppIoError::Invalid("no task has an empty id".into()));
        }
        self.state()
            .completed
            .push((message_id.to_string(), reply, context));
        Ok(())
    }

    async fn claim(&self) -> Result<Option<String>, AppIoError> {
        Ok(self.state().waiting.pop_front())
    }
}

pub(crate) fn run_context() -> Context {
    let mut context = Context {
        run_id: 7,
        ..Context::default()
    };
    context
        .run_config
        .insert("num-server-rounds".into(), UserConfigValue::Int(2));
    context
        .run_config
        .insert("lr".into(), UserConfigValue::Float(0.1));
    context
}

/// A node's context whose state keeps an array and a counter.
pub(crate) fn node_context(node_id: u64, state_len: usize) -> Context {
    let mut context = run_context();
    context.node_id = node_id;
    context
        .node_config
        .insert("partition-id".into(), UserConfigValue::Int(node_id as i64));
    let mut arrays = ArrayRecord::new();
    arrays.insert("personal", big_array(state_len, 3));
    let mut metrics = MetricRecord::new();
    metrics.insert("rounds-seen", 1i64);
    context.state = RecordDict::new()
        .with("personal", arrays)
        .with("counters", metrics);
    context
}

/// Every node echoes the message's content and adds its id as a metric.
pub(crate) fn echo(m: &Message) -> Payload {
    let mut content = m.content().cloned().unwrap_or_default();
    let mut metrics = MetricRecord::new();
    metrics.insert("node", m.metadata.dst_node_id as i64);
    content = content.with("reply-metrics", metrics);
    Payload::Content(content)
}

pub(crate) async fn serverappio(
    appio: FakeServerAppIo,
) -> (Arc<FakeServerAppIo>, Server, ServerAppIoClient) {
    let appio = Arc::new(appio);
    let server = bind_serverappio(localhost(), appio.clone()).await.unwrap();
    let client = serverappio_client(&server.local_addr().to_string()).unwrap();
    (appio, server, client)
}

pub(crate) async fn clientappio() -> (Arc<FakeClientAppIo>, Server, ClientAppIoClient) {
    let appio = Arc::new(FakeClientAppIo::default());
    let server = bind_clientappio(localhost(), appio.clone()).await.unwrap();
    let client = clientappio_client(&server.local_addr().to_string()).unwrap();
    (appio, server, client)
}
