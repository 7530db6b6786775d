//! `LinkAppIo`: the SuperLink's side of the ServerAppIo protocol, which a process-isolated
//! ServerApp drives its run through.
//!
//! Each run of a FAB opens a session: a fresh token bound to the run's `LinkGrid` and
//! context. Every call names its token; an unknown one, or one whose run has ended (the
//! session is closed when the run's `ExternalServerApp` ends, also when the run is
//! stopped), is `BadToken`, which tells the app process to exit. With `--isolation
//! process` a session waits to be claimed by an app process started outside the
//! SuperLink; `claim` hands each waiting session to one caller, the run that has waited
//! longest first.

use crate::apps::isolation::{Claim, claim_longest_waiting, new_token};
use crate::state::{LinkState, StateError};
use crate::superlink::grid::LinkGrid;
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{
    AppIoError, AppOutcome, Context, Grid, GridError, Message, NodeSet, RunEvent, ServerAppIo,
};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// See the module doc.
pub struct LinkAppIo {
    state: Arc<dyn LinkState>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Numbers sessions as they open (see `Claim`).
    tickets: AtomicU64,
}

/// One run served by one app process.
struct Session {
    grid: LinkGrid,
    context: Context,
    /// Set when an app process holds the token: at once for a process the SuperLink
    /// started, on `claim` for one started elsewhere.
    claim: Claim,
    /// Where `finish` reports the outcome; taken by the first report.
    outcome: Mutex<Option<oneshot::Sender<AppOutcome>>>,
}

/// An open session, held by the run's `ExternalServerApp`; dropping it closes the session.
pub struct SessionGuard {
    io: Arc<LinkAppIo>,
    /// The secret an app process presents on every call to act for this run.
    pub token: String,
    /// The outcome the app process reports with `finish`.
    pub outcome: oneshot::Receiver<AppOutcome>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.io.lock().remove(&self.token);
    }
}

impl LinkAppIo {
    /// A ServerAppIo with no sessions, over the SuperLink's state.
    pub fn new(state: Arc<dyn LinkState>) -> LinkAppIo {
        LinkAppIo {
            state,
            sessions: Mutex::default(),
            tickets: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session for the run of `context`; `claimed` when the SuperLink hands the
    /// token to a process it starts itself.
    pub fn open(
        self: &Arc<Self>,
        context: Context,
        claimed: bool,
    ) -> Result<SessionGuard, StateError> {
        let grid = LinkGrid::new(context.run_id, self.state.clone())?;
        let (tx, rx) = oneshot::channel();
        let token = new_token();
        let session = Session {
            grid,
            context,
            claim: Claim::new(claimed, &self.tickets),
            outcome: Mutex::new(Some(tx)),
        };
        self.lock().insert(token.clone(), Arc::new(session));
        Ok(SessionGuard {
            io: self.clone(),
            token,
            outcome: rx,
        })
    }

    /// Runs whose session waits for an app process to claim it.
    pub fn unclaimed(&self) -> usize {
        self.lock()
            .values()
            .filter(|s| !s.claim.is_claimed())
            .count()
    }

    fn session(&self, token: &str) -> Result<Arc<Session>, AppIoError> {
        let session = self
            .lock()
            .get(token)
            .cloned()
            .ok_or(AppIoError::BadToken)?;
        if session.claim.is_claimed() {
            Ok(session)
        } else {
            // A token nobody was given yet cannot be known to a legitimate caller.
            Err(AppIoError::BadToken)
        }
    }
}

fn appio_error(e: GridError) -> AppIoError {
    match e {
        GridError::Stopped => AppIoError::Stopped,
        GridError::Disconnected(reason) => AppIoError::Unavailable(reason),
        GridError::InvalidMessage(reason) => AppIoError::Invalid(reason),
        e @ GridError::Unsupported(_) => AppIoError::Invalid(e.to_string()),
        GridError::Storage(reason) => AppIoError::Unavailable(reason),
    }
}

#[async_trait]
impl ServerAppIo for LinkAppIo {
    async fn context(&self, token: &str) -> Result<Context, AppIoError> {
        Ok(self.session(token)?.context.clone())
    }

    async fn node_ids(&self, token: &str) -> Result<NodeSet, AppIoError> {
        let session = self.session(token)?;
        session.grid.node_ids().await.map_err(appio_error)
    }

    async fn send(&self, token: &str, messages: Vec<Message>) -> Result<Vec<String>, AppIoError> {
        let session = self.session(token)?;
        session.grid.send(messages).await.map_err(appio_error)
    }

    async fn pull(&self, token: &str, message_ids: &[String]) -> Result<Vec<Message>, AppIoError> {
        let session = self.session(token)?;
        session.grid.pull(message_ids).await.map_err(appio_error)
    }

    async fn receive(&self, token: &str, timeout: Duration) -> Result<Vec<Message>, AppIoError> {
        let session = self.session(token)?;
        session.grid.receive(timeout).await.map_err(appio_error)
    }

    async fn emit(&self, token: &str, event: RunEvent) -> Result<(), AppIoError> {
        self.session(token)?.grid.emit(event);
        Ok(())
    }

    async fn load_checkpoint(&self, token: &str) -> Result<Option<Bytes>, AppIoError> {
        let session = self.session(token)?;
        session.grid.load_checkpoint().await.map_err(appio_error)
    }

    async fn save_checkpoint(&self, token: &str, checkpoint: Bytes) -> Result<(), AppIoError> {
        let session = self.session(token)?;
        session
            .grid
            .save_checkpoint(checkpoint)
            .await
            .map_err(appio_error)
    }

    async fn finish(&self, token: &str, outcome: AppOutcome) -> Result<(), AppIoError> {
        let session = self.session(token)?;
        let sender = session
            .outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match sender {
            Some(tx) => {
                let _ = tx.send(outcome);
                Ok(())
            }
            None => Err(AppIoError::Invalid(
                "this run's outcome was already reported".into(),
            )),
        }
    }

    async fn claim(&self) -> Result<Option<String>, AppIoError> {
        let sessions = self.lock();
        Ok(
            claim_longest_waiting(&*sessions, |s| &s.claim).map(|(token, session)| {
                tracing::info!(
                    run_id = session.context.run_id,
                    "a ServerApp process claimed the run"
                );
                token.clone()
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{MemoryLinkState, NewRun, RunStore};
    use floret_core::{RecordDict, RunStatus};

    fn running(state: &MemoryLinkState) -> Context {
        let run_id = state.create_run(NewRun::default()).unwrap();
        state
            .set_run_status(run_id, RunStatus::Starting, "")
            .unwrap();
        state
            .set_run_status(run_id, RunStatus::Running, "")
            .unwrap();
        Context {
            run_id,
            ..Context::default()
        }
    }

    #[tokio::test]
    async fn a_token_serves_its_run_until_the_session_closes() {
        let state = Arc::new(MemoryLinkState::new());
        let io = Arc::new(LinkAppIo::new(state.clone()));
        let context = running(&state);
        let mut guard = io.open(context.clone(), true).unwrap();
        assert_eq!(io.context(&guard.token).await.unwrap(), context);
        assert_eq!(
            io.context("not-a-token").await.unwrap_err(),
            AppIoError::BadToken
        );
        let ids = io
            .send(
                &guard.token,
                vec![Message::new(RecordDict::new(), 7, "train")],
            )
            .await
            .unwrap();
        assert_eq!(ids.len(), 1, "queued (and answered: node 7 is not there)");
        let replies = io
            .receive(&guard.token, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(replies[0].error().is_some());

        io.finish(&guard.token, AppOutcome::Failed("boom".into()))
            .await
            .unwrap();
        assert_eq!(
            guard.outcome.try_recv().unwrap(),
            AppOutcome::Failed("boom".into())
        );
        assert!(
            io.finish(&guard.token, AppOutcome::Completed)
                .await
                .is_err()
        );
        let token = guard.token.clone();
        drop(guard);
        assert_eq!(io.context(&token).await.unwrap_err(), AppIoError::BadToken);
    }

    #[tokio::test]
    async fn each_waiting_run_is_claimed_once_longest_waiting_first() {
        let state = Arc::new(MemoryLinkState::new());
        let io = Arc::new(LinkAppIo::new(state.clone()));
        let contexts: Vec<Context> = (0..8).map(|_| running(&state)).collect();
        // Random run ids and a hash map would claim in another order almost surely.
        let guards: Vec<SessionGuard> = contexts
            .iter()
            .map(|c| io.open(c.clone(), false).unwrap())
            .collect();
        assert_eq!(
            io.context(&guards[0].token).await.unwrap_err(),
            AppIoError::BadToken,
            "an unclaimed token is not usable"
        );
        assert_eq!(io.unclaimed(), 8);
        for guard in &guards {
            assert_eq!(io.claim().await.unwrap(), Some(guard.token.clone()));
        }
        assert_eq!(io.claim().await.unwrap(), None);
        assert_eq!(io.context(&guards[0].token).await.unwrap(), contexts[0]);
    }
}
