//! What crosses each API on each transport, as Prometheus counters recorded through the
//! `metrics` facade. This crate only records; a daemon that was given `--metrics-address`
//! installs the exporter, and without one every call here is a no-op.
//!
//! Two kinds of counts, both labelled `api` and `transport`:
//! - Flower messages (instructions to nodes and their replies), counted by the services
//!   and clients that move them, so the SuperLink's "sent" can be checked against the
//!   SuperNodes' "received";
//! - bytes of every call's body on the wire (gRPC frames: protobuf plus 5 bytes of length
//!   prefix), counted by [`Metered`] around the server's routes and by the client `Link`.
//!
//! The transport of a call: the QUIC server marks each request with [`OverQuic`] (a
//! zero-sized extension, so no allocation); a request without it came over gRPC.

mod body;

#[cfg(feature = "quic")]
pub(crate) use body::Metered;
pub(crate) use body::{Counted, MeterLayer};

use crate::grpc::TransportKind;
use crate::transport_error::Api;

/// Flower messages received, by `api` and `transport`.
pub const MESSAGES_RECEIVED: &str = "floret_messages_received_total";
/// Flower messages sent, by `api` and `transport`.
pub const MESSAGES_SENT: &str = "floret_messages_sent_total";
/// Bytes of call bodies received, by `api` and `transport`.
pub const BYTES_RECEIVED: &str = "floret_bytes_received_total";
/// Bytes of call bodies sent, by `api` and `transport`.
pub const BYTES_SENT: &str = "floret_bytes_sent_total";

/// Bytes of chunks held by the object stores of the process (Fleet and AppIo servers).
pub const OBJECT_STORE_BYTES: &str = "floret_object_store_bytes";

/// Marks a request that arrived over QUIC (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OverQuic;

impl Api {
    /// The `api` label of this API's metrics.
    pub fn label(self) -> &'static str {
        match self {
            Api::Fleet => "fleet",
            Api::Control => "control",
            Api::ServerAppIo => "serverappio",
            Api::ClientAppIo => "clientappio",
        }
    }
}

impl TransportKind {
    /// The `transport` label of this transport's metrics.
    pub fn label(self) -> &'static str {
        match self {
            TransportKind::Grpc => "grpc",
            TransportKind::Quic => "quic",
        }
    }
}

/// The transport a server-side request came over.
pub(crate) fn transport_of<T>(request: &tonic::Request<T>) -> TransportKind {
    if request.extensions().get::<OverQuic>().is_some() {
        TransportKind::Quic
    } else {
        TransportKind::Grpc
    }
}

/// The four counters of one API on one transport. Made once per server or client (after
/// the daemon installed its recorder), so counting a call is an atomic add on a handle,
/// with no label lookup or allocation.
#[derive(Clone)]
pub(crate) struct Counters {
    pub(crate) messages_received: metrics::Counter,
    pub(crate) messages_sent: metrics::Counter,
    pub(crate) bytes_received: metrics::Counter,
    pub(crate) bytes_sent: metrics::Counter,
}

impl Counters {
    pub(crate) fn new(api: Api, transport: TransportKind) -> Counters {
        let labels = [("api", api.label()), ("transport", transport.label())];
        Counters {
            messages_received: metrics::counter!(MESSAGES_RECEIVED, &labels),
            messages_sent: metrics::counter!(MESSAGES_SENT, &labels),
            bytes_received: metrics::counter!(BYTES_RECEIVED, &labels),
            bytes_sent: metrics::counter!(BYTES_SENT, &labels),
        }
    }
}

/// A server's counters on both transports: it serves gRPC and QUIC at once.
#[derive(Clone)]
pub(crate) struct ApiMeter {
    grpc: Counters,
    quic: Counters,
}

impl ApiMeter {
    pub(crate) fn new(api: Api) -> ApiMeter {
        ApiMeter {
            grpc: Counters::new(api, TransportKind::Grpc),
            quic: Counters::new(api, TransportKind::Quic),
        }
    }

    pub(crate) fn on(&self, transport: TransportKind) -> &Counters {
        match transport {
            TransportKind::Grpc => &self.grpc,
            TransportKind::Quic => &self.quic,
        }
    }

    /// The counters of the transport `request` came over.
    pub(crate) fn of<T>(&self, request: &tonic::Request<T>) -> &Counters {
        self.on(transport_of(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_documented_lowercase_names() {
        let apis = [Api::Fleet, Api::Control, Api::ServerAppIo, Api::ClientAppIo];
        let labels: Vec<_> = apis.iter().map(|a| a.label()).collect();
        assert_eq!(labels, ["fleet", "control", "serverappio", "clientappio"]);
        assert_eq!(TransportKind::Grpc.label(), "grpc");
        assert_eq!(TransportKind::Quic.label(), "quic");
    }

    #[test]
    fn a_request_is_grpc_unless_the_quic_server_marked_it() {
        let mut request = tonic::Request::new(());
        assert_eq!(transport_of(&request), TransportKind::Grpc);
        request.extensions_mut().insert(OverQuic);
        assert_eq!(transport_of(&request), TransportKind::Quic);
    }
}
