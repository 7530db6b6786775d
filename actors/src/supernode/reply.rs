//! Getting a reply to the SuperLink. A training result is worth waiting for: while the
//! SuperLink is unreachable the push is retried with backoff, up to the instruction's TTL
//! (after which the SuperLink has answered it in the node's place anyway). Any other
//! refusal (the instruction was already answered, the node was forgotten) drops the reply
//! with a log line: the SuperLink has moved on and so do we.

use crate::policy::backoff::Backoff;
use crate::policy::clock::unix_now;
use floret_core::{Fleet, FleetError, Message, MessageError, Metadata, Payload, RecordDict};
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on how long one reply is retried, whatever its TTL says.
const MAX_PUSH_WAIT: Duration = Duration::from_secs(3600);

/// Pushes `reply` from its source node in a task of its own, so neither the SuperNode nor
/// a ClientApp host waits for the network.
pub(super) fn spawn_push(fleet: Arc<dyn Fleet>, backoff: Backoff, reply: Message, expires_at: f64) {
    tokio::spawn(push(fleet, backoff, reply, expires_at));
}

async fn push(fleet: Arc<dyn Fleet>, backoff: Backoff, reply: Message, expires_at: f64) {
    let node_id = reply.metadata.src_node_id;
    let run_id = reply.metadata.run_id;
    let reply_to = reply.metadata.reply_to_message_id.clone();
    let left = (expires_at - unix_now()).clamp(0.0, MAX_PUSH_WAIT.as_secs_f64());
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(left);
    let mut retry = 0;
    loop {
        match fleet.push_messages(node_id, vec![reply.clone()]).await {
            Ok(()) => return,
            Err(FleetError::Unavailable(e)) => {
                let delay = backoff.delay(retry, rand::random());
                if tokio::time::Instant::now() + delay > deadline {
                    tracing::warn!(node_id, run_id, message_id = %reply_to,
                        "reply dropped: SuperLink unreachable until the message expired ({e})");
                    return;
                }
                tokio::time::sleep(delay).await;
                retry += 1;
            }
            Err(e) => {
                tracing::info!(node_id, run_id, message_id = %reply_to, "reply refused: {e}");
                return;
            }
        }
    }
}

/// An error reply to the instruction with metadata `md`, for failures outside the
/// ClientApp's handlers.
pub(super) fn error_reply(md: &Metadata, code: i64, reason: String) -> Message {
    reply_with(md, Payload::Error(MessageError::new(code, reason)))
}

/// The reply carrying `payload` to the instruction with metadata `md`.
pub(super) fn reply_with(md: &Metadata, payload: Payload) -> Message {
    let header = Message {
        metadata: md.clone(),
        payload: Payload::Content(RecordDict::new()),
    };
    header.reply(payload)
}

/// When (node clock, Unix seconds) the SuperLink stops waiting for a reply to the
/// instruction with metadata `md`.
pub(super) fn expires_at(md: &Metadata) -> f64 {
    if md.created_at > 0.0 {
        md.created_at + md.ttl
    } else {
        unix_now() + md.ttl
    }
}
