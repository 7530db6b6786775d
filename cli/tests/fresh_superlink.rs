//! A SuperLink restarted on fresh state (`--database :memory:`) while its SuperNodes keep
//! running (issue 12, finding 1). Its run and message ids used to start again at 1, and the
//! SuperNodes, still holding the last SuperLink's run 1 (its ClientApp, run config and node
//! state) and its instruction ids, served the new run 1 with the old app or dropped its
//! instructions as duplicates: a digits run "completed" at 0.089 accuracy, or waited out
//! its round timeout. Now run ids are random, message ids differ across SuperLink
//! lifetimes, and a SuperNode that registers with a new SuperLink incarnation drops
//! everything it kept by run or message id. Real processes on 127.0.0.1.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use support::*;

/// Digits, short: two rounds of one epoch reach about 0.9 accuracy from scratch, and a
/// round timeout short enough that a round whose instructions are dropped fails the test
/// within `COMMAND_TIMEOUT` instead of hanging.
const DIGITS: &str = "num-server-rounds=2 local-epochs=1 round-timeout=30.0";

/// Far below what digits reaches on fresh nodes, far above the 0.089 the wrong ClientApp
/// gave.
const MIN_ACCURACY: f64 = 0.5;

fn memory_superlink(fleet: &str, control: &str) -> SuperLink {
    SuperLink::start_with(fleet, control, &["--database", ":memory:"])
}

/// `flwr run APP e2e --stream --format json` with `config`; its report.
fn run_to_end(app: &str, config: &str) -> serde_json::Value {
    let o = flwr(&[
        "run",
        app,
        "e2e",
        "--run-config",
        config,
        "--stream",
        "--format",
        "json",
    ]);
    assert_eq!(o.code, Some(0), "flwr run: {}\n{}", o.stdout, o.stderr);
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.stdout))
}

over_both_transports! {
fn a_fresh_superlink_trains_the_right_app_to_the_right_accuracy_on_nodes_that_outlived_the_last() {
    let fleet = format!("127.0.0.1:{}", free_port());
    let control = format!("127.0.0.1:{}", free_port());
    let mut link = memory_superlink(&fleet, &control);
    let nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    // The first SuperLink's run: the quickstart app, whose ClientApp the nodes keep.
    let quickstart = app_for("quickstart", &link.control);
    let quickstart = quickstart.path().to_str().unwrap();
    let first = run_to_end(quickstart, "num-server-rounds=1 total-params=1000");
    assert_eq!(first["status"], "finished:completed", "{first}");

    link.proc.signal("KILL");
    link.proc.wait_exit(READY_TIMEOUT);
    let link = memory_superlink(&fleet, &control);
    // Over QUIC a SuperLink killed without a word is noticed at the next heartbeat or
    // the connection's idle timeout, which can take longer than `READY_TIMEOUT`.
    for node in &nodes {
        for needle in ["registered again under a new id", "the SuperLink started on fresh state"] {
            assert!(
                node.wait_log(needle, COMMAND_TIMEOUT).is_some(),
                "{} did not log {needle:?}:\n{}",
                node.name,
                node.stderr()
            );
        }
    }

    let digits = app_for("digits", &link.control);
    let digits = digits.path().to_str().unwrap();
    let second = run_to_end(digits, DIGITS);
    assert_eq!(second["status"], "finished:completed", "{second}");
    let rounds = second["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{second}");
    let accuracy = rounds[1]["server_metrics"]["accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("no accuracy in {second}"));
    assert!(
        accuracy > MIN_ACCURACY,
        "accuracy {accuracy}: the nodes served the new run with the last SuperLink's app"
    );
    assert_ne!(
        first["run_id"], second["run_id"],
        "a fresh SuperLink names its runs anew"
    );
    for node in &nodes {
        assert!(process_alive(node.pid()), "{} exited:\n{}", node.name, node.stderr());
    }
}}
