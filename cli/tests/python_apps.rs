//! Flower's Python apps on Floret: the two examples in `examples/` (written against
//! Flower's API only) run unchanged under `flwr run` in a Python with `flwr==1.42.0`,
//! and a Python app that cannot run says why in one line.
//!
//! The first test to need it makes a virtual environment under the build's tmp directory
//! (`flwr==1.42.0`, numpy, scikit-learn from PyPI, pinned); later runs reuse it. Without
//! `python3 -m venv` or PyPI the tests fail and say so.
//!
//! Deployment: both examples also run on a real `flower-superlink` with two
//! `flower-supernode`s on 127.0.0.1 (one of them with TLS and node authentication), as
//! Flower FABs, and end with exactly the metrics of a local simulation with two nodes: each
//! node's update depends only on its partition (`--node-config partition-id=i
//! num-partitions=2` there, the same two partitions in the simulation) and the round, and
//! FedAvg's weighted sum of two replies is the same in either order.

// Tests may unwrap (a failure is the test failing).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const PINS: &[&str] = &["flwr==1.42.0", "numpy==2.4.6", "scikit-learn==1.9.1"];

/// The venv's python, made once per build directory. Tests of this binary share it; the
/// marker is written only after pip succeeded, so a half-made venv is made again.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flwr-1.42.0-venv");
        let python = venv.join("bin").join("python");
        let marker = venv.join(".floret-ready");
        if marker.is_file() {
            return python;
        }
        let _ = std::fs::remove_dir_all(&venv);
        let run = |cmd: &mut Command, what: &str| {
            let o = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                o.status.success(),
                "{what} failed (these tests need python3 with venv and PyPI):\n{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        };
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        );
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(PINS),
            "pip install flwr==1.42.0 numpy scikit-learn",
        );
        std::fs::write(&marker, PINS.join("\n")).unwrap();
        python
    })
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

fn flwr_run(app: &Path, python: &Path, extra: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flwr"))
        .arg("run")
        .arg(app)
        .args(extra)
        .arg("--python")
        .arg(python)
        .env("FLWR_HOME", home)
        .env("NO_COLOR", "1")
        .env("FLWR_TELEMETRY_ENABLED", "0")
        .env("FLWR_DISABLE_UPDATE_CHECK", "1")
        .output()
        .unwrap()
}

/// Runs `app` in a local simulation with `--format json` and returns the report.
fn run_json(app: &Path, extra: &[&str]) -> Value {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["--format", "json", "--output-dir"];
    let out_dir = out.path().to_str().unwrap().to_owned();
    args.push(&out_dir);
    args.extend_from_slice(extra);
    let o = flwr_run(app, python(), &args, home.path());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "flwr run {}: {stderr}", app.display());
    assert!(
        out.path().join("history.json").is_file() && out.path().join("metrics.svg").is_file(),
        "history files in --output-dir"
    );
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON object ({e}): {}",
            String::from_utf8_lossy(&o.stdout)
        )
    })
}

fn last_round_metric(report: &Value, phase: &str, key: &str) -> f64 {
    let rounds = report["rounds"].as_array().unwrap();
    let last = rounds.last().unwrap();
    last[format!("{phase}_metrics")][key]
        .as_f64()
        .unwrap_or_else(|| panic!("{phase} metric {key} in {last}"))
}

fn assert_user_error(o: &Output, parts: &[&str]) {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "exit 2 for bad input: {stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("an error line in: {stderr}"));
    for part in parts {
        assert!(line.contains(part), "{part:?} in {line:?}");
    }
}

/// Every node's update is seeded by its partition and round, so the result is the one
/// Flower gets for this app, to rounding (docs/BENCHMARKS.md, "Flower apps in Python").
#[test]
fn the_numpy_flower_app_runs_unchanged_with_its_run_config() {
    let report = run_json(
        &example("flower-numpy"),
        &["--run-config", "num-server-rounds=2"],
    );
    assert_eq!(report["status"], "finished:completed", "{report}");
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(
        rounds.len(),
        2,
        "the --run-config override reached the Python app"
    );
    for round in rounds {
        assert_eq!(round["train"]["replies"], 10, "{round}");
        assert_eq!(round["evaluate"]["replies"], 10, "{round}");
    }
    let mean_abs = last_round_metric(&report, "evaluate", "mean_abs");
    // Flower 1.42 + Ray's own run of this app, two rounds (docs/BENCHMARKS.md), to float32
    // rounding: FedAvg adds the float32 replies in the order they arrive, in both.
    assert!(
        (mean_abs - 0.035_638_257_861_137_39).abs() < 2e-7,
        "mean_abs {mean_abs}"
    );
}

#[test]
fn the_scikit_learn_flower_app_learns_the_digits() {
    let report = run_json(&example("flower-sklearn"), &[]);
    assert_eq!(report["status"], "finished:completed", "{report}");
    assert_eq!(report["rounds"].as_array().unwrap().len(), 5);
    // Flower 1.42 + Ray's own run of this app: 0.9638888888888888 and 0.27151682729494686.
    let accuracy = last_round_metric(&report, "evaluate", "accuracy");
    assert!(
        (accuracy - 0.963_888_888_888_888_8).abs() < 1e-9,
        "accuracy {accuracy}"
    );
    let loss = last_round_metric(&report, "evaluate", "test_loss");
    assert!(
        (loss - 0.271_516_827_294_946_86).abs() < 1e-9,
        "test_loss {loss}"
    );
}

/// An app with `patch` applied to one of its files, in a directory of its own.
fn numpy_app_with(file: &str, patch: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = example("flower-numpy");
    std::fs::copy(
        src.join("pyproject.toml"),
        dir.path().join("pyproject.toml"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("numpyapp")).unwrap();
    for entry in std::fs::read_dir(src.join("numpyapp")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "py") {
            let name = path.file_name().unwrap();
            let mut text = std::fs::read_to_string(&path).unwrap();
            if name == file {
                text = patch(text);
            }
            std::fs::write(dir.path().join("numpyapp").join(name), text).unwrap();
        }
    }
    dir
}

/// A raising handler, one returning no Message and one killing its worker each cost one
/// reply (an error reply, as in Flower), and the run goes on with the rest.
#[test]
fn a_failing_client_app_becomes_error_replies_and_the_workers_keep_serving() {
    let app = numpy_app_with("client_app.py", |text| {
        text.replace(
            "    partition_id = context.node_config[\"partition-id\"]\n",
            "    partition_id = context.node_config[\"partition-id\"]\n\
             \x20   if partition_id == 0:\n\
             \x20       raise ValueError(\"partition 0 has no data\")\n\
             \x20   if partition_id == 1:\n\
             \x20       return None\n\
             \x20   if partition_id == 2 and msg.content[\"config\"][\"server-round\"] == 1:\n\
             \x20       import os\n\
             \x20       os._exit(3)\n",
        )
    });
    let report = run_json(app.path(), &[]);
    assert_eq!(report["status"], "finished:completed", "{report}");
    let rounds = report["rounds"].as_array().unwrap();
    let train = |r: usize, k: &str| rounds[r]["train"][k].as_u64().unwrap();
    assert_eq!((train(0, "replies"), train(0, "failures")), (7, 3));
    // The killed worker was replaced: partition 2 answers again in round 2.
    assert_eq!((train(1, "replies"), train(1, "failures")), (8, 2));
    assert_eq!(rounds[1]["evaluate"]["replies"], 10);
}

/// Two SuperNodes of `link` (partitions 0 and 1 of 2) running ClientApps with `python`,
/// once both are ready.
fn two_supernodes(link: &support::SuperLink, python: &str) -> Vec<support::Proc> {
    let nodes: Vec<support::Proc> = (0..2)
        .map(|i| support::supernode(&link.fleet, i, 2, &["--python", python]))
        .collect();
    for node in &nodes {
        node.expect_log(support::NODE_READY);
    }
    nodes
}

/// A fresh venv's Python under `dir`: a real interpreter with no `flwr` in it.
fn python_without_flwr(dir: &Path) -> PathBuf {
    let o = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    dir.join("bin/python")
}

#[test]
fn a_python_without_flwr_is_refused_in_one_line() {
    let venv = tempfile::tempdir().unwrap();
    let bare = python_without_flwr(venv.path());
    let home = tempfile::tempdir().unwrap();
    let o = flwr_run(&example("flower-numpy"), &bare, &[], home.path());
    assert_user_error(
        &o,
        &["cannot run Flower apps", "pip install flwr", "--python"],
    );
    let o = flwr_run(
        &example("flower-numpy"),
        Path::new("/nonexistent/python3"),
        &[],
        home.path(),
    );
    assert_user_error(&o, &["no Python at /nonexistent/python3", "--python"]);
}

#[test]
fn components_that_do_not_load_are_refused_at_start_in_one_line() {
    let home = tempfile::tempdir().unwrap();
    let missing = numpy_app_with("client_app.py", |t| t);
    let manifest = missing.path().join("pyproject.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace("numpyapp.client_app:app", "numpyapp.clientapp:app"),
    )
    .unwrap();
    let o = flwr_run(missing.path(), python(), &[], home.path());
    assert_user_error(
        &o,
        &[
            "no module 'numpyapp.clientapp'",
            "[tool.flwr.app.components]",
        ],
    );

    let raising = numpy_app_with("server_app.py", |t| t + "\nraise ValueError('boom')\n");
    let o = flwr_run(raising.path(), python(), &[], home.path());
    assert_user_error(&o, &["raised at import: ValueError: boom"]);

    let not_an_app = numpy_app_with("client_app.py", |t| t + "\napp = 42\n");
    let o = flwr_run(not_an_app.path(), python(), &[], home.path());
    assert_user_error(&o, &["is of type int, not a Flower ClientApp"]);
}

/// The bridge's own unit tests: raw <-> Flower arrays for every dtype Flower takes, the
/// direct RecordDict encoding and the .npy fast path equal to Flower's and numpy's.
#[test]
fn the_bridges_python_unit_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../python");
    let o = Command::new(python())
        .args(["-m", "unittest", "discover", "-s", "tests"])
        .current_dir(&root)
        .env("PYTHONPATH", &root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Flower's older styles, which Flower 1.42 still runs: a `client_fn` returning a
/// `NumPyClient`, and a `server_fn` returning a legacy strategy and `ServerConfig`.
#[test]
fn flowers_legacy_client_fn_and_server_fn_apps_run_too() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("legacyapp");
    std::fs::create_dir(&pkg).unwrap();
    std::fs::write(pkg.join("__init__.py"), "").unwrap();
    std::fs::write(
        dir.path().join("pyproject.toml"),
        r#"
[project]
name = "legacyapp"
version = "1.0.0"
[tool.flwr.app]
publisher = "t"
[tool.flwr.app.components]
serverapp = "legacyapp.server_app:app"
clientapp = "legacyapp.client_app:app"
[tool.flwr.app.config]
num-server-rounds = 2
[tool.flwr.federations]
default = "local-simulation"
[tool.flwr.federations.local-simulation]
options.num-supernodes = 4
"#,
    )
    .unwrap();
    std::fs::write(
        pkg.join("client_app.py"),
        r#"
import numpy as np
from flwr.client import ClientApp, NumPyClient
from flwr.common import Context

class Adder(NumPyClient):
    def fit(self, parameters, config):
        return [p + 1.0 for p in parameters], 1, {}

    def evaluate(self, parameters, config):
        return float(np.mean(parameters[0])), 1, {}

def client_fn(context: Context):
    return Adder().to_client()

app = ClientApp(client_fn=client_fn)
"#,
    )
    .unwrap();
    std::fs::write(
        pkg.join("server_app.py"),
        r#"
import numpy as np
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.server.strategy import FedAvg

def server_fn(context: Context):
    strategy = FedAvg(
        initial_parameters=ndarrays_to_parameters([np.zeros(5, dtype=np.float32)]),
        min_available_clients=4, min_fit_clients=4, min_evaluate_clients=4,
    )
    rounds = context.run_config["num-server-rounds"]
    return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

app = ServerApp(server_fn=server_fn)
"#,
    )
    .unwrap();
    let report = run_json(dir.path(), &[]);
    assert_eq!(report["status"], "finished:completed", "{report}");
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(
        rounds.len(),
        2,
        "one round per server round, not per message: {report}"
    );
    assert_eq!(rounds[1]["train"]["replies"], 4);
    // Every client adds 1 per round to a zero model: the mean after two rounds is 2.
    assert_eq!(last_round_metric(&report, "evaluate", "loss"), 2.0);
}

/// An app directory with `example`'s files and, besides its own federations, `e2e` (the
/// SuperLink at `control`, with TLS when `ca` is given) and `two-nodes` (a local simulation
/// of two nodes: the deployment's two partitions).
fn deployable(example_name: &str, control: &str, ca: Option<&Path>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&example(example_name), dir.path());
    let manifest = dir.path().join("pyproject.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    // A TOML literal string: the path is taken as written.
    let security = match ca {
        Some(ca) => format!("root-certificates = '{}'", ca.display()),
        None => "insecure = true".to_owned(),
    };
    text.push_str(&format!(
        "\n[tool.flwr.federations.e2e]\naddress = \"{control}\"\n{security}\n\
         \n[tool.flwr.federations.two-nodes]\noptions.num-supernodes = 2\n"
    ));
    std::fs::write(&manifest, text).unwrap();
    dir
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "__pycache__" {
                std::fs::create_dir(&target).unwrap();
                copy_tree(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `flwr run APP e2e --stream --format json ...` to the end: its exit code, report, stderr.
fn deploy(app: &Path, extra: &[&str]) -> (Option<i32>, Value, String) {
    let home = tempfile::tempdir().unwrap();
    let mut args = vec![
        "run",
        app.to_str().unwrap(),
        "e2e",
        "--stream",
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let mut proc = support::Proc::spawn_with_env(
        "flwr run",
        support::FLWR,
        &args,
        None,
        &[("FLWR_HOME", home.path())],
    );
    let status = proc.wait_exit(support::COMMAND_TIMEOUT);
    let report = serde_json::from_str(&proc.stdout()).unwrap_or(Value::Null);
    (status.code(), report, proc.stderr())
}

/// Both reports' rounds carry the same metrics, bit for bit, and every phase heard from
/// both nodes.
fn assert_same_rounds(deployed: &Value, simulated: &Value) {
    let (d, s) = (
        deployed["rounds"].as_array().unwrap(),
        simulated["rounds"].as_array().unwrap(),
    );
    assert_eq!(d.len(), s.len(), "{deployed}\n{simulated}");
    for (d, s) in d.iter().zip(s) {
        for phase in ["train", "evaluate"] {
            assert_eq!(d[phase]["replies"], 2, "{d}");
            let key = format!("{phase}_metrics");
            assert!(!d[&key].as_object().unwrap().is_empty(), "{d}");
            assert_eq!(d[&key], s[&key], "round {}", d["round"]);
        }
    }
}

/// `--python` for the daemons: the test venv's.
fn python_flag() -> String {
    python().to_str().unwrap().to_owned()
}

/// The NumPy app as a Flower FAB on a SuperLink and two SuperNodes (plain gRPC): the
/// same metrics as its simulation of two nodes, every round.
#[test]
fn the_numpy_flower_app_deployed_on_two_supernodes_ends_as_its_simulation() {
    let py = python_flag();
    let link = support::SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &["--python", &py]);
    let nodes = two_supernodes(&link, &py);
    let app = deployable("flower-numpy", &link.control, None);
    let (code, deployed, stderr) = deploy(app.path(), &["--run-config", "num-server-rounds=2"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(deployed["status"], "finished:completed", "{deployed}");
    let simulated = run_json(
        app.path(),
        &["two-nodes", "--run-config", "num-server-rounds=2"],
    );
    assert_same_rounds(&deployed, &simulated);
    // The SuperLink unpacked the FAB under its hash and hosted the Python app itself.
    link.proc.expect_log("format=\"flower\"");
    link.proc.expect_log("started ServerApp process");
    for node in &nodes {
        node.expect_log("started ClientApp process");
    }
}

/// A SuperLink killed during a Python app's run resumes it from its SQLite state after a
/// restart: the FAB kept in the state, unpacked again, its ServerApp started again (from
/// its first round: a Python strategy keeps no checkpoint through the bridge) and run to
/// the end with the same SuperNodes.
#[test]
fn a_python_apps_run_resumes_after_a_superlink_crash() {
    let py = python_flag();
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let flags = ["--python", py.as_str(), "--state-dir", state_dir];
    let link = support::SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &flags);
    let _nodes = two_supernodes(&link, &py);
    let app = deployable("flower-numpy", &link.control, None);
    let app_dir = app.path().to_str().unwrap();
    let o = support::flwr(&[
        "run",
        app_dir,
        "e2e",
        "--run-config",
        "num-server-rounds=20",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let run_id = support::started_run_id(&o.stdout);
    link.proc.expect_log("started ServerApp process");
    let link = link.crash_and_restart(&flags, &run_id.to_string());
    link.proc.expect_log("started ServerApp process");
    support::wait_for_status(app_dir, run_id, "finished:completed");
}

/// On a `--simulation` SuperLink the Flower FAB's ServerApp process also runs the run's
/// virtual SuperNodes, a pool of the app's Python ClientApp: the metrics of a local
/// simulation of as many nodes.
#[test]
fn the_numpy_flower_app_on_a_simulation_superlink_ends_as_its_local_simulation() {
    let py = python_flag();
    let link = support::SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--simulation", "--python", &py],
    );
    let app = deployable("flower-numpy", &link.control, None);
    let manifest = app.path().join("pyproject.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    // Both federations get four nodes: the remote one as its options, sent with the run.
    let text = text.replace(
        "insecure = true\n",
        "insecure = true\noptions.num-supernodes = 4\n",
    );
    std::fs::write(
        &manifest,
        text.replace("num-supernodes = 2", "num-supernodes = 4"),
    )
    .unwrap();
    let (code, remote, stderr) = deploy(app.path(), &["--run-config", "num-server-rounds=2"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(remote["status"], "finished:completed", "{remote}");
    let local = run_json(
        app.path(),
        &["two-nodes", "--run-config", "num-server-rounds=2"],
    );
    let (r, l) = (
        remote["rounds"].as_array().unwrap(),
        local["rounds"].as_array().unwrap(),
    );
    assert_eq!(r.len(), 2);
    for (r, l) in r.iter().zip(l) {
        assert_eq!(r["train"]["replies"], 4, "{r}");
        assert_eq!(r["evaluate_metrics"], l["evaluate_metrics"], "{r}\n{l}");
    }
}

/// Part 4 of the tutorial with the scikit-learn app: TLS and SuperNode authentication
/// (keys and certificates from `flwr keygen`), the app as a Flower FAB. It learns the
/// digits as in its simulation of two nodes.
#[test]
fn the_scikit_learn_flower_app_deployed_with_tls_and_node_auth_ends_as_its_simulation() {
    let pki = tempfile::tempdir().unwrap();
    let o = support::flwr(&[
        "keygen",
        "--clients",
        "2",
        "--out",
        pki.path().to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(0), "flwr keygen: {}", o.stderr);
    support::use_tls(pki.path());
    let key = |name: &str| {
        pki.path()
            .join("keys")
            .join(name)
            .to_str()
            .unwrap()
            .to_owned()
    };
    let py = python_flag();
    let link = support::SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--python",
            &py,
            "--auth-list-public-keys",
            &key("client_public_keys.csv"),
            "--auth-superlink-private-key",
            &key("server_credentials"),
            "--auth-superlink-public-key",
            &key("server_credentials.pub"),
        ],
    );
    let nodes: Vec<support::Proc> = (1..=2)
        .map(|i| {
            let (private, public) = (
                key(&format!("client_credentials_{i}")),
                key(&format!("client_credentials_{i}.pub")),
            );
            let args = [
                "--python",
                &py,
                "--auth-supernode-private-key",
                &private,
                "--auth-supernode-public-key",
                &public,
            ];
            support::supernode(&link.fleet, i - 1, 2, &args)
        })
        .collect();
    for node in &nodes {
        node.expect_log(support::NODE_READY);
    }
    let ca = pki.path().join("certificates").join("ca.crt");
    let app = deployable("flower-sklearn", &link.control, Some(&ca));
    let (code, deployed, stderr) = deploy(app.path(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(deployed["status"], "finished:completed", "{deployed}");
    let simulated = run_json(app.path(), &["two-nodes"]);
    assert_same_rounds(&deployed, &simulated);
    let accuracy = last_round_metric(&deployed, "evaluate", "accuracy");
    assert!(
        accuracy > 0.9,
        "the two nodes learned the digits: {accuracy}"
    );
}

/// A daemon whose Python cannot run the app says so in the run's log, with the fix: the
/// SuperLink's fails the run at its start; a SuperNode's turns each message into an error
/// reply whose reason the run's log shows once.
#[test]
fn a_daemon_whose_python_cannot_run_the_app_says_so_in_the_runs_log() {
    let venv = tempfile::tempdir().unwrap();
    let bare = python_without_flwr(venv.path());
    let bare = bare.to_str().unwrap();

    let link = support::SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--python", "/nonexistent/python3"],
    );
    let app = deployable("flower-numpy", &link.control, None);
    let (code, report, stderr) = deploy(app.path(), &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(report["status"], "finished:failed", "{report}");
    let reason = report["reason"].as_str().unwrap_or_default().to_owned() + &stderr;
    assert!(
        reason.contains("no Python at /nonexistent/python3"),
        "{reason}"
    );
    assert!(reason.contains("--python"), "the fix: {reason}");
    drop(link);

    let py = python_flag();
    let link = support::SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &["--python", &py]);
    let _nodes = two_supernodes(&link, bare);
    let app = deployable("flower-numpy", &link.control, None);
    let log = support::flwr(&[
        "run",
        app.path().to_str().unwrap(),
        "e2e",
        "--stream",
        "--run-config",
        "num-server-rounds=1",
    ]);
    let line = log
        .stdout
        .lines()
        .chain(log.stderr.lines())
        .find(|l| l.contains("replied with an error"))
        .unwrap_or_else(|| {
            panic!(
                "the reason in the run's log: {}\n{}",
                log.stdout, log.stderr
            )
        })
        .to_owned();
    assert!(
        line.contains("cannot run Flower apps (No module named 'flwr')"),
        "{line}"
    );
    assert!(line.contains("pip install flwr"), "the fix: {line}");
    let told = log.stdout.matches("replied with an error").count()
        + log.stderr.matches("replied with an error").count();
    assert_eq!(told, 1, "once per reason: {}\n{}", log.stdout, log.stderr);
}

/// `flwr build` on a Python app writes Flower's FAB under Flower's file name, and
/// Flower's own installer takes it (CONTENT verified); a FAB Flower's own builder wrote of
/// the same directory reads as a Flower FAB here, with the same files.
#[test]
fn flwr_build_writes_a_fab_that_flower_installs_and_flowers_fab_reads_here() {
    let app = tempfile::tempdir().unwrap();
    copy_tree(&example("flower-numpy"), app.path());
    // Not part of the app: a test module, Python's cache, a virtual environment.
    std::fs::write(app.path().join("numpyapp/test_task.py"), "x = 1\n").unwrap();
    std::fs::create_dir_all(app.path().join(".venv/lib")).unwrap();
    std::fs::write(app.path().join(".venv/lib/site.py"), "x = 1\n").unwrap();
    // Nor what its .gitignore ignores.
    std::fs::write(app.path().join(".gitignore"), "numpyapp/local_*.py\n").unwrap();
    std::fs::write(app.path().join("numpyapp/local_notes.py"), "x = 1\n").unwrap();
    // Nor what `fab-exclude` names.
    std::fs::write(app.path().join("numpyapp/scratch.py"), "x = 1\n").unwrap();
    let manifest = app.path().join("pyproject.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "publisher = \"floret\"\n",
        "publisher = \"floret\"\nfab-exclude = [\"numpyapp/scratch.py\"]\n",
    );
    assert!(text.contains("fab-exclude"));
    std::fs::write(&manifest, text).unwrap();
    let home = tempfile::tempdir().unwrap();
    let o = Command::new(support::FLWR)
        .arg("build")
        .arg(app.path())
        .env("FLWR_HOME", home.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let fab = PathBuf::from(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("fab: "))
            .unwrap(),
    );
    let hash = stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256: "))
        .unwrap();
    assert_eq!(
        fab.file_name().unwrap().to_str().unwrap(),
        format!("floret.numpyapp.1-0-0.{}.fab", &hash[..8])
    );
    let bytes = std::fs::read(&fab).unwrap();
    assert_eq!(floret_core::fab_hash(&bytes), hash);

    let installed = tempfile::tempdir().unwrap();
    let o = Command::new(python())
        .args([
            "-c",
            "import sys; from pathlib import Path; from flwr.cli.install import install_from_fab; \
             print(install_from_fab(Path(sys.argv[1]), Path(sys.argv[2]), True))",
        ])
        .arg(&fab)
        .arg(installed.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "Flower's installer: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let dir = PathBuf::from(
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    );
    assert!(
        dir.join("numpyapp/client_app.py").is_file(),
        "{}",
        dir.display()
    );
    assert!(
        !dir.join("numpyapp/test_task.py").exists(),
        "tests are left out"
    );
    assert!(
        !dir.join(".venv").exists(),
        "virtual environments are left out"
    );

    // Flower's builder refuses `fab-exclude` beside a `.gitignore` (its publish rules keep
    // the `.gitignore` as a candidate, then its FAB rules drop it: "conflicting patterns"),
    // so it builds the directory without them: the files left are the same.
    std::fs::remove_file(app.path().join(".gitignore")).unwrap();
    std::fs::remove_file(app.path().join("numpyapp/local_notes.py")).unwrap();
    let flowers = app.path().join("flowers.fab");
    let o = Command::new(python())
        .args([
            "-c",
            "import sys; from pathlib import Path; from flwr.cli.build import build_fab_from_disk; \
             Path(sys.argv[2]).write_bytes(build_fab_from_disk(Path(sys.argv[1])))",
        ])
        .arg(app.path())
        .arg(&flowers)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "Flower's builder: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let packed = bytes::Bytes::from(std::fs::read(&flowers).unwrap());
    let hash = floret_core::fab_hash(&packed);
    let floret_core::AnyFab::Flower(read) =
        floret_core::AnyFab::unpack_verified(packed, &hash).unwrap()
    else {
        panic!("Flower's FAB is told to be Flower's");
    };
    assert_eq!(read.manifest.name, "numpyapp");
    assert_eq!(read.manifest.clientapp, "numpyapp.client_app:app");
    let ours = floret_core::fab::flower::unpack(&bytes).unwrap();
    let paths = |f: &floret_core::fab::flower::FlowerFab| {
        let mut p: Vec<String> = f.files.iter().map(|f| f.path.clone()).collect();
        p.sort();
        p
    };
    assert_eq!(
        paths(&read),
        paths(&ours),
        "the same files as Flower's builder takes"
    );
}
