//! The liveness sweeper: on a tokio interval, forgets nodes whose heartbeat lease ran out
//! and answers instructions whose TTL ended (and refreshes the state's gauges, see
//! `meter`), so a ServerApp learns of a dead node within
//! `patience * interval + sweep_interval` instead of at its round timeout.
//!
//! A plain task rather than an actor: it has no messages and no children, only a period.
//! `SuperLinkService` owns its handle and aborts it at shutdown. The decisions are the
//! state's and the heartbeat policy's; this loop only supplies the clock.

use crate::policy::clock::unix_now;
use crate::state::LinkState;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// Starts sweeping `state` every `period`.
pub(crate) fn spawn(state: Arc<dyn LinkState>, period: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
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
    })
}
