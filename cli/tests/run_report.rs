//! `flwr run`'s history files (docs/OBSERVABILITY.md, "Run reports"): what a local
//! simulation, a user's app binary and a streamed run on a SuperLink leave behind, and the
//! refusal of an output directory that cannot be written, before anything runs.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use support::*;

/// The quickstart's components on three virtual SuperNodes, `rounds` rounds, tiny model.
fn app(rounds: u32) -> tempfile::TempDir {
    let manifest = format!(
        r#"
[project]
name = "reportapp"
[tool.flwr.app.components]
serverapp = "quickstart.server_app:app"
clientapp = "quickstart.client_app:app"
[tool.flwr.app.config]
num-server-rounds = {rounds}
total-params = 100
num-arrays = 2
fraction-train = 1.0
fraction-evaluate = 1.0
round-timeout = 60.0
[tool.flwr.federations]
default = "local-simulation"
[tool.flwr.federations.local-simulation]
options.num-supernodes = 3
"#
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pyproject.toml"), manifest).unwrap();
    dir
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The user's app binary (the quickstart behind `app_host`), run to its end.
fn app_binary(args: &[&str]) -> Outcome {
    let mut proc = Proc::spawn("app", TEST_APP, args);
    let status = proc.wait_exit(COMMAND_TIMEOUT);
    Outcome {
        code: status.code(),
        stdout: proc.stdout(),
        stderr: proc.stderr(),
    }
}

/// history.csv as a header and rows of cells (the quickstart's keys need no quoting).
fn csv(dir: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = read(&dir.join("history.csv"));
    assert!(!text.contains('"'), "no quoted cells expected: {text}");
    let mut lines = text
        .lines()
        .map(|l| l.split(',').map(str::to_owned).collect());
    let header: Vec<String> = lines.next().expect("a header");
    (header, lines.collect())
}

/// A CSV cell and a JSON number are the same value. serde_json's default parser may read
/// the last binary digit differently from Rust's exact one, so "same" is within 1e-12.
fn same_number(cell: &str, json: &Value) {
    let a: f64 = cell.parse().unwrap_or_else(|e| panic!("{cell:?}: {e}"));
    let b = json
        .as_f64()
        .unwrap_or_else(|| panic!("not a number: {json}"));
    assert!((a - b).abs() <= 1e-12 * b.abs(), "{cell} != {json}");
}

/// Checks the three files in `dir` against the `--format json` report of the same run.
fn assert_history_matches(dir: &Path, report: &Value, rounds: usize) {
    let history = json(&read(&dir.join("history.json")));
    assert_eq!(history["run_id"], report["run_id"]);
    assert_eq!(history["status"], report["status"]);
    assert_eq!(history["app"], "reportapp");
    assert_eq!(history["federation"], "local-simulation");
    assert_eq!(history["rounds"].as_array().map(Vec::len), Some(rounds));
    assert_eq!(history["rounds"], report["rounds"], "same rounds as stdout");

    let (header, rows) = csv(dir);
    assert_eq!(rows.len(), rounds, "one row per round");
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), header.len(), "row {row:?}");
        let r = &report["rounds"][i];
        assert_eq!(row[col("round")], r["round"].to_string());
        assert_eq!(row[col("train_sampled")], r["train"]["sampled"].to_string());
        assert_eq!(row[col("evaluate_lost")], r["evaluate"]["lost"].to_string());
        same_number(
            &row[col("train.train_loss")],
            &r["train_metrics"]["train_loss"],
        );
        same_number(
            &row[col("evaluate.eval_loss")],
            &r["evaluate_metrics"]["eval_loss"],
        );
    }

    assert_plot(
        &dir.join("metrics.svg"),
        &["train train_loss", "evaluate eval_loss"],
        rounds,
    );
}

/// The plot is an SVG document with, per metric, a legend entry and a line through one
/// point per round.
fn assert_plot(path: &Path, labels: &[&str], rounds: usize) {
    let text = read(path);
    let doc = roxmltree::Document::parse(&text).expect("metrics.svg is XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(str::trim)
        .collect();
    for label in labels {
        assert!(texts.contains(label), "no legend {label:?} in {texts:?}");
    }
    // Axes and ticks are black; each metric has a colour, used by its legend sample (two
    // points 20 pixels apart) and by its line, which has a point per round across the chart.
    let xs = |points: &str| -> Vec<f64> {
        points
            .split_whitespace()
            .filter_map(|p| p.split(',').next()?.parse().ok())
            .collect()
    };
    let coloured: Vec<(&str, Vec<f64>)> = doc
        .descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter_map(|n| Some((n.attribute("stroke")?, xs(n.attribute("points")?))))
        .filter(|(stroke, _)| *stroke != "#000000")
        .collect();
    let mut colours: Vec<&str> = coloured.iter().map(|(c, _)| *c).collect();
    colours.sort();
    colours.dedup();
    assert!(
        colours.len() >= labels.len(),
        "colours {colours:?} for {labels:?}"
    );
    for colour in colours {
        assert!(
            coloured
                .iter()
                .any(|(c, x)| *c == colour && x.len() == rounds && x[rounds - 1] - x[0] > 20.0),
            "no line of {rounds} points in {colour}: {coloured:?}"
        );
    }
}

#[test]
fn a_simulation_leaves_history_json_csv_and_a_plot_matching_its_report() {
    let app = app(3);
    let out = app.path().join("out");
    let o = flwr(&[
        "run",
        app.path().to_str().unwrap(),
        "--format",
        "json",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    // stdout is still exactly one JSON object, now with the paths.
    let report = json(&o.stdout);
    assert_eq!(report["status"], "finished:completed");
    assert_eq!(report["history"]["dir"], out.to_str().unwrap());
    let json_path = PathBuf::from(report["history"]["json"].as_str().unwrap());
    assert_eq!(json_path, out.join("history.json"));
    assert_eq!(
        report["history"]["plot"],
        out.join("metrics.svg").to_str().unwrap()
    );
    assert_history_matches(&out, &report, 3);
}

#[test]
fn by_default_each_run_gets_its_own_directory_under_the_app() {
    let app = app(1);
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let o = flwr(&["run", app.path().to_str().unwrap()]);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        let last = o.stdout.lines().last().unwrap_or_default();
        let files = last
            .strip_prefix("history: ")
            .unwrap_or_else(|| panic!("no history line last in {}", o.stdout));
        assert!(
            files.ends_with("/history.json, history.csv, metrics.svg"),
            "{last}"
        );
        let json_path = PathBuf::from(files.split(", ").next().unwrap());
        assert!(json_path.is_file(), "{}", json_path.display());
        dirs.push(json_path.parent().unwrap().to_path_buf());
    }
    assert_ne!(
        dirs[0], dirs[1],
        "a second run does not overwrite the first"
    );
    for dir in &dirs {
        assert_eq!(dir.parent(), Some(app.path().join("runs").as_path()));
        let name = dir.file_name().unwrap().to_str().unwrap();
        // 20261124T101500Z-run-1, or -run-1-2 for a second run in the same second.
        assert!(
            name.len() >= 22 && name.as_bytes()[8] == b'T' && name[15..].starts_with("Z-run-1"),
            "{name}"
        );
        let (_, rows) = csv(dir);
        assert_eq!(rows.len(), 1);
        assert!(dir.join("metrics.svg").is_file());
    }
}

#[test]
fn a_users_app_binary_writes_the_history_of_its_simulation() {
    let app = app(2);
    let out = app.path().join("app-out");
    let o = app_binary(&[
        "simulation",
        app.path().to_str().unwrap(),
        "--format",
        "json",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let report = json(&o.stdout);
    assert_history_matches(&out, &report, 2);
}

/// A one-line error naming `--output-dir`, exit code 2, and no run.
fn assert_refused(o: &Outcome, what: &str) {
    assert_eq!(o.code, Some(2), "{what}: {}", o.stderr);
    let err = o.stderr.trim_end();
    assert_eq!(err.lines().count(), 1, "{what}: one line: {err}");
    assert!(err.starts_with("error: "), "{what}: {err}");
    assert!(err.contains("--output-dir"), "{what}: {err}");
    assert!(o.stdout.is_empty(), "{what}: nothing ran: {}", o.stdout);
}

#[test]
fn an_output_dir_that_cannot_be_created_is_refused_before_the_run() {
    let app = app(1);
    let blocker = app.path().join("a-file");
    std::fs::write(&blocker, "in the way").unwrap();
    let dir = app.path().to_str().unwrap();
    for bad in [blocker.clone(), blocker.join("below")] {
        let bad = bad.to_str().unwrap();
        let o = flwr(&["run", dir, "--output-dir", bad]);
        assert_refused(&o, bad);
        assert!(o.stderr.contains(bad), "names the directory: {}", o.stderr);
        let o = app_binary(&["simulation", dir, "--output-dir", bad]);
        assert_refused(&o, bad);
    }
    // The default directory, blocked by a file named `runs`.
    std::fs::write(app.path().join("runs"), "in the way").unwrap();
    let o = flwr(&["run", dir]);
    assert_refused(&o, "runs");
    assert_eq!(read(&app.path().join("runs")), "in the way");
}

/// Digits on a SuperLink with two SuperNodes: a streamed run that is stopped after its
/// first round still leaves the rounds it had; a run that is only submitted leaves nothing.
#[test]
fn a_streamed_run_on_a_superlink_saves_what_it_has_when_it_ends() {
    let link = SuperLink::start();
    let nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("digits", &link.control);
    let dir = app.path().to_str().unwrap();
    let out = app.path().join("streamed");

    let mut run = flwr_spawn(&[
        "run",
        dir,
        "e2e",
        "--run-config",
        "num-server-rounds=1000000",
        "--stream",
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    let started = run.expect_log("started run ");
    let run_id: u64 = started
        .trim_start_matches("started run ")
        .split(' ')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {started:?}"));
    // Round 3 has started, so rounds 1 and 2 are in the report: the plot has lines.
    run.expect_log("round 3:");
    let stop = flwr(&["stop", &run_id.to_string(), dir, "e2e"]);
    assert_eq!(stop.code, Some(0), "{}", stop.stderr);
    let status = run.wait_exit(COMMAND_TIMEOUT);
    assert_eq!(status.code(), Some(1), "a stopped run: {}", run.stderr());
    assert!(
        run.stdout()
            .contains(&format!("history: {}", out.join("history.json").display())),
        "{}",
        run.stdout()
    );
    let history = json(&read(&out.join("history.json")));
    assert_eq!(history["run_id"], run_id);
    assert_eq!(history["status"], "finished:stopped");
    let rounds = history["rounds"].as_array().unwrap();
    assert!(!rounds.is_empty(), "{history}");
    assert!(
        rounds[0]["server_metrics"]["accuracy"].is_number(),
        "{history}"
    );
    let (_, rows) = csv(&out);
    assert_eq!(rows.len(), rounds.len());
    assert_plot(&out.join("metrics.svg"), &["server accuracy"], rounds.len());

    // Submitted only: no history, not even the default directory.
    let o = flwr(&["run", dir, "e2e", "--run-config", "num-server-rounds=1"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(!o.stdout.contains("history"), "{}", o.stdout);
    assert!(!app.path().join("runs").exists());
}
