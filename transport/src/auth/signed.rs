//! Signed requests: what a SuperNode attaches to every Fleet call and how the SuperLink
//! checks it.
//!
//! The node signs `floret-node-auth-v1 \n path \n timestamp \n nonce \n key` with ECDSA
//! P-384 / SHA-384 and sends four ASCII metadata headers:
//!
//! | header | value |
//! |---|---|
//! | `floret-node-key` | base64 SubjectPublicKeyInfo DER of the node's key |
//! | `floret-auth-timestamp` | unix time in milliseconds, decimal |
//! | `floret-auth-nonce` | 128 random bits, 32 lowercase hex digits |
//! | `floret-auth-signature` | base64 of the fixed-size signature r‖s (96 bytes) |
//!
//! The signature covers the RPC path, so a signed heartbeat cannot be replayed as another
//! call, but not the request body: within the window the nonce makes each signature
//! single-use, and TLS (which node authentication is meant to run under) keeps the body
//! from being altered in transit.

use super::error::AuthError;
use super::keys::{NodeKeyPair, NodePublicKey};
use super::replay::{Admit, ReplayCache};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Metadata header carrying the node's public key (base64 SPKI DER): who signed.
pub const HEADER_NODE_KEY: &str = "floret-node-key";
/// Metadata header carrying the signing time, unix milliseconds in decimal.
pub const HEADER_TIMESTAMP: &str = "floret-auth-timestamp";
/// Metadata header carrying the single-use nonce, 32 lowercase hex digits.
pub const HEADER_NONCE: &str = "floret-auth-nonce";
/// Metadata header carrying the base64 r‖s signature over path, timestamp, nonce and key.
pub const HEADER_SIGNATURE: &str = "floret-auth-signature";

/// How far a request's timestamp may be from the SuperLink's clock, either way.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// Most nonces remembered at once: at 30 s this is over 30,000 signed requests a second.
const REPLAY_CAPACITY: usize = 1 << 20;

/// Longest header value accepted before any parsing (a P-384 SPKI is 120 bytes).
const MAX_HEADER_LEN: usize = 512;

/// The four header values of one signed request.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedHeaders {
    /// Value of [`HEADER_NODE_KEY`].
    pub node_key: String,
    /// Value of [`HEADER_TIMESTAMP`].
    pub timestamp: String,
    /// Value of [`HEADER_NONCE`].
    pub nonce: String,
    /// Value of [`HEADER_SIGNATURE`].
    pub signature: String,
}

impl SignedHeaders {
    /// (name, value) pairs, to attach as metadata.
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            (HEADER_NODE_KEY, &self.node_key),
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_NONCE, &self.nonce),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }
}

fn signed_bytes(path: &str, timestamp: &str, nonce: &str, node_key: &str) -> Vec<u8> {
    format!("floret-node-auth-v1\n{path}\n{timestamp}\n{nonce}\n{node_key}").into_bytes()
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl NodeKeyPair {
    /// Signs a call to `path` (e.g. `/flwr.proto.Fleet/Heartbeat`) at `now_ms` with `nonce`.
    /// Deterministic, for tests; [`NodeKeyPair::sign_request_now`] picks both.
    pub fn sign_request(&self, path: &str, now_ms: u64, nonce: u128) -> SignedHeaders {
        let node_key = STANDARD.encode(self.public_key().spki_der());
        let timestamp = now_ms.to_string();
        let nonce = format!("{nonce:032x}");
        let signature =
            STANDARD.encode(self.sign(&signed_bytes(path, &timestamp, &nonce, &node_key)));
        SignedHeaders {
            node_key,
            timestamp,
            nonce,
            signature,
        }
    }

    /// Signs a call to `path` now, with a fresh random nonce.
    // The timestamp is wall-clock time, which the SuperLink compares with its own clock.
    #[allow(clippy::disallowed_methods)]
    pub fn sign_request_now(&self, path: &str) -> SignedHeaders {
        self.sign_request(path, unix_ms(SystemTime::now()), rand::random())
    }
}

/// Checks signed requests: the SuperLink keeps one for the Fleet API.
pub struct Verifier {
    window: Duration,
    seen: Mutex<ReplayCache>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new(DEFAULT_WINDOW)
    }
}

impl Verifier {
    /// A verifier that accepts timestamps within `window` of its clock, either way, and
    /// remembers each nonce for that long so that a copied request is refused.
    pub fn new(window: Duration) -> Verifier {
        Verifier::with_capacity(window, REPLAY_CAPACITY)
    }

    pub(crate) fn with_capacity(window: Duration, capacity: usize) -> Verifier {
        Verifier {
            window,
            seen: Mutex::new(ReplayCache::new(capacity)),
        }
    }

    /// Nonces remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Checks the signed request to `path` whose headers `header` looks up, at `now_ms`
    /// (unix ms, passed in so that the decision is testable), and returns the key that
    /// signed it. Whether that key may do what it asks is the caller's decision.
    ///
    /// Order: headers, window, signature, and only then the replay cache, so that
    /// unsigned garbage cannot fill the cache.
    ///
    /// # Errors
    /// [`AuthError`] naming the cause.
    pub fn verify<'a>(
        &self,
        path: &str,
        header: impl Fn(&'static str) -> Option<&'a str>,
        now_ms: u64,
    ) -> Result<NodePublicKey, AuthError> {
        let get = |name: &'static str| -> Result<&'a str, AuthError> {
            let value = header(name).ok_or(AuthError::Missing(name))?;
            if value.len() > MAX_HEADER_LEN {
                return Err(AuthError::Garbled {
                    header: name,
                    problem: format!("{} bytes, more than {MAX_HEADER_LEN}", value.len()),
                });
            }
            Ok(value)
        };
        let node_key = get(HEADER_NODE_KEY)?;
        let timestamp = get(HEADER_TIMESTAMP)?;
        let nonce = get(HEADER_NONCE)?;
        let signature = get(HEADER_SIGNATURE)?;

        let sent_ms: u64 = timestamp.parse().map_err(|_| AuthError::Garbled {
            header: HEADER_TIMESTAMP,
            problem: "not a unix time in milliseconds".into(),
        })?;
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let skew_ms = sent_ms.abs_diff(now_ms);
        if skew_ms > window_ms {
            return Err(AuthError::ClockSkew {
                skew_s: skew_ms.div_ceil(1000),
                window_s: self.window.as_secs(),
            });
        }
        if nonce.len() != 32 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::Garbled {
                header: HEADER_NONCE,
                problem: "not 32 hex digits".into(),
            });
        }
        let nonce_value = u128::from_str_radix(nonce, 16).map_err(|_| AuthError::Garbled {
            header: HEADER_NONCE,
            problem: "not 32 hex digits".into(),
        })?;
        let key_der = STANDARD.decode(node_key).map_err(|e| AuthError::Garbled {
            header: HEADER_NODE_KEY,
            problem: format!("not base64: {e}"),
        })?;
        let key = NodePublicKey::from_spki_der(&key_der).map_err(|e| AuthError::Garbled {
            header: HEADER_NODE_KEY,
            problem: e.to_string(),
        })?;
        let signature = STANDARD.decode(signature).map_err(|e| AuthError::Garbled {
            header: HEADER_SIGNATURE,
            problem: format!("not base64: {e}"),
        })?;
        if !key.verifies(&signed_bytes(path, timestamp, nonce, node_key), &signature) {
            return Err(AuthError::BadSignature);
        }

        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.admit(nonce_value, sent_ms.saturating_add(window_ms), now_ms) {
            Admit::Fresh => Ok(key),
            Admit::Replayed => Err(AuthError::Replayed {
                nonce: nonce.to_string(),
                window_s: self.window.as_secs(),
            }),
            Admit::Full => Err(AuthError::Overloaded(seen.len())),
        }
    }
}
