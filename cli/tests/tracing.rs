//! One trace per run across processes and transports: a real SuperLink and two SuperNodes
//! (separate processes on 127.0.0.1) export to an OTLP receiver in this test process, and
//! the spans they send form one tree — the SuperLink's `run`, its `round N` spans, and each
//! SuperNode's `train` spans under the round their message belongs to — over gRPC and QUIC.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::collections::HashSet;
use support::otlp::{Collector, attr};
use support::*;

const ROUNDS: u64 = 2;
const NODES: u32 = 2;

over_both_transports! {
fn a_deployed_run_is_one_trace_with_node_spans_under_their_rounds() {
    let mut collector = Collector::start();
    let endpoint = collector.endpoint();
    let otlp = ["--otlp-endpoint", endpoint.as_str()];

    let mut link = SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &otlp);
    let mut nodes: Vec<Proc> = (0..NODES)
        .map(|p| supernode(&link.fleet, p, NODES, &otlp))
        .collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();
    let run_config = format!("num-server-rounds={ROUNDS}");
    let o = flwr(&["run", app, "e2e", "--run-config", &run_config, "--stream", "--format", "json"]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let run_id = report["run_id"].as_u64().unwrap().to_string();

    // A clean stop sends every span still queued.
    for node in &mut nodes {
        node.signal("TERM");
        assert!(node.wait_exit(COMMAND_TIMEOUT).success());
    }
    link.proc.signal("TERM");
    assert!(link.proc.wait_exit(COMMAND_TIMEOUT).success());

    let received = collector.spans();
    let spans = &received.all;
    let runs: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "run" && attr(s, "run_id").as_deref() == Some(run_id.as_str()))
        .collect();
    assert_eq!(
        runs.len(),
        1,
        "one run span for run {run_id}: {:#?}",
        spans
            .iter()
            .filter(|s| s.name == "run")
            .map(|s| &s.attributes)
            .collect::<Vec<_>>()
    );
    let trace = &runs[0].trace_id;

    // Everything about this run is in the run's trace.
    let of_run: Vec<_> = spans
        .iter()
        .filter(|s| attr(s, "run_id").as_deref() == Some(run_id.as_str()))
        .collect();
    assert!(of_run.iter().all(|s| &s.trace_id == trace), "spans of run {run_id} in another trace");

    for round in 1..=ROUNDS {
        let name = format!("round {round}");
        let span = spans
            .iter()
            .find(|s| s.name == name && &s.trace_id == trace)
            .unwrap_or_else(|| panic!("no {name} span"));
        let chain = received.ancestry(span);
        assert_eq!(chain.last(), Some(&"run"), "{name} is not under the run: {chain:?}");
        for step in ["configure", "broadcast", "await replies", "aggregate"] {
            assert!(
                spans.iter().any(|s| s.name == step
                    && (s.parent_span_id == span.span_id
                        || received
                            .parent(s)
                            .is_some_and(|p| p.parent_span_id == span.span_id))),
                "no {step} span in {name}"
            );
        }
    }

    // Each SuperNode trained in each round, under that round, having received its
    // instruction through the SuperLink's delivery span, over this test's transport.
    let trains: Vec<_> = spans.iter().filter(|s| s.name == "train").collect();
    assert_eq!(trains.len() as u64, ROUNDS * u64::from(NODES), "train spans");
    let mut seen = HashSet::new();
    for train in &trains {
        assert_eq!(&train.trace_id, trace);
        assert_eq!(attr(train, "transport").as_deref(), Some(transport()));
        let round = attr(train, "group_id").unwrap();
        let chain = received.ancestry(train);
        let expected_round = format!("round {round}");
        assert_eq!(
            chain[..4],
            ["train", "deliver", "broadcast", expected_round.as_str()],
            "train span of node {} in round {round}: {chain:?}",
            attr(train, "node_id").unwrap()
        );
        assert_eq!(chain.last(), Some(&"run"), "{chain:?}");
        assert!(attr(train, "bytes").unwrap().parse::<u64>().unwrap() > 0);
        seen.insert((attr(train, "node_id").unwrap(), round.clone()));
    }
    assert_eq!(seen.len() as u64, ROUNDS * u64::from(NODES), "one train span per node and round");

    // The SuperLink's log lines of the run carry its trace id, which leads from a log
    // line to the trace.
    let log = link.proc.stderr();
    assert!(
        log.lines().any(|l| l.starts_with(&format!("trace_id={trace} ")) && l.contains("round 1")),
        "no log line of the run with trace_id={trace}:\n{log}"
    );

    // The replies came back into the trace too.
    assert!(
        spans.iter().any(|s| s.name == "receive reply"
            && received.parent(s).is_some_and(|p| p.name == "train")),
        "no receive reply span under a train span"
    );
}
}

/// Two rounds of the quickstart app in a local simulation traced to `endpoint`; asserts
/// that `flwr run` succeeded.
fn simulate(endpoint: &str) -> Outcome {
    let app = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/quickstart");
    let out = tempfile::tempdir().unwrap();
    let o = flwr(&[
        "run",
        app.to_str().unwrap(),
        "--run-config",
        "num-server-rounds=2",
        "--format",
        "json",
        "--output-dir",
        out.path().to_str().unwrap(),
        "--otlp-endpoint",
        endpoint,
    ]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    o
}

/// A local simulation makes the same tree, its virtual nodes' `train` spans under the
/// rounds that sent them.
#[test]
fn a_simulation_is_one_trace_of_the_same_shape() {
    let mut collector = Collector::start();
    let endpoint = collector.endpoint();
    simulate(&endpoint);
    let received = collector.spans();
    let run = received
        .named("run")
        .next()
        .unwrap_or_else(|| panic!("no run span: {:?}", received.names()));
    let trains: Vec<_> = received.named("train").collect();
    assert!(!trains.is_empty(), "no train spans: {:?}", received.names());
    for train in trains {
        assert_eq!(train.trace_id, run.trace_id);
        assert_eq!(attr(train, "transport").as_deref(), Some("memory"));
        let round = attr(train, "group_id").unwrap();
        let chain = received.ancestry(train);
        assert_eq!(
            chain[..3],
            ["train", "broadcast", format!("round {round}").as_str()]
        );
        assert_eq!(chain.last(), Some(&"run"), "{chain:?}");
    }
}

/// An unreachable collector costs spans, not the run: it completes as usual.
#[test]
fn an_unreachable_collector_does_not_fail_a_simulation() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let o = simulate(&endpoint);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["status"], "finished:completed");
}

/// `--log-format json` writes one JSON object per line, for log shippers.
#[test]
fn json_logs_are_one_object_per_line() {
    let mut link = SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &["--log-format", "json"]);
    link.proc.signal("TERM");
    assert!(link.proc.wait_exit(COMMAND_TIMEOUT).success());
    let log = link.proc.stderr();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Fleet API (SuperNodes) listening on"))),
        "{log}"
    );
}

/// A malformed endpoint is a one-line error at start, for every binary.
#[test]
fn a_malformed_otlp_endpoint_is_a_clear_start_up_error() {
    for (program, args) in [
        (
            SUPERLINK,
            vec!["--insecure", "--otlp-endpoint", "localhost:4317"],
        ),
        (
            SUPERNODE,
            vec!["--insecure", "--otlp-endpoint", "localhost:4317"],
        ),
        (FLWR, vec!["ls", ".", "--otlp-endpoint", "localhost:4317"]),
    ] {
        let mut proc = Proc::spawn(program, program, &args);
        let status = proc.wait_exit(COMMAND_TIMEOUT);
        let stderr = proc.stderr();
        assert_eq!(status.code(), Some(2), "{program}: {stderr}");
        assert!(
            stderr.contains("--otlp-endpoint \"localhost:4317\"")
                && stderr.contains("http://127.0.0.1:4317"),
            "{program}: {stderr}"
        );
    }
}
