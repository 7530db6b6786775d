//! Every AppIo call over the wire, tokens, and a stopped run.

use super::appio_double::{
    FakeServerAppIo, TOKEN, clientappio, echo, node_context, run_context, serverappio,
};
use super::*;
use crate::grpc::RemoteGrid;
use floret_core::{
    AppIoError, AppOutcome, ClientAppIo, ClientTask, Context, Grid, GridError, MessageError,
    Payload, RunEvent, ServerAppIo,
};

#[tokio::test]
async fn every_serverappio_call_round_trips() {
    let (appio, server, client) =
        serverappio(FakeServerAppIo::new(run_context(), vec![3, 5], echo)).await;
    assert_eq!(client.context(TOKEN).await.unwrap(), run_context());
    assert_eq!(&*client.node_ids(TOKEN).await.unwrap(), &[3, 5]);

    let ids = client
        .send(TOKEN, vec![small_message(3, 1), small_message(5, 2)])
        .await
        .unwrap();
    assert_eq!(ids, ["m1", "m2"]);
    let sent = appio.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].content(), small_message(3, 1).content());

    let pulled = client.pull(TOKEN, &ids[1..]).await.unwrap();
    assert_eq!(pulled.len(), 1);
    assert_eq!(pulled[0].metadata.reply_to_message_id, "m2");
    assert_eq!(pulled[0].payload, echo(&sent[1]));
    let received = client.receive(TOKEN, Duration::from_secs(5)).await.unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].metadata.reply_to_message_id, "m1");
    let nothing = client
        .receive(TOKEN, Duration::from_millis(50))
        .await
        .unwrap();
    assert!(nothing.is_empty(), "a receive that times out is empty");

    let events = [
        RunEvent::Log("hello".into()),
        RunEvent::RoundStarted {
            round: 1,
            num_rounds: 2,
        },
    ];
    for e in &events {
        client.emit(TOKEN, e.clone()).await.unwrap();
    }
    assert_eq!(appio.events(), events);

    assert_eq!(client.claim().await.unwrap(), None);
    appio.wait_for_claim("run-8-token");
    assert_eq!(
        client.claim().await.unwrap().as_deref(),
        Some("run-8-token")
    );

    client
        .finish(TOKEN, AppOutcome::Failed("diverged".into()))
        .await
        .unwrap();
    assert_eq!(appio.outcome(), Some(AppOutcome::Failed("diverged".into())));
    server.shutdown().await;
}

#[tokio::test]
async fn a_completed_outcome_round_trips() {
    let (appio, server, client) =
        serverappio(FakeServerAppIo::new(run_context(), vec![], echo)).await;
    client.finish(TOKEN, AppOutcome::Completed).await.unwrap();
    assert_eq!(appio.outcome(), Some(AppOutcome::Completed));
    assert_eq!(
        client.context(TOKEN).await,
        Err(AppIoError::BadToken),
        "a finished run's token is refused"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn every_clientappio_call_round_trips() {
    let (appio, server, client) = clientappio().await;
    let task = ClientTask {
        message: small_message(4, 1),
        context: node_context(4, 10),
    };
    appio.queue(task.clone());
    let got = client
        .next_task(TOKEN, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got, Some(task.clone()));

    let mut context = task.context.clone();
    let mut metrics = MetricRecord::new();
    metrics.insert("rounds-seen", 2i64);
    context.state = context.state.with("counters", metrics);
    let reply = echo(&task.message);
    client
        .complete_task(TOKEN, "m1", reply.clone(), context.clone())
        .await
        .unwrap();
    let error = Payload::Error(MessageError::new(2, "the handler panicked"));
    client
        .complete_task(TOKEN, "m2", error.clone(), context.clone())
        .await
        .unwrap();
    assert_eq!(
        appio.completed(),
        vec![
            ("m1".to_string(), reply, context.clone()),
            ("m2".to_string(), error, context),
        ]
    );
    assert_eq!(
        client
            .complete_task(TOKEN, "", echo(&task.message), Context::default())
            .await,
        Err(AppIoError::Invalid("no task has an empty id".into()))
    );

    let none = client
        .next_task(TOKEN, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(none, None, "no task within the timeout");
    appio.queue(task.clone());
    let forever = client.next_task(TOKEN, Duration::MAX).await;
    assert_eq!(
        forever,
        Ok(Some(task)),
        "an endless timeout is capped, not an overflow in the daemon"
    );

    assert_eq!(client.claim().await.unwrap(), None);
    appio.wait_for_claim("run-8-node-4");
    assert_eq!(
        client.claim().await.unwrap().as_deref(),
        Some("run-8-node-4")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn next_task_waits_for_a_task_to_arrive() {
    let (appio, server, client) = clientappio().await;
    let task = ClientTask {
        message: small_message(4, 1),
        context: node_context(4, 10),
    };
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.next_task(TOKEN, Duration::from_secs(30)).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    appio.queue(task.clone());
    let got = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the long poll answers as soon as a task arrives")
        .unwrap();
    assert_eq!(got, Ok(Some(task)));
    server.shutdown().await;
}

#[tokio::test]
async fn a_wrong_token_is_bad_token_at_the_client() {
    let (_appio, server, client) =
        serverappio(FakeServerAppIo::new(run_context(), vec![3], echo)).await;
    let bad = "not-the-token";
    assert_eq!(client.context(bad).await, Err(AppIoError::BadToken));
    assert_eq!(client.node_ids(bad).await, Err(AppIoError::BadToken));
    assert_eq!(
        client.send(bad, vec![small_message(3, 1)]).await,
        Err(AppIoError::BadToken)
    );
    assert_eq!(
        client.pull(bad, &["m1".into()]).await,
        Err(AppIoError::BadToken)
    );
    assert_eq!(
        client.receive(bad, Duration::from_secs(1)).await,
        Err(AppIoError::BadToken)
    );
    assert_eq!(
        client.emit(bad, RunEvent::Log("x".into())).await,
        Err(AppIoError::BadToken)
    );
    assert_eq!(
        client.finish(bad, AppOutcome::Completed).await,
        Err(AppIoError::BadToken)
    );
    let err = RemoteGrid::connect(Arc::new(client), bad)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err, AppIoError::BadToken);
    assert_eq!(
        err.to_string(),
        "the AppIo token is not valid (unknown, or its run has ended)"
    );
    server.shutdown().await;

    let (_appio, server, client) = clientappio().await;
    assert_eq!(
        client.next_task(bad, Duration::from_secs(1)).await,
        Err(AppIoError::BadToken)
    );
    assert_eq!(
        client
            .complete_task(bad, "m1", echo(&small_message(1, 1)), node_context(1, 10))
            .await,
        Err(AppIoError::BadToken)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_stopped_run_is_stopped_at_the_client_and_in_the_grid() {
    let (appio, server, client) =
        serverappio(FakeServerAppIo::new(run_context(), vec![3], echo)).await;
    let (grid, _context) = RemoteGrid::connect(Arc::new(client.clone()), TOKEN)
        .await
        .unwrap();
    appio.stop();
    assert_eq!(client.node_ids(TOKEN).await, Err(AppIoError::Stopped));
    assert_eq!(grid.node_ids().await, Err(GridError::Stopped));
    assert_eq!(
        grid.send(vec![small_message(3, 1)]).await,
        Err(GridError::Stopped)
    );
    server.shutdown().await;
}
