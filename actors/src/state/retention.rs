//! How long a finished run is kept: the retention rule, free of I/O.
//!
//! A finished run keeps its record, its event log (`flwr log`) and the FAB it ran, so that
//! `flwr ls` and `flwr log` still answer for it; its checkpoint is dropped when it ends (no
//! `flwr` command reads a finished run's model, and the model is the bulk of it). Without
//! a limit the state still grows by one record and log per run forever, so finished runs
//! are deleted once they are older than `max_age` (by the time they finished), and the
//! oldest beyond the newest `max_runs` finished ones. Unfinished runs are never deleted,
//! whatever their age. The SuperLink applies the verdict periodically (`superlink::retention`);
//! each store deletes what it names (`RunStore::delete_runs`).

use floret_core::RunInfo;
use std::time::Duration;

/// The default of `--retention`: 30 days, long enough to look back at last month's runs.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How often the SuperLink applies the retention rule by default. Deleting is cheap, and
/// an age measured in days does not need a finer clock; a count limit is met within a
/// minute of the run that passed it.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);

/// How long and how many finished runs are kept (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished runs older than this (since they finished) are deleted; `None` keeps them
    /// whatever their age (`--retention 0`).
    pub max_age: Option<Duration>,
    /// At most this many finished runs are kept, the most recently finished; `None`: no
    /// count limit (`--retention-runs` unset).
    pub max_runs: Option<usize>,
    /// How often the rule is applied.
    pub period: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Some(DEFAULT_MAX_AGE),
            max_runs: None,
            period: DEFAULT_PERIOD,
        }
    }
}

impl Retention {
    /// The runs among `runs` this rule deletes at `now` (Unix seconds): finished ones that
    /// finished more than `max_age` ago, and the finished ones beyond the `max_runs` most
    /// recently finished. By id, ascending.
    pub fn expired(&self, runs: &[RunInfo], now: f64) -> Vec<u64> {
        let mut finished: Vec<(f64, u64)> = runs
            .iter()
            .filter(|r| r.status.is_finished())
            .map(|r| (r.status_changed_at, r.run_id))
            .collect();
        // Newest first; ties (same clock reading) by id, the later run first.
        finished.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)));
        let keep = self.max_runs.unwrap_or(usize::MAX);
        let mut out: Vec<u64> = finished
            .iter()
            .enumerate()
            .filter(|(rank, (finished_at, _))| {
                *rank >= keep
                    || self
                        .max_age
                        .is_some_and(|age| now - finished_at > age.as_secs_f64())
            })
            .map(|(_, (_, run_id))| *run_id)
            .collect();
        out.sort_unstable();
        out
    }
}

/// Reads a retention period: a number with a unit, `s`, `m`, `h` or `d` (`30d`, `12h`,
/// `90m`), or `0` to keep finished runs forever (`None`). A bare number other than 0 is
/// refused: seconds and days are both plausible, so the unit must be said.
pub fn parse_age(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(None);
    }
    let bad = || {
        format!(
            "{text:?} is not a retention period: write a whole number with a unit, s, m, h \
             or d (e.g. 30d, 12h), or 0 to keep finished runs forever"
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        _ => return Err(bad()),
    };
    let secs = n.checked_mul(scale).ok_or_else(bad)?;
    if secs == 0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{RunStatus, SubStatus};

    fn run(run_id: u64, status: RunStatus, changed_at: f64) -> RunInfo {
        let mut info = crate::state::rules::new_run(run_id, Default::default(), 0.0);
        info.status = status;
        info.status_changed_at = changed_at;
        info
    }

    const DONE: RunStatus = RunStatus::Finished(SubStatus::Completed);
    const DAY: f64 = 24.0 * 3600.0;

    #[test]
    fn finished_runs_older_than_the_age_go_and_unfinished_ones_never_do() {
        let retention = Retention::default();
        let now = 100.0 * DAY;
        let runs = [
            run(1, DONE, now - 31.0 * DAY),
            run(2, RunStatus::Running, now - 90.0 * DAY),
            run(3, RunStatus::Finished(SubStatus::Failed), now - 30.0 * DAY),
            run(4, RunStatus::Pending, now - 90.0 * DAY),
            run(5, RunStatus::Finished(SubStatus::Stopped), now - 40.0 * DAY),
            run(6, DONE, now),
        ];
        assert_eq!(
            retention.expired(&runs, now),
            [1, 5],
            "exactly 30 days is kept"
        );
    }

    #[test]
    fn beyond_the_count_the_earliest_finished_go_whatever_their_id() {
        let retention = Retention {
            max_age: None,
            max_runs: Some(2),
            ..Retention::default()
        };
        let runs = [
            run(1, DONE, 50.0),
            run(2, DONE, 10.0),
            run(3, RunStatus::Running, 0.0),
            run(4, DONE, 30.0),
            run(5, DONE, 30.0),
        ];
        assert_eq!(retention.expired(&runs, 1e9), [2, 4]);
        let none = Retention {
            max_runs: Some(0),
            ..retention
        };
        assert_eq!(none.expired(&runs, 0.0), [1, 2, 4, 5]);
    }

    #[test]
    fn without_limits_nothing_goes_and_both_limits_add_up() {
        let keep_all = Retention {
            max_age: None,
            max_runs: None,
            ..Retention::default()
        };
        let runs = [run(1, DONE, 0.0), run(2, DONE, 1e6)];
        assert!(keep_all.expired(&runs, 1e12).is_empty());
        let both = Retention {
            max_age: Some(Duration::from_secs(10)),
            max_runs: Some(1),
            ..keep_all
        };
        let runs = [run(1, DONE, 95.0), run(2, DONE, 96.0), run(3, DONE, 80.0)];
        assert_eq!(both.expired(&runs, 100.0), [1, 3]);
    }

    #[test]
    fn periods_need_a_unit_and_zero_keeps_forever() {
        assert_eq!(parse_age("30d"), Ok(Some(Duration::from_secs(2_592_000))));
        assert_eq!(parse_age("12h"), Ok(Some(Duration::from_secs(43_200))));
        assert_eq!(parse_age(" 90m "), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse_age("45s"), Ok(Some(Duration::from_secs(45))));
        assert_eq!(parse_age("0"), Ok(None));
        assert_eq!(parse_age("0d"), Ok(None));
        for bad in ["30", "", "d", "-1d", "1.5h", "3w", "99999999999999999999d"] {
            let e = parse_age(bad).unwrap_err();
            assert!(e.contains("e.g. 30d, 12h"), "{bad}: {e}");
        }
    }
}
