//! FABs on the wire: whole in StartRun (flwr -> SuperLink) and GetFab (SuperLink ->
//! SuperNode), beyond the usual message limit.

use super::double::FakeControl;
use super::*;
use crate::grpc::{MAX_FAB_LEN, bind_control, control_client};
use crate::proto::{self, v1};
use bytes::Bytes;
use floret_core::{AppRef, Control, ControlError, Fleet, FleetError, StartRun};
use tonic::Code;

/// `len` bytes that differ from one position to the next (a binary, not zeros).
fn fab(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect::<Vec<u8>>()
        .into()
}

fn start_with(fab: Bytes) -> StartRun {
    StartRun {
        app: AppRef {
            name: "myapp".into(),
            serverapp: "myapp.server_app:app".into(),
            clientapp: "myapp.client_app:app".into(),
            fab_hash: "ab".repeat(32),
        },
        federation: "lan".into(),
        fab: Some(fab),
        ..StartRun::default()
    }
}

const TWENTY_MB_FAB: usize = 20 * 1000 * 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_mb_fab_arrives_intact_with_start_run() {
    let control = Arc::new(FakeControl::default());
    let server = bind_control(localhost(), control.clone()).await.unwrap();
    let client = control_client(&server.local_addr().to_string())
        .await
        .unwrap();
    let request = start_with(fab(TWENTY_MB_FAB));
    client.start_run(request.clone()).await.unwrap();
    let started = control.started();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].fab.as_ref().map(Bytes::len), Some(TWENTY_MB_FAB));
    assert_eq!(started[0], request, "the FAB and the rest arrive intact");

    let mut builtin = start_with(Bytes::new());
    builtin.fab = None;
    client.start_run(builtin).await.unwrap();
    assert_eq!(control.started()[1].fab, None, "no FAB stays no FAB");
    server.shutdown().await;
}

#[tokio::test]
async fn a_fab_over_the_limit_is_refused_before_it_is_sent() {
    let control = Arc::new(FakeControl::default());
    let server = bind_control(localhost(), control.clone()).await.unwrap();
    let client = control_client(&server.local_addr().to_string())
        .await
        .unwrap();
    // Zeroed pages are mapped lazily: this does not use 512 MiB of memory.
    let too_big = Bytes::from(vec![0u8; MAX_FAB_LEN + 1]);
    let err = client.start_run(start_with(too_big)).await.unwrap_err();
    assert_eq!(
        err,
        ControlError::Invalid(
            "the app bundle (FAB) is 512 MiB; a SuperLink accepts at most 512 MiB: leave large \
             data out of the app and load it at run time"
                .into()
        )
    );
    assert!(control.started().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn a_fab_naming_another_hash_than_its_app_is_an_invalid_argument() {
    let control = Arc::new(FakeControl::default());
    let server = bind_control(localhost(), control.clone()).await.unwrap();
    let channel = raw_channel(server.local_addr()).await;
    let mut raw = v1::control_client::ControlClient::new(channel);
    let mut request = crate::convert_runs::start_run_to_proto(&start_with(fab(100)));
    if let Some(f) = request.fab.as_mut() {
        f.hash_str = "cd".repeat(32);
    }
    let status = raw.start_run(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("StartRun: StartRunRequest.fab.hash_str: is \"cdcd"),
        "{}",
        status.message()
    );
    assert!(control.started().is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_fab_round_trips_and_an_unknown_hash_is_a_clear_error() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let client = client(server.local_addr(), ClientOptions::default());
    let hash = "ab".repeat(32);
    let bundle = fab(TWENTY_MB_FAB);
    fleet.add_fab(&hash, bundle.clone());
    assert_eq!(client.get_fab(&hash).await, Ok(bundle));

    let unknown = "cd".repeat(32);
    assert_eq!(
        client.get_fab(&unknown).await,
        Err(FleetError::Invalid(format!(
            "this SuperLink has no FAB with hash {unknown}"
        )))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn the_get_fab_answer_is_flowers_fab_naming_its_hash() {
    let (fleet, server) = fleet_server(ServerOptions::default()).await;
    let hash = "ef".repeat(32);
    fleet.add_fab(&hash, fab(1000));
    let channel = raw_channel(server.local_addr()).await;
    let mut raw = v1::fleet_client::FleetClient::new(channel);
    let answer = raw
        .get_fab(v1::GetFabRequest {
            fab_hash: hash.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.fab,
        Some(proto::Fab {
            hash_str: hash,
            content: fab(1000),
            verifications: Default::default(),
        })
    );
    server.shutdown().await;
}
