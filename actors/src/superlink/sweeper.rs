//! The sweeper: on tokio intervals, forgets nodes whose heartbeat lease ran out and
//! answers instructions whose TTL ended (and refreshes the state's gauges, see `meter`),
//! so a ServerApp learns of a dead node within `patience * interval + sweep_interval`
//! instead of at its round timeout; and, on a slower interval of its own, deletes the
//! finished runs the retention rule names (`state::retention`), so the state does not grow
//! by a run's record and log per run forever.
//!
//! A plain task rather than an actor: it has no messages and no children, only periods.
//! `SuperLinkService` owns its handle and aborts it at shutdown. The decisions are the
//! state's, the heartbeat policy's and the retention rule's; this loop only supplies the
//! clock.

use crate::policy::clock::unix_now;
use crate::state::{LinkState, Retention};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Starts sweeping `state` every `period`, and applying `retention` every
/// `retention.period`.
pub(crate) fn spawn(
    state: Arc<dyn LinkState>,
    period: Duration,
    retention: Retention,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        tokio::join!(liveness(state.clone(), period), retain(state, retention));
    })
}

async fn liveness(state: Arc<dyn LinkState>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    // After a stall, one sweep catches up with everything: no burst of sweeps.
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sweep = state.sweep(unix_now());
        crate::meter::heartbeats_missed(sweep.offline.len());
        crate::meter::record_state(state.as_ref());
        for node_id in &sweep.offline {
            tracing::info!(node_id, "node missed its heartbeats: offline");
        }
        if sweep.expired > 0 {
            tracing::info!(count = sweep.expired, "instructions expired (TTL)");
        }
    }
}

/// Applies `retention` at start (a SuperLink that was down for a month catches up at
/// once) and then every `retention.period`. Without limits there is nothing to do.
async fn retain(state: Arc<dyn LinkState>, retention: Retention) {
    if retention.max_age.is_none() && retention.max_runs.is_none() {
        return;
    }
    let mut tick = tokio::time::interval(retention.period.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let doomed = retention.expired(&state.runs(), unix_now());
        if doomed.is_empty() {
            continue;
        }
        match state.delete_runs(&doomed) {
            Ok(count) => tracing::info!(
                count,
                "deleted finished runs past their retention (--retention, --retention-runs)"
            ),
            Err(e) => tracing::warn!("could not delete finished runs past their retention: {e}"),
        }
    }
}
