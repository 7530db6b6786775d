//! The Fleet, Control and AppIo APIs over gRPC (tonic, HTTP/2).
//!
//! ```text
//! SuperLink process                          SuperNode process / flwr CLI
//!  bind_fleet(addr, Arc<dyn Fleet>) ── Server    fleet_client("host:9092") ── FleetClient: Fleet
//!   └ FleetService ── ObjectStore (chunks)         └ ChunkCache (fetched chunks)
//!  bind_control(addr, Arc<dyn Control>) ── Server control_client("host:9093") ── ControlClient: Control
//!  bind_serverappio / bind_clientappio            serverappio_client / clientappio_client
//!   (SuperLink / SuperNode, see `appio`)           (app processes; RemoteGrid for a ServerApp)
//! ```
//!
//! - Both sides speak core types only; the wire types (`proto/floret/v1/*.proto`) stay
//!   private.
//! - `Subscribe` pushes each message to a connected SuperNode as soon as the `Fleet`
//!   implementation queues it. The client hands messages over on an `mpsc` channel once
//!   their chunked arrays are assembled; the channel closes when the stream ends (link lost,
//!   SuperLink shut down): subscribe again.
//! - Large arrays travel as chunks (see `objects`): fetched four at a time, checked against
//!   their sha256 ids, resumed after a reconnect. A FAB travels whole, in StartRun and
//!   GetFab, whose size limits are raised for it ([`MAX_FAB_LEN`]).
//! - Errors: an unknown node or run keeps its meaning across the wire
//!   (`FleetError::UnknownNode` makes a SuperNode register again), as does a bad AppIo
//!   token; bad requests come back as `Invalid` naming the field; anything that prevents
//!   talking is `Unavailable`, naming the address and the cause.
//! - Every client and server is built in `options`: transport (this module's HTTP/2, or
//!   the same services over QUIC, see `crate::quic`) and TLS are chosen there.

mod appio;
pub(crate) mod codec;
mod control_client;
#[cfg(feature = "server")]
mod control_service;
mod fleet_client;
#[cfg(feature = "server")]
mod fleet_service;
#[cfg(feature = "server")]
mod inbox;
mod node_auth;
mod options;
mod remote_grid;
#[cfg(feature = "server")]
mod server;
mod status;

pub use appio::{
    ClientAppIoClient, ServerAppIoClient, clientappio_client, clientappio_client_with,
    serverappio_client, serverappio_client_with,
};
pub use control_client::{ControlClient, control_client, control_client_with};
pub use fleet_client::{FleetClient, fleet_client, fleet_client_with};
#[cfg(feature = "server")]
pub use node_auth::NodeAuth;
pub use options::{ClientOptions, ClientSecurity, MAX_FAB_LEN, MAX_MESSAGE_LEN, TransportKind};
#[cfg(feature = "server")]
pub use options::{ServerOptions, ServerSecurity};
pub use remote_grid::RemoteGrid;
#[cfg(feature = "quic")]
pub(crate) use server::stopped;
#[cfg(feature = "server")]
pub use server::{
    Server, bind_clientappio, bind_clientappio_with, bind_control, bind_control_with,
    bind_control_with_users, bind_fleet, bind_fleet_with, bind_serverappio, bind_serverappio_with,
};
#[cfg(feature = "quic")]
pub(crate) use status::explain_tls;

#[cfg(test)]
mod tests;
