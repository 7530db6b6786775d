//! The Fleet, Control and AppIo APIs over QUIC (quinn), always TLS 1.3.
//!
//! ```text
//! tonic client (FleetClient, ...) ── QuicChannel ══ QUIC connection ══ QuicServer ── Routes (same services as gRPC)
//!                                     one bidirectional stream per call
//! ```
//!
//! Every call is one bidirectional stream carrying the same protobuf messages as the gRPC
//! transport, framed as in `proto/floret/v1/quic.proto`; a `Subscribe` is a long-lived
//! stream, and every chunk of a large array moves on a stream of its own, so a model
//! download never delays a heartbeat. The SuperLink serves QUIC on the UDP port with the
//! same number as each API's TCP port. With `--insecure` the server shows a fresh
//! self-signed certificate, which clients accept only when they are `--insecure` too.

mod client;
mod frame;
mod server;

pub(crate) use client::QuicChannel;
pub(crate) use server::{QuicServer, serve};

use std::sync::Arc;
use std::time::Duration;

/// The ALPN protocol id: a QUIC client of something else is refused in the handshake.
pub(crate) const ALPN: &[u8] = b"floret/1";

/// Largest UDP payload MTU discovery tries: loopback's 65536-byte MTU minus IP and UDP
/// headers (IPv6's 48 bytes).
const MAX_UDP_PAYLOAD: u16 = 65_535 - 48;

/// Whether a call at `path` carries a chunk (a 4 MiB PullObject answer or PushObject
/// request): its stream is sent after those of every other call (see [`transport_config`]).
pub(crate) fn carries_chunk(path: &str) -> bool {
    path.ends_with("/PullObject") || path.ends_with("/PushObject")
}

/// The send priority of a stream that carries a chunk: below the default 0 of other calls.
pub(crate) const CHUNK_PRIORITY: i32 = -1;

/// Flow-control windows as for HTTP/2 (see `grpc::options`): a few 4 MiB chunks in flight
/// at memory speed; idle timeout and keep-alive as the gRPC pings.
///
/// Streams of one priority are sent one after another, not round-robin: of four chunks in
/// flight the first then arrives whole after a quarter of the time, and the receiver checks
/// it while the next arrives, where interleaved they all arrived together at the end and
/// the receiver's cores waited, then the link did. A heartbeat is not held up behind them:
/// chunk streams are sent at [`CHUNK_PRIORITY`], below every other call.
pub(crate) fn transport_config(
    (interval, timeout): (Duration, Duration),
) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(quinn::VarInt::from_u32(64 * 1024 * 1024));
    t.send_window(64 * 1024 * 1024);
    t.send_fairness(false);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(256));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    // Probe for packets larger than Ethernet's: on loopback (MTU 64 KiB) and jumbo-frame
    // networks each packet then carries several times the data, and per-packet work
    // (encryption, syscalls) is what limits QUIC's throughput. Where the path is smaller,
    // the probes are lost and the MTU stays where it was.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    t.keep_alive_interval(Some(interval));
    if let Ok(idle) = quinn::IdleTimeout::try_from(interval + timeout) {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Socket buffers asked for (the kernel caps them at `net.core.rmem_max`/`wmem_max`). The
/// default of about 200 KiB overflows within a millisecond at loopback speed; every
/// overflowing datagram is a lost packet that halves the congestion window.
const SOCKET_BUFFER: usize = 8 * 1024 * 1024;

/// The key a server endpoint makes its stateless-reset tokens with: derived from `secret`
/// and the address it serves, so a SuperLink restarted on the same address with the same
/// TLS key makes the tokens it handed out before. Its clients' packets for connections it
/// no longer knows are then answered with a reset they accept, and they reconnect at their
/// next packet; with quinn's default (a random key per start) they would ignore the resets
/// and wait out the idle timeout (keep-alive interval plus timeout, 50 s by default),
/// longer than a node's heartbeat lease.
pub(crate) fn reset_key(
    secret: &[u8; 32],
    addr: std::net::SocketAddr,
) -> Arc<dyn quinn::crypto::HmacKey> {
    let mut material = secret.to_vec();
    material.extend_from_slice(addr.to_string().as_bytes());
    Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &material))
}

/// A UDP socket bound to `addr` with large buffers, as a quinn endpoint (with
/// `server` and its stateless-reset key for the listening side).
pub(crate) fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<(quinn::ServerConfig, Arc<dyn quinn::crypto::HmacKey>)>,
) -> std::io::Result<quinn::Endpoint> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if addr.is_ipv6() {
        // As quinn's own binding: dual-stack unless bound to a specific address.
        let _ = socket.set_only_v6(false);
    }
    // Best effort: a smaller buffer is slower, not wrong.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    let (server, config) = match server {
        Some((server, reset_key)) => (Some(server), quinn::EndpointConfig::new(reset_key)),
        None => (None, quinn::EndpointConfig::default()),
    };
    quinn::Endpoint::new(config, server, socket.into(), runtime)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_chunk_calls_of_both_apis_are_sent_after_the_others() {
        for path in [
            "/floret.v1.Fleet/PullObject",
            "/floret.v1.Fleet/PushObject",
            "/floret.v1.AppIoObjects/PullObject",
            "/floret.v1.AppIoObjects/PushObject",
        ] {
            assert!(super::carries_chunk(path), "{path}");
        }
        for path in [
            "/floret.v1.Fleet/Heartbeat",
            "/floret.v1.Fleet/PullMessages",
            "/floret.v1.Fleet/Subscribe",
            "/floret.v1.Fleet/ConfirmDeliveries",
        ] {
            assert!(!super::carries_chunk(path), "{path}");
        }
    }
}
