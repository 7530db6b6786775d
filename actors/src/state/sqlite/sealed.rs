//! Values stored as blobs, in Floret's versioned envelope: a file read by a later build
//! says which format each blob has, and a blob of the wrong kind is an error, not garbage.

use super::storage;
use crate::state::StateError;
use floret_core::codec::{Bincode, decode_sealed, encode_sealed, open, seal};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub(super) const MESSAGE: &str = "message";
/// An instruction's payload, stored apart from its message (see `messages`).
pub(super) const PAYLOAD: &str = "message payload";
pub(super) const RUN: &str = "run";
pub(super) const EVENT: &str = "run event";
pub(super) const CHECKPOINT: &str = "run checkpoint";
/// A run's `federation_options`.
pub(super) const RUN_OPTIONS: &str = "run options";

/// The format version of every kind this build writes, but messages.
const VERSION: u16 = 1;
/// Messages are at 2: their metadata gained `trace_context`. A version-1 message is
/// refused by name rather than misread; none outlives a restart in practice, since an
/// unfinished run's messages are purged when it resumes.
const MESSAGE_VERSION: u16 = 2;

fn version(kind: &str) -> u16 {
    if kind == MESSAGE {
        MESSAGE_VERSION
    } else {
        VERSION
    }
}

pub(super) fn encode<T: Serialize>(kind: &'static str, value: &T) -> Result<Vec<u8>, StateError> {
    encode_sealed(&Bincode, kind, version(kind), value).map_err(storage)
}

pub(super) fn decode<T: DeserializeOwned>(
    kind: &'static str,
    bytes: &[u8],
) -> Result<T, StateError> {
    decode_sealed(&Bincode, kind, version(kind), bytes).map_err(storage)
}

/// Bytes the store does not interpret (a ServerApp's checkpoint): only the envelope, so a
/// large checkpoint is not re-encoded, and a blob of another kind is still caught.
pub(super) fn seal_raw(kind: &'static str, bytes: &[u8]) -> Vec<u8> {
    seal(kind, VERSION, bytes)
}

pub(super) fn open_raw<'a>(kind: &'static str, bytes: &'a [u8]) -> Result<&'a [u8], StateError> {
    let envelope = open(kind, VERSION, bytes).map_err(storage)?;
    Ok(envelope.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{Message, RecordDict};

    #[test]
    fn a_message_of_the_format_before_trace_context_is_refused_by_name() {
        let m = Message::new(RecordDict::new(), 1, "train");
        let now = encode(MESSAGE, &m).unwrap();
        assert_eq!(decode::<Message>(MESSAGE, &now).unwrap(), m);
        let before = encode_sealed(&Bincode, MESSAGE, 1, &m).unwrap();
        let e = decode::<Message>(MESSAGE, &before).unwrap_err().to_string();
        assert!(e.contains("format version 1 is older"), "{e}");
    }
}
