//! Runs of apps that come as FABs, on the SuperLink.
//!
//! `LinkFabs::prepare` checks a `StartRun` that carries a FAB before any run exists: the
//! bytes must hash to the run's `fab_hash` and unpack in their format (`AnyFab`: a native
//! FAB's binary is verified and, when the SuperLink is to start the ServerApp itself, must
//! be for this machine's target; a Flower FAB's paths, sizes and CONTENT are checked, and
//! it needs `--isolation subprocess`, as the SuperLink hosts its Python itself), so a bad
//! FAB is refused at submit and nothing of it is written.
//! The FAB is then kept in the `LinkState` by hash, for `Fleet::get_fab`.
//!
//! The run's ServerApp is an `ExternalServerApp`: its `main` opens a ServerAppIo session
//! and then
//! - with `--isolation subprocess`, writes the binary to the FAB cache and starts
//!   `<binary> serverapp --serverappio-api-address ADDR --token T`; on a `--simulation`
//!   SuperLink with `--simulation-options OPTIONS --simulation-workers N` added, so that
//!   the process runs the run's virtual fleet of the app's own ClientApp itself and sends
//!   only status, events and checkpoints to the SuperLink; for a Flower FAB (a Python app)
//!   it unpacks the app's files into the FAB cache and starts the SuperLink's own
//!   executable as the app process (`AppLauncher::spawn_python`), which hosts the Python
//!   ServerApp; a Python that is missing or has no `flwr` fails the run at its start with
//!   the one line that says so;
//! - with `--isolation process`, waits for an app process to claim the run;
//!
//! and ends when the process reports its outcome (`finish`), or, for a process the
//! SuperLink started, when the process ends without reporting ("ServerApp process exited
//! with status 101"). A stopped run drops `main`, which closes the session and kills the
//! process.
//!
//! After a SuperLink restart, `LinkFabs::resume` builds the ServerApp of an unfinished FAB
//! run again from the FAB kept in the state; its new app process reads the run's
//! checkpoint through ServerAppIo (`LoadCheckpoint`) and goes on from there.

use crate::apps::app_process::AppProcess;
use crate::apps::isolation::{AppLauncher, Isolation, simulation_flags};
use crate::state::LinkState;
use crate::superlink::appio::{LinkAppIo, SessionGuard};
use async_trait::async_trait;
use floret_core::fab::AnyFab;
use floret_core::{
    AppError, AppOutcome, Context, ControlError, Grid, RunEvent, ServerApp, StartRun, UserConfig,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long a ServerApp process that reported its outcome may take to exit by itself
/// before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// What a SuperLink needs to run FABs: its ServerAppIo and how to start app processes.
#[derive(Clone)]
pub struct LinkFabs {
    /// The ServerAppIo service the app processes connect to; each FAB run opens a session
    /// on it.
    pub io: Arc<LinkAppIo>,
    /// Starts (or waits for) the ServerApp processes, per `--isolation`.
    pub launcher: AppLauncher,
    /// On a `--simulation` SuperLink, its `--simulation-workers`: a FAB run's ServerApp
    /// process then also runs the run's virtual fleet of the app's ClientApp, with at most
    /// this many ClientApp calls at once. `None` on a deployment SuperLink.
    pub simulation_workers: Option<usize>,
}

impl LinkFabs {
    /// Checks the FAB of `request` (see the module doc), fills in `app.fab_hash` when it
    /// was left empty, stores the FAB and returns the ServerApp that runs it.
    pub async fn prepare(
        &self,
        state: &dyn LinkState,
        request: &mut StartRun,
    ) -> Result<Arc<dyn ServerApp>, ControlError> {
        let named = request.app.fab_hash.to_ascii_lowercase();
        let packed = match request.fab.take() {
            Some(packed) => packed,
            None => state.fab(&named).ok_or_else(|| {
                ControlError::Invalid(format!(
                    "run names FAB {named}, which this SuperLink does not have: send the FAB \
                     with the run (`flwr run` does)"
                ))
            })?,
        };
        let hash = if named.is_empty() {
            floret_core::fab_hash(&packed)
        } else {
            named
        };
        if self.simulation_workers.is_some() && self.launcher.isolation == Isolation::Process {
            return Err(ControlError::Invalid(
                "this SuperLink runs simulations (--simulation) with --isolation process, and \
                 a FAB's simulation runs in the app process the SuperLink starts: restart it \
                 with --isolation subprocess (the default) to run FABs"
                    .into(),
            ));
        }
        let fab = self.verify(packed.clone(), &hash).await?;
        tracing::info!(
            fab_hash = %hash,
            app = %fab.name(),
            version = %fab.version(),
            format = if matches!(fab, AnyFab::Flower(_)) { "flower" } else { "native" },
            "FAB accepted"
        );
        state
            .store_fab(&hash, packed)
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
        request.app.fab_hash = hash.clone();
        Ok(self.server_app(hash, fab, &request.federation_options))
    }

    fn server_app(
        &self,
        fab_hash: String,
        fab: AnyFab,
        options: &UserConfig,
    ) -> Arc<dyn ServerApp> {
        Arc::new(ExternalServerApp {
            fab_hash,
            fab: Arc::new(fab),
            fabs: self.clone(),
            simulation: self.simulation_workers.map(|_| options.clone()),
        })
    }
    /// The ServerApp of a FAB run an earlier SuperLink process left unfinished, built again
    /// from the FAB kept in the state. Its app process is started anew and resumes from the
    /// run's checkpoint through ServerAppIo's `LoadCheckpoint`; on a `--simulation`
    /// SuperLink, with a fleet from `options`, the run's `federation_options`.
    pub async fn resume(
        &self,
        state: &dyn LinkState,
        fab_hash: &str,
        options: &UserConfig,
    ) -> Result<Arc<dyn ServerApp>, ControlError> {
        let packed = state.fab(fab_hash).ok_or_else(|| {
            ControlError::Invalid(format!(
                "its FAB {fab_hash} is not in the SuperLink's state"
            ))
        })?;
        let fab = self.verify(packed, fab_hash).await?;
        Ok(self.server_app(fab_hash.to_string(), fab, options))
    }

    /// Unpacks and verifies a FAB (off the async threads: it hashes the binary) and, when
    /// this SuperLink starts ServerApp processes itself, checks it can run here.
    async fn verify(&self, packed: bytes::Bytes, hash: &str) -> Result<AnyFab, ControlError> {
        let check = {
            let hash = hash.to_string();
            tokio::task::spawn_blocking(move || AnyFab::unpack_verified(packed, &hash))
        };
        let fab = check
            .await
            .map_err(|e| ControlError::Unavailable(format!("FAB check failed: {e}")))?
            .map_err(|e| ControlError::Invalid(format!("FAB {hash} refused: {e}")))?;
        if let (Isolation::Process, AnyFab::Flower(_)) = (self.launcher.isolation, &fab) {
            return Err(ControlError::Invalid(format!(
                "FAB {hash} refused: it is a Flower app in Python, whose ServerApp this SuperLink \
                 hosts itself, but it runs with --isolation process (it starts no app \
                 process): restart it with --isolation subprocess (the default)"
            )));
        }
        if let (Isolation::Subprocess, AnyFab::Native(fab)) = (self.launcher.isolation, &fab) {
            fab.check_target().map_err(|e| {
                ControlError::Invalid(format!(
                    "FAB {hash} refused: this SuperLink starts ServerApp processes itself \
                     (--isolation subprocess) and {e}"
                ))
            })?;
        }
        Ok(fab)
    }
}

/// The ServerApp of a FAB run: a proxy for the app process (see the module doc).
pub struct ExternalServerApp {
    fab_hash: String,
    fab: Arc<AnyFab>,
    fabs: LinkFabs,
    /// On a `--simulation` SuperLink, the run's `federation_options`, passed to the
    /// process so that it runs the run's virtual fleet.
    simulation: Option<UserConfig>,
}

impl ExternalServerApp {
    /// Writes the FAB's binary, or a Flower FAB's files, to the cache: what to start.
    async fn install(&self) -> Result<Installed, AppError> {
        let cache = self.fabs.launcher.cache.clone();
        let (hash, fab) = (self.fab_hash.clone(), self.fab.clone());
        tokio::task::spawn_blocking(move || match fab.as_ref() {
            AnyFab::Native(fab) => cache.install(&hash, fab).map(Installed::Binary),
            AnyFab::Flower(fab) => cache.install_app(&hash, fab).map(Installed::PythonApp),
        })
        .await
        .map_err(AppError::other)?
        .map_err(AppError::Other)
    }

    /// Starts the app process and waits for its outcome or its end.
    async fn subprocess(&self, session: &mut SessionGuard, run_id: u64) -> Result<(), AppError> {
        let installed = self.install().await?;
        let extra = match (&self.simulation, self.fabs.simulation_workers) {
            (Some(options), Some(workers)) => {
                simulation_flags(options, workers).map_err(AppError::Other)?
            }
            _ => Vec::new(),
        };
        let launcher = &self.fabs.launcher;
        let process = match &installed {
            Installed::Binary(binary) => {
                launcher
                    .spawn(binary, "serverapp", &session.token, &extra)
                    .await
            }
            Installed::PythonApp(dir) => {
                launcher
                    .spawn_python(dir, "serverapp", &session.token, &extra)
                    .await
            }
        }
        .map_err(AppError::Other)?;
        tracing::info!(run_id, pid = process.pid(), "started ServerApp process");
        tokio::select! {
            biased;
            outcome = &mut session.outcome => {
                settle(process).await;
                outcome_result(outcome.ok())
            }
            exit = process.exited() => match session.outcome.try_recv() {
                // It reported and exited at once.
                Ok(outcome) => outcome_result(Some(outcome)),
                Err(_) => Err(AppError::Other(format!("ServerApp process {exit}"))),
            },
        }
    }
}

/// What a FAB run's ServerApp process is started from.
enum Installed {
    /// A native FAB's binary.
    Binary(PathBuf),
    /// A Flower FAB's app directory, hosted by the SuperLink's own executable.
    PythonApp(PathBuf),
}

/// Lets a process that has reported its outcome exit by itself, then kills it.
async fn settle(process: AppProcess) {
    if tokio::time::timeout(EXIT_GRACE, process.exited())
        .await
        .is_err()
    {
        tracing::warn!(
            pid = process.pid(),
            "ServerApp process still running {EXIT_GRACE:?} after reporting; killing it"
        );
    }
}

fn outcome_result(outcome: Option<AppOutcome>) -> Result<(), AppError> {
    match outcome {
        Some(AppOutcome::Completed) => Ok(()),
        Some(AppOutcome::Failed(reason)) => Err(AppError::Other(reason)),
        None => Err(AppError::other(
            "the ServerApp session closed before its process reported an outcome",
        )),
    }
}

#[async_trait]
impl ServerApp for ExternalServerApp {
    async fn main(&self, grid: &dyn Grid, context: Context) -> Result<(), AppError> {
        let run_id = context.run_id;
        let launcher = &self.fabs.launcher;
        let subprocess = launcher.isolation == Isolation::Subprocess;
        let mut session = self
            .fabs
            .io
            .open(context, subprocess)
            .map_err(AppError::other)?;
        if subprocess {
            return self.subprocess(&mut session, run_id).await;
        }
        // The grid logs it too.
        grid.emit(RunEvent::Log(format!(
            "waiting for a ServerApp process to claim run {run_id} (--isolation process): \
             start the app's binary as `<app> serverapp --serverappio-api-address {}`",
            launcher.appio_address
        )));
        outcome_result((&mut session.outcome).await.ok())
    }
}
