//! The run context an app sees: which run and node it serves, its configuration, and the
//! state a ClientApp keeps on its node from one round to the next.

use crate::records::RecordDict;
use crate::user_config::UserConfig;

/// Flower's `Context`. Node id 0 is the SuperLink side (ServerApp).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Context {
    /// The run this context belongs to.
    pub run_id: u64,
    /// The node the app serves; 0 on the SuperLink side (ServerApp).
    pub node_id: u64,
    /// Per-node settings (`--node-config`, or `partition-id`/`num-partitions` in simulation).
    pub node_config: UserConfig,
    /// Survives between messages of the same run on the same node.
    pub state: RecordDict,
    /// The app's `[tool.flwr.app.config]` with the run's overrides applied.
    pub run_config: UserConfig,
}
