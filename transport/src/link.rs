//! [`Link`]: what every client's tonic stub talks through, whichever the transport. tonic's
//! generated clients are generic over a tower service of HTTP requests; this is that
//! service for both transports, so each client (Fleet, Control, AppIo) is written once and
//! nothing above this crate knows which transport carries it. It also counts the bytes of
//! every call (see `meter`).

use crate::grpc::TransportKind;
use crate::meter::{Counted, Counters};
#[cfg(feature = "quic")]
use crate::quic::QuicChannel;
use crate::transport_error::Api;
use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to one server over gRPC (HTTP/2 over TCP, plaintext or TLS) or QUIC.
#[derive(Clone)]
pub(crate) struct Link {
    channel: Channel,
    /// The API's counters on this transport: bytes here, messages in the clients.
    counters: Counters,
}

#[derive(Clone)]
enum Channel {
    Grpc(tonic::transport::Channel),
    #[cfg(feature = "quic")]
    Quic(QuicChannel),
}

impl Link {
    pub(crate) fn grpc(api: Api, channel: tonic::transport::Channel) -> Link {
        Link {
            channel: Channel::Grpc(channel),
            counters: Counters::new(api, TransportKind::Grpc),
        }
    }

    #[cfg(feature = "quic")]
    pub(crate) fn quic(api: Api, channel: QuicChannel) -> Link {
        Link {
            channel: Channel::Quic(channel),
            counters: Counters::new(api, TransportKind::Quic),
        }
    }

    /// The counters of this link's API and transport, for the messages a client moves.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }
}

impl Service<Request<tonic::body::Body>> for Link {
    type Response = Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.channel {
            Channel::Grpc(channel) => channel.poll_ready(cx).map_err(Into::into),
            #[cfg(feature = "quic")]
            Channel::Quic(channel) => channel.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let sent = self.counters.bytes_sent.clone();
        let received = self.counters.bytes_received.clone();
        let request = request.map(|body| tonic::body::Body::new(Counted::new(body, sent)));
        let counted = move |response: Response<tonic::body::Body>| {
            response.map(|body| tonic::body::Body::new(Counted::new(body, received)))
        };
        match &mut self.channel {
            Channel::Grpc(channel) => {
                let call = channel.call(request);
                Box::pin(async move {
                    call.await
                        .map(|r| counted(r.map(tonic::body::Body::new)))
                        .map_err(Into::into)
                })
            }
            #[cfg(feature = "quic")]
            Channel::Quic(channel) => {
                let call = channel.call(request);
                Box::pin(async move { call.await.map(counted) })
            }
        }
    }
}
