//! Simulation on a remote SuperLink (`flower-superlink --simulation`), as the tutorial's
//! Part 2 uses it: a federation with `address` and `options.num-supernodes` runs on the
//! SuperLink's machine, on a virtual fleet of its own, and is listed, followed and stopped
//! like any run. A SuperLink without `--simulation` refuses such a run at once. Real
//! processes on 127.0.0.1; every process is killed when its handle drops.

// Tests may unwrap (a failure is the test failing).
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use support::*;

/// The quickstart app pointed at `control`, as a federation asking for `num_supernodes`
/// virtual SuperNodes.
fn simulated_app(control: &str, num_supernodes: u32) -> tempfile::TempDir {
    let dir = app_for("quickstart", control);
    let manifest = dir.path().join("pyproject.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!("options.num-supernodes = {num_supernodes}\n"));
    std::fs::write(&manifest, text).unwrap();
    dir
}

/// Starts a run on `app` that does not end by itself and follows its log until `line`.
fn start_endless(app: &str, line: &str) -> (u64, Proc) {
    let o = flwr(&[
        "run",
        app,
        "e2e",
        "--run-config",
        "total-params=1000 num-server-rounds=1000000",
    ]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    let run_id = started_run_id(&o.stdout);
    let log = flwr_spawn(&["log", &run_id.to_string(), app, "e2e", "--stream"]);
    assert!(
        log.wait_stdout(line, COMMAND_TIMEOUT).is_some(),
        "no {line:?}: {}",
        log.stdout()
    );
    (run_id, log)
}

/// A small model, so that a debug build runs rounds quickly.
const SMALL: &str = "total-params=1000 num-server-rounds=2";

over_both_transports! {
fn a_simulation_superlink_runs_the_quickstart_on_its_own_virtual_fleet() {
    let link = SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &["--simulation"]);
    link.proc.expect_log("simulation mode (--simulation)");
    let app = simulated_app(&link.control, 10);
    let app = app.path().to_str().unwrap();

    let o = flwr(&[
        "run", app, "e2e", "--run-config", SMALL, "--stream", "--format", "json",
    ]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    let report = json(&o.stdout);
    assert_eq!(report["status"], "finished:completed", "{report}");
    assert_eq!(report["rounds"].as_array().unwrap().len(), 2, "{report}");
    let run_id = report["run_id"].as_u64().unwrap();
    let id = run_id.to_string();

    assert_eq!(status_of(app, run_id), "finished:completed");
    let log = flwr(&["log", &id, app, "e2e", "--show"]);
    assert_eq!(log.code, Some(0), "{}", log.stderr);
    for line in [
        "simulation: 10 virtual SuperNodes",
        "round 2: training on 10 of 10 connected nodes",
        "round 2: 10/10 evaluate replies, 0 failed",
    ] {
        assert!(log.stdout.contains(line), "{line:?} not in {}", log.stdout);
    }
}}

#[test]
fn a_simulation_run_is_followed_with_log_stream_and_stopped() {
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--simulation", "--simulation-workers", "2"],
    );
    link.proc.expect_log("at most 2 ClientApp calls at once");
    let app = simulated_app(&link.control, 3);
    let app = app.path().to_str().unwrap();
    let (run_id, mut log) = start_endless(app, "round 2: 3/3 train replies");
    let id = run_id.to_string();
    let stop = flwr(&["stop", &id, app, "e2e"]);
    assert_eq!(stop.code, Some(0), "{}", stop.stderr);
    assert_eq!(status_of(app, run_id), "finished:stopped");
    let status = log.wait_exit(COMMAND_TIMEOUT);
    assert!(
        log.stderr().contains("finished:stopped"),
        "flwr log ended {status}: {}",
        log.stderr()
    );

    // The stopped run's fleet is gone: a second run has the workers to itself and ends.
    let o = flwr(&["run", app, "e2e", "--run-config", SMALL, "--stream"]);
    assert_eq!(o.code, Some(0), "second run: {}", o.stderr);
}

#[test]
fn a_deployment_superlink_refuses_a_simulation_run_at_submit_naming_the_flag() {
    let link = SuperLink::start();
    let app = simulated_app(&link.control, 10);
    let app = app.path().to_str().unwrap();
    let refused = user_error(&flwr(&["run", app, "e2e", "--run-config", SMALL]));
    assert!(
        refused.contains("options.num-supernodes")
            && refused.contains("start it with `flower-superlink --simulation`"),
        "{refused}"
    );
    let ls = flwr(&["ls", app, "e2e"]);
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    assert_eq!(ls.stdout.trim(), "no runs", "nothing was created");
}

#[test]
fn a_simulation_superlink_refuses_a_federation_without_a_fleet_size() {
    let link = SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &["--simulation"]);
    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();
    let refused = user_error(&flwr(&["run", app, "e2e", "--run-config", SMALL]));
    assert!(
        refused.contains("set options.num-supernodes = 10"),
        "{refused}"
    );
}

#[test]
fn a_simulation_run_belongs_to_the_user_who_submitted_it() {
    let dir = tempfile::tempdir().unwrap();
    keygen_tls(dir.path());
    let [alice, bob] = ["alice", "bob"].map(|u| dir.path().join(u));
    let accounts = write_accounts(
        dir.path(),
        &[("alice", "alice-pw", None), ("bob", "bob-pw", None)],
    );
    let link = user_auth_link(&accounts, &["--simulation"]);
    let app_dir = simulated_app(&link.control, 4);
    enable_user_auth(app_dir.path());
    let app = app_dir.path().to_str().unwrap();
    for (home, user, password) in [(&alice, "alice", "alice-pw"), (&bob, "bob", "bob-pw")] {
        let o = login(home, app, user, password);
        assert_eq!(o.code, Some(0), "{}", o.stderr);
    }
    let o = flwr_as(
        &alice,
        &[
            "run",
            app,
            "e2e",
            "--run-config",
            SMALL,
            "--stream",
            "--format",
            "json",
        ],
        "",
    );
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    let report = json(&o.stdout);
    assert_eq!(report["status"], "finished:completed", "{report}");
    let id = report["run_id"].as_u64().unwrap().to_string();

    let o = flwr_as(
        &alice,
        &["ls", app, "e2e", "--run-id", &id, "--format", "json"],
        "",
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(json(&o.stdout)["runs"][0]["owner"], "alice");
    let o = flwr_as(&bob, &["ls", app, "e2e"], "");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.stdout.trim(), "no runs");
    let theirs = user_error(&flwr_as(&bob, &["log", &id, app, "e2e"], ""));
    assert!(theirs.contains(&id), "{theirs}");
}

#[test]
fn a_simulation_run_resumes_from_its_checkpoint_after_a_superlink_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let args = ["--simulation", "--database", db.to_str().unwrap()];
    let fleet = format!("127.0.0.1:{}", free_port());
    let control = format!("127.0.0.1:{}", free_port());
    let link = SuperLink::start_with(&fleet, &control, &args);
    let app = simulated_app(&link.control, 3);
    let app = app.path().to_str().unwrap();
    let (run_id, mut follower) = start_endless(app, "round 3: 3/3 train replies");
    let id = run_id.to_string();
    follower.kill();
    // The options came back from the state: the same three virtual SuperNodes.
    let _restarted = link.crash_and_restart(&args, &id);
    let follower = flwr_spawn(&["log", &id, app, "e2e", "--stream"]);
    resumes_and_goes_on(&follower, 3);
    assert_eq!(status_of(app, run_id), "running");
    let stop = flwr(&["stop", &id, app, "e2e"]);
    assert_eq!(stop.code, Some(0), "{}", stop.stderr);
}
