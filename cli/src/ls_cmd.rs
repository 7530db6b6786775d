//! `flwr ls [APP_DIR] [FEDERATION] [--run-id ID] [--format default|json]`: the runs of a
//! SuperLink with Flower's columns — run id, app, status, elapsed, status changed at — and
//! an owner column when the SuperLink authenticates users.

use crate::exit_code;
use crate::project::Project;
use crate::remote::Remote;
use crate::report::Format;
use floret_actors::policy::clock::unix_now;
use floret_core::RunInfo;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Flags of `flwr ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// The app's directory, holding the pyproject.toml that names the federation.
    #[arg(default_value = ".")]
    pub app_dir: PathBuf,
    /// A federation with an address; defaults to the one named by `default`.
    pub federation: Option<String>,
    /// Show only this run.
    #[arg(long, value_name = "ID")]
    pub run_id: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Default)]
    pub format: Format,
}

/// Prints the SuperLink's runs (or one) as a table or JSON; returns the exit code.
pub async fn execute(args: LsArgs) -> anyhow::Result<i32> {
    let project = Project::load(&args.app_dir, "flwr ls")?;
    let remote = Remote::from_project(&project, args.federation.as_deref(), "flwr ls")?;
    let control = remote.connect().await?;
    let runs = match args.run_id {
        Some(id) => vec![control.get_run(id).await.map_err(|e| remote.error(e))?],
        None => control.list_runs().await.map_err(|e| remote.error(e))?,
    };
    let now = unix_now();
    match args.format {
        Format::Default => crate::out!("{}", table(&runs, now)),
        Format::Json => crate::outln!("{}", json_list(&runs, now)),
    }
    Ok(exit_code::OK)
}

/// Seconds a run has taken: until it finished, or until `now` while it goes on.
fn elapsed(run: &RunInfo, now: f64) -> f64 {
    let end = if run.status.is_finished() {
        run.status_changed_at
    } else {
        now
    };
    (end - run.created_at).max(0.0)
}

fn table(runs: &[RunInfo], now: f64) -> String {
    if runs.is_empty() {
        return "no runs\n".to_owned();
    }
    // Runs have owners only on a SuperLink with user authentication.
    let owners = runs.iter().any(|r| !r.owner.is_empty());
    let mut header = vec![
        "run id".to_owned(),
        "app".to_owned(),
        "status".to_owned(),
        "elapsed".to_owned(),
        "status changed at".to_owned(),
    ];
    if owners {
        header.push("owner".to_owned());
    }
    let mut rows = vec![header];
    for run in runs {
        let mut row = vec![
            run.run_id.to_string(),
            run.app.name.clone(),
            run.status.to_string(),
            hms(elapsed(run, now)),
            utc(run.status_changed_at),
        ];
        if owners {
            row.push(run.owner.clone());
        }
        rows.push(row);
    }
    crate::columns::render(&rows)
}

fn json_list(runs: &[RunInfo], now: f64) -> Value {
    let runs: Vec<Value> = runs
        .iter()
        .map(|run| {
            json!({
                "run_id": run.run_id,
                "app": run.app.name,
                "federation": run.federation,
                "status": run.status.to_string(),
                "reason": run.reason,
                "elapsed_s": elapsed(run, now),
                "created_at": utc(run.created_at),
                "status_changed_at": utc(run.status_changed_at),
                "owner": run.owner,
            })
        })
        .collect();
    json!({ "runs": runs })
}

/// `01:02:03.45`: hours, minutes, seconds with hundredths (runs here take seconds).
fn hms(secs: f64) -> String {
    let centis = (secs * 100.0).round() as u64;
    let (h, rest) = (centis / 360_000, centis % 360_000);
    let (m, rest) = (rest / 6_000, rest % 6_000);
    format!("{h:02}:{m:02}:{:02}.{:02}", rest / 100, rest % 100)
}

/// Unix seconds as `2026-11-24 09:04:05Z` (UTC), without a date-time dependency.
pub(crate) fn utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{AppRef, RunStatus, SubStatus, UserConfig};

    fn run(id: u64, status: RunStatus, created: f64, changed: f64) -> RunInfo {
        RunInfo {
            owner: String::new(),
            run_id: id,
            app: AppRef {
                name: "digits".into(),
                ..AppRef::default()
            },
            federation: "remote".into(),
            run_config: UserConfig::new(),
            status,
            reason: String::new(),
            created_at: created,
            status_changed_at: changed,
        }
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_795_511_045.9), "2026-11-24 09:04:05Z");
    }

    #[test]
    fn elapsed_stops_when_a_run_finishes() {
        let done = run(1, RunStatus::Finished(SubStatus::Completed), 100.0, 103.5);
        assert_eq!(elapsed(&done, 1000.0), 3.5);
        let going = run(2, RunStatus::Running, 100.0, 101.0);
        assert_eq!(elapsed(&going, 110.0), 10.0);
        assert_eq!(hms(3723.456), "01:02:03.46");
    }

    #[test]
    fn table_has_flowers_columns_and_a_row_per_run() {
        let t = table(
            &[run(7, RunStatus::Finished(SubStatus::Stopped), 0.0, 65.0)],
            0.0,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "run id  app     status            elapsed      status changed at"
        );
        assert_eq!(
            lines[1],
            "7       digits  finished:stopped  00:01:05.00  1970-01-01 00:01:05Z"
        );
    }

    #[test]
    fn an_owner_column_appears_only_with_owners() {
        let mut owned = run(8, RunStatus::Running, 0.0, 0.0);
        owned.owner = "alice".into();
        let t = table(&[owned, run(9, RunStatus::Running, 0.0, 0.0)], 0.0);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].ends_with("status changed at     owner"), "{t}");
        assert!(lines[1].ends_with("alice"), "{t}");
        assert!(lines[2].ends_with("00:00:00Z"), "{t}");
    }
}
