//! The ClientApp: `train` nudges the received model (see `task`), `evaluate` scores it.
//! The server sends `lr`, the size of the nudge, with every train message.

use crate::task;
use floret_app::floret_core::{AppError, ClientApp, Context, Message, MetricRecord, RecordDict};

/// The ClientApp, `clientapp` in pyproject.toml.
pub fn app() -> ClientApp {
    ClientApp::new().train(train).evaluate(evaluate)
}

/// A stand-in for the size of a node's data.
const NUM_EXAMPLES: i64 = 100;

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
    let lr = config.get_f64("lr")? as f32;
    // Each node and round draws different noise, and reruns repeat themselves.
    let seed = context.node_id ^ config.get_i64("server-round")? as u64;
    let (arrays, change) = task::train(content.array_record("arrays")?, lr, seed)?;
    let mut metrics = MetricRecord::new();
    metrics.insert("train_loss", change);
    metrics.insert("num-examples", NUM_EXAMPLES);
    Ok(RecordDict::new()
        .with("arrays", arrays)
        .with("metrics", metrics))
}

fn evaluate(message: &Message, _context: &mut Context) -> Result<RecordDict, AppError> {
    let loss = task::evaluate(content(message)?.array_record("arrays")?)?;
    let mut metrics = MetricRecord::new();
    metrics.insert("eval_loss", loss);
    metrics.insert("num-examples", NUM_EXAMPLES);
    Ok(RecordDict::new().with("metrics", metrics))
}
