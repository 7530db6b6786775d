//! The deployment runtime as a user meets it: `flower-superlink`, `flower-supernode` and
//! `flwr` as real processes on 127.0.0.1, over gRPC and over QUIC (the tests that cross the
//! network run once per transport, see `over_both_transports!`). Every process is killed when its
//! handle drops, so a failing test leaves nothing behind; timeouts only bound hangs.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use support::*;

/// Few, short rounds of digits: enough to see a run through, quick on a loaded machine.
const QUICK: &str = "num-server-rounds=2 local-epochs=1";

/// One `error: ...` line on stderr naming every needle, the expected exit code, no panic.
fn assert_one_error_line(code: Option<i32>, stderr: &str, expected: i32, needles: &[&str]) {
    assert_eq!(code, Some(expected), "stderr: {stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} not in {:?}", errors[0]);
    }
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
}

over_both_transports! {
fn a_streamed_run_completes_and_ls_and_log_show_it() {
    let link = SuperLink::start();
    let nodes: Vec<Proc> = (0..3).map(|p| supernode(&link.fleet, p, 3, &[])).collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();

    let o = flwr(&[
        "run",
        app,
        "e2e",
        "--run-config",
        QUICK,
        "--stream",
        "--format",
        "json",
    ]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    let report = json(&o.stdout);
    assert_eq!(report["status"], "finished:completed");
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2, "{report}");
    assert!(
        rounds[1]["server_metrics"]["accuracy"].is_number(),
        "{report}"
    );
    let run_id = report["run_id"].as_u64().unwrap();

    let ls = flwr(&["ls", app, "e2e"]);
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    let header = ls.stdout.lines().next().unwrap();
    for column in ["run id", "app", "status", "elapsed", "status changed at"] {
        assert!(header.contains(column), "{header}");
    }
    let row = ls
        .stdout
        .lines()
        .find(|l| l.starts_with(&run_id.to_string()))
        .unwrap_or_else(|| panic!("run {run_id} not listed: {}", ls.stdout));
    assert!(
        row.contains("digits") && row.contains("finished:completed"),
        "{row}"
    );

    let id = run_id.to_string();
    let log = flwr(&["log", &id, app, "e2e", "--show"]);
    assert_eq!(log.code, Some(0), "{}", log.stderr);
    assert!(
        log.stdout.contains("digits: 2 rounds of FedAvg"),
        "{}",
        log.stdout
    );
    assert!(
        log.stdout.contains("round 2 done: train 3/3"),
        "{}",
        log.stdout
    );
    assert!(log.stderr.contains("finished:completed"), "{}", log.stderr);
}}

over_both_transports! {
fn run_without_stream_prints_the_id_and_the_run_goes_on() {
    let link = SuperLink::start();
    let _nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&["run", app, "e2e", "--run-config", "total-params=1000"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let run_id = started_run_id(&o.stdout);
    assert!(
        o.stderr.contains(&format!("flwr log {run_id} ")),
        "{}",
        o.stderr
    );
    wait_for_status(app, run_id, "finished:completed");

    // Following a finished run replays its log and ends at once.
    let id = run_id.to_string();
    let log = flwr(&["log", &id, app, "e2e", "--stream"]);
    assert_eq!(log.code, Some(0), "{}", log.stderr);
    assert!(
        log.stdout.contains("round 3 done: train 2/2"),
        "{}",
        log.stdout
    );
}}

over_both_transports! {
fn flwr_stop_ends_a_long_run_as_stopped() {
    let link = SuperLink::start();
    let _nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&[
        "run",
        app,
        "e2e",
        "--run-config",
        "num-server-rounds=1000000",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let run_id = started_run_id(&o.stdout);
    wait_for_status(app, run_id, "running");

    let id = run_id.to_string();
    let stop = flwr(&["stop", &id, app, "e2e"]);
    assert_eq!(stop.code, Some(0), "{}", stop.stderr);
    assert!(
        stop.stdout.contains(&format!("stopped run {run_id}")),
        "{}",
        stop.stdout
    );
    wait_for_status(app, run_id, "finished:stopped");

    let again = flwr(&["stop", &id, app, "e2e"]);
    assert_one_error_line(again.code, &again.stderr, 2, &["already finished"]);
}}

over_both_transports! {
fn ctrl_c_detaches_from_a_streamed_run_which_goes_on() {
    let link = SuperLink::start();
    let _nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let mut run = flwr_spawn(&[
        "run",
        app,
        "e2e",
        "--run-config",
        "num-server-rounds=1000000",
        "--stream",
    ]);
    // A round's log line shows the stream (and so the Ctrl-C handler) is up.
    run.expect_log("round 1:");
    run.signal("INT");
    let status = run.wait_exit(READY_TIMEOUT);
    assert_eq!(status.code(), Some(130), "{}", run.stderr());
    let detached = run.expect_log("detached from run ");
    let run_id: u64 = detached
        .trim_start_matches("detached from run ")
        .split(',')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no run id in {detached:?}"));
    assert!(
        detached.contains(&format!("flwr log {run_id} ")),
        "{detached}"
    );
    assert_eq!(status_of(app, run_id), "running");
    let stop = flwr(&["stop", &run_id.to_string(), app, "e2e"]);
    assert_eq!(stop.code, Some(0), "{}", stop.stderr);
}}

over_both_transports! {
fn a_supernode_killed_mid_run_leaves_the_rounds_to_the_others() {
    let link = SuperLink::start();
    let mut nodes: Vec<Proc> = (0..3)
        .map(|p| supernode(&link.fleet, p, 3, &["--heartbeat-interval", "2"]))
        .collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&[
        "run",
        app,
        "e2e",
        "--run-config",
        "num-server-rounds=50 local-epochs=20",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let run_id = started_run_id(&o.stdout);
    let id = run_id.to_string();
    let mut log = flwr_spawn(&["log", &id, app, "e2e", "--stream"]);
    assert!(
        log.wait_stdout("round 2 done: train 3/3", COMMAND_TIMEOUT)
            .is_some(),
        "no full round 2: {}",
        log.stdout()
    );
    nodes[2].signal("KILL");
    nodes[2].wait_exit(READY_TIMEOUT);

    let status = log.wait_exit(COMMAND_TIMEOUT);
    assert!(status.success(), "flwr log: {}", log.stderr());
    assert!(
        log.stderr().contains("finished:completed"),
        "{}",
        log.stderr()
    );
    let out = log.stdout();
    // The round the node died in went on with the two others; later rounds sample only them.
    let cut_short = out
        .lines()
        .any(|l| l.contains(" done: ") && (l.contains("train 2/3") || l.contains("evaluate 2/3")));
    assert!(cut_short, "no round finished with 2 of 3 replies: {out}");
    let last = out.lines().rfind(|l| l.contains(" done: ")).unwrap();
    assert!(last.starts_with("round 50 done: train 2/"), "{out}");
}}

over_both_transports! {
fn a_supernode_started_before_the_superlink_connects_when_it_comes_up() {
    let (fleet_port, control_port) = (free_port(), free_port());
    let fleet = format!("127.0.0.1:{fleet_port}");
    let nodes: Vec<Proc> = (0..2).map(|p| supernode(&fleet, p, 2, &[])).collect();
    for node in &nodes {
        node.expect_log(NODE_RETRYING);
    }
    let link = SuperLink::start_on(&fleet, &format!("127.0.0.1:{control_port}"));
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&["run", app, "e2e", "--run-config", QUICK, "--stream"]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    assert!(o.stdout.contains("finished:completed"), "{}", o.stdout);
}}

over_both_transports! {
fn the_daemons_stop_cleanly_on_sigterm_and_sigint() {
    let mut link = SuperLink::start();
    let mut nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&[
        "run",
        app,
        "e2e",
        "--run-config",
        "num-server-rounds=1000000",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let id = started_run_id(&o.stdout).to_string();
    let mut follower = flwr_spawn(&["log", &id, app, "e2e", "--stream"]);
    assert!(
        follower
            .wait_stdout("round 1 done", COMMAND_TIMEOUT)
            .is_some(),
        "{}",
        follower.stderr()
    );

    nodes[0].signal("INT");
    assert!(
        nodes[0].wait_exit(READY_TIMEOUT).success(),
        "{}",
        nodes[0].stderr()
    );
    link.proc.signal("TERM");
    let status = link.proc.wait_exit(READY_TIMEOUT);
    assert!(status.success(), "{}", link.proc.stderr());
    assert!(
        link.proc.stderr().contains("SuperLink stopped"),
        "{}",
        link.proc.stderr()
    );
    // The unfinished run was left to resume (the state is on disk), and its followers
    // were told why their stream ends.
    follower.wait_exit(READY_TIMEOUT);
    assert!(
        follower
            .stdout()
            .contains("SuperLink shut down; the run resumes from its last checkpoint"),
        "{}",
        follower.stdout()
    );
    assert!(
        link.proc.stderr().contains("run left unfinished"),
        "{}",
        link.proc.stderr()
    );
}}

#[test]
fn a_port_in_use_is_one_line_and_exit_2() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let mut link = Proc::spawn(
        "flower-superlink",
        SUPERLINK,
        &[
            "--insecure",
            "--database",
            ":memory:",
            "--fleet-api-address",
            &taken,
            "--control-api-address",
            "127.0.0.1:0",
        ],
    );
    let status = link.wait_exit(READY_TIMEOUT);
    assert_one_error_line(
        status.code(),
        &link.stderr(),
        2,
        &["--fleet-api-address", &taken, "already in use"],
    );
}

#[test]
fn daemon_flag_mistakes_are_one_line_and_exit_2() {
    let cases: [(&str, &[&str], &[&str]); 7] = [
        (
            SUPERNODE,
            &[
                "--insecure",
                "--node-config",
                "partition-id=0 num-partitions",
            ],
            &["--node-config", "`num-partitions` is not a key=value pair"],
        ),
        (
            SUPERNODE,
            &["--insecure", "--root-certificates", "ca.crt"],
            &["--root-certificates", "--insecure", "both given"],
        ),
        (
            SUPERNODE,
            &["--root-certificates", "/nonexistent/ca.crt"],
            &["/nonexistent/ca.crt", "cannot read"],
        ),
        (
            SUPERNODE,
            &["--insecure", "--transport", "tcp"],
            &["--transport", "\"grpc\" or \"quic\""],
        ),
        (
            SUPERLINK,
            &[],
            &["--ssl-certfile", "--insecure", "flwr keygen"],
        ),
        (
            SUPERLINK,
            &[
                "--ssl-certfile",
                "/nonexistent/server.pem",
                "--ssl-keyfile",
                "/k",
            ],
            &["/nonexistent/server.pem", "cannot read"],
        ),
        (
            SUPERLINK,
            &["--insecure", "--serverappio-api-address", "9091"],
            &["--serverappio-api-address", "is not HOST:PORT"],
        ),
    ];
    for (program, args, needles) in cases {
        let mut p = Proc::spawn(program, program, args);
        let status = p.wait_exit(READY_TIMEOUT);
        assert_one_error_line(status.code(), &p.stderr(), 2, needles);
    }
    // Neither flag: the platform's trust store, here one with nothing in it.
    let nothing = std::path::Path::new("/nonexistent/ca-bundle.crt");
    let mut p = Proc::spawn_with_env(
        "supernode",
        SUPERNODE,
        &["--node-config", "partition-id=0"],
        None,
        &[("SSL_CERT_FILE", nothing), ("SSL_CERT_DIR", nothing)],
    );
    let status = p.wait_exit(READY_TIMEOUT);
    let needles = ["platform's trust store", "SSL_CERT_FILE", "--insecure"];
    assert_one_error_line(status.code(), &p.stderr(), 2, &needles);
}

over_both_transports! {
fn unknown_run_ids_are_refused_by_log_and_stop() {
    let link = SuperLink::start();
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    for args in [
        ["log", "424242", app, "e2e", "--show"],
        ["log", "424242", app, "e2e", "--stream"],
        ["stop", "424242", app, "e2e", ""],
    ] {
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let o = flwr(&args);
        assert_one_error_line(o.code, &o.stderr, 2, &["no run with id 424242"]);
    }
    let o = flwr(&["ls", app, "e2e", "--run-id", "424242"]);
    assert_one_error_line(o.code, &o.stderr, 2, &["no run with id 424242"]);
}}

over_both_transports! {
fn an_unreachable_superlink_is_one_line_and_exit_1() {
    let address = format!("127.0.0.1:{}", free_port());
    let app = app_for("digits", &address);
    let app = app.path().to_str().unwrap();
    for args in [
        vec!["run", app, "e2e", "--run-config", QUICK],
        vec!["ls", app, "e2e"],
        vec!["log", "1", app, "e2e"],
        vec!["stop", "1", app, "e2e"],
    ] {
        let o = flwr(&args);
        assert_one_error_line(
            o.code,
            &o.stderr,
            1,
            &["cannot reach the SuperLink", &address],
        );
    }
}}

#[test]
fn bad_run_config_fails_before_contacting_the_superlink() {
    let app = app_for("digits", "127.0.0.1:1");
    let app = app.path().to_str().unwrap();
    let o = flwr(&["run", app, "e2e", "--run-config", "num-rounds=3"]);
    assert_one_error_line(o.code, &o.stderr, 2, &["num-rounds", "num-server-rounds"]);
}

/// A run config asking a built-in app for a model over the SuperLink's `--max-model-bytes`
/// is refused at submit, naming the key, the limit and the flag, instead of aborting the
/// SuperLink on allocation (and again at every restart, as it resumed the run); the
/// SuperLink goes on serving and a run of normal size still starts.
#[test]
fn a_model_over_the_superlink_limit_is_refused_at_submit_and_the_superlink_keeps_serving() {
    // The operator's limit, first: 1,000 float32 parameters are 4,000 bytes.
    let small = SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &["--max-model-bytes", "1000"]);
    let app = app_for("quickstart", &small.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&["run", app, "e2e", "--run-config", "total-params=1000"]);
    assert_one_error_line(
        o.code,
        &o.stderr,
        2,
        &["total-params=1000", "4000 bytes", "limit of 1000 bytes"],
    );

    let link = SuperLink::start();
    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&["run", app, "e2e", "--run-config", "total-params=2000000000"]);
    assert_one_error_line(
        o.code,
        &o.stderr,
        2,
        &[
            "total-params=2000000000",
            "8000000000 bytes",
            "limit of 943718400 bytes",
            "--max-model-bytes",
        ],
    );
    let ls = flwr(&["ls", app, "e2e", "--format", "json"]);
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    assert_eq!(
        json(&ls.stdout)["runs"],
        serde_json::json!([]),
        "no run left behind"
    );

    let o = flwr(&["run", app, "e2e", "--run-config", "total-params=1000"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let run_id = started_run_id(&o.stdout);
    let status = status_of(app, run_id);
    assert!(!status.starts_with("finished"), "run {run_id} is {status}");
}

#[test]
fn ls_log_and_stop_refuse_a_local_simulation_federation() {
    let app = app_for("digits", "127.0.0.1:1");
    let app = app.path().to_str().unwrap();
    for args in [
        vec!["ls", app],
        vec!["log", "1", app, "local-simulation"],
        vec!["stop", "1", app],
    ] {
        let o = flwr(&args);
        assert_one_error_line(
            o.code,
            &o.stderr,
            2,
            &["local simulation", "with an address"],
        );
    }
}

#[test]
fn a_supernode_that_cannot_reach_its_superlink_gives_up_when_told() {
    let address = format!("127.0.0.1:{}", free_port());
    let mut node = Proc::spawn(
        "supernode",
        SUPERNODE,
        &[
            "--insecure",
            "--superlink",
            &address,
            "--max-retries",
            "1",
            "--max-wait-time",
            "1",
        ],
    );
    let status = node.wait_exit(COMMAND_TIMEOUT);
    assert_one_error_line(status.code(), &node.stderr(), 1, &[&address]);
}
