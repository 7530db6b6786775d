//! Helpers shared by the integration tests: the pyproject's run config, node contexts and
//! the messages a FedAvg server would send.

#![allow(dead_code)]

use floret_app_digits::{DigitsConfig, PYPROJECT};
use floret_core::{
    AppManifest, ArrayRecord, ConfigRecord, Context, Message, RecordDict, UserConfig,
    UserConfigValue,
};

/// `[tool.flwr.app.config]` of the crate's pyproject.toml.
pub(crate) fn run_config() -> UserConfig {
    AppManifest::parse(
        PYPROJECT,
        std::path::Path::new("apps/digits/pyproject.toml"),
    )
    .expect("the shipped pyproject.toml is valid")
    .config
}

/// The context of simulated node `partition_id` of `num_partitions`.
pub(crate) fn node_ctx(partition_id: i64, num_partitions: i64, run_config: &UserConfig) -> Context {
    let mut ctx = Context {
        run_id: 1,
        node_id: 1000 + partition_id as u64,
        run_config: run_config.clone(),
        ..Context::default()
    };
    ctx.node_config
        .insert("partition-id".into(), UserConfigValue::Int(partition_id));
    ctx.node_config.insert(
        "num-partitions".into(),
        UserConfigValue::Int(num_partitions),
    );
    ctx
}

/// The server-side view of the run config.
pub(crate) fn server_config(run_config: &UserConfig) -> DigitsConfig {
    let ctx = Context {
        run_config: run_config.clone(),
        ..Context::default()
    };
    DigitsConfig::from_context(&ctx).expect("the pyproject config is valid")
}

/// A train message as FedAvg builds it: the global arrays and the train config plus the
/// server round.
pub(crate) fn train_message(
    arrays: &ArrayRecord,
    round: i64,
    cfg: &DigitsConfig,
    dst: u64,
) -> Message {
    let mut config = cfg.train_config();
    config.insert("server-round", round);
    Message::new(
        RecordDict::new()
            .with("arrays", arrays.clone())
            .with("config", config),
        dst,
        "train",
    )
    .with_group_id(round.to_string())
}

/// An evaluate message as FedAvg builds it.
pub(crate) fn evaluate_message(arrays: &ArrayRecord, round: i64, dst: u64) -> Message {
    let mut config = ConfigRecord::new();
    config.insert("server-round", round);
    Message::new(
        RecordDict::new()
            .with("arrays", arrays.clone())
            .with("config", config),
        dst,
        "evaluate",
    )
}
