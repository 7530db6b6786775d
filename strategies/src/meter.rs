//! Prometheus metrics of the rounds a strategy runs, recorded through the `metrics`
//! facade: no I/O here, only counters and histograms the process may or may not export
//! (a ServerApp inside `flower-superlink --metrics-address` does; one in a process of its
//! own does not).

use std::time::Duration;

/// Rounds completed by the strategies of this process.
pub const ROUNDS_COMPLETED: &str = "floret_rounds_completed_total";
/// Wall time of each completed round: train, central evaluation and evaluate phases.
pub const ROUND_DURATION: &str = "floret_round_duration_seconds";
/// Time a phase spent folding replies into its aggregates, by `phase`.
pub const AGGREGATION: &str = "floret_aggregation_seconds";

/// Records a completed round that took `took`.
pub(crate) fn round_completed(took: Duration) {
    ::metrics::counter!(ROUNDS_COMPLETED).increment(1);
    ::metrics::histogram!(ROUND_DURATION).record(took.as_secs_f64());
}

/// Records the folding time of one phase (`train` or `evaluate`).
pub(crate) fn aggregated(phase: &'static str, took: Duration) {
    ::metrics::histogram!(AGGREGATION, "phase" => phase).record(took.as_secs_f64());
}
