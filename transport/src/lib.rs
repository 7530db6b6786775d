//! floret-transport: the wire.
//!
//! This crate owns everything that crosses a process boundary: the protobuf schema
//! (`proto/flwr/proto/*.proto`, field for field Flower 1.42's `flwr.proto`, and Floret's
//! own services in `proto/floret/v1/*.proto`, whose generated Rust is checked in under
//! `src/generated/`), the codecs between that schema and floret-core's data model,
//! chunked object transfer for large arrays ([`ChunkPolicy`]), and the transports that carry the
//! protocols of floret-core — `Fleet` (with FABs), `Control` (StartRun with a FAB),
//! `ServerAppIo` and `ClientAppIo` (process-isolated apps, with [`grpc::RemoteGrid`] for a
//! ServerApp's `Grid`) over gRPC ([`grpc`], tonic) or QUIC ([`TransportKind`]), with TLS
//! ([`tls`], [`ClientSecurity`], [`ServerSecurity`]) and node authentication ([`auth`]).
//!
//! The generated wire types stay private to this crate; other crates exchange core values
//! and bytes ([`encode_message`], [`decode_message`], ...) or call the core traits through
//! the clients and servers here. This crate may depend on floret-core and no other Floret
//! crate: no actors, no strategies, no app logic.
//!
//! Cargo features, all on by default: `server` (the servers), `quic` (the QUIC transport,
//! with `server`), `node-auth` (P-384 node keys) and `platform-roots` (the OS trust
//! store). floret-app takes none: an app process only calls its daemon's AppIo API over
//! plain gRPC. Asking a build without a feature for what it does is an error naming it.

// Without the server half (an app binary), helpers it shares with the clients go unused.
#![cfg_attr(not(feature = "server"), allow(dead_code, unused_imports))]

pub mod auth;
mod convert;
mod convert_runs;
mod error;
pub mod grpc;
#[cfg(feature = "server")]
mod guard;
pub mod limits;
mod link;
pub mod meter;
mod objects;
pub(crate) mod proto;
#[cfg(feature = "quic")]
mod quic;
pub mod tls;
mod transport_error;

pub use error::DecodeError;
#[cfg(feature = "server")]
pub use grpc::ServerSecurity;
pub use grpc::{ClientSecurity, TransportKind};
pub use objects::{ChunkPolicy, MAX_CHUNK_LEN, TransferStats};
pub use transport_error::{Api, TransportError};

use bytes::{Buf, Bytes};
use floret_core::{Context, Message};
use prost::Message as _;

/// Encodes a message in Flower's `flwr.proto.Message` wire format.
#[must_use]
pub fn encode_message(message: &Message) -> Bytes {
    Bytes::from(convert::message_to_proto(message).encode_to_vec())
}

/// Decodes a `flwr.proto.Message`. Array data and other `bytes` fields are copied out of
/// `buf`; use [`decode_message_bytes`] to share the buffer instead.
///
/// # Errors
/// [`DecodeError`] when `buf` is not protobuf, or is a message Floret cannot represent:
/// missing metadata, both or neither of content and error, a record or value of no known
/// kind, an array with an empty dtype, a negative dimension or a raw data length that does
/// not match its shape.
pub fn decode_message(buf: &[u8]) -> Result<Message, DecodeError> {
    convert::message_from_proto(decode_proto(buf, "Message")?)
}

/// Decodes a `flwr.proto.Message` without copying its `bytes` fields: array data in the
/// result are slices of `buf`.
///
/// # Errors
/// As [`decode_message`].
pub fn decode_message_bytes(buf: Bytes) -> Result<Message, DecodeError> {
    convert::message_from_proto(decode_proto(buf, "Message")?)
}

/// Encodes a run context in Flower's `flwr.proto.Context` wire format.
#[must_use]
pub fn encode_context(context: &Context) -> Bytes {
    Bytes::from(convert::context_to_proto(context).encode_to_vec())
}

/// Decodes a `flwr.proto.Context`, copying `bytes` fields out of `buf`. An absent `state`
/// decodes as an empty one.
///
/// # Errors
/// [`DecodeError`] when `buf` is not protobuf, when its state is invalid (as for
/// [`decode_message`]), or when a config value is not a bool, int, float or string (bytes,
/// or an unsigned int above `i64::MAX`).
pub fn decode_context(buf: &[u8]) -> Result<Context, DecodeError> {
    convert::context_from_proto(decode_proto(buf, "Context")?)
}

/// Decodes a `flwr.proto.Context`; `bytes` fields in the result share `buf`.
///
/// # Errors
/// As [`decode_context`].
pub fn decode_context_bytes(buf: Bytes) -> Result<Context, DecodeError> {
    convert::context_from_proto(decode_proto(buf, "Context")?)
}

/// Encodes a record dict in Flower's `flwr.proto.RecordDict` wire format.
#[must_use]
pub fn encode_record_dict(record_dict: &floret_core::RecordDict) -> Bytes {
    Bytes::from(convert::record_dict_to_proto(record_dict).encode_to_vec())
}

/// Decodes a `flwr.proto.RecordDict`; array data in the result share `buf`. A bridge that
/// sends one content for many messages (the same model to every node) decodes it once.
///
/// # Errors
/// As [`decode_message`], for the records.
pub fn decode_record_dict_bytes(buf: Bytes) -> Result<floret_core::RecordDict, DecodeError> {
    convert::record_dict_from_proto(
        decode_proto(buf, "RecordDict")?,
        &error::Loc::Root("RecordDict"),
    )
}

/// Decodes a `flwr.proto.Metadata` (Flower's task ids are dropped, as for messages).
///
/// # Errors
/// [`DecodeError::Malformed`] when `buf` is not protobuf.
pub fn decode_metadata(buf: &[u8]) -> Result<floret_core::Metadata, DecodeError> {
    Ok(convert::metadata_from_proto(decode_proto(buf, "Metadata")?))
}

/// What a caller gets for asking a build without one of this crate's optional features
/// (see Cargo.toml) for what that feature does: `what` this build lacks, and the fix.
#[cfg(not(all(
    feature = "quic",
    feature = "node-auth",
    feature = "platform-roots",
    feature = "server"
)))]
pub(crate) fn not_built(what: &str, feature: &str) -> String {
    format!(
        "this build has no {what}: floret-transport was compiled without its `{feature}` feature (an app binary leaves it out; the daemons and `flwr` have it)"
    )
}

fn decode_proto<M: prost::Message + Default>(
    buf: impl Buf,
    what: &'static str,
) -> Result<M, DecodeError> {
    M::decode(buf).map_err(|e| DecodeError::Malformed {
        what,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
