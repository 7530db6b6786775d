//! Supervision policies of the SuperLink side, driven through real actors.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use async_trait::async_trait;
use floret_actors::state::RunStore;
use floret_actors::{
    LinkState, MemoryLinkState, NewRun, RunStatus, SubStatus, SuperLink, SuperLinkMsg,
};
use floret_core::{AppError, Context, Grid, Message, RecordDict, ServerApp, error_code};
use ractor::{Actor, ActorRef, call};
use std::sync::Arc;
use std::time::Duration;

enum Behaviour {
    Complete,
    Fail,
    Panic,
    Hang,
    SendToUnknownNode,
}

struct App(Behaviour);

#[async_trait]
impl ServerApp for App {
    async fn main(&self, grid: &dyn Grid, _ctx: Context) -> Result<(), AppError> {
        match self.0 {
            Behaviour::Complete => Ok(()),
            Behaviour::Fail => Err(AppError::other("not enough nodes")),
            Behaviour::Panic => panic!("strategy bug"),
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
            Behaviour::SendToUnknownNode => {
                let replies = grid
                    .send_and_receive(
                        vec![Message::new(RecordDict::new(), 42, "train")],
                        Duration::from_secs(3600),
                    )
                    .await?;
                match replies.first().and_then(Message::error) {
                    Some(e) if e.code == error_code::NODE_UNAVAILABLE => {
                        Err(AppError::other(e.reason.clone()))
                    }
                    other => Err(AppError::other(format!("unexpected reply: {other:?}"))),
                }
            }
        }
    }
}

async fn superlink() -> (ActorRef<SuperLinkMsg>, Arc<MemoryLinkState>) {
    let state = Arc::new(MemoryLinkState::new());
    let (link, _) = Actor::spawn(None, SuperLink, state.clone() as Arc<dyn LinkState>)
        .await
        .unwrap();
    (link, state)
}

async fn start(link: &ActorRef<SuperLinkMsg>, b: Behaviour) -> u64 {
    let app: Arc<dyn ServerApp> = Arc::new(App(b));
    call!(link, |reply| SuperLinkMsg::StartRun {
        run: NewRun::default(),
        app,
        fleet: None,
        reply
    })
    .unwrap()
    .unwrap()
}

async fn wait_finished(state: &MemoryLinkState, run_id: u64) -> (RunStatus, String) {
    for _ in 0..500 {
        let info = state.run(run_id).unwrap();
        if info.status.is_finished() {
            return (info.status, info.reason);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {run_id} did not finish");
}

#[tokio::test]
async fn a_serverapp_that_returns_completes_its_run() {
    let (link, state) = superlink().await;
    let run = start(&link, Behaviour::Complete).await;
    assert_eq!(
        wait_finished(&state, run).await.0,
        RunStatus::Finished(SubStatus::Completed)
    );
}

#[tokio::test]
async fn a_panicking_serverapp_fails_its_run_with_the_reason_and_the_superlink_serves_on() {
    let (link, state) = superlink().await;
    let run = start(&link, Behaviour::Panic).await;
    let (status, reason) = wait_finished(&state, run).await;
    assert_eq!(status, RunStatus::Finished(SubStatus::Failed));
    assert_eq!(reason, "ServerApp panicked: strategy bug");
    let next = start(&link, Behaviour::Complete).await;
    assert_eq!(
        wait_finished(&state, next).await.0,
        RunStatus::Finished(SubStatus::Completed)
    );
}

#[tokio::test]
async fn a_serverapp_error_fails_the_run_with_its_message() {
    let (link, state) = superlink().await;
    let run = start(&link, Behaviour::Fail).await;
    let (status, reason) = wait_finished(&state, run).await;
    assert_eq!(status, RunStatus::Finished(SubStatus::Failed));
    assert_eq!(reason, "ServerApp returned an error: not enough nodes");
}

/// A node may vanish between `node_ids()` and `send`: the ServerApp gets an error reply at
/// once instead of a failed run (here it reports the reply's reason as its own error).
#[tokio::test]
async fn sending_to_an_unknown_node_answers_with_node_unavailable_at_once() {
    let (link, state) = superlink().await;
    let run = start(&link, Behaviour::SendToUnknownNode).await;
    let (status, reason) = wait_finished(&state, run).await;
    assert_eq!(status, RunStatus::Finished(SubStatus::Failed));
    assert_eq!(
        reason,
        "ServerApp returned an error: node 42 unavailable: it is not connected to this SuperLink"
    );
}

#[tokio::test]
async fn stopping_a_run_cancels_its_serverapp() {
    let (link, state) = superlink().await;
    let run = start(&link, Behaviour::Hang).await;
    assert_eq!(state.run(run).unwrap().status, RunStatus::Running);
    call!(link, |reply| SuperLinkMsg::StopRun {
        run_id: run,
        reason: "stopped by user".into(),
        reply
    })
    .unwrap()
    .unwrap();
    let (status, reason) = wait_finished(&state, run).await;
    assert_eq!(status, RunStatus::Finished(SubStatus::Stopped));
    assert_eq!(reason, "stopped by user");
    let again = call!(link, |reply| SuperLinkMsg::StopRun {
        run_id: run,
        reason: String::new(),
        reply
    })
    .unwrap();
    assert!(again.is_err(), "a finished run is no longer active");
}
