//! Byte counting around HTTP bodies: [`Counted`] adds each DATA frame's length to a
//! counter as the body is polled (one atomic add per frame), and [`Metered`] puts it
//! around the request and response of every call a server's routes answer.

use super::{BYTES_RECEIVED, BYTES_SENT, OverQuic};
use crate::grpc::TransportKind;
use crate::transport_error::Api;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tower::Service;

/// A body whose DATA bytes are added to `bytes` as they pass.
pub(crate) struct Counted<B> {
    inner: B,
    bytes: metrics::Counter,
}

impl<B> Counted<B> {
    pub(crate) fn new(inner: B, bytes: metrics::Counter) -> Counted<B> {
        Counted { inner, bytes }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.bytes.increment(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A server's routes with the bytes of every call counted. Each server (gRPC or QUIC) has
/// its own; the QUIC one also marks its requests [`OverQuic`] so that the services count
/// their messages under the right transport.
#[derive(Clone)]
pub(crate) struct Metered<S> {
    inner: S,
    /// Bytes of requests, on this server's API and transport.
    received: metrics::Counter,
    /// Bytes of responses.
    sent: metrics::Counter,
    quic: bool,
}

impl<S> Metered<S> {
    pub(crate) fn new(inner: S, api: Api, transport: TransportKind) -> Metered<S> {
        let labels = [("api", api.label()), ("transport", transport.label())];
        Metered {
            inner,
            received: metrics::counter!(BYTES_RECEIVED, &labels),
            sent: metrics::counter!(BYTES_SENT, &labels),
            quic: transport == TransportKind::Quic,
        }
    }
}

impl<S> Service<http::Request<tonic::body::Body>> for Metered<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Counted<tonic::body::Body>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if self.quic {
            request.extensions_mut().insert(OverQuic);
        }
        let sent = self.sent.clone();
        let received = self.received.clone();
        let request = request.map(|body| tonic::body::Body::new(Counted::new(body, received)));
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| Counted::new(body, sent)))
        })
    }
}

/// The tower layer that puts [`Metered`] around a gRPC server's routes.
#[derive(Clone)]
pub(crate) struct MeterLayer(pub(crate) Api);

impl<S> tower::Layer<S> for MeterLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Metered<S> {
        Metered::new(inner, self.0, TransportKind::Grpc)
    }
}
