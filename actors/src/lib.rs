//! floret-actors: the supervised actors of a federation and the state they share.
//!
//! The crate is five rooms, each documented in its own module:
//!
//! - `superlink`: the server side. The SuperLink root supervisor, one Run actor per run,
//!   the ServerApp host and its `Grid`, delivery of instructions to subscribed nodes, the
//!   liveness sweeper, and the faces the transports put on the wire (Fleet, Control,
//!   ServerAppIo, FAB fetches).
//! - `supernode`: the client side. Link sessions (heartbeats, instruction stream,
//!   reconnects), one ClientApp host per run, the ClientAppIo face.
//! - `apps`: running apps, in-process or as processes of their own (isolation, app
//!   processes, FAB cache). Both sides use it.
//! - `policy`: pure decisions with time in them (heartbeat liveness, backoff), and the one
//!   clock, tokio's, so tests run them on paused virtual time.
//! - `state`: the `LinkState` stores (memory and SQLite) and, once, the message rules
//!   both obey.
//!
//! Beside them, `user_auth` (accounts, sessions and tokens for the Control API) and
//! `meter` (the Prometheus metric names both daemons record).
//!
//! The data path (instructions and replies) goes through `LinkState`; the actors own
//! lifecycle and supervision. Each actor's module documents its supervision policy. This
//! crate depends on floret-core only: no transport, no strategies. A SuperNode talks to any
//! `Fleet`: `LinkFleet` itself in-process, or a transport's client.

pub mod apps;
pub mod meter;
pub mod policy;
pub mod state;
pub mod superlink;
pub mod supernode;
#[cfg(feature = "user-auth")]
pub mod user_auth;

pub use apps::app_process::{AppProcess, AppProcesses};
pub use apps::fab_cache::FabCache;
pub use apps::isolation::{AppLauncher, Isolation};
pub use floret_core::{RunStatus, SubStatus};
pub use policy::backoff::Backoff;
pub use policy::heartbeat::HeartbeatPolicy;
pub use state::{LinkState, MemoryLinkState, NewRun, NodeLease, RunInfo, StateError, Sweep};
#[cfg(feature = "sqlite")]
pub use state::{OpenError, SqliteLinkState};
pub use superlink::appio::LinkAppIo;
pub use superlink::control::LinkControl;
pub use superlink::fabs::LinkFabs;
pub use superlink::fleet::LinkFleet;
pub use superlink::grid::LinkGrid;
pub use superlink::limits::RunLimits;
pub use superlink::service::{ServiceError, SuperLinkService};
pub use superlink::virtual_fleet::{RunFleet, VirtualFleets};
pub use superlink::{RunControlError, SuperLink, SuperLinkMsg};
pub use supernode::{NodeAppIo, NodeFabs, SuperNode, SuperNodeConfig, SuperNodeError};
