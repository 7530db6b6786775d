//! TARGETS.md S1/S2 (and more): the quickstart app in simulation, wall time and peak RSS.
//!
//! `cargo bench -p floret-simulation --bench scenarios [-- S1 S2 ... --workers=N[,N...]]`
//!
//! Each scenario runs in a fresh child process (this binary re-executed), so its peak RSS
//! (VmHWM) is its own and not the high-water mark of an earlier scenario. `--workers=N`
//! runs N ClientApp calls at once (by setting `num-cpus` just under cores / N); without
//! it, one per core. A list (`--workers=1,2,8,16`) is the scaling table: each scenario at
//! each count, with its speed-up over the first count and the parallel efficiency (speed-up
//! over the ratio of worker counts). The model column is the start of the final model's
//! sha256, which must not change with the worker count. With `FLORET_BENCH_TIMELINE=1` each run's log lines
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
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("scenarios: {e}");
            std::process::exit(2);
        }
    };
    let exe = std::env::current_exe().expect("bench binary path");
    println!(
        "| id | nodes | params | rounds | sampled | workers | wall (s) | peak RSS (MB) | model sha256 | speed-up | efficiency |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for s in SCENARIOS {
        if !args.wants(s.id) {
            continue;
        }
        // The first worker count's wall time, against which the others' speed-up is told.
        let mut base: Option<(usize, f64)> = None;
        for &workers in &args.workers {
            let mut child = Command::new(&exe);
            child
                .env(CHILD_ENV, s.id)
                .env(WORKERS_ENV, workers.to_string());
            if let Some(n) = args.nodes {
                child.env(NODES_ENV, n.to_string());
            }
            let out = child.output().expect("run scenario");
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text.lines().last().unwrap_or("").to_string();
            if std::env::var_os(TIMELINE_ENV).is_some() {
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
            if !out.status.success() || line.is_empty() {
                eprintln!(
                    "{} at {workers} workers failed: {}",
                    s.id,
                    String::from_utf8_lossy(&out.stderr)
                );
                continue;
            }
            let wall: Option<f64> = line.split('|').next().and_then(|w| w.trim().parse().ok());
            let scaling = match (base, wall) {
                (None, Some(wall)) => {
                    base = Some((workers, wall));
                    "1.00 | -".to_string()
                }
                (Some((w0, t0)), Some(wall)) => {
                    let speed_up = t0 / wall;
                    let efficiency = speed_up / (workers as f64 / w0 as f64);
                    format!("{speed_up:.2} | {:.0} %", efficiency * 100.0)
                }
                (_, None) => "- | -".to_string(),
            };
            println!(
                "| {} | {} | {} | {} | {:.0} % | {workers} | {line} | {scaling} |",
                s.id,
                args.nodes.unwrap_or(s.nodes),
                s.params,
                s.rounds,
                s.fraction * 100.0
            );
        }
    }
}

/// What the command line asks for: scenario ids, worker counts, a node count.
#[derive(Debug, PartialEq)]
struct Args {
    /// Scenario ids; none means S1 and S2.
    ids: Vec<String>,
    /// `--workers=N[,N...]`, in the order given: one row per count and scenario, speed-up
    /// and parallel efficiency told against the first. One per core without it.
    workers: Vec<usize>,
    /// `--nodes=N`.
    nodes: Option<u64>,
}

impl Args {
    /// Reads the bench's arguments; other flags (`cargo bench` passes `--bench`) are left
    /// to cargo's harness conventions and ignored.
    fn parse(args: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut parsed = Args {
            ids: Vec::new(),
            workers: vec![cores()],
            nodes: None,
        };
        for arg in args {
            if let Some(list) = arg.strip_prefix("--workers=") {
                parsed.workers = list
                    .split(',')
                    .map(|w| match w.trim().parse::<usize>() {
                        Ok(n) if n > 0 => Ok(n),
                        _ => Err(format!(
                            "--workers={list}: {w:?} is not a worker count; pass counts of 1 \
                             or more, e.g. --workers=1,2,8,16"
                        )),
                    })
                    .collect::<Result<_, _>>()?;
            } else if let Some(n) = arg.strip_prefix("--nodes=") {
                parsed.nodes = Some(match n.parse::<u64>() {
                    Ok(n) if n > 0 => n,
                    _ => {
                        return Err(format!(
                            "--nodes={n}: not a node count; pass 1 or more, e.g. --nodes=50000"
                        ));
                    }
                });
            } else if !arg.starts_with('-') {
                if !SCENARIOS.iter().any(|s| s.id == arg) {
                    let known: Vec<&str> = SCENARIOS.iter().map(|s| s.id).collect();
                    return Err(format!(
                        "no scenario {arg:?}; pass some of {}",
                        known.join(" ")
                    ));
                }
                parsed.ids.push(arg);
            }
        }
        Ok(parsed)
    }

    fn wants(&self, id: &str) -> bool {
        if self.ids.is_empty() {
            matches!(id, "S1" | "S2")
        } else {
            self.ids.iter().any(|w| w == id)
        }
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
