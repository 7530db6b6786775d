//! The digits ClientApp: each node trains the received model on its partition of the
//! digits (`train`) and scores it on the partition's validation share (`evaluate`).
//!
//! A node's partition follows from the node config (`partition-id`, `num-partitions`) and
//! the run config (`partitioner`, `dirichlet-alpha`, `seed`); the hyper-parameters of
//! training come with each train message (`local-epochs`, `lr`, `batch-size`).

use crate::data::{NUM_CLASSES, digits, test_split};
use crate::model::Mlp;
use crate::partition::{Partitioner, train_validation_split};
use floret_core::{AppError, ClientApp, ConfigRecord, Context, Message, MetricRecord, RecordDict};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The ClientApp registered as `digits.client_app:app`.
pub fn client_app() -> ClientApp {
    ClientApp::new().train(train).evaluate(evaluate)
}

/// How the data is laid out across the federation, from the run config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DataConfig {
    /// The run config's `seed`: the test split, the partitions and each round's shuffles follow
    /// from it.
    pub seed: u64,
    /// The run config's `partitioner` and `dirichlet-alpha`.
    pub partitioner: Partitioner,
}

impl DataConfig {
    /// Reads `seed`, `partitioner` and `dirichlet-alpha`.
    pub fn from_context(ctx: &Context) -> Result<DataConfig, AppError> {
        let seed = ctx.run_config_i64("seed")?;
        let seed = u64::try_from(seed).map_err(|_| {
            AppError::Config(format!(
                "run config key \"seed\" must not be negative, but is {seed}"
            ))
        })?;
        let partitioner = Partitioner::parse(
            ctx.run_config_str("partitioner")?,
            ctx.run_config_f64("dirichlet-alpha")?,
        )
        .map_err(|e| AppError::Config(format!("run config: {e}")))?;
        Ok(DataConfig { seed, partitioner })
    }
}

/// The images one node trains and validates on (indices into `data::digits()`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeData {
    /// This node's partition, in `0..num_partitions`.
    pub partition_id: usize,
    /// How many partitions the pool is cut into: one per node.
    pub num_partitions: usize,
    /// Indices of the images this node trains on.
    pub train: Vec<usize>,
    /// Indices of the images this node's `evaluate` scores on.
    pub validation: Vec<usize>,
}

/// This node's `partition-id` and `num-partitions`, checked.
pub fn partition_of(ctx: &Context) -> Result<(usize, usize), AppError> {
    let pid = ctx.node_config_i64("partition-id")?;
    let num = ctx.node_config_i64("num-partitions")?;
    if num < 1 || pid < 0 || pid >= num {
        return Err(AppError::Config(format!(
            "node config needs 0 <= partition-id < num-partitions, but has partition-id={pid} \
             num-partitions={num}"
        )));
    }
    // Both fit: 0 <= pid < num, and num came from an i64.
    Ok((pid as usize, num as usize))
}

type PartitionKey = (u64, u64, u64, usize);
type Partitions = Arc<Vec<Vec<usize>>>;

/// Every partition of the training pool for one (seed, partitioner, count), computed once
/// per process and shared by all the virtual nodes of a simulation.
fn partitions(cfg: &DataConfig, num_partitions: usize) -> Partitions {
    static CACHE: OnceLock<Mutex<HashMap<PartitionKey, Partitions>>> = OnceLock::new();
    let key = match cfg.partitioner {
        Partitioner::Iid => (cfg.seed, 0, 0, num_partitions),
        Partitioner::Dirichlet { alpha } => (cfg.seed, 1, alpha.to_bits(), num_partitions),
    };
    let cache = CACHE.get_or_init(Default::default);
    // A poisoned lock only means another thread panicked while inserting: the map is
    // still a valid cache.
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(parts) = map.get(&key) {
        return Arc::clone(parts);
    }
    let data = digits();
    let split = test_split(data.len(), cfg.seed);
    let parts = Arc::new(cfg.partitioner.partition(
        &split.pool,
        data.labels(),
        NUM_CLASSES,
        num_partitions,
        cfg.seed,
    ));
    // Bound the cache: a long-lived process that sees many configurations recomputes.
    if map.len() >= 16 {
        map.clear();
    }
    map.insert(key, Arc::clone(&parts));
    parts
}

/// The train and validation images of the node `ctx` describes.
pub fn node_data(ctx: &Context) -> Result<NodeData, AppError> {
    let cfg = DataConfig::from_context(ctx)?;
    let (partition_id, num_partitions) = partition_of(ctx)?;
    let parts = partitions(&cfg, num_partitions);
    let part = parts
        .get(partition_id)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let seed = cfg.seed ^ (partition_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let (train, validation) = train_validation_split(part, seed);
    Ok(NodeData {
        partition_id,
        num_partitions,
        train,
        validation,
    })
}

fn content(message: &Message) -> Result<&RecordDict, AppError> {
    message.content().map_err(|e| {
        AppError::other(format!(
            "the {} message carries an error instead of content: {e}",
            message.metadata.message_type
        ))
    })
}

/// Training hyper-parameters from a train message's config record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainConfig {
    /// `server-round`, from 1; mixed into the seed so each round shuffles differently.
    pub server_round: u64,
    /// `local-epochs`: passes over the node's training data per round; above 0.
    pub local_epochs: usize,
    /// `lr`: the SGD learning rate; finite and above 0.
    pub lr: f32,
    /// `batch-size`: examples per SGD step; above 0.
    pub batch_size: usize,
    /// `proximal-mu`, sent by FedProx: the weight of the proximal term toward the global
    /// model; 0 (plain SGD) when the strategy sends none.
    pub proximal_mu: f32,
}

impl TrainConfig {
    /// Reads and checks the hyper-parameters of a train message's `config` record.
    pub fn from_record(config: &ConfigRecord) -> Result<TrainConfig, AppError> {
        let positive = |key: &str| -> Result<usize, AppError> {
            let v = config.get_i64(key)?;
            usize::try_from(v).ok().filter(|&v| v > 0).ok_or_else(|| {
                AppError::other(format!(
                    "train config {key:?} must be a positive int, but is {v}"
                ))
            })
        };
        let round = config.get_i64("server-round")?;
        let server_round = u64::try_from(round).map_err(|_| {
            AppError::other(format!(
                "config \"server-round\" must not be negative, got {round}"
            ))
        })?;
        let lr = config.get_f64("lr")?;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(AppError::other(format!(
                "train config \"lr\" must be a positive number, but is {lr}"
            )));
        }
        let proximal_mu = match config.get("proximal-mu") {
            Err(_) => 0.0,
            Ok(_) => match config.get_f64("proximal-mu")? {
                mu if mu.is_finite() && mu >= 0.0 => mu as f32,
                mu => {
                    return Err(AppError::other(format!(
                        "train config \"proximal-mu\" must be a non-negative number, but is {mu}"
                    )));
                }
            },
        };
        Ok(TrainConfig {
            proximal_mu,
            server_round,
            local_epochs: positive("local-epochs")?,
            lr: lr as f32,
            batch_size: positive("batch-size")?,
        })
    }
}

fn model_of(content: &RecordDict) -> Result<Mlp, AppError> {
    Mlp::from_arrays(content.array_record("arrays")?)
        .map_err(|e| AppError::other(format!("arrays: {e}")))
}

fn train(message: &Message, ctx: &mut Context) -> Result<RecordDict, AppError> {
    let content = content(message)?;
    let cfg = TrainConfig::from_record(content.config_record("config")?)?;
    let mut model = model_of(content)?;
    let data = node_data(ctx)?;
    let (x, y) = digits().gather(&data.train);
    let seed = DataConfig::from_context(ctx)?.seed
        ^ (data.partition_id as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
        ^ cfg.server_round.wrapping_mul(0xA076_1D64_78BD_642F);
    let loss = model.train_proximal(
        x.view(),
        &y,
        cfg.local_epochs,
        cfg.batch_size,
        cfg.lr,
        seed,
        cfg.proximal_mu,
    );
    let mut metrics = MetricRecord::new();
    metrics.insert("train_loss", loss);
    metrics.insert("num-examples", data.train.len() as i64);
    Ok(RecordDict::new()
        .with("arrays", model.to_arrays())
        .with("metrics", metrics))
}

fn evaluate(message: &Message, ctx: &mut Context) -> Result<RecordDict, AppError> {
    let model = model_of(content(message)?)?;
    let data = node_data(ctx)?;
    // A partition too small to hold back a validation share is scored on what it has.
    let images = if data.validation.is_empty() {
        &data.train
    } else {
        &data.validation
    };
    let (x, y) = digits().gather(images);
    let eval = model.evaluate(x.view(), &y);
    let mut metrics = MetricRecord::new();
    metrics.insert("eval_loss", eval.loss);
    metrics.insert("eval_acc", eval.accuracy);
    metrics.insert("num-examples", eval.num_examples as i64);
    Ok(RecordDict::new().with("metrics", metrics))
}
