//! Following a run on a SuperLink: its events as they happen, until it ends or the user
//! presses Ctrl-C. Detaching never stops the run: that is `flwr stop`'s job.

use floret_core::{Control, ControlError, RunEvent};

/// Why following stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// The SuperLink closed the stream: the run has finished (with `follow`), every event
    /// recorded so far was shown (without), or the connection dropped.
    Ended,
    /// Ctrl-C: the run goes on without us.
    Detached,
}

/// Calls `on_event` for each of the run's events from its start; with `follow`, until it
/// has finished.
pub async fn follow(
    control: &dyn Control,
    run_id: u64,
    follow: bool,
    mut on_event: impl FnMut(&RunEvent),
) -> Result<Followed, ControlError> {
    let mut events = control.stream_events(run_id, follow).await?;
    // One listener for the whole stream, so a Ctrl-C between two events is not missed.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut armed = true;
    loop {
        tokio::select! {
            // Ctrl-C first, so its handler is installed before the first event is shown.
            biased;
            signal = &mut ctrl_c, if armed => match signal {
                Ok(()) => return Ok(Followed::Detached),
                // No handler could be installed: Ctrl-C keeps its default effect.
                Err(_) => armed = false,
            },
            event = events.recv() => match event {
                Some(event) => on_event(&event),
                None => return Ok(Followed::Ended),
            },
        }
    }
}

/// The command that follows a run, for hints: `flwr log 7 apps/digits remote --stream`.
pub fn log_command(run_id: u64, app_dir: &std::path::Path, federation: &str) -> String {
    format!(
        "flwr log {run_id} {} {federation} --stream",
        app_dir.display()
    )
}
