//! Large arrays over the wire: chunked both ways, hashed and stored once per broadcast,
//! checked against their ids, resumed after a dropped connection, freed when delivered.

use super::proxy::CutProxy;
use super::*;
use crate::proto::v1;
use floret_core::{Fleet, FleetError, Payload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_array_round_trips_both_ways_in_chunks() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());
    let node = register(&client).await;
    let model = model(TWENTY_MB);

    // SuperLink -> SuperNode.
    let instruction = model_message(node, &model);
    fleet.queue(node, instruction.clone());
    let received = client.pull_messages(node).await.unwrap();
    assert_eq!(received, vec![instruction.clone()]);
    let stats = client.transfer_stats();
    assert_eq!(stats.chunks_received, TWENTY_MB_CHUNKS);
    assert_eq!(stats.bytes_received, TWENTY_MB as u64 * 4);
    assert_eq!(server.transfer_stats().chunks_sent, TWENTY_MB_CHUNKS);
    assert_eq!(
        stats.chunks_held, 0,
        "assembled chunks leave the client cache"
    );

    // SuperNode -> SuperLink: a reply with a different model of the same size.
    let mut trained = ArrayRecord::new();
    trained.insert("weights", big_array(TWENTY_MB, 2));
    let reply = instruction.reply(Payload::Content(RecordDict::new().with("model", trained)));
    client
        .push_messages(node, vec![reply.clone()])
        .await
        .unwrap();
    assert_eq!(fleet.wait_pushed(1).await, vec![(node, reply)]);
    assert_eq!(client.transfer_stats().chunks_sent, TWENTY_MB_CHUNKS);
    assert_eq!(server.transfer_stats().chunks_received, TWENTY_MB_CHUNKS);

    // The delivery is confirmed in the background; then the SuperLink holds nothing.
    eventually("the SuperLink to free every chunk", || {
        server.transfer_stats().chunks_held == 0
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_arrays_stay_inline() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());
    let node = register(&client).await;
    fleet.queue(node, model_message(node, &model(100_000)));
    client.pull_messages(node).await.unwrap();
    assert_eq!(client.transfer_stats().chunks_received, 0);
    assert_eq!(server.transfer_stats().chunks_hashed, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_is_hashed_and_stored_once() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());
    let nodes = [
        register(&client).await,
        register(&client).await,
        register(&client).await,
    ];
    let model = model(TWENTY_MB);
    for &n in &nodes {
        fleet.queue(n, model_message(n, &model));
    }
    // Pull the envelopes without fetching or confirming: all three deliveries are held.
    let channel = raw_channel(server.local_addr()).await;
    let mut raw = v1::fleet_client::FleetClient::new(channel);
    let mut chunk_lists = Vec::new();
    for &node_id in &nodes {
        let envelopes = raw
            .pull_messages(v1::PullMessagesRequest { node_id })
            .await
            .unwrap()
            .into_inner()
            .envelopes;
        assert_eq!(envelopes.len(), 1);
        chunk_lists.push(envelopes[0].chunked_arrays[0].chunk_ids.clone());
    }
    assert!(chunk_lists.iter().all(|ids| *ids == chunk_lists[0]));
    let stats = server.transfer_stats();
    assert_eq!(
        stats.chunks_hashed, TWENTY_MB_CHUNKS,
        "hashed once, not three times"
    );
    assert_eq!(stats.chunks_held, TWENTY_MB_CHUNKS, "stored once");
    assert_eq!(stats.bytes_held, TWENTY_MB as u64 * 4);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_subscribed_node_and_is_then_freed() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let clients: Vec<FleetClient> = (0..3)
        .map(|_| client(server.local_addr(), ClientOptions::default()))
        .collect();
    let mut subscriptions = Vec::new();
    for c in &clients {
        let node = register(c).await;
        subscriptions.push((node, c.subscribe(node).await.unwrap()));
    }
    let model = model(TWENTY_MB);
    for (node, _) in &subscriptions {
        fleet.queue(*node, model_message(*node, &model));
    }
    for (node, rx) in &mut subscriptions {
        let m = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m, model_message(*node, &model));
    }
    eventually("every delivery to be confirmed and freed", || {
        server.transfer_stats().chunks_held == 0
    })
    .await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_chunk_that_does_not_match_its_id_is_refused() {
    let (_fleet, server) = fleet_server(ServerOptions::default()).await;
    // A registered node: chunks for unknown ids are refused before they are checked.
    let node_id = register(&client(server.local_addr(), impatient())).await;
    let channel = raw_channel(server.local_addr()).await;
    let mut raw = v1::fleet_client::FleetClient::new(channel);
    let wrong = crate::objects::id::ObjectId::of(b"something else");
    let status = raw
        .push_object(v1::PushObjectRequest {
            node_id,
            object_id: wrong.to_hex(),
            content: bytes::Bytes::from_static(b"the real content"),
            run_id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("PushObjectRequest.content: its sha256 is")
    );
    assert!(status.message().contains("corrupt"), "{}", status.message());
    assert_eq!(server.transfer_stats().chunks_held, 0, "nothing was stored");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_chunk_that_does_not_match_its_id_is_refused() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), impatient());
    let node = register(&client).await;
    fleet.queue(node, model_message(node, &model(TWENTY_MB)));
    // Build the envelope (and so the stored chunks), then spoil one chunk in the store.
    let store = server.objects().unwrap().clone();
    store.on_next_fetch_corrupt();
    let err = client.pull_messages(node).await.unwrap_err();
    let FleetError::Invalid(text) = err else {
        panic!("expected Invalid, got {err:?}");
    };
    assert!(text.contains("is corrupt: its sha256 is"), "{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_cut_mid_way_resumes_fetching_only_missing_chunks() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    // Cut every connection once 10 MiB have gone to the client: two chunks have arrived,
    // the third is half way.
    let proxy = CutProxy::start(server.local_addr(), 10 * 1024 * 1024).await;
    let options = ClientOptions {
        transfer_concurrency: 1,
        ..impatient()
    };
    let client = client(proxy.addr(), options);
    let node = register(&client).await;
    let instruction = model_message(node, &model(TWENTY_MB));
    fleet.queue(node, instruction.clone());
    let received = client.pull_messages(node).await.unwrap();
    assert!(
        proxy.was_cut(),
        "the connection was dropped during the transfer"
    );
    assert_eq!(received, vec![instruction]);
    assert_eq!(
        client.transfer_stats().chunks_received,
        TWENTY_MB_CHUNKS,
        "each chunk arrived once"
    );
    // Two before the cut, the interrupted one, and the three after.
    assert_eq!(server.transfer_stats().chunks_sent, TWENTY_MB_CHUNKS + 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_of_a_node_that_never_confirms_are_freed_after_the_lease() {
    let options = ServerOptions {
        lease: Duration::from_millis(200),
        ..ServerOptions::default()
    };
    let (fleet, server) = fleet_server(options).await;
    let client = client(server.local_addr(), ClientOptions::default());
    let node = register(&client).await;
    fleet.queue(node, model_message(node, &model(TWENTY_MB)));
    let channel = raw_channel(server.local_addr()).await;
    let mut raw = v1::fleet_client::FleetClient::new(channel);
    raw.pull_messages(v1::PullMessagesRequest { node_id: node })
        .await
        .unwrap();
    assert_eq!(server.transfer_stats().chunks_held, TWENTY_MB_CHUNKS);
    eventually("the lease to run out", || {
        server.transfer_stats().chunks_held == 0
    })
    .await;
    server.shutdown().await;
}
