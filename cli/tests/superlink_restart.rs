//! A SuperLink that dies is not the end of a run (TARGETS.md R1): `flower-superlink` is
//! killed with SIGKILL in the middle of a round and started again on the same database;
//! the run resumes from its last checkpoint, the SuperNodes (the same processes) reconnect
//! by themselves, and the final model is bit for bit the one an uninterrupted run with the
//! same seed produces. Real processes on 127.0.0.1, over gRPC and over QUIC.
//!
//! Two SuperNodes, on purpose: the model is a weighted sum of the replies folded in arrival
//! order, and with two replies the float sum is the same in either order, so the models
//! can be compared exactly even though replies may arrive in another order after resuming.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::path::Path;
use support::*;

/// Enough rounds to kill the SuperLink in the middle; training long enough per round that
/// the kill lands inside one.
const CONFIG: &str = "num-server-rounds=5 local-epochs=40 seed=7";

/// The `final model sha256 <hex>` FedAvg logs at the end of a run.
fn final_model(log: &str) -> String {
    log.lines()
        .find_map(|l| l.split("final model sha256 ").nth(1))
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|| panic!("no final model hash in the run's log:\n{log}"))
}

fn started_run_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("started run "))
        .map(|id| id.trim().to_owned())
        .unwrap_or_else(|| panic!("no `started run ID` in {stdout:?}"))
}

fn database_args(db: &Path) -> Vec<String> {
    vec!["--database".into(), db.to_string_lossy().into_owned()]
}

/// The final model of the run without interruptions.
fn uninterrupted(dir: &Path) -> String {
    let args = database_args(&dir.join("reference.db"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let link = SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &args);
    let _nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&["run", app, "e2e", "--stream", "--run-config", CONFIG]);
    assert_eq!(o.code, Some(0), "{}\n{}", o.stdout, o.stderr);
    let id = started_or_first_run(app);
    let log = flwr(&["log", &id, app, "e2e", "--show"]);
    final_model(&log.stdout)
}

/// The id of the only run on the SuperLink.
fn started_or_first_run(app: &str) -> String {
    let o = flwr(&["ls", app, "e2e", "--format", "json"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    v["runs"][0]["run_id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no run id in {v}"))
        .to_string()
}

over_both_transports! {
fn a_superlink_killed_mid_round_resumes_the_run_to_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let reference = uninterrupted(dir.path());

    let fleet = format!("127.0.0.1:{}", free_port());
    let control = format!("127.0.0.1:{}", free_port());
    let args = database_args(&dir.path().join("state.db"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let link = SuperLink::start_with(&fleet, &control, &args);
    let nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&["run", app, "e2e", "--run-config", CONFIG]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let id = started_run_id(&o.stdout);
    let mut follower = flwr_spawn(&["log", &id, app, "e2e", "--stream"]);
    assert!(
        follower.wait_stdout("round 2 done", COMMAND_TIMEOUT).is_some(),
        "{}",
        follower.stderr()
    );
    follower.kill();
    let _restarted = link.crash_and_restart(&args, &id);
    wait_for_status(app, id.parse().unwrap(), "finished:completed");
    let log = flwr(&["log", &id, app, "e2e", "--show"]);
    assert_eq!(log.code, Some(0), "{}", log.stderr);
    assert!(log.stdout.contains("resuming from round"), "{}", log.stdout);
    assert_eq!(final_model(&log.stdout), reference, "{}", log.stdout);
    // The SuperNodes are the processes started before the crash: they reconnected alone.
    for node in &nodes {
        assert!(process_alive(node.pid()), "{} exited:\n{}", node.name, node.stderr());
    }
}}
