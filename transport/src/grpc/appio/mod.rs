//! The AppIo APIs over gRPC: how a process-isolated app reaches its daemon.
//!
//! ```text
//! SuperLink process                              ServerApp process
//!  bind_serverappio(addr, Arc<dyn ServerAppIo>)    serverappio_client("127.0.0.1:9091")
//!   ├ ServerAppIoService                             ── ServerAppIoClient: ServerAppIo
//!   └ ObjectsService ── ObjectStore (chunks)         └ RemoteGrid: Grid (for ServerApp::main)
//! SuperNode process                              ClientApp process
//!  bind_clientappio(addr, Arc<dyn ClientAppIo>)    clientappio_client("127.0.0.1:9094")
//!   ├ ClientAppIoService                             ── ClientAppIoClient: ClientAppIo
//!   └ ObjectsService ── ObjectStore (chunks)
//! ```
//!
//! - Every call carries the run's token as a request field; the daemon's implementation
//!   checks it, and `AppIoError::BadToken` crosses the wire as UNAUTHENTICATED.
//! - Large arrays travel as chunks both ways, as on the Fleet API, rather than in raised
//!   message limits: a ServerApp sends one model to every node in a single `Send`, which
//!   inline would be (nodes x model) bytes in one message; chunked, it is hashed once,
//!   moved once, and arrives as one shared buffer. A context's state is chunked the same
//!   way (`AppContext`), since a ClientApp may keep arrays in it.
//! - Clients connect lazily and wait for a daemon that is not listening yet
//!   (`ClientOptions::connect_patience`); `Receive` and `NextTask` are long polls whose
//!   deadline is their timeout plus the request timeout (the server caps it at a day), and
//!   which end when the server shuts down. The daemon's `receive` and `next_task` must be cancel-safe: a caller that
//!   goes away cancels them.

#[cfg(feature = "server")]
mod clientappio;
mod clientappio_client;
mod link;
#[cfg(feature = "server")]
mod objects;
#[cfg(feature = "server")]
mod serverappio;
mod serverappio_client;
#[cfg(feature = "server")]
mod serving;
mod wire;

#[cfg(feature = "server")]
pub(crate) use clientappio::ClientAppIoService;
pub use clientappio_client::{ClientAppIoClient, clientappio_client, clientappio_client_with};
#[cfg(feature = "server")]
pub(crate) use objects::ObjectsService;
#[cfg(feature = "server")]
pub(crate) use serverappio::ServerAppIoService;
pub use serverappio_client::{ServerAppIoClient, serverappio_client, serverappio_client_with};
