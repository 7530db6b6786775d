//! The SuperLink's database on a disk that fills up, with real processes: a run whose
//! model no longer fits ends `finished:failed` with a reason that says what is full and
//! what to do, visible in `flwr ls`, instead of showing `running` until its round timeout;
//! and the SuperLink goes on serving runs that fit. `--max-database-size` plays the full
//! disk (SQLite fails the write exactly as it would on a full disk).

// Tests may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::time::{Duration, Instant};
use support::*;

/// `flwr ls --run-id` of one run, polled until it has finished: (status, reason).
fn finished(app: &str, run_id: u64, limit: Duration) -> (String, String) {
    let id = run_id.to_string();
    let deadline = Instant::now() + limit;
    loop {
        let o = flwr(&["ls", app, "e2e", "--run-id", &id, "--format", "json"]);
        assert_eq!(o.code, Some(0), "flwr ls: {}", o.stderr);
        let run = &json(&o.stdout)["runs"][0];
        let status = run["status"].as_str().unwrap().to_owned();
        if status.starts_with("finished") {
            return (
                status,
                run["reason"].as_str().unwrap_or_default().to_owned(),
            );
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} is still {status} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_run_that_fills_the_database_fails_visibly_and_the_superlink_goes_on() {
    // 3 MB: a round's broadcast of 500,000 float32 values (2 MB) to 2 nodes does not fit.
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--max-database-size", "3000000"],
    );
    link.proc
        .expect_log("state database capped at 2998272 bytes (--max-database-size)");
    let nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();

    let config = "num-server-rounds=1 total-params=500000 num-arrays=1 round-timeout=600";
    let o = flwr(&["run", app, "e2e", "--run-config", config]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let big = started_run_id(&o.stdout);
    let (status, reason) = finished(app, big, Duration::from_secs(60));
    assert_eq!(status, "finished:failed", "{reason}");
    assert!(
        reason.contains(
            "the state database is full: free disk space where it is kept, or raise \
             --max-database-size"
        ),
        "{reason}"
    );

    let config = "num-server-rounds=1 total-params=1000 num-arrays=1";
    let o = flwr(&["run", app, "e2e", "--run-config", config]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let small = started_run_id(&o.stdout);
    let (status, reason) = finished(app, small, COMMAND_TIMEOUT);
    assert_eq!(status, "finished:completed", "{reason}");
}
