//! What both AppIo services do around their implementation's calls: contexts out as
//! envelopes, contexts in from envelopes, and long polls that end when the server stops.

use super::wire::{carrier, context_from_parts, context_head};
use crate::grpc::inbox;
use crate::grpc::server::stopped;
use crate::grpc::status::from_decode_error;
use crate::objects::envelope::Opened;
use crate::objects::outbox::Outbox;
use crate::proto::v1;
use floret_core::{Context, Message, Payload};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tonic::Status;

/// `context` for `peer`, its state as an envelope (chunks kept in the store); `budget` is
/// what is left of the response's inline budget.
pub(crate) async fn context_out(
    outbox: &Outbox,
    peer: u64,
    context: &Context,
    budget: &mut usize,
) -> v1::AppContext {
    let state = carrier(Payload::Content(context.state.clone()));
    v1::AppContext {
        context: Some(context_head(context)),
        state: Some(outbox.envelope(peer, &state, budget).await),
    }
}

/// A received context, waiting for its state to be assembled; `what` names the field
/// (`CompleteTaskRequest.context`).
pub(crate) struct ContextIn {
    what: &'static str,
    head: Option<crate::proto::Context>,
}

impl ContextIn {
    /// The context's head, and its state envelope opened.
    pub(crate) fn open(
        what: &'static str,
        c: Option<v1::AppContext>,
    ) -> Result<(Self, Opened), Status> {
        let c = c.ok_or_else(|| Status::invalid_argument(format!("{what} is missing")))?;
        let state = c
            .state
            .ok_or_else(|| Status::invalid_argument(format!("{what}.state is missing")))?;
        let state = inbox::open(&format!("{what}.state"), state)?;
        Ok((
            ContextIn {
                what,
                head: c.context,
            },
            state,
        ))
    }

    /// The context, given its state as assembled.
    pub(crate) fn finish(self, state: Message) -> Result<Context, Status> {
        context_from_parts(self.head, state).map_err(|e| from_decode_error(self.what, &e))
    }
}

/// The longest a `Receive` or `NextTask` waits, whatever it asks: a day. A timeout from
/// the wire must not overflow the implementation's clock arithmetic.
const MAX_POLL: Duration = Duration::from_secs(24 * 3600);

/// A long poll's timeout as asked on the wire, within [`MAX_POLL`].
pub(crate) fn poll_timeout(timeout_ms: u64) -> Duration {
    Duration::from_millis(timeout_ms).min(MAX_POLL)
}

/// Runs `call` unless the server stops first: a long poll must not hold up a shutdown.
pub(crate) async fn unless_stopped<T>(
    stop: &watch::Receiver<bool>,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::select! {
        result = call => result,
        () = stopped(stop.clone()) => Err(Status::unavailable("the daemon is shutting down")),
    }
}
