//! What a `FaultyFleet` injected, so a test can check that the faults it asserts about
//! really happened (a chaos test whose faults never fired proves nothing).

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of injected faults and of what the SuperLink made of them, read with
/// `FaultyFleet::counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultCounts {
    /// Calls made through the wrapper.
    pub calls: u64,
    /// Calls that waited for an injected delay or the bandwidth cap.
    pub delayed: u64,
    /// Calls lost before reaching the SuperLink.
    pub dropped_requests: u64,
    /// Calls carried out by the SuperLink whose response was lost.
    pub dropped_responses: u64,
    /// Calls refused because the link was down.
    pub refused_while_down: u64,
    /// Times the link was taken down by a dropout or `disconnect_for` (scheduled outages
    /// are in the plan already).
    pub disconnects: u64,
    /// Steps the node dropped out of.
    pub dropouts: u64,
    /// Pushes (first copies) the SuperLink refused: the reply was already in, or not
    /// awaited. Expected after a lost response (the node pushes again); without one, a
    /// sign that a node ran an instruction twice.
    pub pushes_refused: u64,
    /// Pushes sent a second time.
    pub duplicated_pushes: u64,
    /// Second copies the SuperLink refused, as it must.
    pub duplicates_refused: u64,
    /// Second copies the SuperLink accepted: a reply applied twice.
    pub duplicates_accepted: u64,
    /// Pushes held back for reordering.
    pub held_pushes: u64,
    /// Held pushes the SuperLink refused on release.
    pub held_refused: u64,
    /// Subscriptions opened through the wrapper.
    pub subscriptions: u64,
    /// Instruction streams the wrapper ended (link down) before the SuperLink did.
    pub streams_cut: u64,
    /// Instructions handed to the node (stream and pull), copies included.
    pub deliveries: u64,
    /// Stream deliveries lost on the way to the node.
    pub deliveries_lost: u64,
    /// Stream deliveries handed to the node twice.
    pub deliveries_duplicated: u64,
    /// Payload bytes carried under the bandwidth cap.
    pub payload_bytes: u64,
}

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        /// The live, shared form of [`FaultCounts`].
        #[derive(Debug, Default)]
        pub(super) struct Counters {
            $(pub(super) $field: AtomicU64,)*
        }

        impl Counters {
            pub(super) fn snapshot(&self) -> FaultCounts {
                FaultCounts {
                    $($field: self.$field.load(Ordering::Relaxed),)*
                }
            }
        }

        impl FaultCounts {
            /// Field-wise sum, for totals over the links of a test.
            pub fn sum<'a>(all: impl IntoIterator<Item = &'a FaultCounts>) -> FaultCounts {
                all.into_iter().fold(FaultCounts::default(), |a, b| FaultCounts {
                    $($field: a.$field + b.$field,)*
                })
            }
        }
    };
}

counters!(
    calls,
    delayed,
    dropped_requests,
    dropped_responses,
    refused_while_down,
    disconnects,
    dropouts,
    pushes_refused,
    duplicated_pushes,
    duplicates_refused,
    duplicates_accepted,
    held_pushes,
    held_refused,
    subscriptions,
    streams_cut,
    deliveries,
    deliveries_lost,
    deliveries_duplicated,
    payload_bytes,
);

/// One more.
pub(super) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

pub(super) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
