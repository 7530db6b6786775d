//! What `flwr run` shows: a progress bar on a terminal or plain log lines otherwise while the
//! run goes, then a per-round metrics table and the wall time, or one JSON object.

use floret_actors::RunStatus;
use floret_core::{MetricRecord, MetricValue, RoundSummary, RunEvent};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};
use std::io::IsTerminal;
use std::time::Duration;

/// How results are printed (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Default,
    Json,
}

/// Follows a run's events and prints its results.
pub struct Reporter {
    bar: Option<ProgressBar>,
    format: Format,
    rounds: Vec<RoundSummary>,
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
        }
    }

    pub fn on_event(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Log(line) => self.line(line),
            RunEvent::RoundStarted { round, num_rounds } => {
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
                self.rounds.push(summary.clone());
            }
        }
    }

    fn line(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Stops without a report (the user detached, or the stream broke): clears the bar.
    pub fn clear(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Prints the final report and returns what was printed to stdout.
    pub fn finish(self, run_id: u64, status: RunStatus, reason: &str, wall: Duration) -> String {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let out = match self.format {
            Format::Json => json_report(run_id, status, wall, &self.rounds).to_string(),
            Format::Default => text_report(run_id, status, reason, wall, &self.rounds),
        };
        println!("{out}");
        out
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
type PhaseMetrics = fn(&RoundSummary) -> Option<&MetricRecord>;

/// A table with one row per round and one column per metric seen in any round.
fn text_report(
    run_id: u64,
    status: RunStatus,
    reason: &str,
    wall: Duration,
    rounds: &[RoundSummary],
) -> String {
    let mut columns: Vec<(String, PhaseMetrics, String)> = Vec::new();
    let phases: [(&str, PhaseMetrics); 3] = [
        ("train", |s| s.train.as_ref().map(|p| &p.metrics)),
        ("evaluate", |s| s.evaluate.as_ref().map(|p| &p.metrics)),
        ("server", |s| s.central.as_ref()),
    ];
    for (phase, get) in phases {
        for s in rounds {
            for (k, _) in get(s).into_iter().flat_map(|m| m.iter()) {
                let title = format!("{phase} {k}");
                if k != "num-examples" && !columns.iter().any(|(t, _, _)| *t == title) {
                    columns.push((title, get, k.clone()));
                }
            }
        }
    }
    let mut rows: Vec<Vec<String>> = vec![
        std::iter::once("round".to_string())
            .chain(columns.iter().map(|c| c.0.clone()))
            .collect(),
    ];
    for s in rounds {
        let mut row = vec![s.round.to_string()];
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

fn json_report(run_id: u64, status: RunStatus, wall: Duration, rounds: &[RoundSummary]) -> Value {
    let rounds: Vec<Value> = rounds
        .iter()
        .map(|s| {
            json!({
                "round": s.round,
                "train_metrics": metrics_json(s.train.as_ref().map(|p| &p.metrics)),
                "evaluate_metrics": metrics_json(s.evaluate.as_ref().map(|p| &p.metrics)),
                "server_metrics": metrics_json(s.central.as_ref()),
            })
        })
        .collect();
    json!({
        "run_id": run_id,
        "status": status.to_string(),
        "wall_s": wall.as_secs_f64(),
        "rounds": rounds,
    })
}

fn metrics_json(m: Option<&MetricRecord>) -> Value {
    let mut obj = Map::new();
    for (k, v) in m.into_iter().flat_map(|m| m.iter()) {
        let value = match v {
            MetricValue::F64(x) => json!(x),
            MetricValue::I64(x) => json!(x),
            MetricValue::U64(x) => json!(x),
            MetricValue::F64List(x) => json!(x),
            MetricValue::I64List(x) => json!(x),
            MetricValue::U64List(x) => json!(x),
        };
        obj.insert(k.clone(), value);
    }
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_actors::SubStatus;
    use floret_core::PhaseSummary;

    fn round(r: u64, acc: f64) -> RoundSummary {
        let mut m = MetricRecord::new();
        m.insert("eval_acc", acc);
        m.insert("num-examples", 50i64);
        RoundSummary {
            round: r,
            evaluate: Some(PhaseSummary {
                sampled: 2,
                replies: 2,
                metrics: m,
                ..PhaseSummary::default()
            }),
            ..RoundSummary::default()
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
        assert_eq!(v["rounds"][0]["evaluate_metrics"]["eval_acc"], 0.5);
        assert_eq!(v["rounds"][0]["train_metrics"], json!({}));
    }

    #[test]
    fn text_report_has_a_row_per_round_and_the_outcome() {
        let t = text_report(
            3,
            RunStatus::Finished(SubStatus::Completed),
            "",
            Duration::from_secs(2),
            &[round(1, 0.5), round(2, 0.75)],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "round  evaluate eval_acc");
        assert_eq!(lines[2], "    2             0.7500");
        assert_eq!(lines[3], "run 3 finished:completed in 2.00 s");
    }
}
