//! The P-384 arithmetic under [`NodePublicKey`](super::NodePublicKey) and
//! [`NodeKeyPair`](super::NodeKeyPair): `p384`'s keys with the `node-auth` feature. Without
//! it (an app binary, which signs and checks no Fleet call) the key types keep their shape,
//! but none can be made: every constructor here fails saying which feature is missing, and
//! the types are uninhabited, so nothing else needs to know.

#[cfg(feature = "node-auth")]
pub(super) use with_p384::{Signing, Verifying};
#[cfg(not(feature = "node-auth"))]
pub(super) use without::{Signing, Verifying};

#[cfg(feature = "node-auth")]
mod with_p384 {
    use p384::ecdsa::signature::{Signer as _, Verifier as _};
    use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
    use p384::elliptic_curve::Generate as _;
    use p384::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _, EncodePublicKey as _};
    use p384::pkcs8::{EncodePrivateKey as _, LineEnding};
    use p384::{PublicKey, SecretKey};

    /// A public key, for checking signatures.
    #[derive(Clone)]
    pub(in crate::auth) struct Verifying(VerifyingKey);

    impl Verifying {
        pub(in crate::auth) fn from_spki_der(der: &[u8]) -> Result<Verifying, String> {
            PublicKey::from_public_key_der(der)
                .map(Verifying::from)
                .map_err(|e| e.to_string())
        }

        pub(in crate::auth) fn from_pem(text: &str) -> Result<Verifying, String> {
            PublicKey::from_public_key_pem(text)
                .map(Verifying::from)
                .map_err(|e| e.to_string())
        }

        pub(in crate::auth) fn from_sec1(point: &[u8]) -> Result<Verifying, String> {
            PublicKey::from_sec1_bytes(point)
                .map(Verifying::from)
                .map_err(|e| e.to_string())
        }

        pub(in crate::auth) fn spki_der(&self) -> Result<Vec<u8>, String> {
            self.0
                .to_public_key_der()
                .map(|der| der.as_bytes().to_vec())
                .map_err(|e| e.to_string())
        }

        /// The uncompressed SEC1 point.
        pub(in crate::auth) fn sec1_point(&self) -> Vec<u8> {
            self.0.to_sec1_point(false).as_bytes().to_vec()
        }

        /// Whether `signature` (fixed-size r||s) signs `message` (ECDSA with SHA-384).
        pub(in crate::auth) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
            Signature::from_slice(signature)
                .map(|s| self.0.verify(message, &s).is_ok())
                .unwrap_or(false)
        }
    }

    impl From<PublicKey> for Verifying {
        fn from(public: PublicKey) -> Self {
            Verifying(VerifyingKey::from(public))
        }
    }

    /// A private key, for signing.
    #[derive(Clone)]
    pub(in crate::auth) struct Signing(SigningKey);

    impl Signing {
        pub(in crate::auth) fn generate() -> Result<Signing, String> {
            SecretKey::try_generate()
                .map(|s| Signing(SigningKey::from(&s)))
                .map_err(|e| e.to_string())
        }

        pub(in crate::auth) fn from_scalar(scalar: &[u8]) -> Result<Signing, String> {
            SecretKey::from_slice(scalar)
                .map(|s| Signing(SigningKey::from(&s)))
                .map_err(|e| e.to_string())
        }

        pub(in crate::auth) fn from_pkcs8_pem(text: &str) -> Result<Signing, String> {
            SecretKey::from_pkcs8_pem(text)
                .map(|s| Signing(SigningKey::from(&s)))
                .map_err(|e| e.to_string())
        }

        pub(in crate::auth) fn from_sec1_pem(text: &str) -> Result<Signing, String> {
            SecretKey::from_sec1_pem(text)
                .map(|s| Signing(SigningKey::from(&s)))
                .map_err(|e| e.to_string())
        }

        pub(in crate::auth) fn verifying(&self) -> Verifying {
            Verifying(*self.0.verifying_key())
        }

        /// The secret scalar, big-endian.
        pub(in crate::auth) fn scalar(&self) -> Vec<u8> {
            self.0.to_bytes().to_vec()
        }

        pub(in crate::auth) fn to_pkcs8_pem(&self) -> Result<String, String> {
            SecretKey::from(self.0.as_nonzero_scalar())
                .to_pkcs8_pem(LineEnding::LF)
                .map(|s| s.to_string())
                .map_err(|e| e.to_string())
        }

        /// ECDSA P-384 with SHA-384 over `message`; fixed-size r||s (96 bytes).
        pub(in crate::auth) fn sign(&self, message: &[u8]) -> Vec<u8> {
            let signature: Signature = self.0.sign(message);
            signature.to_bytes().to_vec()
        }
    }
}

#[cfg(not(feature = "node-auth"))]
mod without {
    fn not_built<T>() -> Result<T, String> {
        Err(crate::not_built("node authentication", "node-auth"))
    }

    /// No value: the keys below cannot be made. Private, so that code holding a key is not
    /// flagged unreachable outside this module.
    #[derive(Clone)]
    enum Never {}

    /// No public key can be made in this build.
    #[derive(Clone)]
    pub(in crate::auth) struct Verifying(Never);

    impl Verifying {
        pub(in crate::auth) fn from_spki_der(_: &[u8]) -> Result<Verifying, String> {
            not_built()
        }

        pub(in crate::auth) fn from_pem(_: &str) -> Result<Verifying, String> {
            not_built()
        }

        pub(in crate::auth) fn from_sec1(_: &[u8]) -> Result<Verifying, String> {
            not_built()
        }

        pub(in crate::auth) fn spki_der(&self) -> Result<Vec<u8>, String> {
            match self.0 {}
        }

        pub(in crate::auth) fn sec1_point(&self) -> Vec<u8> {
            match self.0 {}
        }

        pub(in crate::auth) fn verifies(&self, _: &[u8], _: &[u8]) -> bool {
            match self.0 {}
        }
    }

    /// No private key can be made in this build.
    #[derive(Clone)]
    pub(in crate::auth) struct Signing(Never);

    impl Signing {
        pub(in crate::auth) fn generate() -> Result<Signing, String> {
            not_built()
        }

        pub(in crate::auth) fn from_scalar(_: &[u8]) -> Result<Signing, String> {
            not_built()
        }

        pub(in crate::auth) fn from_pkcs8_pem(_: &str) -> Result<Signing, String> {
            not_built()
        }

        pub(in crate::auth) fn from_sec1_pem(_: &str) -> Result<Signing, String> {
            not_built()
        }

        pub(in crate::auth) fn verifying(&self) -> super::Verifying {
            match self.0 {}
        }

        pub(in crate::auth) fn scalar(&self) -> Vec<u8> {
            match self.0 {}
        }

        pub(in crate::auth) fn to_pkcs8_pem(&self) -> Result<String, String> {
            match self.0 {}
        }

        pub(in crate::auth) fn sign(&self, _: &[u8]) -> Vec<u8> {
            match self.0 {}
        }
    }
}
