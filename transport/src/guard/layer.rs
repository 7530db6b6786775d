//! The per-call guard around a server's routes: counts the call as open on its connection
//! while its response lasts, authenticates it from its headers before a byte of its body is
//! read (where the API can), and refuses a body over its method's limit as soon as the
//! gRPC length prefix announces it, so that nothing larger than the limit is ever buffered.

use super::{CallGuard, ConnInfo, Tracker};
use crate::limits::RequestLimit;
use crate::transport_error::Api;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{AcquireError, OwnedSemaphorePermit};
use tonic::Status;
use tower::Service;

/// A check of a call's path and headers before its body is read: `Err` answers the call
/// with that status at once. It may leave what it learnt (a verified key) in the
/// extensions for the service.
pub(crate) type PreAuth =
    Arc<dyn Fn(&str, &http::HeaderMap, &mut http::Extensions) -> Result<(), Status> + Send + Sync>;

/// What [`Guarded`] needs to know about its server.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) api: Api,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) pre_auth: Option<PreAuth>,
}

impl<S> tower::Layer<S> for Guard {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Guarded<S> {
        Guarded {
            inner,
            guard: self.clone(),
        }
    }
}

/// See the module doc.
#[derive(Clone)]
pub(crate) struct Guarded<S> {
    inner: S,
    guard: Guard,
}

impl<S, B> Service<http::Request<tonic::body::Body>> for Guarded<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<B>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        let call = ConnInfo::of(&parts.extensions).map(|c| c.state.call_started());
        let path = parts.uri.path().to_owned();
        if let Some(pre_auth) = &self.guard.pre_auth
            && let Err(status) = pre_auth(&path, &parts.headers, &mut parts.extensions)
        {
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        let limit = self
            .guard
            .tracker
            .limits()
            .request_limit(self.guard.api, &path);
        let refused = Arc::new(Mutex::new(None));
        let body = tonic::body::Body::new(Limited {
            inner: body,
            limit,
            path,
            prefix: Vec::with_capacity(5),
            seen: 0,
            refused: refused.clone(),
            tracker: self.guard.tracker.clone(),
            held: None,
            acquiring: None,
            _permit: None,
        });
        let response = self.inner.call(http::Request::from_parts(parts, body));
        Box::pin(async move {
            let response = response.await?;
            // The service's own error for a failed body read may be vaguer than ours.
            let refused = refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            if let Some(message) = refused {
                return Ok(Status::resource_exhausted(message).into_http());
            }
            Ok(response.map(|body| tonic::body::Body::new(Open { body, _call: call })))
        })
    }
}

/// A request body that fails as soon as it is known to exceed its limit.
struct Limited {
    inner: tonic::body::Body,
    limit: RequestLimit,
    path: String,
    /// The first bytes of the body, until the 5-byte gRPC prefix is complete.
    prefix: Vec<u8>,
    /// Bytes of body so far.
    seen: usize,
    /// Set when the body was refused: the call's answer.
    refused: Arc<Mutex<Option<String>>>,
    tracker: Arc<Tracker>,
    /// The first frame of a large request, read, while it waits for its share of the
    /// server's in-flight budget (nothing more of it is read meanwhile).
    held: Option<Frame<Bytes>>,
    /// Waiting for that share.
    acquiring: Option<Acquiring>,
    /// The share, returned when the body is dropped (read and decoded, or abandoned).
    _permit: Option<OwnedSemaphorePermit>,
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// What the bytes so far say about a body.
enum Check {
    /// Read on.
    Pass,
    /// Over a limit: refuse it with this message.
    Refuse(String),
    /// Large: wait for this many KiB of the in-flight budget first.
    Wait(u32),
}

/// The gRPC length prefix: a compression flag, then the length as a big-endian `u32`.
const PREFIX: usize = 5;

impl Limited {
    /// What `data` (the next bytes of the body) says: over its limit, large, or fine.
    fn check(&mut self, data: &Bytes) -> Check {
        self.seen = self.seen.saturating_add(data.len());
        if self.prefix.len() < PREFIX {
            let take = (PREFIX - self.prefix.len()).min(data.len());
            self.prefix.extend_from_slice(&data[..take]);
            if self.prefix.len() == PREFIX {
                let len = (&self.prefix[1..]).get_u32() as usize;
                if len > self.limit.bytes {
                    return Check::Refuse(self.limit.refusal(&self.path, len));
                }
                match self.tracker.limits().inflight_share(&self.path, len) {
                    Err(refusal) => return Check::Refuse(refusal),
                    Ok(Some(kib)) => return Check::Wait(kib),
                    Ok(None) => {}
                }
            }
        }
        if self.seen > self.limit.bytes + PREFIX {
            Check::Refuse(self.limit.refusal(&self.path, self.seen - PREFIX))
        } else {
            Check::Pass
        }
    }
}

impl Body for Limited {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if let Some(acquiring) = &mut this.acquiring {
            let permit = std::task::ready!(acquiring.as_mut().poll(cx))
                .map_err(|_| Status::unavailable("the server is shutting down"))?;
            this._permit = Some(permit);
            this.acquiring = None;
            if let Some(frame) = this.held.take() {
                return Poll::Ready(Some(Ok(frame)));
            }
        }
        let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => return Poll::Ready(None),
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            Some(Ok(frame)) => frame,
        };
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        match this.check(data) {
            Check::Pass => Poll::Ready(Some(Ok(frame))),
            Check::Refuse(refusal) => {
                this.tracker
                    .warn(&format_args!("refused a request: {refusal}"));
                *this
                    .refused
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(refusal.clone());
                Poll::Ready(Some(Err(Status::resource_exhausted(refusal))))
            }
            Check::Wait(kib) => {
                this.held = Some(frame);
                this.acquiring = Some(Box::pin(
                    this.tracker.inflight.clone().acquire_many_owned(kib),
                ));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its call counted as open until it is done or dropped.
struct Open<B> {
    body: B,
    _call: Option<CallGuard>,
}

impl<B> Body for Open<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
