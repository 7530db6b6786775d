//! `<app> clientapp --clientappio-api-address HOST:PORT [--token TOKEN]`: the ClientApp of
//! one run on a SuperNode, in its own process.
//!
//! With `--token` (a SuperNode with `--isolation subprocess` starts the process so) it
//! serves that run; without, it waits until a run waits for a ClientApp process
//! (`--isolation process`) and claims it. It then takes the run's messages one by one,
//! answers each through the app's handlers (`client_exec::execute`: a failing or panicking
//! handler becomes an error reply, as inside a SuperNode) and hands back the reply with the
//! updated context, until the SuperNode says the run is over (its token is no longer
//! valid): exit 0. Exit 1 when the SuperNode stays unreachable for `GIVE_UP`, so that an
//! app process outlives a killed SuperNode only briefly.

use super::ClientAppFn;
use super::serverapp::claim;
use crate::{UserError, exit_code};
use clap::Parser;
use floret_actors::apps::client_exec::execute;
use floret_core::{AppError, AppIoError, ClientApp, ClientAppIo, ClientTask};
use floret_transport::grpc::clientappio_client;
use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long one `next_task` call waits for a message.
const POLL: Duration = Duration::from_secs(30);
/// Pause between attempts while the SuperNode cannot be reached.
const RETRY: Duration = Duration::from_millis(500);
/// How long the SuperNode may be unreachable before the process gives up.
const GIVE_UP: Duration = Duration::from_secs(30);

/// Flags of the clientapp mode.
#[derive(Debug, Parser)]
#[command(about = "Serve as the ClientApp of a run on a SuperNode")]
pub struct ClientAppArgs {
    /// Logging and tracing; the daemon that starts this process passes its collector on
    /// through OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
    #[command(flatten)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// The SuperNode's ClientAppIo API.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9094")]
    pub clientappio_api_address: String,
    /// The run's token, from the SuperNode that started this process; without it, claim
    /// the next run that waits for a ClientApp process (--isolation process).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
}

/// What a clientapp process runs, made once its run is claimed, on a blocking thread. An
/// app that cannot be made (a Python app whose Python cannot run it) answers every
/// message of the run with an error reply carrying the returned line, so the ServerApp
/// and `flwr log` see why; the process keeps serving rather than exit and be restarted
/// for each message.
pub type LoadClient = Box<dyn FnOnce() -> Result<ClientApp, String> + Send>;

/// Parses `args` (`args[0]` names the program and mode) and serves one run.
pub fn run(args: Vec<OsString>, client_app: ClientAppFn) -> ExitCode {
    // Handlers run on the blocking pool; one worker carries the calls.
    crate::process::app_main_with_args("floret-clientapp", args, 1, |args: ClientAppArgs| {
        serve_with(args, Box::new(move || Ok(client_app())))
    })
}

/// Whether the loop goes on after an AppIo error, and how.
enum Next {
    Retry,
    /// The run is over: exit 0.
    Done,
}

/// Tracks how long the SuperNode has been unreachable.
struct Outage {
    address: String,
    since: Option<Instant>,
}

impl Outage {
    /// Sorts an error: retry (waiting a moment) while unreachable for less than
    /// `GIVE_UP`, done when the token is gone, an error otherwise.
    async fn after(&mut self, error: AppIoError) -> anyhow::Result<Next> {
        match error {
            AppIoError::BadToken | AppIoError::Stopped => Ok(Next::Done),
            AppIoError::Unavailable(e) => {
                let since = *self.since.get_or_insert_with(Instant::now);
                if since.elapsed() > GIVE_UP {
                    anyhow::bail!(
                        "the SuperNode at {} has been unreachable for {GIVE_UP:?}: {e}",
                        self.address
                    );
                }
                tokio::time::sleep(RETRY).await;
                Ok(Next::Retry)
            }
            AppIoError::Invalid(e) => anyhow::bail!("the SuperNode refused a request: {e}"),
        }
    }
}

/// Serves one run with the ClientApp `load` makes (see [`LoadClient`]); the process's exit
/// code.
pub async fn serve_with(args: ClientAppArgs, load: LoadClient) -> anyhow::Result<i32> {
    let address = args.clientappio_api_address;
    let client = clientappio_client(&address)
        .map_err(|e| UserError::new(format!("--clientappio-api-address {address}: {e}")))?;
    let appio: Arc<dyn ClientAppIo> = Arc::new(client);
    let token = match args.token {
        Some(token) => token,
        None => claim("ClientApp", &address, || appio.claim()).await?,
    };
    let loaded = match tokio::task::spawn_blocking(load).await {
        Ok(loaded) => loaded,
        Err(e) if e.is_panic() => Err(format!(
            "the ClientApp panicked while loading: {}",
            floret_actors::apps::client_exec::panic_message(e.into_panic().as_ref())
        )),
        Err(_) => Err("loading the ClientApp was cancelled".into()),
    };
    let app = Arc::new(loaded.unwrap_or_else(|reason| {
        tracing::error!("{reason}");
        ClientApp::new().fallback(move |_, _| Err(AppError::other(reason.clone())))
    }));
    let mut outage = Outage {
        address,
        since: None,
    };
    tracing::info!("serving as a ClientApp");
    loop {
        let task = match appio.next_task(&token, POLL).await {
            Ok(Some(task)) => task,
            Ok(None) => continue,
            Err(e) => match outage.after(e).await? {
                Next::Retry => continue,
                Next::Done => break,
            },
        };
        outage.since = None;
        let ClientTask {
            message,
            mut context,
        } = task;
        let message_id = message.metadata.message_id.clone();
        let handled = {
            let app = app.clone();
            tokio::task::spawn_blocking(move || {
                let span = floret_core::trace_context::message_span(
                    floret_core::trace_context::phase_of(&message.metadata.message_type),
                    &message,
                    message.metadata.dst_node_id,
                    "clientappio",
                );
                let _entered = span.enter();
                let reply = execute(&app, &message, &mut context);
                (reply.payload, context)
            })
            .await?
        };
        let (payload, context) = handled;
        // Before the reply: once the run's last reply is in, the SuperNode may kill this
        // process at any moment.
        crate::telemetry::flush().await;
        loop {
            let sent = appio
                .complete_task(&token, &message_id, payload.clone(), context.clone())
                .await;
            match sent {
                Ok(()) => break,
                // The SuperNode stopped waiting (the message expired): carry on.
                Err(AppIoError::Invalid(e)) => {
                    tracing::warn!(message_id, "reply not taken: {e}");
                    break;
                }
                Err(e) => match outage.after(e).await? {
                    Next::Retry => continue,
                    Next::Done => return Ok(done()),
                },
            }
        }
        outage.since = None;
    }
    Ok(done())
}

fn done() -> i32 {
    tracing::info!("the run is over");
    exit_code::OK
}

impl crate::process::Observed for ClientAppArgs {
    fn telemetry(&self) -> &crate::telemetry::TelemetryArgs {
        &self.telemetry
    }
}
