//! `DecodeError`: why received bytes are not a valid Floret/Flower message.

use std::fmt;
use thiserror::Error;

/// Why bytes from the wire could not be turned into a core value. Every variant names the
/// offending field as a path from the top-level message, e.g.
/// `Message.content["arrays"].array_record["fc1.weight"].shape`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The bytes are not a protobuf encoding of the expected message at all.
    #[error("{what} is not valid protobuf: {reason}")]
    Malformed {
        /// The message type that was expected, e.g. `Message`.
        what: &'static str,
        /// prost's reason.
        reason: String,
    },
    /// A sub-message that must be present is absent.
    #[error("{field} is missing")]
    Missing {
        /// Path of the absent field from the top-level message.
        field: String,
    },
    /// A union (protobuf `oneof`) with none of its alternatives set, e.g. a record value
    /// without a value: usually a peer speaking a newer schema.
    #[error("{field} has no value (expected one of: {expected})")]
    NoValue {
        /// Path of the union from the top-level message.
        field: String,
        /// The alternatives this side knows, for the message.
        expected: &'static str,
    },
    /// The field is present but its value is not acceptable.
    #[error("{field}: {problem}")]
    Invalid {
        /// Path of the field from the top-level message.
        field: String,
        /// What is wrong with its value.
        problem: String,
    },
}

/// Where in a message a value sits: a cheap, stack-allocated path that is rendered only when
/// an error is reported.
#[derive(Clone, Copy)]
pub(crate) enum Loc<'a> {
    Root(&'static str),
    Field(&'a Loc<'a>, &'static str),
    Key(&'a Loc<'a>, &'a str),
    Index(&'a Loc<'a>, usize),
}

/// Keys come from the peer: show enough to recognise one, never megabytes of it.
const MAX_KEY_CHARS: usize = 64;

impl<'a> Loc<'a> {
    pub(crate) fn field(&'a self, name: &'static str) -> Loc<'a> {
        Loc::Field(self, name)
    }

    pub(crate) fn key(&'a self, key: &'a str) -> Loc<'a> {
        Loc::Key(self, key)
    }

    pub(crate) fn index(&'a self, index: usize) -> Loc<'a> {
        Loc::Index(self, index)
    }

    pub(crate) fn missing(&self) -> DecodeError {
        DecodeError::Missing {
            field: self.to_string(),
        }
    }

    pub(crate) fn no_value(&self, expected: &'static str) -> DecodeError {
        DecodeError::NoValue {
            field: self.to_string(),
            expected,
        }
    }

    pub(crate) fn invalid(&self, problem: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            field: self.to_string(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for Loc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loc::Root(name) => f.write_str(name),
            Loc::Field(parent, name) => write!(f, "{parent}.{name}"),
            Loc::Key(parent, key) => {
                if key.chars().count() <= MAX_KEY_CHARS {
                    write!(f, "{parent}[{key:?}]")
                } else {
                    let head: String = key.chars().take(MAX_KEY_CHARS).collect();
                    write!(f, "{parent}[{head:?}...]")
                }
            }
            Loc::Index(parent, index) => write!(f, "{parent}[{index}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_fields_and_keys() {
        let root = Loc::Root("Message");
        let content = root.field("content");
        let rec = content.key("arrays");
        let arr = rec.field("array_record");
        let item = arr.key("w");
        assert_eq!(
            item.field("shape")
                .invalid("negative dimension -1")
                .to_string(),
            "Message.content[\"arrays\"].array_record[\"w\"].shape: negative dimension -1"
        );
    }

    #[test]
    fn long_keys_are_truncated() {
        let long = "k".repeat(1000);
        let root = Loc::Root("RecordDict");
        let shown = root.key(&long).to_string();
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("...]"));
    }
}
