//! Runs: what a run is (`RunInfo`, the app it executes) and its state machine,
//! pending -> starting -> running -> finished:{completed, failed, stopped}. Pure: the
//! SuperLink asks the machine whether a move is allowed before recording it, so a late or
//! duplicated event can never move a finished run again.

use crate::user_config::UserConfig;
use std::fmt;
use thiserror::Error;

/// Which app a run executes: its name and the components that build its ServerApp and
/// ClientApp (`digits.server_app:app`), plus the FAB hash once apps travel as bundles.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct AppRef {
    /// The app's `[project] name`.
    pub name: String,
    /// The ServerApp's component string, e.g. `digits.server_app:app`.
    pub serverapp: String,
    /// The ClientApp's component string, e.g. `digits.client_app:app`.
    pub clientapp: String,
    /// sha256 of the app bundle; empty for apps built into the binaries.
    pub fab_hash: String,
}

/// A run as the SuperLink records it and `flwr ls` lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunInfo {
    /// Assigned by the SuperLink when the run is created, counting up from 1.
    pub run_id: u64,
    /// The app the run executes.
    pub app: AppRef,
    /// The name of the `pyproject.toml` federation the run was submitted through.
    pub federation: String,
    /// The app's run config with the user's overrides applied.
    pub run_config: UserConfig,
    /// Where the run is in its life; moves only as `RunStatus::transition` allows.
    pub status: RunStatus,
    /// Why a run failed or was stopped; empty otherwise.
    pub reason: String,
    /// Unix seconds when the run was created.
    pub created_at: f64,
    /// Unix seconds at the last status change.
    pub status_changed_at: f64,
    /// The user who started the run; empty when user authentication is off. With it on,
    /// only this user and admins see or stop the run.
    pub owner: String,
}

/// How a finished run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SubStatus {
    /// The ServerApp returned without error.
    Completed,
    /// The ServerApp returned an error, or could not be started or resumed; `reason` says why.
    Failed,
    /// The user stopped the run, or the SuperLink stopped it on shutdown.
    Stopped,
}

/// Where a run is in its life, as `flwr ls` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RunStatus {
    /// Created, waiting for its ServerApp to start.
    Pending,
    /// Its ServerApp is being started.
    Starting,
    /// Its ServerApp is running.
    Running,
    /// Ended, and how.
    Finished(SubStatus),
}

/// A move the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("run status cannot move from {from} to {to}")]
pub struct InvalidTransition {
    /// The status the run has.
    pub from: RunStatus,
    /// The status that was asked for.
    pub to: RunStatus,
}

impl RunStatus {
    /// True once the run has ended, however it ended.
    pub fn is_finished(self) -> bool {
        matches!(self, RunStatus::Finished(_))
    }

    /// Checks `self -> to`. Runs only move forward; any unfinished run may fail or be
    /// stopped; only a running run may complete.
    pub fn transition(self, to: RunStatus) -> Result<RunStatus, InvalidTransition> {
        use RunStatus::*;
        let ok = matches!(
            (self, to),
            (Pending, Starting)
                | (Starting, Running)
                | (Running, Finished(SubStatus::Completed))
                | (
                    Pending | Starting | Running,
                    Finished(SubStatus::Failed | SubStatus::Stopped)
                )
        );
        if ok {
            Ok(to)
        } else {
            Err(InvalidTransition { from: self, to })
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunStatus::Pending => f.write_str("pending"),
            RunStatus::Starting => f.write_str("starting"),
            RunStatus::Running => f.write_str("running"),
            RunStatus::Finished(SubStatus::Completed) => f.write_str("finished:completed"),
            RunStatus::Finished(SubStatus::Failed) => f.write_str("finished:failed"),
            RunStatus::Finished(SubStatus::Stopped) => f.write_str("finished:stopped"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RunStatus::*;
    use super::SubStatus::*;

    #[test]
    fn happy_path_moves_forward() {
        let s = Pending.transition(Starting).unwrap();
        let s = s.transition(Running).unwrap();
        assert_eq!(
            s.transition(Finished(Completed)).unwrap(),
            Finished(Completed)
        );
    }

    #[test]
    fn unfinished_runs_can_fail_or_stop_at_any_step() {
        for from in [Pending, Starting, Running] {
            assert!(from.transition(Finished(Failed)).is_ok());
            assert!(from.transition(Finished(Stopped)).is_ok());
        }
    }

    #[test]
    fn only_a_running_run_completes() {
        assert!(Pending.transition(Finished(Completed)).is_err());
        assert!(Starting.transition(Finished(Completed)).is_err());
    }

    #[test]
    fn finished_is_terminal_and_steps_are_not_skipped() {
        for end in [Completed, Failed, Stopped] {
            for to in [
                Pending,
                Starting,
                Running,
                Finished(Failed),
                Finished(Stopped),
            ] {
                assert!(Finished(end).transition(to).is_err());
            }
        }
        assert!(Pending.transition(Running).is_err());
        assert!(Running.transition(Starting).is_err());
    }

    #[test]
    fn display_matches_flower() {
        assert_eq!(Finished(Failed).to_string(), "finished:failed");
        assert_eq!(Running.to_string(), "running");
    }
}
