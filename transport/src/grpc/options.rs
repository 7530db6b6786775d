//! How gRPC clients and servers are built: every socket, HTTP/2 and size setting lives
//! here, so that TLS (a later issue) is added in one place.

use crate::objects::{ChunkPolicy, MAX_CHUNK_LEN};
use crate::transport_error::TransportError;
use std::time::Duration;
use tonic::transport::{Endpoint, Server};

/// Largest gRPC message either side accepts: a chunk, the inline arrays of a batch and the
/// rest of the messages, with room to spare.
pub const MAX_MESSAGE_LEN: usize = 64 * 1024 * 1024;

/// Largest FAB (app bundle) that StartRun and GetFab carry: 512 MiB, Flower's gRPC message
/// limit. A FAB travels whole in one message rather than in chunks: it is sent once per
/// run and fetched once per node, then cached by hash. Only the messages that may carry
/// one are allowed this size (Control requests, Fleet responses); what SuperNodes send
/// stays within [`MAX_MESSAGE_LEN`].
pub const MAX_FAB_LEN: usize = 512 * 1024 * 1024;

/// A FAB plus the rest of its message.
pub(crate) const MAX_FAB_MESSAGE_LEN: usize = MAX_FAB_LEN + 1024 * 1024;

/// HTTP/2 flow-control windows: big enough that a few 4 MiB chunks stream at memory
/// speed on a fast link instead of waiting for window updates.
const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 32 * 1024 * 1024;
const MAX_FRAME: u32 = 1024 * 1024;

/// Settings of a gRPC server (SuperLink side).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// When to send HTTP/2 pings on an idle connection, and how long to wait for the
    /// answer before closing it: finds SuperNodes that vanished without closing their
    /// streams. Defaults 30 s and 20 s.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// How messages sent to nodes are split into chunks.
    pub chunking: ChunkPolicy,
    /// How long chunks are kept for a node that makes no progress fetching them, or for
    /// uploads no `PushMessages` has used. Default 5 minutes.
    pub lease: Duration,
    /// How long [`Server::shutdown`](super::Server::shutdown) waits for calls in flight.
    /// Default 5 s.
    pub shutdown_grace: Duration,
    /// Fleet API only: when set, every call must be signed by a SuperNode key the
    /// authority admits (node authentication). Default off.
    pub node_auth: Option<super::NodeAuth>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            chunking: ChunkPolicy::default(),
            lease: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
            node_auth: None,
        }
    }
}

/// Settings of a gRPC client (SuperNode or `flwr` side).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time allowed to open a connection. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for one unary call (one chunk, one push). Default 60 s.
    pub request_timeout: Duration,
    /// HTTP/2 pings, also while idle, so that a dead SuperLink ends a `Subscribe` stream.
    /// Defaults 30 s and 20 s.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Chunks fetched or uploaded at once. Default 4.
    pub transfer_concurrency: usize,
    /// How long a chunk transfer keeps retrying while the SuperLink is unreachable: a
    /// transfer interrupted by a reconnect within this time resumes where it stopped.
    /// Default 60 s.
    pub transfer_patience: Duration,
    /// How replies sent to the SuperLink are split into chunks.
    pub chunking: ChunkPolicy,
    /// How long chunks of an abandoned transfer are kept for a retry. Default 10 minutes.
    pub cache_ttl: Duration,
    /// AppIo clients only: how long a call keeps trying while nothing listens at the address
    /// yet (connection refused), since an app process may start a moment before its daemon.
    /// Default 30 s.
    pub connect_patience: Duration,
    /// Fleet clients only: the SuperNode's key, with which every call is signed (node
    /// authentication). Default none.
    pub node_key: Option<crate::auth::NodeKeyPair>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            transfer_concurrency: 4,
            transfer_patience: Duration::from_secs(60),
            chunking: ChunkPolicy::default(),
            cache_ttl: Duration::from_secs(600),
            connect_patience: Duration::from_secs(30),
            node_key: None,
        }
    }
}

impl ClientOptions {
    pub(crate) fn concurrency(&self) -> usize {
        self.transfer_concurrency.max(1)
    }
}

/// Checks a `HOST:PORT` address and returns the `http://` URI tonic wants.
pub(crate) fn parse_address(address: &str) -> Result<String, TransportError> {
    let invalid = |problem: &str| TransportError::InvalidAddress {
        address: address.to_string(),
        problem: format!("{problem}; expected HOST:PORT, e.g. 127.0.0.1:9092"),
    };
    if address.contains("://") {
        return Err(invalid("a scheme is not allowed"));
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(|| invalid("no port"))?;
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    if host.contains(|c: char| c.is_whitespace() || "/?#@".contains(c))
        || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']')))
    {
        return Err(invalid(
            "the host is not a name or an IP address (IPv6 goes in [brackets])",
        ));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(invalid("the port is not a number from 1 to 65535")),
        Ok(_) => Ok(format!("http://{address}")),
    }
}

/// The client side: a connection recipe for `address` (nothing is opened yet).
pub(crate) fn endpoint(address: &str, o: &ClientOptions) -> Result<Endpoint, TransportError> {
    let uri = parse_address(address)?;
    let endpoint = Endpoint::from_shared(uri).map_err(|e| TransportError::InvalidAddress {
        address: address.to_string(),
        problem: e.to_string(),
    })?;
    Ok(endpoint
        .connect_timeout(o.connect_timeout)
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(o.keepalive_interval)
        .keep_alive_timeout(o.keepalive_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME))
}

/// The server side, before services are added.
pub(crate) fn server_builder(o: &ServerOptions) -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(o.keepalive_interval))
        .http2_keepalive_timeout(Some(o.keepalive_timeout))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
}

/// Chunks must fit in a message with their request fields.
const _: () = assert!(MAX_CHUNK_LEN + 64 * 1024 <= MAX_MESSAGE_LEN);

#[cfg(test)]
mod tests {
    use super::parse_address;

    #[test]
    fn addresses_are_host_and_port() {
        assert_eq!(
            parse_address("127.0.0.1:9092").unwrap(),
            "http://127.0.0.1:9092"
        );
        assert_eq!(
            parse_address("superlink:9092").unwrap(),
            "http://superlink:9092"
        );
        assert_eq!(parse_address("[::1]:9092").unwrap(), "http://[::1]:9092");
        for bad in [
            "localhost",
            ":9092",
            "host:0",
            "host:http",
            "http://h:1",
            "::1:9092",
            "a b:1",
        ] {
            let err = parse_address(bad).unwrap_err().to_string();
            assert!(err.contains("expected HOST:PORT"), "{bad}: {err}");
        }
    }
}
