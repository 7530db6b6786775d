//! The quickstart ClientApp: `train` adds seeded noise to every received array, `evaluate`
//! reports a cheap deterministic loss. Neither looks at data: this app measures the runtime.

use crate::noise;
use floret_core::{
    AppError, Array, ArrayRecord, ClientApp, ConfigRecord, Context, Message, MetricRecord,
    RecordDict, UserConfigValue,
};

/// Values per array that `evaluate` looks at: enough to follow the model, cheap at any size.
const EVAL_SAMPLE: usize = 1024;

/// The ClientApp registered as `quickstart.client_app:app`.
pub fn client_app() -> ClientApp {
    ClientApp::new().train(train).evaluate(evaluate)
}

/// The records of a message, or an error saying the message carried an error instead.
pub(crate) fn content(message: &Message) -> Result<&RecordDict, AppError> {
    message.content().map_err(|e| {
        AppError::other(format!(
            "the {} message carries an error instead of content: {e}",
            message.metadata.message_type
        ))
    })
}

/// The `server-round` of a message's config record, which must not be negative.
pub(crate) fn server_round(config: &ConfigRecord) -> Result<u64, AppError> {
    let round = config.get_i64("server-round")?;
    u64::try_from(round).map_err(|_| {
        AppError::other(format!(
            "config \"server-round\" must not be negative, got {round}"
        ))
    })
}

/// A stand-in for the size of a node's data: `100 + partition-id` in a simulation, and
/// `100 + node_id % 100` where the node config has no partition id.
fn num_examples(ctx: &Context) -> Result<i64, AppError> {
    match ctx.node_config.get("partition-id") {
        Some(UserConfigValue::Int(pid)) if *pid >= 0 => Ok(100 + pid),
        Some(other) => Err(AppError::Config(format!(
            "node config key \"partition-id\" must be an int >= 0, but is {other}"
        ))),
        None => Ok(100 + (ctx.node_id % 100) as i64),
    }
}

fn train(message: &Message, ctx: &mut Context) -> Result<RecordDict, AppError> {
    let content = content(message)?;
    let arrays = content.array_record("arrays")?;
    let round = server_round(content.config_record("config")?)?;
    let mut updated = ArrayRecord::new();
    let mut abs_sum = 0f64;
    let mut count = 0usize;
    for (index, (key, array)) in arrays.iter().enumerate() {
        let values = array.values::<f32>()?;
        let seed = noise::seed_for(ctx.node_id, round, index as u64);
        let (noisy, sum) = noise::add_noise(&values, seed);
        abs_sum += sum;
        count += noisy.len();
        updated.insert(key.clone(), Array::from_vec(array.shape.clone(), noisy));
    }
    let mut metrics = MetricRecord::new();
    // Mean absolute change of a parameter: about NOISE / 2.
    metrics.insert(
        "train_loss",
        if count == 0 {
            0.0
        } else {
            abs_sum / count as f64
        },
    );
    metrics.insert("num-examples", num_examples(ctx)?);
    Ok(RecordDict::new()
        .with("arrays", updated)
        .with("metrics", metrics))
}

fn evaluate(message: &Message, ctx: &mut Context) -> Result<RecordDict, AppError> {
    let content = content(message)?;
    let arrays = content.array_record("arrays")?;
    // Mean absolute value of the first values of each array: it grows as the noise of the
    // rounds adds up, and costs nothing next to a broadcast.
    let mut abs_sum = 0f64;
    let mut count = 0usize;
    for (_, array) in arrays.iter() {
        let values = array.values::<f32>()?;
        for v in values.iter().take(EVAL_SAMPLE) {
            abs_sum += f64::from(v.abs());
            count += 1;
        }
    }
    let mut metrics = MetricRecord::new();
    metrics.insert(
        "eval_loss",
        if count == 0 {
            0.0
        } else {
            abs_sum / count as f64
        },
    );
    metrics.insert("num-examples", num_examples(ctx)?);
    Ok(RecordDict::new().with("metrics", metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{MessageError, Payload};

    fn train_message(arrays: ArrayRecord, round: i64) -> Message {
        let mut config = ConfigRecord::new();
        config.insert("server-round", round);
        Message::new(
            RecordDict::new()
                .with("arrays", arrays)
                .with("config", config),
            5,
            "train",
        )
    }

    fn ctx(node_id: u64, partition_id: Option<i64>) -> Context {
        let mut ctx = Context {
            node_id,
            ..Context::default()
        };
        if let Some(pid) = partition_id {
            ctx.node_config
                .insert("partition-id".into(), UserConfigValue::Int(pid));
            ctx.node_config
                .insert("num-partitions".into(), UserConfigValue::Int(10));
        }
        ctx
    }

    fn model() -> ArrayRecord {
        let mut arrays = ArrayRecord::new();
        arrays.insert("a", Array::zeros::<f32>(vec![3, 5]));
        arrays.insert("b", Array::zeros::<f32>(vec![7]));
        arrays
    }

    #[test]
    fn train_keeps_keys_shapes_and_dtypes_and_moves_values() {
        let reply = client_app()
            .handle(&train_message(model(), 1), &mut ctx(5, Some(3)))
            .unwrap();
        let arrays = reply.array_record("arrays").unwrap();
        let keys: Vec<&str> = arrays.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(arrays.get("a").unwrap().shape, vec![3, 5]);
        assert_eq!(arrays.get("b").unwrap().shape, vec![7]);
        let a = arrays.get("a").unwrap().values::<f32>().unwrap();
        assert!(a.iter().all(|v| v.abs() <= noise::NOISE && *v != 0.0));
        let metrics = reply.metric_record("metrics").unwrap();
        assert_eq!(
            metrics.get("num-examples").unwrap(),
            &floret_core::MetricValue::I64(103)
        );
        let loss = metrics.get_f64("train_loss").unwrap();
        assert!(loss > 0.0 && loss < f64::from(noise::NOISE), "{loss}");
    }

    #[test]
    fn train_is_deterministic_per_node_and_round() {
        let app = client_app();
        let run = |node, round| {
            let reply = app
                .handle(&train_message(model(), round), &mut ctx(node, None))
                .unwrap();
            reply
                .array_record("arrays")
                .unwrap()
                .get("a")
                .unwrap()
                .clone()
        };
        assert_eq!(run(1, 1), run(1, 1));
        assert_ne!(run(1, 1), run(2, 1));
        assert_ne!(run(1, 1), run(1, 2));
    }

    #[test]
    fn num_examples_falls_back_to_node_id_without_partition() {
        let reply = client_app()
            .handle(&train_message(model(), 1), &mut ctx(1234, None))
            .unwrap();
        let n = reply
            .metric_record("metrics")
            .unwrap()
            .get_f64("num-examples")
            .unwrap();
        assert_eq!(n, 134.0);
    }

    #[test]
    fn bad_messages_are_errors_not_panics() {
        let app = client_app();
        // No config record.
        let msg = Message::new(RecordDict::new().with("arrays", model()), 1, "train");
        let err = app.handle(&msg, &mut ctx(1, None)).unwrap_err().to_string();
        assert!(err.contains("config"), "{err}");
        // A float64 array.
        let mut arrays = ArrayRecord::new();
        arrays.insert("x", Array::from_slice(&[1.0f64]));
        let err = app
            .handle(&train_message(arrays, 1), &mut ctx(1, None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("float32"), "{err}");
        // A negative round.
        let err = app
            .handle(&train_message(model(), -1), &mut ctx(1, None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server-round"), "{err}");
        // An error payload.
        let mut msg = train_message(model(), 1);
        msg.payload = Payload::Error(MessageError::new(0, "boom"));
        let err = app.handle(&msg, &mut ctx(1, None)).unwrap_err().to_string();
        assert!(err.contains("boom"), "{err}");
        // A partition id of the wrong type.
        let mut c = ctx(1, None);
        c.node_config
            .insert("partition-id".into(), UserConfigValue::Str("x".into()));
        let err = app
            .handle(&train_message(model(), 1), &mut c)
            .unwrap_err()
            .to_string();
        assert!(err.contains("partition-id"), "{err}");
    }

    #[test]
    fn evaluate_reports_loss_and_examples() {
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", Array::from_slice(&[0.5f32, -0.5, 1.0, -1.0]));
        let mut config = ConfigRecord::new();
        config.insert("server-round", 2i64);
        let msg = Message::new(
            RecordDict::new()
                .with("arrays", arrays)
                .with("config", config),
            1,
            "evaluate",
        );
        let reply = client_app().handle(&msg, &mut ctx(1, Some(0))).unwrap();
        let metrics = reply.metric_record("metrics").unwrap();
        assert_eq!(metrics.get_f64("eval_loss").unwrap(), 0.75);
        assert_eq!(metrics.get_f64("num-examples").unwrap(), 100.0);
    }
}
