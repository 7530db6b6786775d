//! Every way a run ends leaves the same record: the final status with its reason, the
//! reason as the last line of the run's log (a completed run adds none: its log ends with
//! the app's own lines), and none of the run's messages held.
//!
//! Each run's ServerApp first sends one instruction to a node that never pulls it, so the
//! run holds a message when it ends and the purge is seen to happen.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use async_trait::async_trait;
use common::*;
use floret_actors::superlink::control::STOPPED_BY_USER;
use floret_actors::superlink::service::SHUTDOWN_REASON;
use floret_actors::{
    HeartbeatPolicy, LinkState, MemoryLinkState, NewRun, NodeLease, SqliteLinkState,
    SuperLinkService,
};
use floret_core::{
    AppCatalog, AppError, ClientApp, Context, Control, Grid, Message, RecordDict, RunEvent,
    RunStatus, ServerApp, SubStatus,
};
use std::sync::Arc;
use std::time::Duration;

/// What the ServerApp does once its instruction is out.
#[derive(Clone, Copy)]
enum Then {
    Complete,
    Fail,
    Panic,
    Hang,
}

const COMPLETE: &str = "end.server:complete";
const FAIL: &str = "end.server:fail";
const PANIC: &str = "end.server:panic";
const HANG_AFTER: &str = "end.server:hang";
const CLIENT: &str = "end.client:app";

/// The ServerApp's own last line, logged once its instruction is out.
const SENT: &str = "instruction sent";

struct SendThen(Then);

#[async_trait]
impl ServerApp for SendThen {
    async fn main(&self, grid: &dyn Grid, _ctx: Context) -> Result<(), AppError> {
        let node = *grid
            .node_ids()
            .await?
            .first()
            .ok_or_else(|| AppError::other("no node"))?;
        grid.send(vec![Message::new(RecordDict::new(), node, "train")])
            .await?;
        grid.emit(RunEvent::Log(SENT.into()));
        match self.0 {
            Then::Complete => Ok(()),
            Then::Fail => Err(AppError::other("no luck")),
            Then::Panic => panic!("strategy bug"),
            Then::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
        }
    }
}

/// The `SendThen` apps; `without` leaves one out (a restarted SuperLink that lost it).
struct EndCatalog {
    without: Option<&'static str>,
}

impl AppCatalog for EndCatalog {
    fn server_app(&self, component: &str) -> Option<Arc<dyn ServerApp>> {
        let then = match component {
            c if Some(c) == self.without => return None,
            COMPLETE => Then::Complete,
            FAIL => Then::Fail,
            PANIC => Then::Panic,
            HANG_AFTER => Then::Hang,
            _ => return None,
        };
        Some(Arc::new(SendThen(then)))
    }

    fn client_app(&self, component: &str) -> Option<ClientApp> {
        (component == CLIENT).then(ClientApp::new)
    }

    fn components(&self) -> Vec<(String, String)> {
        [COMPLETE, FAIL, PANIC, HANG_AFTER]
            .iter()
            .map(|s| (s.to_string(), CLIENT.to_string()))
            .collect()
    }
}

/// A SuperLink over `state` with one registered node that never pulls its instructions.
async fn superlink(state: &Arc<dyn LinkState>, without: Option<&'static str>) -> SuperLinkService {
    let lease = NodeLease {
        heartbeat_interval: 3600.0,
        online_until: f64::MAX,
    };
    if state.node_ids().is_empty() {
        let node = state.create_node(lease).unwrap();
        state.node_alive(node).unwrap();
    }
    SuperLinkService::start(
        state.clone(),
        Arc::new(EndCatalog { without }),
        HeartbeatPolicy::default(),
    )
    .await
    .unwrap()
}

fn memory() -> Arc<dyn LinkState> {
    Arc::new(MemoryLinkState::new())
}

async fn start(control: &dyn Control, server: &str) -> u64 {
    control
        .start_run(start_request((server, CLIENT), &[]))
        .await
        .unwrap()
}

/// A run of `server` that holds its instruction now.
async fn holding_run(state: &Arc<dyn LinkState>, control: &dyn Control, server: &str) -> u64 {
    let run = start(control, server).await;
    wait_until("the run's instruction", Duration::from_secs(10), || {
        state.held_messages() > 0
    })
    .await;
    run
}

/// The record every ending leaves (see the module doc).
fn assert_ended(state: &dyn LinkState, run: u64, sub: SubStatus, reason: &str) {
    let info = state.run(run).unwrap();
    assert_eq!(
        (info.status, info.reason.as_str()),
        (RunStatus::Finished(sub), reason)
    );
    let (events, _) = state.events(run, 0).unwrap();
    let last_line = if reason.is_empty() { SENT } else { reason };
    assert_eq!(
        events.last(),
        Some(&RunEvent::Log(last_line.into())),
        "{events:#?}"
    );
    assert_eq!(state.held_messages(), 0, "the run's messages are dropped");
}

/// Runs `server` on a fresh SuperLink until it ends by itself, and checks its record.
async fn ends_by_itself(server: &str, sub: SubStatus, reason: &str) {
    let state = memory();
    let link = superlink(&state, None).await;
    let run = start(link.control().as_ref(), server).await;
    follow_to_end(link.control().as_ref(), run).await;
    assert_ended(state.as_ref(), run, sub, reason);
    link.shutdown().await;
}

#[tokio::test]
async fn a_completed_run_ends_with_its_own_log_and_no_message_held() {
    ends_by_itself(COMPLETE, SubStatus::Completed, "").await;
}

#[tokio::test]
async fn a_serverapp_error_ends_the_run_failed_with_its_message_last_in_the_log() {
    let reason = "ServerApp returned an error: no luck";
    ends_by_itself(FAIL, SubStatus::Failed, reason).await;
}

#[tokio::test]
async fn a_serverapp_panic_ends_the_run_failed_with_the_panic_last_in_the_log() {
    let reason = "ServerApp panicked: strategy bug";
    ends_by_itself(PANIC, SubStatus::Failed, reason).await;
}

#[tokio::test]
async fn a_run_stopped_by_its_user_ends_stopped_with_the_reason_last_in_the_log() {
    let state = memory();
    let link = superlink(&state, None).await;
    let control = link.control();
    let run = holding_run(&state, control.as_ref(), HANG_AFTER).await;
    control.stop_run(run).await.unwrap();
    assert_ended(state.as_ref(), run, SubStatus::Stopped, STOPPED_BY_USER);
    link.shutdown().await;
}

/// A run the state holds but no Run actor runs (here: created behind the SuperLink's back)
/// is stopped by `flwr stop` itself, with the same record.
#[tokio::test]
async fn a_run_without_a_run_actor_stopped_by_its_user_leaves_the_same_record() {
    let state = memory();
    let link = superlink(&state, None).await;
    let run = state.create_run(NewRun::default()).unwrap();
    link.control().stop_run(run).await.unwrap();
    let info = state.run(run).unwrap();
    assert_eq!(
        (info.status, info.reason.as_str()),
        (RunStatus::Finished(SubStatus::Stopped), STOPPED_BY_USER)
    );
    let (events, _) = state.events(run, 0).unwrap();
    assert_eq!(events, [RunEvent::Log(STOPPED_BY_USER.into())]);
    link.shutdown().await;
}

/// Over a state that dies with the process, shutdown stops every unfinished run: the one
/// its Run actor stops and the one without an actor alike.
#[tokio::test]
async fn shutdown_over_memory_ends_every_run_stopped_with_the_same_record() {
    let state = memory();
    let link = superlink(&state, None).await;
    let run = holding_run(&state, link.control().as_ref(), HANG_AFTER).await;
    let orphan = state.create_run(NewRun::default()).unwrap();
    link.shutdown().await;
    assert_ended(state.as_ref(), run, SubStatus::Stopped, SHUTDOWN_REASON);
    let (events, _) = state.events(orphan, 0).unwrap();
    assert_eq!(events, [RunEvent::Log(SHUTDOWN_REASON.into())]);
    assert_eq!(
        state.run(orphan).unwrap().status,
        RunStatus::Finished(SubStatus::Stopped)
    );
}

/// A SuperLink crashes over its database with a run holding a message; the restarted one
/// no longer has the run's ServerApp and fails the run, with the same record.
#[tokio::test]
async fn a_run_that_cannot_resume_over_a_database_ends_failed_with_the_same_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let state: Arc<dyn LinkState> = Arc::new(SqliteLinkState::open(&path).unwrap());
    let old = superlink(&state, None).await;
    let run = holding_run(&state, old.control().as_ref(), HANG_AFTER).await;
    old.abort().await;
    drop(state);

    let state: Arc<dyn LinkState> = Arc::new(SqliteLinkState::open(&path).unwrap());
    assert!(state.held_messages() > 0, "the crash left the message held");
    let new = superlink(&state, Some(HANG_AFTER)).await;
    let reason = format!(
        "run {run} cannot resume after a SuperLink restart: its ServerApp \
         \"{HANG_AFTER}\" is not among this SuperLink's apps"
    );
    assert_ended(state.as_ref(), run, SubStatus::Failed, &reason);
    new.shutdown().await;
}
