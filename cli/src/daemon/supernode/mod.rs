//! `flower-supernode`: the client side of a deployment. Connects to a SuperLink's Fleet
//! API, keeps the connection alive with heartbeats (reconnecting with backoff when the
//! SuperLink is away), runs the built-in ClientApps in-process for every run, and the
//! ClientApps of FABs as processes of their own (`--isolation`), which reach it through
//! its ClientAppIo API.
//!
//! ```text
//! flower-supernode
//!  ├─ SuperNode (actors) ── Fleet client ──> SuperLink
//!  │   └─ ClientApp processes of FAB runs (subprocess)
//!  ├─ ClientAppIo gRPC server <── ClientApp processes
//!  └─ signal listener: SIGINT/SIGTERM -> deactivate, kill app processes, drain
//! ```
//!
//! One job a file: `args` (the flags), `config` (settings in layers, checked) and `serve`
//! (the ClientAppIo API and the node, up and down).

mod args;
mod config;
mod serve;

pub use args::SuperNodeArgs;
pub use config::SuperNodeConfig;
pub use serve::{fleet_client, serve};
