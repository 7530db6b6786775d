//! Same seed, same model, at any worker count (TARGETS.md DT).
//!
//! The quickstart app on a few hundred nodes, run once with one worker and once with
//! eight: the final model's sha256 (FedAvg logs it) must be the same. Before replies were
//! folded in a canonical order this failed: float addition is not associative, and with
//! several workers the replies arrive, and were summed, in an order set by timing. Every
//! reply is folded by the worker that made it, shards side by side
//! (`Grid::broadcast_folding`): the model must not change for that either, and no reply
//! may wait, whole, in the state, small or large.

// Tests may unwrap (a failure is the test failing).
#![allow(clippy::unwrap_used)]

mod common;

use floret_actors::MemoryLinkState;
use floret_actors::state::SimulationStore;
use floret_core::RunEvent;
use floret_simulation::{ChaosOptions, SimulationOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// `num-cpus` that gives `workers` concurrent ClientApp calls on this machine.
fn num_cpus_for(workers: usize) -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores as f64 / workers as f64
}

/// Runs the quickstart app with `overrides` and returns the final model's sha256 as
/// FedAvg logged it, and the most array bytes that ever waited in the state.
async fn final_model(workers: usize, overrides: &str) -> (String, usize) {
    let options = SimulationOptions {
        num_supernodes: 400,
        num_cpus: num_cpus_for(workers),
        num_gpus: 0.0,
    };
    assert_eq!(options.workers(), workers);
    let state = Arc::new(MemoryLinkState::for_simulation());
    let watched = state.clone();
    let done = Arc::new(AtomicBool::new(false));
    let watching = done.clone();
    let watcher = tokio::spawn(async move {
        let mut most = 0;
        while !watching.load(Ordering::Relaxed) {
            most = most.max(watched.replies_waiting().bytes);
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
        most
    });
    let mut digest = None;
    let outcome = floret_simulation::run_with(
        &options,
        &ChaosOptions::default(),
        state,
        common::quickstart("determinism", overrides),
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
    done.store(true, Ordering::Relaxed);
    assert!(outcome.reason.is_empty(), "{}", outcome.reason);
    let digest = digest.expect("FedAvg logs the final model's sha256");
    (digest, watcher.await.unwrap())
}

const SMALL: &str =
    "num-server-rounds=2 total-params=4000 num-arrays=2 fraction-train=1.0 fraction-evaluate=0.0";
/// 160 KB replies: folded where they are made.
const LARGE: &str =
    "num-server-rounds=2 total-params=40000 num-arrays=2 fraction-train=1.0 fraction-evaluate=0.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_and_eight_workers_give_a_bit_identical_model() {
    let (one, waited) = final_model(1, SMALL).await;
    assert_eq!(waited, 0, "a small reply waited whole in the state");
    for _ in 0..3 {
        let (eight, waited) = final_model(8, SMALL).await;
        assert_eq!(eight, one, "eight workers changed the model");
        assert_eq!(waited, 0, "a small reply waited whole in the state");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_folded_by_the_workers_give_the_same_model_and_never_wait_whole() {
    let (one, waited) = final_model(1, LARGE).await;
    assert_eq!(waited, 0, "a 160 KB reply waited whole in the state");
    for _ in 0..2 {
        let (eight, waited) = final_model(8, LARGE).await;
        assert_eq!(
            eight, one,
            "eight workers folding side by side changed the model"
        );
        assert_eq!(waited, 0, "a 160 KB reply waited whole in the state");
    }
}
