//! The `main` of a Floret process: flags parsed (usage errors exit 2, `--help` exits 0),
//! logging and tracing set up, the body run on a tokio runtime, and its outcome mapped to
//! the exit-code contract. The daemons and the app binary's `serverapp` / `clientapp`
//! modes all start here.

use crate::telemetry::{self, TelemetryArgs};
use crate::{exit_code, report_outcome};
use std::future::Future;
use std::process::ExitCode;

/// A binary's arguments that carry the logging and tracing flags (`telemetry`).
pub trait Observed {
    /// The parsed logging and tracing flags, read before anything else so the rest can log.
    fn telemetry(&self) -> &TelemetryArgs;
}

/// [`main_with_args`] for an app process, which its daemon may SIGKILL at any time: its
/// spans are sent promptly rather than in 5 s batches.
pub fn app_main_with_args<A, F>(
    service: &str,
    args: impl IntoIterator<Item = std::ffi::OsString>,
    worker_threads: usize,
    body: impl FnOnce(A) -> F,
) -> ExitCode
where
    A: clap::Parser + Observed,
    F: Future<Output = anyhow::Result<i32>>,
{
    run_main(service, args, worker_threads, true, body)
}

/// [`main`] over explicit arguments (`args[0]` names the program), for the app binary's
/// `serverapp` / `clientapp` modes, whose arguments start after the mode word.
pub fn main_with_args<A, F>(
    service: &str,
    args: impl IntoIterator<Item = std::ffi::OsString>,
    worker_threads: usize,
    body: impl FnOnce(A) -> F,
) -> ExitCode
where
    A: clap::Parser + Observed,
    F: Future<Output = anyhow::Result<i32>>,
{
    run_main(service, args, worker_threads, false, body)
}

fn run_main<A, F>(
    service: &str,
    args: impl IntoIterator<Item = std::ffi::OsString>,
    worker_threads: usize,
    short_lived: bool,
    body: impl FnOnce(A) -> F,
) -> ExitCode
where
    A: clap::Parser + Observed,
    F: Future<Output = anyhow::Result<i32>>,
{
    let args = match A::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() { exit_code::USAGE } else { 0 };
            return ExitCode::from(code as u8);
        }
    };
    let settings =
        match telemetry::Settings::resolve(args.telemetry(), |k| std::env::var(k).ok(), "info") {
            Ok(settings) if short_lived => settings.short_lived(),
            Ok(settings) => settings,
            Err(e) => return report_outcome(Err(e.into())),
        };
    // No other thread exists yet.
    telemetry::pass_on_to_children(args.telemetry());
    floret_transport::tls::install_crypto_provider();
    // `body` is called inside the runtime: it may spawn tasks before its first await.
    run_on_runtime(service, &settings, Some(worker_threads), async move {
        body(args).await
    })
}

/// Runs `body` on a new multi-threaded tokio runtime (`worker_threads`, or one per core)
/// with the process's logs and traces installed for its duration, and maps its outcome
/// to the exit-code contract. Every `main` of Floret's binaries ends here.
pub fn run_on_runtime<F>(
    service: &str,
    settings: &telemetry::Settings,
    worker_threads: Option<usize>,
    body: F,
) -> ExitCode
where
    F: Future<Output = anyhow::Result<i32>>,
{
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = worker_threads {
        builder.worker_threads(workers);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit_code::RUN_FAILED as u8);
        }
    };
    report_outcome(runtime.block_on(async {
        // Dropped at the end of this block, inside the runtime its exporter runs on.
        let _telemetry = telemetry::install(service, settings, Vec::new())?;
        body.await
    }))
}
