//! Faulty ClientApps: wrap a real app so that a seeded share of nodes panic, fail or stall
//! in a given round, while the others run the real handler.

use floret_core::seeded::{mix, unit};
use floret_core::{AppError, ClientApp, Context, Message};
use std::time::Duration;

/// What a faulty node does instead of (or before) answering.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// The handler panics.
    Panic,
    /// The handler returns an error.
    Error,
    /// The handler blocks for this long, then answers normally (a straggler).
    Delay(Duration),
}

/// Which nodes fail, and how.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultPlan {
    /// What a hit node does.
    pub fault: Fault,
    /// Share of nodes hit in each round, 0.0..=1.0.
    pub fraction: f64,
    /// Same seed, same nodes hit in the same rounds.
    pub seed: u64,
}

impl FaultPlan {
    /// Whether the node with this partition id is hit in this server round. Stable for a
    /// given seed, different from round to round, as real dropouts are.
    pub fn hits(&self, partition_id: i64, server_round: i64) -> bool {
        let x =
            mix(self.seed ^ mix(partition_id as u64) ^ mix(server_round as u64).rotate_left(17));
        unit(x) < self.fraction
    }
}

/// `app` with `plan`'s faults injected into every handler it has.
pub fn inject(app: ClientApp, plan: FaultPlan) -> ClientApp {
    let mut faulty = ClientApp::new();
    for message_type in app.handled() {
        let inner = app.clone();
        let registered =
            faulty
                .clone()
                .on(message_type, move |msg: &Message, ctx: &mut Context| {
                    let partition = ctx.node_config_i64("partition-id").unwrap_or(0);
                    if plan.hits(partition, server_round(msg)) {
                        match plan.fault {
                            Fault::Panic => panic!("injected fault on partition {partition}"),
                            Fault::Error => {
                                return Err(AppError::other(format!(
                                    "injected fault on partition {partition}"
                                )));
                            }
                            // A ClientApp handler is synchronous and runs on a blocking
                            // thread, where a slow model is a thread that sleeps.
                            #[allow(clippy::disallowed_methods)]
                            Fault::Delay(d) => std::thread::sleep(d),
                        }
                    }
                    inner.handle(msg, ctx)
                });
        // `handled()` only lists types that were valid when registered.
        if let Ok(next) = registered {
            faulty = next;
        }
    }
    faulty
}

fn server_round(msg: &Message) -> i64 {
    msg.content()
        .ok()
        .and_then(|c| c.config_record("config").ok())
        .and_then(|c| c.get_i64("server-round").ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_follows_the_fraction_and_changes_between_rounds() {
        let plan = FaultPlan {
            fault: Fault::Error,
            fraction: 0.3,
            seed: 7,
        };
        let hits = (0..10_000).filter(|&p| plan.hits(p, 1)).count();
        assert!((2_700..3_300).contains(&hits), "{hits}");
        let same = (0..1_000)
            .filter(|&p| plan.hits(p, 1) == plan.hits(p, 2))
            .count();
        assert!(same < 900, "rounds should hit different nodes: {same}");
        assert_eq!(plan.hits(5, 3), plan.hits(5, 3));
    }

    /// A seed must keep hitting the same nodes: node 3 of seed 9 draws 0.44024842937918 in
    /// round 2, as it did when the hash moved to `floret_core::seeded`.
    #[test]
    fn hits_are_pinned() {
        let plan = |fraction| FaultPlan {
            fault: Fault::Error,
            fraction,
            seed: 9,
        };
        assert!(!plan(0.4402).hits(3, 2));
        assert!(plan(0.4403).hits(3, 2));
    }
}
