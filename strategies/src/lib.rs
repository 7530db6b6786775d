//! floret-strategies: federated learning strategies over the message API, starting with
//! FedAvg.
//!
//! A strategy decides which nodes to ask, what to send them, and how to turn their replies
//! into the next global model. Replies are folded into running sums as they arrive
//! (streaming aggregation), so a round never holds all of its replies at once, in an order
//! fixed by the sampled nodes alone (`shard`, `canonical`), so the model does not depend on
//! timing or on how many workers computed the replies. The crate
//! depends only on floret-core: it reaches nodes through the `Grid` trait and does no I/O of
//! its own — no actors, no transport, no files. The decisions (sampling sizes, reply
//! checks, fold arithmetic) are pure functions, tested without a grid or a clock.

pub mod aggregate;
pub mod canonical;
mod checkpoint;
pub mod choice;
mod config;
pub mod dp;
mod error;
mod fedavg;
mod folding;
mod kernel;
pub mod meter;
pub mod metrics;
mod phase;
pub mod reply;
pub mod robust;
pub mod sampling;
mod server_app;
pub mod server_update;
pub mod shard;
mod values;

pub use checkpoint::{CHECKPOINT_KIND, CHECKPOINT_VERSION, model_sha256};
pub use choice::{StrategyChoice, from_run_config as strategy_from_run_config};
pub use config::FedAvgConfig;
pub use error::StrategyError;
pub use fedavg::{DEFAULT_BUFFER_LIMIT, EvaluateFn, FedAvg, History};
pub use reply::Rejection;
pub use robust::Robust;
pub use server_app::{StrategyRun, StrategyServer, announce, fraction, round_timeout};
pub use server_update::{AdaptiveRule, ServerState, ServerUpdate};
