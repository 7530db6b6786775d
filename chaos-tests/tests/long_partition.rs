//! A node cut off for longer than its lease (a laptop asleep): the SuperLink declares it
//! offline and stops sampling it; when the link comes back the SuperNode learns it is
//! unknown, registers again under a new id by itself, and the last rounds include it.
//! In memory on the paused clock only: the lease alone is 20 s.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Deployment, Wire};
use floret_chaos_tests::{Delay, Dropout, FaultPlan, StreamFaults};
use std::time::Duration;

const NODES: usize = 4;
const ROUNDS: usize = 16;
/// Twice the lease (heartbeat interval 10 s, patience 2).
const OUTAGE: Duration = Duration::from_secs(40);

fn plan(link: usize) -> FaultPlan {
    if link == 0 {
        FaultPlan {
            dropout: Some(Dropout {
                rate: 1.0,
                length: OUTAGE,
                groups: vec!["2".into()],
            }),
            ..FaultPlan::seeded(1)
        }
    } else {
        // Slow links elsewhere keep every round at 3 s or more, so that the run is still
        // going when node 0 comes back.
        FaultPlan {
            stream: StreamFaults {
                delay: Delay {
                    fixed: Duration::from_secs(3),
                    jitter: Duration::ZERO,
                },
                ..StreamFaults::default()
            },
            ..FaultPlan::seeded(1)
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_cut_off_past_its_lease_registers_again_and_rejoins() {
    let run = async {
        let deployment = Deployment::start(Wire::Memory, (0..NODES).map(plan).collect()).await;
        let state = deployment.service.state();
        let before = state.node_ids().to_vec();
        let outcome = deployment
            .run(
                "num-server-rounds=16 total-params=1000 round-timeout=5.0",
                0.0,
            )
            .await;
        outcome.assert_completed(ROUNDS);
        let all = NODES as u64;
        let sampled: Vec<u64> = (1..=ROUNDS).map(|r| outcome.train(r).sampled).collect();
        // Sampled while its lease lasts, then left out, then back.
        assert_eq!(outcome.train(2).replies, all - 1);
        assert!(sampled.contains(&(all - 1)), "forgotten: {sampled:?}");
        let last = outcome.train(ROUNDS);
        assert_eq!((last.sampled, last.replies), (all, all), "{sampled:?}");
        let after = state.node_ids().to_vec();
        assert_eq!(after.len(), NODES);
        let renamed = after.iter().filter(|id| !before.contains(id)).count();
        assert_eq!(renamed, 1, "node 0 came back under a new id");
        let counts = deployment.links[0].counts();
        assert!(counts.subscriptions >= 2, "{counts:?}");
        deployment.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .expect("bounded");
}
