//! Argon2id hashes of passwords and API tokens (PHC strings, `$argon2id$v=19$...`), and
//! the random opaque tokens the SuperLink issues, of which it keeps only the sha256.

use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
///
/// argon2's working memory (19 MiB at the default cost) is kept per thread and reused, not
/// allocated per check: a flood of logins freed and reallocated it so often that glibc's
/// arenas kept 650 MiB resident after 128 logins checked 4 at a time. The login gate runs
/// checks on a few threads of its own, so this is a few buffers in all.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    if !hash.algorithm.as_str().starts_with("argon2") {
        return false;
    }
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let hashed = MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon2.hash_password_into_with_memory(
            secret.as_bytes(),
            salt,
            &mut out,
            &mut memory[..blocks],
        )
    });
    // `Output`'s equality is constant-time.
    hashed.is_ok() && Output::new(&out).is_ok_and(|out| out == expected)
}

thread_local! {
    /// The argon2 working memory of this thread's checks (see `verify_secret`).
    static MEMORY: std::cell::RefCell<Vec<Block>> = const { std::cell::RefCell::new(Vec::new()) };
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
    fn hashes_of_other_argon2_variants_and_costs_verify_too() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        for algorithm in [Algorithm::Argon2i, Algorithm::Argon2d, Algorithm::Argon2id] {
            let params = Params::new(64, 1, 2, Some(24)).unwrap();
            let phc = Argon2::new(algorithm, Version::V0x13, params)
                .hash_password(b"pw", &salt)
                .unwrap()
                .to_string();
            assert!(verify_secret("pw", &phc), "{phc}");
            assert!(!verify_secret("pw2", &phc), "{phc}");
        }
        // A larger cost after a smaller one: the reused memory grows.
        let phc = hash_secret("big", &mut StdRng::seed_from_u64(3)).unwrap();
        assert!(verify_secret("big", &phc));
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
