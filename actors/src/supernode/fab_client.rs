//! The ClientApp of a FAB run on a SuperNode: a proxy for an app process.
//!
//! Loading (once per run and host): with `--isolation subprocess`, the packed FAB comes from
//! the FAB cache or, the first time, from the SuperLink (`Fleet::get_fab`); it must hash to
//! the run's `fab_hash`, unpack in its format (`AnyFab`: a native FAB's binary verified and
//! for this machine's target triple; a Flower FAB's paths, sizes and CONTENT checked),
//! else every message of the run gets a `LOAD_CLIENT_APP_EXCEPTION` reply naming the
//! problem. The binary is written to the cache and started as
//! `<binary> clientapp --clientappio-api-address ADDR --token T`; a Flower FAB's files are
//! unpacked into the cache and the SuperNode's own executable hosts the Python ClientApp
//! (`AppLauncher::spawn_python`; a Python that cannot run it answers each message with an
//! error reply that says why). With
//! `--isolation process` nothing is fetched or started: an app process started elsewhere
//! claims the run's session.
//!
//! Supervision: each message is handed to the process through the run's `NodeAppIo`
//! session and the host waits for the reply, for the process to end, or for the message
//! to expire. A process that ends (crash, abort, kill) costs the message it held an error
//! reply ("ClientApp process exited with status 101"); the node stays up and the run's
//! next message starts a fresh process. Dropping the client (the run is over, the node
//! shuts down) closes the session and kills the process.

use super::node_appio::{NodeAppIo, SessionGuard, TaskReply};
use crate::apps::app_process::AppProcess;
use crate::apps::isolation::{AppLauncher, Isolation};
use crate::policy::clock::unix_now;
use floret_core::fab::AnyFab;
use floret_core::{Context, Fleet, Message};
use std::path::PathBuf;
use std::sync::Arc;

/// What a SuperNode needs to run FABs: its ClientAppIo and how to start app processes.
#[derive(Clone)]
pub struct NodeFabs {
    /// The ClientAppIo service the app processes connect to; each message for a FAB app is
    /// handed over through it.
    pub io: Arc<NodeAppIo>,
    /// Starts (or waits for) the ClientApp processes, per `--isolation`.
    pub launcher: AppLauncher,
}

impl NodeFabs {
    /// Gets the run's app ready (see the module doc); the error is the reason for a
    /// `LOAD_CLIENT_APP_EXCEPTION` reply.
    pub(super) async fn load(
        &self,
        fleet: &dyn Fleet,
        run_id: u64,
        fab_hash: &str,
    ) -> Result<FabClient, String> {
        let binary = match self.launcher.isolation {
            Isolation::Subprocess => Some(self.install(fleet, run_id, fab_hash).await?),
            Isolation::Process => None,
        };
        let session = self.io.open(run_id, binary.is_some());
        if binary.is_none() {
            tracing::info!(
                run_id,
                "waiting for a ClientApp process to claim run {run_id} (--isolation process): \
                 start the app's binary as `<app> clientapp --clientappio-api-address {}`",
                self.launcher.appio_address
            );
        }
        Ok(FabClient {
            run_id,
            binary,
            launcher: self.launcher.clone(),
            session,
            process: None,
        })
    }

    async fn install(
        &self,
        fleet: &dyn Fleet,
        run_id: u64,
        fab_hash: &str,
    ) -> Result<Installed, String> {
        let cache = self.launcher.cache.clone();
        let hash = fab_hash.to_ascii_lowercase();
        let cached = {
            let (cache, hash) = (cache.clone(), hash.clone());
            blocking(move || Ok(cache.packed(&hash))).await?
        };
        let (packed, fetched) = match cached {
            Some(packed) => (packed, false),
            None => {
                let packed = fleet.get_fab(&hash).await.map_err(|e| {
                    format!("could not fetch FAB {hash} of run {run_id} from the SuperLink: {e}")
                })?;
                (packed, true)
            }
        };
        blocking(move || {
            let fab = AnyFab::unpack_verified(packed.clone(), &hash)
                .map_err(|e| format!("FAB {hash} of run {run_id} refused: {e}"))?;
            if fetched {
                cache.store_packed(&hash, &packed)?;
            }
            match fab {
                AnyFab::Native(fab) => {
                    fab.check_target().map_err(|e| {
                        format!("cannot run the ClientApp of run {run_id} (FAB {hash}): {e}")
                    })?;
                    cache.install(&hash, &fab).map(Installed::Binary)
                }
                AnyFab::Flower(fab) => cache.install_app(&hash, &fab).map(Installed::PythonApp),
            }
        })
        .await
    }
}

/// What a FAB run's ClientApp process is started from.
pub(super) enum Installed {
    /// A native FAB's binary.
    Binary(PathBuf),
    /// A Flower FAB's app directory, hosted by the SuperNode's own executable.
    PythonApp(PathBuf),
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| format!("FAB preparation failed: {e}"))?
}

/// See the module doc.
pub(super) struct FabClient {
    run_id: u64,
    /// What to start; `None` with `--isolation process`.
    binary: Option<Installed>,
    launcher: AppLauncher,
    session: SessionGuard,
    /// The running app process, if this node started one.
    process: Option<AppProcess>,
}

impl FabClient {
    /// Hands `message` to the app process and waits for its reply (until `expires_at`,
    /// Unix seconds). The error is the reason for an error reply.
    pub(super) async fn execute(
        &mut self,
        message: Message,
        context: Context,
        expires_at: f64,
    ) -> Result<TaskReply, String> {
        self.ensure_process().await?;
        let reply = self.session.submit(message, context);
        let left = super::reply::time_left(expires_at, unix_now(), floret_core::message::MAX_TTL);
        let (outcome, crashed) = tokio::select! {
            biased;
            reply = reply => (reply.map_err(|_| "the ClientApp session closed".to_string()), false),
            exit = exited(self.process.as_ref()) => (Err(format!("ClientApp process {exit}")), true),
            () = tokio::time::sleep(left) => (
                Err("the ClientApp process did not reply before the message expired".into()),
                false,
            ),
            () = self.session.closing() => (Err("the SuperNode is shutting down".into()), false),
        };
        if crashed {
            self.process = None;
        }
        if outcome.is_err() {
            self.session.reset();
        }
        outcome
    }

    /// Starts the app process unless it runs (subprocess isolation only).
    async fn ensure_process(&mut self) -> Result<(), String> {
        let Some(binary) = &self.binary else {
            return Ok(());
        };
        if self.process.as_ref().is_some_and(|p| p.exit().is_none()) {
            return Ok(());
        }
        let token = &self.session.token;
        let process = match binary {
            Installed::Binary(binary) => {
                self.launcher.spawn(binary, "clientapp", token, &[]).await?
            }
            Installed::PythonApp(dir) => {
                self.launcher
                    .spawn_python(dir, "clientapp", token, &[])
                    .await?
            }
        };
        tracing::info!(
            run_id = self.run_id,
            pid = process.pid(),
            "started ClientApp process"
        );
        self.process = Some(process);
        Ok(())
    }
}

/// How `process` ended; never resolves without one.
async fn exited(process: Option<&AppProcess>) -> crate::apps::app_process::Exit {
    match process {
        Some(p) => p.exited().await,
        None => std::future::pending().await,
    }
}
