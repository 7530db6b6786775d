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
        /// The setting's name, as `FedAvgConfig` spells it.
        field: &'static str,
        /// The value given, as it would be written.
        value: String,
        /// What to set instead.
        fix: String,
    },

    /// The initial model holds an array FedAvg cannot average.
    #[error("initial array {key:?} cannot be aggregated: {problem}")]
    InitialArrays {
        /// The array's name.
        key: String,
        /// Why it cannot be averaged (a dtype FedAvg does not average, or a bad shape).
        problem: String,
    },

    /// Too few nodes connected before the round timeout to run a phase.
    #[error(
        "round {round}: the {phase} phase needs at least {required} connected nodes, but only \
         {available} connected within {waited:?}; start more SuperNodes, lower \
         min_available_nodes / min_{phase}_nodes, or raise the round timeout"
    )]
    NotEnoughNodes {
        /// The round that could not start its phase.
        round: u64,
        /// "train" or "evaluate".
        phase: &'static str,
        /// Nodes the phase needs: the larger of `min_available_nodes` and the phase's minimum.
        required: usize,
        /// Nodes connected when the wait ended.
        available: usize,
        /// How long the strategy waited for more nodes.
        waited: Duration,
    },

    /// The grid failed (the run was stopped or the link is gone).
    #[error("round {round}: the grid failed: {source}")]
    Grid {
        /// The round in which the grid failed.
        round: u64,
        /// The grid's error.
        #[source]
        source: GridError,
    },

    /// The run's checkpoint cannot be resumed from: written by a newer Floret, damaged, or
    /// of a run started with other settings.
    #[error("cannot resume from the run's checkpoint: {reason}")]
    Checkpoint {
        /// Why, with what to do about it.
        reason: String,
    },
}
