//! `flower-superlink`: the server side of a deployment. Serves the Fleet API (SuperNodes
//! connect, default port 9092), the Control API (`flwr` connects, default port 9093) and
//! the ServerAppIo API (process-isolated ServerApps connect) over gRPC, runs built-in
//! ServerApps in-process and the ServerApps of FABs as processes of their own
//! (`--isolation`), keeps its state in a SQLite database so that runs survive a restart
//! (`--database`; `:memory:` keeps it in memory, forgotten when the SuperLink stops).
//!
//! ```text
//! flower-superlink
//!  ├─ Fleet gRPC server ───────┐
//!  ├─ Control gRPC server ─────┼─> SuperLinkService (actors) ─> LinkState (SQLite, or memory)
//!  ├─ ServerAppIo gRPC server ─┘    └─ ServerApp processes of FAB runs (subprocess)
//!  └─ signal listener: SIGINT/SIGTERM -> service shutdown (runs end finished:stopped,
//!                                        their processes are killed), then the servers drain
//! ```
//!
//! One job a file: `args` (the flags), `config` (settings in layers, checked),
//! `control_access` (who may reach the Control API by default), `state` (where the state
//! is kept, opened) and `serve` (the servers up, and down in one order).

mod args;
mod config;
mod control_access;
mod serve;
mod state;

pub use args::SuperLinkArgs;
pub use config::{NodeAuthConfig, SuperLinkConfig};
pub use control_access::ControlAccess;
pub use serve::serve;
pub use state::Store;
