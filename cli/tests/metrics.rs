//! `--metrics-address` as an operator meets it: real `flower-superlink` and
//! `flower-supernode` processes serving Prometheus metrics over HTTP, scraped after a real
//! run, with the counters checked against what the run did (once per transport); and a bad
//! address or a taken port stopping the daemon with one line naming the flag.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

/// Two short rounds of digits over two nodes, every node sampled in both phases: the
/// SuperLink sends 2 rounds x 2 phases x 2 nodes instructions.
const ROUNDS: u64 = 2;
const NODES: u32 = 2;
const PHASES: u64 = 2;
const QUICK: &str = "num-server-rounds=2 local-epochs=1";

/// One scrape of `/metrics`, parsed.
struct Scrape {
    text: String,
}

impl Scrape {
    /// `GET /metrics` over plain HTTP/1.0 (no chunked encoding to undo).
    fn of(addr: &str) -> Scrape {
        let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not HTTP: {response}"));
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        Scrape {
            text: body.to_owned(),
        }
    }

    /// The value of the sample `name` whose labels include all of `labels`, summed over
    /// the samples that match (so a missing label is "any value").
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for line in self.text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let (metric, sample_labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                continue;
            }
            let has = |(k, v): &(&str, &str)| {
                sample_labels
                    .split(',')
                    .any(|pair| pair == format!("{k}=\"{v}\""))
            };
            if labels.iter().all(has) {
                let v: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
                found = Some(found.unwrap_or(0.0) + v);
            }
        }
        found
    }

    /// As [`Scrape::value`], 0 when no sample matches (a counter never incremented).
    fn count(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }
}

/// Scrapes `addr` until `ready` holds (gauges follow the SuperLink's sweep, once a second).
fn scrape_until(addr: &str, what: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let scrape = Scrape::of(addr);
        if ready(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen at {addr} within {READY_TIMEOUT:?}:\n{}",
            scrape.text
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What `--metrics-address` gets: any free port, which the daemon picks itself (a port
/// the test found free could be taken by another process before the daemon binds it).
const ANY_PORT: &str = "127.0.0.1:0";

/// The address `proc` serves its metrics at, from its log.
fn metrics_of(proc: &Proc) -> String {
    let line = proc.expect_log("metrics at http://");
    line.split("metrics at http://")
        .nth(1)
        .and_then(|rest| rest.split("/metrics").next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned()
}

over_both_transports! {
fn the_counters_of_both_daemons_match_the_run() {
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--metrics-address", ANY_PORT],
    );
    let link_metrics = metrics_of(&link.proc);
    let nodes: Vec<Proc> = (0..NODES)
        .map(|p| supernode(&link.fleet, p, NODES, &["--metrics-address", ANY_PORT]))
        .collect();
    let node_metrics: Vec<String> = nodes.iter().map(metrics_of).collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    scrape_until(&link_metrics, "2 nodes online", |s| {
        s.value("floret_nodes_online", &[]) == Some(f64::from(NODES))
    });

    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&["run", app, "e2e", "--run-config", QUICK, "--stream", "--format", "json"]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["rounds"].as_array().map(Vec::len), Some(ROUNDS as usize));

    let link_scrape = scrape_until(&link_metrics, "the finished run", |s| {
        s.value("floret_runs", &[("status", "finished:completed")]) == Some(1.0)
    });
    let node_scrapes: Vec<Scrape> = node_metrics.iter().map(|a| Scrape::of(a)).collect();
    let t = transport();
    let other = if t == "grpc" { "quic" } else { "grpc" };
    let fleet = [("api", "fleet"), ("transport", t)];
    let on_nodes = |name: &str, labels: &[(&str, &str)]| -> f64 {
        node_scrapes.iter().map(|s| s.count(name, labels)).sum()
    };

    let rounds = ROUNDS as f64;
    assert_eq!(link_scrape.value("floret_rounds_completed_total", &[]), Some(rounds));
    assert_eq!(link_scrape.value("floret_round_duration_seconds_count", &[]), Some(rounds));
    assert_eq!(
        link_scrape.value("floret_aggregation_seconds_count", &[("phase", "train")]),
        Some(rounds)
    );
    let expected = rounds * PHASES as f64 * f64::from(NODES);
    let sent = link_scrape.count("floret_messages_sent_total", &fleet);
    assert_eq!(sent, expected, "instructions the SuperLink sent");
    assert_eq!(on_nodes("floret_messages_received_total", &fleet), sent);
    let replies = link_scrape.count("floret_messages_received_total", &fleet);
    assert_eq!(replies, expected, "replies the SuperLink received");
    assert_eq!(on_nodes("floret_messages_sent_total", &fleet), replies);
    // Everything moved over this test's transport, and was counted there only.
    let elsewhere = [("api", "fleet"), ("transport", other)];
    assert_eq!(link_scrape.count("floret_messages_sent_total", &elsewhere), 0.0);
    assert_eq!(on_nodes("floret_messages_received_total", &elsewhere), 0.0);
    for (name, scrape) in [("SuperLink", &link_scrape), ("SuperNode", &node_scrapes[0])] {
        for metric in ["floret_bytes_sent_total", "floret_bytes_received_total"] {
            assert!(scrape.count(metric, &fleet) > 0.0, "{name} {metric}:\n{}", scrape.text);
        }
    }
    let control = [("api", "control"), ("transport", t)];
    assert!(link_scrape.count("floret_bytes_received_total", &control) > 0.0);

    assert_eq!(link_scrape.value("floret_runs", &[("status", "running")]), Some(0.0));
    assert_eq!(link_scrape.value("floret_nodes_online", &[]), Some(f64::from(NODES)));
    assert_eq!(link_scrape.value("floret_heartbeats_missed_total", &[]), Some(0.0));
    for scrape in &node_scrapes {
        assert_eq!(scrape.value("floret_reconnects_total", &[]), Some(0.0));
    }
    for help in ["floret_messages_sent_total", "floret_nodes_online", "floret_runs"] {
        assert!(link_scrape.text.contains(&format!("# HELP {help} ")), "no HELP for {help}");
    }
}
}

#[test]
fn a_vanished_node_is_a_missed_heartbeat_and_a_returning_one_a_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let fleet = format!("127.0.0.1:{}", free_port());
    let control = format!("127.0.0.1:{}", free_port());
    let start = |control: &str, metrics: &str| {
        let args = [
            "--database",
            db.to_str().unwrap(),
            "--metrics-address",
            metrics,
        ];
        SuperLink::start_with(&fleet, control, &args)
    };
    let mut link = start(&control, ANY_PORT);
    let link_metrics = metrics_of(&link.proc);
    let beat = ["--heartbeat-interval", "1"];
    let steady = supernode(
        &fleet,
        0,
        2,
        &[&beat[..], &["--metrics-address", ANY_PORT]].concat(),
    );
    let node_metrics = metrics_of(&steady);
    let mut doomed = supernode(&fleet, 1, 2, &beat);
    steady.expect_log(NODE_READY);
    doomed.expect_log(NODE_READY);
    scrape_until(&link_metrics, "2 nodes online", |s| {
        s.value("floret_nodes_online", &[]) == Some(2.0)
    });

    doomed.kill();
    scrape_until(&link_metrics, "the vanished node declared offline", |s| {
        s.value("floret_heartbeats_missed_total", &[]) == Some(1.0)
            && s.value("floret_nodes_online", &[]) == Some(1.0)
    });
    assert_eq!(
        Scrape::of(&node_metrics).value("floret_reconnects_total", &[]),
        Some(0.0)
    );

    // The SuperLink goes and comes back: the SuperNode's link is lost and made again.
    link.proc.kill();
    // Only the Fleet port must be the same for the node to find it again; a fresh Control
    // port leaves less for a parallel test's ephemeral port to collide with.
    let _link = start("127.0.0.1:0", ANY_PORT);
    scrape_until(&node_metrics, "the SuperNode's reconnect", |s| {
        s.value("floret_reconnects_total", &[]) == Some(1.0)
    });
}

/// A daemon started with `args` must exit 2 with one `error:` line containing `needles`.
fn refused(program: &str, args: &[&str], needles: &[&str]) {
    let mut proc = Proc::spawn(program, program, args);
    let status = proc.wait_exit(COMMAND_TIMEOUT);
    let stderr = proc.stderr();
    assert_eq!(status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} not in {:?}", errors[0]);
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_metrics_address_that_is_not_one_is_refused_naming_the_flag() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    refused(
        SUPERLINK,
        &[
            "--insecure",
            "--state-dir",
            state,
            "--metrics-address",
            "not-an-address",
        ],
        &["--metrics-address", "not-an-address", "HOST:PORT"],
    );
    refused(
        SUPERNODE,
        &["--insecure", "--metrics-address", "not-an-address"],
        &["--metrics-address", "HOST:PORT"],
    );
}

#[test]
fn a_metrics_port_in_use_is_refused_naming_the_flag() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let free = "127.0.0.1:0";
    refused(
        SUPERLINK,
        &[
            "--insecure",
            "--state-dir",
            state,
            "--fleet-api-address",
            free,
            "--control-api-address",
            free,
            "--metrics-address",
            &taken,
        ],
        &["--metrics-address", &taken, "already in use"],
    );
    refused(
        SUPERNODE,
        &[
            "--insecure",
            "--clientappio-api-address",
            free,
            "--metrics-address",
            &taken,
        ],
        &["--metrics-address", "already in use"],
    );
}

/// An unreachable OTLP collector costs spans, not the run, and the spans lost are counted.
#[test]
fn spans_an_unreachable_collector_cannot_take_are_counted_as_dropped() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--otlp-endpoint", &nowhere, "--metrics-address", ANY_PORT],
    );
    let metrics = metrics_of(&link.proc);
    let nodes: Vec<Proc> = (0..NODES)
        .map(|p| supernode(&link.fleet, p, NODES, &[]))
        .collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("digits", &link.control);
    let o = flwr(&[
        "run",
        app.path().to_str().unwrap(),
        "e2e",
        "--run-config",
        QUICK,
        "--stream",
        "--format",
        "json",
    ]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    // The batch goes out within the exporter's 5 s delay, and fails at once.
    let scrape = scrape_until(&metrics, "dropped spans", |s| {
        s.count("floret_trace_spans_dropped_total", &[]) > 0.0
    });
    assert_eq!(scrape.count("floret_trace_spans_exported_total", &[]), 0.0);
    assert!(
        scrape.count("floret_trace_spans_ended_total", &[])
            >= scrape.count("floret_trace_spans_dropped_total", &[]),
        "every dropped span had ended first"
    );
    assert_eq!(
        scrape.count("floret_rounds_completed_total", &[]),
        ROUNDS as f64
    );
}
