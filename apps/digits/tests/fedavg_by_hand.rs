//! The product requirement at the model level: ten IID nodes, FedAvg by hand (the weighted
//! mean of the ten updated models, weights = num-examples) for the pyproject's rounds, must
//! reach at least 90 % accuracy on the held-out test split. No runtime: the ClientApp's
//! handlers are called directly with the messages FedAvg would send.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{node_ctx, run_config, server_config, train_message};
use floret_app_digits::model::Mlp;
use floret_app_digits::{central_evaluate, client_app};
use floret_core::{Array, ArrayRecord, UserConfigValue};

const NODES: i64 = 10;

/// Weighted mean of float32 records with the same keys and shapes.
fn weighted_mean(replies: &[(ArrayRecord, f64)]) -> ArrayRecord {
    let total: f64 = replies.iter().map(|(_, w)| w).sum();
    let (first, _) = &replies[0];
    first
        .iter()
        .map(|(key, array)| {
            let mut sum = vec![0f64; array.num_elements().unwrap()];
            for (record, weight) in replies {
                let values = record.get(key).unwrap().values::<f32>().unwrap();
                for (s, v) in sum.iter_mut().zip(values.iter()) {
                    *s += f64::from(*v) * weight;
                }
            }
            let mean = sum.iter().map(|s| (s / total) as f32).collect();
            (key.clone(), Array::from_vec(array.shape.clone(), mean))
        })
        .collect()
}

#[test]
fn ten_iid_nodes_reach_ninety_percent_in_the_configured_rounds() {
    let started = std::time::Instant::now();
    let run_config = run_config();
    assert_eq!(
        run_config["partitioner"],
        UserConfigValue::Str("iid".into())
    );
    let cfg = server_config(&run_config);
    assert_eq!(cfg.num_server_rounds, 10);
    let app = client_app();
    let evaluate = central_evaluate(cfg.data.seed);
    let mut contexts: Vec<_> = (0..NODES)
        .map(|p| node_ctx(p, NODES, &run_config))
        .collect();
    let mut global = Mlp::init(cfg.data.seed).to_arrays();
    let initial = evaluate(0, &global).unwrap().get_f64("accuracy").unwrap();
    let mut accuracy = Vec::new();
    for round in 1..=cfg.num_server_rounds as i64 {
        let replies: Vec<(ArrayRecord, f64)> = contexts
            .iter_mut()
            .map(|ctx| {
                let msg = train_message(&global, round, &cfg, ctx.node_id);
                let reply = app.handle(&msg, ctx).unwrap();
                let n = reply
                    .metric_record("metrics")
                    .unwrap()
                    .get_f64("num-examples")
                    .unwrap();
                (reply.array_record("arrays").unwrap().clone(), n)
            })
            .collect();
        global = weighted_mean(&replies);
        let metrics = evaluate(round as u64, &global).unwrap();
        accuracy.push(metrics.get_f64("accuracy").unwrap());
    }
    eprintln!(
        "by-hand FedAvg, {NODES} IID nodes: initial accuracy {initial:.4}, per round {:?}, in {:?}",
        accuracy
            .iter()
            .map(|a| format!("{a:.4}"))
            .collect::<Vec<_>>(),
        started.elapsed()
    );
    assert!(
        initial < 0.3,
        "an untrained model is not already good: {initial}"
    );
    let last = *accuracy.last().unwrap();
    assert!(
        last >= 0.90,
        "test accuracy after {} rounds: {last} ({accuracy:?})",
        accuracy.len()
    );
}
