//! Replies pushed twice (retransmissions), held back and released after later ones, and
//! instructions delivered twice: the SuperLink must apply every reply once and lose none.
//! Nothing is dropped in this scenario, so every sampled node must be aggregated, no reply
//! may be refused on its first copy (a node running an instruction twice would push a
//! second, refused reply) and every second copy must be refused.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Deployment, Wire};
use floret_chaos_tests::{Delay, FaultPlan, Reorder, StreamFaults};
use std::time::Duration;

const NODES: usize = 6;
const ROUNDS: usize = 3;

fn plan() -> FaultPlan {
    FaultPlan {
        duplicate_push: 0.5,
        reorder: Reorder {
            rate: 0.4,
            hold: Duration::from_millis(300),
        },
        stream: StreamFaults {
            duplicate: 0.3,
            delay: Delay {
                fixed: Duration::ZERO,
                jitter: Duration::from_millis(30),
            },
            ..StreamFaults::default()
        },
        ..FaultPlan::seeded(77)
    }
}

async fn duplicated_and_reordered_replies_are_applied_exactly_once(wire: Wire) {
    let deployment = Deployment::start(wire, vec![plan(); NODES]).await;
    let outcome = deployment
        .run(
            "num-server-rounds=3 total-params=1000 round-timeout=10.0",
            1.0,
        )
        .await;
    outcome.assert_completed(ROUNDS);
    for round in &outcome.rounds {
        for (phase, summary) in [("train", &round.train), ("evaluate", &round.evaluate)] {
            let s = summary.as_ref().expect("both phases run");
            // A duplicate that got through would show as a late reply: it answers a
            // message the phase no longer waits for.
            assert_eq!(
                (s.sampled, s.replies, s.failures, s.late),
                (NODES as u64, NODES as u64, 0, 0),
                "round {} {phase}",
                round.round
            );
        }
    }
    let counts = deployment.counts();
    // The faults fired...
    assert!(counts.duplicated_pushes > 0, "{counts:?}");
    assert!(counts.held_pushes > 0, "{counts:?}");
    assert!(counts.deliveries_duplicated > 0, "{counts:?}");
    // ...and the SuperLink took each reply once.
    assert_eq!(counts.duplicates_accepted, 0, "{counts:?}");
    assert_eq!(
        counts.duplicates_refused, counts.duplicated_pushes,
        "{counts:?}"
    );
    assert_eq!(counts.held_refused, 0, "{counts:?}");
    assert_eq!(
        counts.pushes_refused, 0,
        "a node answered an instruction twice: {counts:?}"
    );
    assert_eq!(deployment.service.state().held_messages(), 0);
    deployment.shutdown().await;
}

over_every_wire!(
    duplicated_and_reordered_replies_are_applied_exactly_once,
    20
);
