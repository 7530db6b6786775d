//! The AppIo link itself: large arrays both ways, waiting for a daemon that starts late,
//! shutdown during long polls, and bind errors.

use super::appio_double::{
    FakeClientAppIo, FakeServerAppIo, TOKEN, clientappio, echo, node_context, run_context,
    serverappio,
};
use super::*;
use crate::grpc::{
    bind_clientappio, bind_serverappio, clientappio_client_with, serverappio_client,
    serverappio_client_with,
};
use crate::{Api, TransportError};
use floret_core::{AppIoError, ClientAppIo, ClientTask, Message, Payload, ServerAppIo};

/// 40 MB of float32: ten chunks of at most 4 MiB.
const FORTY_MB: usize = 10_000_000;
const FORTY_MB_CHUNKS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_40_mb_model_goes_out_through_send_once_and_its_replies_come_back() {
    let (appio, server, client) =
        serverappio(FakeServerAppIo::new(run_context(), vec![1, 2, 3], echo)).await;
    let model = model(FORTY_MB);
    let messages: Vec<Message> = (1..=3).map(|node| model_message(node, &model)).collect();
    client.send(TOKEN, messages.clone()).await.unwrap();

    let sent = appio.sent();
    assert_eq!(sent.len(), 3);
    for (got, want) in sent.iter().zip(&messages) {
        assert_eq!(got.content(), want.content());
    }
    let weights = |m: &Message| {
        m.content()
            .unwrap()
            .array_record("model")
            .unwrap()
            .get("weights")
            .unwrap()
            .data
            .clone()
    };
    assert!(
        sent.windows(2)
            .all(|w| weights(&w[0]).as_ptr() == weights(&w[1]).as_ptr()),
        "the SuperLink gets one buffer for the model, not a copy per node"
    );
    let stats = client.transfer_stats();
    assert_eq!(
        stats.chunks_hashed, FORTY_MB_CHUNKS,
        "hashed once for 3 nodes"
    );
    assert_eq!(
        stats.chunks_sent, FORTY_MB_CHUNKS,
        "uploaded once for 3 nodes"
    );
    assert_eq!(stats.bytes_sent, FORTY_MB as u64 * 4);

    // Three 40 MB replies (the echoed model) in one Receive.
    let replies = client
        .receive(TOKEN, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(replies.len(), 3);
    for r in &replies {
        assert_eq!(weights(r), model_weights(&model));
    }
    eventually("the daemon to free every chunk", || {
        server.transfer_stats().chunks_held == 0
    })
    .await;
    server.shutdown().await;
}

fn model_weights(model: &RecordDict) -> bytes::Bytes {
    model
        .array_record("model")
        .unwrap()
        .get("weights")
        .unwrap()
        .data
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_40_mb_array_goes_through_next_task_and_complete_task() {
    let (appio, server, client) = clientappio().await;
    let model = model(FORTY_MB);
    let task = ClientTask {
        message: model_message(4, &model),
        context: node_context(4, 1_000_000),
    };
    appio.queue(task.clone());
    let got = client
        .next_task(TOKEN, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, task);

    let mut trained = ArrayRecord::new();
    trained.insert("weights", big_array(FORTY_MB, 9));
    let reply = Payload::Content(RecordDict::new().with("model", trained));
    let mut context = got.context;
    let mut arrays = ArrayRecord::new();
    arrays.insert("personal", big_array(FORTY_MB, 4));
    context.state = context.state.with("personal", arrays);
    client
        .complete_task(
            TOKEN,
            &got.message.metadata.message_id,
            reply.clone(),
            context.clone(),
        )
        .await
        .unwrap();
    assert_eq!(
        appio.completed(),
        vec![(got.message.metadata.message_id.clone(), reply, context)]
    );
    assert_eq!(client.transfer_stats().chunks_sent, 2 * FORTY_MB_CHUNKS);
    assert_eq!(server.transfer_stats().chunks_received, 2 * FORTY_MB_CHUNKS);
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_waits_for_a_daemon_that_starts_late() {
    let (reserved, addr) = refusing_port();
    let client = serverappio_client(&addr.to_string()).unwrap();
    let early = tokio::spawn(async move { client.context(TOKEN).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(reserved);
    let appio = Arc::new(FakeServerAppIo::new(run_context(), vec![], echo));
    let server = bind_serverappio(addr, appio).await.unwrap();
    let context = tokio::time::timeout(Duration::from_secs(10), early)
        .await
        .expect("the call goes through once the daemon listens")
        .unwrap();
    assert_eq!(context, Ok(run_context()));
    server.shutdown().await;
}

#[tokio::test]
async fn an_absent_daemon_is_unavailable_naming_the_api_and_address() {
    let (_reserved, addr) = refusing_port();
    let options = ClientOptions {
        connect_patience: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let client = serverappio_client_with(&addr.to_string(), options.clone()).unwrap();
    assert_eq!(
        client.node_ids(TOKEN).await,
        Err(AppIoError::Unavailable(format!(
            "cannot reach the SuperLink's ServerAppIo API at {addr}: connection refused"
        )))
    );
    let client = clientappio_client_with(&addr.to_string(), options).unwrap();
    assert_eq!(
        client.claim().await,
        Err(AppIoError::Unavailable(format!(
            "cannot reach the SuperNode's ClientAppIo API at {addr}: connection refused"
        )))
    );
    assert!(matches!(
        serverappio_client("localhost"),
        Err(TransportError::InvalidAddress { .. })
    ));
}

#[tokio::test]
async fn shutdown_ends_long_polls() {
    let (_appio, server, client) =
        serverappio(FakeServerAppIo::new(run_context(), vec![1], echo)).await;
    let polling = tokio::spawn({
        let client = client.clone();
        async move { client.receive(TOKEN, Duration::from_secs(600)).await }
    });
    let (_node, node_server, node_client) = clientappio().await;
    let node_polling =
        tokio::spawn(async move { node_client.next_task(TOKEN, Duration::from_secs(600)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let shutdown = async {
        server.shutdown().await;
        node_server.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(3), shutdown)
        .await
        .expect("shutdown does not wait for long polls");
    let ended = polling.await.unwrap().unwrap_err();
    assert!(matches!(ended, AppIoError::Unavailable(_)), "{ended:?}");
    let ended = node_polling.await.unwrap().unwrap_err();
    assert!(matches!(ended, AppIoError::Unavailable(_)), "{ended:?}");
}

#[tokio::test]
async fn a_port_in_use_names_the_appio_flag() {
    let taken = std::net::TcpListener::bind(localhost()).unwrap();
    let addr = taken.local_addr().unwrap();
    let appio = Arc::new(FakeServerAppIo::new(run_context(), vec![], echo));
    let err = bind_serverappio(addr, appio).await.map(|_| ()).unwrap_err();
    assert!(
        matches!(err, TransportError::Bind { api: Api::ServerAppIo, addr: a, .. } if a == addr),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "cannot listen on {addr}: address in use — stop the other process or pass --serverappio-api-address"
        )
    );
    let err = bind_clientappio(addr, Arc::new(FakeClientAppIo::default()))
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        err.to_string().ends_with("pass --clientappio-api-address"),
        "{err}"
    );
}
