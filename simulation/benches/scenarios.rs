//! TARGETS.md S1/S2 (and more): the quickstart app in simulation, wall time and peak RSS.
//!
//! `cargo bench -p floret-simulation --bench scenarios [-- S1 S2 ... --workers=N]`
//!
//! Each scenario runs in a fresh child process (this binary re-executed), so its peak RSS
//! (VmHWM) is its own and not the high-water mark of an earlier scenario. `--workers=N`
//! runs N ClientApp calls at once (by setting `num-cpus` just under cores / N); without
//! it, one per core. The last column is the start of the final model's sha256, which must
//! not change with the worker count. With `FLORET_BENCH_TIMELINE=1` each run's log lines
//! go to stderr with the seconds since the run started. `--nodes=N` replaces every chosen
//! scenario's node count: S3's per-message path at 50,000 nodes fits under `valgrind
//! --tool=callgrind`, whose instruction counts compare on a machine too busy for timings.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use floret_actors::MemoryLinkState;
use floret_core::run_config::{apply_overrides, parse_overrides};
use floret_core::{AppManifest, AppRef, RunEvent, UserConfigValue};
use floret_simulation::{ChaosOptions, SimulationOptions, SimulationRun};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

struct Scenario {
    id: &'static str,
    nodes: u64,
    params: u64,
    arrays: u64,
    rounds: u64,
    fraction: f64,
    /// `options.chaos.dropout-rate`; 0 keeps the fleet's fault-free path.
    dropout: f64,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        id: "S1",
        nodes: 1_000,
        params: 100_000,
        arrays: 4,
        rounds: 3,
        fraction: 1.0,
        dropout: 0.0,
    },
    Scenario {
        id: "S2",
        nodes: 10,
        params: 10_000_000,
        arrays: 4,
        rounds: 3,
        fraction: 1.0,
        dropout: 0.0,
    },
    Scenario {
        id: "S3",
        nodes: 1_000_000,
        params: 1_000,
        arrays: 1,
        rounds: 1,
        fraction: 1.0,
        dropout: 0.0,
    },
    Scenario {
        id: "S4",
        nodes: 100_000,
        params: 100_000,
        arrays: 4,
        rounds: 3,
        fraction: 0.01,
        dropout: 0.0,
    },
    Scenario {
        id: "S5",
        nodes: 10_000,
        params: 1_000_000,
        arrays: 4,
        rounds: 3,
        fraction: 1.0,
        dropout: 0.0,
    },
    // S1 with 30 % dropouts: what the chaos path costs (dropped nodes skip their work).
    Scenario {
        id: "S1-chaos",
        nodes: 1_000,
        params: 100_000,
        arrays: 4,
        rounds: 3,
        fraction: 1.0,
        dropout: 0.3,
    },
];

/// The allocator `flwr` uses, so the figures are the ones a user gets.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CHILD_ENV: &str = "FLORET_BENCH_SCENARIO";
/// Concurrent ClientApp calls, passed from `--workers=N` to the child.
const WORKERS_ENV: &str = "FLORET_BENCH_WORKERS";
/// `--nodes=N`, passed to the child.
const NODES_ENV: &str = "FLORET_BENCH_NODES";
/// Set (to anything) to print the run's log lines with the seconds since it started, on
/// stderr: where a scenario's time goes, phase by phase.
const TIMELINE_ENV: &str = "FLORET_BENCH_TIMELINE";

fn main() {
    if let Ok(id) = std::env::var(CHILD_ENV) {
        run_child(&id);
        return;
    }
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let workers = std::env::args()
        .find_map(|a| a.strip_prefix("--workers=")?.parse::<usize>().ok())
        .unwrap_or_else(cores)
        .max(1);
    let nodes = std::env::args().find_map(|a| a.strip_prefix("--nodes=")?.parse::<u64>().ok());
    let exe = std::env::current_exe().expect("bench binary path");
    println!(
        "| id | nodes | params | rounds | sampled | workers | wall (s) | peak RSS (MB) | model sha256 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for s in SCENARIOS {
        if !(wanted.is_empty() && matches!(s.id, "S1" | "S2") || wanted.iter().any(|w| w == s.id)) {
            continue;
        }
        let mut child = Command::new(&exe);
        child
            .env(CHILD_ENV, s.id)
            .env(WORKERS_ENV, workers.to_string());
        if let Some(n) = nodes {
            child.env(NODES_ENV, n.to_string());
        }
        let out = child.output().expect("run scenario");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or("").to_string();
        if std::env::var_os(TIMELINE_ENV).is_some() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        if !out.status.success() || line.is_empty() {
            eprintln!("{} failed: {}", s.id, String::from_utf8_lossy(&out.stderr));
            continue;
        }
        println!(
            "| {} | {} | {} | {} | {:.0} % | {workers} | {line} |",
            s.id,
            nodes.unwrap_or(s.nodes),
            s.params,
            s.rounds,
            s.fraction * 100.0
        );
    }
}

fn run_child(id: &str) {
    let s = SCENARIOS
        .iter()
        .find(|s| s.id == id)
        .expect("known scenario");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/quickstart/pyproject.toml");
    let text = std::fs::read_to_string(&path).expect("quickstart pyproject.toml");
    let manifest = AppManifest::parse(&text, &path).expect("valid manifest");
    let overrides = parse_overrides(&format!(
        "num-server-rounds={} total-params={} num-arrays={} fraction-train={:?} fraction-evaluate={:?}",
        s.rounds, s.params, s.arrays, s.fraction, s.fraction
    ))
    .expect("overrides");
    let mut run_config = apply_overrides(&manifest.config, &overrides).expect("known keys");
    run_config.insert("round-timeout".into(), UserConfigValue::Float(600.0));
    let workers: usize = std::env::var(WORKERS_ENV)
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(cores);
    let nodes = std::env::var(NODES_ENV)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(s.nodes);
    let options = SimulationOptions {
        num_supernodes: nodes,
        // Half a worker more than asked for, so that rounding never gives one fewer.
        num_cpus: cores() as f64 / (workers as f64 + 0.5),
        num_gpus: 0.0,
    };
    assert_eq!(options.workers(), workers, "num-cpus for {workers} workers");
    let timeline = std::env::var_os(TIMELINE_ENV).is_some();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut digest = String::from("-");
    let started = Instant::now();
    let outcome = runtime
        .block_on(floret_simulation::run_with(
            &options,
            &ChaosOptions {
                dropout_rate: s.dropout,
                seed: 1,
                ..ChaosOptions::default()
            },
            Arc::new(MemoryLinkState::for_simulation()),
            SimulationRun {
                app: AppRef {
                    name: "quickstart".into(),
                    ..AppRef::default()
                },
                federation: format!("bench-{id}"),
                run_config,
                server_app: floret_app_quickstart::server_app(),
                client_app: floret_app_quickstart::client_app(),
            },
            |e| {
                if let RunEvent::Log(line) = e {
                    if timeline {
                        eprintln!("{:>8.3} s  {line}", started.elapsed().as_secs_f64());
                    }
                    if let Some(hex) = line.strip_prefix("final model sha256 ") {
                        digest = hex.chars().take(12).collect();
                    }
                }
            },
        ))
        .expect("simulation runs");
    let wall = started.elapsed().as_secs_f64();
    assert!(outcome.status.is_finished(), "{outcome:?}");
    if !outcome.reason.is_empty() {
        eprintln!("{id}: {}: {}", outcome.status, outcome.reason);
        std::process::exit(1);
    }
    println!("{wall:.3} | {:.0} | {digest}", peak_rss_mb());
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// VmHWM of this process, in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
