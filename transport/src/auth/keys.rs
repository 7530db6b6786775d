//! P-384 key pairs and public keys, in the formats node keys come in (the curve arithmetic
//! is `ec`'s).

use super::ec::{Signing, Verifying};
use super::error::KeyError;
use super::openssh;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::path::Path;

/// A node's public key. Kept with its SubjectPublicKeyInfo DER, the form that travels in
/// `RegisterNode.public_key` and in the `floret-node-key` header and that the allow-list
/// is keyed by.
#[derive(Clone)]
pub struct NodePublicKey {
    key: Verifying,
    spki: Bytes,
}

impl PartialEq for NodePublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.spki == other.spki
    }
}
impl Eq for NodePublicKey {}
impl std::hash::Hash for NodePublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.spki.hash(state);
    }
}

impl fmt::Debug for NodePublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodePublicKey({})", self.fingerprint())
    }
}

impl NodePublicKey {
    fn from_public(key: Verifying) -> Result<NodePublicKey, KeyError> {
        let spki = key
            .spki_der()
            .map_err(|e| KeyError::Invalid(format!("cannot encode the public key: {e}")))?;
        Ok(NodePublicKey {
            key,
            spki: Bytes::from(spki),
        })
    }

    fn from_sec1_point(point: &[u8]) -> Result<NodePublicKey, KeyError> {
        let public = Verifying::from_sec1(point).map_err(|e| {
            KeyError::Invalid(format!("the public point is not on the P-384 curve: {e}"))
        })?;
        NodePublicKey::from_public(public)
    }

    /// From SubjectPublicKeyInfo DER (what `RegisterNode.public_key` carries).
    ///
    /// # Errors
    /// [`KeyError::Invalid`] when the bytes are not a P-384 public key.
    pub fn from_spki_der(der: &[u8]) -> Result<NodePublicKey, KeyError> {
        let public = Verifying::from_spki_der(der)
            .map_err(|e| KeyError::Invalid(format!("not a P-384 SubjectPublicKeyInfo: {e}")))?;
        NodePublicKey::from_public(public)
    }

    /// From text: the OpenSSH one-line form (`ecdsa-sha2-nistp384 AAAA... comment`) or a
    /// PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming what is wrong.
    pub fn parse(text: &str) -> Result<NodePublicKey, KeyError> {
        let text = text.trim();
        if text.starts_with("-----BEGIN PUBLIC KEY-----") {
            let public = Verifying::from_pem(text)
                .map_err(|e| KeyError::Invalid(format!("not a P-384 PEM public key: {e}")))?;
            return NodePublicKey::from_public(public);
        }
        if text.starts_with("-----BEGIN") {
            return Err(KeyError::Invalid(
                "this is not a public key (a private key or certificate?): expected `ecdsa-sha2-nistp384 AAAA...` or `-----BEGIN PUBLIC KEY-----`".into(),
            ));
        }
        let point = openssh::parse_public_line(text).map_err(KeyError::Invalid)?;
        NodePublicKey::from_sec1_point(&point)
    }

    /// Reads a public key file (OpenSSH `.pub` or PEM).
    ///
    /// # Errors
    /// [`KeyError::Read`] when the file cannot be read, [`KeyError::File`] when it holds no
    /// P-384 public key.
    pub fn load(path: &Path) -> Result<NodePublicKey, KeyError> {
        NodePublicKey::parse(&read(path)?).map_err(|e| e.in_file(path))
    }

    /// SubjectPublicKeyInfo DER.
    pub fn spki_der(&self) -> &Bytes {
        &self.spki
    }

    fn point(&self) -> Vec<u8> {
        self.key.sec1_point()
    }

    /// The OpenSSH one-line form, as in `.pub` files and the allow-list CSV.
    pub fn to_openssh(&self, comment: &str) -> String {
        openssh::public_line(&self.point(), comment)
    }

    /// PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.spki);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(line));
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        out
    }

    /// `SHA256:...`, as `ssh-keygen -l` prints it for the same key, so an operator can
    /// match a listed node to a `.pub` file.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(openssh::public_blob(&self.point()));
        format!("SHA256:{}", STANDARD_NO_PAD.encode(digest))
    }

    /// Whether `signature` (fixed-size r||s) signs `message` under this key.
    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verifies(message, signature)
    }
}

/// A node's (or the SuperLink's) private key with its public key.
#[derive(Clone)]
pub struct NodeKeyPair {
    signing: Signing,
    public: NodePublicKey,
}

impl fmt::Debug for NodeKeyPair {
    /// Never prints the private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeKeyPair({})", self.public.fingerprint())
    }
}

impl NodeKeyPair {
    fn from_secret(signing: Signing) -> Result<NodeKeyPair, KeyError> {
        let public = NodePublicKey::from_public(signing.verifying())?;
        Ok(NodeKeyPair { signing, public })
    }

    /// A fresh key pair from the operating system's random number generator.
    ///
    /// # Errors
    /// [`KeyError::Random`] when the generator fails.
    pub fn generate() -> Result<NodeKeyPair, KeyError> {
        NodeKeyPair::from_secret(Signing::generate().map_err(KeyError::Random)?)
    }

    /// From the text of a private key file: PEM PKCS#8 (`PRIVATE KEY`), SEC1
    /// (`EC PRIVATE KEY`), or unencrypted OpenSSH (`OPENSSH PRIVATE KEY`, what
    /// `ssh-keygen -t ecdsa -b 384` and Flower's `generate.sh` write).
    ///
    /// # Errors
    /// [`KeyError::Invalid`] naming the problem.
    pub fn parse(text: &str) -> Result<NodeKeyPair, KeyError> {
        let text = text.trim();
        let secret = if text.starts_with(openssh::PRIVATE_BEGIN) {
            let (scalar, point) = openssh::parse_private(text).map_err(KeyError::Invalid)?;
            let secret = Signing::from_scalar(&scalar).map_err(|e| {
                KeyError::Invalid(format!(
                    "the secret scalar is not a valid P-384 scalar: {e}"
                ))
            })?;
            let pair = NodeKeyPair::from_secret(secret)?;
            if pair.public.point() != point {
                return Err(KeyError::Invalid(
                    "the OpenSSH key's public part does not belong to its private part".into(),
                ));
            }
            return Ok(pair);
        } else if text.starts_with("-----BEGIN PRIVATE KEY-----") {
            Signing::from_pkcs8_pem(text)
                .map_err(|e| KeyError::Invalid(format!("not a P-384 PKCS#8 private key: {e}")))?
        } else if text.starts_with("-----BEGIN EC PRIVATE KEY-----") {
            Signing::from_sec1_pem(text)
                .map_err(|e| KeyError::Invalid(format!("not a P-384 EC private key: {e}")))?
        } else if text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err(KeyError::Invalid(
                "the key is encrypted; Floret reads unencrypted keys only".into(),
            ));
        } else if text.starts_with(openssh::KEY_TYPE) || text.starts_with("-----BEGIN PUBLIC KEY") {
            return Err(KeyError::Invalid(
                "this is a public key; the private key is the file without `.pub`".into(),
            ));
        } else {
            return Err(KeyError::Invalid(
                "not a private key: expected PEM (`-----BEGIN PRIVATE KEY-----`, `-----BEGIN EC PRIVATE KEY-----`) or OpenSSH (`-----BEGIN OPENSSH PRIVATE KEY-----`)".into(),
            ));
        };
        NodeKeyPair::from_secret(secret)
    }

    /// Reads a private key file (see [`NodeKeyPair::parse`] for the formats).
    ///
    /// # Errors
    /// [`KeyError::Read`] when the file cannot be read, [`KeyError::File`] when it holds
    /// no P-384 private key.
    pub fn load(path: &Path) -> Result<NodeKeyPair, KeyError> {
        NodeKeyPair::parse(&read(path)?).map_err(|e| e.in_file(path))
    }

    /// The public half: what the SuperLink's allow-list names and what verifies signatures.
    pub fn public_key(&self) -> &NodePublicKey {
        &self.public
    }

    /// An unencrypted OpenSSH private key file, the format `generate.sh` produced, so the
    /// files `flwr keygen` writes also work with Flower and `ssh-keygen`.
    pub fn to_openssh_private(&self, comment: &str) -> String {
        let check: u32 = rand::random();
        openssh::private_file(&self.signing.scalar(), &self.public.point(), comment, check)
    }

    /// PEM PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// # Errors
    /// [`KeyError::Invalid`] if encoding fails (it does not for a valid key).
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        self.signing
            .to_pkcs8_pem()
            .map_err(|e| KeyError::Invalid(format!("cannot encode the private key: {e}")))
    }

    /// ECDSA P-384 with SHA-384 over `message`; fixed-size r||s (96 bytes).
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.signing.sign(message)
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|e| KeyError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}
