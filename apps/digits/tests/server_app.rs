//! The digits app as `flwr run apps/digits` runs it: the real simulation runtime, 10 virtual
//! nodes, the shipped run config — and the held-out accuracy the product promises.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::run_config;
use floret_app_digits::{CLIENT_COMPONENT, SERVER_COMPONENT, client_app, server_app};
use floret_core::{AppRef, RunEvent, RunStatus, SubStatus, UserConfigValue};
use floret_simulation::{SimulationOptions, SimulationRun};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_ten_rounds_reach_ninety_percent_held_out_accuracy() {
    let run = SimulationRun {
        app: AppRef {
            name: "digits".into(),
            serverapp: SERVER_COMPONENT.into(),
            clientapp: CLIENT_COMPONENT.into(),
            fab_hash: String::new(),
        },
        federation: "local-simulation".into(),
        run_config: run_config(),
        server_app: server_app(),
        client_app: client_app(),
    };
    let options = SimulationOptions {
        num_supernodes: 10,
        num_cpus: 1.0,
        num_gpus: 0.0,
    };
    let mut events = Vec::new();
    let outcome = floret_simulation::run(&options, run, |e| events.push(e.clone()))
        .await
        .unwrap();
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    let rounds: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            RunEvent::RoundFinished(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(rounds.len(), 10);
    for round in &rounds {
        let train = round.train.as_ref().unwrap();
        assert_eq!(
            (train.sampled, train.replies, train.failures),
            (10, 10, 0),
            "{round:?}"
        );
        let acc = round
            .evaluate
            .as_ref()
            .unwrap()
            .metrics
            .get_f64("eval_acc")
            .unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
    let accuracy = rounds[9]
        .central
        .as_ref()
        .unwrap()
        .get_f64("accuracy")
        .unwrap();
    assert!(accuracy >= 0.90, "held-out accuracy {accuracy}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RunEvent::Log(l) if l.contains("test accuracy")))
    );
}

#[test]
fn a_bad_run_config_is_refused_before_the_run() {
    let mut rc = run_config();
    rc.insert("lr".into(), UserConfigValue::Float(-1.0));
    let err = server_app().check_config(&rc).unwrap_err().to_string();
    assert!(err.contains("lr"), "{err}");
    assert!(server_app().check_config(&run_config()).is_ok());
}
