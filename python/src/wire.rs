//! Messages to the Python processes as `flwr.proto.Message` bytes, without re-encoding
//! a model for every message that carries it.
//!
//! A protobuf message is the concatenation of its fields, so a `flwr.proto.Message` is
//! its metadata field followed by its content field (tag 2, the content's length, the
//! `flwr.proto.RecordDict` bytes). The content's bytes can therefore come from
//! elsewhere: a round's model, encoded once for the thousand messages that share it
//! (`Sent`), and a ClientApp's reply, whose content bytes the worker wrote and Floret
//! decoded without copying, handed on to the ServerApp as they came (`Replies`). Either
//! way the bytes are those `floret_transport::encode_message` writes (the tests check
//! it); anything else is encoded whole, as before.

use bytes::Bytes;
use floret_core::{Message, Payload, RecordDict};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// `flwr.proto.Message`'s `content` field: number 2, length-delimited.
const CONTENT_TAG: u8 = (2 << 3) | 2;

/// How many replies' bytes [`Replies`] keeps for the ServerApp before it forgets them
/// all (replies it never asks for, e.g. past a timeout, then cost nothing for long).
const REPLIES_MAX: usize = 1 << 14;

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n & 0x7F) as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// A message's `flwr.proto.Message` bytes: whole, or its metadata and content field's
/// head followed by the (shared) content bytes.
pub(crate) enum WireMessage {
    Whole(Bytes),
    Split { head: Vec<u8>, content: Bytes },
}

impl WireMessage {
    /// The bytes, in order, whose concatenation is the message.
    pub(crate) fn segments(&self) -> Vec<&[u8]> {
        match self {
            WireMessage::Whole(bytes) => vec![bytes],
            WireMessage::Split { head, content } => vec![head, content],
        }
    }
}

/// `message` with `content` (its content's `flwr.proto.RecordDict` bytes) as its
/// content field; the whole encoding if the metadata's does not end as expected.
fn split(message: &Message, content: Bytes) -> WireMessage {
    // The metadata alone: a message whose content is empty encodes as the metadata
    // field, then the content field with length 0.
    let bare = Message {
        metadata: message.metadata.clone(),
        payload: Payload::Content(RecordDict::default()),
    };
    let head = floret_transport::encode_message(&bare);
    let Some(metadata) = head.strip_suffix(&[CONTENT_TAG, 0][..]) else {
        return WireMessage::Whole(floret_transport::encode_message(message));
    };
    let mut field = Vec::with_capacity(metadata.len() + 11);
    field.extend_from_slice(metadata);
    field.push(CONTENT_TAG);
    push_varint(&mut field, content.len() as u64);
    WireMessage::Split {
        head: field,
        content,
    }
}

/// The last content sent to a ClientApp worker and its bytes.
#[derive(Default)]
pub(crate) struct Sent(Mutex<Option<(RecordDict, Bytes)>>);

impl Sent {
    /// `message`'s bytes, its content encoded once for every message that shares it
    /// (holding the content keeps its identity from being reused by another).
    pub(crate) fn wire(&self, message: &Message) -> WireMessage {
        let Payload::Content(content) = &message.payload else {
            return WireMessage::Whole(floret_transport::encode_message(message));
        };
        let bytes = {
            let mut cached = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            match &*cached {
                Some((dict, bytes)) if dict.shares_with(content) => bytes.clone(),
                _ => {
                    let bytes = floret_transport::encode_record_dict(content);
                    *cached = Some((content.clone(), bytes.clone()));
                    bytes
                }
            }
        };
        split(message, bytes)
    }
}

/// Replies' content bytes as the ClientApp workers wrote them, by the id of the message
/// each answers, until the ServerApp receives the reply.
#[derive(Default)]
pub(crate) struct Replies(Mutex<HashMap<String, (RecordDict, Bytes)>>);

impl Replies {
    /// Remembers that `content`, the reply to `message_id`, was decoded from `bytes`.
    pub(crate) fn keep(&self, message_id: &str, content: &RecordDict, bytes: Bytes) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() >= REPLIES_MAX {
            kept.clear();
        }
        kept.insert(message_id.to_string(), (content.clone(), bytes));
    }

    /// `reply`'s bytes: its content as the worker wrote it when it is still that
    /// content, otherwise encoded anew.
    pub(crate) fn wire(&self, reply: &Message) -> WireMessage {
        let kept = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&reply.metadata.reply_to_message_id);
        match (kept, &reply.payload) {
            (Some((dict, bytes)), Payload::Content(content)) if dict.shares_with(content) => {
                split(reply, bytes)
            }
            _ => WireMessage::Whole(floret_transport::encode_message(reply)),
        }
    }

    /// Forgets the replies to these messages (the ServerApp stopped waiting for them).
    pub(crate) fn forget<'a>(&self, message_ids: impl IntoIterator<Item = &'a String>) {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for id in message_ids {
            kept.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{Array, ArrayRecord, ConfigRecord, MessageError, Record};

    fn model() -> RecordDict {
        let arrays: ArrayRecord = [("w".to_string(), Array::from_slice(&[1.0f32, 2.0, 3.0]))]
            .into_iter()
            .collect();
        let mut config = ConfigRecord::new();
        config.insert("round", 3i64);
        [
            ("arrays".to_string(), Record::Array(arrays)),
            ("config".to_string(), Record::Config(config)),
        ]
        .into_iter()
        .collect()
    }

    fn concat(wire: &WireMessage) -> Vec<u8> {
        wire.segments().concat()
    }

    fn whole(message: &Message) -> Vec<u8> {
        floret_transport::encode_message(message).to_vec()
    }

    #[test]
    fn a_shared_content_is_encoded_once_and_byte_for_byte_as_whole() {
        let sent = Sent::default();
        let content = model();
        let mut first = Message::new(content.clone(), 7, "train");
        first.metadata.message_id = "m-1".into();
        first.metadata.group_id = "3".into();
        let mut second = Message::new(content, 8, "train");
        second.metadata.message_id = "m-2".into();
        let (a, b) = (sent.wire(&first), sent.wire(&second));
        assert_eq!(concat(&a), whole(&first));
        assert_eq!(concat(&b), whole(&second));
        let (WireMessage::Split { content: ca, .. }, WireMessage::Split { content: cb, .. }) =
            (&a, &b)
        else {
            panic!("both split")
        };
        assert_eq!(ca.as_ptr(), cb.as_ptr(), "one encoding for both");
    }

    #[test]
    fn other_contents_and_errors_are_encoded_for_themselves() {
        let sent = Sent::default();
        let one = Message::new(model(), 1, "train");
        let two = Message::new(model(), 2, "evaluate");
        let _ = sent.wire(&one);
        assert_eq!(
            concat(&sent.wire(&two)),
            whole(&two),
            "equal but not shared"
        );
        let failed = Message {
            metadata: one.metadata.clone(),
            payload: Payload::Error(MessageError::new(2, "boom")),
        };
        assert_eq!(concat(&sent.wire(&failed)), whole(&failed));
    }

    #[test]
    fn a_reply_goes_on_as_the_worker_wrote_it_while_it_is_unchanged() {
        let replies = Replies::default();
        let bytes = floret_transport::encode_record_dict(&model());
        let content = floret_transport::decode_record_dict_bytes(bytes.clone()).unwrap();
        let mut reply = Message::new(content.clone(), 0, "train");
        reply.metadata.reply_to_message_id = "m-1".into();
        replies.keep("m-1", &content, bytes.clone());
        let wire = replies.wire(&reply);
        assert_eq!(concat(&wire), whole(&reply));
        assert!(
            matches!(&wire, WireMessage::Split { content, .. } if content.as_ptr() == bytes.as_ptr()),
            "the worker's bytes, not a new encoding"
        );
        // Used once: a second reply to the same id (or a changed content) is encoded.
        assert!(matches!(replies.wire(&reply), WireMessage::Whole(_)));
        replies.keep("m-1", &model(), bytes);
        assert!(matches!(replies.wire(&reply), WireMessage::Whole(_)));
        replies.keep("m-2", &content, Bytes::new());
        replies.forget([&"m-2".to_string()]);
        reply.metadata.reply_to_message_id = "m-2".into();
        assert!(matches!(replies.wire(&reply), WireMessage::Whole(_)));
    }
}
