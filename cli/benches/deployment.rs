//! D1 and D2 of TARGETS.md on loopback, with the release binaries:
//!
//! - D1: wall time of `flwr run` of the quickstart app (100k params in 4 arrays, 3 rounds)
//!   against a SuperLink with 2 SuperNodes that are already up, `--stream` included, from
//!   process start to exit.
//! - D2: resident memory (VmRSS) of `flower-superlink` and `flower-supernode`, idle after
//!   the SuperNodes connected, and again idle after the D1 runs.
//!
//! Both run once per transport: gRPC and QUIC (the SuperLink serves both; the SuperNodes
//! and the federation pick one), all `--insecure` (QUIC is TLS 1.3 even then).
//!
//! `cargo bench -p floret-cli --bench deployment [-- RUNS]` (default 5 runs).

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::*;

fn vm_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn memory_rows(label: &str, link: &SuperLink, nodes: &[Proc]) {
    let link_kb = vm_rss_kb(link.proc.pid());
    let t = transport();
    println!(
        "| {t} | {label} | flower-superlink | {:.1} | {} |",
        mb(link_kb),
        threads(link.proc.pid())
    );
    for node in nodes {
        println!(
            "| {t} | {label} | flower-supernode ({}) | {:.1} | {} |",
            node.name,
            mb(vm_rss_kb(node.pid())),
            threads(node.pid())
        );
    }
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let mut d1 = Vec::new();
    println!("## D2: idle resident memory\n");
    println!("| transport | when | process | VmRSS (MB) | threads |");
    println!("|---|---|---|---|---|");
    for transport in ["grpc", "quic"] {
        use_transport(transport);
        d1.push((transport, deployment(runs)));
    }
    println!("\n## D1: `flwr run` of quickstart, 100k params, 3 rounds, 2 SuperNodes\n");
    println!(
        "| transport | runs | wall min (s) | wall median (s) | wall max (s) | run median, as flwr reports it (s) |"
    );
    println!("|---|---|---|---|---|---|");
    for (transport, (walls, inner)) in d1 {
        let median = |v: &[f64]| v[v.len() / 2];
        println!(
            "| {transport} | {runs} | {:.3} | {:.3} | {:.3} | {:.3} |",
            walls[0],
            median(&walls),
            walls[walls.len() - 1],
            median(&inner)
        );
    }
}

/// A SuperLink and 2 SuperNodes on the current transport: prints D2's rows, returns D1's
/// sorted wall times (whole command, and as flwr reports the run).
fn deployment(runs: usize) -> (Vec<f64>, Vec<f64>) {
    let link = SuperLink::start();
    let nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    // Let start-up allocations settle before measuring "idle".
    std::thread::sleep(Duration::from_secs(2));
    memory_rows("idle after connect", &link, &nodes);

    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();
    let mut walls = Vec::new();
    let mut inner = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let o = flwr(&["run", app, "e2e", "--stream", "--format", "json"]);
        let wall = started.elapsed();
        assert_eq!(o.code, Some(0), "flwr run failed: {}", o.stderr);
        let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
        assert_eq!(report["status"], "finished:completed");
        walls.push(wall.as_secs_f64());
        inner.push(report["wall_s"].as_f64().unwrap());
    }
    std::thread::sleep(Duration::from_secs(2));
    memory_rows("idle after the D1 runs", &link, &nodes);
    walls.sort_by(f64::total_cmp);
    inner.sort_by(f64::total_cmp);
    (walls, inner)
}
