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

use std::time::Duration;

/// The ALPN protocol id: a QUIC client of something else is refused in the handshake.
pub(crate) const ALPN: &[u8] = b"floret/1";

/// Flow-control windows as for HTTP/2 (see `grpc::options`): a few 4 MiB chunks in flight
/// at memory speed; idle timeout and keep-alive as the gRPC pings.
pub(crate) fn transport_config(
    (interval, timeout): (Duration, Duration),
) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(quinn::VarInt::from_u32(64 * 1024 * 1024));
    t.send_window(64 * 1024 * 1024);
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(256));
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    t.keep_alive_interval(Some(interval));
    if let Ok(idle) = quinn::IdleTimeout::try_from(interval + timeout) {
        t.max_idle_timeout(Some(idle));
    }
    t
}
