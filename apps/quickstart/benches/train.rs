//! Throughput of the quickstart ClientApp's `train` handler, the per-node work of the
//! simulation benchmarks S1 (1,000 nodes x 100k params x 3 rounds) and S2 (10 nodes x 10M
//! params x 3 rounds). Run: `cargo bench -p floret-app-quickstart --bench train`.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use floret_app_quickstart::{client_app, initial_arrays};
use floret_core::{ConfigRecord, Context, Message, RecordDict};
use std::time::Instant;

fn main() {
    let app = client_app();
    println!("| workload | handler calls | params per call | time | params/s |");
    println!("|---|---|---|---|---|");
    for (name, calls, params) in [
        ("S1 node work", 3_000u64, 100_000usize),
        ("S2 node work", 30, 10_000_000),
    ] {
        let arrays = initial_arrays(params, 4);
        let mut config = ConfigRecord::new();
        config.insert("server-round", 1i64);
        let content = RecordDict::new()
            .with("arrays", arrays)
            .with("config", config);
        let start = Instant::now();
        for node in 0..calls {
            let msg = Message::new(content.clone(), node, "train");
            let mut ctx = Context {
                node_id: node,
                ..Context::default()
            };
            let reply = app.handle(&msg, &mut ctx).expect("train succeeds");
            std::hint::black_box(reply);
        }
        let elapsed = start.elapsed();
        let rate = (calls as f64 * params as f64) / elapsed.as_secs_f64();
        println!("| {name} | {calls} | {params} | {elapsed:.2?} | {rate:.3e} |");
    }
}
