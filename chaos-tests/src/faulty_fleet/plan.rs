//! What a `FaultyFleet` does to the calls and deliveries of one link: the knobs, their
//! defaults (no fault at all) and their validation. Rates are chances per call or per
//! delivery, in [0, 1].

use std::time::Duration;
use thiserror::Error;

/// The Fleet calls, for choosing which ones a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// `register_node`.
    Register,
    /// `deactivate_node`.
    Deactivate,
    /// `heartbeat`.
    Heartbeat,
    /// `pull_messages`.
    Pull,
    /// `push_messages`.
    Push,
    /// `get_run`.
    GetRun,
    /// `get_fab`.
    GetFab,
    /// `subscribe`.
    Subscribe,
}

impl Call {
    /// Every call.
    pub const ALL: [Call; 8] = [
        Call::Register,
        Call::Deactivate,
        Call::Heartbeat,
        Call::Pull,
        Call::Push,
        Call::GetRun,
        Call::GetFab,
        Call::Subscribe,
    ];

    /// Every call but `Register`. A lost RegisterNode *response* leaves a node the SuperLink
    /// counts as connected but that nobody runs (until its lease ends), which rounds then
    /// wait for: a real hazard, but one most scenarios want to leave out.
    pub const ALL_BUT_REGISTER: [Call; 7] = [
        Call::Deactivate,
        Call::Heartbeat,
        Call::Pull,
        Call::Push,
        Call::GetRun,
        Call::GetFab,
        Call::Subscribe,
    ];
}

/// Calls that fail as `FleetError::Unavailable`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Drops {
    /// Chance that the request is lost: the SuperLink never sees the call.
    pub request: f64,
    /// Chance that the response is lost: the SuperLink carried the call out, the node
    /// hears an error. What makes retries (a re-pushed reply) a question of idempotence.
    pub response: f64,
    /// The calls either drop applies to; none when empty.
    pub calls: Vec<Call>,
}

/// A fixed delay plus a uniform jitter in [0, jitter].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Delay {
    /// Added every time.
    pub fixed: Duration,
    /// Upper bound of the uniform extra delay drawn each time.
    pub jitter: Duration,
}

/// Pushed replies held back in the network and released after later ones.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Reorder {
    /// Chance that a push is held: the node is told it arrived, the SuperLink sees it
    /// after the link's next push has gone through, or after `hold`, whichever is first.
    pub rate: f64,
    /// How long a held push waits at most for a later one to overtake it.
    pub hold: Duration,
}

/// The node dropping out of a step: when the first instruction of a step (a `group_id`,
/// the server round in Floret, and a message type) reaches the node, the link goes down
/// for `length` and the instruction is lost with it. Decided per (link, step), so a test
/// can compute which nodes drop out of which round ([`super::Decider::drops_out`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dropout {
    /// Chance per (link, step) that the node drops out of the step, in [0, 1].
    pub rate: f64,
    /// How long the link stays down once the node drops out.
    pub length: Duration,
    /// Only steps with these group ids; empty means every step.
    pub groups: Vec<String>,
}

/// A scheduled disconnect window, counted from the wrapper's creation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    /// When the window opens, counted from the wrapper's creation.
    pub after: Duration,
    /// How long the link stays down.
    pub length: Duration,
}

/// Faults on the instruction stream of `subscribe`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StreamFaults {
    /// Chance that a delivery is lost. The stream stays up, so the SuperLink believes it
    /// delivered: only a resubscription (which redelivers the unanswered) brings it back.
    pub drop: f64,
    /// Chance that a delivery arrives twice.
    pub duplicate: f64,
    /// Added before each delivery; deliveries stay in order.
    pub delay: Delay,
}

/// Every fault of one link. `FaultPlan::default()` injects nothing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultPlan {
    /// Same seed, same link number, same sequence of calls: same faults.
    pub seed: u64,
    /// Calls that fail as `FleetError::Unavailable`.
    pub drops: Drops,
    /// Added to every call.
    pub delay: Delay,
    /// Chance that a push reaches the SuperLink twice (a retransmission).
    pub duplicate_push: f64,
    /// Pushes held back and released after later ones.
    pub reorder: Reorder,
    /// The node dropping out of steps; `None`: never.
    pub dropout: Option<Dropout>,
    /// Scheduled disconnect windows.
    pub outages: Vec<Outage>,
    /// Bytes per second of message payload (array data) the link carries, both directions
    /// sharing it; a call or delivery waits until its payload has "crossed". `None`: no cap.
    pub bandwidth: Option<u64>,
    /// Faults on the `subscribe` instruction stream.
    pub stream: StreamFaults,
}

/// A plan that cannot be carried out.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanError {
    /// A chance outside [0, 1], or request and response drops that add up to more than 1.
    #[error("{field} is a chance per call and must be in [0, 1], got {value}")]
    Rate {
        /// The field, dotted as in the plan (`drops.request`).
        field: &'static str,
        /// The value given.
        value: f64,
    },
    /// A bandwidth cap of 0, which would stall every call.
    #[error("bandwidth must be at least 1 byte/s")]
    Bandwidth,
    /// A duration that must be positive is zero; the field named.
    #[error("{0} must be longer than zero")]
    Length(&'static str),
}

impl FaultPlan {
    /// No fault yet, and this seed: fill in the faults with struct update syntax.
    pub fn seeded(seed: u64) -> FaultPlan {
        FaultPlan {
            seed,
            ..FaultPlan::default()
        }
    }

    /// Checks every rate and length; the error names the bad field.
    pub fn validate(&self) -> Result<(), PlanError> {
        let mut rates = vec![
            ("drops.request", self.drops.request),
            ("drops.response", self.drops.response),
            ("duplicate_push", self.duplicate_push),
            ("reorder.rate", self.reorder.rate),
            ("stream.drop", self.stream.drop),
            ("stream.duplicate", self.stream.duplicate),
        ];
        if let Some(d) = &self.dropout {
            rates.push(("dropout.rate", d.rate));
            if d.length.is_zero() {
                return Err(PlanError::Length("dropout.length"));
            }
        }
        for (field, value) in rates {
            if !(0.0..=1.0).contains(&value) {
                return Err(PlanError::Rate { field, value });
            }
        }
        if self.drops.request + self.drops.response > 1.0 {
            return Err(PlanError::Rate {
                field: "drops.request + drops.response",
                value: self.drops.request + self.drops.response,
            });
        }
        if self.reorder.rate > 0.0 && self.reorder.hold.is_zero() {
            return Err(PlanError::Length("reorder.hold"));
        }
        if self.outages.iter().any(|o| o.length.is_zero()) {
            return Err(PlanError::Length("outage length"));
        }
        if self.bandwidth == Some(0) {
            return Err(PlanError::Bandwidth);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_plan_is_valid_and_bad_fields_are_named() {
        assert_eq!(FaultPlan::default().validate(), Ok(()));
        let mut plan = FaultPlan::seeded(1);
        plan.stream.duplicate = 1.5;
        assert_eq!(
            plan.validate(),
            Err(PlanError::Rate {
                field: "stream.duplicate",
                value: 1.5
            })
        );
        let plan = FaultPlan {
            reorder: Reorder {
                rate: 0.5,
                hold: Duration::ZERO,
            },
            ..FaultPlan::default()
        };
        assert_eq!(plan.validate(), Err(PlanError::Length("reorder.hold")));
        let plan = FaultPlan {
            drops: Drops {
                request: f64::NAN,
                ..Drops::default()
            },
            ..FaultPlan::default()
        };
        assert!(matches!(plan.validate(), Err(PlanError::Rate { .. })));
        let plan = FaultPlan {
            bandwidth: Some(0),
            ..FaultPlan::default()
        };
        assert_eq!(plan.validate(), Err(PlanError::Bandwidth));
    }
}
