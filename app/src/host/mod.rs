//! The app host: the `main` of a user's app binary. An app crate made by `flwr new` calls
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     floret_app::run(server_app::app, client_app::app)
//! }
//! ```
//!
//! and its executable then serves three purposes, chosen by its first argument:
//!
//! ```text
//! <app> simulation [APP_DIR] [FEDERATION] [--run-config "k=v ..."] [--format default|json]
//!     [--output-dir DIR]
//!     a local simulation of itself, as `flwr run` runs it (same output and exit codes)
//! <app> serverapp --serverappio-api-address HOST:PORT [--token TOKEN]
//!     the ServerApp of a run, in its own process, driving the run through a SuperLink
//! <app> clientapp --clientappio-api-address HOST:PORT [--token TOKEN]
//!     the ClientApp of a run, in its own process, answering a SuperNode's messages
//! ```

pub mod clientapp;
pub mod serverapp;
pub mod simulation;

use crate::exit_code;
use floret_core::{ClientApp, ServerApp};
use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

/// Builds the app's ServerApp.
pub type ServerAppFn = fn() -> Arc<dyn ServerApp>;
/// Builds the app's ClientApp.
pub type ClientAppFn = fn() -> ClientApp;

/// Runs the mode named by the process's first argument; returns the exit code (0 done,
/// 1 failed, 2 bad input, as for `flwr`).
pub fn run(server_app: ServerAppFn, client_app: ClientAppFn) -> ExitCode {
    dispatch(std::env::args_os().collect(), server_app, client_app)
}

/// `run` for a given argument list (`args[0]` is the program).
pub fn dispatch(args: Vec<OsString>, server_app: ServerAppFn, client_app: ClientAppFn) -> ExitCode {
    let program = args
        .first()
        .map(|p| {
            std::path::Path::new(p)
                .file_name()
                .unwrap_or(p.as_os_str())
                .to_string_lossy()
                .into_owned()
        })
        .unwrap_or_else(|| "app".to_owned());
    let mode = args.get(1).map(|m| m.to_string_lossy().into_owned());
    // What the mode's flag parser sees: "<program> <mode>" as its name, then the flags.
    let mode_args = |mode: &str| -> Vec<OsString> {
        std::iter::once(OsString::from(format!("{program} {mode}")))
            .chain(args.iter().skip(2).cloned())
            .collect()
    };
    match mode.as_deref() {
        Some("simulation") => simulation::run(mode_args("simulation"), server_app, client_app),
        Some("serverapp") => serverapp::run(mode_args("serverapp"), server_app, client_app),
        Some("clientapp") => clientapp::run(mode_args("clientapp"), client_app),
        Some("-h" | "--help" | "help") => {
            crate::outln!("{}", usage(&program));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!(
                "error: unknown mode {other:?}: use simulation, serverapp or clientapp\n\n{}",
                usage(&program)
            );
            ExitCode::from(exit_code::USAGE as u8)
        }
        None => {
            eprintln!(
                "error: name a mode: simulation, serverapp or clientapp\n\n{}",
                usage(&program)
            );
            ExitCode::from(exit_code::USAGE as u8)
        }
    }
}

fn usage(program: &str) -> String {
    format!(
        "A Floret app. `flwr run` builds and runs it; it can also run by itself:

Usage:
  {program} simulation [APP_DIR] [FEDERATION] [--run-config \"k=v ...\"] [--format default|json]
      [--output-dir DIR]
      run a local simulation of this app (as `flwr run APP_DIR` does)
  {program} serverapp --serverappio-api-address HOST:PORT [--token TOKEN]
      serve as the ServerApp of a run on a SuperLink
  {program} clientapp --clientappio-api-address HOST:PORT [--token TOKEN]
      serve as the ClientApp of a run on a SuperNode

`{program} MODE --help` describes a mode's options."
    )
}
