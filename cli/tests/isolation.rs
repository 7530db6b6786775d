//! Apps that come as FABs, run in processes of their own: `flower-superlink` and two
//! `flower-supernode`s as real processes on 127.0.0.1, a FAB submitted through the Control
//! API, and the app processes the daemons start (`--isolation subprocess`) or the test
//! starts (`--isolation process`).
//!
//! The app is `floret-test-app` (tests/support/test_app.rs), built by cargo with the other
//! binaries. The FAB carries a two-line launcher script that execs it rather than the
//! 150 MB debug binary itself: to the daemons both are an executable with a hash, and the
//! tests stay light. Every process is killed when its handle drops; the daemons are also
//! stopped with SIGTERM so that the app processes they started are seen to end.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use bytes::Bytes;
use floret_core::fab::{Fab, FabManifest, HOST_TARGET, fab_hash, sha256_hex};
use floret_core::{
    AppRef, Control, ControlError, RunEvent, RunInfo, RunStatus, StartRun, SubStatus, UserConfig,
    UserConfigValue,
};
use floret_transport::grpc::{ControlClient, control_client};
use std::time::{Duration, Instant};
use support::*;

/// A FAB whose binary runs `floret-test-app`, built for `target`.
fn fab(target: &str) -> Bytes {
    let binary = Bytes::from(format!("#!/bin/sh\nexec '{TEST_APP}' \"$@\"\n"));
    Fab {
        manifest: FabManifest {
            name: "test-app".into(),
            version: "1.0.0".into(),
            publisher: "floret".into(),
            serverapp: "test_app.server_app:app".into(),
            clientapp: "test_app.client_app:app".into(),
            target: target.into(),
            binary_sha256: sha256_hex(&binary),
            pyproject: String::new(),
        },
        binary,
    }
    .pack()
}

/// Two quick rounds of quickstart, plus the test app's `crash` switch.
fn run_config(crash: &str) -> UserConfig {
    let mut c = UserConfig::new();
    for (k, v) in [
        ("num-server-rounds", UserConfigValue::Int(2)),
        ("total-params", UserConfigValue::Int(1000)),
        ("num-arrays", UserConfigValue::Int(2)),
        ("fraction-train", UserConfigValue::Float(1.0)),
        ("fraction-evaluate", UserConfigValue::Float(1.0)),
        ("round-timeout", UserConfigValue::Float(60.0)),
        ("crash", UserConfigValue::Str(crash.into())),
    ] {
        c.insert(k.into(), v);
    }
    c
}

fn request(fab: Bytes, crash: &str) -> StartRun {
    StartRun {
        app: AppRef {
            name: "test-app".into(),
            serverapp: "test_app.server_app:app".into(),
            clientapp: "test_app.client_app:app".into(),
            fab_hash: fab_hash(&fab),
        },
        federation: "e2e".into(),
        run_config: run_config(crash),
        federation_options: UserConfig::new(),
        fab: Some(fab),
    }
}

/// The Control API of a SuperLink, driven from this synchronous test.
struct Flwr {
    runtime: tokio::runtime::Runtime,
    client: ControlClient,
}

impl Flwr {
    fn connect(link: &SuperLink) -> Flwr {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = runtime.block_on(control_client(&link.control)).unwrap();
        Flwr { runtime, client }
    }

    fn start(&self, request: StartRun) -> Result<u64, ControlError> {
        self.runtime.block_on(self.client.start_run(request))
    }

    /// Waits for the run to finish (bounded by `COMMAND_TIMEOUT`).
    fn finished(&self, run_id: u64) -> RunInfo {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let run = self.runtime.block_on(self.client.get_run(run_id)).unwrap();
            if run.status.is_finished() {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} still {}",
                run.status
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `(train replies, train failures)` of each round.
    fn train_rounds(&self, run_id: u64) -> Vec<(u64, u64)> {
        self.runtime.block_on(async {
            let mut events = self.client.stream_events(run_id, false).await.unwrap();
            let mut rounds = Vec::new();
            while let Some(event) = events.recv().await {
                if let RunEvent::RoundFinished(summary) = event {
                    let train = summary.train.unwrap_or_default();
                    rounds.push((train.replies, train.failures));
                }
            }
            rounds
        })
    }
}

fn completed(run: &RunInfo) {
    assert_eq!(
        run.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        run.reason
    );
}

/// Stops a daemon with SIGTERM and checks that it exits cleanly.
fn stop(mut daemon: Proc) {
    daemon.signal("TERM");
    let status = daemon.wait_exit(COMMAND_TIMEOUT);
    assert!(status.success(), "{} exited with {status}", daemon.name);
}

/// Waits until none of `pids` is running any more.
fn all_gone(pids: &[u32]) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while pids.iter().any(|&pid| process_alive(pid)) {
        assert!(Instant::now() < deadline, "app processes left: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cache_flag(dir: &tempfile::TempDir) -> String {
    dir.path().to_str().unwrap().to_owned()
}

/// A SuperNode of a two-node federation with `extra` flags and its own FAB cache.
fn node(link: &SuperLink, partition: u32, cache: &tempfile::TempDir, extra: &[&str]) -> Proc {
    let cache = cache_flag(cache);
    let mut args = vec!["--fab-cache-dir", cache.as_str()];
    args.extend_from_slice(extra);
    let node = supernode(&link.fleet, partition, 2, &args);
    node.expect_log(NODE_READY);
    node
}

#[test]
fn a_fab_runs_in_app_processes_the_daemons_start_and_stop() {
    let caches: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let link_cache = cache_flag(&caches[0]);
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--fab-cache-dir", &link_cache],
    );
    let nodes = [
        node(&link, 0, &caches[1], &[]),
        node(&link, 1, &caches[2], &[]),
    ];
    let flwr = Flwr::connect(&link);
    let fab = fab(HOST_TARGET);
    let hash = fab_hash(&fab);

    let first = flwr.start(request(fab, "")).unwrap();
    completed(&flwr.finished(first));
    assert_eq!(flwr.train_rounds(first), vec![(2, 0), (2, 0)]);

    // The SuperLink keeps the FAB: a second run may name it by hash alone.
    let mut again = request(Bytes::new(), "");
    again.fab = None;
    again.app.fab_hash = hash.clone();
    let second = flwr.start(again).unwrap();
    completed(&flwr.finished(second));

    for cache in &caches {
        assert!(
            cache.path().join(&hash).join("test-app").is_file(),
            "binary cached by hash in {}",
            cache.path().display()
        );
    }
    assert_eq!(
        logged_pids(&link.proc, "started ServerApp process").len(),
        2
    );
    let mut app_pids = logged_pids(&link.proc, "started ServerApp process");
    for node in &nodes {
        let started = logged_pids(node, "started ClientApp process");
        assert_eq!(started.len(), 2, "one ClientApp process per run");
        app_pids.extend(started);
    }
    let [a, b] = nodes;
    stop(a);
    stop(b);
    stop(link.proc);
    all_gone(&app_pids);
}

#[test]
fn with_process_isolation_externally_started_app_processes_serve_the_run() {
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
        node(&link, 0, &caches[0], &process),
        node(&link, 1, &caches[1], &process),
    ];
    // Started before the run exists: they wait for one to claim.
    let serverappio = link.serverappio();
    let mut server = Proc::spawn(
        "serverapp",
        TEST_APP,
        &["serverapp", "--serverappio-api-address", &serverappio],
    );
    let clients: Vec<Proc> = nodes
        .iter()
        .map(|node| {
            let address = clientappio(node);
            Proc::spawn(
                "clientapp",
                TEST_APP,
                &["clientapp", "--clientappio-api-address", &address],
            )
        })
        .collect();

    let flwr = Flwr::connect(&link);
    let run_id = flwr.start(request(fab(HOST_TARGET), "")).unwrap();
    let run = flwr.finished(run_id);
    completed(&run);
    assert_eq!(flwr.train_rounds(run_id), vec![(2, 0), (2, 0)]);
    let status = server.wait_exit(COMMAND_TIMEOUT);
    assert!(status.success(), "serverapp: {}", server.stderr());
    link.proc.expect_log("a ServerApp process claimed the run");
    for node in &nodes {
        node.expect_log("a ClientApp process claimed the run");
        assert!(logged_pids(node, "started ClientApp process").is_empty());
    }
    assert!(logged_pids(&link.proc, "started ServerApp process").is_empty());
    drop(clients);
}

#[test]
fn crashing_app_processes_fail_their_run_or_messages_and_the_daemons_carry_on() {
    let caches: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let link_cache = cache_flag(&caches[0]);
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--fab-cache-dir", &link_cache],
    );
    let nodes = [
        node(&link, 0, &caches[1], &[]),
        node(&link, 1, &caches[2], &[]),
    ];
    let flwr = Flwr::connect(&link);
    let fab = fab(HOST_TARGET);

    let exits = flwr.start(request(fab.clone(), "serverapp")).unwrap();
    let run = flwr.finished(exits);
    assert_eq!(run.status, RunStatus::Finished(SubStatus::Failed));
    assert_eq!(run.reason, "ServerApp process exited with status 101");

    let panics = flwr.start(request(fab.clone(), "serverapp-panic")).unwrap();
    let run = flwr.finished(panics);
    assert_eq!(run.status, RunStatus::Finished(SubStatus::Failed));
    assert_eq!(
        run.reason,
        "ServerApp panicked: crash requested by the run config"
    );

    // Each ClientApp process aborts in round 1; round 2 runs on fresh ones.
    let aborts = flwr.start(request(fab.clone(), "clientapp")).unwrap();
    completed(&flwr.finished(aborts));
    assert_eq!(flwr.train_rounds(aborts), vec![(0, 2), (2, 0)]);
    for node in &nodes {
        node.expect_log("ClientApp process was killed by signal 6 (SIGABRT)");
        assert_eq!(logged_pids(node, "started ClientApp process").len(), 2);
    }

    let fine = flwr.start(request(fab, "")).unwrap();
    completed(&flwr.finished(fine));
}

#[test]
fn bad_fabs_and_bad_tokens_are_refused_with_a_reason() {
    let link = SuperLink::start();
    let flwr = Flwr::connect(&link);
    let good = fab(HOST_TARGET);

    let mut tampered = good.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 1;
    let mut tampered_request = request(good.clone(), "");
    tampered_request.fab = Some(Bytes::from(tampered));
    let Err(ControlError::Invalid(e)) = flwr.start(tampered_request) else {
        panic!("a tampered FAB must be refused");
    };
    assert!(e.contains("tampered"), "{e}");
    assert!(e.contains(&fab_hash(&good)), "names the expected hash: {e}");

    let garbage = Bytes::from_static(b"not a fab at all");
    let Err(ControlError::Invalid(e)) = flwr.start(request(garbage, "")) else {
        panic!("garbage must be refused");
    };
    assert!(e.contains("not a FAB"), "{e}");

    let Err(ControlError::Invalid(e)) = flwr.start(request(fab("riscv64gc-unknown-linux-gnu"), ""))
    else {
        panic!("a FAB for another target must be refused by a SuperLink that starts it");
    };
    assert!(
        e.contains("riscv64gc-unknown-linux-gnu") && e.contains(HOST_TARGET),
        "{e}"
    );
    let runs = flwr.runtime.block_on(flwr.client.list_runs()).unwrap();
    assert!(runs.is_empty(), "no run was created: {runs:?}");

    let mut app = Proc::spawn(
        "serverapp",
        TEST_APP,
        &[
            "serverapp",
            "--serverappio-api-address",
            &link.serverappio(),
            "--token",
            "0123456789abcdef0123456789abcdef",
        ],
    );
    assert_eq!(app.wait_exit(COMMAND_TIMEOUT).code(), Some(1));
    assert!(
        app.stderr().contains("token is not valid"),
        "{}",
        app.stderr()
    );
}

#[test]
fn a_supernode_refuses_a_fab_built_for_another_target() {
    let caches: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    // The SuperLink does not start the ServerApp, so it accepts the FAB; the test's
    // ServerApp process runs here whatever the FAB says.
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
    let nodes = [
        node(&link, 0, &caches[0], &[]),
        node(&link, 1, &caches[1], &[]),
    ];
    let mut server = Proc::spawn(
        "serverapp",
        TEST_APP,
        &[
            "serverapp",
            "--serverappio-api-address",
            &link.serverappio(),
        ],
    );
    let flwr = Flwr::connect(&link);
    let foreign = "riscv64gc-unknown-linux-gnu";
    let run_id = flwr.start(request(fab(foreign), "")).unwrap();
    completed(&flwr.finished(run_id));
    assert_eq!(flwr.train_rounds(run_id), vec![(0, 2), (0, 2)]);
    assert!(server.wait_exit(COMMAND_TIMEOUT).success());
    for node in &nodes {
        let line = node.expect_log("cannot run the ClientApp");
        assert!(
            line.contains(foreign) && line.contains(HOST_TARGET),
            "{line}"
        );
        assert!(logged_pids(node, "started ClientApp process").is_empty());
    }
}

/// The app processes join the run's trace: the ServerApp process's span is a child of the
/// SuperLink's `run` span (handed down as `TRACEPARENT`), and each ClientApp process's
/// `train` span a child of its SuperNode's `train` span (through the message's context
/// over ClientAppIo).
#[test]
fn a_fab_run_is_one_trace_through_its_app_processes() {
    let mut collector = support::otlp::Collector::start();
    let endpoint = collector.endpoint();
    let caches: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let link_cache = cache_flag(&caches[0]);
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--fab-cache-dir", &link_cache, "--otlp-endpoint", &endpoint],
    );
    let otlp = ["--otlp-endpoint", endpoint.as_str()];
    let nodes = [
        node(&link, 0, &caches[1], &otlp),
        node(&link, 1, &caches[2], &otlp),
    ];
    let flwr = Flwr::connect(&link);
    let run = flwr.start(request(fab(HOST_TARGET), "")).unwrap();
    completed(&flwr.finished(run));
    let SuperLink { proc, .. } = link;
    for daemon in nodes.into_iter().chain([proc]) {
        stop(daemon);
    }

    let spans = collector.spans();
    let run_id = run.to_string();
    let root = spans
        .named("run")
        .find(|s| support::otlp::attr(s, "run_id").as_deref() == Some(run_id.as_str()))
        .unwrap_or_else(|| panic!("no run span: {:?}", spans.names()));
    let serverapp = spans
        .named("serverapp")
        .next()
        .unwrap_or_else(|| panic!("no serverapp span: {:?}", spans.names()));
    assert_eq!(serverapp.parent_span_id, root.span_id);
    assert_eq!(serverapp.trace_id, root.trace_id);

    let in_processes: Vec<_> = spans
        .named("train")
        .filter(|s| support::otlp::attr(s, "transport").as_deref() == Some("clientappio"))
        .collect();
    assert_eq!(
        in_processes.len(),
        4,
        "2 rounds x 2 nodes: {:?}",
        spans.names()
    );
    for span in in_processes {
        let chain = spans.ancestry(span);
        assert_eq!(chain[..3], ["train", "train", "deliver"], "{chain:?}");
        assert!(
            chain.contains(&"serverapp") && chain.last() == Some(&"run"),
            "{chain:?}"
        );
        assert_eq!(span.trace_id, root.trace_id);
    }
}
