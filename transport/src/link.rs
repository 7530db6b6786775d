//! [`Link`]: what every client's tonic stub talks through, whichever the transport. tonic's
//! generated clients are generic over a tower service of HTTP requests; this enum is that
//! service for both transports, so each client (Fleet, Control, AppIo) is written once and
//! nothing above this crate knows which transport carries it.

use crate::quic::QuicChannel;
use http::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection to one server over gRPC (HTTP/2 over TCP, plaintext or TLS) or QUIC.
#[derive(Clone)]
pub(crate) enum Link {
    Grpc(tonic::transport::Channel),
    Quic(QuicChannel),
}

impl Service<Request<tonic::body::Body>> for Link {
    type Response = Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Link::Grpc(channel) => channel.poll_ready(cx).map_err(Into::into),
            Link::Quic(channel) => channel.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        match self {
            Link::Grpc(channel) => {
                let call = channel.call(request);
                Box::pin(async move {
                    call.await
                        .map(|r| r.map(tonic::body::Body::new))
                        .map_err(Into::into)
                })
            }
            Link::Quic(channel) => channel.call(request),
        }
    }
}
