//! Every Fleet call over the wire, Subscribe's push delivery, and shutdown.

use super::double::run_info;
use super::*;
use bytes::Bytes;
use floret_core::{Fleet, FleetError, RegisterNode, RunStatus};
use std::sync::atomic::Ordering;

#[tokio::test]
async fn every_fleet_call_round_trips() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());

    let key = Bytes::from_static(b"public key bytes");
    let registered = client
        .register_node(RegisterNode {
            public_key: key.clone(),
            heartbeat_interval: 30.0,
        })
        .await
        .unwrap();
    assert_eq!(
        registered.incarnation,
        super::double::INCARNATION,
        "the SuperLink's incarnation reaches the node"
    );
    let node = registered.node_id;
    client.heartbeat(node, 12.5).await.unwrap();
    let (registration, beat) = fleet.registration(node).unwrap();
    assert_eq!(registration.public_key, key);
    assert_eq!(registration.heartbeat_interval, 30.0);
    assert_eq!(beat, Some(12.5));

    let run = run_info(7, RunStatus::Running);
    fleet.add_run(run.clone());
    assert_eq!(client.get_run(7).await.unwrap(), run);

    let instructions = vec![small_message(node, 1), small_message(node, 2)];
    for m in &instructions {
        fleet.queue(node, m.clone());
    }
    assert_eq!(client.pull_messages(node).await.unwrap(), instructions);
    assert!(client.pull_messages(node).await.unwrap().is_empty());

    let reply = instructions[0].reply(floret_core::Payload::Content(RecordDict::new()));
    client
        .push_messages(node, vec![reply.clone()])
        .await
        .unwrap();
    assert_eq!(fleet.wait_pushed(1).await, vec![(node, reply)]);

    client.deactivate_node(node).await.unwrap();
    assert_eq!(fleet.deactivated(), vec![node]);
    assert_eq!(
        client.heartbeat(node, 30.0).await,
        Err(FleetError::UnknownNode(node))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn subscribe_delivers_queued_messages_in_order_without_polling() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());
    let node = register(&client).await;
    // One waiting before the subscription, the rest pushed while it is open.
    fleet.queue(node, small_message(node, 0));
    let mut rx = client.subscribe(node).await.unwrap();
    for tag in 1..20 {
        fleet.queue(node, small_message(node, tag));
    }
    for tag in 0..20 {
        let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("pushed promptly")
            .expect("stream open");
        assert_eq!(m, small_message(node, tag));
    }
    // A message queued later still arrives at once: the stream is a push, not a poll.
    let started = tokio::time::Instant::now();
    fleet.queue(node, small_message(node, 99));
    let late = rx.recv().await.unwrap();
    assert_eq!(late.metadata.message_id, "m99");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        fleet.pulls.load(Ordering::SeqCst),
        0,
        "no PullMessages was needed"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_subscriptions_and_returns_promptly() {
    let (_fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());
    let node = register(&client).await;
    let mut rx = client.subscribe(node).await.unwrap();
    let started = tokio::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(closed, Ok(None), "the subscription channel closes");
}

#[tokio::test]
async fn a_client_made_before_its_server_connects_once_it_is_up() {
    // The client is created while nothing listens at its address.
    let (reserved, addr) = refusing_port();
    let client = client(addr, ClientOptions::default());
    let register = RegisterNode {
        heartbeat_interval: 30.0,
        ..RegisterNode::default()
    };
    assert!(matches!(
        client.register_node(register.clone()).await,
        Err(FleetError::Unavailable(_))
    ));
    drop(reserved);
    let fleet = Arc::new(FakeFleet::default());
    let server = super::super::bind_fleet(addr, fleet).await.unwrap();
    assert_eq!(
        client.register_node(register).await.map(|r| r.node_id),
        Ok(1)
    );
    server.shutdown().await;
}
