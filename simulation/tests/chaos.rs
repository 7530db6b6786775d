//! `options.chaos.*` on a real simulation: the quickstart app, FedAvg and the virtual fleet.
//! The fault counts each round reports are the ones the seeded decisions predict.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use floret_actors::state::SimulationStore;
use floret_actors::{MemoryLinkState, RunStatus, SubStatus};
use floret_core::{RoundSummary, RunEvent, message_type};
use floret_simulation::node_ids::node_id;
use floret_simulation::{Chaos, ChaosOptions, Fault, Outcome, SimulationError, SimulationOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn run_quickstart(
    nodes: u64,
    overrides: &str,
    chaos: &ChaosOptions,
) -> Result<(Outcome, Vec<RoundSummary>), SimulationError> {
    let options = SimulationOptions {
        num_supernodes: nodes,
        num_cpus: 1.0,
        num_gpus: 0.0,
    };
    let run = common::quickstart("chaos", overrides);
    let state: Arc<dyn SimulationStore> = Arc::new(MemoryLinkState::for_simulation());
    let mut rounds = Vec::new();
    let outcome = floret_simulation::run_with(&options, chaos, state, run, |e| {
        if let RunEvent::RoundFinished(s) = e {
            rounds.push(s.clone());
        }
    })
    .await?;
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    Ok((outcome, rounds))
}

/// How many of `nodes` virtual nodes get `fault` in that phase of that round.
fn predicted(
    chaos: &ChaosOptions,
    run_id: u64,
    round: u64,
    kind: &str,
    nodes: u64,
    fault: Fault,
) -> u64 {
    let chaos = Chaos::new(chaos).expect("faults asked for");
    (0..nodes)
        .filter(|&i| chaos.fault(run_id, &round.to_string(), kind, node_id(i)) == fault)
        .count() as u64
}

/// The counts of each phase of each round, which must repeat exactly under one seed.
fn counts(rounds: &[RoundSummary]) -> Vec<[(u64, u64, u64, u64); 2]> {
    rounds
        .iter()
        .map(|r| {
            [r.train.as_ref(), r.evaluate.as_ref()].map(|p| {
                let p = p.expect("both phases ran");
                (p.sampled, p.replies, p.failures, p.late)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropouts_are_seeded_failures_and_the_same_seed_repeats_the_run() {
    let nodes = 50;
    let chaos = ChaosOptions {
        dropout_rate: 0.3,
        seed: 7,
        ..ChaosOptions::default()
    };
    let overrides = "num-server-rounds=4 total-params=1000";
    let (outcome, rounds) = run_quickstart(nodes, overrides, &chaos).await.unwrap();
    assert_eq!(rounds.len(), 4);
    let mut total = 0;
    for r in &rounds {
        for (kind, phase) in [
            (message_type::TRAIN, r.train.as_ref()),
            (message_type::EVALUATE, r.evaluate.as_ref()),
        ] {
            let p = phase.expect("both phases ran");
            let dropped = predicted(&chaos, outcome.run_id, r.round, kind, nodes, Fault::Dropout);
            assert_eq!(p.sampled, nodes);
            assert_eq!(p.failures, dropped, "round {} {kind}", r.round);
            assert_eq!(p.replies, nodes - dropped, "round {} {kind}", r.round);
            assert_eq!(p.late, 0, "dropouts are answered at once, never late");
            // Seeded, so exact; and a 0.3 rate gives about 30 % each phase.
            assert!(
                (5..=25).contains(&dropped),
                "round {} {kind}: {dropped}",
                r.round
            );
            total += dropped;
        }
    }
    let share = total as f64 / (4 * 2 * nodes) as f64;
    assert!((share - 0.3).abs() < 0.08, "{share}");

    let (_, again) = run_quickstart(nodes, overrides, &chaos).await.unwrap();
    assert_eq!(counts(&rounds), counts(&again));
    for (a, b) in rounds.iter().zip(&again) {
        let loss = |r: &RoundSummary| {
            r.train
                .as_ref()
                .unwrap()
                .metrics
                .get_f64("train_loss")
                .unwrap()
        };
        assert!(
            (loss(a) - loss(b)).abs() <= 1e-9 * loss(a).abs().max(1.0),
            "round {}",
            a.round
        );
    }

    let other_seed = ChaosOptions {
        seed: 8,
        ..chaos.clone()
    };
    let (_, other) = run_quickstart(nodes, overrides, &other_seed).await.unwrap();
    assert_ne!(
        counts(&rounds),
        counts(&other),
        "another seed draws other faults"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stragglers_arrive_late_in_the_next_phase_and_cost_one_timeout_per_phase() {
    let nodes = 30;
    let chaos = ChaosOptions {
        straggler_rate: 0.2,
        seed: 3,
        ..ChaosOptions::default()
    };
    let timeout = 0.4;
    let started = Instant::now();
    let (outcome, rounds) = run_quickstart(
        nodes,
        &format!("num-server-rounds=3 total-params=1000 round-timeout={timeout}"),
        &chaos,
    )
    .await
    .unwrap();
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(rounds.len(), 3);
    let stragglers = |round: u64, kind: &str| {
        predicted(&chaos, outcome.run_id, round, kind, nodes, Fault::Straggler)
    };
    let mut late_total = 0;
    for r in &rounds {
        let train = r.train.as_ref().unwrap();
        let evaluate = r.evaluate.as_ref().unwrap();
        let in_train = stragglers(r.round, message_type::TRAIN);
        let in_evaluate = stragglers(r.round, message_type::EVALUATE);
        assert!(
            in_train > 0 && in_evaluate > 0,
            "seed 3 gives stragglers in every phase"
        );
        assert_eq!(
            (train.replies, train.failures),
            (nodes - in_train, 0),
            "round {}",
            r.round
        );
        assert_eq!(evaluate.replies, nodes - in_evaluate, "round {}", r.round);
        // The train stragglers' replies land in the evaluate phase, the evaluate
        // stragglers' in the next round's train phase.
        assert_eq!(evaluate.late, in_train, "round {}", r.round);
        let previous = match r.round {
            1 => 0,
            n => stragglers(n - 1, message_type::EVALUATE),
        };
        assert_eq!(train.late, previous, "round {}", r.round);
        late_total += evaluate.late + train.late;
    }
    assert!(late_total > 0);
    // Each of the 6 phases waits out its timeout once, and no more.
    assert!(wall >= 6.0 * timeout, "{wall} s");
    assert!(
        wall < 6.0 * timeout + 3.0,
        "{wall} s: stragglers cost more than one timeout per phase"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_every_reply_but_loses_none() {
    let nodes = 10;
    let chaos = ChaosOptions {
        latency: Duration::from_millis(60),
        latency_jitter: Duration::from_millis(20),
        seed: 1,
        ..ChaosOptions::default()
    };
    let started = Instant::now();
    let (_, rounds) = run_quickstart(nodes, "num-server-rounds=2 total-params=1000", &chaos)
        .await
        .unwrap();
    let wall = started.elapsed();
    for r in &rounds {
        for p in [r.train.as_ref().unwrap(), r.evaluate.as_ref().unwrap()] {
            assert_eq!(
                (p.sampled, p.replies, p.failures, p.late),
                (nodes, nodes, 0, 0)
            );
        }
    }
    // 4 phases, each waiting at least 60 ms for its replies.
    assert!(wall >= Duration::from_millis(240), "{wall:?}");
    assert!(wall < Duration::from_secs(5), "{wall:?}");
}

#[tokio::test]
async fn chaos_options_built_in_code_are_checked_too() {
    let chaos = ChaosOptions {
        dropout_rate: 0.7,
        straggler_rate: 0.5,
        ..ChaosOptions::default()
    };
    let err = run_quickstart(2, "num-server-rounds=1", &chaos)
        .await
        .expect_err("refused");
    assert!(
        matches!(&err, SimulationError::Options(m) if m.contains("more than 1")),
        "{err}"
    );
}
