//! `FaultyFleet`: a `Fleet` that wraps another and injects the faults of a `FaultPlan`
//! into every call and every delivery, the way a bad network would. It sits where a
//! transport client sits, so the same wrapper runs over the in-process `LinkFleet`, gRPC
//! and QUIC.
//!
//! ```text
//! SuperNode ── FaultyFleet (Link: Decider + down state + held pushes) ── inner Fleet
//!                 └─ one forwarder task per subscription (see `stream`)
//! ```
//! The decisions are made by a `Decider` (pure, see `decider`); this module only applies
//! them: it sleeps (tokio time, so paused-clock tests skip the waits), fails calls as
//! `FleetError::Unavailable`, sends pushes twice or later, and cuts instruction streams.

mod counters;
mod decider;
mod link;
mod plan;
mod stream;

pub use counters::FaultCounts;
pub use decider::{CallFaults, Decider, Delivery, DropPoint};
pub use plan::{Call, Delay, Dropout, Drops, FaultPlan, Outage, PlanError, Reorder, StreamFaults};

use async_trait::async_trait;
use bytes::Bytes;
use counters::{add, bump};
use floret_core::{Fleet, FleetError, Message, Record, RegisterNode, Registration, RunInfo};
use link::{Link, lock, unavailable};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A step a node dropped out of (see [`Dropout`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Step {
    /// The server round, in Floret.
    pub group_id: String,
    /// The instruction's message type, e.g. `train`.
    pub message_type: String,
}

impl Step {
    fn of(message: &Message) -> Step {
        Step {
            group_id: message.metadata.group_id.clone(),
            message_type: message.metadata.message_type.clone(),
        }
    }
}

/// See the module doc. Clones share the link: its faults, its down state, its counters.
#[derive(Clone)]
pub struct FaultyFleet {
    link: Arc<Link>,
}

/// Array bytes in `messages`: what the bandwidth cap charges for.
pub fn payload_bytes(messages: &[Message]) -> usize {
    messages
        .iter()
        .filter_map(|m| m.content().ok())
        .flat_map(|content| content.iter())
        .map(|(_, record)| match record {
            Record::Array(arrays) => arrays.num_bytes(),
            _ => 0,
        })
        .sum()
}

impl FaultyFleet {
    /// Wraps `inner` with `plan`'s faults; `link` numbers the link (a node's index) so that
    /// links sharing a plan fail differently but reproducibly.
    pub fn new(
        inner: Arc<dyn Fleet>,
        plan: FaultPlan,
        link: u64,
    ) -> Result<FaultyFleet, PlanError> {
        plan.validate()?;
        Ok(FaultyFleet {
            link: Arc::new(Link::new(inner, Decider::new(plan, link))),
        })
    }

    /// What has been injected so far.
    pub fn counts(&self) -> FaultCounts {
        self.link.counters.snapshot()
    }

    /// The steps this node dropped out of, in order.
    pub fn dropped_out(&self) -> Vec<Step> {
        lock(&self.link.dropped_out).clone()
    }

    /// Takes the link down for `length` from now (a partition): every call fails and open
    /// instruction streams end. The SuperNode has to notice and reconnect by itself.
    pub fn disconnect_for(&self, length: Duration) {
        self.link.go_down(length);
    }

    /// Ends a `disconnect_for` or a dropout early. Scheduled outages keep their windows.
    pub fn heal(&self) {
        self.link.down_until.send_replace(None);
    }

    /// Whether calls fail right now because the link is down.
    pub fn is_down(&self) -> bool {
        self.link.down_for().is_some()
    }
}

#[async_trait]
impl Fleet for FaultyFleet {
    async fn register_node(&self, request: RegisterNode) -> Result<Registration, FleetError> {
        let faults = self.link.before(Call::Register, 0).await?;
        let result = self.link.inner.register_node(request).await;
        self.link.after(faults, result)
    }

    async fn deactivate_node(&self, node_id: u64) -> Result<(), FleetError> {
        let faults = self.link.before(Call::Deactivate, 0).await?;
        let result = self.link.inner.deactivate_node(node_id).await;
        self.link.after(faults, result)
    }

    async fn heartbeat(&self, node_id: u64, heartbeat_interval: f64) -> Result<(), FleetError> {
        let faults = self.link.before(Call::Heartbeat, 0).await?;
        let result = self.link.inner.heartbeat(node_id, heartbeat_interval).await;
        self.link.after(faults, result)
    }

    /// Pulled instructions go through the dropout rule and the bandwidth cap like
    /// streamed ones; a dropout loses the whole response (the SuperLink redelivers it on
    /// the next subscription).
    async fn pull_messages(&self, node_id: u64) -> Result<Vec<Message>, FleetError> {
        let link = &self.link;
        let faults = link.before(Call::Pull, 0).await?;
        let result = link.inner.pull_messages(node_id).await;
        let messages = link.after(faults, result)?;
        if messages.iter().any(|m| link.drops_out(m)) {
            return Err(unavailable("the link went down mid-response"));
        }
        link.wait(Duration::ZERO, payload_bytes(&messages)).await;
        add(&link.counters.deliveries, messages.len() as u64);
        Ok(messages)
    }

    async fn push_messages(&self, node_id: u64, messages: Vec<Message>) -> Result<(), FleetError> {
        let link = &self.link;
        let faults = link.before(Call::Push, payload_bytes(&messages)).await?;
        if let Some(hold) = faults.hold {
            link.hold(node_id, messages, hold);
            return Ok(());
        }
        let copy = faults.duplicate.then(|| messages.clone());
        let result = link.inner.push_messages(node_id, messages).await;
        if let Err(e) = &result
            && !matches!(e, FleetError::Unavailable(_))
        {
            bump(&link.counters.pushes_refused);
        }
        if let Some(copy) = copy {
            bump(&link.counters.duplicated_pushes);
            match (&result, link.inner.push_messages(node_id, copy).await) {
                (Ok(()), Ok(())) => bump(&link.counters.duplicates_accepted),
                // A copy lost on the way proves nothing either way.
                (_, Err(FleetError::Unavailable(_))) => {}
                (_, Err(_)) => bump(&link.counters.duplicates_refused),
                (Err(_), Ok(())) => {}
            }
        }
        if result.is_ok() {
            // A later push went through: whatever was held back follows it.
            link.release(None).await;
        }
        link.after(faults, result)
    }

    async fn get_run(&self, run_id: u64) -> Result<RunInfo, FleetError> {
        let faults = self.link.before(Call::GetRun, 0).await?;
        let result = self.link.inner.get_run(run_id).await;
        self.link.after(faults, result)
    }

    async fn get_fab(&self, fab_hash: &str) -> Result<Bytes, FleetError> {
        let faults = self.link.before(Call::GetFab, 0).await?;
        let result = self.link.inner.get_fab(fab_hash).await;
        let fab = self.link.after(faults, result)?;
        self.link.wait(Duration::ZERO, fab.len()).await;
        Ok(fab)
    }

    async fn subscribe(&self, node_id: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        let faults = self.link.before(Call::Subscribe, 0).await?;
        let result = self.link.inner.subscribe(node_id).await;
        // A lost response drops the receiver, which ends the SuperLink's side too.
        let instructions = self.link.after(faults, result)?;
        bump(&self.link.counters.subscriptions);
        Ok(stream::forward(Arc::clone(&self.link), instructions))
    }
}

#[cfg(test)]
mod tests;
