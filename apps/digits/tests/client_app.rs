//! The ClientApp's handlers, called directly with the messages a FedAvg server sends.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{evaluate_message, node_ctx, run_config, server_config, train_message};
use floret_app_digits::model::Mlp;
use floret_app_digits::{client_app, node_data};
use floret_core::{MetricValue, UserConfigValue};

#[test]
fn train_returns_same_layout_and_the_partition_size() {
    let run_config = run_config();
    let cfg = server_config(&run_config);
    let global = Mlp::init(7).to_arrays();
    let mut ctx = node_ctx(3, 10, &run_config);
    let expected_examples = node_data(&ctx).unwrap().train.len();
    // 1437 pooled images / 10 partitions, 80 % of each for training.
    assert!(
        (110..=120).contains(&expected_examples),
        "{expected_examples}"
    );
    let reply = client_app()
        .handle(&train_message(&global, 1, &cfg, ctx.node_id), &mut ctx)
        .unwrap();
    let arrays = reply.array_record("arrays").unwrap();
    let layout = |r: &floret_core::ArrayRecord| -> Vec<(String, Vec<i32>, String)> {
        r.iter()
            .map(|(k, a)| (k.clone(), a.shape.clone(), a.dtype.as_str().to_string()))
            .collect()
    };
    assert_eq!(layout(arrays), layout(&global));
    assert_ne!(arrays, &global, "training changed the model");
    let metrics = reply.metric_record("metrics").unwrap();
    assert_eq!(
        metrics.get("num-examples").unwrap(),
        &MetricValue::I64(expected_examples as i64)
    );
    let loss = metrics.get_f64("train_loss").unwrap();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
}

#[test]
fn train_is_deterministic() {
    let run_config = run_config();
    let cfg = server_config(&run_config);
    let global = Mlp::init(7).to_arrays();
    let run = |pid: i64, round: i64| {
        let mut ctx = node_ctx(pid, 10, &run_config);
        let msg = train_message(&global, round, &cfg, ctx.node_id);
        client_app()
            .handle(&msg, &mut ctx)
            .unwrap()
            .array_record("arrays")
            .unwrap()
            .clone()
    };
    assert_eq!(run(2, 1), run(2, 1));
    assert_ne!(run(2, 1), run(3, 1));
    assert_ne!(run(2, 1), run(2, 2));
}

#[test]
fn evaluate_reports_accuracy_in_unit_interval_on_the_validation_share() {
    let run_config = run_config();
    let mut ctx = node_ctx(0, 10, &run_config);
    let validation = node_data(&ctx).unwrap().validation.len();
    let reply = client_app()
        .handle(
            &evaluate_message(&Mlp::init(1).to_arrays(), 1, ctx.node_id),
            &mut ctx,
        )
        .unwrap();
    let metrics = reply.metric_record("metrics").unwrap();
    let acc = metrics.get_f64("eval_acc").unwrap();
    assert!((0.0..=1.0).contains(&acc), "{acc}");
    assert!(metrics.get_f64("eval_loss").unwrap() > 0.0);
    assert_eq!(
        metrics.get("num-examples").unwrap(),
        &MetricValue::I64(validation as i64)
    );
    assert!((25..=30).contains(&validation), "{validation}");
}

#[test]
fn partitions_are_disjoint_across_nodes_and_leave_the_test_split_alone() {
    let run_config = run_config();
    for partitioner in ["iid", "dirichlet"] {
        let mut rc = run_config.clone();
        rc.insert(
            "partitioner".into(),
            UserConfigValue::Str(partitioner.into()),
        );
        let mut seen: Vec<usize> = (0..10)
            .flat_map(|p| {
                let d = node_data(&node_ctx(p, 10, &rc)).unwrap();
                d.train.into_iter().chain(d.validation)
            })
            .collect();
        seen.sort_unstable();
        let pool = floret_app_digits::data::test_split(1797, 42).pool;
        assert_eq!(seen, pool, "{partitioner}");
    }
}

#[test]
fn bad_input_is_an_error_that_names_the_problem() {
    let run_config = run_config();
    let cfg = server_config(&run_config);
    let global = Mlp::init(7).to_arrays();
    let app = client_app();
    let check = |mut ctx: floret_core::Context, msg: floret_core::Message, needle: &str| {
        let err = app.handle(&msg, &mut ctx).unwrap_err().to_string();
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
    };
    // No partition id in the node config (a deployed node without --node-config).
    let mut ctx = node_ctx(0, 10, &run_config);
    ctx.node_config.clear();
    check(ctx, train_message(&global, 1, &cfg, 1), "partition-id");
    // Partition id out of range.
    check(
        node_ctx(10, 10, &run_config),
        train_message(&global, 1, &cfg, 1),
        "partition-id",
    );
    // Unknown partitioner.
    let mut rc = run_config.clone();
    rc.insert("partitioner".into(), UserConfigValue::Str("shards".into()));
    check(
        node_ctx(0, 10, &rc),
        train_message(&global, 1, &cfg, 1),
        "partitioner",
    );
    // A train message without the hyper-parameters.
    let mut msg = train_message(&global, 1, &cfg, 1);
    if let floret_core::Payload::Content(c) = &mut msg.payload {
        let mut config = c.config_record("config").unwrap().clone();
        config.0.shift_remove("lr");
        c.insert("config", config);
    }
    check(node_ctx(0, 10, &run_config), msg, "lr");
    // A model of another shape.
    let mut other = global.clone();
    other.insert("fc2.bias", floret_core::Array::zeros::<f32>(vec![11]));
    check(
        node_ctx(0, 10, &run_config),
        train_message(&other, 1, &cfg, 1),
        "fc2.bias",
    );
    check(
        node_ctx(0, 10, &run_config),
        evaluate_message(&other, 1, 1),
        "fc2.bias",
    );
}

#[test]
fn a_thousand_nodes_get_tiny_but_valid_partitions() {
    let run_config = run_config();
    let cfg = server_config(&run_config);
    let global = Mlp::init(7).to_arrays();
    for pid in [0, 436, 437, 999] {
        let mut ctx = node_ctx(pid, 1000, &run_config);
        let reply = client_app()
            .handle(&train_message(&global, 1, &cfg, 1), &mut ctx)
            .unwrap();
        let n = reply
            .metric_record("metrics")
            .unwrap()
            .get_f64("num-examples")
            .unwrap();
        assert!(n <= 2.0, "{n}");
        let reply = client_app()
            .handle(&evaluate_message(&global, 1, 1), &mut ctx)
            .unwrap();
        let acc = reply
            .metric_record("metrics")
            .unwrap()
            .get_f64("eval_acc")
            .unwrap();
        assert!((0.0..=1.0).contains(&acc));
    }
}
