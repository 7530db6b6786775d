//! floret-chaos-tests: fault injection and the suites in `tests/` that use it.
//!
//! Faults wrap the edges — a ClientApp's handlers ([`client_faults`]) and the link between
//! a SuperNode and its SuperLink ([`FaultyFleet`]) — never the logic under test. Choices
//! are seeded, so a failing suite replays exactly.
//!
//! # A faulty link in your own test
//!
//! A SuperNode talks to any `floret_core::Fleet`: the SuperLink's `LinkFleet` in-process,
//! or a gRPC/QUIC `FleetClient`. Wrap that fleet in a [`FaultyFleet`] and hand the wrapper
//! to the SuperNode instead:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::time::Duration;
//! # fn demo(fleet: Arc<dyn floret_core::Fleet>) -> Result<(), floret_chaos_tests::PlanError> {
//! use floret_chaos_tests::{Call, Drops, Dropout, FaultPlan, FaultyFleet};
//! let plan = FaultPlan {
//!     // Calls fail as `FleetError::Unavailable`: 5 % before reaching the SuperLink,
//!     // 5 % after it acted (the node retries something that already happened).
//!     drops: Drops { request: 0.05, response: 0.05, calls: Call::ALL_BUT_REGISTER.to_vec() },
//!     // A third of the nodes vanish for 3 s when a round's instruction reaches them.
//!     dropout: Some(Dropout { rate: 0.3, length: Duration::from_secs(3), groups: vec![] }),
//!     duplicate_push: 0.2,
//!     ..FaultPlan::seeded(7)
//! };
//! let node_index = 0;
//! let faulty = FaultyFleet::new(fleet, plan, node_index)?;
//! // SuperNode::run(config, Arc::new(faulty.clone()), catalog, shutdown).await
//! // ... later, in the test:
//! faulty.disconnect_for(Duration::from_secs(2)); // a partition, healed by itself
//! assert_eq!(faulty.counts().duplicates_accepted, 0, "a reply was applied twice");
//! # Ok(()) }
//! ```
//!
//! - Give every node its own wrapper and its own `link` number: faults are drawn per link,
//!   so nodes sharing a plan fail differently, and the same seed replays the same faults.
//! - Time is tokio's: under `#[tokio::test(start_paused = true)]` delays, holds, outages
//!   and the bandwidth cap cost no real time.
//! - The decisions can be asked in advance: `Decider::new(plan, link).drops_out("2",
//!   "train")` says whether that node drops out of round 2's training, so a test can
//!   predict per-round reply counts exactly. [`FaultyFleet::dropped_out`] lists what did.
//! - [`FaultyFleet::counts`] tells which faults fired; assert on them, so that a scenario
//!   whose faults never happened fails instead of passing for nothing.

pub mod client_faults;
pub mod faulty_fleet;

pub use faulty_fleet::{
    Call, CallFaults, Decider, Delay, Delivery, DropPoint, Dropout, Drops, FaultCounts, FaultPlan,
    FaultyFleet, Outage, PlanError, Reorder, Step, StreamFaults, payload_bytes,
};
