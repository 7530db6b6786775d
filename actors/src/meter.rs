//! The daemons' Prometheus metrics of nodes, runs and app processes, recorded through the
//! `metrics` facade (no-ops unless a daemon installed an exporter with
//! `--metrics-address`).
//!
//! Gauges of what the SuperLink's state holds (nodes online, runs by status) are taken
//! from the state on every sweep rather than moved at each of the many places that change
//! it: a snapshot cannot drift, and it is right again after a restart on a database.

use crate::state::LinkState;
use floret_core::{RunStatus, SubStatus};

/// Nodes registered with the SuperLink now.
pub const NODES_ONLINE: &str = "floret_nodes_online";
/// Runs the SuperLink knows, by `status`.
pub const RUNS: &str = "floret_runs";
/// Nodes the SuperLink declared offline because their heartbeat lease ran out.
pub const HEARTBEATS_MISSED: &str = "floret_heartbeats_missed_total";
/// Connections made again after a lost one: a SuperNode's new session, or a SuperLink's
/// `Subscribe` from a node that had one before.
pub const RECONNECTS: &str = "floret_reconnects_total";
/// App processes (ServerApps, ClientApps) the daemon started and that have not exited.
pub const APP_PROCESSES: &str = "floret_app_processes";

/// Every status a run can be in, so that a status no run has any more shows 0 rather
/// than its last count.
const STATUSES: [RunStatus; 6] = [
    RunStatus::Pending,
    RunStatus::Starting,
    RunStatus::Running,
    RunStatus::Finished(SubStatus::Completed),
    RunStatus::Finished(SubStatus::Failed),
    RunStatus::Finished(SubStatus::Stopped),
];

/// The `status` label of a run status: Flower's spelling (`finished:completed`).
pub fn status_label(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Pending => "pending",
        RunStatus::Starting => "starting",
        RunStatus::Running => "running",
        RunStatus::Finished(SubStatus::Completed) => "finished:completed",
        RunStatus::Finished(SubStatus::Failed) => "finished:failed",
        RunStatus::Finished(SubStatus::Stopped) => "finished:stopped",
    }
}

/// How many of `statuses` are in each of [`STATUSES`], in that order.
fn count_by_status(statuses: impl IntoIterator<Item = RunStatus>) -> [usize; STATUSES.len()] {
    let mut counts = [0; STATUSES.len()];
    for status in statuses {
        if let Some(i) = STATUSES.iter().position(|&s| s == status) {
            counts[i] += 1;
        }
    }
    counts
}

/// Sets the nodes-online and runs-by-status gauges from `state`.
pub(crate) fn record_state(state: &dyn LinkState) {
    metrics::gauge!(NODES_ONLINE).set(state.node_ids().len() as f64);
    let counts = count_by_status(state.runs().into_iter().map(|r| r.status));
    for (status, count) in STATUSES.into_iter().zip(counts) {
        metrics::gauge!(RUNS, "status" => status_label(status)).set(count as f64);
    }
}

/// Counts nodes declared offline by the sweeper.
pub(crate) fn heartbeats_missed(nodes: usize) {
    if nodes > 0 {
        metrics::counter!(HEARTBEATS_MISSED).increment(nodes as u64);
    }
}

/// Counts one reconnect.
pub(crate) fn reconnected() {
    metrics::counter!(RECONNECTS).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_flowers_and_distinct() {
        let labels: Vec<_> = STATUSES.into_iter().map(status_label).collect();
        assert_eq!(
            labels,
            [
                "pending",
                "starting",
                "running",
                "finished:completed",
                "finished:failed",
                "finished:stopped"
            ]
        );
        for status in STATUSES {
            assert_eq!(status_label(status), status.to_string());
        }
    }

    #[test]
    fn runs_are_counted_under_their_own_status() {
        let counts = count_by_status([
            RunStatus::Running,
            RunStatus::Finished(SubStatus::Completed),
            RunStatus::Finished(SubStatus::Completed),
            RunStatus::Pending,
        ]);
        assert_eq!(counts, [1, 0, 1, 2, 0, 0]);
    }
}
