//! Node authentication over the wire: signed Fleet calls from keyed clients, refusals of
//! unknown keys, unsigned calls, calls for another node's id, and replayed requests.

use super::super::node_auth::{path, sign};
use super::super::{NodeAuth, ServerOptions, bind_fleet_with};
use super::double::FakeFleet;
use super::{client, impatient, localhost};
use crate::auth::NodeKeyPair;
use crate::grpc::ClientOptions;
use crate::proto::v1;
use bytes::Bytes;
use floret_core::{Fleet, FleetError, NodeAuthority, RegisterNode};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tonic::Code;

/// An allow-list; a node owns the id under which the fleet registered its key.
struct Authority {
    allowed: Mutex<HashSet<Bytes>>,
    fleet: Arc<FakeFleet>,
}

impl NodeAuthority for Authority {
    fn admits(&self, public_key: &[u8]) -> bool {
        self.allowed.lock().unwrap().contains(public_key)
    }
    fn owns(&self, node_id: u64, public_key: &[u8]) -> bool {
        self.admits(public_key)
            && self
                .fleet
                .registration(node_id)
                .is_some_and(|(r, _)| r.public_key == public_key)
    }
}

struct Setup {
    fleet: Arc<FakeFleet>,
    authority: Arc<Authority>,
    server: crate::grpc::Server,
}

async fn setup() -> Setup {
    let fleet = Arc::new(FakeFleet::default());
    let authority = Arc::new(Authority {
        allowed: Mutex::default(),
        fleet: fleet.clone(),
    });
    let options = ServerOptions {
        node_auth: Some(NodeAuth::new(authority.clone())),
        ..ServerOptions::default()
    };
    let server = bind_fleet_with(localhost(), fleet.clone(), options)
        .await
        .expect("bind on 127.0.0.1:0");
    Setup {
        fleet,
        authority,
        server,
    }
}

impl Setup {
    fn allowed_key(&self) -> NodeKeyPair {
        let key = NodeKeyPair::generate().unwrap();
        self.authority
            .allowed
            .lock()
            .unwrap()
            .insert(key.public_key().spki_der().clone());
        key
    }

    fn client(&self, key: Option<NodeKeyPair>) -> crate::grpc::FleetClient {
        client(
            self.server.local_addr(),
            ClientOptions {
                node_key: key,
                ..impatient()
            },
        )
    }
}

fn register() -> RegisterNode {
    RegisterNode {
        heartbeat_interval: 30.0,
        ..RegisterNode::default()
    }
}

#[tokio::test]
async fn an_allowed_key_registers_and_its_key_is_passed_on() {
    let s = setup().await;
    let key = s.allowed_key();
    let c = s.client(Some(key.clone()));
    let id = c.register_node(register()).await.unwrap().node_id;
    let (registration, _) = s.fleet.registration(id).unwrap();
    assert_eq!(&registration.public_key, key.public_key().spki_der());
    c.heartbeat(id, 30.0).await.unwrap();
    assert!(c.pull_messages(id).await.unwrap().is_empty());
    c.deactivate_node(id).await.unwrap();
}

#[tokio::test]
async fn an_unknown_node_key_is_rejected() {
    let s = setup().await;
    let stranger = s.client(Some(NodeKeyPair::generate().unwrap()));
    let e = stranger.register_node(register()).await.unwrap_err();
    assert!(
        matches!(&e, FleetError::Unauthenticated(m) if m.contains("not on the SuperLink's allow-list")),
        "{e}"
    );
    let unsigned = s.client(None);
    let e = unsigned.register_node(register()).await.unwrap_err();
    assert!(
        matches!(&e, FleetError::Unauthenticated(m) if m.contains("missing header floret-node-key")),
        "{e}"
    );
}

#[tokio::test]
async fn a_key_cannot_act_for_another_node() {
    let s = setup().await;
    let a = s.client(Some(s.allowed_key()));
    let b = s.client(Some(s.allowed_key()));
    let a_id = a.register_node(register()).await.unwrap().node_id;
    b.register_node(register()).await.unwrap();
    let e = b.heartbeat(a_id, 30.0).await.unwrap_err();
    assert!(
        matches!(&e, FleetError::Unauthenticated(m) if m.contains(&format!("does not belong to node {a_id}"))),
        "{e}"
    );
    // Taken off the allow-list: the next call fails.
    s.authority.allowed.lock().unwrap().clear();
    let e = a.heartbeat(a_id, 30.0).await.unwrap_err();
    assert!(matches!(e, FleetError::Unauthenticated(_)), "{e}");
}

/// A signed request captured on the wire and sent again is refused.
#[tokio::test]
async fn a_replayed_signed_request_is_rejected() {
    let s = setup().await;
    let key = s.allowed_key();
    let id = s
        .client(Some(key.clone()))
        .register_node(register())
        .await
        .unwrap()
        .node_id;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", s.server.local_addr()))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut rpc = v1::fleet_client::FleetClient::new(channel);
    let body = v1::HeartbeatRequest {
        node_id: id,
        heartbeat_interval: 30.0,
    };
    let original = sign(Some(&key), path::HEARTBEAT, body);
    let captured = original.metadata().clone();
    rpc.heartbeat(original).await.unwrap();

    let mut replay = tonic::Request::new(body);
    *replay.metadata_mut() = captured.clone();
    let status = rpc.heartbeat(replay).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("replayed"),
        "{}",
        status.message()
    );

    // Nor does it work for another call.
    let mut elsewhere = tonic::Request::new(v1::PullMessagesRequest { node_id: id });
    *elsewhere.metadata_mut() = captured;
    let status = rpc.pull_messages(elsewhere).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("bad signature"),
        "{}",
        status.message()
    );
}

/// A request whose body was changed after it was signed (another heartbeat interval, or
/// another node's id) is refused, though its headers are intact.
#[tokio::test]
async fn a_request_whose_body_changed_after_signing_is_rejected() {
    let s = setup().await;
    let key = s.allowed_key();
    let id = s
        .client(Some(key.clone()))
        .register_node(register())
        .await
        .unwrap()
        .node_id;
    let mut rpc =
        v1::fleet_client::FleetClient::new(super::raw_channel(s.server.local_addr()).await);
    let body = v1::HeartbeatRequest {
        node_id: id,
        heartbeat_interval: 30.0,
    };
    let mut tampered = sign(Some(&key), path::HEARTBEAT, body);
    tampered.get_mut().heartbeat_interval = 3600.0;
    let status = rpc.heartbeat(tampered).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("altered"), "{}", status.message());
    assert_eq!(
        s.fleet.registration(id).unwrap().1,
        None,
        "no heartbeat got through"
    );
    rpc.heartbeat(sign(Some(&key), path::HEARTBEAT, body))
        .await
        .unwrap();
}

/// The nonce cache lives in memory: a SuperLink that restarts forgets it. A request
/// captured before the restart and replayed after it (within the clock window) is refused
/// because it was signed before the new SuperLink started; what the node signs afterwards
/// gets in.
#[tokio::test]
async fn a_request_captured_before_a_superlink_restart_is_refused_after_it() {
    let s = setup().await;
    let key = s.allowed_key();
    let id = s
        .client(Some(key.clone()))
        .register_node(register())
        .await
        .unwrap()
        .node_id;
    let body = v1::HeartbeatRequest {
        node_id: id,
        heartbeat_interval: 30.0,
    };
    let original = sign(Some(&key), path::HEARTBEAT, body);
    let captured = original.metadata().clone();
    let mut rpc =
        v1::fleet_client::FleetClient::new(super::raw_channel(s.server.local_addr()).await);
    rpc.heartbeat(original).await.unwrap();

    // Restarted: a new process with a new verifier (and an empty nonce cache), a moment
    // later, serving the same nodes.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let options = ServerOptions {
        node_auth: Some(NodeAuth::new(s.authority.clone())),
        ..ServerOptions::default()
    };
    let restarted = bind_fleet_with(localhost(), s.fleet.clone(), options)
        .await
        .unwrap();
    let mut rpc =
        v1::fleet_client::FleetClient::new(super::raw_channel(restarted.local_addr()).await);
    let mut replay = tonic::Request::new(body);
    *replay.metadata_mut() = captured;
    let status = rpc.heartbeat(replay).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "retryable, for an honest node whose clock lags"
    );
    assert!(
        status.message().contains("before this SuperLink started"),
        "{}",
        status.message()
    );
    rpc.heartbeat(sign(Some(&key), path::HEARTBEAT, body))
        .await
        .unwrap();
}

/// The values that change with every request are sent "never indexed", so that HTTP/2
/// header compression keeps none of them in the connection's tables (memory per node on
/// the SuperLink); the key and the body digest, which repeat, stay indexable.
#[test]
fn single_use_signature_values_are_never_indexed() {
    use crate::auth::{
        HEADER_BODY_SHA256, HEADER_NODE_KEY, HEADER_NONCE, HEADER_SIGNATURE, HEADER_TIMESTAMP,
    };
    let key = NodeKeyPair::generate().unwrap();
    let body = v1::HeartbeatRequest {
        node_id: 7,
        heartbeat_interval: 30.0,
    };
    let request = sign(Some(&key), path::HEARTBEAT, body);
    let sensitive = |name: &str| request.metadata().get(name).unwrap().is_sensitive();
    for name in [HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE] {
        assert!(sensitive(name), "{name} must be sent never indexed");
    }
    for name in [HEADER_NODE_KEY, HEADER_BODY_SHA256] {
        assert!(!sensitive(name), "{name} repeats and should stay indexable");
    }
}
