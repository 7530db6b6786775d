//! `TransportError`: why a server could not start or a client could not be made.
//!
//! Errors of individual calls are the protocols' own (`FleetError`, `ControlError`); this
//! type is for setting up, where a daemon or the CLI stops with a message for the user.

use std::io;
use std::net::SocketAddr;
use thiserror::Error;

/// Which service a listener was for: names the flag that moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// SuperNodes connect here (`--fleet-api-address`, default port 9092).
    Fleet,
    /// The `flwr` CLI connects here (`--control-api-address`, default port 9093).
    Control,
    /// Process-isolated ServerApps connect here (`flower-superlink
    /// --serverappio-api-address`, default port 9091).
    ServerAppIo,
    /// Process-isolated ClientApps connect here (`flower-supernode
    /// --clientappio-api-address`, default port 9094).
    ClientAppIo,
}

impl Api {
    /// The command-line flag of the daemon (`flower-superlink`, or `flower-supernode` for
    /// ClientAppIo) that sets this API's address.
    pub fn flag(self) -> &'static str {
        match self {
            Api::Fleet => "--fleet-api-address",
            Api::Control => "--control-api-address",
            Api::ServerAppIo => "--serverappio-api-address",
            Api::ClientAppIo => "--clientappio-api-address",
        }
    }

    /// What the API is called in messages to the user.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Api::Fleet => "the SuperLink's Fleet API",
            Api::Control => "the SuperLink's Control API",
            Api::ServerAppIo => "the SuperLink's ServerAppIo API",
            Api::ClientAppIo => "the SuperNode's ClientAppIo API",
        }
    }
}

/// Why a listener or a client connection could not be set up; each message says what to
/// change (usually which flag).
#[derive(Debug, Error)]
pub enum TransportError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {}", bind_advice(*.api, .source))]
    Bind {
        /// The service the socket was for: picks the flag the message suggests.
        api: Api,
        /// The address that was asked for.
        addr: SocketAddr,
        /// The operating system's reason (address in use, permission denied, ...).
        #[source]
        source: io::Error,
    },
    /// An address that is not `HOST:PORT`.
    #[error("invalid address {address:?}: {problem}")]
    InvalidAddress {
        /// The address as it was given.
        address: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The peer could not be reached (connection refused, timed out, name not resolved).
    #[error("cannot reach the SuperLink at {address}: {reason}")]
    Connect {
        /// The address dialled, as it was given.
        address: String,
        /// The underlying error, worded for a user.
        reason: String,
    },
    /// Certificates or keys that cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Asked for what this build of the crate leaves out (QUIC in an app binary); the
    /// message names the missing Cargo feature.
    #[error("{0}")]
    NotBuilt(String),
}

fn bind_advice(api: Api, e: &io::Error) -> String {
    let flag = api.flag();
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            format!("address in use — stop the other process or pass {flag}")
        }
        io::ErrorKind::AddrNotAvailable => {
            format!("address not available — pass {flag} with an address of this machine")
        }
        io::ErrorKind::PermissionDenied => {
            format!("permission denied — ports below 1024 need privileges; pass {flag}")
        }
        _ => e.to_string(),
    }
}

/// A readable reason for an I/O failure: "connection refused" rather than
/// "Connection refused (os error 111)".
pub(crate) fn io_reason(e: &io::Error) -> String {
    use io::ErrorKind::*;
    match e.kind() {
        kind @ (ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected
        | AddrInUse | AddrNotAvailable | TimedOut | BrokenPipe | HostUnreachable
        | NetworkUnreachable | PermissionDenied | UnexpectedEof) => kind.to_string(),
        _ => e.to_string(),
    }
}
