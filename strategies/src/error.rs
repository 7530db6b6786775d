//! What can stop a strategy. A bad reply never does: it is counted and left out of the
//! aggregate (see `reply::Rejection`). Only bad settings, a federation too small to run, or
//! a grid that stopped working end a run early.

use floret_core::GridError;
use std::time::Duration;
use thiserror::Error;

/// Why a strategy could not be built or could not finish its run.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StrategyError {
    /// A setting is out of range; the message names the field and how to fix it.
    #[error("invalid strategy setting `{field}` = {value}: {fix}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        fix: String,
    },

    /// The initial model holds an array FedAvg cannot average.
    #[error("initial array {key:?} cannot be aggregated: {problem}")]
    InitialArrays { key: String, problem: String },

    /// Too few nodes connected before the round timeout to run a phase.
    #[error(
        "round {round}: the {phase} phase needs at least {required} connected nodes, but only \
         {available} connected within {waited:?}; start more SuperNodes, lower \
         min_available_nodes / min_{phase}_nodes, or raise the round timeout"
    )]
    NotEnoughNodes {
        round: u64,
        phase: &'static str,
        required: usize,
        available: usize,
        waited: Duration,
    },

    /// The grid failed (the run was stopped or the link is gone).
    #[error("round {round}: the grid failed: {source}")]
    Grid {
        round: u64,
        #[source]
        source: GridError,
    },

    /// The run's checkpoint cannot be resumed from: written by a newer Floret, damaged, or
    /// of a run started with other settings.
    #[error("cannot resume from the run's checkpoint: {reason}")]
    Checkpoint { reason: String },
}
