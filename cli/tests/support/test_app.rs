//! `floret-test-app`: a fixture of the process-isolation tests (cli/tests/isolation.rs),
//! built by cargo with the other binaries so the tests need not build an app crate. It is
//! the quickstart app behind `floret_cli::app_host::run`, as a user's app binary is, with
//! one addition: the run-config key `crash` makes its processes die on purpose.
//!
//! - `crash = "serverapp"`: the ServerApp process exits with status 101 at once;
//! - `crash = "serverapp-panic"`: the ServerApp's `main` panics (the process reports it);
//! - `crash = "clientapp"`: the ClientApp process aborts on its first `train` message of
//!   round 1, so that round 2 runs on a restarted process.

use floret_cli::async_trait::async_trait;
use floret_cli::floret_core::{AppError, ClientApp, Context, Grid, Message, ServerApp};
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    floret_cli::app_host::run(server_app, client_app)
}

fn crash(ctx: &Context) -> &str {
    ctx.run_config_str("crash").unwrap_or("")
}

struct Crashing(Arc<dyn ServerApp>);

#[async_trait]
impl ServerApp for Crashing {
    async fn main(&self, grid: &dyn Grid, context: Context) -> Result<(), AppError> {
        match crash(&context) {
            "serverapp" => std::process::exit(101),
            "serverapp-panic" => panic!("crash requested by the run config"),
            _ => self.0.main(grid, context).await,
        }
    }
}

fn server_app() -> Arc<dyn ServerApp> {
    Arc::new(Crashing(floret_app_quickstart::server_app()))
}

fn round(message: &Message) -> i64 {
    message
        .content()
        .ok()
        .and_then(|c| c.config_record("config").ok())
        .and_then(|c| c.get_i64("server-round").ok())
        .unwrap_or(0)
}

fn client_app() -> ClientApp {
    let quickstart = floret_app_quickstart::client_app();
    let evaluate = quickstart.clone();
    ClientApp::new()
        .train(move |message, ctx| {
            if crash(ctx) == "clientapp" && round(message) == 1 {
                std::process::abort();
            }
            quickstart.handle(message, ctx)
        })
        .evaluate(move |message, ctx| evaluate.handle(message, ctx))
}
