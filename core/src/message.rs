//! Messages: the only thing that travels between a ServerApp and its ClientApps.
//!
//! A message is metadata plus either content (a `RecordDict`) or an error. Message types are
//! Flower's: `train`, `evaluate`, `query`, optionally with a sub-name (`train.fedprox`).

use crate::records::RecordDict;
use thiserror::Error;

/// Seconds a message stays deliverable unless its sender says otherwise (Flower's default).
pub const DEFAULT_TTL: f64 = 43_200.0;

/// The longest TTL a message may carry: 30 days. A longer one is a mistake or an attack (it
/// would pin the instruction in the SuperLink's state and the node's timers for ever), and a
/// deadline this far out still converts to a `Duration` on every platform.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// The built-in message types.
pub mod message_type {
    /// Train the model in the content on local data and reply with the updated one.
    pub const TRAIN: &str = "train";
    /// Evaluate the model in the content on local data and reply with metrics.
    pub const EVALUATE: &str = "evaluate";
    /// Answer a question about the node or its data; the content's meaning is the app's.
    pub const QUERY: &str = "query";
}

/// Error codes carried in error replies, numbered as Flower numbers them.
pub mod error_code {
    /// An error of no known kind; Floret never sends it, but Flower peers may.
    pub const UNKNOWN: i64 = 0;
    /// The ClientApp could not be loaded or started (missing FAB, app process failed to start).
    pub const LOAD_CLIENT_APP_EXCEPTION: i64 = 1;
    /// The ClientApp's handler returned an error or panicked.
    pub const CLIENT_APP_RAISED_EXCEPTION: i64 = 2;
    /// The message asked for is not available; Flower's code, not sent by Floret.
    pub const MESSAGE_UNAVAILABLE: i64 = 3;
    /// The reply asked for is not available; Flower's code, not sent by Floret.
    pub const REPLY_MESSAGE_UNAVAILABLE: i64 = 4;
    /// The destination node is gone or never existed; the SuperLink answers in its place.
    pub const NODE_UNAVAILABLE: i64 = 5;
    /// The message's TTL ran out before it was handled or answered.
    pub const MESSAGE_TTL_EXPIRED: i64 = 6;
}

/// A message type that is not `train`, `evaluate` or `query`, optionally dotted with a name.
#[derive(Debug, Clone, PartialEq, Error)]
#[error(
    "invalid message type {0:?}: use \"train\", \"evaluate\" or \"query\", optionally followed by \".<name>\""
)]
pub struct InvalidMessageType(pub String);

/// Checks a message type and returns its base (`train.fedprox` -> `train`).
pub fn validate_message_type(t: &str) -> Result<&str, InvalidMessageType> {
    let (base, name) = match t.split_once('.') {
        Some((b, n)) => (b, Some(n)),
        None => (t, None),
    };
    let base_ok = matches!(
        base,
        message_type::TRAIN | message_type::EVALUATE | message_type::QUERY
    );
    let name_ok = name.is_none_or(|n| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    if base_ok && name_ok {
        Ok(base)
    } else {
        Err(InvalidMessageType(t.to_string()))
    }
}

/// A message TTL that is not a finite number of seconds in `(0, MAX_TTL]`.
#[derive(Debug, Clone, PartialEq, Error)]
#[error(
    "invalid message TTL {0}: use a finite number of seconds greater than 0 and at most {max} (30 days)",
    max = MAX_TTL.as_secs()
)]
pub struct InvalidTtl(pub f64);

/// Checks a message TTL as it enters a SuperLink or a SuperNode, and returns it as a
/// `Duration`. TTLs come from peers (a ServerApp, a SuperNode, a SuperLink), so a NaN, a
/// negative or a huge one must be refused here rather than panic a `Duration` conversion later.
pub fn validate_ttl(ttl: f64) -> Result<std::time::Duration, InvalidTtl> {
    if ttl > 0.0 && ttl <= MAX_TTL.as_secs_f64() {
        std::time::Duration::try_from_secs_f64(ttl).map_err(|_| InvalidTtl(ttl))
    } else {
        Err(InvalidTtl(ttl))
    }
}

/// Routing and bookkeeping of a message, field for field as Flower's `Metadata`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Metadata {
    /// The run the message belongs to.
    pub run_id: u64,
    /// Assigned by the runtime when the message is sent.
    pub message_id: String,
    /// The node that sent the message; 0 is the SuperLink (the ServerApp's side).
    pub src_node_id: u64,
    /// The node the message is for; 0 is the SuperLink (the ServerApp's side).
    pub dst_node_id: u64,
    /// For replies: the id of the message being answered; empty otherwise.
    pub reply_to_message_id: String,
    /// Groups the messages of one step (Floret uses the server round).
    pub group_id: String,
    /// Seconds after `created_at` when the message expires.
    pub ttl: f64,
    /// `train`, `evaluate` or `query`, optionally with a sub-name (`train.fedprox`); picks the
    /// ClientApp's handler.
    pub message_type: String,
    /// Unix time in seconds, set by the runtime when the message is sent.
    pub created_at: f64,
    /// Floret's addition: the W3C `traceparent` of the span that sent the message (see
    /// `trace_context`), so that the span handling it anywhere joins the run's trace.
    /// Empty when tracing is off.
    pub trace_context: String,
}

/// A failure reported in place of content: error code and a short reason.
#[derive(Debug, Clone, PartialEq, Error, serde::Serialize, serde::Deserialize)]
#[error("error {code}: {reason}")]
pub struct MessageError {
    /// One of `error_code`; Flower's numbering.
    pub code: i64,
    /// A short, human-readable reason.
    pub reason: String,
}

impl MessageError {
    /// An error reply's payload; `code` is one of `error_code`.
    pub fn new(code: i64, reason: impl Into<String>) -> Self {
        MessageError {
            code,
            reason: reason.into(),
        }
    }
}

/// What a message carries: records, or the error that replaced them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Payload {
    /// The records the sender sends.
    Content(RecordDict),
    /// The error that replaced the content, e.g. a failed ClientApp.
    Error(MessageError),
}

/// Metadata plus payload.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    /// Routing and bookkeeping.
    pub metadata: Metadata,
    /// Content or error.
    pub payload: Payload,
}

impl Message {
    /// A new message to `dst_node_id`; the runtime fills ids, run and times on `send`.
    pub fn new(content: RecordDict, dst_node_id: u64, message_type: impl Into<String>) -> Message {
        Message {
            metadata: Metadata {
                dst_node_id,
                ttl: DEFAULT_TTL,
                message_type: message_type.into(),
                ..Metadata::default()
            },
            payload: Payload::Content(content),
        }
    }

    /// Sets the group id (Floret's strategies put the server round there).
    pub fn with_group_id(mut self, group_id: impl Into<String>) -> Message {
        self.metadata.group_id = group_id.into();
        self
    }

    /// A copy sent to `dst_node_id` instead (the content is shared, not copied): one
    /// message of a broadcast made from its template.
    pub fn to(&self, dst_node_id: u64) -> Message {
        let mut m = self.clone();
        m.metadata.dst_node_id = dst_node_id;
        m
    }

    /// `to` each of `nodes`, in order: a broadcast made message by message.
    pub fn to_each(&self, nodes: &[u64]) -> Vec<Message> {
        nodes.iter().map(|&n| self.to(n)).collect()
    }

    /// Bytes of array data in the content (0 for an error reply): what a span reports as
    /// the message's size without encoding it.
    pub fn array_bytes(&self) -> usize {
        match &self.payload {
            Payload::Content(c) => c
                .iter()
                .map(|(_, r)| match r {
                    crate::records::Record::Array(a) => a.num_bytes(),
                    _ => 0,
                })
                .sum(),
            Payload::Error(_) => 0,
        }
    }

    /// The content, or the carried error.
    pub fn content(&self) -> Result<&RecordDict, &MessageError> {
        match &self.payload {
            Payload::Content(c) => Ok(c),
            Payload::Error(e) => Err(e),
        }
    }

    /// The error, when the message carries one instead of content.
    pub fn error(&self) -> Option<&MessageError> {
        match &self.payload {
            Payload::Error(e) => Some(e),
            Payload::Content(_) => None,
        }
    }

    /// A reply to this message: routed back to the sender, same run, group and type.
    pub fn reply(&self, payload: Payload) -> Message {
        let m = &self.metadata;
        Message {
            metadata: Metadata {
                run_id: m.run_id,
                message_id: String::new(),
                src_node_id: m.dst_node_id,
                dst_node_id: m.src_node_id,
                reply_to_message_id: m.message_id.clone(),
                group_id: m.group_id.clone(),
                ttl: m.ttl,
                message_type: m.message_type.clone(),
                created_at: 0.0,
                // The handler's span, when there is one, takes this over (client_exec).
                trace_context: m.trace_context.clone(),
            },
            payload,
        }
    }

    /// True once `now` (Unix seconds) is past `created_at + ttl`.
    pub fn is_expired(&self, now: f64) -> bool {
        self.metadata.created_at > 0.0 && now > self.metadata.created_at + self.metadata.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_follow_flower() {
        assert_eq!(validate_message_type("train"), Ok("train"));
        assert_eq!(validate_message_type("evaluate.central"), Ok("evaluate"));
        assert!(validate_message_type("fit").is_err());
        assert!(validate_message_type("train.").is_err());
        assert!(validate_message_type("query.a b").is_err());
    }

    #[test]
    fn a_ttl_is_finite_positive_and_at_most_the_maximum() {
        assert_eq!(
            validate_ttl(DEFAULT_TTL),
            Ok(std::time::Duration::from_secs(43_200))
        );
        assert_eq!(validate_ttl(0.5), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(validate_ttl(MAX_TTL.as_secs_f64()), Ok(MAX_TTL));
        for bad in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -1.0,
            0.0,
            -0.0,
            MAX_TTL.as_secs_f64() + 1.0,
            1e300,
        ] {
            assert!(validate_ttl(bad).is_err(), "{bad} was accepted");
        }
        let e = validate_ttl(f64::NAN).unwrap_err().to_string();
        assert!(
            e.contains("invalid message TTL NaN") && e.contains("greater than 0"),
            "{e}"
        );
    }

    #[test]
    fn reply_swaps_route_and_links_to_original() {
        let mut m = Message::new(RecordDict::new(), 7, "train").with_group_id("3");
        m.metadata.run_id = 11;
        m.metadata.message_id = "abc".into();
        m.metadata.src_node_id = 1;
        let r = m.reply(Payload::Error(MessageError::new(
            error_code::CLIENT_APP_RAISED_EXCEPTION,
            "boom",
        )));
        assert_eq!(r.metadata.src_node_id, 7);
        assert_eq!(r.metadata.dst_node_id, 1);
        assert_eq!(r.metadata.reply_to_message_id, "abc");
        assert_eq!(r.metadata.group_id, "3");
        assert_eq!(r.metadata.run_id, 11);
        assert_eq!(r.error().map(|e| e.code), Some(2));
    }

    #[test]
    fn expiry_uses_created_at_plus_ttl() {
        let mut m = Message::new(RecordDict::new(), 1, "query");
        m.metadata.created_at = 100.0;
        m.metadata.ttl = 10.0;
        assert!(!m.is_expired(105.0));
        assert!(m.is_expired(110.5));
    }
}
