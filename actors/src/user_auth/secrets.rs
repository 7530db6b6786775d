//! Argon2id hashes of passwords and API tokens (PHC strings, `$argon2id$v=19$...`), and
//! the random opaque tokens the SuperLink issues, of which it keeps only the sha256.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A PHC string for the accounts file. Argon2id with the crate's default cost (19 MiB,
/// two passes): slow enough to make guessing a stolen file expensive, fast enough for a
/// login.
///
/// # Errors
/// Only if argon2 refuses its own parameters, which the defaults never are; the message is
/// argon2's.
pub fn hash_secret(secret: &str, rng: &mut impl RngCore) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `secret` matches `phc`. A malformed PHC string matches nothing; the accounts
/// file is checked for those when it is loaded (`check_phc`).
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &hash)
            .is_ok()
    })
}

/// Why `phc` is not a usable argon2 hash, if it is not.
pub(crate) fn check_phc(phc: &str) -> Result<(), String> {
    let hash = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    if !hash.algorithm.as_str().starts_with("argon2") {
        return Err(format!("algorithm {} is not argon2", hash.algorithm));
    }
    Ok(())
}

/// A new opaque token: 256 random bits, hex-encoded.
pub(crate) fn new_token(rng: &mut impl RngCore) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    hex(&bytes)
}

/// What the SuperLink stores for a token: its sha256. A leaked session table then does not
/// let anyone call the API. Tokens are random, so a plain hash (no salt, no stretching) is
/// enough.
pub(crate) fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn a_hash_verifies_its_secret_and_nothing_else() {
        let phc = hash_secret("correct horse", &mut StdRng::seed_from_u64(1)).unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(check_phc(&phc).is_ok());
        assert!(verify_secret("correct horse", &phc));
        assert!(!verify_secret("correct horse ", &phc));
        assert!(!verify_secret("correct horse", "not a hash"));
    }

    #[test]
    fn tokens_are_256_bit_hex_and_differ() {
        let mut rng = StdRng::seed_from_u64(2);
        let (a, b) = (new_token(&mut rng), new_token(&mut rng));
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_ne!(token_digest(&a), token_digest(&b));
    }

    #[test]
    fn non_argon2_hashes_are_refused() {
        assert!(check_phc("$2b$12$abcdefghijklmnopqrstuv").is_err());
        assert!(check_phc("plain").is_err());
    }
}
