//! floret-app: what a user's app binary links, and nothing else. An app crate made by
//! `flwr new` depends on this crate alone; its `main` is
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     floret_app::run(server_app::app, client_app::app)
//! }
//! ```
//!
//! and the binary then runs as a local simulation of itself, or as the ServerApp or a
//! ClientApp of a run in its own process (see `host`). The `flwr` command and the daemons
//! (`floret-cli`) build on the same modules, so an app's simulation reports exactly as
//! `flwr run` does; but nothing of theirs is in here (no built-in apps and their datasets,
//! no daemons, no Prometheus), so the first build of a new app compiles only what an app
//! process runs.

pub mod host;
pub mod process;
pub mod project;
pub mod report;
pub mod run_report;
pub mod simulate;
pub mod stdout;
pub mod telemetry;

pub use host::{ClientAppFn, ServerAppFn, run};

// What a user's app crate needs, through its one dependency on floret-app.
pub use async_trait;
pub use floret_core;
pub use floret_strategies;

use thiserror::Error;

/// A mistake in what the user typed or wrote (flags, config files, pyproject.toml, run
/// config, a run id): reported as one line naming the problem and the fix, exit code 2, no
/// backtrace.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct UserError(pub String);

impl UserError {
    /// A user error with this message: one line naming the problem and the fix.
    pub fn new(msg: impl Into<String>) -> Self {
        UserError(msg.into())
    }
}

/// Exit codes are a contract, the same for all three binaries:
///
/// | code | `flwr` | daemons |
/// |---|---|---|
/// | 0 | done: the run completed (`run --stream`), or the command did what it says | stopped by SIGINT/SIGTERM after a clean shutdown |
/// | 1 | the run ended other than completed, or the SuperLink could not be reached, or another failure that is not the user's input | a failure at run time: the SuperNode gave up reconnecting, the runtime broke |
/// | 2 | bad input: flags, pyproject.toml, run config, a federation without an address for `ls`/`log`/`stop`, an unknown run id, a run that already finished | bad flags or config, an address that is in use or malformed |
/// | 130 | Ctrl-C while following a run (`run --stream`, `log --stream`): detached, the run goes on; Ctrl-C in a local simulation: stopped, history of the finished rounds written | |
/// | 141 | the reader of stdout went away (`flwr ls \| head`): stopped quietly | |
pub mod exit_code {
    /// Done: the command did what it says, or the followed run completed.
    pub const OK: i32 = 0;
    /// The run failed or was stopped, the SuperLink is unreachable, or the runtime failed.
    pub const RUN_FAILED: i32 = 1;
    /// Bad input: a `UserError` (flags, config files, run config, run id).
    pub const USAGE: i32 = 2;
    /// Ctrl-C (128 + SIGINT, the shell's convention): detached from a followed run, or a
    /// local simulation stopped after writing the history of its finished rounds.
    pub const DETACHED: i32 = 130;
    /// Stdout's reader went away (128 + SIGPIPE, what a shell shows for tools SIGPIPE
    /// ends): `flwr` prints through `floret_cli::stdout`, which exits with this code.
    pub const PIPE_CLOSED: i32 = 141;
}

/// Turns a command's outcome into the process exit code, printing errors as one line:
/// a `UserError` anywhere in the chain exits 2, anything else 1.
pub fn report_outcome(result: anyhow::Result<i32>) -> std::process::ExitCode {
    match result {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            if let Some(user) = e.chain().find_map(|c| c.downcast_ref::<UserError>()) {
                eprintln!("error: {user}");
                std::process::ExitCode::from(exit_code::USAGE as u8)
            } else {
                eprintln!("error: {e:#}");
                std::process::ExitCode::from(exit_code::RUN_FAILED as u8)
            }
        }
    }
}
