//! Instructions waiting for their reply, kept small: just enough to check who may answer
//! and to answer in the node's place (node unavailable, TTL expired) without the content.

use floret_core::{Message, MessageError, Metadata, Payload};

/// An instruction sent and not answered yet.
pub(super) struct Inflight {
    pub(super) run_id: u64,
    pub(super) dst_node_id: u64,
    created_at: f64,
    ttl: f64,
    /// Copied into error replies so the ServerApp files them under the right round and phase.
    group_id: String,
    message_type: String,
}

impl Inflight {
    pub(super) fn of(md: &Metadata) -> Inflight {
        Inflight {
            run_id: md.run_id,
            dst_node_id: md.dst_node_id,
            created_at: md.created_at,
            ttl: md.ttl,
            group_id: md.group_id.clone(),
            message_type: md.message_type.clone(),
        }
    }

    /// Same rule as `Message::is_expired`.
    pub(super) fn is_expired(&self, now: f64) -> bool {
        self.created_at > 0.0 && now > self.created_at + self.ttl
    }

    pub(super) fn ttl(&self) -> f64 {
        self.ttl
    }
}

/// The error reply the SuperLink gives in a node's place: it looks as if `src` had answered
/// message `reply_to`, so a strategy needs no special case.
pub(super) fn error_reply(
    flight: &Inflight,
    reply_to: String,
    message_id: String,
    error: MessageError,
    now: f64,
) -> Message {
    Message {
        metadata: Metadata {
            run_id: flight.run_id,
            message_id,
            src_node_id: flight.dst_node_id,
            dst_node_id: 0,
            reply_to_message_id: reply_to,
            group_id: flight.group_id.clone(),
            ttl: flight.ttl,
            message_type: flight.message_type.clone(),
            created_at: now,
            trace_context: String::new(),
        },
        payload: Payload::Error(error),
    }
}
