//! Signed requests: what a SuperNode attaches to every Fleet call and how the SuperLink
//! checks it.
//!
//! The node signs `floret-node-auth-v2 \n path \n timestamp \n nonce \n key \n body-sha256`
//! with ECDSA P-384 / SHA-384 and sends five ASCII metadata headers:
//!
//! | header | value |
//! |---|---|
//! | `floret-node-key` | base64 SubjectPublicKeyInfo DER of the node's key |
//! | `floret-auth-timestamp` | unix time in milliseconds, decimal |
//! | `floret-auth-nonce` | 128 random bits, 32 lowercase hex digits |
//! | `floret-auth-body-sha256` | sha256 of the request body, 64 lowercase hex digits |
//! | `floret-auth-signature` | base64 of the fixed-size signature r‖s (96 bytes) |
//!
//! The signature covers the RPC path, so a signed heartbeat cannot be replayed as another
//! call, and the body's digest, so a captured signature cannot carry another body (another
//! node id, other replies). The body is the request message's protobuf encoding, hashed
//! by the sender before sending and by the SuperLink after decoding it (prost encodes a
//! message the same way every time); the headers alone are checked before the digest, so
//! a transport that authenticates before reading the body can do the first half first.
//!
//! Which requests are refused, in order: a missing or garbled header; a timestamp further
//! than the window (±30 s) from the SuperLink's clock; a timestamp before the SuperLink
//! started (see below); a bad signature; a body whose digest is not the signed one; a nonce
//! already seen. The nonce cache lives in memory, so a SuperLink that restarts forgets it;
//! refusing what was signed before the start closes that gap without writing every nonce
//! to disk. A node signs with its own clock, so one whose clock runs behind the SuperLink's
//! is refused this way for as long as it lags (at most the window, beyond which it is
//! refused for skew anyway): that refusal is UNAVAILABLE, which SuperNodes retry with
//! backoff, so an honest node is delayed by its lag, never turned away.

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
/// Metadata header carrying the sha256 of the request body, 64 lowercase hex digits.
pub const HEADER_BODY_SHA256: &str = "floret-auth-body-sha256";
/// Metadata header carrying the base64 r‖s signature over path, timestamp, nonce, key and
/// body digest.
pub const HEADER_SIGNATURE: &str = "floret-auth-signature";

/// How far a request's timestamp may be from the SuperLink's clock, either way.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// Most nonces remembered at once: at 30 s this is over 30,000 signed requests a second.
const REPLAY_CAPACITY: usize = 1 << 20;

/// Longest header value accepted before any parsing (a P-384 SPKI is 120 bytes).
const MAX_HEADER_LEN: usize = 512;

/// The five header values of one signed request.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedHeaders {
    /// Value of [`HEADER_NODE_KEY`].
    pub node_key: String,
    /// Value of [`HEADER_TIMESTAMP`].
    pub timestamp: String,
    /// Value of [`HEADER_NONCE`].
    pub nonce: String,
    /// Value of [`HEADER_BODY_SHA256`].
    pub body_sha256: String,
    /// Value of [`HEADER_SIGNATURE`].
    pub signature: String,
}

impl SignedHeaders {
    /// (name, value) pairs, to attach as metadata.
    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            (HEADER_NODE_KEY, &self.node_key),
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_NONCE, &self.nonce),
            (HEADER_BODY_SHA256, &self.body_sha256),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }
}

fn signed_bytes(
    path: &str,
    timestamp: &str,
    nonce: &str,
    node_key: &str,
    body_sha256: &str,
) -> Vec<u8> {
    format!("floret-node-auth-v2\n{path}\n{timestamp}\n{nonce}\n{node_key}\n{body_sha256}")
        .into_bytes()
}

/// The digest a signature carries for `body`: sha256, lowercase hex.
fn body_digest(body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    Sha256::digest(body)
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl NodeKeyPair {
    /// Signs a call to `path` (e.g. `/flwr.proto.Fleet/Heartbeat`) carrying `body` (the
    /// request's encoding) at `now_ms` with `nonce`. Deterministic, for tests;
    /// [`NodeKeyPair::sign_request_now`] picks time and nonce.
    pub fn sign_request(&self, path: &str, body: &[u8], now_ms: u64, nonce: u128) -> SignedHeaders {
        let node_key = STANDARD.encode(self.public_key().spki_der());
        let timestamp = now_ms.to_string();
        let nonce = format!("{nonce:032x}");
        let body_sha256 = body_digest(body);
        let signed = signed_bytes(path, &timestamp, &nonce, &node_key, &body_sha256);
        let signature = STANDARD.encode(self.sign(&signed));
        SignedHeaders {
            node_key,
            timestamp,
            nonce,
            body_sha256,
            signature,
        }
    }

    /// Signs a call to `path` carrying `body` now, with a fresh random nonce.
    // The timestamp is wall-clock time, which the SuperLink compares with its own clock.
    #[allow(clippy::disallowed_methods)]
    pub fn sign_request_now(&self, path: &str, body: &[u8]) -> SignedHeaders {
        self.sign_request(path, body, unix_ms(SystemTime::now()), rand::random())
    }
}

/// Checks signed requests: the SuperLink keeps one for the Fleet API.
pub struct Verifier {
    window: Duration,
    /// When this SuperLink started (unix ms): what was signed before is refused, since the
    /// nonces of that time were forgotten with the last process.
    started_ms: u64,
    seen: Mutex<ReplayCache>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("window", &self.window)
            .field("started_ms", &self.started_ms)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for a SuperLink that started at `started_ms` (unix ms): it accepts
    /// timestamps within `window` of its clock, either way, and not before `started_ms`,
    /// and remembers each nonce for the window so that a copied request is refused.
    pub fn new(window: Duration, started_ms: u64) -> Verifier {
        Verifier::with_capacity(window, started_ms, REPLAY_CAPACITY)
    }

    pub(crate) fn with_capacity(window: Duration, started_ms: u64, capacity: usize) -> Verifier {
        Verifier {
            window,
            started_ms,
            seen: Mutex::new(ReplayCache::new(capacity)),
        }
    }

    /// Nonces remembered now.
    pub fn remembered(&self) -> usize {
        self.seen.lock().map(|c| c.len()).unwrap_or(0)
    }

    /// Checks the signed request to `path` carrying `body` (its encoding) whose headers
    /// `header` looks up, at `now_ms` (unix ms, passed in so that the decision is
    /// testable), and returns the key that signed it. Whether that key may do what it
    /// asks is the caller's decision.
    ///
    /// Order: headers, window, start, signature, body digest, and only then the replay
    /// cache, so that unsigned garbage cannot fill the cache.
    ///
    /// # Errors
    /// [`AuthError`] naming the cause.
    pub fn verify<'a>(
        &self,
        path: &str,
        body: &[u8],
        header: impl Fn(&'static str) -> Option<&'a str>,
        now_ms: u64,
    ) -> Result<NodePublicKey, AuthError> {
        let (signed, nonce) = self.check_headers(path, header, now_ms)?;
        // The body before the nonce: a tampered copy must not burn the original's nonce.
        signed.check_body(body)?;
        self.spend(&nonce)?;
        Ok(signed.key)
    }

    /// The headers' part of [`Verifier::verify`]: everything but the body, so that a server
    /// can refuse an unsigned or forged call before it reads a byte of its body. The nonce
    /// is spent here; the caller must then [`SignedBy::check_body`] once the body is in.
    ///
    /// # Errors
    /// As [`Verifier::verify`], except [`AuthError::BodyChanged`].
    pub fn verify_headers<'a>(
        &self,
        path: &str,
        header: impl Fn(&'static str) -> Option<&'a str>,
        now_ms: u64,
    ) -> Result<SignedBy, AuthError> {
        let (signed, nonce) = self.check_headers(path, header, now_ms)?;
        self.spend(&nonce)?;
        Ok(signed)
    }

    /// Every check of the headers but the nonce's freshness, which [`Verifier::spend`] then
    /// records.
    fn check_headers<'a>(
        &self,
        path: &str,
        header: impl Fn(&'static str) -> Option<&'a str>,
        now_ms: u64,
    ) -> Result<(SignedBy, Nonce), AuthError> {
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
        let body_sha256 = get(HEADER_BODY_SHA256)?;
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
        if sent_ms < self.started_ms {
            return Err(AuthError::BeforeStart {
                early_ms: self.started_ms - sent_ms,
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
        let signed = signed_bytes(path, timestamp, nonce, node_key, body_sha256);
        if !key.verifies(&signed, &signature) {
            return Err(AuthError::BadSignature);
        }
        let signed = SignedBy {
            key,
            body_sha256: body_sha256.to_string(),
        };
        let nonce = Nonce {
            value: nonce_value,
            text: nonce.to_string(),
            expires_ms: sent_ms.saturating_add(window_ms),
            now_ms,
        };
        Ok((signed, nonce))
    }

    /// Records a checked request's nonce; refuses it if seen within the window.
    fn spend(&self, nonce: &Nonce) -> Result<(), AuthError> {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.admit(nonce.value, nonce.expires_ms, nonce.now_ms) {
            Admit::Fresh => Ok(()),
            Admit::Replayed => Err(AuthError::Replayed {
                nonce: nonce.text.clone(),
                window_s: self.window.as_secs(),
            }),
            Admit::Full => Err(AuthError::Overloaded(seen.len())),
        }
    }
}

/// A checked request's nonce, not yet recorded as seen.
struct Nonce {
    value: u128,
    text: String,
    expires_ms: u64,
    now_ms: u64,
}

/// A request whose headers carry a valid, fresh signature: its signer, and the digest of the
/// body it signed, still to be compared with the body that arrives.
#[derive(Debug, Clone)]
pub struct SignedBy {
    /// Who signed.
    pub key: NodePublicKey,
    /// `floret-auth-body-sha256` as signed.
    body_sha256: String,
}

impl SignedBy {
    /// A call on a connection where `key` already signed in (see `NodeAuth::pre_auth`):
    /// its body is still compared with the digest its headers name.
    pub(crate) fn on_connection(key: NodePublicKey, body_sha256: &str) -> SignedBy {
        SignedBy {
            key,
            body_sha256: body_sha256.to_owned(),
        }
    }

    /// Whether `body` (the request's protobuf encoding) is the body that was signed.
    ///
    /// # Errors
    /// [`AuthError::BodyChanged`] when it is not.
    pub fn check_body(&self, body: &[u8]) -> Result<(), AuthError> {
        if body_digest(body) == self.body_sha256 {
            Ok(())
        } else {
            Err(AuthError::BodyChanged)
        }
    }
}
