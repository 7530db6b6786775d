//! Every fault at once, at moderate rates: lost requests and responses, delays, pushes
//! sent twice or held back, dropouts shorter than a round, and deliveries lost, repeated
//! and delayed on the stream. The run must complete, never apply a reply twice, never
//! count a node the SuperLink does not have, and leave unanswered only what a fault
//! explains: an instruction lost on a live stream, or a node that dropped out.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Deployment, Wire};
use floret_chaos_tests::{Call, Delay, Dropout, Drops, FaultPlan, Reorder, StreamFaults};
use std::time::Duration;

const NODES: usize = 8;
const ROUNDS: usize = 2;

fn plan() -> FaultPlan {
    let jitter = Delay {
        fixed: Duration::from_millis(2),
        jitter: Duration::from_millis(20),
    };
    FaultPlan {
        // Not Register: a lost RegisterNode response leaves a ghost registration without
        // node authentication (see ghost_nodes.rs), which would blur the counts here.
        drops: Drops {
            request: 0.05,
            response: 0.05,
            calls: vec![
                Call::Heartbeat,
                Call::Pull,
                Call::Push,
                Call::GetRun,
                Call::Subscribe,
            ],
        },
        delay: jitter,
        duplicate_push: 0.2,
        reorder: Reorder {
            rate: 0.2,
            hold: Duration::from_millis(200),
        },
        dropout: Some(Dropout {
            rate: 0.2,
            length: Duration::from_millis(1_200),
            groups: vec![],
        }),
        stream: StreamFaults {
            drop: 0.1,
            duplicate: 0.2,
            delay: jitter,
        },
        ..FaultPlan::seeded(31)
    }
}

async fn every_fault_at_once_costs_only_what_the_faults_explain(wire: Wire) {
    let deployment = Deployment::start(wire, vec![plan(); NODES]).await;
    let outcome = deployment
        .run(
            "num-server-rounds=2 total-params=1000 round-timeout=2.0",
            1.0,
        )
        .await;
    outcome.assert_completed(ROUNDS);
    let mut unanswered = 0;
    for round in &outcome.rounds {
        for s in [&round.train, &round.evaluate].into_iter().flatten() {
            assert_eq!(s.sampled, NODES as u64, "round {}: {s:?}", round.round);
            assert_eq!(s.failures, 0, "round {}: {s:?}", round.round);
            assert!(s.replies <= s.sampled, "round {}: {s:?}", round.round);
            unanswered += s.sampled - s.replies;
        }
    }
    let counts = deployment.counts();
    assert!(
        counts.dropped_requests > 0
            && counts.dropped_responses > 0
            && counts.duplicated_pushes > 0
            && counts.held_pushes > 0
            && counts.dropouts > 0
            && counts.deliveries_duplicated > 0
            && counts.deliveries_lost > 0,
        "every kind of fault fired: {counts:?}"
    );
    assert_eq!(counts.duplicates_accepted, 0, "{counts:?}");
    assert!(
        unanswered <= counts.deliveries_lost + counts.dropouts,
        "{unanswered} instructions unanswered, more than the faults explain: {counts:?}"
    );
    deployment.shutdown().await;
}

over_every_wire!(every_fault_at_once_costs_only_what_the_faults_explain, 20);
