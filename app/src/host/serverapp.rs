//! `<app> serverapp --serverappio-api-address HOST:PORT [--token TOKEN]`: the ServerApp of
//! one run on a SuperLink, in its own process.
//!
//! With `--token` (a SuperLink with `--isolation subprocess` starts the process so) it
//! serves that run; without, it waits until a run waits for a ServerApp process
//! (`--isolation process`) and claims it. It then runs the app's `main` against a
//! `RemoteGrid`, reports how `main` ended (`finish`: completed, or failed with the error or
//! panic message) and exits: 0 when the run completed, 1 when it failed or the SuperLink
//! could not be reached, 2 for bad flags.
//!
//! A `--simulation` SuperLink adds `--simulation-options OPTIONS --simulation-workers N`:
//! the run is then a simulation, and this process runs its virtual fleet of the app's own
//! ClientApp (`floret_simulation::process_grid`), sized by the run's federation options.
//! Only the run's status, events and checkpoints travel to the SuperLink; the messages
//! between the ServerApp and the virtual SuperNodes stay in this process.

use super::{ClientAppFn, ServerAppFn};
use crate::{UserError, exit_code};
use clap::Parser;
use floret_actors::apps::client_exec::panic_message;
use floret_actors::apps::isolation::simulation_options;
use floret_core::{AppIoError, AppOutcome, ClientApp, Grid, ServerApp, ServerAppIo};
use floret_transport::grpc::{RemoteGrid, serverappio_client};
use std::ffi::OsString;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How often a process without a token asks for a run to serve.
pub(super) const CLAIM_INTERVAL: Duration = Duration::from_millis(500);

/// Flags of the serverapp mode.
#[derive(Debug, Parser)]
#[command(about = "Serve as the ServerApp of a run on a SuperLink")]
pub struct ServerAppArgs {
    /// Logging and tracing; the daemon that starts this process passes its collector on
    /// through OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// The SuperLink's ServerAppIo API.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9091")]
    pub serverappio_api_address: String,
    /// The run's token, from the SuperLink that started this process; without it, claim
    /// the next run that waits for a ServerApp process (--isolation process).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Set by a `--simulation` SuperLink: the run's federation options (a TOML table), from
    /// which this process builds the run's virtual fleet of the app's ClientApp.
    #[arg(long, value_name = "OPTIONS", requires = "simulation_workers")]
    pub simulation_options: Option<String>,
    /// Set by a `--simulation` SuperLink: at most this many ClientApp calls at once in the
    /// run's virtual fleet (the SuperLink's `--simulation-workers`).
    #[arg(long, value_name = "N", requires = "simulation_options")]
    pub simulation_workers: Option<usize>,
}

/// What a serverapp process runs, made once its run is claimed, on a blocking thread:
/// the ServerApp and, when given the worker count of a `--simulation` SuperLink, the
/// ClientApp of the run's virtual fleet. An app that cannot be made (a Python app whose
/// Python cannot run it) fails the run with the returned line, which `flwr log` shows.
pub type LoadApps = Box<
    dyn FnOnce(Option<usize>) -> Result<(Arc<dyn ServerApp>, Option<ClientApp>), String> + Send,
>;

/// Parses `args` (`args[0]` names the program and mode) and serves one run.
pub fn run(args: Vec<OsString>, server_app: ServerAppFn, client_app: ClientAppFn) -> ExitCode {
    crate::process::app_main_with_args("floret-serverapp", args, 2, |args: ServerAppArgs| {
        serve_with(
            args,
            Box::new(move |workers| Ok((server_app(), workers.map(|_| client_app())))),
        )
    })
}

/// Asks `claim` until it names a run (`--isolation process`); waits while the daemon is
/// not reachable yet.
pub(super) async fn claim<F, Fut>(what: &str, address: &str, mut claim: F) -> anyhow::Result<String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<String>, AppIoError>>,
{
    tracing::info!("waiting for a run that needs a {what} process at {address}");
    loop {
        match claim().await {
            Ok(Some(token)) => return Ok(token),
            Ok(None) => {}
            Err(AppIoError::Unavailable(e)) => tracing::debug!("not reachable yet: {e}"),
            Err(e) => anyhow::bail!("could not claim a run at {address}: {e}"),
        }
        tokio::time::sleep(CLAIM_INTERVAL).await;
    }
}

/// Serves one run with the apps `load` makes (see [`LoadApps`]); the process's exit code.
pub async fn serve_with(args: ServerAppArgs, load: LoadApps) -> anyhow::Result<i32> {
    // Bad flags are refused before anything is claimed.
    let simulation = match (&args.simulation_options, args.simulation_workers) {
        (Some(text), Some(workers)) => {
            Some((simulation_options(text).map_err(UserError::new)?, workers))
        }
        _ => None,
    };
    let address = args.serverappio_api_address;
    let client = serverappio_client(&address)
        .map_err(|e| UserError::new(format!("--serverappio-api-address {address}: {e}")))?;
    let appio: Arc<dyn ServerAppIo> = Arc::new(client);
    let token = match args.token {
        Some(token) => token,
        None => claim("ServerApp", &address, || appio.claim()).await?,
    };
    let (grid, context) = RemoteGrid::connect(appio, &token)
        .await
        .map_err(|e| anyhow::anyhow!("could not start serving the run at {address}: {e}"))?;
    let run_id = context.run_id;
    tracing::info!(run_id, "serving as the ServerApp of run {run_id}");
    let remote = Arc::new(grid);
    let workers = simulation.as_ref().map(|(_, workers)| *workers);
    let loaded = match tokio::task::spawn_blocking(move || load(workers)).await {
        Ok(loaded) => loaded,
        Err(e) if e.is_panic() => Err(format!(
            "the app panicked while loading: {}",
            panic_message(e.into_panic().as_ref())
        )),
        Err(_) => Err("loading the app was cancelled".into()),
    };
    let (server_app, client_app) = match loaded {
        Ok(apps) => apps,
        Err(reason) => return finish(remote, run_id, AppOutcome::Failed(reason)).await,
    };
    // What `main` drives: the SuperLink's run itself, or, on a `--simulation` SuperLink,
    // the run's virtual fleet in this process with the run's status and checkpoints on
    // the SuperLink.
    let grid: Arc<dyn Grid> = match (simulation, client_app) {
        (None, _) => remote.clone(),
        (Some(_), None) => {
            let reason = "the app has no ClientApp for the run's virtual fleet".to_owned();
            return finish(remote, run_id, AppOutcome::Failed(reason)).await;
        }
        (Some((options, workers)), Some(client_app)) => {
            let fleet = floret_simulation::process_grid(
                remote.clone(),
                &context.run_config,
                &options,
                client_app,
                workers,
            )
            .await;
            match fleet {
                Ok(fleet) => fleet,
                Err(e) => {
                    let reason = format!("could not start the run's virtual fleet: {e}");
                    return finish(remote, run_id, AppOutcome::Failed(reason)).await;
                }
            }
        }
    };
    // In a task of its own, so that a panic in `main` is caught and reported.
    // The SuperLink's run span, handed down as TRACEPARENT, is this process's parent.
    let span = tracing::info_span!("serverapp", run_id);
    if let Ok(parent) = std::env::var(floret_actors::apps::isolation::TRACEPARENT) {
        floret_core::trace_context::set_parent(&span, &parent);
    }
    let main = tokio::spawn(
        {
            let grid = grid.clone();
            async move { server_app.main(grid.as_ref(), context).await }
        }
        .instrument(span),
    );
    let outcome = match main.await {
        Ok(Ok(())) => AppOutcome::Completed,
        Ok(Err(e)) => AppOutcome::Failed(format!("ServerApp returned an error: {e}")),
        Err(e) if e.is_panic() => AppOutcome::Failed(format!(
            "ServerApp panicked: {}",
            panic_message(e.into_panic().as_ref())
        )),
        Err(_) => AppOutcome::Failed("ServerApp task was cancelled".into()),
    };
    // The fleet (if any) ends with its grid, before the run's end is reported.
    drop(grid);
    finish(remote, run_id, outcome).await
}

/// Reports how the run ended to the SuperLink; the process's exit code.
async fn finish(remote: Arc<RemoteGrid>, run_id: u64, outcome: AppOutcome) -> anyhow::Result<i32> {
    let grid = Arc::try_unwrap(remote)
        .map_err(|_| anyhow::anyhow!("the ServerApp kept its grid after `main` ended"))?;
    grid.finish(outcome.clone())
        .await
        .map_err(|e| anyhow::anyhow!("could not report the end of run {run_id}: {e}"))?;
    match outcome {
        AppOutcome::Completed => {
            tracing::info!(run_id, "run completed");
            Ok(exit_code::OK)
        }
        AppOutcome::Failed(reason) => {
            tracing::error!(run_id, "{reason}");
            Ok(exit_code::RUN_FAILED)
        }
    }
}

impl crate::process::Observed for ServerAppArgs {
    fn telemetry(&self) -> &crate::telemetry::TelemetryArgs {
        &self.telemetry
    }
}
