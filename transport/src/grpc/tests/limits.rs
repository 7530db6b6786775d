//! The servers' limits seen from a peer: silent connections closed, connections over the
//! cap refused, oversized bodies refused before they are read whole, uploads for unknown
//! nodes and over the upload caps refused.

use super::double::FakeControl;
use super::*;
use crate::grpc::bind_control_with;
use crate::limits::ServerLimits;
use crate::objects::id::ObjectId;
use crate::proto::v1;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http_body::Frame;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::Code;
use tower::ServiceExt;

fn limited(limits: ServerLimits) -> ServerOptions {
    ServerOptions {
        limits,
        ..ServerOptions::default()
    }
}

/// Whether the server closes `stream` within `within` (a read sees EOF or a reset).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // The server's HTTP/2 settings, sent before it hears from us.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn connections_that_send_nothing_are_closed_after_the_handshake_timeout() {
    let (_fleet, server) = fleet_server(limited(ServerLimits {
        handshake_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    }))
    .await;
    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.local_addr()).await.unwrap());
    }
    for stream in &mut silent {
        assert!(closed_within(stream, Duration::from_secs(5)).await);
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The server itself goes on serving.
    let client = client(server.local_addr(), impatient());
    register(&client).await;
}

#[tokio::test]
async fn a_subscribed_connection_outlives_the_idle_timeout() {
    let (fleet, server) = fleet_server(limited(ServerLimits {
        idle_timeout: Duration::from_millis(500),
        ..ServerLimits::default()
    }))
    .await;
    let client = client(server.local_addr(), impatient());
    let node = register(&client).await;
    // A subscribed node keeps its connection (and stream) well past the idle timeout.
    let mut messages = client.subscribe(node).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    fleet.queue(node, small_message(node, 1));
    let got = tokio::time::timeout(Duration::from_secs(5), messages.recv())
        .await
        .unwrap();
    assert!(got.is_some(), "the subscription survived the idle timeout");
}

#[tokio::test]
async fn connections_beyond_the_per_address_cap_are_closed_at_once_and_others_still_served() {
    let (_fleet, server) = fleet_server(limited(ServerLimits {
        max_connections_per_ip: 3,
        ..ServerLimits::default()
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(server.local_addr()).await.unwrap());
    }
    let mut over = TcpStream::connect(server.local_addr()).await.unwrap();
    assert!(closed_within(&mut over, Duration::from_secs(2)).await);
    for stream in &mut held {
        assert!(!closed_within(stream, Duration::from_millis(100)).await);
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let client = client(server.local_addr(), impatient());
    register(&client).await;
}

/// Sends a request to `path` whose length prefix announces `announced` bytes, then 64 KiB
/// of them, then nothing more, never ending the body; returns the status the server
/// answers with while the body is still open.
pub(super) async fn answer_to_unfinished_body(
    addr: SocketAddr,
    path: &str,
    announced: u32,
    headers: &[(&'static str, &str)],
) -> tonic::Status {
    let mut first = vec![0u8];
    first.extend_from_slice(&announced.to_be_bytes());
    first.extend(std::iter::repeat_n(0u8, 64 * 1024));
    let frames =
        futures_util::stream::iter([Ok::<_, tonic::Status>(Frame::data(Bytes::from(first)))])
            .chain(futures_util::stream::pending());
    let body = tonic::body::Body::new(http_body_util::StreamBody::new(frames));
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(body).unwrap();
    let channel = raw_channel(addr).await;
    let response = tokio::time::timeout(Duration::from_secs(10), channel.oneshot(request))
        .await
        .expect("the server answered before the body was complete")
        .unwrap();
    tonic::Status::from_header_map(response.headers()).expect("a trailers-only gRPC status")
}

#[tokio::test]
async fn a_start_run_over_the_fab_limit_is_refused_from_its_length_prefix() {
    let server = bind_control_with(
        localhost(),
        Arc::new(FakeControl::default()),
        limited(ServerLimits {
            max_fab_bytes: 1 << 20,
            ..ServerLimits::default()
        }),
    )
    .await
    .unwrap();
    let status = answer_to_unfinished_body(
        server.local_addr(),
        "/floret.v1.Control/StartRun",
        500_000_000,
        &[],
    )
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("--max-fab-size"), "{status:?}");
    // Small calls are small whatever the FAB limit.
    let status = answer_to_unfinished_body(
        server.local_addr(),
        "/floret.v1.Control/ListRuns",
        5_000_000,
        &[],
    )
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

/// Admits no key.
struct Nobody;

impl floret_core::NodeAuthority for Nobody {
    fn admits(&self, _: &[u8]) -> bool {
        false
    }
    fn owns(&self, _: u64, _: &[u8]) -> bool {
        false
    }
}

#[tokio::test]
async fn an_unsigned_request_is_refused_before_its_body_under_node_authentication() {
    let options = ServerOptions {
        node_auth: Some(crate::grpc::NodeAuth::new(Arc::new(Nobody))),
        ..ServerOptions::default()
    };
    let (_fleet, server) = fleet_server(options).await;
    let status = answer_to_unfinished_body(
        server.local_addr(),
        "/floret.v1.Fleet/PushMessages",
        60_000_000,
        &[],
    )
    .await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
}

#[tokio::test]
async fn chunks_pushed_for_a_node_nobody_registered_are_refused_and_not_held() {
    let (_fleet, server) = fleet_server(ServerOptions::default()).await;
    let mut raw = v1::fleet_client::FleetClient::new(raw_channel(server.local_addr()).await);
    for i in 0..20u8 {
        let content = Bytes::from(vec![i; 1 << 20]);
        let object_id = ObjectId::of(&content).to_hex();
        let status = raw
            .push_object(v1::PushObjectRequest {
                node_id: 999_999,
                object_id,
                content,
                run_id: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    assert_eq!(server.transfer_stats().bytes_held, 0);
}

#[tokio::test]
async fn a_node_cannot_hold_more_uploads_than_its_cap() {
    let (_fleet, server) = fleet_server(limited(ServerLimits {
        max_upload_bytes_per_node: 3 << 20,
        ..ServerLimits::default()
    }))
    .await;
    let node = register(&client(server.local_addr(), impatient())).await;
    let mut raw = v1::fleet_client::FleetClient::new(raw_channel(server.local_addr()).await);
    let mut refused = None;
    for i in 0..5u8 {
        let content = Bytes::from(vec![i; 1 << 20]);
        let object_id = ObjectId::of(&content).to_hex();
        if let Err(status) = raw
            .push_object(v1::PushObjectRequest {
                node_id: node,
                object_id,
                content,
                run_id: 0,
            })
            .await
        {
            refused = Some(status);
            break;
        }
    }
    let status = refused.expect("the fourth MiB is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("--max-upload-bytes-per-node"),
        "{status:?}"
    );
    assert_eq!(server.transfer_stats().bytes_held, 3 << 20);
}

#[tokio::test]
async fn the_nodes_of_one_run_cannot_hold_more_uploads_than_its_cap_but_other_runs_can() {
    let (_fleet, server) = fleet_server(limited(ServerLimits {
        max_upload_bytes_per_run: 3 << 20,
        ..ServerLimits::default()
    }))
    .await;
    let a = register(&client(server.local_addr(), impatient())).await;
    let b = register(&client(server.local_addr(), impatient())).await;
    let mut raw = v1::fleet_client::FleetClient::new(raw_channel(server.local_addr()).await);
    let mut push = async |node_id, run_id, fill: u8| {
        let content = Bytes::from(vec![fill; 1 << 20]);
        let object_id = ObjectId::of(&content).to_hex();
        raw.push_object(v1::PushObjectRequest {
            node_id,
            object_id,
            content,
            run_id,
        })
        .await
    };
    push(a, 1, 1).await.unwrap();
    push(a, 1, 2).await.unwrap();
    push(b, 1, 3).await.unwrap();
    let status = push(b, 1, 4)
        .await
        .expect_err("run 1's fourth MiB is refused");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("run 1"), "{status:?}");
    assert!(
        status.message().contains("--max-upload-bytes-per-run"),
        "{status:?}"
    );
    push(b, 2, 5).await.expect("another run's upload is taken");
    assert_eq!(server.transfer_stats().bytes_held, 4 << 20);
}

/// The SuperNode's own client names each chunk's run: a reply too large for its run's
/// cap is refused, one of another run goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supernodes_reply_uploads_count_against_its_run() {
    use floret_core::{Fleet as _, Payload};
    let (_fleet, server) = fleet_server(limited(ServerLimits {
        max_upload_bytes_per_run: 8 << 20,
        ..ServerLimits::default()
    }))
    .await;
    let client = client(server.local_addr(), impatient());
    let node = register(&client).await;
    let reply = |run_id, len| {
        let mut m = model_message(node, &model(len)).reply(Payload::Content(model(len)));
        m.metadata.run_id = run_id;
        m
    };
    // 20 MB of run 7: its third 4 MiB chunk passes the run's 8 MiB.
    let e = client
        .push_messages(node, vec![reply(7, TWENTY_MB)])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("run 7") && e.contains("--max-upload-bytes-per-run"),
        "{e}"
    );
    // 6 MB of run 8 still fits.
    client
        .push_messages(node, vec![reply(8, 1_500_000)])
        .await
        .unwrap();
}

fn quic_client(addr: SocketAddr) -> FleetClient {
    client(
        addr,
        ClientOptions {
            transport: crate::grpc::TransportKind::Quic,
            connect_timeout: Duration::from_secs(2),
            transfer_patience: Duration::from_secs(1),
            ..impatient()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_connections_count_against_the_same_caps() {
    let (_fleet, server) = fleet_server(ServerOptions {
        quic: true,
        limits: ServerLimits {
            max_connections_per_ip: 1,
            ..ServerLimits::default()
        },
        ..ServerOptions::default()
    })
    .await;
    let first = quic_client(server.local_addr());
    register(&first).await;
    let second = quic_client(server.local_addr());
    let refused = second
        .register_node(floret_core::RegisterNode {
            heartbeat_interval: 30.0,
            ..floret_core::RegisterNode::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(refused, floret_core::FleetError::Unavailable(_)),
        "{refused:?}"
    );
    // Nor does a gRPC connection get past the count QUIC holds.
    let mut tcp = TcpStream::connect(server.local_addr()).await.unwrap();
    assert!(closed_within(&mut tcp, Duration::from_secs(2)).await);
    drop(first);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_quic_connection_is_closed_and_frees_its_slot() {
    let (_fleet, server) = fleet_server(ServerOptions {
        quic: true,
        limits: ServerLimits {
            max_connections_per_ip: 1,
            idle_timeout: Duration::from_millis(300),
            ..ServerLimits::default()
        },
        ..ServerOptions::default()
    })
    .await;
    let first = quic_client(server.local_addr());
    register(&first).await;
    // Idle past the timeout: the server closes it and frees its slot for another client.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let second = quic_client(server.local_addr());
    register(&second).await;
    server.shutdown().await;
}

#[tokio::test]
async fn an_idle_grpc_connection_is_closed_and_frees_its_slot_and_its_client_reconnects() {
    let (_fleet, server) = fleet_server(limited(ServerLimits {
        max_connections_per_ip: 1,
        idle_timeout: Duration::from_millis(300),
        ..ServerLimits::default()
    }))
    .await;
    let first = client(server.local_addr(), impatient());
    let node = register(&first).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The slot is free: a new connection is not closed at once.
    let mut other = TcpStream::connect(server.local_addr()).await.unwrap();
    assert!(!closed_within(&mut other, Duration::from_millis(200)).await);
    drop(other);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // And the idle client's next call opens a new connection.
    first.heartbeat(node, 30.0).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_wait_for_the_inflight_budget_and_small_ones_do_not() {
    let server = bind_control_with(
        localhost(),
        Arc::new(FakeControl::default()),
        limited(ServerLimits {
            max_fab_bytes: 4 << 20,
            max_inflight_request_bytes: 5 << 20,
            ..ServerLimits::default()
        }),
    )
    .await
    .unwrap();
    let addr = server.local_addr();
    // A StartRun whose FAB never finishes arriving holds 3 MiB of the 5 MiB budget.
    let stalled = tokio::spawn(async move {
        answer_to_unfinished_body(addr, "/floret.v1.Control/StartRun", 3 << 20, &[]).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut raw = v1::control_client::ControlClient::new(raw_channel(addr).await)
        .max_encoding_message_size(usize::MAX);
    let complete = v1::StartRunRequest {
        fab: Some(crate::proto::Fab {
            hash_str: "f".repeat(64),
            content: Bytes::from(vec![7u8; 3 << 20]),
            verifications: Default::default(),
        }),
        ..Default::default()
    };
    let waiting = tokio::spawn(async move { raw.start_run(complete).await });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!waiting.is_finished(), "a second 3 MiB StartRun waits");
    // Small calls pass by.
    let mut small = v1::control_client::ControlClient::new(raw_channel(addr).await);
    small
        .list_runs(v1::ListRunsRequest::default())
        .await
        .unwrap();
    // Once the first goes, the second is read and answered.
    stalled.abort();
    let answer = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered once the budget was free")
        .unwrap();
    if let Err(status) = answer {
        assert_ne!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
}
