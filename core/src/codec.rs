//! How Floret writes values that must outlive the process (run checkpoints, messages in the
//! SuperLink's database) and reads them back.
//!
//! Two layers, so the binary format can change without touching the callers:
//! - [`Codec`] turns serde values into bytes. [`Bincode`] is the one in use; bincode 2.x is
//!   unmaintained (RUSTSEC-2025-0141), so this module is the only place that names it and a
//!   replacement is one impl away.
//! - An envelope ([`seal`] / [`open`]) puts a magic, a kind tag and a format version in front
//!   of the body, so a reader can tell a checkpoint from a stored message, read older
//!   versions on purpose, and refuse newer ones with a message that says what to do.

use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

/// First bytes of every sealed value.
const MAGIC: &[u8; 4] = b"FLRT";

/// Largest body a decoder accepts: a corrupt length prefix must not make it allocate more.
const DECODE_LIMIT: usize = 8 << 30;

/// Why a value could not be written or read.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum CodecError {
    /// The codec could not encode the value.
    #[error("could not encode {what}: {reason}")]
    Encode {
        /// What was being encoded (usually the envelope kind, e.g. `"fedavg-checkpoint"`).
        what: &'static str,
        /// The codec's own message.
        reason: String,
    },
    /// The bytes are not a valid encoding of the value (corrupt, truncated or trailing bytes).
    #[error("could not decode {what}: {reason}")]
    Decode {
        /// What was being decoded (usually the envelope kind).
        what: &'static str,
        /// The codec's own message.
        reason: String,
    },
    /// The bytes do not start with the envelope: not written by `seal`.
    #[error("not a Floret {expected}: the data does not start with Floret's envelope")]
    NotSealed {
        /// The kind the reader asked for.
        expected: &'static str,
    },
    /// The envelope is of another kind (e.g. a stored message where a checkpoint was expected).
    #[error("expected a Floret {expected}, found a {found:?}")]
    WrongKind {
        /// The kind the reader asked for.
        expected: &'static str,
        /// The kind tag found in the envelope, lossily decoded.
        found: String,
    },
    /// The envelope's version is above what this build reads.
    #[error(
        "{kind} format version {found} is newer than this build reads (up to {supported}); \
         run a newer Floret, or start from a fresh state"
    )]
    TooNew {
        /// The kind of value sealed.
        kind: &'static str,
        /// The version found.
        found: u16,
        /// The highest version this build reads.
        supported: u16,
    },
}

/// Turns serde values into bytes and back.
pub trait Codec {
    /// Encodes `value`; `what` names it in the error, should it fail.
    fn encode<T: Serialize>(&self, what: &'static str, value: &T) -> Result<Vec<u8>, CodecError>;
    /// Decodes a whole `bytes` as a `T`; trailing bytes are an error. `what` names the value in the
    /// error.
    fn decode<T: DeserializeOwned>(
        &self,
        what: &'static str,
        bytes: &[u8],
    ) -> Result<T, CodecError>;
}

/// bincode 2 with its standard configuration (varint integers, little endian).
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl Codec for Bincode {
    fn encode<T: Serialize>(&self, what: &'static str, value: &T) -> Result<Vec<u8>, CodecError> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
            CodecError::Encode {
                what,
                reason: e.to_string(),
            }
        })
    }

    fn decode<T: DeserializeOwned>(
        &self,
        what: &'static str,
        bytes: &[u8],
    ) -> Result<T, CodecError> {
        let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
        let (value, used): (T, usize) = bincode::serde::borrow_decode_from_slice(bytes, config)
            .map_err(|e| CodecError::Decode {
                what,
                reason: e.to_string(),
            })?;
        if used != bytes.len() {
            return Err(CodecError::Decode {
                what,
                reason: format!("{} trailing bytes", bytes.len() - used),
            });
        }
        Ok(value)
    }
}

/// A sealed value, opened: its version and the body still to decode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Envelope<'a> {
    /// The format version the value was sealed at; the caller decodes the body accordingly.
    pub version: u16,
    /// The encoded value, after the envelope.
    pub body: &'a [u8],
}

/// Prefixes `body` with the envelope: magic, kind (length-prefixed), version.
pub fn seal(kind: &'static str, version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 1 + kind.len() + 2 + body.len());
    out.extend_from_slice(MAGIC);
    out.push(kind.len() as u8);
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Checks magic and kind and refuses versions above `supported`; the caller decodes the
/// body according to the version it got.
pub fn open<'a>(
    kind: &'static str,
    supported: u16,
    bytes: &'a [u8],
) -> Result<Envelope<'a>, CodecError> {
    let not_sealed = CodecError::NotSealed { expected: kind };
    let rest = bytes.strip_prefix(MAGIC).ok_or(not_sealed.clone())?;
    let (&len, rest) = rest.split_first().ok_or(not_sealed.clone())?;
    let len = usize::from(len);
    if rest.len() < len + 2 {
        return Err(not_sealed);
    }
    let (found, rest) = rest.split_at(len);
    if found != kind.as_bytes() {
        return Err(CodecError::WrongKind {
            expected: kind,
            found: String::from_utf8_lossy(found).into_owned(),
        });
    }
    let version = u16::from_le_bytes([rest[0], rest[1]]);
    if version > supported {
        return Err(CodecError::TooNew {
            kind,
            found: version,
            supported,
        });
    }
    Ok(Envelope {
        version,
        body: &rest[2..],
    })
}

/// Encodes `value` with `codec` and seals it as `kind` at `version`.
pub fn encode_sealed<T: Serialize>(
    codec: &impl Codec,
    kind: &'static str,
    version: u16,
    value: &T,
) -> Result<Vec<u8>, CodecError> {
    Ok(seal(kind, version, &codec.encode(kind, value)?))
}

/// Opens a value sealed at exactly `version` (the only one this build writes) and decodes it.
pub fn decode_sealed<T: DeserializeOwned>(
    codec: &impl Codec,
    kind: &'static str,
    version: u16,
    bytes: &[u8],
) -> Result<T, CodecError> {
    let envelope = open(kind, version, bytes)?;
    if envelope.version != version {
        return Err(CodecError::Decode {
            what: kind,
            reason: format!(
                "format version {} is older than this build reads ({version})",
                envelope.version
            ),
        });
    }
    codec.decode(kind, envelope.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict};
    use proptest::prelude::*;

    fn message() -> Message {
        let mut content = RecordDict::new();
        let mut arrays = ArrayRecord::default();
        arrays
            .0
            .insert("w".into(), Array::from_slice(&[1.5f32, -2.0, 3.25]));
        content.insert("arrays", arrays);
        let mut config = ConfigRecord::new();
        config.insert("server-round", 3i64);
        content.insert("config", config);
        content.insert("metrics", MetricRecord::default());
        let mut m = Message::new(content, 7, "train");
        m.metadata.message_id = "1-2".into();
        m.metadata.ttl = 60.0;
        m
    }

    #[test]
    fn a_message_survives_the_round_trip() {
        let m = message();
        let bytes = encode_sealed(&Bincode, "message", 1, &m).unwrap();
        let back: Message = decode_sealed(&Bincode, "message", 1, &bytes).unwrap();
        assert_eq!(back, m);
        let w = back.content().unwrap().array_record("arrays").unwrap();
        assert_eq!(
            w.0["w"].values::<f32>().unwrap().as_ref(),
            &[1.5, -2.0, 3.25]
        );
    }

    #[test]
    fn newer_versions_and_other_kinds_are_refused_by_name() {
        let bytes = encode_sealed(&Bincode, "checkpoint", 3, &5u64).unwrap();
        let e = decode_sealed::<u64>(&Bincode, "checkpoint", 2, &bytes).unwrap_err();
        assert!(e.to_string().contains("version 3 is newer"), "{e}");
        let e = decode_sealed::<u64>(&Bincode, "message", 3, &bytes).unwrap_err();
        assert!(matches!(e, CodecError::WrongKind { .. }), "{e}");
        let e = decode_sealed::<u64>(&Bincode, "checkpoint", 4, &bytes).unwrap_err();
        assert!(e.to_string().contains("older"), "{e}");
        assert_eq!(open("checkpoint", 4, &bytes).unwrap().version, 3);
    }

    proptest! {
        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_sealed::<Message>(&Bincode, "message", 1, &bytes);
            let _ = Bincode.decode::<Message>("message", &bytes);
        }

        #[test]
        fn truncation_is_detected(cut in 0usize..40) {
            let bytes = encode_sealed(&Bincode, "message", 1, &message()).unwrap();
            let cut = cut.min(bytes.len() - 1);
            prop_assert!(decode_sealed::<Message>(&Bincode, "message", 1, &bytes[..cut]).is_err());
        }
    }
}
