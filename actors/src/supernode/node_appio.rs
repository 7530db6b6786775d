//! `NodeAppIo`: the SuperNode's side of the ClientAppIo protocol, which a process-isolated
//! ClientApp takes its messages from and hands its replies to.
//!
//! Each run of a FAB on this node opens a session: a fresh token, a queue of tasks (a
//! message with the node's context for its run) and the replies still owed. The run's
//! ClientApp host submits a task and waits for its reply; the app process takes tasks with
//! `next_task` and answers each with `complete_task`. A session closes when its host ends
//! (the run is over) or the SuperNode shuts down: from then on its token is `BadToken`,
//! which tells the app process to exit. With `--isolation process` a session waits to be
//! claimed by an app process started outside the SuperNode (`claim`, oldest run first).

use crate::apps::isolation::{Claim, claim_longest_waiting, new_token};
use async_trait::async_trait;
use floret_core::{AppIoError, ClientAppIo, ClientTask, Context, Message, Payload};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, oneshot, watch};

/// A task's answer: the reply payload and the context to keep for the run's next message.
pub(crate) type TaskReply = (Payload, Context);

/// See the module doc.
pub struct NodeAppIo {
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Numbers sessions as they open (see `Claim`).
    tickets: AtomicU64,
    /// Set at shutdown: hosts stop waiting for replies.
    closing: watch::Sender<bool>,
}

impl Default for NodeAppIo {
    fn default() -> Self {
        NodeAppIo {
            sessions: Mutex::default(),
            tickets: AtomicU64::new(0),
            closing: watch::Sender::new(false),
        }
    }
}

#[derive(Default)]
struct Session {
    run_id: u64,
    /// Set when an app process holds the token (see `LinkAppIo`).
    claim: Claim,
    /// Tasks not taken yet, with where their reply goes.
    queue: Mutex<VecDeque<(ClientTask, oneshot::Sender<TaskReply>)>>,
    /// Tasks taken and not answered yet, by message id.
    taken: Mutex<HashMap<String, oneshot::Sender<TaskReply>>>,
    /// Wakes `next_task` when a task is queued or the session closes.
    ready: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An open session, held by the run's host; dropping it closes the session.
pub(crate) struct SessionGuard {
    io: Arc<NodeAppIo>,
    pub(crate) token: String,
    session: Arc<Session>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        lock(&self.io.sessions).remove(&self.token);
        self.session.ready.notify_waiters();
    }
}

impl SessionGuard {
    /// Queues `message` for the app process; the receiver gets its reply.
    pub(crate) fn submit(
        &self,
        message: Message,
        context: Context,
    ) -> oneshot::Receiver<TaskReply> {
        let (tx, rx) = oneshot::channel();
        lock(&self.session.queue).push_back((ClientTask { message, context }, tx));
        self.session.ready.notify_waiters();
        rx
    }

    /// Forgets every task queued or taken: their process is gone.
    pub(crate) fn reset(&self) {
        lock(&self.session.queue).clear();
        lock(&self.session.taken).clear();
    }

    /// Resolves once the SuperNode shuts down.
    pub(crate) async fn closing(&self) {
        let mut closing = self.io.closing.subscribe();
        let _ = closing.wait_for(|c| *c).await;
    }
}

impl NodeAppIo {
    /// An endpoint with no session open; share it as an `Arc`, which `open` needs.
    pub fn new() -> NodeAppIo {
        NodeAppIo::default()
    }

    /// Opens a session for `run_id`; `claimed` when the SuperNode hands the token to a
    /// process it starts itself.
    pub(crate) fn open(self: &Arc<Self>, run_id: u64, claimed: bool) -> SessionGuard {
        let token = new_token();
        let session = Arc::new(Session {
            run_id,
            claim: Claim::new(claimed, &self.tickets),
            ..Session::default()
        });
        lock(&self.sessions).insert(token.clone(), session.clone());
        SessionGuard {
            io: self.clone(),
            token,
            session,
        }
    }

    /// Hosts waiting for a reply give up (shutdown).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Runs whose session waits for an app process to claim it.
    pub fn unclaimed(&self) -> usize {
        lock(&self.sessions)
            .values()
            .filter(|s| !s.claim.is_claimed())
            .count()
    }

    fn session(&self, token: &str) -> Result<Arc<Session>, AppIoError> {
        match lock(&self.sessions).get(token) {
            Some(s) if s.claim.is_claimed() => Ok(s.clone()),
            _ => Err(AppIoError::BadToken),
        }
    }

    fn is_open(&self, token: &str) -> bool {
        lock(&self.sessions).contains_key(token)
    }
}

#[async_trait]
impl ClientAppIo for NodeAppIo {
    async fn next_task(
        &self,
        token: &str,
        timeout: Duration,
    ) -> Result<Option<ClientTask>, AppIoError> {
        let session = self.session(token)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register before looking, so a task queued in between still wakes us.
            let notified = session.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_open(token) {
                return Err(AppIoError::BadToken);
            }
            let next = lock(&session.queue).pop_front();
            if let Some((task, reply)) = next {
                let id = task.message.metadata.message_id.clone();
                lock(&session.taken).insert(id, reply);
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
        let session = self.session(token)?;
        let waiting = lock(&session.taken).remove(message_id);
        match waiting {
            Some(tx) => {
                // The host may have given up (expired message): nothing left to do then.
                let _ = tx.send((reply, context));
                Ok(())
            }
            None => Err(AppIoError::Invalid(format!(
                "no task with message id {message_id:?} is waiting for a reply"
            ))),
        }
    }

    async fn claim(&self) -> Result<Option<String>, AppIoError> {
        let sessions = lock(&self.sessions);
        Ok(
            claim_longest_waiting(&*sessions, |s| &s.claim).map(|(token, session)| {
                tracing::info!(
                    run_id = session.run_id,
                    "a ClientApp process claimed the run"
                );
                token.clone()
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{MetricRecord, RecordDict};

    #[tokio::test]
    async fn a_task_goes_to_the_process_and_its_reply_comes_back() {
        let io = Arc::new(NodeAppIo::new());
        let guard = io.open(5, true);
        let message = Message::new(RecordDict::new(), 1, "train");
        let reply = guard.submit(message.clone(), Context::default());
        let task = io
            .next_task(&guard.token, Duration::from_secs(1))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(task.message, message);
        let mut state = Context::default();
        state.state.insert("seen", MetricRecord::new());
        let content = Payload::Content(RecordDict::new());
        io.complete_task(&guard.token, "", content.clone(), state.clone())
            .await
            .unwrap();
        assert_eq!(reply.await.unwrap(), (content.clone(), state));
        let again = io.complete_task(&guard.token, "", content, Context::default());
        assert!(matches!(again.await, Err(AppIoError::Invalid(_))));
        assert_eq!(
            io.next_task(&guard.token, Duration::from_millis(10))
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_closed_session_turns_its_token_bad_even_for_a_waiting_call() {
        let io = Arc::new(NodeAppIo::new());
        let guard = io.open(5, true);
        let token = guard.token.clone();
        let waiting = {
            let io = io.clone();
            let token = token.clone();
            tokio::spawn(async move { io.next_task(&token, Duration::from_secs(60)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert_eq!(waiting.await.unwrap(), Err(AppIoError::BadToken));
        assert_eq!(
            io.next_task(&token, Duration::ZERO).await,
            Err(AppIoError::BadToken)
        );
    }

    #[tokio::test]
    async fn only_a_claimed_token_works_and_each_run_is_claimed_once() {
        let io = Arc::new(NodeAppIo::new());
        let earlier = io.open(9, false);
        let later = io.open(3, false);
        assert_eq!(
            io.next_task(&earlier.token, Duration::ZERO).await,
            Err(AppIoError::BadToken)
        );
        assert_eq!(io.claim().await.unwrap(), Some(earlier.token.clone()));
        assert_eq!(io.claim().await.unwrap(), Some(later.token.clone()));
        assert_eq!(io.claim().await.unwrap(), None);
        assert_eq!(io.unclaimed(), 0);
        assert_eq!(
            io.next_task(&earlier.token, Duration::ZERO).await.unwrap(),
            None
        );
    }
}
