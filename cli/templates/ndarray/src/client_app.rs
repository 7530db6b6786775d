//! The ClientApp: a node trains the global model on its images (`train`) and scores it on
//! them (`evaluate`). The server sends `local-epochs` and `lr` with every train message.

use crate::task::{self, Model};
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
    let mut model = Model::from_arrays(content.array_record("arrays")?)?;
    let config = content.config_record("config")?;
    let epochs = usize::try_from(config.get_i64("local-epochs")?).unwrap_or(0);
    let lr = config.get_f64("lr")? as f32;
    // Each node and round shuffles differently, and reruns repeat themselves.
    let seed = context.node_id ^ config.get_i64("server-round")? as u64;
    let data = task::node_data(context)?;
    let loss = model.train(&data, epochs, lr, seed);
    let mut metrics = MetricRecord::new();
    metrics.insert("train_loss", loss);
    metrics.insert("num-examples", data.len() as i64);
    Ok(RecordDict::new()
        .with("arrays", model.to_arrays())
        .with("metrics", metrics))
}

fn evaluate(message: &Message, context: &mut Context) -> Result<RecordDict, AppError> {
    let model = Model::from_arrays(content(message)?.array_record("arrays")?)?;
    let data = task::node_data(context)?;
    let evaluation = model.evaluate(&data);
    let mut metrics = MetricRecord::new();
    metrics.insert("eval_loss", evaluation.loss);
    metrics.insert("eval_acc", evaluation.accuracy);
    metrics.insert("num-examples", data.len() as i64);
    Ok(RecordDict::new().with("metrics", metrics))
}
