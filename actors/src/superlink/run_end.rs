//! How a run ends: the one record every ending leaves, whoever records it.
//!
//! A run ends completed, failed or stopped, along several paths. Its Run actor records the
//! end it sees: the ServerApp returned, failed or panicked, or the run was stopped
//! (`flwr stop`, shutdown over a state that dies with the process). Where no Run actor is
//! there to do it, the path that finds the run records the end: the SuperLink actor for a
//! run whose actor could not start or died, `flwr stop` for a run without an actor,
//! shutdown for a run whose actor did not stop in time, a restarted SuperLink for a run it
//! cannot resume. Every one of them calls [`record`], so every ended run leaves the same
//! record, in this order:
//!
//! 1. the reason as the last line of the run's log, when there is one. A completed run has
//!    none: its status says it all, and `flwr log` of a good run ends with the app's own
//!    lines. First, because the log is closed once the run has finished, and a follower
//!    that sees the run finished has then seen why.
//! 2. the final status, with the reason. Followers (`flwr log --stream`, a simulation)
//!    wake on it through the run's signals; the metrics read it at the next sweep.
//! 3. none of the run's messages held: undelivered instructions and untaken replies are
//!    dropped. After the status, because a finished run takes no new instructions and a
//!    dropped instruction can no longer be answered, so nothing for the run comes back.
//! 4. no checkpoint: nothing resumes a finished run and no `flwr` command reads its model
//!    (the log names its digest), so keeping it would grow the state by a model per run.
//!    Last, because a finished run saves no new one.
//!
//! When the state refuses the status itself (its database is full, the usual reason a run
//! ends this way), the run's messages and checkpoint are dropped first, which frees the
//! room the record needs, and the record is tried once more: a run must not show
//! `running` for want of the space its own leftovers take.
//!
//! The first end recorded stands: a later one (a stop racing a failure) changes nothing.
//! Suspending a run (shutdown over a durable state, see `run`) is not an end and records
//! none.

use crate::state::{LinkState, StateError};
use floret_core::{RunEvent, RunStatus, SubStatus};

/// How a run ended, and why: what its record says (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunEnd {
    /// The ServerApp's `main` returned.
    Completed,
    /// The run cannot go on: the ServerApp failed or panicked, its actor died or never
    /// started, or it cannot resume after a restart.
    Failed(String),
    /// Someone ended it: `flwr stop`, or a shutdown. Empty when its Run actor stopped
    /// without being told why.
    Stopped(String),
}

impl RunEnd {
    /// The final status this end records.
    pub(crate) fn status(&self) -> RunStatus {
        RunStatus::Finished(match self {
            RunEnd::Completed => SubStatus::Completed,
            RunEnd::Failed(_) => SubStatus::Failed,
            RunEnd::Stopped(_) => SubStatus::Stopped,
        })
    }

    /// Why the run ended; empty for a completed run.
    pub(crate) fn reason(&self) -> &str {
        match self {
            RunEnd::Completed => "",
            RunEnd::Failed(reason) | RunEnd::Stopped(reason) => reason,
        }
    }

    /// The line that closes the run's log: the reason, if there is one.
    pub(crate) fn event(&self) -> Option<RunEvent> {
        let reason = self.reason();
        (!reason.is_empty()).then(|| RunEvent::Log(reason.to_string()))
    }
}

/// Records `end` for `run_id`, in the order of the module doc; true when this call ended
/// the run, false when it had ended already (or is unknown), which leaves it as it was.
pub(crate) fn record(state: &dyn LinkState, run_id: u64, end: &RunEnd) -> bool {
    // Refused once the run has finished, which is the case this call then leaves alone.
    let logged = log_reason(state, run_id, end);
    let mut ended = state.set_run_status(run_id, end.status(), end.reason());
    if let Err(e @ StateError::Storage(_)) = &ended {
        tracing::warn!(
            run_id,
            "could not record the run's end ({e}); dropping its messages and checkpoint to make room"
        );
        state.purge_messages(run_id);
        let _ = state.drop_checkpoint(run_id);
        if !logged {
            log_reason(state, run_id, end);
        }
        ended = state.set_run_status(run_id, end.status(), end.reason());
    }
    match ended {
        Ok(info) => {
            state.purge_messages(run_id);
            if let Err(e) = state.drop_checkpoint(run_id) {
                tracing::warn!(run_id, "could not drop the finished run's checkpoint: {e}");
            }
            tracing::info!(run_id, status = %info.status, reason = %info.reason, "run finished");
            true
        }
        Err(e @ StateError::Storage(_)) => {
            tracing::error!(run_id, "could not record the run's end: {e}");
            false
        }
        Err(e) => {
            tracing::debug!(run_id, "run already finished: {e}");
            false
        }
    }
}

/// Step 1 of the module doc; true when the line is in the log (or there is none to add).
fn log_reason(state: &dyn LinkState, run_id: u64, end: &RunEnd) -> bool {
    end.event()
        .is_none_or(|event| state.push_event(run_id, event).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::prelude::*;

    #[test]
    fn each_end_has_its_own_sub_status() {
        assert_eq!(
            RunEnd::Completed.status(),
            RunStatus::Finished(SubStatus::Completed)
        );
        assert_eq!(
            RunEnd::Failed("boom".into()).status(),
            RunStatus::Finished(SubStatus::Failed)
        );
        assert_eq!(
            RunEnd::Stopped(String::new()).status(),
            RunStatus::Finished(SubStatus::Stopped)
        );
    }

    #[test]
    fn the_reason_closes_the_log_and_a_completed_run_adds_no_line() {
        assert_eq!(RunEnd::Completed.reason(), "");
        assert_eq!(RunEnd::Completed.event(), None);
        let failed = RunEnd::Failed("ServerApp panicked: bug".into());
        assert_eq!(failed.reason(), "ServerApp panicked: bug");
        assert_eq!(
            failed.event(),
            Some(RunEvent::Log("ServerApp panicked: bug".into()))
        );
        assert_eq!(
            RunEnd::Stopped("stopped by user".into()).event(),
            Some(RunEvent::Log("stopped by user".into()))
        );
    }

    #[test]
    fn a_finished_run_keeps_no_checkpoint_and_a_later_end_changes_nothing() {
        let state = crate::state::MemoryLinkState::new();
        let run = state
            .create_run(crate::state::NewRun::default())
            .expect("a new run");
        state
            .save_checkpoint(run, bytes::Bytes::from_static(b"the whole model"))
            .expect("a checkpoint");
        assert!(record(&state, run, &RunEnd::Failed("boom".into())));
        assert_eq!(state.checkpoint(run), Ok(None));
        assert!(!record(&state, run, &RunEnd::Stopped("late".into())));
    }

    #[test]
    fn a_stop_without_a_reason_adds_no_empty_line() {
        assert_eq!(RunEnd::Stopped(String::new()).event(), None);
    }

    #[test]
    fn the_first_end_stands_and_a_later_one_adds_nothing() {
        let state = crate::state::MemoryLinkState::new();
        let run = state
            .create_run(crate::state::NewRun::default())
            .expect("a new run");
        let failed = RunEnd::Failed("boom".into());
        assert!(record(&state, run, &failed));
        assert!(!record(&state, run, &RunEnd::Stopped("late".into())));
        let info = state.run(run).expect("the run");
        assert_eq!(
            (info.status, info.reason.as_str()),
            (failed.status(), "boom")
        );
        let (events, _) = state.events(run, 0).expect("its log");
        assert_eq!(events, vec![RunEvent::Log("boom".into())]);
    }
}
