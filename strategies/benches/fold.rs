//! FedAvg fold throughput (TARGETS.md A1: >= 4 GB/s of reply data per core).
//!
//! Folds 100 replies of one 10M-element float32 array (40 MB each, 4 GB in all) into a
//! fresh accumulator, as one round of aggregation does, and prints GB/s of reply data:
//! once with every reply folded on its own (replies trickling in one by one) and once in
//! batches of 4 (replies that arrived together). Four distinct reply buffers are cycled so
//! the data is not in cache; each run includes the accumulator's first touch of its pages.
//!
//! Run: `cargo bench -p floret-strategies --bench fold`

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use floret_core::{Array, ArrayRecord};
use floret_strategies::aggregate::ArrayAccumulator;
use std::hint::black_box;
use std::time::Instant;

const ELEMENTS: usize = 10_000_000;
const REPLIES: usize = 100;

fn record(seed: usize) -> ArrayRecord {
    let values: Vec<f32> = (0..ELEMENTS)
        .map(|i| ((i * 31 + seed * 17) % 1000) as f32 * 1e-3)
        .collect();
    let mut r = ArrayRecord::new();
    r.insert("w", Array::from_vec(vec![ELEMENTS as i32], values));
    r
}

fn run(model: &ArrayRecord, replies: &[ArrayRecord], per_pass: usize) -> (f64, f64) {
    let began = Instant::now();
    let mut acc = ArrayAccumulator::new(model).expect("model is float32");
    let mut folded = 0;
    while folded < REPLIES {
        let n = per_pass.min(REPLIES - folded);
        let batch: Vec<_> = (folded..folded + n)
            .map(|i| {
                let reply = &replies[i % replies.len()];
                (
                    acc.check(reply).expect("reply matches"),
                    1.0 + (i % 7) as f64,
                )
            })
            .collect();
        acc.fold(&batch);
        folded += n;
    }
    let fold_secs = began.elapsed().as_secs_f64();
    let finishing = Instant::now();
    black_box(acc.finish());
    (fold_secs, finishing.elapsed().as_secs_f64())
}

fn main() {
    let model = record(0);
    let replies: Vec<ArrayRecord> = (1..=4).map(record).collect();
    let bytes = (REPLIES * ELEMENTS * 4) as f64;
    println!(
        "FedAvg fold: {REPLIES} replies x {ELEMENTS} f32 ({:.0} MB each), single thread",
        ELEMENTS as f64 * 4.0 / 1e6
    );
    for per_pass in [1, 4] {
        let mut best = f64::MAX;
        let mut finish = 0.0;
        for _ in 0..3 {
            let (secs, fin) = run(&model, &replies, per_pass);
            if secs < best {
                (best, finish) = (secs, fin);
            }
        }
        println!(
            "  {per_pass} reply/pass: {:6.2} GB/s of reply data ({:.3} s for 4 GB; final average {:.1} ms)",
            bytes / best / 1e9,
            best,
            finish * 1e3
        );
    }
}
