//! The server side: accepts QUIC connections and serves each bidirectional stream as one
//! call to the same tonic services the gRPC server runs (`Routes`), so both transports
//! share every line of protocol code.

use super::frame::{self, BodyReader, HEAD};
use super::{ALPN, transport_config};
use crate::grpc::{ServerOptions, TransportKind};
use crate::guard::{ConnInfo, ConnState, Guard, Guarded, Slot, Tracker};
use crate::limits::{Closed, Verdict};
use crate::meter::Metered;
use crate::proto::v1::QuicHead;
use crate::tls::ServerTls;
use crate::transport_error::{Api, TransportError};
use http::Request;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::service::Routes;
use tower::Service as _;

/// A QUIC endpoint serving one API.
pub(crate) struct QuicServer {
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// Binds the UDP socket `addr` and serves `routes` on it until `stop`. Calls in flight when
/// stopped get the shutdown grace of `options` to finish (long-lived streams end through
/// `stop` in the services). `max_data` bounds one request message.
pub(crate) fn serve(
    (api, addr): (Api, SocketAddr),
    tls: &ServerTls,
    options: &ServerOptions,
    max_data: usize,
    (routes, guard): (Routes, Guard),
    stop: watch::Receiver<bool>,
) -> Result<QuicServer, TransportError> {
    let keepalive = (options.keepalive_interval, options.keepalive_timeout);
    let grace = options.shutdown_grace;
    let rustls = tls.rustls(ALPN)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls)
        .map_err(|e| TransportError::Tls(crate::tls::TlsError::Config(e.to_string())))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = transport_config(keepalive);
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(
        guard.tracker.limits().max_concurrent_streams,
    ));
    config.transport_config(Arc::new(transport));
    let reset_key = super::reset_key(&tls.reset_secret(), addr);
    let endpoint = super::endpoint(addr, Some((config, reset_key)))
        .map_err(|source| TransportError::Bind { api, addr, source })?;
    let tracker = guard.tracker.clone();
    let routes = tower::Layer::layer(&guard, Metered::new(routes, api, TransportKind::Quic));
    let task = tokio::spawn(accept(
        endpoint.clone(),
        (routes, tracker),
        max_data,
        stop,
        grace,
    ));
    Ok(QuicServer { endpoint, task })
}

/// The routes of every QUIC call: guarded and metered as over gRPC.
type QuicRoutes = Guarded<Metered<Routes>>;

async fn accept(
    endpoint: quinn::Endpoint,
    (routes, tracker): (QuicRoutes, Arc<Tracker>),
    max_data: usize,
    stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    let stopped = crate::grpc::stopped(stop.clone());
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let peer = incoming.remote_address();
                match tracker.admit(peer) {
                    Ok(slot) => {
                        connections.spawn(connection(
                            (incoming, slot),
                            (routes.clone(), tracker.clone()),
                            max_data,
                            stop.clone(),
                        ));
                    }
                    Err(refused) => {
                        tracker.warn(&refused);
                        incoming.refuse();
                    }
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Refuse new connections; let calls in flight finish, then close what is left.
    endpoint.set_server_config(None);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        connections.abort_all();
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

/// Serves the streams of one connection until it closes, the server stops, or the limits
/// close it: a handshake not done within the handshake timeout, or no call open for the
/// idle timeout.
async fn connection(
    (incoming, _slot): (quinn::Incoming, Slot),
    (routes, tracker): (QuicRoutes, Arc<Tracker>),
    max_data: usize,
    stop: watch::Receiver<bool>,
) {
    let peer = incoming.remote_address();
    let limits = *tracker.limits();
    let connection = match tokio::time::timeout(limits.handshake_timeout, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracker.warn(&format_args!(
                "{peer}: {}",
                Closed::Silent(limits.handshake_timeout)
            ));
            return;
        }
    };
    let info = ConnInfo {
        remote: peer,
        state: ConnState::new(),
        quic: true,
    };
    info.state.received();
    let check = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(check);
    let mut calls = JoinSet::new();
    let stopped = crate::grpc::stopped(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            () = &mut check => {
                match limits.connection_verdict(&info.state.activity(Instant::now())) {
                    Verdict::Keep { recheck_at } => check.as_mut().reset(info.state.at(recheck_at)),
                    Verdict::Close(why) => {
                        tracker.warn(&format_args!("{peer}: {why}"));
                        connection.close(quinn::VarInt::from_u32(0), why.to_string().as_bytes());
                        break;
                    }
                }
            }
            stream = connection.accept_bi() => match stream {
                Ok((send, recv)) => {
                    calls.spawn(call(routes.clone(), info.clone(), (send, recv), max_data));
                }
                Err(_) => break,
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
        }
    }
    // Calls in flight finish (the caller of `accept` bounds this by the grace period).
    while calls.join_next().await.is_some() {}
}

/// One call: HEAD in, request body streamed to the service, response streamed back. The
/// connection's record (`ConnInfo`, with the peer's address the login rate limit reads) goes
/// with the request, as the guarded TCP server's does.
async fn call(
    mut routes: QuicRoutes,
    info: ConnInfo,
    (mut send, mut recv): (quinn::SendStream, quinn::RecvStream),
    max_data: usize,
) {
    let head = match frame::read_head(&mut recv).await {
        Ok(head) => head,
        Err(e) => {
            tracing::debug!(error = %e, "QUIC stream without a valid head");
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return;
        }
    };
    if super::carries_chunk(&head.path) {
        // Only fails on a stream already closed, which the next write reports.
        let _ = send.set_priority(super::CHUNK_PRIORITY);
    }
    let mut request = Request::new(BodyReader::new(recv, max_data).into_body());
    *request.method_mut() = http::Method::POST;
    *request.version_mut() = http::Version::HTTP_2;
    request.extensions_mut().insert(info);
    match (
        head.path.parse::<http::Uri>(),
        frame::headers_from_wire(head.headers),
    ) {
        (Ok(uri), Ok(headers)) => {
            *request.uri_mut() = uri;
            *request.headers_mut() = headers;
        }
        _ => {
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return;
        }
    }
    let Ok(response) = routes.call(request).await;
    let (parts, body) = response.into_parts();
    let head = QuicHead {
        path: String::new(),
        status: u32::from(parts.status.as_u16()),
        headers: frame::headers_to_wire(&parts.headers),
    };
    if frame::write_head(&mut send, HEAD, &head).await.is_err() {
        return;
    }
    if frame::write_body(&mut send, body).await.is_err() {
        let _ = send.reset(quinn::VarInt::from_u32(2));
    }
}
