//! The AppIo protocols: how an app running in its own process reaches its daemon.
//!
//! With process isolation a ServerApp does not run inside the SuperLink: its process
//! connects to the SuperLink's ServerAppIo API (port 9091) and drives the run through the
//! same operations as `Grid`. A ClientApp process connects to its SuperNode's ClientAppIo
//! API (port 9094), takes the next message with its node's context, and hands back the
//! reply and the updated context. Every call carries the per-run token the daemon gave the
//! process, so one app cannot act for another run.

use crate::app::NodeSet;
use crate::app::RunEvent;
use crate::context::Context;
use crate::message::{Message, Payload};
use async_trait::async_trait;
use bytes::Bytes;
use std::time::Duration;
use thiserror::Error;

/// Why a daemon refused an app process's request, or could not be reached.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AppIoError {
    /// The token is unknown or its run has ended: the app process should exit.
    #[error("the AppIo token is not valid (unknown, or its run has ended)")]
    BadToken,
    /// The run was stopped; the app process should end its work.
    #[error("the run was stopped")]
    Stopped,
    /// The request cannot be served as asked (an invalid message, an unsupported call); why.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The daemon could not be reached, or could not serve the request (e.g. its state failed);
    /// why.
    #[error("daemon unavailable: {0}")]
    Unavailable(String),
}

/// How a process-isolated ServerApp ended, reported before it exits.
#[derive(Debug, Clone, PartialEq)]
pub enum AppOutcome {
    /// `main` returned without error.
    Completed,
    /// `main` returned an error or panicked: the reason becomes the run's failure reason.
    Failed(String),
}

/// SuperLink side of a process-isolated ServerApp: `Grid` over the wire, plus the run's
/// context and the final outcome.
#[async_trait]
pub trait ServerAppIo: Send + Sync {
    /// The run's context (run id, run config); the first call of an app process.
    async fn context(&self, token: &str) -> Result<Context, AppIoError>;
    /// `Grid::node_ids`: the nodes connected now.
    async fn node_ids(&self, token: &str) -> Result<NodeSet, AppIoError>;
    /// `Grid::send`: queues messages and returns their ids, in order.
    async fn send(&self, token: &str, messages: Vec<Message>) -> Result<Vec<String>, AppIoError>;
    /// `Grid::pull`: replies that have arrived for any of `message_ids`, without waiting.
    async fn pull(&self, token: &str, message_ids: &[String]) -> Result<Vec<Message>, AppIoError>;
    /// `Grid::receive`: replies not yet handed out, waiting up to `timeout` for the first.
    async fn receive(&self, token: &str, timeout: Duration) -> Result<Vec<Message>, AppIoError>;
    /// `Grid::emit`: reports the run's progress to whoever watches it.
    async fn emit(&self, token: &str, event: RunEvent) -> Result<(), AppIoError>;
    /// Reports how `main` ended; the SuperLink records it as the run's final status.
    async fn finish(&self, token: &str, outcome: AppOutcome) -> Result<(), AppIoError>;
    /// The run's latest checkpoint (`Grid::load_checkpoint`): what a ServerApp process of
    /// this run saved, maybe before the SuperLink restarted.
    async fn load_checkpoint(&self, token: &str) -> Result<Option<Bytes>, AppIoError>;
    /// Keeps the run's latest checkpoint (`Grid::save_checkpoint`) in the SuperLink's state.
    async fn save_checkpoint(&self, token: &str, checkpoint: Bytes) -> Result<(), AppIoError>;
    /// The token of a run that waits for an app process started outside the SuperLink
    /// (`--isolation process`); the caller now serves that run. Each waiting run is handed
    /// to one caller only. `None` when no run waits: ask again later. The default suits a
    /// daemon that starts every app process itself.
    async fn claim(&self) -> Result<Option<String>, AppIoError> {
        Ok(None)
    }
}

/// One message for a process-isolated ClientApp, with the node's context for its run.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientTask {
    /// The message to handle.
    pub message: Message,
    /// The node's context for the message's run, as the last reply left it.
    pub context: Context,
}

/// SuperNode side of a process-isolated ClientApp.
#[async_trait]
pub trait ClientAppIo: Send + Sync {
    /// The next message for this run, waiting up to `timeout`; `None` when none came.
    async fn next_task(
        &self,
        token: &str,
        timeout: Duration,
    ) -> Result<Option<ClientTask>, AppIoError>;
    /// The reply payload to the task's message and the context to keep for the next one.
    async fn complete_task(
        &self,
        token: &str,
        message_id: &str,
        reply: Payload,
        context: Context,
    ) -> Result<(), AppIoError>;
    /// The token of a run that waits for a ClientApp process started outside the SuperNode
    /// (`--isolation process`); the caller now serves that run. Each waiting run is handed
    /// to one caller only. `None` when no run waits: ask again later. The default suits a
    /// daemon that starts every app process itself.
    async fn claim(&self) -> Result<Option<String>, AppIoError> {
        Ok(None)
    }
}
