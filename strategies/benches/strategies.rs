//! Each strategy's aggregation throughput (issue 15): one round's aggregate of 100 replies
//! of 1M float32 parameters (4 MB each, 400 MB of reply data), single thread, in GB/s of
//! reply data. The streaming strategies fold the replies and step the server optimiser;
//! the robust ones aggregate the held replies; DP clips every reply's update and adds noise.
//!
//! Run: `cargo bench -p floret-strategies --bench strategies` (optionally names to pick,
//! e.g. `-- fedavg krum`).

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use floret_core::{Array, ArrayRecord, MetricRecord};
use floret_strategies::aggregate::ArrayAccumulator;
use floret_strategies::dp;
use floret_strategies::robust::{Buffered, Robust};
use floret_strategies::{ServerState, ServerUpdate};
use std::hint::black_box;
use std::time::Instant;

const PARAMS: usize = 1_000_000;

/// One strategy's aggregation of the round.
type Aggregation<'a> = Box<dyn Fn() -> ArrayRecord + 'a>;
const REPLIES: usize = 100;

fn record(seed: usize) -> ArrayRecord {
    let values: Vec<f32> = (0..PARAMS)
        .map(|i| ((i * 31 + seed * 17) % 1000) as f32 * 1e-3)
        .collect();
    let mut r = ArrayRecord::new();
    r.insert("w", Array::from_vec(vec![PARAMS as i32], values));
    r
}

/// The weighted average, folded as FedAvg's train phase does.
fn average(model: &ArrayRecord, replies: &[ArrayRecord]) -> ArrayRecord {
    let mut acc = ArrayAccumulator::new(model).unwrap();
    for (i, reply) in replies.iter().enumerate() {
        let checked = acc.check(reply).unwrap();
        acc.fold(&[(checked, 1.0 + (i % 7) as f64)]);
    }
    acc.finish().unwrap()
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let model = record(0);
    let replies: Vec<ArrayRecord> = (1..=REPLIES).map(record).collect();
    let buffered: Vec<Buffered> = replies
        .iter()
        .enumerate()
        .map(|(i, arrays)| {
            let mut metrics = MetricRecord::new();
            metrics.insert("num-examples", 1 + (i % 7) as i64);
            metrics.insert("train_loss", 0.5 + i as f64 * 0.01);
            Buffered {
                node: i as u64 + 1,
                arrays: arrays.clone(),
                metrics,
                weight: 1.0 + (i % 7) as f64,
            }
        })
        .collect();
    let bytes = (REPLIES * PARAMS * 4) as f64;
    println!("{REPLIES} replies x {PARAMS} f32 params ({bytes:.0} bytes), one thread");
    println!("| strategy | seconds | GB/s of reply data |");
    println!("|---|---|---|");
    let (model, replies, buffered) = (&model, &replies, &buffered);
    let update = |u: ServerUpdate| {
        move || {
            let avg = average(model, replies);
            u.apply(1, &mut ServerState::default(), model, avg).unwrap()
        }
    };
    let robust = |r: Robust| move || r.aggregate(model, buffered, "num-examples").arrays.unwrap();
    let cases: Vec<(&str, Aggregation<'_>)> = vec![
        ("fedavg", Box::new(update(ServerUpdate::Average))),
        (
            "fedavgm",
            Box::new(update(ServerUpdate::Momentum {
                server_learning_rate: 1.0,
                server_momentum: 0.9,
            })),
        ),
        ("fedadagrad", Box::new(update(ServerUpdate::adagrad()))),
        ("fedadam", Box::new(update(ServerUpdate::adam()))),
        ("fedyogi", Box::new(update(ServerUpdate::yogi()))),
        ("fedmedian", Box::new(robust(Robust::Median))),
        ("fedtrimmedavg", Box::new(robust(Robust::trimmed_mean()))),
        (
            "krum",
            Box::new(robust(Robust::Krum {
                num_malicious_nodes: 10,
            })),
        ),
        (
            "multikrum",
            Box::new(robust(Robust::MultiKrum {
                num_malicious_nodes: 10,
                num_nodes_to_select: 50,
            })),
        ),
        (
            "bulyan",
            Box::new(robust(Robust::Bulyan {
                num_malicious_nodes: 10,
            })),
        ),
        (
            "qfedavg",
            Box::new(robust(Robust::QFedAvg {
                q: 0.1,
                client_learning_rate: 0.1,
                loss_key: "train_loss".into(),
            })),
        ),
        (
            "dp-server-fixed",
            Box::new(|| {
                let clipped: Vec<ArrayRecord> = replies
                    .iter()
                    .map(|r| dp::clip_update(r, model, 1.0).0)
                    .collect();
                let mut avg = average(model, &clipped);
                dp::add_gaussian_noise(&mut avg, 0.01, &mut rand::rng());
                avg
            }),
        ),
    ];
    for (name, aggregate) in cases {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == name) {
            continue;
        }
        let began = Instant::now();
        black_box(aggregate());
        let secs = began.elapsed().as_secs_f64();
        println!("| {name} | {secs:.3} | {:.2} |", bytes / secs / 1e9);
    }
}
