//! The client side: [`QuicChannel`] is a tower service of HTTP requests, like tonic's
//! `Channel`, so tonic's generated clients run over QUIC unchanged. Each call opens its own
//! bidirectional stream on one shared connection, so a large chunk transfer never holds up
//! a heartbeat (no head-of-line blocking between calls, unlike HTTP/2 over one TCP stream).

use super::frame::{self, BodyReader, BoxError, FrameError, HEAD};
use super::{ALPN, transport_config};
use crate::proto::v1::QuicHead;
use crate::tls::{ClientTls, insecure_rustls};
use crate::transport_error::TransportError;
use http::{Request, Response};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Mutex;

/// A lazily (re)connected QUIC connection to one server, shared by clones.
#[derive(Clone)]
pub(crate) struct QuicChannel {
    shared: Arc<Shared>,
}

struct Shared {
    /// `HOST:PORT` as given.
    address: String,
    /// The name the server's certificate must carry: the host part of the address.
    server_name: String,
    config: quinn::ClientConfig,
    connect_timeout: Duration,
    /// Largest DATA frame accepted from the server.
    max_data: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    endpoint: Option<quinn::Endpoint>,
    connection: Option<quinn::Connection>,
}

/// Why a QUIC call could not be made: becomes a transport failure ("cannot reach the
/// SuperLink at ...: <this>") in the clients.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QuicCallError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("no QUIC answer within {0:?} (is the SuperLink serving QUIC on this UDP port?)")]
    Timeout(Duration),
    #[error("{0}")]
    Connect(String),
    #[error("QUIC connection lost: {0}")]
    Lost(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("cannot open a UDP socket: {0}")]
    Socket(std::io::Error),
}

impl QuicChannel {
    /// A channel to `address` (`HOST:PORT`, already checked): TLS with `tls`'s roots, or,
    /// when `tls` is `None` (`--insecure`), trusting any certificate.
    pub(crate) fn new(
        address: &str,
        tls: Option<&ClientTls>,
        connect_timeout: Duration,
        keepalive: (Duration, Duration),
        max_data: usize,
    ) -> Result<QuicChannel, TransportError> {
        let rustls = match tls {
            Some(tls) => tls.rustls(ALPN)?,
            None => insecure_rustls(ALPN)?,
        };
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls)
            .map_err(|e| TransportError::Tls(crate::tls::TlsError::Config(e.to_string())))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(Arc::new(transport_config(keepalive)));
        let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
        let server_name = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(QuicChannel {
            shared: Arc::new(Shared {
                address: address.to_string(),
                server_name,
                config,
                connect_timeout,
                max_data,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The open connection, or a new one.
    pub(crate) async fn connection(&self) -> Result<quinn::Connection, QuicCallError> {
        let s = &self.shared;
        let mut state = s.state.lock().await;
        if let Some(c) = &state.connection
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        let addr = resolve(&s.address).await?;
        let endpoint = match &state.endpoint {
            Some(e) if same_family(e, addr) => e.clone(),
            _ => {
                let e = client_endpoint(addr).map_err(QuicCallError::Socket)?;
                state.endpoint = Some(e.clone());
                e
            }
        };
        let connecting = endpoint
            .connect_with(s.config.clone(), addr, &s.server_name)
            .map_err(|e| QuicCallError::Connect(e.to_string()))?;
        let connection = match tokio::time::timeout(s.connect_timeout, connecting).await {
            Err(_) => return Err(QuicCallError::Timeout(s.connect_timeout)),
            Ok(Err(e)) => return Err(QuicCallError::Connect(connect_reason(&e))),
            Ok(Ok(c)) => c,
        };
        state.connection = Some(connection.clone());
        Ok(connection)
    }

    async fn call(
        self,
        request: Request<tonic::body::Body>,
    ) -> Result<Response<tonic::body::Body>, BoxError> {
        let connection = self.connection().await?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(QuicCallError::Lost)?;
        let (parts, body) = request.into_parts();
        if super::carries_chunk(parts.uri.path()) {
            // Only fails on a stream already closed, which the next write reports.
            let _ = send.set_priority(super::CHUNK_PRIORITY);
        }
        let head = QuicHead {
            path: parts.uri.path().to_string(),
            status: 0,
            headers: frame::headers_to_wire(&parts.headers),
        };
        frame::write_head(&mut send, HEAD, &head)
            .await
            .map_err(QuicCallError::from)?;
        // The request body goes out while the response comes in (streams both ways).
        tokio::spawn(async move {
            if frame::write_body(&mut send, body).await.is_err() {
                let _ = send.reset(quinn::VarInt::from_u32(0));
            }
        });
        let head = frame::read_head(&mut recv)
            .await
            .map_err(QuicCallError::from)?;
        let mut response = Response::new(BodyReader::new(recv, self.shared.max_data).into_body());
        *response.status_mut() = http::StatusCode::from_u16(head.status as u16).map_err(|_| {
            QuicCallError::Frame(FrameError::BadHead(format!("status {}", head.status)))
        })?;
        *response.headers_mut() =
            frame::headers_from_wire(head.headers).map_err(QuicCallError::from)?;
        Ok(response)
    }
}

impl tower::Service<Request<tonic::body::Body>> for QuicChannel {
    type Response = Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Streams are opened per call; QUIC's stream limit applies back-pressure there.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.clone().call(request))
    }
}

async fn resolve(address: &str) -> Result<SocketAddr, QuicCallError> {
    tokio::net::lookup_host(address)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| QuicCallError::Resolve(address.to_string()))
}

fn same_family(endpoint: &quinn::Endpoint, addr: SocketAddr) -> bool {
    endpoint.local_addr().is_ok_and(|local| {
        local.is_ipv4() == addr.is_ipv4() && local.ip().is_loopback() == addr.ip().is_loopback()
    })
}

/// A client socket: on loopback for a loopback server (nothing then listens beyond this
/// machine), else on the unspecified address of the server's family.
fn client_endpoint(server: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let ip: std::net::IpAddr = match (server.ip().is_loopback(), server.is_ipv4()) {
        (true, true) => std::net::Ipv4Addr::LOCALHOST.into(),
        (true, false) => std::net::Ipv6Addr::LOCALHOST.into(),
        (false, true) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        (false, false) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    super::endpoint(SocketAddr::new(ip, 0), None)
}

/// "the server's certificate is not trusted" rather than quinn's error codes.
fn connect_reason(e: &quinn::ConnectionError) -> String {
    let text = e.to_string();
    crate::grpc::explain_tls(&text).unwrap_or(text)
}
