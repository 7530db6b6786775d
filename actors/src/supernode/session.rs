//! One link session: what runs while a SuperNode is connected. A heartbeat task beats at
//! `beat_factor * interval +- jitter`; a reader task forwards instructions from the
//! SuperLink's stream to the SuperNode actor. Either one reporting trouble ends the session
//! (the SuperNode reconnects and starts a new one); dropping a session stops both tasks.
//! Events carry the session number so the SuperNode ignores news from a session it has
//! already replaced.

use super::SuperNodeMsg;
use crate::policy::heartbeat::HeartbeatPolicy;
use floret_core::{Fleet, FleetError, Message};
use ractor::ActorRef;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

/// The tasks of a live session; dropping it ends them.
pub(super) struct Session {
    heartbeat: AbortHandle,
    reader: AbortHandle,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.reader.abort();
    }
}

/// What a session needs to know.
pub(super) struct SessionArgs {
    pub(super) node: ActorRef<SuperNodeMsg>,
    pub(super) session: u64,
    pub(super) node_id: u64,
    pub(super) fleet: Arc<dyn Fleet>,
    pub(super) interval: Duration,
    pub(super) policy: HeartbeatPolicy,
}

impl Session {
    pub(super) fn start(args: SessionArgs, instructions: mpsc::Receiver<Message>) -> Session {
        let reader =
            tokio::spawn(read(args.node.clone(), args.session, instructions)).abort_handle();
        let heartbeat = tokio::spawn(beat(args)).abort_handle();
        Session { heartbeat, reader }
    }
}

async fn beat(args: SessionArgs) {
    let secs = args.interval.as_secs_f64();
    loop {
        let delay = args.policy.beat_delay(args.interval, rand::random());
        tokio::time::sleep(delay).await;
        if let Err(error) = args.fleet.heartbeat(args.node_id, secs).await {
            tracing::info!(node_id = args.node_id, "heartbeat failed: {error}");
            let _ = args.node.cast(SuperNodeMsg::LinkLost {
                session: args.session,
                error,
            });
            return;
        }
    }
}

async fn read(node: ActorRef<SuperNodeMsg>, session: u64, mut rx: mpsc::Receiver<Message>) {
    while let Some(message) = rx.recv().await {
        if node.cast(SuperNodeMsg::Instruction(message)).is_err() {
            return;
        }
    }
    let _ = node.cast(SuperNodeMsg::LinkLost {
        session,
        error: FleetError::Unavailable("the instruction stream closed".into()),
    });
}
