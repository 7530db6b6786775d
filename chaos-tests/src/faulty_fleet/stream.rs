//! The instruction stream through a faulty link: a task between the inner fleet's
//! receiver and the node's, which loses, repeats and delays deliveries, applies the
//! dropout rule and the bandwidth cap, and ends the stream when the link goes down (as a
//! broken connection would). Ending it drops the inner receiver, so the SuperLink sees the
//! subscription end too and redelivers the unanswered on the next one.

use super::counters::{add, bump};
use super::link::{Link, lock};
use super::{Delivery, payload_bytes};
use floret_core::Message;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Deliveries assembled ahead of the node, as a transport client buffers them.
const BUFFER: usize = 16;

/// How the forwarder ended.
enum End {
    /// The link went down: the wrapper cut the stream.
    Cut,
    /// The inner stream or the node's receiver ended.
    Closed,
}

pub(super) fn forward(link: Arc<Link>, inner: mpsc::Receiver<Message>) -> mpsc::Receiver<Message> {
    let (tx, rx) = mpsc::channel(BUFFER);
    // Watching from now, not from when the task first runs: a disconnect in between
    // would otherwise go unseen.
    let down = link.down_until.subscribe();
    tokio::spawn(async move {
        if let End::Cut = run(&link, down, inner, tx).await {
            bump(&link.counters.streams_cut);
        }
    });
    rx
}

async fn run(
    link: &Link,
    mut down: watch::Receiver<Option<Instant>>,
    mut inner: mpsc::Receiver<Message>,
    tx: mpsc::Sender<Message>,
) -> End {
    loop {
        if link.down_for().is_some() {
            return End::Cut;
        }
        let next_outage = lock(&link.decider)
            .next_outage(link.since_start())
            .map(|offset| link.started + offset);
        let message = tokio::select! {
            changed = down.changed() => {
                if changed.is_err() || link.down_for().is_some() {
                    return End::Cut;
                }
                continue;
            }
            () = sleep_until(next_outage) => return End::Cut,
            () = tx.closed() => return End::Closed,
            message = inner.recv() => match message {
                Some(message) => message,
                None => return End::Closed,
            },
        };
        if link.drops_out(&message) {
            return End::Cut;
        }
        let (delay, copies) = match lock(&link.decider).delivery() {
            Delivery::Lost => {
                bump(&link.counters.deliveries_lost);
                continue;
            }
            Delivery::Delivered { delay, copies } => (delay, copies),
        };
        link.wait(delay, payload_bytes(std::slice::from_ref(&message)))
            .await;
        if link.down_for().is_some() {
            return End::Cut;
        }
        for _ in 0..copies {
            if tx.send(message.clone()).await.is_err() {
                return End::Closed;
            }
        }
        add(&link.counters.deliveries, u64::from(copies));
        if copies > 1 {
            bump(&link.counters.deliveries_duplicated);
        }
    }
}

/// Sleeps until `at`, or forever without it.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
