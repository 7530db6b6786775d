//! A long simulation keeps flat memory: 300 rounds of FedAvg over 100 virtual nodes, with
//! the LinkState holding no message between rounds and the process's resident memory at
//! round 300 close to what it was at round 50. Its own test binary, so no other test's
//! allocations move the RSS it reads.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use async_trait::async_trait;
use floret_actors::state::SimulationStore;
use floret_actors::{LinkState, MemoryLinkState, RunStatus, SubStatus};
use floret_core::{
    AppError, AppRef, Array, ArrayRecord, ConfigRecord, Context, Grid, RunEvent, ServerApp,
};
use floret_simulation::{ChaosOptions, SimulationOptions, SimulationRun};
use floret_strategies::{FedAvg, FedAvgConfig};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NODES: u64 = 100;
const ROUNDS: u64 = 300;

/// What the server saw after each round: messages held by the LinkState, resident bytes.
#[derive(Default)]
struct Samples {
    held: Vec<usize>,
    rss: Vec<u64>,
}

/// Runs FedAvg one round per `start` call, so that it can look into the LinkState after
/// each round has fully ended (both phases folded) and before the next one sends.
struct Server {
    state: Arc<dyn LinkState>,
    samples: Arc<Mutex<Samples>>,
}

#[async_trait]
impl ServerApp for Server {
    async fn main(&self, grid: &dyn Grid, _ctx: Context) -> Result<(), AppError> {
        let strategy = FedAvg::new(FedAvgConfig {
            min_available_nodes: NODES as usize,
            seed: Some(1),
            ..FedAvgConfig::default()
        })
        .map_err(AppError::other)?;
        let mut arrays = ArrayRecord::new();
        arrays.insert("layer_0", Array::zeros::<f32>(vec![2_000]));
        for _ in 0..ROUNDS {
            let history = strategy
                .start(
                    grid,
                    arrays,
                    1,
                    Duration::from_secs(60),
                    ConfigRecord::new(),
                    ConfigRecord::new(),
                )
                .await
                .map_err(AppError::other)?;
            let round = history
                .rounds
                .first()
                .ok_or_else(|| AppError::other("no round"))?;
            let train = round
                .train
                .as_ref()
                .ok_or_else(|| AppError::other("no train"))?;
            if train.replies != NODES {
                return Err(AppError::other(format!("round lost replies: {train:?}")));
            }
            arrays = history.arrays;
            let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            samples.held.push(self.state.held_messages());
            samples.rss.push(resident_bytes());
        }
        Ok(())
    }
}

/// Resident set size from /proc/self/statm (its second field, in pages).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_rounds_hold_no_messages_and_flat_memory() {
    let state: Arc<dyn SimulationStore> = Arc::new(MemoryLinkState::for_simulation());
    let samples = Arc::new(Mutex::new(Samples::default()));
    let server = Server {
        state: state.clone(),
        samples: samples.clone(),
    };
    let options = SimulationOptions {
        num_supernodes: NODES,
        num_cpus: 1.0,
        num_gpus: 0.0,
    };
    let mut finished_rounds = 0;
    let outcome = floret_simulation::run_with(
        &options,
        &ChaosOptions::default(),
        state.clone(),
        SimulationRun {
            app: AppRef {
                name: "long-run".into(),
                ..AppRef::default()
            },
            federation: "local".into(),
            run_config: Default::default(),
            server_app: Arc::new(server),
            client_app: floret_app_quickstart::client_app(),
        },
        |e| {
            if let RunEvent::RoundFinished(_) = e {
                finished_rounds += 1;
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    assert_eq!(finished_rounds, ROUNDS);
    let samples = samples.lock().unwrap();
    assert_eq!(samples.held.len(), ROUNDS as usize);
    // Every instruction was answered and every reply taken: nothing is held between
    // rounds, at the start of the run or after 300 rounds (60,000 messages and replies).
    assert!(
        samples.held.iter().all(|&held| held == 0),
        "messages held after rounds: {:?}",
        samples
            .held
            .iter()
            .enumerate()
            .filter(|(_, h)| **h > 0)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert_eq!(state.held_messages(), 0);
    // Each round moves 200 messages carrying 8 KB models; kept, 250 rounds of them would
    // be 400 MB. Allow 32 MB of allocator and event-log growth.
    let (at_50, at_300) = (samples.rss[49], samples.rss[ROUNDS as usize - 1]);
    assert!(at_50 > 0, "/proc/self/statm is readable");
    eprintln!(
        "RSS after round 50: {:.1} MB, after round {ROUNDS}: {:.1} MB",
        at_50 as f64 / 1048576.0,
        at_300 as f64 / 1048576.0
    );
    assert!(
        at_300 <= at_50 + 32 * 1024 * 1024,
        "RSS grew from {} MB at round 50 to {} MB at round 300",
        at_50 >> 20,
        at_300 >> 20
    );
}
