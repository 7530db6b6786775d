//! D4 (docs/TARGETS.md): a 1 GiB model from a SuperLink to a SuperNode on loopback, over
//! gRPC (plaintext and TLS) and QUIC (always TLS 1.3). Target: >= 1 GB/s.
//!
//! Times one instruction from the moment the SuperLink side queues it until the SuperNode
//! side holds the assembled message: chunking and hashing on the SuperLink, four chunk
//! fetches in flight, each chunk checked by sha256 and copied into its array on the
//! SuperNode as it arrives. Also prints the CPU time each transfer took (both sides, all
//! threads), which unlike wall time does not depend on what else the machine runs.
//! The message travels by `Subscribe` (push), as in a deployment. Also measures sha256 on
//! one core, the cost every byte pays twice.
//!
//! Run: `cargo bench -p floret-transport --bench d4` (optionally `-- <iterations>`, and
//! words that pick transports: `-- 3 quic`). The
//! TLS certificates are generated at start into a temporary directory.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{
    Array, ArrayRecord, Fleet, FleetError, Message, RecordDict, RegisterNode, Registration, RunInfo,
};
use floret_transport::grpc::{ClientOptions, ServerOptions, bind_fleet_with, fleet_client_with};
use floret_transport::tls::{ClientTls, ServerTls};
use floret_transport::{ClientSecurity, ServerSecurity, TransportKind};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

// The system allocator, as `flower-superlink` and `flower-supernode` have it (they dropped
// mimalloc for idle memory, see docs/BENCHMARKS.md D2); with mimalloc here the bench
// measured an allocator the daemons do not use.

const GIB: usize = 1 << 30;

/// One node, whose subscription receives whatever is queued.
#[derive(Default)]
struct BenchFleet {
    subscriber: Mutex<Option<mpsc::Sender<Message>>>,
}

impl BenchFleet {
    async fn queue(&self, m: Message) {
        let tx = self.subscriber.lock().unwrap().clone().expect("subscribed");
        tx.send(m).await.expect("stream open");
    }
}

#[async_trait]
impl Fleet for BenchFleet {
    async fn register_node(&self, _: RegisterNode) -> Result<Registration, FleetError> {
        Ok(Registration {
            node_id: 1,
            incarnation: 1,
        })
    }
    async fn deactivate_node(&self, _: u64) -> Result<(), FleetError> {
        Ok(())
    }
    async fn heartbeat(&self, _: u64, _: f64) -> Result<(), FleetError> {
        Ok(())
    }
    async fn pull_messages(&self, _: u64) -> Result<Vec<Message>, FleetError> {
        Ok(Vec::new())
    }
    async fn push_messages(&self, _: u64, _: Vec<Message>) -> Result<(), FleetError> {
        Ok(())
    }
    async fn get_run(&self, run_id: u64) -> Result<RunInfo, FleetError> {
        Err(FleetError::UnknownRun(run_id))
    }
    async fn subscribe(&self, _: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        let (tx, rx) = mpsc::channel(4);
        *self.subscriber.lock().unwrap() = Some(tx);
        Ok(rx)
    }
}

/// `arrays` float32 arrays adding up to 1 GiB, filled so that no two chunks are equal.
fn model(arrays: usize, seed: u32) -> RecordDict {
    let per_array = GIB / 4 / arrays;
    let mut record = ArrayRecord::new();
    for a in 0..arrays {
        let base = (a * per_array) as u32;
        let values: Vec<f32> = (0..per_array as u32)
            .map(|i| (base.wrapping_add(i).wrapping_mul(2_654_435_761) ^ seed) as f32)
            .collect();
        record.insert(
            format!("layer{a}"),
            Array::from_vec(vec![per_array as i32], values),
        );
    }
    RecordDict::new().with("model", record)
}

/// CPU time this process has used so far, all threads (user + system, from
/// `/proc/self/stat`, in clock ticks of 10 ms): what a transfer costs whatever else the
/// shared machine runs, unlike its wall time. Zero where there is no procfs.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn gbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e9
}

fn sha256_gbps() -> f64 {
    let data = vec![7u8; 256 << 20];
    let started = Instant::now();
    let digest = Sha256::digest(&data);
    std::hint::black_box(digest);
    gbps(data.len(), started.elapsed())
}

/// A CA and a certificate for 127.0.0.1 signed by it.
fn certificates(dir: &std::path::Path) -> (ServerTls, ClientTls) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("certificate");
    let path = |name: &str| dir.join(name);
    std::fs::write(path("ca.crt"), ca_cert.pem()).expect("write");
    std::fs::write(path("server.pem"), cert.pem()).expect("write");
    std::fs::write(path("server.key"), key.serialize_pem()).expect("write");
    (
        ServerTls::from_files(
            &path("server.pem"),
            &path("server.key"),
            Some(&path("ca.crt")),
        )
        .expect("server TLS"),
        ClientTls::from_root_certificates(&path("ca.crt")).expect("client TLS"),
    )
}

/// How the bytes travel.
#[derive(Clone)]
struct Wire {
    label: &'static str,
    transport: TransportKind,
    server: ServerSecurity,
    client: ClientSecurity,
}

/// Wall and CPU time of each transfer.
async fn transfer(arrays: usize, iterations: usize, wire: &Wire) -> Vec<(Duration, Duration)> {
    let fleet = Arc::new(BenchFleet::default());
    let server = bind_fleet_with(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        fleet.clone(),
        ServerOptions {
            security: wire.server.clone(),
            quic: true,
            ..ServerOptions::default()
        },
    )
    .await
    .expect("bind 127.0.0.1:0");
    let client = fleet_client_with(
        &server.local_addr().to_string(),
        ClientOptions {
            transport: wire.transport,
            security: wire.client.clone(),
            ..ClientOptions::default()
        },
    )
    .expect("address");
    let node = client
        .register_node(RegisterNode {
            public_key: Bytes::new(),
            heartbeat_interval: 30.0,
        })
        .await
        .expect("register")
        .node_id;
    let mut rx = client.subscribe(node).await.expect("subscribe");
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        // A new model each round, as in training: nothing is cached from the last one.
        let model = model(arrays, i as u32);
        let message = Message::new(model, node, "train");
        let started = Instant::now();
        let cpu = cpu_time();
        fleet.queue(message).await;
        let received = rx.recv().await.expect("delivered");
        let elapsed = started.elapsed();
        let cpu = cpu_time().saturating_sub(cpu);
        let bytes = received
            .content()
            .map(|c| c.array_record("model").map_or(0, ArrayRecord::num_bytes))
            .unwrap_or(0);
        assert_eq!(bytes, GIB, "the whole model arrived");
        drop(received);
        times.push((elapsed, cpu));
    }
    server.shutdown().await;
    times
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let iterations = args.iter().find_map(|a| a.parse().ok()).unwrap_or(3usize);
    // Other words pick transports: `quic`, `grpc`, `tls`, `plaintext` (default all).
    let filters: Vec<String> = args
        .iter()
        .filter(|a| a.parse::<usize>().is_err() && !a.starts_with('-'))
        .map(|a| a.to_lowercase())
        .collect();
    floret_transport::tls::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("temporary directory");
    let (server_tls, client_tls) = certificates(dir.path());
    let wires = [
        Wire {
            label: "gRPC, plaintext",
            transport: TransportKind::Grpc,
            server: ServerSecurity::Insecure,
            client: ClientSecurity::Insecure,
        },
        Wire {
            label: "gRPC, TLS",
            transport: TransportKind::Grpc,
            server: ServerSecurity::Tls(server_tls.clone()),
            client: ClientSecurity::Tls(client_tls.clone()),
        },
        Wire {
            label: "QUIC (TLS 1.3)",
            transport: TransportKind::Quic,
            server: ServerSecurity::Tls(server_tls),
            client: ClientSecurity::Tls(client_tls),
        },
    ];
    println!("sha256 on one core: {:.2} GB/s", sha256_gbps());
    println!();
    println!(
        "| id | workload | transport | runs | best | median | throughput (best / median) | CPU per run (median) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (arrays, label) in [(256, "256 arrays of 4 MiB"), (1, "one 1 GiB array")] {
        for wire in wires.iter().filter(|w| {
            filters.is_empty()
                || filters
                    .iter()
                    .any(|f| w.label.to_lowercase().contains(f.as_str()))
        }) {
            let runs = runtime.block_on(transfer(arrays, iterations, wire));
            let mut times: Vec<Duration> = runs.iter().map(|r| r.0).collect();
            let mut cpus: Vec<Duration> = runs.iter().map(|r| r.1).collect();
            times.sort();
            cpus.sort();
            let best = times[0];
            let median = times[times.len() / 2];
            println!(
                "| D4 | 1 GiB model ({label}) SuperLink -> SuperNode on loopback | {} | {} | {:.2} s | {:.2} s | {:.2} / {:.2} GB/s | {:.2} s |",
                wire.label,
                times.len(),
                best.as_secs_f64(),
                median.as_secs_f64(),
                gbps(GIB, best),
                gbps(GIB, median),
                cpus[cpus.len() / 2].as_secs_f64(),
            );
        }
    }
}
