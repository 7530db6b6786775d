//! What `flwr run` shows: a progress bar on a terminal or plain log lines otherwise while the
//! run goes, then a per-round metrics table and the wall time, or one JSON object.
//!
//! Each phase of a round also reports its lost replies: `sampled - replies`, the sampled
//! nodes whose reply the strategy could not use (an error reply, a rejected update, or no
//! reply before the round timeout). That is the number a researcher measuring a strategy
//! under dropouts (`options.chaos.*`, docs/CHAOS.md) needs next to the metrics.
//!
//! With a [`HistoryTarget`] the same rounds are also saved as files (`run_report`), so the
//! files and the console report cannot disagree.

use crate::run_report::{Destination, History, WriteError, Written};
use floret_actors::RunStatus;
use floret_core::{MetricRecord, MetricValue, PhaseSummary, RoundSummary, RunEvent};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use std::io::IsTerminal;
use std::time::Duration;
use tokio::time::Instant;

/// How results are printed (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people: tables, and for a followed run its progress and a metrics table.
    Default,
    /// JSON on stdout for scripts; progress and warnings stay on stderr.
    Json,
}

/// A finished round and how long it took, as this process saw its start and end events.
#[derive(Debug, Clone, PartialEq)]
pub struct Round {
    /// The strategy's summary of the round: per phase, nodes sampled, replies, metrics.
    pub summary: RoundSummary,
    /// `None` when the round's start event was not seen.
    pub duration: Option<Duration>,
}

/// Where the run's history files go, and what they name the run by.
#[derive(Debug, Clone)]
pub struct HistoryTarget {
    /// The directory the files go to, checked before the run started.
    pub destination: Destination,
    /// The app's name from its manifest, recorded in `history.json`.
    pub app: String,
    /// The federation's name, recorded in `history.json`.
    pub federation: String,
}

/// How a run ended, as the final report tells it.
#[derive(Debug, Clone, Copy)]
pub struct Ending<'a> {
    /// The run, as the SuperLink or simulation numbered it.
    pub run_id: u64,
    /// Its final status, or `Running` when `flwr` stopped following it before the end.
    pub status: RunStatus,
    /// Why it ended as it did (or why following stopped); empty when there is nothing to
    /// add to the status.
    pub reason: &'a str,
    /// Wall time from the run's submission (or the simulation's start) to now.
    pub wall: Duration,
}

/// Follows a run's events and prints its results.
pub struct Reporter {
    bar: Option<ProgressBar>,
    format: Format,
    rounds: Vec<Round>,
    /// The round in progress and when its start event arrived.
    current: Option<(u64, Instant)>,
    history: Option<HistoryTarget>,
}

impl Reporter {
    /// A progress bar only when stderr is a terminal; plain lines for logs and pipes.
    pub fn new(format: Format) -> Reporter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{spinner} round {pos}/{len} [{bar:30}] {elapsed} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Reporter {
            bar,
            format,
            rounds: Vec::new(),
            current: None,
            history: None,
        }
    }

    /// Also saves the run's history files when it ends (see `run_report`).
    pub fn with_history(mut self, history: HistoryTarget) -> Reporter {
        self.history = Some(history);
        self
    }

    /// Takes one event of the run: a log line is printed (above the bar, if any), a
    /// finished round is kept for the report and moves the bar.
    pub fn on_event(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Log(line) => self.line(line),
            RunEvent::RoundStarted { round, num_rounds } => {
                self.current = Some((*round, Instant::now()));
                if let Some(bar) = &self.bar {
                    bar.set_length(*num_rounds);
                    bar.set_position(round.saturating_sub(1));
                }
            }
            RunEvent::RoundFinished(summary) => {
                // Without a bar the strategy's own log lines already tell each phase.
                if let Some(bar) = &self.bar {
                    bar.set_position(summary.round);
                    bar.set_message(summary_line(summary));
                }
                let duration = match self.current.take() {
                    Some((round, started)) if round == summary.round => Some(started.elapsed()),
                    _ => None,
                };
                self.rounds.push(Round {
                    summary: summary.clone(),
                    duration,
                });
            }
        }
    }

    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Stops without a report (the user detached, or the stream broke): clears the bar,
    /// and saves the rounds seen so far as history files, saying where on stderr; stdout
    /// stays as it was, since the run has no final report yet.
    pub fn stop_early(self, ending: Ending) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        match self.save_history(&ending) {
            Some(Ok(files)) => eprintln!("history so far: {}", files.summary()),
            Some(Err(e)) => eprintln!("warning: {e}"),
            None => {}
        }
    }

    /// Prints the final report and returns what was printed to stdout. With a history
    /// target the files are written first and the report points at them; a failure to
    /// write them is a warning on stderr (and `history_error` in JSON), not a failed run:
    /// the results are still in the report.
    pub fn finish(self, ending: Ending) -> String {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let saved = self.save_history(&ending);
        if let Some(Err(e)) = &saved {
            eprintln!("warning: {e}");
        }
        let out = match self.format {
            Format::Json => {
                let mut report =
                    json_report(ending.run_id, ending.status, ending.wall, &self.rounds);
                match &saved {
                    Some(Ok(files)) => report["history"] = files.to_json(),
                    Some(Err(e)) => report["history_error"] = json!(e.to_string()),
                    None => {}
                }
                report.to_string()
            }
            Format::Default => {
                let mut text = text_report(&ending, &self.rounds);
                if let Some(Ok(files)) = &saved {
                    text.push_str(&format!("\nhistory: {}", files.summary()));
                }
                text
            }
        };
        crate::outln!("{out}");
        out
    }

    fn save_history(&self, ending: &Ending) -> Option<Result<Written, WriteError>> {
        let target = self.history.as_ref()?;
        let history = History {
            app: &target.app,
            federation: &target.federation,
            reason: ending.reason,
            report: json_report(ending.run_id, ending.status, ending.wall, &self.rounds),
            rounds: &self.rounds,
        };
        Some(target.destination.write(ending.run_id, &history))
    }
}

/// The one-line digest of a round: the main metrics of each phase and the failure count.
pub fn summary_line(s: &RoundSummary) -> String {
    let mut parts = Vec::new();
    if let Some(t) = &s.train {
        parts.push(format!(
            "train {}/{} ok {}",
            t.replies,
            t.sampled,
            metrics_text(&t.metrics)
        ));
    }
    if let Some(e) = &s.evaluate {
        parts.push(format!(
            "evaluate {}/{} ok {}",
            e.replies,
            e.sampled,
            metrics_text(&e.metrics)
        ));
    }
    if let Some(c) = &s.central {
        parts.push(format!("server {}", metrics_text(c)));
    }
    parts.join(" | ")
}

fn metrics_text(m: &MetricRecord) -> String {
    m.iter()
        .filter(|(k, _)| k.as_str() != "num-examples")
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A metric value as shown in tables and the progress line.
fn value_text(v: &MetricValue) -> String {
    match v {
        MetricValue::F64(x) => format!("{x:.4}"),
        MetricValue::I64(x) => x.to_string(),
        MetricValue::U64(x) => x.to_string(),
        MetricValue::F64List(x) => format!("{x:?}"),
        MetricValue::I64List(x) => format!("{x:?}"),
        MetricValue::U64List(x) => format!("{x:?}"),
    }
}

/// Picks one phase's metrics out of a round summary.
pub(crate) type PhaseMetrics = fn(&RoundSummary) -> Option<&MetricRecord>;

/// Picks one phase out of a round summary.
pub(crate) type Phase = fn(&RoundSummary) -> Option<&PhaseSummary>;

/// The metric records of a round, named as the table, the CSV and the plot name them.
pub(crate) const METRIC_PHASES: [(&str, PhaseMetrics); 3] = [
    ("train", |s| s.train.as_ref().map(|p| &p.metrics)),
    ("evaluate", |s| s.evaluate.as_ref().map(|p| &p.metrics)),
    ("server", |s| s.central.as_ref()),
];

/// One metric of one phase: `(phase, how to find the phase's record, key)`.
pub(crate) type MetricColumn = (&'static str, PhaseMetrics, String);

/// Each metric key of each phase seen in any round, once, in the order first seen: the
/// columns of the table and the CSV, and the lines of the plot.
pub(crate) fn metric_columns(rounds: &[Round]) -> Vec<MetricColumn> {
    let mut columns: Vec<MetricColumn> = Vec::new();
    for (phase, get) in METRIC_PHASES {
        for r in rounds {
            for (k, _) in get(&r.summary).into_iter().flat_map(|m| m.iter()) {
                if !columns.iter().any(|(p, _, key)| *p == phase && key == k) {
                    columns.push((phase, get, k.clone()));
                }
            }
        }
    }
    columns
}

/// The phase's sampled nodes whose reply was not aggregated: failures plus those without
/// a reply in time. Late replies of an earlier phase are not in it; they are counted as
/// `late` by the phase they arrived in.
pub(crate) fn lost(p: &PhaseSummary) -> u64 {
    p.sampled.saturating_sub(p.replies)
}

/// A table with one row per round and one column per metric seen in any round.
fn text_report(ending: &Ending, rounds: &[Round]) -> String {
    let Ending {
        run_id,
        status,
        reason,
        wall,
    } = *ending;
    let columns: Vec<(String, PhaseMetrics, String)> = metric_columns(rounds)
        .into_iter()
        .filter(|(_, _, k)| k != "num-examples")
        .map(|(phase, get, k)| (format!("{phase} {k}"), get, k))
        .collect();
    let losses: [(&str, Phase); 2] = [
        ("train lost", |s| s.train.as_ref()),
        ("evaluate lost", |s| s.evaluate.as_ref()),
    ];
    let losses: Vec<(&str, Phase)> = losses
        .into_iter()
        .filter(|(_, get)| rounds.iter().any(|r| get(&r.summary).is_some()))
        .collect();
    let mut rows: Vec<Vec<String>> = vec![
        std::iter::once("round".to_string())
            .chain(losses.iter().map(|(title, _)| title.to_string()))
            .chain(columns.iter().map(|c| c.0.clone()))
            .collect(),
    ];
    for Round { summary: s, .. } in rounds {
        let mut row = vec![s.round.to_string()];
        for (_, get) in &losses {
            row.push(get(s).map_or_else(|| "-".into(), |p| lost(p).to_string()));
        }
        for (_, get, key) in &columns {
            row.push(
                get(s)
                    .and_then(|m| m.get(key).ok())
                    .map(value_text)
                    .unwrap_or_else(|| "-".into()),
            );
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    if rounds.is_empty() {
        out.push_str("no round completed\n");
    } else {
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "run {run_id} {status} in {:.2} s",
        wall.as_secs_f64()
    ));
    if !reason.is_empty() {
        out.push_str(&format!(": {reason}"));
    }
    out
}

fn json_report(run_id: u64, status: RunStatus, wall: Duration, rounds: &[Round]) -> Value {
    let rounds: Vec<Value> = rounds
        .iter()
        .map(
            |Round {
                 summary: s,
                 duration,
             }| {
                json!({
                    "round": s.round,
                    "duration_s": duration.map(|d| d.as_secs_f64()),
                    "train": phase_json(s.train.as_ref()),
                    "evaluate": phase_json(s.evaluate.as_ref()),
                    "train_metrics": metrics_json(s.train.as_ref().map(|p| &p.metrics)),
                    "evaluate_metrics": metrics_json(s.evaluate.as_ref().map(|p| &p.metrics)),
                    "server_metrics": metrics_json(s.central.as_ref()),
                })
            },
        )
        .collect();
    json!({
        "run_id": run_id,
        "status": status.to_string(),
        "wall_s": wall.as_secs_f64(),
        "rounds": rounds,
    })
}

/// A phase's counts, `null` for a phase the round did not have.
fn phase_json(p: Option<&PhaseSummary>) -> Value {
    match p {
        Some(p) => json!({
            "sampled": p.sampled,
            "replies": p.replies,
            "failures": p.failures,
            "late": p.late,
            "lost": lost(p),
        }),
        None => Value::Null,
    }
}

fn metrics_json(m: Option<&MetricRecord>) -> Value {
    let mut obj = Map::new();
    for (k, v) in m.into_iter().flat_map(|m| m.iter()) {
        obj.insert(k.clone(), value_json(v));
    }
    Value::Object(obj)
}

/// A metric value as JSON: a number, or an array of numbers.
pub(crate) fn value_json(v: &MetricValue) -> Value {
    match v {
        MetricValue::F64(x) => json!(x),
        MetricValue::I64(x) => json!(x),
        MetricValue::U64(x) => json!(x),
        MetricValue::F64List(x) => json!(x),
        MetricValue::I64List(x) => json!(x),
        MetricValue::U64List(x) => json!(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_actors::SubStatus;

    fn round(r: u64, acc: f64) -> Round {
        let mut m = MetricRecord::new();
        m.insert("eval_acc", acc);
        m.insert("num-examples", 50i64);
        Round {
            summary: RoundSummary {
                round: r,
                evaluate: Some(PhaseSummary {
                    sampled: 3,
                    replies: 2,
                    failures: 1,
                    metrics: m,
                    ..PhaseSummary::default()
                }),
                ..RoundSummary::default()
            },
            duration: Some(Duration::from_millis(250)),
        }
    }

    #[test]
    fn json_report_has_the_documented_shape() {
        let v = json_report(
            7,
            RunStatus::Finished(SubStatus::Completed),
            Duration::from_millis(1500),
            &[round(1, 0.5)],
        );
        assert_eq!(v["run_id"], 7);
        assert_eq!(v["status"], "finished:completed");
        assert_eq!(v["wall_s"], 1.5);
        assert_eq!(v["rounds"][0]["round"], 1);
        assert_eq!(v["rounds"][0]["duration_s"], 0.25);
        assert_eq!(v["rounds"][0]["evaluate_metrics"]["eval_acc"], 0.5);
        assert_eq!(v["rounds"][0]["train_metrics"], json!({}));
        assert_eq!(
            v["rounds"][0]["evaluate"],
            json!({"sampled": 3, "replies": 2, "failures": 1, "late": 0, "lost": 1})
        );
        assert_eq!(v["rounds"][0]["train"], Value::Null);
    }

    #[test]
    fn text_report_has_a_row_per_round_and_the_outcome() {
        let t = text_report(
            &Ending {
                run_id: 3,
                status: RunStatus::Finished(SubStatus::Completed),
                reason: "",
                wall: Duration::from_secs(2),
            },
            &[round(1, 0.5), round(2, 0.75)],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "round  evaluate lost  evaluate eval_acc");
        assert_eq!(lines[2], "    2              1             0.7500");
        assert_eq!(lines[3], "run 3 finished:completed in 2.00 s");
    }

    #[test]
    fn lost_counts_failures_and_unanswered_but_not_late_arrivals() {
        // 10 sampled: 6 aggregated, 1 error reply, 3 without a reply in time; 2 replies of
        // the previous phase arrived late. Lost: 1 + 3.
        let p = PhaseSummary {
            sampled: 10,
            replies: 6,
            failures: 1,
            late: 2,
            ..PhaseSummary::default()
        };
        assert_eq!(lost(&p), 4);
        assert_eq!(phase_json(Some(&p))["lost"], 4);
        assert_eq!(phase_json(Some(&p))["late"], 2);
    }
}
