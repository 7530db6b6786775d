//! What can go wrong with keys, allow-lists and signed requests.

use thiserror::Error;

/// A key that could not be read, parsed or made.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum KeyError {
    /// The file could not be read (missing, no permission).
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    /// The file was read but holds no usable key; `problem` says what is wrong.
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
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
    pub problem: String,
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AuthError {
    #[error(
        "missing header {0}: this SuperLink requires node authentication (start the SuperNode with --auth-supernode-private-key)"
    )]
    Missing(&'static str),
    #[error("garbled header {header}: {problem}")]
    Garbled {
        header: &'static str,
        problem: String,
    },
    #[error("bad signature: the request was not signed by the key it names")]
    BadSignature,
    #[error(
        "clock skew of {skew_s} s beyond the {window_s} s window: check the clocks of SuperNode and SuperLink"
    )]
    ClockSkew { skew_s: u64, window_s: u64 },
    #[error("replayed request: nonce {nonce} was already used within the last {window_s} s")]
    Replayed { nonce: String, window_s: u64 },
    /// More requests within one window than the replay cache may remember.
    #[error("too many signed requests at once ({0} within the window); try again")]
    Overloaded(usize),
}
