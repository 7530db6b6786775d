//! The state of one faulty link, shared by the wrapper's calls and its stream
//! forwarders: the decider, whether the link is down and until when, the pushes held back
//! for reordering, and which steps the node dropped out of.

use super::counters::{Counters, add, bump};
use super::{Call, CallFaults, Decider, DropPoint, Step};
use floret_core::{Fleet, FleetError, Message};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A push held back for reordering.
pub(super) struct Held {
    id: u64,
    node_id: u64,
    messages: Vec<Message>,
}

/// The state of one faulty link.
pub(super) struct Link {
    pub(super) inner: Arc<dyn Fleet>,
    pub(super) decider: Mutex<Decider>,
    /// Origin of the offsets the decider works with (scheduled outages, bandwidth).
    pub(super) started: Instant,
    /// Until when dropouts and `disconnect_for` keep the link down; streams watch it to
    /// end when the link goes down.
    pub(super) down_until: watch::Sender<Option<Instant>>,
    pub(super) counters: Counters,
    pub(super) held: Mutex<Vec<Held>>,
    pub(super) next_hold: AtomicU64,
    /// Steps whose dropout has been decided: once each, at their first instruction, so a
    /// redelivered instruction does not take the node out again.
    pub(super) decided: Mutex<HashSet<Step>>,
    pub(super) dropped_out: Mutex<Vec<Step>>,
}

/// A poisoned lock only means a test thread panicked while holding it; the data (counts,
/// queues) is still what the other threads need to finish.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn unavailable(what: &str) -> FleetError {
    FleetError::Unavailable(format!("injected fault: {what}"))
}

impl Link {
    pub(super) fn new(inner: Arc<dyn Fleet>, decider: Decider) -> Link {
        Link {
            inner,
            decider: Mutex::new(decider),
            started: Instant::now(),
            down_until: watch::Sender::new(None),
            counters: Counters::default(),
            held: Mutex::default(),
            next_hold: AtomicU64::new(0),
            decided: Mutex::default(),
            dropped_out: Mutex::default(),
        }
    }

    pub(super) fn since_start(&self) -> Duration {
        self.started.elapsed()
    }

    /// How much longer the link is down, if it is.
    pub(super) fn down_for(&self) -> Option<Duration> {
        let now = Instant::now();
        let manual = (*self.down_until.borrow())
            .map(|until| until.saturating_duration_since(now))
            .filter(|left| !left.is_zero());
        let scheduled = lock(&self.decider).outage_at(self.since_start());
        manual.max(scheduled)
    }

    pub(super) fn check_up(&self) -> Result<(), FleetError> {
        match self.down_for() {
            Some(_) => {
                bump(&self.counters.refused_while_down);
                Err(unavailable("the link is down"))
            }
            None => Ok(()),
        }
    }

    pub(super) fn go_down(&self, length: Duration) {
        let until = Instant::now() + length;
        self.down_until
            .send_modify(|u| *u = Some(u.map_or(until, |old| old.max(until))));
        bump(&self.counters.disconnects);
    }

    /// Waits `delay` plus the time `bytes` of payload take at the bandwidth cap.
    pub(super) async fn wait(&self, delay: Duration, bytes: usize) {
        add(&self.counters.payload_bytes, bytes as u64);
        let transfer = lock(&self.decider).transfer(self.since_start(), bytes);
        let total = delay + transfer;
        if !total.is_zero() {
            bump(&self.counters.delayed);
            tokio::time::sleep(total).await;
        }
    }

    /// Everything before a call reaches the inner fleet: down check, delay, lost request.
    pub(super) async fn before(&self, call: Call, bytes: usize) -> Result<CallFaults, FleetError> {
        bump(&self.counters.calls);
        self.check_up()?;
        let faults = lock(&self.decider).call(call);
        self.wait(faults.delay, bytes).await;
        // It may have gone down while the call was on its way.
        self.check_up()?;
        if faults.drop == Some(DropPoint::Request) {
            bump(&self.counters.dropped_requests);
            return Err(unavailable("request lost"));
        }
        Ok(faults)
    }

    /// The response, unless the plan loses it.
    pub(super) fn after<T>(
        &self,
        faults: CallFaults,
        result: Result<T, FleetError>,
    ) -> Result<T, FleetError> {
        if faults.drop == Some(DropPoint::Response) {
            bump(&self.counters.dropped_responses);
            return Err(unavailable("response lost"));
        }
        result
    }

    /// Whether `message` takes the node out of its step: decided at the step's first
    /// instruction; when it does, the link goes down now.
    pub(super) fn drops_out(&self, message: &Message) -> bool {
        let step = Step::of(message);
        if !lock(&self.decided).insert(step.clone()) {
            return false;
        }
        let Some(length) = lock(&self.decider).drops_out(&step.group_id, &step.message_type) else {
            return false;
        };
        bump(&self.counters.dropouts);
        lock(&self.dropped_out).push(step);
        self.go_down(length);
        true
    }

    /// Holds `messages` back for at most `hold`; a later push that goes through releases
    /// them sooner.
    pub(super) fn hold(self: &Arc<Self>, node_id: u64, messages: Vec<Message>, hold: Duration) {
        let id = self.next_hold.fetch_add(1, Ordering::Relaxed);
        lock(&self.held).push(Held {
            id,
            node_id,
            messages,
        });
        bump(&self.counters.held_pushes);
        let link = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            link.release(Some(id)).await;
        });
    }

    /// Pushes the held pushes (`only` one of them, or all) to the inner fleet.
    pub(super) async fn release(&self, only: Option<u64>) {
        let due: Vec<Held> = {
            let mut held = lock(&self.held);
            let (due, keep) = held
                .drain(..)
                .partition(|h| only.is_none_or(|id| h.id == id));
            *held = keep;
            due
        };
        for h in due {
            if self
                .inner
                .push_messages(h.node_id, h.messages)
                .await
                .is_err()
            {
                bump(&self.counters.held_refused);
            }
        }
    }
}
