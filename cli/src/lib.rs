//! floret-cli: the `flwr` command and the `flower-superlink` / `flower-supernode` daemons.
//!
//! Thin by design: parse flags, read files, validate them into a config type, call library
//! code (floret-simulation for local federations, floret-actors and floret-transport for a
//! deployment), and report. Every user error is a `UserError`, which the binaries turn into
//! one clear line and exit code 2.

pub mod build_cmd;
pub mod columns;
pub mod credentials;
pub mod daemon;
pub mod follow;
pub mod keygen_cmd;
pub mod log_cmd;
pub mod login_cmd;
pub mod ls_cmd;
pub mod new_cmd;
pub mod python_cmd;
pub mod python_host;
pub mod registry;
pub mod remote;
pub mod run_cmd;
pub mod session_cmd;
pub mod stop_cmd;
pub mod submit;
pub mod supernode_cmd;

// The app host and what `flwr` shares with it (an app's simulation reports as `flwr run`
// does) live in floret-app, which user apps depend on without the rest of this crate.
pub use floret_app::host as app_host;
pub use floret_app::{
    UserError, exit_code, out, outln, project, report, report_outcome, run_report, stdout,
    telemetry,
};

// What a user's app crate needs, through its one dependency on floret-cli (apps made
// before floret-app existed; new ones depend on floret-app).
pub use async_trait;
pub use floret_core;
pub use floret_strategies;
