//! A user's app in deployment: an app made by `flwr new` runs unchanged against a
//! SuperLink and two SuperNodes, real processes on 127.0.0.1, in both isolation modes.
//!
//! With `--isolation subprocess` the daemons start the app's binary from its FAB; with
//! `--isolation process` the test starts that binary's `serverapp` and `clientapp` modes
//! itself, as an operator would. The app is made and built once, in a fixed directory
//! under cargo's test tmpdir, into this workspace's target directory (as in new_app.rs);
//! the tests take turns, because each points the app's `test-link` federation at its own
//! SuperLink. Every process is stopped when its handle drops, also when a test fails: the
//! daemons with SIGTERM, so that the app processes they started end with them.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use support::*;

const APP: &str = "deploy-app";
const FEDERATION: &str = "test-link";
/// Two rounds in which both SuperNodes train and evaluate.
const RUN_CONFIG: &str = "num-server-rounds=2 fraction-train=1.0 fraction-evaluate=1.0";
/// How long a submitted run may take to finish in process isolation.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

/// `flwr` run in `dir` with cargo pointed at the workspace's target directory, offline;
/// killed if it takes longer than `COMMAND_TIMEOUT`.
fn flwr_in(dir: &Path, args: &[&str]) -> Outcome {
    let mut child = Command::new(FLWR)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env("CARGO_NET_OFFLINE", "true")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flwr");
    let read = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "flwr {} did not exit within {COMMAND_TIMEOUT:?}; stderr:\n{}",
                args.join(" "),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Outcome {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// The app as `flwr new` made it, built once: its directory and its pristine manifest.
struct App {
    dir: PathBuf,
    manifest: String,
}

impl App {
    fn path(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    /// Adds the federation `test-link` pointing at `control` to the app's pyproject.toml;
    /// nothing else of the app changes.
    fn point_at(&self, control: &str) {
        self.point_at_with(control, "");
    }

    /// `point_at` with `extra` lines in the federation's table.
    fn point_at_with(&self, control: &str, extra: &str) {
        let manifest = format!(
            "{}\n[tool.flwr.federations.{FEDERATION}]\naddress = \"{control}\"\ninsecure = true\n{extra}",
            self.manifest
        );
        std::fs::write(self.dir.join("pyproject.toml"), manifest).unwrap();
    }

    /// The app's binary, as cargo built it.
    fn binary(&self) -> String {
        target_dir()
            .join("debug")
            .join(APP)
            .to_str()
            .unwrap()
            .to_owned()
    }
}

/// Makes the app with `flwr new` and builds it, once per test run.
fn app() -> &'static App {
    static APP_ONCE: OnceLock<App> = OnceLock::new();
    APP_ONCE.get_or_init(|| {
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("user_app_deployment");
        let _ = std::fs::remove_dir_all(&parent);
        std::fs::create_dir_all(&parent).unwrap();
        let o = flwr_in(&parent, &["new", APP, "--template", "minimal"]);
        assert_eq!(o.code, Some(0), "flwr new: {}", o.stderr);
        let dir = parent.join(APP);
        let manifest = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
        for key in ["num-server-rounds", "fraction-train", "fraction-evaluate"] {
            assert!(manifest.contains(key), "the template has {key}: {manifest}");
        }
        let o = flwr_in(&dir, &["build", ".", "--profile", "dev"]);
        assert_eq!(o.code, Some(0), "flwr build: {}", o.stderr);
        App { dir, manifest }
    })
}

/// One test at a time: both rewrite the app's federation and run its binary.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn cache_flag(dir: &tempfile::TempDir) -> String {
    dir.path().to_str().unwrap().to_owned()
}

/// A daemon stopped with SIGTERM when dropped, also when a test fails, so that it stops
/// the app processes it started (SIGKILL, as `Proc` sends, would leave them running).
struct Daemon(Proc);

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.0.pid();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A registered SuperNode of a two-node federation with its own FAB cache.
fn node(fleet: &str, partition: u32, cache: &tempfile::TempDir, extra: &[&str]) -> Daemon {
    let cache = cache_flag(cache);
    let mut args = vec!["--fab-cache-dir", cache.as_str()];
    args.extend_from_slice(extra);
    let node = supernode(fleet, partition, 2, &args);
    node.expect_log(NODE_READY);
    Daemon(node)
}

/// The run id in a `started run 42` line of `text`.
fn started_run_id(text: &str) -> u64 {
    text.lines()
        .find_map(|l| l.split("started run ").nth(1))
        .and_then(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no `started run ID` in {text:?}"))
}

/// The status `flwr ls --run-id` reports for a run.
fn status_of(app: &App, run_id: u64) -> String {
    let id = run_id.to_string();
    let o = flwr(&[
        "ls",
        app.path(),
        FEDERATION,
        "--run-id",
        &id,
        "--format",
        "json",
    ]);
    assert_eq!(o.code, Some(0), "flwr ls: {}", o.stderr);
    let report: serde_json::Value =
        serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", o.stdout));
    report["runs"][0]["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status: {report}"))
        .to_owned()
}

/// Checks that `flwr ls` lists the run as this app's and finished:completed.
fn listed_completed(app: &App, run_id: u64) {
    let ls = flwr(&["ls", app.path(), FEDERATION]);
    assert_eq!(ls.code, Some(0), "flwr ls: {}", ls.stderr);
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with(&run_id.to_string()))
        .unwrap_or_else(|| panic!("run {run_id} not listed: {}", ls.stdout));
    assert!(
        row.contains(APP) && row.contains("finished:completed"),
        "{row}"
    );
}

/// Checks a run's log: two rounds, each trained and evaluated by both SuperNodes.
fn both_nodes_served_two_rounds(log: &str) {
    for round in [1, 2] {
        for phase in ["train", "evaluate"] {
            let line = format!("round {round}: 2/2 {phase} replies, 0 failed");
            assert!(log.contains(&line), "{line:?} not in the run's log:\n{log}");
        }
    }
    assert!(log.contains("FedAvg finished 2 rounds"), "{log}");
}

#[test]
fn a_new_app_runs_unchanged_with_subprocess_isolation() {
    let _serial = serial();
    let app = app();
    let caches: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let link_cache = cache_flag(&caches[0]);
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--fab-cache-dir", &link_cache],
    );
    app.point_at(&link.control);
    let fleet = link.fleet.clone();
    let link = Daemon(link.proc);
    let nodes = [
        node(&fleet, 0, &caches[1], &[]),
        node(&fleet, 1, &caches[2], &[]),
    ];

    let o = flwr_in(
        &app.dir,
        &[
            "run",
            app.path(),
            FEDERATION,
            "--stream",
            "--profile",
            "dev",
            "--run-config",
            RUN_CONFIG,
        ],
    );
    assert_eq!(o.code, Some(0), "flwr run: {}\n{}", o.stderr, o.stdout);
    assert!(
        o.stdout.contains("finished:completed"),
        "stdout: {}\nstderr: {}",
        o.stdout,
        o.stderr
    );
    let run_id = started_run_id(&o.stderr);
    both_nodes_served_two_rounds(&o.stderr);
    listed_completed(app, run_id);

    // The daemons ran the app's own binary from its FAB, on both SuperNodes.
    let mut app_pids = logged_pids(&link.0, "started ServerApp process");
    assert_eq!(app_pids.len(), 1, "one ServerApp process");
    for node in &nodes {
        let started = logged_pids(&node.0, "started ClientApp process");
        assert!(
            !started.is_empty(),
            "{} ran no ClientApp process",
            node.0.name
        );
        app_pids.extend(started);
    }
    // Stopped with SIGTERM, the daemons stop the app processes they started.
    drop(nodes);
    drop(link);
    let deadline = Instant::now() + READY_TIMEOUT;
    while app_pids.iter().any(|&pid| process_alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "app processes left: {app_pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_new_app_runs_unchanged_with_process_isolation() {
    let _serial = serial();
    let app = app();
    let caches: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--isolation",
            "process",
            "--serverappio-api-address",
            "127.0.0.1:0",
        ],
    );
    let process = [
        "--isolation",
        "process",
        "--clientappio-api-address",
        "127.0.0.1:0",
    ];
    let nodes = [
        node(&link.fleet, 0, &caches[0], &process),
        node(&link.fleet, 1, &caches[1], &process),
    ];
    app.point_at(&link.control);

    let o = flwr_in(
        &app.dir,
        &[
            "run",
            app.path(),
            FEDERATION,
            "--profile",
            "dev",
            "--run-config",
            RUN_CONFIG,
        ],
    );
    assert_eq!(o.code, Some(0), "flwr run: {}\n{}", o.stderr, o.stdout);
    let run_id = started_run_id(&o.stdout);

    // The operator's part: the app's binary in its serverapp and clientapp modes.
    let binary = app.binary();
    let serverappio = link.serverappio();
    let mut server = Proc::spawn(
        "serverapp",
        &binary,
        &["serverapp", "--serverappio-api-address", &serverappio],
    );
    let clients: Vec<Proc> = nodes
        .iter()
        .map(|node| {
            let address = clientappio(&node.0);
            Proc::spawn(
                &format!("clientapp of {}", node.0.name),
                &binary,
                &["clientapp", "--clientappio-api-address", &address],
            )
        })
        .collect();

    let deadline = Instant::now() + RUN_DEADLINE;
    loop {
        let status = status_of(app, run_id);
        if status.starts_with("finished") {
            assert_eq!(status, "finished:completed", "run {run_id}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} is {status} after {RUN_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    listed_completed(app, run_id);
    let id = run_id.to_string();
    let log = flwr(&["log", &id, app.path(), FEDERATION, "--show"]);
    assert_eq!(log.code, Some(0), "flwr log: {}", log.stderr);
    both_nodes_served_two_rounds(&format!("{}\n{}", log.stdout, log.stderr));

    let status = server.wait_exit(COMMAND_TIMEOUT);
    assert!(status.success(), "serverapp: {}", server.stderr());
    link.proc.expect_log("a ServerApp process claimed the run");
    for node in &nodes {
        node.0.expect_log("a ClientApp process claimed the run");
        assert!(logged_pids(&node.0, "started ClientApp process").is_empty());
    }
    assert!(logged_pids(&link.proc, "started ServerApp process").is_empty());
    drop(clients);
}

/// The tutorial's Part 2 with a user's app: a federation with `address` and
/// `options.num-supernodes` runs as a simulation on a `--simulation` SuperLink, which
/// starts the app's own binary from its FAB; that process runs the run's virtual fleet of
/// the app's ClientApp, and the run is listed and logged like any other.
#[test]
fn a_new_app_runs_as_a_simulation_on_a_simulation_superlink() {
    let _serial = serial();
    let app = app();
    let cache = tempfile::tempdir().unwrap();
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--simulation", "--fab-cache-dir", &cache_flag(&cache)],
    );
    app.point_at_with(&link.control, "options.num-supernodes = 6\n");
    let link = Daemon(link.proc);

    let o = flwr_in(
        &app.dir,
        &[
            "run",
            app.path(),
            FEDERATION,
            "--stream",
            "--profile",
            "dev",
            "--run-config",
            RUN_CONFIG,
        ],
    );
    assert_eq!(o.code, Some(0), "flwr run: {}\n{}", o.stderr, o.stdout);
    assert!(o.stdout.contains("finished:completed"), "{}", o.stdout);
    let run_id = started_run_id(&o.stderr);
    for line in [
        "simulation: 6 virtual SuperNodes",
        "round 2: 6/6 train replies, 0 failed",
        "round 2: 6/6 evaluate replies, 0 failed",
    ] {
        assert!(
            o.stderr.contains(line),
            "{line:?} not in the run's log:\n{}",
            o.stderr
        );
    }
    listed_completed(app, run_id);
    assert_eq!(logged_pids(&link.0, "started ServerApp process").len(), 1);
}

/// A user's app simulated on a `--simulation` SuperLink survives the SuperLink's crash:
/// the restarted SuperLink starts the app's binary again with the run's options from its
/// database, the new process's fleet goes on from the last checkpointed round, and the
/// process the crashed SuperLink had started ends by itself instead of training on.
#[test]
fn a_new_apps_simulation_resumes_after_a_superlink_crash() {
    let _serial = serial();
    let app = app();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let cache = dir.path().join("fabs");
    let args = [
        "--simulation",
        "--database",
        db.to_str().unwrap(),
        "--fab-cache-dir",
        cache.to_str().unwrap(),
    ];
    let fleet = format!("127.0.0.1:{}", free_port());
    let control = format!("127.0.0.1:{}", free_port());
    let link = SuperLink::start_with(&fleet, &control, &args);
    app.point_at_with(&link.control, "options.num-supernodes = 3\n");
    let o = flwr_in(
        &app.dir,
        &[
            "run",
            app.path(),
            FEDERATION,
            "--profile",
            "dev",
            "--run-config",
            "num-server-rounds=1000000 fraction-train=1.0 fraction-evaluate=1.0",
        ],
    );
    assert_eq!(o.code, Some(0), "flwr run: {}\n{}", o.stderr, o.stdout);
    let run_id = started_run_id(&format!("{}\n{}", o.stdout, o.stderr));
    let id = run_id.to_string();
    let mut follower = flwr_spawn(&["log", &id, app.path(), FEDERATION, "--stream"]);
    let round = "round 3: 3/3 train replies";
    assert!(
        follower.wait_stdout(round, COMMAND_TIMEOUT).is_some(),
        "no {round:?}: {}",
        follower.stdout()
    );
    follower.kill();
    let orphans = logged_pids(&link.proc, "started ServerApp process");
    assert_eq!(orphans.len(), 1, "one ServerApp process");

    let restarted = link.crash_and_restart(&args, &id);
    let restarted = Daemon(restarted.proc);
    let follower = flwr_spawn(&["log", &id, app.path(), FEDERATION, "--stream"]);
    resumes_and_goes_on(&follower, 3);
    assert_eq!(status_of(app, run_id), "running");
    // The crashed SuperLink's app process noticed and ended: its next call found the
    // SuperLink gone after the client's 30 s connect patience, and its end report too.
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    while process_alive(orphans[0]) {
        assert!(
            Instant::now() < deadline,
            "the crashed SuperLink's ServerApp process {} runs on",
            orphans[0]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop = flwr_in(&app.dir, &["stop", &id, app.path(), FEDERATION]);
    assert_eq!(stop.code, Some(0), "{}", stop.stderr);
    drop(restarted);
}
