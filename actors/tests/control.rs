//! The Control API of a SuperLinkService: what `flwr run/ls/log/stop` see.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use common::*;
use floret_actors::{RunStatus, SubStatus};
use floret_core::{
    Caller, Control, ControlError, ControlFor, Fleet, FleetError, RunEvent, UserConfigValue,
};
use std::time::Duration;

#[tokio::test]
async fn an_unknown_component_is_refused_listing_the_known_ones() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let control = link.control();
    let err = control
        .start_run(start_request(("nope.server:app", FEDAVG.1), &[]))
        .await
        .unwrap_err();
    let ControlError::Invalid(text) = err else {
        panic!("{err:?}");
    };
    assert!(
        text.contains("unknown serverapp component \"nope.server:app\""),
        "{text}"
    );
    assert!(
        text.contains("test.server:fedavg, test.server:probe, test.server:hang"),
        "{text}"
    );
    let err = control
        .start_run(start_request((FEDAVG.0, "nope.client:app"), &[]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::Invalid(t) if t.contains("unknown clientapp component")),
        "{err:?}"
    );
    assert!(
        control.list_runs().await.unwrap().is_empty(),
        "no run was created"
    );
    link.shutdown().await;
}

#[tokio::test]
async fn a_bad_run_config_is_refused_with_the_apps_own_message() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let err = link
        .control()
        .start_run(start_request(
            FEDAVG,
            &[("num-server-rounds", UserConfigValue::Int(0))],
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::Invalid(t) if t.contains("num-server-rounds must be an integer of 1 or more")),
        "{err:?}"
    );
    link.shutdown().await;
}

#[tokio::test]
async fn stop_run_ends_a_long_run_as_finished_stopped() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let control = link.control();
    let run_id = control.start_run(start_request(HANG, &[])).await.unwrap();
    assert_eq!(
        control.get_run(run_id).await.unwrap().status,
        RunStatus::Running
    );
    control.stop_run(run_id).await.unwrap();
    let info = control.get_run(run_id).await.unwrap();
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Stopped));
    assert_eq!(info.reason, "stopped by user");
    assert_eq!(
        control.stop_run(run_id).await,
        Err(ControlError::Finished(run_id))
    );
    assert_eq!(
        control.stop_run(999).await,
        Err(ControlError::UnknownRun(999))
    );
    assert_eq!(control.list_runs().await.unwrap().len(), 1);
    link.shutdown().await;
}

#[tokio::test]
async fn users_see_and_stop_only_their_own_runs_and_admins_all() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let alice = link.control().control_for(Caller::user("alice", false));
    let bob = link.control().control_for(Caller::user("bob", false));
    let admin = link.control().control_for(Caller::user("root", true));
    let run_id = alice.start_run(start_request(HANG, &[])).await.unwrap();
    assert_eq!(alice.get_run(run_id).await.unwrap().owner, "alice");
    assert_eq!(alice.list_runs().await.unwrap().len(), 1);

    // Bob gets exactly what a run that does not exist gives.
    assert!(bob.list_runs().await.unwrap().is_empty());
    assert_eq!(
        bob.get_run(run_id).await,
        Err(ControlError::UnknownRun(run_id))
    );
    assert_eq!(
        bob.stop_run(run_id).await,
        Err(ControlError::UnknownRun(run_id))
    );
    assert_eq!(
        bob.stream_events(run_id, false).await.err(),
        Some(ControlError::UnknownRun(run_id))
    );
    assert_eq!(
        alice.get_run(run_id).await.unwrap().status,
        RunStatus::Running,
        "bob's stop did nothing"
    );

    // The admin and the anonymous view (user auth off) see every run.
    assert_eq!(admin.list_runs().await.unwrap().len(), 1);
    assert_eq!(link.control().list_runs().await.unwrap().len(), 1);
    admin.stop_run(run_id).await.unwrap();
    assert_eq!(
        alice.get_run(run_id).await.unwrap().status,
        RunStatus::Finished(SubStatus::Stopped)
    );
    link.shutdown().await;
}

#[tokio::test]
async fn stream_events_follows_until_the_run_ends_or_stops_at_the_present() {
    let catalog = TestCatalog::new();
    let link = service(&catalog).await;
    let control = link.control();
    let run_id = control.start_run(start_request(HANG, &[])).await.unwrap();
    let mut followed = control.stream_events(run_id, true).await.unwrap();
    assert_eq!(followed.recv().await, Some(RunEvent::Log("hanging".into())));
    let snapshot: Vec<RunEvent> = {
        let mut rx = control.stream_events(run_id, false).await.unwrap();
        let mut v = Vec::new();
        while let Some(e) = rx.recv().await {
            v.push(e);
        }
        v
    };
    assert_eq!(snapshot, vec![RunEvent::Log("hanging".into())]);
    control.stop_run(run_id).await.unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut v = Vec::new();
        while let Some(e) = followed.recv().await {
            v.push(e);
        }
        v
    })
    .await
    .expect("the stream closes when the run ends");
    assert_eq!(rest, vec![RunEvent::Log("stopped by user".into())]);
    assert!(matches!(
        control.stream_events(404, true).await,
        Err(ControlError::UnknownRun(404))
    ));
    link.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_unfinished_runs_and_closes_the_fleet() {
    let (_catalog, link, [node]) = link_with_nodes().await;
    let state = link.state();
    let control = link.control();
    let fleet = link.fleet();
    let hanging = control.start_run(start_request(HANG, &[])).await.unwrap();
    let mut events = control.stream_events(hanging, true).await.unwrap();
    link.shutdown().await;
    let info = control.get_run(hanging).await.unwrap();
    assert_eq!(info.status, RunStatus::Finished(SubStatus::Stopped));
    assert_eq!(info.reason, "SuperLink shut down");
    let mut last = None;
    while let Some(e) = events.recv().await {
        last = Some(e);
    }
    assert_eq!(last, Some(RunEvent::Log("SuperLink shut down".into())));
    assert!(matches!(
        control.start_run(start_request(HANG, &[])).await,
        Err(ControlError::Unavailable(_))
    ));
    assert!(matches!(
        fleet.heartbeat(state.node_ids()[0], 10.0).await,
        Err(FleetError::Unavailable(_))
    ));
    assert_eq!(fleet.subscribers(), 0, "node streams are closed");
    // The node keeps trying to reconnect until it is told to stop.
    node.shutdown().await.unwrap();
}
