//! ClientApps that panic, fail or stall on a share of the nodes each round: the run still
//! completes, the faulty replies are counted and left out, the survivors are aggregated.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use floret_actors::{RunStatus, SubStatus};
use floret_chaos_tests::client_faults::{Fault, FaultPlan, inject};
use floret_core::run_config::{apply_overrides, parse_overrides};
use floret_core::{AppManifest, AppRef, RoundSummary, RunEvent};
use floret_simulation::{Outcome, SimulationOptions, SimulationRun};
use std::path::Path;

async fn run_quickstart(
    nodes: u64,
    overrides: &str,
    plan: FaultPlan,
) -> (Outcome, Vec<RoundSummary>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/quickstart/pyproject.toml");
    let manifest = AppManifest::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    let run_config =
        apply_overrides(&manifest.config, &parse_overrides(overrides).unwrap()).unwrap();
    let options = SimulationOptions {
        num_supernodes: nodes,
        num_cpus: 1.0,
        num_gpus: 0.0,
    };
    let run = SimulationRun {
        app: AppRef {
            name: "quickstart".into(),
            ..AppRef::default()
        },
        federation: "chaos".into(),
        run_config,
        server_app: floret_app_quickstart::server_app(),
        client_app: inject(floret_app_quickstart::client_app(), plan),
    };
    let mut rounds = Vec::new();
    let outcome = floret_simulation::run(&options, run, |e| {
        if let RunEvent::RoundFinished(s) = e {
            rounds.push(s.clone());
        }
    })
    .await
    .unwrap();
    (outcome, rounds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panicking_clientapps_on_some_nodes_do_not_stop_the_run() {
    let plan = FaultPlan {
        fault: Fault::Panic,
        fraction: 0.3,
        seed: 11,
    };
    let (outcome, rounds) = run_quickstart(40, "num-server-rounds=3 total-params=1000", plan).await;
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    assert_eq!(rounds.len(), 3);
    for (i, r) in rounds.iter().enumerate() {
        let train = r.train.as_ref().unwrap();
        let expected: u64 = (0..40).filter(|&p| plan.hits(p, i as i64 + 1)).count() as u64;
        assert_eq!(train.sampled, 40);
        assert_eq!(train.failures, expected, "round {}", r.round);
        assert_eq!(train.replies, 40 - expected, "round {}", r.round);
        assert!(train.metrics.get_f64("num-examples").unwrap() > 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_clientapps_are_counted_and_left_out() {
    let plan = FaultPlan {
        fault: Fault::Error,
        fraction: 0.5,
        seed: 3,
    };
    let (outcome, rounds) = run_quickstart(20, "num-server-rounds=2 total-params=100", plan).await;
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    let failures: u64 = rounds
        .iter()
        .map(|r| r.train.as_ref().unwrap().failures)
        .sum();
    let expected: u64 = (1..=2)
        .map(|round| (0..20).filter(|&p| plan.hits(p, round)).count() as u64)
        .sum();
    assert_eq!(failures, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stragglers_past_the_round_timeout_do_not_hold_the_run() {
    // Every node stalls for 2 s; the round timeout is 0.3 s. Rounds must end at the
    // timeout with whatever arrived, and the run must still complete.
    let plan = FaultPlan {
        fault: Fault::Delay(std::time::Duration::from_secs(2)),
        fraction: 1.0,
        seed: 1,
    };
    let (outcome, rounds) = run_quickstart(
        4,
        "num-server-rounds=2 total-params=100 round-timeout=0.3",
        plan,
    )
    .await;
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    assert_eq!(rounds.len(), 2);
    for r in &rounds {
        let train = r.train.as_ref().unwrap();
        assert_eq!(train.replies, 0, "no straggler can answer inside 0.3 s");
    }
}
