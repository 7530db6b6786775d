//! Registrations the SuperLink made but the SuperNode does not use: "ghost" nodes. They
//! stay registered until their lease runs out, but a node is sampled only once it has
//! shown it is alive after registering (`NodeStore::node_alive`), so no round waits for
//! one. On the in-memory link and the paused clock, so that a lease (20 s) costs nothing.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Deployment, Wire, wait_until};
use floret_actors::{RunStatus, SubStatus};
use floret_chaos_tests::{Call, Decider, DropPoint, Drops, FaultPlan};
use std::time::Duration;

const NODES: usize = 3;

/// `drops` under the first seed that gives link 0's first calls the listed drops, in order.
fn plan_where(drops: Drops, calls: &[(Call, Option<DropPoint>)]) -> FaultPlan {
    (0..10_000)
        .map(|seed| FaultPlan {
            drops: drops.clone(),
            ..FaultPlan::seeded(seed)
        })
        .find(|plan| {
            let mut decider = Decider::new(plan.clone(), 0);
            calls
                .iter()
                .all(|&(call, wanted)| decider.call(call).drop == wanted)
        })
        .expect("some seed gives that sequence")
}

fn plans(first: FaultPlan) -> Vec<FaultPlan> {
    let mut plans = vec![FaultPlan::default(); NODES];
    plans[0] = first;
    plans
}

/// A lost RegisterNode response: the SuperLink registered a node the SuperNode never
/// heard of, and the SuperNode registers again. Without node authentication nothing ties
/// the two together (as in Flower), so the ghost stays registered until its lease ends.
/// It never heartbeats or subscribes, so it is never sampled: every round is whole and
/// quick (it used to sample the ghost and wait out its timeout until the sweep).
#[tokio::test(start_paused = true)]
async fn a_ghost_left_by_a_lost_registration_response_slows_no_round() {
    let first = plan_where(
        Drops {
            request: 0.0,
            response: 0.5,
            calls: vec![Call::Register],
        },
        &[
            (Call::Register, Some(DropPoint::Response)),
            (Call::Register, None),
        ],
    );
    let run = async {
        let deployment = Deployment::start(Wire::Memory, plans(first)).await;
        let state = deployment.service.state();
        assert_eq!(
            state.nodes_info().len(),
            NODES + 1,
            "one ghost is registered"
        );
        assert_eq!(
            state.node_ids().len(),
            NODES,
            "but not offered to ServerApps"
        );
        // Rounds of 5 s at most: a round that sampled the ghost would take all of them.
        let outcome = deployment
            .run(
                "num-server-rounds=6 total-params=1000 round-timeout=5.0",
                0.0,
            )
            .await;
        assert_eq!(
            outcome.info.status,
            RunStatus::Finished(SubStatus::Completed),
            "{}",
            outcome.info.reason
        );
        for round in 1..=6 {
            let train = outcome.train(round);
            assert_eq!(
                (train.sampled, train.replies),
                (NODES as u64, NODES as u64),
                "round {round}"
            );
            assert!(
                outcome.durations[round - 1] < Duration::from_secs(1),
                "round {round} took {:?}",
                outcome.durations[round - 1]
            );
        }
        // Its lease (2 x 10 s) ends, and the sweeper forgets it.
        wait_until("the ghost to be gone", Duration::from_secs(30), || {
            state.nodes_info().len() == NODES
        })
        .await;
        deployment.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("bounded");
}

/// A Subscribe lost right after a successful RegisterNode costs a retry, not a
/// registration: the SuperNode keeps its id from `register`. (Found with FaultyFleet: it
/// used to register again under a new id, leaving a ghost that every round sampled and
/// waited for until its lease ended.)
#[tokio::test(start_paused = true)]
async fn a_subscribe_lost_after_registering_does_not_register_the_node_twice() {
    let first = plan_where(
        Drops {
            request: 0.5,
            response: 0.0,
            calls: vec![Call::Subscribe],
        },
        &[
            (Call::Register, None),
            (Call::Subscribe, Some(DropPoint::Request)),
            // The retry: a heartbeat (or, as now, a second registration), then Subscribe.
            (Call::Heartbeat, None),
            (Call::Subscribe, None),
        ],
    );
    let run = async {
        let deployment = Deployment::start(Wire::Memory, plans(first)).await;
        assert_eq!(deployment.links[0].counts().dropped_requests, 1);
        assert_eq!(
            deployment.service.state().nodes_info().len(),
            NODES,
            "a node was registered twice"
        );
        deployment.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("bounded");
}
