//! The ClientApp: a node trains the global CNN on its images (`train`) and scores it on
//! them (`evaluate`). The server sends `local-epochs`, `lr` and `batch-size` with every
//! train message; which images a node has comes from the run config (`data-dir`,
//! `partitioner`, `alpha`, `seed`) and its node config (`partition-id`, `num-partitions`,
//! and a `data-dir` of its own, if it has one).

use crate::task::{self, Training};
use floret_app::floret_core::{AppError, ClientApp, Context, Message, MetricRecord, RecordDict};

/// The ClientApp, `clientapp` in pyproject.toml.
pub fn app() -> ClientApp {
    ClientApp::new().train(train).evaluate(evaluate)
}

fn content(message: &Message) -> Result<&RecordDict, AppError> {
    message.content().map_err(|e| {
        AppError::other(format!(
            "the message carries an error instead of content: {e}"
        ))
    })
}

fn train(message: &Message, context: &mut Context) -> Result<RecordDict, AppError> {
    let content = content(message)?;
    let config = content.config_record("config")?;
    let training = Training {
        epochs: usize::try_from(config.get_i64("local-epochs")?).unwrap_or(0),
        lr: config.get_f64("lr")?,
        batch_size: usize::try_from(config.get_i64("batch-size")?).unwrap_or(1),
        // Each node and round shuffles differently, and reruns repeat themselves.
        seed: context.node_id ^ config.get_i64("server-round")? as u64,
    };
    let images = task::node_images(context)?;
    let (arrays, loss) = task::train(content.array_record("arrays")?, &images, training)?;
    let mut metrics = MetricRecord::new();
    metrics.insert("train_loss", loss);
    metrics.insert("num-examples", images.len() as i64);
    Ok(RecordDict::new()
        .with("arrays", arrays)
        .with("metrics", metrics))
}

fn evaluate(message: &Message, context: &mut Context) -> Result<RecordDict, AppError> {
    let images = task::node_images(context)?;
    let evaluation = task::evaluate(content(message)?.array_record("arrays")?, &images)?;
    let mut metrics = MetricRecord::new();
    metrics.insert("eval_loss", evaluation.loss);
    metrics.insert("eval_acc", evaluation.accuracy);
    metrics.insert("num-examples", images.len() as i64);
    Ok(RecordDict::new().with("metrics", metrics))
}
