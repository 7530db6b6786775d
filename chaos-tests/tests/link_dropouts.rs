//! About 30 % of the nodes drop out of every round (their link goes down when the round's
//! instruction reaches them, for longer than the round timeout), on top of calls lost
//! before or after the SuperLink acted. The run must complete at its round timeouts,
//! aggregating exactly the nodes that stayed, and the dropped nodes must be back for the
//! next round by themselves.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Deployment, Wire};
use floret_chaos_tests::{Call, Decider, Delay, Dropout, Drops, FaultPlan, Step};
use std::time::Duration;

const NODES: usize = 10;
const ROUNDS: usize = 3;
/// The round timeout (`round-timeout=2.0`): dropped nodes are waited for until then.
const ROUND_TIMEOUT: Duration = Duration::from_secs(2);
/// Longer than the round timeout, so a dropped node's reply cannot count in its round;
/// shorter than two, so it is back (reconnect backoff <= 0.25 s) for the next round.
const DOWN: Duration = Duration::from_millis(2_500);

fn plan() -> FaultPlan {
    FaultPlan {
        dropout: Some(Dropout {
            rate: 0.3,
            length: DOWN,
            groups: vec![],
        }),
        // Lost calls are retried well within a round: they must cost nothing.
        drops: Drops {
            request: 0.03,
            response: 0.03,
            calls: Call::ALL_BUT_REGISTER.to_vec(),
        },
        delay: Delay {
            fixed: Duration::from_millis(5),
            jitter: Duration::from_millis(20),
        },
        ..FaultPlan::seeded(2026)
    }
}

fn train_step(round: usize) -> Step {
    Step {
        group_id: round.to_string(),
        message_type: "train".into(),
    }
}

async fn nodes_dropping_out_each_round_leave_the_rest_aggregated(wire: Wire) {
    // The seed is chosen so that every round loses some nodes; checked here, so that a
    // change of the hash cannot turn this into a fault-free run.
    let predicted: Vec<usize> = (1..=ROUNDS)
        .map(|round| {
            (0..NODES as u64)
                .filter(|&link| {
                    Decider::new(plan(), link)
                        .drops_out(&round.to_string(), "train")
                        .is_some()
                })
                .count()
        })
        .collect();
    assert!(predicted.iter().all(|&n| n > 0), "{predicted:?}");

    let deployment = Deployment::start(wire, vec![plan(); NODES]).await;
    let outcome = deployment
        .run(
            "num-server-rounds=3 total-params=1000 round-timeout=2.0",
            0.0,
        )
        .await;
    outcome.assert_completed(ROUNDS);
    for round in 1..=ROUNDS {
        let dropped = deployment
            .links
            .iter()
            .filter(|link| link.dropped_out().contains(&train_step(round)))
            .count();
        assert_eq!(dropped, predicted[round - 1], "round {round}");
        let train = outcome.train(round);
        assert_eq!(train.sampled, NODES as u64, "round {round}: {train:?}");
        assert_eq!(
            train.replies,
            (NODES - dropped) as u64,
            "round {round}: every node that stayed is aggregated, no other: {train:?}"
        );
        assert_eq!(train.failures, 0, "round {round}: {train:?}");
        // Rounds with dropouts end at their timeout, not before and not much later (the
        // follower sees events a few milliseconds late, hence the margin).
        let took = outcome.durations[round - 1];
        assert!(
            took + Duration::from_millis(100) >= ROUND_TIMEOUT
                && took < ROUND_TIMEOUT + Duration::from_secs(2),
            "round {round} took {took:?}"
        );
    }
    let counts = deployment.counts();
    assert!(
        counts.dropped_requests > 0 && counts.dropped_responses > 0,
        "{counts:?}"
    );
    deployment.shutdown().await;
}

over_every_wire!(nodes_dropping_out_each_round_leave_the_rest_aggregated, 20);
