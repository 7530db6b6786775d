//! Half the nodes are cut off from the SuperLink when round 2's instruction reaches them,
//! for longer than the round timeout, then the partition heals. Round 2 aggregates the
//! other half; the cut-off nodes reconnect by themselves, under their old ids, and later
//! rounds include them again. No reply is applied twice on the way.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Deployment, Wire};
use floret_chaos_tests::{Dropout, FaultPlan, Step};
use std::time::Duration;

const NODES: usize = 6;
const CUT: usize = NODES / 2;
const ROUNDS: usize = 4;
/// Longer than the round timeout (2 s), shorter than two.
const PARTITION: Duration = Duration::from_millis(2_500);

fn plan(link: usize) -> FaultPlan {
    FaultPlan {
        dropout: (link < CUT).then(|| Dropout {
            rate: 1.0,
            length: PARTITION,
            groups: vec!["2".into()],
        }),
        // Retransmitted replies on every node, before and after the partition.
        duplicate_push: 0.3,
        ..FaultPlan::seeded(5)
    }
}

async fn a_healed_partition_brings_its_nodes_back_into_later_rounds(wire: Wire) {
    let deployment = Deployment::start(wire, (0..NODES).map(plan).collect()).await;
    let state = deployment.service.state();
    let mut ids_before = state.node_ids().to_vec();
    ids_before.sort_unstable();
    let outcome = deployment
        .run(
            "num-server-rounds=4 total-params=1000 round-timeout=2.0",
            0.0,
        )
        .await;
    outcome.assert_completed(ROUNDS);
    let replies: Vec<u64> = (1..=ROUNDS).map(|r| outcome.train(r).replies).collect();
    let all = NODES as u64;
    assert_eq!(
        replies,
        [all, all - CUT as u64, all, all],
        "{:?}",
        outcome.rounds
    );
    for round in 1..=ROUNDS {
        let train = outcome.train(round);
        assert_eq!((train.sampled, train.failures), (all, 0), "round {round}");
    }
    // At most the cut-off nodes' round-2 replies arrive late, once each.
    let late: u64 = (1..=ROUNDS).map(|r| outcome.train(r).late).sum();
    assert!(late <= CUT as u64, "{late} late replies");
    let round_2 = Step {
        group_id: "2".into(),
        message_type: "train".into(),
    };
    for (i, link) in deployment.links.iter().enumerate() {
        let counts = link.counts();
        if i < CUT {
            assert_eq!(
                link.dropped_out(),
                std::slice::from_ref(&round_2),
                "node {i}"
            );
            assert!(
                counts.subscriptions >= 2 && counts.streams_cut == 1,
                "node {i} reconnected by itself: {counts:?}"
            );
        } else {
            assert!(link.dropped_out().is_empty(), "node {i}");
            assert_eq!(counts.subscriptions, 1, "node {i}: {counts:?}");
        }
    }
    let counts = deployment.counts();
    assert!(counts.duplicated_pushes > 0, "{counts:?}");
    assert_eq!(counts.duplicates_accepted, 0, "{counts:?}");
    let mut ids_after = state.node_ids().to_vec();
    ids_after.sort_unstable();
    assert_eq!(
        ids_before, ids_after,
        "the nodes came back under their own ids"
    );
    deployment.shutdown().await;
}

over_every_wire!(
    a_healed_partition_brings_its_nodes_back_into_later_rounds,
    20
);
