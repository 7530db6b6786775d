//! A 4 MB model (two 2 MB arrays, so gRPC and QUIC carry them in chunks) over links
//! capped at 8 MB/s, with 50-100 ms of delay per call: the run completes, and every round
//! takes at least the time the cap allows for the model to go down to a node and back
//! (1 s).

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::{Deployment, Wire};
use floret_chaos_tests::{Delay, FaultPlan};
use std::time::Duration;

const NODES: usize = 3;
const ROUNDS: usize = 2;
/// `total-params=1000000` float32 values.
const MODEL_BYTES: u64 = 4_000_000;
const BYTES_PER_SECOND: u64 = 8_000_000;

fn plan() -> FaultPlan {
    FaultPlan {
        bandwidth: Some(BYTES_PER_SECOND),
        delay: Delay {
            fixed: Duration::from_millis(50),
            jitter: Duration::from_millis(50),
        },
        ..FaultPlan::seeded(9)
    }
}

async fn a_bandwidth_cap_stretches_rounds_by_what_the_model_takes_to_cross(wire: Wire) {
    let deployment = Deployment::start(wire, vec![plan(); NODES]).await;
    let outcome = deployment
        .run(
            "num-server-rounds=2 total-params=1000000 num-arrays=2 round-timeout=10.0",
            0.0,
        )
        .await;
    outcome.assert_completed(ROUNDS);
    // Down and up again, each link at the cap; links are capped separately, so nodes
    // overlap.
    let floor = Duration::from_secs_f64(2.0 * MODEL_BYTES as f64 / BYTES_PER_SECOND as f64);
    for round in 1..=ROUNDS {
        let train = outcome.train(round);
        assert_eq!(
            (train.sampled, train.replies, train.failures),
            (NODES as u64, NODES as u64, 0),
            "round {round}"
        );
        // No upper bound beyond the round timeout (every reply arrived inside it): on a
        // loaded machine a debug build spends seconds on a 4 MB model anyway.
        let took = outcome.durations[round - 1];
        assert!(
            took >= floor,
            "round {round} took {took:?}, less than the {floor:?} the cap allows"
        );
    }
    let counts = deployment.counts();
    assert!(
        counts.payload_bytes >= 2 * MODEL_BYTES * (NODES * ROUNDS) as u64,
        "{counts:?}"
    );
    deployment.shutdown().await;
}

over_every_wire!(
    a_bandwidth_cap_stretches_rounds_by_what_the_model_takes_to_cross,
    20
);
