//! Node authentication on the Fleet API: the one place where signature headers are
//! attached (client) and checked (server).
//!
//! Signing is a plain function applied to each request rather than an interceptor in the
//! channel type, so that how clients are built (TCP, QUIC, TLS) stays independent of it.

use super::status::unauthenticated;
use crate::auth::{
    AuthError, DEFAULT_WINDOW, HEADER_BODY_SHA256, HEADER_NODE_KEY, HEADER_NONCE, HEADER_SIGNATURE,
    HEADER_TIMESTAMP, NodeKeyPair, NodePublicKey, SignedBy, Verifier, unix_ms,
};
use floret_core::NodeAuthority;
use std::sync::Arc;
use std::time::SystemTime;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// gRPC paths of the Fleet methods: what a signature covers.
pub(crate) mod path {
    pub(crate) const REGISTER_NODE: &str = "/floret.v1.Fleet/RegisterNode";
    pub(crate) const DEACTIVATE_NODE: &str = "/floret.v1.Fleet/DeactivateNode";
    pub(crate) const HEARTBEAT: &str = "/floret.v1.Fleet/Heartbeat";
    pub(crate) const PULL_MESSAGES: &str = "/floret.v1.Fleet/PullMessages";
    pub(crate) const PUSH_MESSAGES: &str = "/floret.v1.Fleet/PushMessages";
    pub(crate) const GET_RUN: &str = "/floret.v1.Fleet/GetRun";
    pub(crate) const GET_FAB: &str = "/floret.v1.Fleet/GetFab";
    pub(crate) const SUBSCRIBE: &str = "/floret.v1.Fleet/Subscribe";
    pub(crate) const PUSH_OBJECT: &str = "/floret.v1.Fleet/PushObject";
    pub(crate) const PULL_OBJECT: &str = "/floret.v1.Fleet/PullObject";
    pub(crate) const CONFIRM_DELIVERIES: &str = "/floret.v1.Fleet/ConfirmDeliveries";
}

/// Wraps `body` into a request to `path`, signed with `key` when there is one. The
/// signature covers the body's protobuf encoding, which the SuperLink encodes again from
/// what it decoded to check it.
pub(crate) fn sign<T: prost::Message>(
    key: Option<&NodeKeyPair>,
    path: &str,
    body: T,
) -> Request<T> {
    let headers = key.map(|key| key.sign_request_now(path, &body.encode_to_vec()));
    let mut request = Request::new(body);
    if let Some(headers) = headers {
        for (name, value) in headers.pairs() {
            // Our own base64, hex and decimal values are always valid ASCII metadata.
            if let Ok(mut value) = MetadataValue::try_from(value) {
                value.set_sensitive(single_use(name));
                request.metadata_mut().insert(name, value);
            }
        }
    }
    request
}

/// Whether a signature header's value is new in every request (timestamp, nonce,
/// signature). Such values are sent "never indexed" (marked sensitive): HTTP/2 header
/// compression would otherwise store each of them in the connection's table on both
/// ends, where no later request could use it, and evict the key and digest, which do
/// repeat. On a SuperLink holding thousands of connections these tables were kilobytes
/// of memory per node (D3 in docs/BENCHMARKS.md).
fn single_use(header: &str) -> bool {
    matches!(header, HEADER_TIMESTAMP | HEADER_NONCE | HEADER_SIGNATURE)
}

/// The server side of node authentication: checks signatures, then asks the SuperLink's
/// allow-list whether the signer may do what the request asks.
#[cfg(feature = "server")]
#[derive(Clone)]
pub struct NodeAuth {
    /// Checks headers, clock window, start, signature and body digest, and refuses
    /// replayed nonces; shared so that every connection sees the same replay cache.
    pub verifier: Arc<Verifier>,
    /// Decides whether a verified key may act as a node, or as a given node.
    pub authority: Arc<dyn NodeAuthority>,
}

#[cfg(feature = "server")]
impl std::fmt::Debug for NodeAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeAuth")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

/// What a request claims to be allowed to do.
pub(crate) enum Claim {
    /// Act as a node with an allowed key (register, read runs and FABs).
    Admitted,
    /// Act as this node.
    Node(u64),
}

#[cfg(feature = "server")]
impl NodeAuth {
    /// Node authentication against `authority`, with the default clock window, for a
    /// SuperLink starting now: requests signed before this call are refused.
    // The start is wall-clock time, compared with the wall-clock time nodes sign.
    #[allow(clippy::disallowed_methods)]
    pub fn new(authority: Arc<dyn NodeAuthority>) -> NodeAuth {
        NodeAuth {
            verifier: Arc::new(Verifier::new(DEFAULT_WINDOW, unix_ms(SystemTime::now()))),
            authority,
        }
    }

    /// The verified key of a request to `path`, if its signer may make `claim`; else
    /// UNAUTHENTICATED naming the cause (UNAVAILABLE for a request signed before this
    /// SuperLink started, which an honest node whose clock lags retries). The headers may
    /// have been verified already, before the body was read ([`NodeAuth::pre_auth`]); the
    /// body is compared with the signed digest here, once it is in.
    pub(crate) fn check<T: prost::Message>(
        &self,
        request: &Request<T>,
        path: &str,
        claim: Claim,
    ) -> Result<NodePublicKey, Status> {
        let signed = match request.extensions().get::<Verified>() {
            Some(Verified(signed)) => signed.clone(),
            None => {
                let metadata = request.metadata();
                self.verify(path, |name| {
                    metadata.get(name).and_then(|v| v.to_str().ok())
                })?
            }
        };
        signed
            .check_body(&request.get_ref().encode_to_vec())
            .map_err(|e| unauthenticated(e.to_string()))?;
        let key = signed.key;
        if let Claim::Node(node_id) = claim
            && !self.authority.owns(node_id, key.spki_der())
        {
            return Err(unauthenticated(format!(
                "the SuperNode's public key ({}) does not belong to node {node_id}",
                key.fingerprint()
            )));
        }
        Ok(key)
    }

    /// The key that signed a request to `path` (headers, clock window, signature, nonce),
    /// if the allow-list admits it.
    // Signatures carry wall-clock time, checked against this machine's wall clock.
    #[allow(clippy::disallowed_methods)]
    fn verify<'a>(
        &self,
        path: &str,
        header: impl Fn(&'static str) -> Option<&'a str>,
    ) -> Result<SignedBy, Status> {
        let signed = self
            .verifier
            .verify_headers(path, header, unix_ms(SystemTime::now()))
            .map_err(|e| match e {
                AuthError::BeforeStart { .. } => Status::unavailable(e.to_string()),
                e => unauthenticated(e.to_string()),
            })?;
        if !self.authority.admits(signed.key.spki_der()) {
            return Err(unauthenticated(format!(
                "the SuperNode's public key ({}) is not on the SuperLink's allow-list: add it with `flwr supernode register` or --auth-list-public-keys",
                signed.key.fingerprint()
            )));
        }
        Ok(signed)
    }

    /// Node authentication from the headers alone, before the body of a call is read: a
    /// peer without an admitted key cannot make the SuperLink receive its body. The key is
    /// left in the extensions for [`NodeAuth::check`], so each signature is verified (and
    /// its nonce spent) once.
    ///
    /// On an encrypted connection (TLS, QUIC) the first call that passes in full signs the
    /// connection in: later calls there that name the same key are taken as that node's
    /// without another ECDSA check, because only the peer that signed can send on the
    /// connection, and TLS already rules out altered or replayed records. The allow-list is
    /// still asked on every call and the body still compared with its signed digest. This
    /// is what lets one SuperLink hold 10,000 heart-beating nodes: a P-384 verification
    /// costs about a millisecond, a heartbeat without it microseconds (D3 in
    /// docs/BENCHMARKS.md). Plaintext connections verify every call.
    pub(crate) fn pre_auth(self) -> crate::guard::PreAuth {
        Arc::new(move |path, headers, extensions| {
            let header = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok());
            let connection = crate::guard::ConnInfo::encrypted(extensions).cloned();
            let signed_in = match (&connection, header(HEADER_NODE_KEY)) {
                (Some(c), Some(h)) => c.signed_in_as(h).cloned(),
                _ => None,
            };
            let signed = match signed_in {
                Some(key) => self.on_signed_in_connection(key, header(HEADER_BODY_SHA256))?,
                None => {
                    let signed = self.verify(path, header)?;
                    if let (Some(c), Some(h)) = (&connection, header(HEADER_NODE_KEY)) {
                        c.sign_in(h, &signed.key);
                    }
                    signed
                }
            };
            extensions.insert(Verified(signed));
            Ok(())
        })
    }

    /// A call on a connection its key signed in on: still on the allow-list, and with the
    /// digest of the body it sends.
    fn on_signed_in_connection(
        &self,
        key: NodePublicKey,
        body_sha256: Option<&str>,
    ) -> Result<SignedBy, Status> {
        let body_sha256 = body_sha256
            .ok_or_else(|| unauthenticated(AuthError::Missing(HEADER_BODY_SHA256).to_string()))?;
        if !self.authority.admits(key.spki_der()) {
            return Err(unauthenticated(format!(
                "the SuperNode's public key ({}) is no longer on the SuperLink's allow-list",
                key.fingerprint()
            )));
        }
        Ok(SignedBy::on_connection(key, body_sha256))
    }
}

/// A signature verified from a call's headers by [`NodeAuth::pre_auth`].
#[derive(Clone)]
struct Verified(SignedBy);
