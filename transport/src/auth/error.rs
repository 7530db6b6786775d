//! What can go wrong with keys, allow-lists and signed requests.

use thiserror::Error;

/// A key that could not be read, parsed or made.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum KeyError {
    /// The file could not be read (missing, no permission).
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file as it was given.
        path: String,
        /// The I/O error, worded for a user.
        reason: String,
    },
    /// The file was read but holds no usable key; `problem` says what is wrong.
    #[error("{path}: {problem}")]
    File {
        /// The file as it was given.
        path: String,
        /// What is wrong with its contents.
        problem: String,
    },
    /// Text that is not a key of a supported format.
    #[error("{0}")]
    Invalid(String),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

impl KeyError {
    /// Attaches the file the text came from.
    pub(crate) fn in_file(self, path: &std::path::Path) -> KeyError {
        match self {
            KeyError::Invalid(problem) => KeyError::File {
                path: path.display().to_string(),
                problem,
            },
            other => other,
        }
    }
}

/// A line of a `--auth-list-public-keys` CSV that is not a list of public keys.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{source_name}: line {line}: {problem}")]
pub struct AllowListError {
    /// The file, or "allow-list" for text not read from a file.
    pub source_name: String,
    /// 1-based; 0 when the file could not be read at all.
    pub line: usize,
    /// What is wrong with that line (or with the file, when `line` is 0).
    pub problem: String,
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AuthError {
    /// A required header is absent: the node did not sign at all. Holds the header's name.
    #[error(
        "missing header {0}: this SuperLink requires node authentication (start the SuperNode with --auth-supernode-private-key)"
    )]
    Missing(&'static str),
    /// A header is present but not in its format (too long, not base64, not a key, ...).
    #[error("garbled header {header}: {problem}")]
    Garbled {
        /// The header's name, one of the `HEADER_*` constants.
        header: &'static str,
        /// What is wrong with its value.
        problem: String,
    },
    /// The signature does not verify under the key in the request for this RPC path.
    #[error("bad signature: the request was not signed by the key it names")]
    BadSignature,
    /// The signature verifies, but the body is not the one it was made for: the request
    /// was altered after signing.
    #[error("the request body is not the one that was signed: it was altered on the way")]
    BodyChanged,
    /// Signed before this SuperLink started: a copy of a request to the SuperLink that ran
    /// before (whose nonces are forgotten), or a node whose clock lags; the node retries.
    #[error(
        "signed {early_ms} ms before this SuperLink started: a replay from before the restart, \
         or the SuperNode's clock is behind the SuperLink's (it is let in once its clock passes \
         the start; keep clocks in sync, e.g. with NTP)"
    )]
    BeforeStart {
        /// How long before the start the request was signed, in milliseconds.
        early_ms: u64,
    },
    /// The request's timestamp is further from the SuperLink's clock than the window allows.
    #[error(
        "clock skew of {skew_s} s beyond the {window_s} s window: check the clocks of SuperNode and SuperLink"
    )]
    ClockSkew {
        /// How far apart the clocks are, in seconds, rounded up.
        skew_s: u64,
        /// The largest skew accepted, in seconds.
        window_s: u64,
    },
    /// The nonce was already seen within the window: the request is a copy of an earlier one.
    #[error("replayed request: nonce {nonce} was already used within the last {window_s} s")]
    Replayed {
        /// The nonce as sent, 32 hex digits.
        nonce: String,
        /// How long a nonce is remembered, in seconds.
        window_s: u64,
    },
    /// More requests within one window than the replay cache may remember.
    #[error("too many signed requests at once ({0} within the window); try again")]
    Overloaded(usize),
}
