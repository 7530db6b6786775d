//! history.csv: one row per round, for spreadsheets and `pandas.read_csv`.
//!
//! Columns: `round`, `duration_s`, then `<phase>_<count>` for the train and evaluate
//! phases (`sampled`, `replies`, `failures`, `late`, `lost`), then `<phase>.<key>` for
//! every metric key any round had (`train.train_loss`, `evaluate.eval_acc`,
//! `server.accuracy`). A cell is empty when the round has no such value. Written by hand
//! (RFC 4180 quoting) because it is twenty lines.

use crate::report::{Phase, Round, lost, metric_columns, value_json};
use floret_core::{MetricValue, PhaseSummary};

/// Reads one count of a phase.
type Count = fn(&PhaseSummary) -> u64;

/// The phase counts, as columns.
const COUNTS: [(&str, Count); 5] = [
    ("sampled", |p| p.sampled),
    ("replies", |p| p.replies),
    ("failures", |p| p.failures),
    ("late", |p| p.late),
    ("lost", lost),
];

/// The phases with counts.
const PHASES: [(&str, Phase); 2] = [
    ("train", |s| s.train.as_ref()),
    ("evaluate", |s| s.evaluate.as_ref()),
];

/// The whole file: a header and one line per round, `\n`-terminated.
pub(super) fn table(rounds: &[Round]) -> String {
    let metrics = metric_columns(rounds);
    let mut header = vec!["round".to_string(), "duration_s".to_string()];
    for (phase, _) in PHASES {
        header.extend(COUNTS.iter().map(|(count, _)| format!("{phase}_{count}")));
    }
    header.extend(
        metrics
            .iter()
            .map(|(phase, _, key)| format!("{phase}.{key}")),
    );
    let mut out = line(&header);
    for Round { summary, duration } in rounds {
        let mut row = vec![
            summary.round.to_string(),
            duration.map_or_else(String::new, |d| d.as_secs_f64().to_string()),
        ];
        for (_, get) in PHASES {
            let phase = get(summary);
            row.extend(
                COUNTS
                    .iter()
                    .map(|(_, count)| phase.map_or_else(String::new, |p| count(p).to_string())),
            );
        }
        row.extend(metrics.iter().map(|(_, get, key)| {
            get(summary)
                .and_then(|m| m.get(key).ok())
                .map_or_else(String::new, cell)
        }));
        out.push_str(&line(&row));
    }
    out
}

/// A number as Rust prints it (the shortest text that reads back the same value); a list
/// as a JSON array.
fn cell(v: &MetricValue) -> String {
    match v {
        MetricValue::F64(x) => x.to_string(),
        MetricValue::I64(x) => x.to_string(),
        MetricValue::U64(x) => x.to_string(),
        list => value_json(list).to_string(),
    }
}

fn line(cells: &[String]) -> String {
    let mut out = cells.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",");
    out.push('\n');
    out
}

/// RFC 4180: a field with a comma, quote or line break is quoted, quotes doubled.
fn quote(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{MetricRecord, RoundSummary};
    use std::time::Duration;

    fn round(r: u64, metrics: MetricRecord) -> Round {
        Round {
            summary: RoundSummary {
                round: r,
                train: Some(PhaseSummary {
                    sampled: 4,
                    replies: 3,
                    failures: 1,
                    metrics,
                    ..PhaseSummary::default()
                }),
                ..RoundSummary::default()
            },
            duration: Some(Duration::from_millis(1500)),
        }
    }

    #[test]
    fn columns_are_the_union_of_keys_and_absent_values_are_empty() {
        let mut a = MetricRecord::new();
        a.insert("loss", 0.5);
        let mut b = MetricRecord::new();
        b.insert("acc, top-1", 0.25);
        b.insert("hist", MetricValue::I64List(vec![1, 2]));
        let t = table(&[round(1, a), round(2, b)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "round,duration_s,train_sampled,train_replies,train_failures,train_late,train_lost,\
             evaluate_sampled,evaluate_replies,evaluate_failures,evaluate_late,evaluate_lost,\
             train.loss,\"train.acc, top-1\",train.hist"
        );
        assert_eq!(lines[1], "1,1.5,4,3,1,0,1,,,,,,0.5,,");
        assert_eq!(lines[2], "2,1.5,4,3,1,0,1,,,,,,,0.25,\"[1,2]\"");
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn quotes_are_doubled() {
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("two\nlines"), "\"two\nlines\"");
    }
}
