//! floret-actors: the supervised actors of a federation and the state they share.
//!
//! ```text
//! SuperLinkService (server process: `service`)
//!  ├─ SuperLink (root supervisor of the server side)
//!  │   └─ Run (one per run: pending -> starting -> running -> finished:{completed,failed,stopped})
//!  │       └─ ServerAppHost (the App actor hosting the run's ServerApp)
//!  │           └─ app process of a FAB run, over `LinkAppIo` (see `link_fabs`)
//!  ├─ liveness sweeper (heartbeat leases, message TTLs)
//!  ├─ LinkFleet (Fleet API; one delivery task per subscribed node)
//!  └─ LinkControl (Control API)
//!
//! SuperNode (client process: `supernode`)
//!  ├─ link session (heartbeats, instruction stream), replaced on reconnect
//!  └─ ClientAppHost (one per run)
//!      └─ app process of a FAB run, over `NodeAppIo` (see `supernode::fab_client`)
//! ```
//! The data path (instructions and replies) goes through `LinkState`; the actors own
//! lifecycle and supervision. Each actor's module documents its supervision policy.
//! Decisions with time in them (heartbeat liveness, reconnect backoff) are pure modules
//! (`heartbeat`, `backoff`) fed by tokio's clock (`clock`), so tests run them on paused,
//! virtual time. ClientApp handlers run through `client_exec::execute`, which turns
//! failures and panics into error replies. This crate depends on floret-core only: no
//! transport, no strategies. A SuperNode talks to any `Fleet`: `LinkFleet` itself
//! in-process, or a transport's client. Apps that come as FABs run as processes of their
//! own (`isolation`, `app_process`, `fab_cache`); the daemons serve them the AppIo
//! protocols (`LinkAppIo`, `NodeAppIo`), which a transport puts on the wire.

pub mod app_process;
pub mod backoff;
pub mod client_exec;
pub mod clock;
mod delivery;
pub mod fab_cache;
pub mod grid;
pub mod heartbeat;
pub mod isolation;
pub mod link_appio;
pub mod link_control;
pub mod link_fabs;
pub mod link_fleet;
pub mod meter;
pub mod run;
pub mod server_app_host;
pub mod service;
pub mod state;
pub mod superlink;
pub mod supernode;
mod sweeper;
pub mod user_auth;

pub use app_process::{AppProcess, AppProcesses};
pub use backoff::Backoff;
pub use fab_cache::FabCache;
pub use floret_core::{RunStatus, SubStatus};
pub use grid::LinkGrid;
pub use heartbeat::HeartbeatPolicy;
pub use isolation::{AppLauncher, Isolation};
pub use link_appio::LinkAppIo;
pub use link_control::LinkControl;
pub use link_fabs::LinkFabs;
pub use link_fleet::LinkFleet;
pub use service::{ServiceError, SuperLinkService};
pub use state::{
    LinkState, MemoryLinkState, NewRun, NodeLease, OpenError, RunInfo, SqliteLinkState, StateError,
    Sweep,
};
pub use superlink::{RunControlError, SuperLink, SuperLinkMsg};
pub use supernode::{NodeAppIo, NodeFabs, SuperNode, SuperNodeConfig, SuperNodeError};
