//! Tests of the gRPC transport against in-memory `Fleet`, `Control` and AppIo doubles
//! served on 127.0.0.1 (never anything else).

mod appio;
mod appio_double;
mod appio_grid;
mod appio_link;
mod chunks;
mod control;
mod double;
mod errors;
mod fab;
mod fleet;
mod limits;
mod node_auth;
mod proxy;
mod transports;
mod user_auth;

use super::options::endpoint;
use super::{
    ClientOptions, FleetClient, Server, ServerOptions, bind_fleet_with, fleet_client_with,
};
use double::FakeFleet;
use floret_core::{
    Array, ArrayRecord, ConfigRecord, Fleet, Message, MetricRecord, RecordDict, RegisterNode,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) fn localhost() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A loopback port where connecting is refused for as long as the returned socket lives:
/// it is bound but never listens. Freeing a probe listener's port instead would let
/// another test's server, binding port 0 at the same moment, be handed it; then a
/// connection meant to be refused would reach that server.
pub(crate) fn refusing_port() -> (socket2::Socket, SocketAddr) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    socket
        .bind(&localhost().into())
        .expect("a free loopback port");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("a bound socket has an IPv4 address");
    (socket, addr)
}

/// A Fleet server over a fresh double.
pub(crate) async fn fleet_server(options: ServerOptions) -> (Arc<FakeFleet>, Server) {
    let fleet = Arc::new(FakeFleet::default());
    let server = bind_fleet_with(localhost(), fleet.clone(), options)
        .await
        .expect("bind on 127.0.0.1:0");
    (fleet, server)
}

pub(crate) fn client(addr: SocketAddr, options: ClientOptions) -> FleetClient {
    fleet_client_with(&addr.to_string(), options).expect("a valid address")
}

/// Registers a node with a 30 s heartbeat interval and returns its id.
pub(crate) async fn register(client: &FleetClient) -> u64 {
    client
        .register_node(RegisterNode {
            heartbeat_interval: 30.0,
            ..RegisterNode::default()
        })
        .await
        .unwrap()
        .node_id
}

/// A connected channel to `addr` with default options, for raw gRPC calls that the typed
/// clients never make.
pub(crate) async fn raw_channel(addr: SocketAddr) -> tonic::transport::Channel {
    endpoint(&addr.to_string(), &ClientOptions::default())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Options that give up quickly, so that failure tests do not wait a minute.
pub(crate) fn impatient() -> ClientOptions {
    ClientOptions {
        transfer_patience: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

/// A message with a small model, metrics and config: everything inline.
pub(crate) fn small_message(dst: u64, tag: i64) -> Message {
    let mut arrays = ArrayRecord::new();
    arrays.insert("w", Array::from_slice(&[1.0f32, 2.0, 3.0]));
    let mut metrics = MetricRecord::new();
    metrics.insert("tag", tag);
    let mut config = ConfigRecord::new();
    config.insert("lr", 0.01);
    let content = RecordDict::new()
        .with("arrays", arrays)
        .with("metrics", metrics)
        .with("config", config);
    let mut m = Message::new(content, dst, "train").with_group_id(tag.to_string());
    m.metadata.run_id = 7;
    m.metadata.message_id = format!("m{tag}");
    m.metadata.created_at = 1_700_000_000.0;
    m
}

/// `len` float32 values that differ from chunk to chunk, so chunks do not deduplicate.
pub(crate) fn big_array(len: usize, seed: u32) -> Array {
    let values: Vec<f32> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) as f32)
        .collect();
    Array::from_vec(vec![len as i32], values)
}

/// A message carrying `model` (plus a small bias array that stays inline).
pub(crate) fn model_message(dst: u64, model: &RecordDict) -> Message {
    let mut m = Message::new(model.clone(), dst, "train").with_group_id("1");
    m.metadata.run_id = 7;
    m.metadata.message_id = format!("to-{dst}");
    m
}

pub(crate) fn model(len: usize) -> RecordDict {
    let mut arrays = ArrayRecord::new();
    arrays.insert("weights", big_array(len, 1));
    arrays.insert("bias", Array::from_slice(&[0.5f32; 10]));
    RecordDict::new().with("model", arrays)
}

/// 20 MB of float32: five chunks of at most 4 MiB.
pub(crate) const TWENTY_MB: usize = 5_000_000;
pub(crate) const TWENTY_MB_CHUNKS: u64 = 5;

/// Polls `cond` for up to 5 s: for effects of background tasks (confirmations).
pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
