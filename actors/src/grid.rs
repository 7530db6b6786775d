//! `LinkGrid`: the `Grid` a ServerApp hosted by this SuperLink talks to. It writes to and
//! waits on the `LinkState` directly: the data path needs no actor hop, while the actors
//! own lifecycle and supervision.

use crate::state::{LinkState, RunSignals, StateError, unix_now};
use async_trait::async_trait;
use floret_core::RunStatus;
use floret_core::{Grid, GridError, Message, NodeSet, RunEvent};
use std::sync::Arc;
use std::time::Duration;

/// A run's view of the link.
pub struct LinkGrid {
    run_id: u64,
    state: Arc<dyn LinkState>,
    signals: Arc<RunSignals>,
}

impl LinkGrid {
    pub fn new(run_id: u64, state: Arc<dyn LinkState>) -> Result<LinkGrid, StateError> {
        let signals = state.signals(run_id)?;
        Ok(LinkGrid {
            run_id,
            state,
            signals,
        })
    }

    fn check_running(&self) -> Result<(), GridError> {
        match self.state.run_status(self.run_id) {
            Some(RunStatus::Running) => Ok(()),
            _ => Err(GridError::Stopped),
        }
    }
}

fn grid_error(e: StateError) -> GridError {
    match e {
        StateError::RunNotRunning(_) | StateError::UnknownRun(_) => GridError::Stopped,
        other => GridError::InvalidMessage(other.to_string()),
    }
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

    async fn send(&self, messages: Vec<Message>) -> Result<Vec<String>, GridError> {
        for m in &messages {
            floret_core::message::validate_message_type(&m.metadata.message_type)
                .map_err(|e| GridError::InvalidMessage(e.to_string()))?;
        }
        self.state
            .push_instructions(self.run_id, messages, unix_now())
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
