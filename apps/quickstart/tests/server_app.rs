//! The quickstart app through the real simulation runtime: FedAvg drives the noisy
//! ClientApp for the configured rounds.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use floret_app_quickstart::{PYPROJECT, client_app, initial_arrays, server_app};
use floret_core::run_config::{apply_overrides, parse_overrides};
use floret_core::{AppManifest, AppRef, RunEvent, RunStatus, SubStatus};
use floret_simulation::{SimulationOptions, SimulationRun};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_rounds_of_noise_over_five_nodes() {
    let manifest = AppManifest::parse(PYPROJECT, Path::new("pyproject.toml")).unwrap();
    let overrides = parse_overrides("num-server-rounds=3 total-params=1001 num-arrays=3").unwrap();
    let run = SimulationRun {
        app: AppRef {
            name: "quickstart".into(),
            ..AppRef::default()
        },
        federation: "local-simulation".into(),
        run_config: apply_overrides(&manifest.config, &overrides).unwrap(),
        server_app: server_app(),
        client_app: client_app(),
    };
    let options = SimulationOptions {
        num_supernodes: 5,
        num_cpus: 1.0,
        num_gpus: 0.0,
    };
    let mut rounds = Vec::new();
    let outcome = floret_simulation::run(&options, run, |e| {
        if let RunEvent::RoundFinished(s) = e {
            rounds.push(s.clone());
        }
    })
    .await
    .unwrap();
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    assert_eq!(rounds.len(), 3);
    for round in &rounds {
        let train = round.train.as_ref().unwrap();
        assert_eq!((train.replies, train.failures), (5, 0), "{round:?}");
        let loss = train.metrics.get_f64("train_loss").unwrap();
        assert!((0.004..0.006).contains(&loss), "{loss}");
        assert_eq!(round.evaluate.as_ref().unwrap().replies, 5);
    }
}

#[test]
fn initial_arrays_split_the_parameters_evenly() {
    let arrays = initial_arrays(1001, 3);
    let sizes: Vec<i32> = arrays.iter().map(|(_, a)| a.shape[0]).collect();
    assert_eq!(sizes, [334, 334, 333]);
}
