//! How clients and servers are built: the transport (gRPC or QUIC), TLS, and every socket,
//! HTTP/2 and size setting live here, so each API's client and server is written once.

use crate::link::Link;
use crate::objects::{ChunkPolicy, MAX_CHUNK_LEN};
#[cfg(feature = "quic")]
use crate::quic::QuicChannel;
use crate::tls::ClientTls;
#[cfg(feature = "server")]
use crate::tls::ServerTls;
use crate::transport_error::{Api, TransportError};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use tonic::transport::Endpoint;
#[cfg(feature = "server")]
use tonic::transport::Server;

/// Which transport a client uses. A SuperLink serves both at once (TCP and UDP ports of the
/// same number); a SuperNode picks with `--transport`, a federation with `transport = ...`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransportKind {
    /// HTTP/2 over TCP (tonic): plaintext with `--insecure`, else TLS.
    #[default]
    Grpc,
    /// QUIC over UDP (quinn): always TLS 1.3.
    Quic,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Grpc => "grpc",
            TransportKind::Quic => "quic",
        })
    }
}

impl FromStr for TransportKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "grpc" => Ok(TransportKind::Grpc),
            "quic" => Ok(TransportKind::Quic),
            other => Err(format!(
                "unknown transport {other:?}: use \"grpc\" or \"quic\""
            )),
        }
    }
}

/// How a client secures its connection.
#[derive(Debug, Clone, Default)]
pub enum ClientSecurity {
    /// `--insecure`: plaintext gRPC; over QUIC, TLS that accepts any server certificate.
    #[default]
    Insecure,
    /// TLS, trusting the given root certificates.
    Tls(ClientTls),
}

/// How a server secures its connections.
#[cfg(feature = "server")]
#[derive(Debug, Clone, Default)]
pub enum ServerSecurity {
    /// `--insecure`: plaintext gRPC; QUIC shows an ephemeral self-signed certificate.
    #[default]
    Insecure,
    /// TLS with this certificate (and, for mutual TLS, a client CA).
    Tls(ServerTls),
}

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
#[cfg(feature = "server")]
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// When to send HTTP/2 pings on an idle connection: finds SuperNodes that vanished
    /// without closing their streams. Default 30 s.
    pub keepalive_interval: Duration,
    /// How long to wait for a ping's answer before closing the connection. Default 20 s.
    pub keepalive_timeout: Duration,
    /// How messages sent to nodes are split into chunks.
    pub chunking: ChunkPolicy,
    /// How long chunks are kept for a node that makes no progress fetching them, or for
    /// uploads no `PushMessages` has used. Default 5 minutes.
    pub lease: Duration,
    /// How long [`Server::shutdown`](super::Server::shutdown) waits for calls in flight.
    /// Default 5 s.
    pub shutdown_grace: Duration,
    /// TLS or plaintext. Default plaintext.
    pub security: ServerSecurity,
    /// Also serve QUIC on the UDP port of the same number. Default off.
    pub quic: bool,
    /// Fleet API only: when set, every call must be signed by a SuperNode key the
    /// authority admits (node authentication). Default off.
    pub node_auth: Option<super::NodeAuth>,
    /// Connections, streams, request sizes and uploads: what peers may hold of the server.
    pub limits: crate::limits::ServerLimits,
}

#[cfg(feature = "server")]
impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(20),
            chunking: ChunkPolicy::default(),
            lease: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
            security: ServerSecurity::Insecure,
            quic: false,
            node_auth: None,
            limits: crate::limits::ServerLimits::default(),
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
    /// When to send HTTP/2 pings, also while idle, so that a dead SuperLink ends a
    /// `Subscribe` stream. Default 30 s.
    pub keepalive_interval: Duration,
    /// How long to wait for a ping's answer before giving the connection up. Default 20 s.
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
    /// gRPC or QUIC. Default gRPC.
    pub transport: TransportKind,
    /// TLS or `--insecure`. Default insecure.
    pub security: ClientSecurity,
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
            transport: TransportKind::Grpc,
            security: ClientSecurity::Insecure,
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

/// A client's connection to `address` over the transport and security of `o`; nothing is
/// opened before the first call. `max_response` bounds one message from the server; `api`
/// labels the link's metrics.
// Without QUIC, the size bound only QUIC frames need is not read.
#[cfg_attr(not(feature = "quic"), allow(unused_variables))]
pub(crate) fn link(
    api: Api,
    address: &str,
    o: &ClientOptions,
    max_response: usize,
) -> Result<Link, TransportError> {
    Ok(match o.transport {
        TransportKind::Grpc => Link::grpc(api, endpoint(address, o)?.connect_lazy()),
        #[cfg(feature = "quic")]
        TransportKind::Quic => Link::quic(api, quic_channel(address, o, max_response)?),
        #[cfg(not(feature = "quic"))]
        TransportKind::Quic => return Err(no_quic()),
    })
}

/// [`link`], connected now: a wrong address, a dead server or a TLS mismatch fails here.
// Without QUIC, the size bound only QUIC frames need is not read.
#[cfg_attr(not(feature = "quic"), allow(unused_variables))]
pub(crate) async fn connected_link(
    api: Api,
    address: &str,
    o: &ClientOptions,
    max_response: usize,
) -> Result<Link, TransportError> {
    let connect_error = |reason: String| TransportError::Connect {
        address: address.to_string(),
        reason,
    };
    Ok(match o.transport {
        TransportKind::Grpc => Link::grpc(
            api,
            endpoint(address, o)?
                .connect()
                .await
                .map_err(|e| connect_error(super::status::error_reason(&e, o.connect_timeout)))?,
        ),
        #[cfg(not(feature = "quic"))]
        TransportKind::Quic => return Err(no_quic()),
        #[cfg(feature = "quic")]
        TransportKind::Quic => {
            let channel = quic_channel(address, o, max_response)?;
            channel
                .connection()
                .await
                .map_err(|e| connect_error(e.to_string()))?;
            Link::quic(api, channel)
        }
    })
}

/// The error for QUIC asked of a build without it.
#[cfg(not(feature = "quic"))]
pub(crate) fn no_quic() -> TransportError {
    TransportError::NotBuilt(crate::not_built("QUIC transport", "quic"))
}

#[cfg(feature = "quic")]
fn quic_channel(
    address: &str,
    o: &ClientOptions,
    max_response: usize,
) -> Result<QuicChannel, TransportError> {
    parse_address(address)?;
    let tls = match &o.security {
        ClientSecurity::Insecure => None,
        ClientSecurity::Tls(tls) => Some(tls),
    };
    // A DATA frame holds one gRPC-framed message (5 bytes of prefix).
    QuicChannel::new(
        address,
        tls,
        o.connect_timeout,
        (o.keepalive_interval, o.keepalive_timeout),
        max_response + 5,
    )
}

/// The client side of gRPC: a connection recipe for `address` (nothing is opened yet).
pub(crate) fn endpoint(address: &str, o: &ClientOptions) -> Result<Endpoint, TransportError> {
    let mut uri = parse_address(address)?;
    if matches!(o.security, ClientSecurity::Tls(_)) {
        uri = uri.replacen("http://", "https://", 1);
    }
    let mut endpoint = Endpoint::from_shared(uri).map_err(|e| TransportError::InvalidAddress {
        address: address.to_string(),
        problem: e.to_string(),
    })?;
    if let ClientSecurity::Tls(tls) = &o.security {
        endpoint = endpoint
            .tls_config(tls.tonic())
            .map_err(|e| TransportError::Tls(crate::tls::TlsError::Config(e.to_string())))?;
    }
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
#[cfg(feature = "server")]
pub(crate) fn server_builder(o: &ServerOptions) -> Result<Server, TransportError> {
    let builder = Server::builder()
        .max_concurrent_streams(o.limits.max_concurrent_streams)
        .http2_keepalive_interval(Some(o.keepalive_interval))
        .http2_keepalive_timeout(Some(o.keepalive_timeout))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME);
    match &o.security {
        ServerSecurity::Insecure => Ok(builder),
        ServerSecurity::Tls(tls) => builder
            .tls_config(tls.tonic())
            .map_err(|e| TransportError::Tls(crate::tls::TlsError::Config(e.to_string()))),
    }
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
