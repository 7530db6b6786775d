//! `LinkGrid`: the `Grid` a ServerApp hosted by this SuperLink talks to. It writes to and
//! waits on the `LinkState` directly: the data path needs no actor hop, while the actors
//! own lifecycle and supervision.

use crate::state::{LinkState, RunSignals, StateError, unix_now};
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::RunStatus;
use floret_core::{Grid, GridError, Message, NodeSet, ReplyFold, RunEvent};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A run's view of the link.
pub struct LinkGrid {
    run_id: u64,
    state: Arc<dyn LinkState>,
    signals: Arc<RunSignals>,
    /// Set by the first `save_checkpoint`: from then on there is nothing to resume from.
    saved: AtomicBool,
}

impl LinkGrid {
    /// The grid of `run_id`, sharing the run's wake-ups with every other waiter on it;
    /// `UnknownRun` if the state has no such run.
    pub fn new(run_id: u64, state: Arc<dyn LinkState>) -> Result<LinkGrid, StateError> {
        let signals = state.signals(run_id)?;
        Ok(LinkGrid {
            run_id,
            state,
            signals,
            saved: AtomicBool::new(false),
        })
    }

    /// The run's wake-ups; `replies` also fires when its status changes, which is how a
    /// grid built around this one (a virtual fleet's) learns that its run ended.
    pub fn signals(&self) -> &RunSignals {
        &self.signals
    }

    /// `Stopped` unless the run is `running`: what every call of a ServerApp whose run
    /// ended (stopped, failed, suspended) gets.
    pub fn check_running(&self) -> Result<(), GridError> {
        match self.state.run_status(self.run_id) {
            Some(RunStatus::Running) => Ok(()),
            _ => Err(GridError::Stopped),
        }
    }
}

fn grid_error(e: StateError) -> GridError {
    match e {
        StateError::RunNotRunning(_) | StateError::UnknownRun(_) | StateError::RunFinished(_) => {
            GridError::Stopped
        }
        StateError::Storage(reason) => GridError::Storage(reason),
        other => GridError::InvalidMessage(other.to_string()),
    }
}

/// Stamps the trace context on messages about to be sent and checks what the state
/// would refuse later with a less helpful error.
fn prepare(messages: &mut [Message]) -> Result<(), GridError> {
    floret_core::trace_context::stamp(messages);
    for m in messages.iter() {
        floret_core::message::validate_message_type(&m.metadata.message_type)
            .map_err(|e| GridError::InvalidMessage(e.to_string()))?;
        floret_core::message::validate_ttl(m.metadata.ttl)
            .map_err(|e| GridError::InvalidMessage(e.to_string()))?;
    }
    Ok(())
}

#[async_trait]
impl Grid for LinkGrid {
    fn run_id(&self) -> u64 {
        self.run_id
    }

    async fn node_ids(&self) -> Result<NodeSet, GridError> {
        self.check_running()?;
        Ok(self.state.node_ids())
    }

    async fn send(&self, mut messages: Vec<Message>) -> Result<Vec<String>, GridError> {
        prepare(&mut messages)?;
        self.state
            .push_instructions(self.run_id, messages, unix_now())
            .map_err(grid_error)
    }

    fn fold_lanes(&self) -> usize {
        self.state.fold_lanes().max(1)
    }

    async fn send_folding(
        &self,
        mut messages: Vec<Message>,
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, GridError> {
        prepare(&mut messages)?;
        self.state
            .push_instructions_folding(self.run_id, messages, unix_now(), fold)
            .map_err(grid_error)
    }

    async fn broadcast_folding(
        &self,
        mut template: Message,
        nodes: &[u64],
        fold: Arc<dyn ReplyFold>,
    ) -> Result<Vec<String>, GridError> {
        prepare(std::slice::from_mut(&mut template))?;
        self.state
            .push_broadcast_folding(self.run_id, template, nodes, unix_now(), fold)
            .map_err(grid_error)
    }

    async fn pull(&self, message_ids: &[String]) -> Result<Vec<Message>, GridError> {
        self.state
            .take_replies_to(self.run_id, message_ids)
            .map_err(grid_error)
    }

    async fn receive(&self, timeout: Duration) -> Result<Vec<Message>, GridError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Register interest before looking, so a reply landing in between still wakes us.
            let notified = self.signals.replies.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.check_running()?;
            let replies = self.state.take_replies(self.run_id).map_err(grid_error)?;
            if !replies.is_empty() {
                return Ok(replies);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn load_checkpoint(&self) -> Result<Option<Bytes>, GridError> {
        if self.saved.load(Ordering::Acquire) {
            return Ok(None);
        }
        self.state.checkpoint(self.run_id).map_err(grid_error)
    }

    async fn save_checkpoint(&self, checkpoint: Bytes) -> Result<(), GridError> {
        self.state
            .save_checkpoint(self.run_id, checkpoint)
            .map_err(grid_error)?;
        self.saved.store(true, Ordering::Release);
        Ok(())
    }

    fn emit(&self, event: RunEvent) {
        if let RunEvent::Log(line) = &event {
            tracing::info!(run_id = self.run_id, "{line}");
        }
        match self.state.push_event(self.run_id, event) {
            Ok(()) => {}
            // A ServerApp being cancelled may emit for a moment after its run ended.
            Err(e @ StateError::RunFinished(_)) => {
                tracing::debug!(run_id = self.run_id, "dropped run event: {e}")
            }
            Err(e) => tracing::warn!(run_id = self.run_id, "dropped run event: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryLinkState, NewRun};

    /// A ServerApp that calls a strategy's `start` twice in one `main` must see the second
    /// call begin afresh, while a ServerApp started again after a restart resumes.
    #[tokio::test]
    async fn a_checkpoint_is_offered_to_the_next_start_of_the_app_not_to_the_same_one() {
        let state: Arc<dyn LinkState> = Arc::new(MemoryLinkState::new());
        let run = state.create_run(NewRun::default()).unwrap();
        let first = LinkGrid::new(run, state.clone()).unwrap();
        assert_eq!(first.load_checkpoint().await.unwrap(), None);
        first
            .save_checkpoint(Bytes::from_static(b"after round 1"))
            .await
            .unwrap();
        assert_eq!(first.load_checkpoint().await.unwrap(), None);

        let restarted = LinkGrid::new(run, state).unwrap();
        assert_eq!(
            restarted.load_checkpoint().await.unwrap(),
            Some(Bytes::from_static(b"after round 1"))
        );
    }

    /// A ServerApp (in-process or over ServerAppIo, which sends through this grid) that
    /// sets a NaN, negative or huge TTL is told so, and nothing is queued.
    #[tokio::test]
    async fn an_instruction_with_a_bad_ttl_is_refused_with_the_reason() {
        let state: Arc<dyn LinkState> = Arc::new(MemoryLinkState::new());
        let run = state.create_run(NewRun::default()).unwrap();
        state.set_run_status(run, RunStatus::Starting, "").unwrap();
        state.set_run_status(run, RunStatus::Running, "").unwrap();
        let grid = LinkGrid::new(run, state.clone()).unwrap();
        for ttl in [f64::NAN, -1.0, 1e300] {
            let mut m = Message::new(floret_core::RecordDict::new(), 5, "train");
            m.metadata.ttl = ttl;
            match grid.send(vec![m]).await {
                Err(GridError::InvalidMessage(e)) => {
                    assert!(e.contains("invalid message TTL"), "{e}")
                }
                other => panic!("TTL {ttl} was not refused: {other:?}"),
            }
        }
        let ok = Message::new(floret_core::RecordDict::new(), 5, "train");
        assert_eq!(grid.send(vec![ok]).await.unwrap().len(), 1);
    }
}
