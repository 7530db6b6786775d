//! The run's history as files: what `flwr run` leaves behind so that a run can be
//! compared, plotted or loaded into a notebook after the console has scrolled away.
//!
//! ```text
//! <dir>/history.json   the `--format json` report plus app, federation and reason
//! <dir>/history.csv    one row per round: phase counts, duration, every metric
//! <dir>/metrics.svg    every scalar metric per round, one line each, with a legend
//! ```
//!
//! `<dir>` is `--output-dir DIR` as given, or `<app_dir>/runs/<UTC start>-run-<id>/` so
//! that runs never overwrite each other. The directory is checked before the run starts
//! ([`Destination::prepare`]): a run is not spent only to find that its results have
//! nowhere to go.

mod csv;
mod plot;

use crate::UserError;
use crate::report::Round;
use floret_actors::policy::clock::unix_now;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The file names inside the output directory.
pub const HISTORY_JSON: &str = "history.json";
/// See [`HISTORY_JSON`].
pub const HISTORY_CSV: &str = "history.csv";
/// See [`HISTORY_JSON`].
pub const METRICS_SVG: &str = "metrics.svg";

/// Where the history files of one run go, checked to be writable.
#[derive(Debug, Clone)]
pub struct Destination {
    kind: Kind,
    /// When the run started (UTC), for the default directory name and `started_at`.
    started: SystemTime,
}

#[derive(Debug, Clone)]
enum Kind {
    /// `--output-dir DIR`: the files go into DIR itself (a later run there replaces them).
    Exact(PathBuf),
    /// The default: a new `<stamp>-run-<id>` directory under this one per run.
    PerRun(PathBuf),
}

/// The history of a run, as the console report has it.
pub struct History<'a> {
    /// The app's name from its manifest.
    pub app: &'a str,
    /// The federation the run ran on.
    pub federation: &'a str,
    /// Why the run ended as it did; empty when the status says it all.
    pub reason: &'a str,
    /// The `--format json` object (`run_id`, `status`, `wall_s`, `rounds`).
    pub report: Value,
    /// Every finished round, in order, for the CSV and the plot.
    pub rounds: &'a [Round],
}

/// The files written for a run.
#[derive(Debug, Clone)]
pub struct Written {
    /// The directory holding the three files.
    pub dir: PathBuf,
}

/// Writing the files at the end of the run failed.
#[derive(Debug, Error)]
#[error("cannot write the run history to {}: {source}", .path.display())]
pub struct WriteError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl Destination {
    /// Makes sure the history can be written: creates `flag`'s directory, or
    /// `<app_dir>/runs` when there is no flag, and writes a probe file there. A failure
    /// is a `UserError` naming `--output-dir`, before anything has run.
    pub fn prepare(flag: Option<&Path>, app_dir: &Path) -> Result<Destination, UserError> {
        let kind = match flag {
            Some(dir) => Kind::Exact(dir.to_path_buf()),
            None => Kind::PerRun(app_dir.join("runs")),
        };
        let dir = match &kind {
            Kind::Exact(dir) | Kind::PerRun(dir) => dir,
        };
        check_writable(dir).map_err(|e| {
            UserError::new(match flag {
                Some(_) => format!(
                    "--output-dir {}: cannot write the run history there ({e}): pass a directory you can write to, or remove what is in the way",
                    dir.display()
                ),
                None => format!(
                    "cannot write the run history to {} ({e}): pass --output-dir DIR to write it elsewhere",
                    dir.display()
                ),
            })
        })?;
        Ok(Destination {
            kind,
            started: UNIX_EPOCH + Duration::from_secs_f64(unix_now()),
        })
    }

    /// Writes `history.json`, `history.csv` and `metrics.svg` for run `run_id`.
    pub fn write(&self, run_id: u64, history: &History) -> Result<Written, WriteError> {
        let dir = match &self.kind {
            Kind::Exact(dir) => dir.clone(),
            Kind::PerRun(base) => {
                new_run_dir(base, &format!("{}-run-{run_id}", stamp(self.started)))?
            }
        };
        let at = |name: &str| dir.join(name);
        let json = history_json(history, &iso_time(self.started));
        let json = serde_json::to_string_pretty(&json).map_err(|e| WriteError {
            path: at(HISTORY_JSON),
            source: e.into(),
        })?;
        write(&at(HISTORY_JSON), json)?;
        write(&at(HISTORY_CSV), csv::table(history.rounds))?;
        let title = format!("{} on {}", history.app, history.federation);
        write(&at(METRICS_SVG), plot::svg(&title, history.rounds))?;
        Ok(Written { dir })
    }
}

impl Written {
    /// One line for the console: `runs/…/history.json, history.csv, metrics.svg`.
    pub fn summary(&self) -> String {
        format!(
            "{}, {HISTORY_CSV}, {METRICS_SVG}",
            self.dir.join(HISTORY_JSON).display()
        )
    }

    /// The paths, for `--format json`.
    pub fn to_json(&self) -> Value {
        let path = |name: &str| json!(self.dir.join(name).to_string_lossy());
        json!({
            "dir": self.dir.to_string_lossy(),
            "json": path(HISTORY_JSON),
            "csv": path(HISTORY_CSV),
            "plot": path(METRICS_SVG),
        })
    }
}

/// history.json: who ran what where first, then the report's fields as `--format json`
/// printed them, so the two cannot disagree.
fn history_json(history: &History, started_at: &str) -> Value {
    let mut out = Map::new();
    let field = |k: &str| history.report.get(k).cloned().unwrap_or(Value::Null);
    out.insert("run_id".into(), field("run_id"));
    out.insert("app".into(), json!(history.app));
    out.insert("federation".into(), json!(history.federation));
    out.insert("status".into(), field("status"));
    out.insert("reason".into(), json!(history.reason));
    out.insert("started_at".into(), json!(started_at));
    out.insert("wall_s".into(), field("wall_s"));
    out.insert("rounds".into(), field("rounds"));
    Value::Object(out)
}

fn write(path: &Path, contents: impl AsRef<[u8]>) -> Result<(), WriteError> {
    std::fs::write(path, contents).map_err(|source| WriteError {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` (and its parents) and proves a file can be written in it.
fn check_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".floret-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// A new directory `base/name`, or `base/name-2`, `-3`… when that exists: two runs with
/// the same id in the same second (local simulations number runs from 1) keep both.
fn new_run_dir(base: &Path, name: &str) -> Result<PathBuf, WriteError> {
    let mut n = 1;
    loop {
        let dir = match n {
            1 => base.join(name),
            _ => base.join(format!("{name}-{n}")),
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(source) => return Err(WriteError { path: dir, source }),
        }
    }
}

/// The UTC time broken down, or the epoch for a clock before 1970.
fn utc(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// `20261124T101500Z`: sorts by time and is a valid file name everywhere.
fn stamp(t: SystemTime) -> String {
    iso_time(t).replace(['-', ':'], "")
}

/// `2026-11-24T10:15:00Z` (RFC 3339).
fn iso_time(t: SystemTime) -> String {
    let t = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_utc() {
        // 2026-11-24 10:15:00 UTC
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_515_300);
        assert_eq!(stamp(t), "20261124T101500Z");
        assert_eq!(iso_time(t), "2026-11-24T10:15:00Z");
    }

    #[test]
    fn runs_in_the_same_second_get_their_own_directories() {
        let base = std::env::temp_dir().join(format!("floret-run-dir-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let a = new_run_dir(&base, "x-run-1").unwrap();
        let b = new_run_dir(&base, "x-run-1").unwrap();
        assert_ne!(a, b);
        assert!(b.ends_with("x-run-1-2"), "{}", b.display());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
