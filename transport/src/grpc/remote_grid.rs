//! `RemoteGrid`: the `Grid` of a process-isolated ServerApp, whose calls go to its
//! SuperLink's ServerAppIo API, so that `ServerApp::main(&grid, context)` runs unchanged.

use bytes::Bytes;
use floret_core::{
    AppIoError, AppOutcome, Context, Grid, GridError, Message, NodeSet, RunEvent, ServerAppIo,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A `Grid` over a [`ServerAppIo`] (usually a
/// [`ServerAppIoClient`](super::ServerAppIoClient)) and the run's token.
///
/// ```no_run
/// # async fn run(app: std::sync::Arc<dyn floret_core::ServerApp>, token: &str)
/// #     -> Result<(), Box<dyn std::error::Error>> {
/// use floret_core::AppOutcome;
/// use floret_transport::grpc::{RemoteGrid, serverappio_client};
/// let appio = serverappio_client("127.0.0.1:9091")?;
/// let (grid, context) = RemoteGrid::connect(std::sync::Arc::new(appio), token).await?;
/// let outcome = match app.main(&grid, context).await {
///     Ok(()) => AppOutcome::Completed,
///     Err(e) => AppOutcome::Failed(e.to_string()),
/// };
/// grid.finish(outcome).await?;
/// # Ok(()) }
/// ```
pub struct RemoteGrid {
    appio: Arc<dyn ServerAppIo>,
    token: String,
    run_id: u64,
    /// `emit` is not async: events queue here and a task sends them in order.
    events: mpsc::UnboundedSender<Emission>,
    /// Set by the first `save_checkpoint`: from then on there is nothing to resume from.
    saved: AtomicBool,
}

// As `RunEvent` itself: a few per round, simpler unboxed.
#[allow(clippy::large_enum_variant)]
enum Emission {
    Event(RunEvent),
    /// Answered once every event queued before it has been sent.
    Flush(oneshot::Sender<()>),
}

impl RemoteGrid {
    /// Fetches the run's context; returns the grid and that context (for `main`).
    ///
    /// # Errors
    /// As [`ServerAppIo::context`]: `BadToken` for a token the SuperLink does not know,
    /// `Unavailable` when it cannot be reached.
    pub async fn connect(
        appio: Arc<dyn ServerAppIo>,
        token: &str,
    ) -> Result<(RemoteGrid, Context), AppIoError> {
        let context = appio.context(token).await?;
        // Unbounded: a few events per round, and a ServerApp cannot wait in `emit`.
        let (events, queue) = mpsc::unbounded_channel();
        tokio::spawn(send_events(appio.clone(), token.to_string(), queue));
        let grid = RemoteGrid {
            appio,
            token: token.to_string(),
            run_id: context.run_id,
            events,
            saved: AtomicBool::new(false),
        };
        Ok((grid, context))
    }

    /// Sends the events emitted so far, then reports how `main` ended: the run's last call.
    ///
    /// # Errors
    /// As [`ServerAppIo::finish`].
    pub async fn finish(self, outcome: AppOutcome) -> Result<(), AppIoError> {
        let (done, flushed) = oneshot::channel();
        if self.events.send(Emission::Flush(done)).is_ok() {
            // An error means the sending task is gone: nothing left to wait for.
            let _ = flushed.await;
        }
        self.appio.finish(&self.token, outcome).await
    }
}

/// Sends queued events in order until the grid is gone. A failed event is logged and
/// skipped: progress reports must not end the run. Once the SuperLink cannot be reached
/// (after the client's connect patience) or no longer knows the run's token (it
/// restarted), the rest are dropped unsent: each would wait out the same patience, and a
/// fast ServerApp queues hundreds, so `finish` would wait for them for hours.
async fn send_events(
    appio: Arc<dyn ServerAppIo>,
    token: String,
    mut queue: mpsc::UnboundedReceiver<Emission>,
) {
    let mut dropped: u64 = 0;
    while let Some(emission) = queue.recv().await {
        match emission {
            Emission::Event(_) if dropped > 0 => dropped += 1,
            Emission::Event(event) => match appio.emit(&token, event).await {
                Ok(()) => {}
                Err(e @ (AppIoError::Unavailable(_) | AppIoError::BadToken)) => {
                    tracing::warn!(
                        error = %e,
                        "could not report a run event to the SuperLink; later events are dropped"
                    );
                    dropped = 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not report a run event to the SuperLink")
                }
            },
            Emission::Flush(done) => {
                if dropped > 1 {
                    tracing::warn!(dropped, "run events not reported: the SuperLink is gone");
                }
                let _ = done.send(());
            }
        }
    }
}

fn grid_error(e: AppIoError) -> GridError {
    match e {
        AppIoError::Stopped => GridError::Stopped,
        AppIoError::Invalid(m) => GridError::InvalidMessage(m),
        e @ (AppIoError::BadToken | AppIoError::Unavailable(_)) => {
            GridError::Disconnected(e.to_string())
        }
    }
}

#[async_trait::async_trait]
impl Grid for RemoteGrid {
    fn run_id(&self) -> u64 {
        self.run_id
    }

    async fn node_ids(&self) -> Result<NodeSet, GridError> {
        self.appio.node_ids(&self.token).await.map_err(grid_error)
    }

    async fn send(&self, mut messages: Vec<Message>) -> Result<Vec<String>, GridError> {
        floret_core::trace_context::stamp(&mut messages);
        self.appio
            .send(&self.token, messages)
            .await
            .map_err(grid_error)
    }

    async fn pull(&self, message_ids: &[String]) -> Result<Vec<Message>, GridError> {
        self.appio
            .pull(&self.token, message_ids)
            .await
            .map_err(grid_error)
    }

    async fn receive(&self, timeout: Duration) -> Result<Vec<Message>, GridError> {
        self.appio
            .receive(&self.token, timeout)
            .await
            .map_err(grid_error)
    }

    async fn load_checkpoint(&self) -> Result<Option<Bytes>, GridError> {
        if self.saved.load(Ordering::Acquire) {
            return Ok(None);
        }
        self.appio
            .load_checkpoint(&self.token)
            .await
            .map_err(grid_error)
    }

    async fn save_checkpoint(&self, checkpoint: Bytes) -> Result<(), GridError> {
        self.appio
            .save_checkpoint(&self.token, checkpoint)
            .await
            .map_err(grid_error)?;
        self.saved.store(true, Ordering::Release);
        Ok(())
    }

    fn emit(&self, event: RunEvent) {
        // Fails only once the sending task is gone, when the runtime shuts down.
        let _ = self.events.send(Emission::Event(event));
    }
}

impl std::fmt::Debug for RemoteGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteGrid")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}
