//! `flower-supernode`: the client side of a Floret deployment.
//!
//! It keeps the system allocator, unlike `flwr`: with mimalloc, whose arenas were backed by
//! transparent huge pages, an idle daemon held 19 MB instead of 7 (docs/BENCHMARKS.md, D2).

use floret_cli::daemon::supernode::{SuperNodeArgs, SuperNodeConfig, serve};
use floret_cli::daemon::{self, health, shutdown_signal};
use floret_cli::exit_code;
use std::process::ExitCode;

/// An idle SuperNode waits on one connection; ClientApp work runs on the blocking pool.
const WORKER_THREADS: usize = 1;

fn main() -> ExitCode {
    // The app process of a Flower FAB, started by this daemon (see `python_host`).
    let raw: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if floret_cli::python_host::requested(&raw) {
        return floret_cli::python_host::run(raw);
    }
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let Some(rest) = health::requested(&args) {
        return health::run("flower-supernode", rest);
    }
    daemon::main(
        "flower-supernode",
        WORKER_THREADS,
        |args: SuperNodeArgs| async move {
            // Before anything binds, so that an early SIGTERM stops the daemon cleanly.
            let stop = shutdown_signal();
            let config = SuperNodeConfig::from_args(&args, std::env::vars())?;
            serve(config, async {
                let signal = stop.await;
                tracing::info!("{signal} received");
            })
            .await?;
            Ok(exit_code::OK)
        },
    )
}
