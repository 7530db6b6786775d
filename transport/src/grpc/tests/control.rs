//! Every Control call over the wire, and the event stream.

use super::double::FakeControl;
use super::*;
use crate::grpc::{bind_control, control_client};
use floret_core::{
    AppRef, Control, ControlError, PhaseSummary, RoundSummary, RunEvent, RunStatus, StartRun,
    SubStatus, UserConfig, UserConfigValue,
};

async fn setup() -> (Arc<FakeControl>, Server, super::super::ControlClient) {
    let control = Arc::new(FakeControl::default());
    let server = bind_control(localhost(), control.clone()).await.unwrap();
    let client = control_client(&server.local_addr().to_string())
        .await
        .unwrap();
    (control, server, client)
}

pub(super) fn start_request() -> StartRun {
    let mut run_config = UserConfig::new();
    run_config.insert("num-server-rounds".into(), UserConfigValue::Int(3));
    run_config.insert("fraction-fit".into(), UserConfigValue::Float(0.5));
    run_config.insert("name".into(), UserConfigValue::Str("x".into()));
    run_config.insert("verbose".into(), UserConfigValue::Bool(true));
    let mut federation_options = UserConfig::new();
    federation_options.insert("num-supernodes".into(), UserConfigValue::Int(2));
    StartRun {
        app: AppRef {
            name: "digits".into(),
            serverapp: "digits.server_app:app".into(),
            clientapp: "digits.client_app:app".into(),
            fab_hash: "ab".repeat(32),
        },
        federation: "my-federation".into(),
        run_config,
        federation_options,
        fab: None,
    }
}

#[tokio::test]
async fn every_control_call_round_trips() {
    let (control, server, client) = setup().await;
    let request = start_request();
    let run_id = client.start_run(request.clone()).await.unwrap();
    assert_eq!(control.started(), vec![request.clone()]);

    let run = client.get_run(run_id).await.unwrap();
    assert_eq!(run.run_id, run_id);
    assert_eq!(run.app, request.app);
    assert_eq!(run.run_config, request.run_config);
    assert_eq!(run.status, RunStatus::Pending);
    assert_eq!(client.list_runs().await.unwrap(), vec![run]);

    client.stop_run(run_id).await.unwrap();
    let stopped = client.get_run(run_id).await.unwrap();
    assert_eq!(stopped.status, RunStatus::Finished(SubStatus::Stopped));
    assert_eq!(stopped.reason, "stopped by the user");
    server.shutdown().await;
}

#[tokio::test]
async fn control_errors_keep_their_meaning() {
    let (_control, server, client) = setup().await;
    assert_eq!(client.get_run(9).await, Err(ControlError::UnknownRun(9)));
    assert_eq!(client.stop_run(9).await, Err(ControlError::UnknownRun(9)));
    assert_eq!(
        client.stream_events(9, false).await.map(|_| ()),
        Err(ControlError::UnknownRun(9))
    );
    let run_id = client.start_run(start_request()).await.unwrap();
    client.stop_run(run_id).await.unwrap();
    assert_eq!(
        client.stop_run(run_id).await,
        Err(ControlError::Finished(run_id))
    );
    let mut nameless = start_request();
    nameless.app.name.clear();
    assert_eq!(
        client.start_run(nameless).await,
        Err(ControlError::Invalid(
            "no app named \"\": pass an app directory".into()
        ))
    );
    server.shutdown().await;
}

fn summary(round: u64) -> RunEvent {
    let mut metrics = floret_core::MetricRecord::new();
    metrics.insert("loss", 0.5 / round as f64);
    metrics.insert("num-examples", 100i64);
    RunEvent::RoundFinished(RoundSummary {
        round,
        train: Some(PhaseSummary {
            sampled: 2,
            replies: 2,
            failures: 0,
            late: 0,
            metrics: metrics.clone(),
        }),
        evaluate: None,
        central: Some(metrics),
    })
}

#[tokio::test]
async fn events_stream_live_and_close_when_the_run_ends() {
    let (control, server, client) = setup().await;
    let run_id = client.start_run(start_request()).await.unwrap();
    let recorded = [
        RunEvent::Log("starting".into()),
        RunEvent::RoundStarted {
            round: 1,
            num_rounds: 2,
        },
    ];
    for e in &recorded {
        control.emit(run_id, e.clone());
    }
    let mut follow = client.stream_events(run_id, true).await.unwrap();
    for e in &recorded {
        assert_eq!(follow.recv().await.as_ref(), Some(e));
    }
    control.emit(run_id, summary(1));
    assert_eq!(follow.recv().await, Some(summary(1)));

    // Without follow: what was recorded, then the end.
    let mut snapshot = client.stream_events(run_id, false).await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = snapshot.recv().await {
        seen.push(e);
    }
    assert_eq!(seen, [recorded[0].clone(), recorded[1].clone(), summary(1)]);

    control.finish(run_id);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), follow.recv()).await,
        Ok(None)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_event_streams() {
    let (_control, server, client) = setup().await;
    let run_id = client.start_run(start_request()).await.unwrap();
    let mut follow = client.stream_events(run_id, true).await.unwrap();
    server.shutdown().await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), follow.recv()).await,
        Ok(None)
    );
}
