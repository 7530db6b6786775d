//! Same seed, same model, at any worker count (TARGETS.md DT).
//!
//! The quickstart app on a few hundred nodes, run once with one worker and once with
//! eight: the final model's sha256 (FedAvg logs it) must be the same. Before replies were
//! folded in a canonical order this failed: float addition is not associative, and with
//! several workers the replies arrive, and were summed, in an order set by timing.

// Tests may unwrap (a failure is the test failing).
#![allow(clippy::unwrap_used)]

mod common;

use floret_core::RunEvent;
use floret_simulation::SimulationOptions;

/// `num-cpus` that gives `workers` concurrent ClientApp calls on this machine.
fn num_cpus_for(workers: usize) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores as f64 / workers as f64
}

/// Runs the quickstart app and returns the final model's sha256 as FedAvg logged it.
async fn final_model(workers: usize) -> String {
    let options = SimulationOptions {
        num_supernodes: 400,
        num_cpus: num_cpus_for(workers),
        num_gpus: 0.0,
    };
    assert_eq!(options.workers(), workers);
    let mut digest = None;
    let outcome = floret_simulation::run(
        &options,
        common::quickstart(
            "determinism",
            "num-server-rounds=2 total-params=4000 num-arrays=2 fraction-train=1.0 fraction-evaluate=0.0",
        ),
        |e| {
            if let RunEvent::Log(line) = e
                && let Some(hex) = line.strip_prefix("final model sha256 ")
            {
                digest = Some(hex.to_string());
            }
        },
    )
    .await
    .unwrap();
    assert!(outcome.reason.is_empty(), "{}", outcome.reason);
    digest.expect("FedAvg logs the final model's sha256")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_eight_workers_give_a_bit_identical_model() {
    let one = final_model(1).await;
    for _ in 0..3 {
        assert_eq!(final_model(8).await, one, "eight workers changed the model");
    }
}
