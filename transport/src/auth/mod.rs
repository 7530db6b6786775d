//! SuperNode authentication: P-384 key pairs (Flower's key type), the SuperLink's allow-list
//! of node public keys, and signed requests.
//!
//! Flower signs an ISO timestamp only, so a captured request can be replayed for minutes.
//! Here every Fleet request carries the node's public key, a millisecond timestamp, a
//! random 128-bit nonce and the sha256 of its body, signed together with the RPC path
//! (ECDSA P-384 with SHA-384); the SuperLink accepts a timestamp within a short window
//! (±30 s by default) and not before it started, and each nonce once ([`Verifier`]). Key files are read in every format users have: PKCS#8 and SEC1 PEM,
//! and the OpenSSH format that `ssh-keygen -t ecdsa -b 384` (Flower's `generate.sh`) writes.

mod allow_list;
mod ec;
mod error;
mod keys;
mod openssh;
mod replay;
mod signed;

pub use allow_list::{load_allow_list, parse_allow_list};
pub use error::{AllowListError, AuthError, KeyError};
pub use keys::{NodeKeyPair, NodePublicKey};
pub use signed::{
    DEFAULT_WINDOW, HEADER_BODY_SHA256, HEADER_NODE_KEY, HEADER_NONCE, HEADER_SIGNATURE,
    HEADER_TIMESTAMP, SignedBy, SignedHeaders, Verifier, unix_ms,
};

#[cfg(test)]
mod tests;
