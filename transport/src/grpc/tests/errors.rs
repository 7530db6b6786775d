//! Errors across the wire: each keeps its meaning, transport failures name the address,
//! and no body a peer sends can crash a server.

use super::appio_double::{FakeClientAppIo, FakeServerAppIo, TOKEN};
use super::double::FakeControl;
use super::*;
use crate::grpc::{
    bind_clientappio, bind_control, bind_fleet, bind_serverappio, clientappio_client,
    control_client, serverappio_client,
};
use crate::proto::{self, v1};
use crate::{Api, TransportError};
use bytes::{Buf, BufMut, Bytes};
use floret_core::{
    ClientAppIo, Control, ControlError, Fleet, FleetError, RegisterNode, ServerAppIo,
};
use proptest::prelude::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};

#[tokio::test]
async fn unknown_node_and_unknown_run_keep_their_meaning() {
    let (_fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());
    assert_eq!(
        client.heartbeat(41, 30.0).await,
        Err(FleetError::UnknownNode(41))
    );
    assert_eq!(
        client.pull_messages(41).await,
        Err(FleetError::UnknownNode(41))
    );
    assert_eq!(
        client.subscribe(41).await.map(|_| ()),
        Err(FleetError::UnknownNode(41))
    );
    assert_eq!(
        client.push_messages(41, vec![small_message(0, 1)]).await,
        Err(FleetError::UnknownNode(41))
    );
    assert_eq!(client.get_run(42).await, Err(FleetError::UnknownRun(42)));
    let invalid = client
        .register_node(RegisterNode {
            heartbeat_interval: -1.0,
            ..RegisterNode::default()
        })
        .await;
    assert_eq!(
        invalid,
        Err(FleetError::Invalid(
            "heartbeat_interval must be positive".into()
        ))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_superlink_is_unavailable_with_its_address() {
    let (_reserved, addr) = refusing_port();
    let client = client(addr, ClientOptions::default());
    let err = client.heartbeat(1, 30.0).await.unwrap_err();
    assert_eq!(
        err,
        FleetError::Unavailable(format!(
            "cannot reach the SuperLink at {addr}: connection refused"
        ))
    );

    let err = control_client(&addr.to_string()).await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot reach the SuperLink at {addr}: connection refused")
    );
}

#[tokio::test]
async fn a_port_in_use_is_a_bind_error_naming_the_address_and_the_flag() {
    let taken = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = taken.local_addr().unwrap();
    let err = bind_fleet(addr, Arc::new(FakeFleet::default()))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Bind { api: Api::Fleet, addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cannot listen on {addr}: address in use — stop the other process or pass --fleet-api-address"
        )
    );
    let err = bind_control(addr, Arc::new(FakeControl::default()))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().ends_with("pass --control-api-address"),
        "{err}"
    );
}

#[tokio::test]
async fn a_malformed_address_is_refused_before_connecting() {
    let err = crate::grpc::fleet_client("localhost").unwrap_err();
    assert!(matches!(err, TransportError::InvalidAddress { .. }));
    assert_eq!(
        err.to_string(),
        "invalid address \"localhost\": no port; expected HOST:PORT, e.g. 127.0.0.1:9092"
    );
    assert!(matches!(
        control_client("http://127.0.0.1:9093").await,
        Err(TransportError::InvalidAddress { .. })
    ));
}

async fn raw_fleet(server: &Server) -> v1::fleet_client::FleetClient<tonic::transport::Channel> {
    let channel = raw_channel(server.local_addr()).await;
    v1::fleet_client::FleetClient::new(channel)
}

#[tokio::test]
async fn malformed_envelopes_are_invalid_arguments_naming_the_field() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());
    let node = register(&client).await;
    let mut raw = raw_fleet(&server).await;
    let good = crate::convert::message_to_proto(&small_message(0, 1));
    let cases: Vec<(v1::Envelope, &str)> = vec![
        (
            v1::Envelope::default(),
            "PushMessagesRequest.envelopes[0]: Envelope.message is missing",
        ),
        (
            v1::Envelope {
                message: Some(good.clone()),
                chunked_arrays: vec![v1::ChunkedArray {
                    record_index: 5,
                    ..Default::default()
                }],
                delivery_id: 0,
            },
            "PushMessagesRequest.envelopes[0]: Envelope.chunked_arrays[0].record_index: is 5, \
             but the message has 3 records",
        ),
        (
            v1::Envelope {
                message: Some(good.clone()),
                chunked_arrays: vec![v1::ChunkedArray {
                    record_index: 0,
                    array_index: 0,
                    length: 0,
                    chunk_ids: vec![],
                }],
                delivery_id: 0,
            },
            "PushMessagesRequest.envelopes[0]: Envelope.chunked_arrays[0]: points at array \
             \"w\", which already has inline data",
        ),
        (
            v1::Envelope {
                message: Some(proto::Message {
                    content: None,
                    error: None,
                    ..good.clone()
                }),
                chunked_arrays: vec![],
                delivery_id: 0,
            },
            "PushMessagesRequest.envelopes[0]: Message: has neither content nor error",
        ),
    ];
    for (envelope, expected) in cases {
        let status = raw
            .push_messages(v1::PushMessagesRequest {
                node_id: node,
                envelopes: vec![envelope],
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with(expected),
            "{}",
            status.message()
        );
    }
    let status = raw
        .pull_object(v1::PullObjectRequest {
            node_id: node,
            object_id: "not-an-id".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("PullObjectRequest.object_id: \"not-an-id\" is not an object id")
    );
    assert!(fleet.wait_pushed(0).await.is_empty());
    server.shutdown().await;
}

/// Sends raw bytes as a request body.
#[derive(Default, Clone)]
struct RawCodec;
struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

async fn raw_call(channel: tonic::transport::Channel, path: &'static str, body: Vec<u8>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        panic!("server went away: {e}");
    }
    let result = grpc
        .unary(
            tonic::Request::new(Bytes::from(body)),
            PathAndQuery::from_static(path),
            RawCodec,
        )
        .await;
    match result {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

const UNARY_ROUTES: &[&str] = &[
    "/floret.v1.Fleet/RegisterNode",
    "/floret.v1.Fleet/DeactivateNode",
    "/floret.v1.Fleet/Heartbeat",
    "/floret.v1.Fleet/PullMessages",
    "/floret.v1.Fleet/PushMessages",
    "/floret.v1.Fleet/GetRun",
    "/floret.v1.Fleet/GetFab",
    "/floret.v1.Fleet/PushObject",
    "/floret.v1.Fleet/PullObject",
    "/floret.v1.Fleet/ConfirmDeliveries",
    "/floret.v1.Control/StartRun",
    "/floret.v1.Control/StopRun",
    "/floret.v1.Control/ListRuns",
    "/floret.v1.Control/GetRun",
    "/floret.v1.ServerAppIo/Context",
    "/floret.v1.ServerAppIo/NodeIds",
    "/floret.v1.ServerAppIo/Send",
    "/floret.v1.ServerAppIo/Pull",
    "/floret.v1.ServerAppIo/Receive",
    "/floret.v1.ServerAppIo/Emit",
    "/floret.v1.ServerAppIo/Finish",
    "/floret.v1.ServerAppIo/Claim",
    "/floret.v1.ClientAppIo/NextTask",
    "/floret.v1.ClientAppIo/CompleteTask",
    "/floret.v1.ClientAppIo/Claim",
    "/floret.v1.AppIoObjects/PushObject",
    "/floret.v1.AppIoObjects/PullObject",
    "/floret.v1.AppIoObjects/ConfirmDeliveries",
];

#[test]
fn no_request_body_crashes_a_server() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (channels, servers) = rt.block_on(async {
        let (_fleet, fleet_server) = fleet_server(ServerOptions::default()).await;
        let control_server = bind_control(localhost(), Arc::new(FakeControl::default()))
            .await
            .unwrap();
        let serverappio = Arc::new(FakeServerAppIo::new(
            floret_core::Context::default(),
            vec![1],
            |_| floret_core::Payload::Content(RecordDict::new()),
        ));
        let serverappio_server = bind_serverappio(localhost(), serverappio).await.unwrap();
        let clientappio_server =
            bind_clientappio(localhost(), Arc::new(FakeClientAppIo::default()))
                .await
                .unwrap();
        (
            [
                (
                    "/floret.v1.Fleet/",
                    raw_channel(fleet_server.local_addr()).await,
                ),
                (
                    "/floret.v1.Control/",
                    raw_channel(control_server.local_addr()).await,
                ),
                (
                    "/floret.v1.ServerAppIo/",
                    raw_channel(serverappio_server.local_addr()).await,
                ),
                (
                    "/floret.v1.ClientAppIo/",
                    raw_channel(clientappio_server.local_addr()).await,
                ),
                // Served next to ServerAppIo (and ClientAppIo).
                (
                    "/floret.v1.AppIoObjects/",
                    raw_channel(serverappio_server.local_addr()).await,
                ),
            ],
            (
                fleet_server,
                control_server,
                serverappio_server,
                clientappio_server,
            ),
        )
    });
    let bodies = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        // Valid-looking prefixes: a field tag followed by garbage.
        (0u8..64, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(tag, mut rest)| {
            rest.insert(0, tag << 3 | 2);
            rest
        }),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(600));
    runner
        .run(&(0..UNARY_ROUTES.len(), bodies), |(route, body)| {
            let path = UNARY_ROUTES[route];
            let channel = channels
                .iter()
                .find(|(prefix, _)| path.starts_with(prefix))
                .map(|(_, channel)| channel.clone())
                .expect("every route has a server");
            let code = rt.block_on(raw_call(channel, path, body));
            prop_assert!(
                matches!(
                    code,
                    Code::Ok
                        | Code::InvalidArgument
                        | Code::NotFound
                        | Code::FailedPrecondition
                        | Code::Unauthenticated
                ),
                "{path} answered {code:?}"
            );
            Ok(())
        })
        .unwrap();
    // Every server still serves.
    rt.block_on(async {
        let client = client(servers.0.local_addr(), ClientOptions::default());
        assert_eq!(
            client.heartbeat(999_999, 1.0).await,
            Err(FleetError::UnknownNode(999_999))
        );
        let control = control_client(&servers.1.local_addr().to_string())
            .await
            .unwrap();
        assert_eq!(
            control.get_run(999_999).await,
            Err(ControlError::UnknownRun(999_999))
        );
        let serverappio = serverappio_client(&servers.2.local_addr().to_string()).unwrap();
        assert_eq!(serverappio.node_ids(TOKEN).await.unwrap().len(), 1);
        let clientappio = clientappio_client(&servers.3.local_addr().to_string()).unwrap();
        assert_eq!(clientappio.claim().await, Ok(None));
        servers.0.shutdown().await;
        servers.1.shutdown().await;
        servers.2.shutdown().await;
        servers.3.shutdown().await;
    });
}

#[tokio::test]
async fn invalid_protobuf_is_an_invalid_argument_naming_the_request() {
    let (_fleet, server) = fleet_server(ServerOptions::default()).await;
    let channel = raw_channel(server.local_addr()).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            tonic::Request::new(Bytes::from_static(&[0x0a, 0xff, 0xff])),
            PathAndQuery::from_static("/floret.v1.Fleet/PushObject"),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("PushObjectRequest is not valid protobuf"),
        "{}",
        status.message()
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_connection_closes_it_and_harms_no_other_session() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());
    let node = register(&client).await;
    let mut rx = client.subscribe(node).await.unwrap();

    for garbage in [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        // The HTTP/2 preface, then a frame that may not come first.
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x08\x00\x00\x00\x00\x00\x7f\xff\xff\xff"
            .to_vec(),
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect(),
    ] {
        let mut socket = tokio::net::TcpStream::connect(server.local_addr())
            .await
            .unwrap();
        let _ = socket.write_all(&garbage).await;
        let mut sink = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut sink)).await;
        assert!(
            closed.is_ok(),
            "the server closes a connection that sends {garbage:?}"
        );
    }

    fleet.queue(node, small_message(node, 5));
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(
        m,
        Some(small_message(node, 5)),
        "the open subscription still works"
    );
    client.heartbeat(node, 30.0).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn malformed_appio_requests_are_invalid_arguments_naming_the_field() {
    // A payload as the AppIo services carry it: the content or error of a message whose
    // metadata means nothing.
    let carrier_envelope = |payload| v1::Envelope {
        message: Some(crate::convert::message_to_proto(&floret_core::Message {
            metadata: floret_core::Metadata::default(),
            payload,
        })),
        chunked_arrays: vec![],
        delivery_id: 0,
    };
    let head = || proto::Context {
        state: None,
        ..crate::convert::context_to_proto(&floret_core::Context::default())
    };
    let serverappio = Arc::new(FakeServerAppIo::new(
        floret_core::Context::default(),
        vec![1],
        |_| floret_core::Payload::Content(RecordDict::new()),
    ));
    let link = bind_serverappio(localhost(), serverappio.clone())
        .await
        .unwrap();
    let clientappio = Arc::new(FakeClientAppIo::default());
    let node = bind_clientappio(localhost(), clientappio.clone())
        .await
        .unwrap();
    let mut server_rpc =
        v1::server_app_io_client::ServerAppIoClient::new(raw_channel(link.local_addr()).await);
    let mut client_rpc =
        v1::client_app_io_client::ClientAppIoClient::new(raw_channel(node.local_addr()).await);
    let mut objects_rpc =
        v1::app_io_objects_client::AppIoObjectsClient::new(raw_channel(node.local_addr()).await);

    let expect = |status: Status, expected: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
        assert!(
            status.message().starts_with(expected),
            "{:?} does not start with {expected:?}",
            status.message()
        );
    };
    let status = server_rpc
        .send(v1::SendRequest {
            token: TOKEN.into(),
            envelopes: vec![v1::Envelope::default()],
        })
        .await
        .unwrap_err();
    expect(
        status,
        "SendRequest.envelopes[0]: Envelope.message is missing",
    );
    let status = server_rpc
        .emit(v1::EmitRequest {
            token: TOKEN.into(),
            event: None,
        })
        .await
        .unwrap_err();
    expect(status, "EmitRequest.event is missing");
    let status = server_rpc
        .emit(v1::EmitRequest {
            token: TOKEN.into(),
            event: Some(v1::RunEvent { event: None }),
        })
        .await
        .unwrap_err();
    expect(status, "EmitRequest.event: RunEvent has no value");
    assert!(serverappio.sent().is_empty() && serverappio.events().is_empty());

    let good_reply = carrier_envelope(floret_core::Payload::Content(RecordDict::new()));
    let good_context = v1::AppContext {
        context: Some(head()),
        state: Some(carrier_envelope(floret_core::Payload::Content(
            RecordDict::new(),
        ))),
    };
    let complete =
        |reply: Option<v1::Envelope>, context: Option<v1::AppContext>| v1::CompleteTaskRequest {
            token: TOKEN.into(),
            message_id: "m1".into(),
            reply,
            context,
        };
    let cases = [
        (
            complete(None, Some(good_context.clone())),
            "CompleteTaskRequest.reply is missing",
        ),
        (
            complete(Some(good_reply.clone()), None),
            "CompleteTaskRequest.context is missing",
        ),
        (
            complete(
                Some(good_reply.clone()),
                Some(v1::AppContext {
                    state: None,
                    ..good_context.clone()
                }),
            ),
            "CompleteTaskRequest.context.state is missing",
        ),
        (
            complete(
                Some(good_reply.clone()),
                Some(v1::AppContext {
                    context: None,
                    ..good_context.clone()
                }),
            ),
            "CompleteTaskRequest.context: AppContext.context is missing",
        ),
        (
            complete(
                Some(good_reply.clone()),
                Some(v1::AppContext {
                    state: Some(carrier_envelope(floret_core::Payload::Error(
                        floret_core::MessageError::new(1, "x"),
                    ))),
                    ..good_context.clone()
                }),
            ),
            "CompleteTaskRequest.context: AppContext.state: carries an error",
        ),
        (
            complete(
                Some(v1::Envelope {
                    chunked_arrays: vec![v1::ChunkedArray::default()],
                    ..good_reply.clone()
                }),
                Some(good_context.clone()),
            ),
            "CompleteTaskRequest.reply: Envelope.chunked_arrays[0].record_index: is 0, but the \
             message has 0 records",
        ),
    ];
    for (request, expected) in cases {
        let status = client_rpc.complete_task(request).await.unwrap_err();
        expect(status, expected);
    }
    assert!(clientappio.completed().is_empty());
    client_rpc
        .complete_task(complete(Some(good_reply), Some(good_context)))
        .await
        .expect("the well-formed request is accepted");
    assert_eq!(clientappio.completed().len(), 1);

    let status = objects_rpc
        .push_object(v1::AppPushObjectRequest {
            token: TOKEN.into(),
            object_id: "nope".into(),
            content: Bytes::from_static(b"x"),
        })
        .await
        .unwrap_err();
    expect(
        status,
        "AppPushObjectRequest.object_id: \"nope\" is not an object id",
    );
    let status = objects_rpc
        .push_object(v1::AppPushObjectRequest {
            token: TOKEN.into(),
            object_id: "00".repeat(32),
            content: Bytes::from_static(b"x"),
        })
        .await
        .unwrap_err();
    expect(status, "AppPushObjectRequest.content: its sha256 is");
    link.shutdown().await;
    node.shutdown().await;
}
