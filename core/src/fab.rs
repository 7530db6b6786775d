//! FABs (Flower app bundles): a user's app as it travels to a SuperLink and its SuperNodes,
//! a manifest and the app's executable in one archive.
//!
//! # Archive format, version 1
//!
//! All integers little-endian; nothing follows the binary.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 9 | magic `FLORETFAB` |
//! | 9 | 1 | format version, `1` |
//! | 10 | 4 | manifest length `M` (u32), at most [`MAX_MANIFEST_LEN`] |
//! | 14 | M | manifest: UTF-8 TOML with the string keys `name`, `version`, `publisher`, `serverapp`, `clientapp`, `target`, `binary_sha256`, `pyproject`, in this order |
//! | 14 + M | 8 | binary length `B` (u64), at least 1 |
//! | 22 + M | B | the app's executable |
//!
//! Packing is deterministic: the same manifest and binary give the same bytes, so the
//! archive's sha256 ([`fab_hash`]) names an app build. Unpacking checks every length
//! against the bytes it has before using it (garbage is an error, never a panic or a large
//! allocation) and verifies the binary against `binary_sha256`, so a tampered or truncated
//! FAB is refused before anything runs it. The manifest's own integrity is the archive
//! hash's job: a daemon checks the packed bytes against the run's `AppRef.fab_hash`
//! ([`Fab::unpack_verified`]). The binary is a slice of the packed bytes, not a copy.
//! Unknown manifest keys are ignored, so later versions may add keys without a new format
//! version.
//!
//! # Two formats, told apart by their bytes
//!
//! A daemon also takes Flower's own FAB format, a zip of a Python app's files
//! ([`flower`]): that is how a Flower app written in Python is deployed. Which format a
//! FAB is, is told here and only here, from its first bytes ([`FabFormat::of`]):
//! `FLORETFAB` is the native format above, a zip's `PK\x03\x04` is Flower's. Both are named
//! by the sha256 of their bytes. [`AnyFab::unpack_verified`] reads either.

pub mod flower;

use crate::manifest::AppManifest;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// First bytes of every FAB.
pub const MAGIC: &[u8; 9] = b"FLORETFAB";
/// The archive format this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// The manifest is a few kilobytes of text (mostly `pyproject.toml`); anything larger is
/// not a FAB this code wrote.
pub const MAX_MANIFEST_LEN: u32 = 1 << 20;
/// Magic, version and manifest length.
const HEADER_LEN: usize = MAGIC.len() + 1 + 4;

/// The target triple floret-core was compiled for, e.g. `x86_64-unknown-linux-gnu`: the
/// triple a FAB built on this machine carries, and the one a SuperNode accepts.
pub const HOST_TARGET: &str = env!("FLORET_HOST_TARGET");

/// What a FAB says about the app it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabManifest {
    /// `[project] name`.
    pub name: String,
    /// `[project] version`.
    pub version: String,
    /// `[tool.flwr.app] publisher`.
    pub publisher: String,
    /// `[tool.flwr.app.components] serverapp`.
    pub serverapp: String,
    /// `[tool.flwr.app.components] clientapp`.
    pub clientapp: String,
    /// The target triple the binary was built for; a SuperNode refuses another one.
    pub target: String,
    /// Lowercase hex sha256 of the binary, checked on unpack.
    pub binary_sha256: String,
    /// The app's `pyproject.toml` text, so a daemon sees the app's config as the user wrote it.
    pub pyproject: String,
}

/// An app bundle: its manifest and executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fab {
    /// What the FAB says about its app.
    pub manifest: FabManifest,
    /// The app's executable, as built by `flwr build`; a slice of the packed bytes after `unpack`.
    pub binary: Bytes,
}

/// Why bytes are not a usable FAB. Each message names the problem and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FabError {
    /// The bytes start with neither format's magic.
    #[error(
        "not a FAB: it is neither a Floret FAB (\"FLORETFAB\") nor a Flower FAB (a zip); build one with `flwr build`"
    )]
    NotAFab,
    /// The archive is of a format version this code does not read.
    #[error(
        "FAB format version {found} is not supported (this Floret reads version {supported}): rebuild the app with this Floret's `flwr build`"
    )]
    UnsupportedVersion {
        /// The version in the archive.
        found: u8,
        /// The version this code reads, `FORMAT_VERSION`.
        supported: u8,
    },
    /// A length field points past the end of the bytes.
    #[error(
        "the FAB is truncated: its {part} needs {needed} bytes but only {available} are left; rebuild or resend it"
    )]
    Truncated {
        /// The part being read ("header", "manifest", "binary length", "binary").
        part: &'static str,
        /// Bytes that part needs.
        needed: u64,
        /// Bytes left in the archive.
        available: u64,
    },
    /// Bytes follow the binary; how many.
    #[error("the FAB has {0} bytes after its binary: it was corrupted or tampered with")]
    TrailingBytes(u64),
    /// The manifest length field exceeds `MAX_MANIFEST_LEN`; the length found.
    #[error("the FAB's manifest is {0} bytes, more than the {MAX_MANIFEST_LEN} allowed")]
    ManifestTooLarge(u32),
    /// The manifest is not UTF-8 TOML with the expected keys, or a key's value is invalid; why.
    #[error("the FAB's manifest is invalid: {0}")]
    Manifest(String),
    /// The binary is empty.
    #[error("the FAB has no app binary: rebuild it with `flwr build`")]
    MissingBinary,
    /// The binary's sha256 differs from the manifest's `binary_sha256`.
    #[error(
        "the FAB's binary does not match its manifest (sha256 {found}, manifest says {expected}): it was corrupted or tampered with; rebuild it with `flwr build`"
    )]
    BinaryHash {
        /// The manifest's `binary_sha256`.
        expected: String,
        /// The binary's actual sha256, lowercase hex.
        found: String,
    },
    /// The archive's sha256 differs from the one the run names (`AppRef.fab_hash`).
    #[error(
        "the FAB's sha256 is {found}, but the run names {expected}: it was corrupted or tampered with in transit"
    )]
    FabHash {
        /// The hash the run names.
        expected: String,
        /// The archive's actual sha256, lowercase hex.
        found: String,
    },
    /// A Flower FAB (zip) that is not a valid one; why.
    #[error("the Flower FAB is invalid: {0}; rebuild it with `flwr build`")]
    Flower(String),
    /// A Flower FAB entry whose path would leave the app's directory; which and why.
    #[error("the Flower FAB is refused: the path {0}; rebuild it with `flwr build`")]
    UnsafePath(String),
    /// A Flower FAB file whose sha256 or size differs from its `.info/CONTENT` line.
    #[error(
        "the Flower FAB's {0} does not match its .info/CONTENT line: it was corrupted or tampered with; rebuild it with `flwr build`"
    )]
    ContentMismatch(String),
    /// A Flower FAB over a size bound.
    #[error(
        "{what} would be more than {} MiB: a FAB holds an app's source files, not its data; move data files out of the app directory and rebuild it with `flwr build`",
        limit >> 20
    )]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// The bound, bytes.
        limit: u64,
    },
    /// The binary was built for another target triple than this machine's.
    #[error(
        "the FAB was built for {fab}, but this machine is {host}: build the app on (or for) {host}"
    )]
    WrongTarget {
        /// The FAB's target triple.
        fab: String,
        /// This machine's target triple, `HOST_TARGET`.
        host: String,
    },
}

impl Fab {
    /// A FAB of `binary` for the app `app` (parsed from `pyproject`), built for `target`;
    /// fills in `binary_sha256`. A manifest without a version or publisher records
    /// `0.0.0` or an empty publisher.
    pub fn new(app: &AppManifest, pyproject: &str, target: &str, binary: Bytes) -> Fab {
        Fab {
            manifest: FabManifest {
                name: app.name.clone(),
                version: app.version.clone().unwrap_or_else(|| "0.0.0".to_owned()),
                publisher: app.publisher.clone().unwrap_or_default(),
                serverapp: app.serverapp.clone(),
                clientapp: app.clientapp.clone(),
                target: target.to_owned(),
                binary_sha256: sha256_hex(&binary),
                pyproject: pyproject.to_owned(),
            },
            binary,
        }
    }

    /// The archive bytes (see the module docs). The manifest is written as it is: a
    /// `binary_sha256` that does not match the binary makes `unpack` refuse the result.
    pub fn pack(&self) -> Bytes {
        let manifest =
            toml::to_string(&self.manifest).expect("a struct of strings always serialises to TOML");
        // The fields are user text of a few kilobytes; saturating keeps `pack` total, and
        // `unpack` refuses such an archive with `ManifestTooLarge`.
        let manifest_len = u32::try_from(manifest.len()).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(HEADER_LEN + manifest.len() + 8 + self.binary.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&manifest_len.to_le_bytes());
        out.extend_from_slice(manifest.as_bytes());
        out.extend_from_slice(&(self.binary.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.binary);
        Bytes::from(out)
    }

    /// Reads an archive and verifies its binary against the manifest. Never panics.
    pub fn unpack(packed: Bytes) -> Result<Fab, FabError> {
        let mut cursor = Cursor {
            bytes: &packed,
            at: 0,
        };
        let magic = cursor.take("header", MAGIC.len() as u64);
        if magic.map(|m| m != MAGIC).unwrap_or(true) {
            return Err(FabError::NotAFab);
        }
        let version = cursor.take("header", 1)?[0];
        if version != FORMAT_VERSION {
            return Err(FabError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let manifest_len = u32::from_le_bytes(array(cursor.take("header", 4)?));
        if manifest_len > MAX_MANIFEST_LEN {
            return Err(FabError::ManifestTooLarge(manifest_len));
        }
        let manifest = cursor.take("manifest", u64::from(manifest_len))?;
        let manifest = std::str::from_utf8(manifest)
            .map_err(|e| FabError::Manifest(format!("not UTF-8: {e}")))?;
        let manifest: FabManifest =
            toml::from_str(manifest).map_err(|e| FabError::Manifest(one_line(&e.to_string())))?;
        check_manifest(&manifest)?;
        let binary_len = u64::from_le_bytes(array(cursor.take("binary length", 8)?));
        if binary_len == 0 {
            return Err(FabError::MissingBinary);
        }
        let start = cursor.at;
        cursor.take("binary", binary_len)?;
        let trailing = packed.len() - cursor.at;
        if trailing > 0 {
            return Err(FabError::TrailingBytes(trailing as u64));
        }
        let binary = packed.slice(start..cursor.at);
        let found = sha256_hex(&binary);
        if found != manifest.binary_sha256 {
            return Err(FabError::BinaryHash {
                expected: manifest.binary_sha256,
                found,
            });
        }
        Ok(Fab { manifest, binary })
    }

    /// `unpack`, after checking that the archive's sha256 is `expected_hash` (a run's
    /// `AppRef.fab_hash`).
    pub fn unpack_verified(packed: Bytes, expected_hash: &str) -> Result<Fab, FabError> {
        let found = fab_hash(&packed);
        if !found.eq_ignore_ascii_case(expected_hash) {
            return Err(FabError::FabHash {
                expected: expected_hash.to_owned(),
                found,
            });
        }
        Fab::unpack(packed)
    }

    /// Whether this machine can run the FAB's binary: its target must be [`HOST_TARGET`].
    pub fn check_target(&self) -> Result<(), FabError> {
        if self.manifest.target == HOST_TARGET {
            Ok(())
        } else {
            Err(FabError::WrongTarget {
                fab: self.manifest.target.clone(),
                host: HOST_TARGET.to_owned(),
            })
        }
    }
}

/// A FAB's format, told by its first bytes (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FabFormat {
    /// Floret's own: a manifest and a native binary.
    Native,
    /// Flower's: a zip of a Python app's files.
    Flower,
}

impl FabFormat {
    /// The format of `packed`, if it is either.
    pub fn of(packed: &[u8]) -> Option<FabFormat> {
        if packed.starts_with(MAGIC) {
            Some(FabFormat::Native)
        } else if packed.starts_with(flower::ZIP_MAGIC) {
            Some(FabFormat::Flower)
        } else {
            None
        }
    }
}

/// A FAB of either format, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyFab {
    /// A native binary and its manifest.
    Native(Fab),
    /// A Python app's files.
    Flower(flower::FlowerFab),
}

impl AnyFab {
    /// Checks that `packed` hashes to `expected_hash` (a run's `AppRef.fab_hash`), tells its
    /// format and reads it with that format's checks. Never panics.
    pub fn unpack_verified(packed: Bytes, expected_hash: &str) -> Result<AnyFab, FabError> {
        let found = fab_hash(&packed);
        if !found.eq_ignore_ascii_case(expected_hash) {
            return Err(FabError::FabHash {
                expected: expected_hash.to_owned(),
                found,
            });
        }
        match FabFormat::of(&packed) {
            Some(FabFormat::Native) => Fab::unpack(packed).map(AnyFab::Native),
            Some(FabFormat::Flower) => flower::unpack(&packed).map(AnyFab::Flower),
            None => Err(FabError::NotAFab),
        }
    }

    /// The app's `[project] name`.
    pub fn name(&self) -> &str {
        match self {
            AnyFab::Native(fab) => &fab.manifest.name,
            AnyFab::Flower(fab) => &fab.manifest.name,
        }
    }

    /// The app's `[project] version`, `0.0.0` when it has none.
    pub fn version(&self) -> &str {
        match self {
            AnyFab::Native(fab) => &fab.manifest.version,
            AnyFab::Flower(fab) => fab.manifest.version.as_deref().unwrap_or("0.0.0"),
        }
    }
}

/// Lowercase hex sha256 of a packed FAB: the `AppRef.fab_hash` that names it.
pub fn fab_hash(packed: &[u8]) -> String {
    sha256_hex(packed)
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    hex
}

/// Reads consecutive fields, checking each length against what is left.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, part: &'static str, len: u64) -> Result<&'a [u8], FabError> {
        let available = (self.bytes.len() - self.at) as u64;
        if len > available {
            return Err(FabError::Truncated {
                part,
                needed: len,
                available,
            });
        }
        // `len <= available`, which is a usize.
        let end = self.at + len as usize;
        let field = &self.bytes[self.at..end];
        self.at = end;
        Ok(field)
    }
}

/// A fixed-size field; `take` returned exactly `N` bytes.
fn array<const N: usize>(field: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&field[..N]);
    out
}

/// The manifest fields a daemon relies on must be present and well-formed.
fn check_manifest(m: &FabManifest) -> Result<(), FabError> {
    for (key, value) in [
        ("name", &m.name),
        ("serverapp", &m.serverapp),
        ("clientapp", &m.clientapp),
        ("target", &m.target),
    ] {
        if value.trim().is_empty() {
            return Err(FabError::Manifest(format!("`{key}` is empty")));
        }
    }
    let is_hex = m.binary_sha256.len() == 64
        && m.binary_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_hex {
        return Err(FabError::Manifest(format!(
            "`binary_sha256` must be 64 lowercase hex digits, not {:?}",
            m.binary_sha256
        )));
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    const PYPROJECT: &str = r#"[project]
name = "myapp"
version = "1.2.0"

[tool.flwr.app]
publisher = "alice"

[tool.flwr.app.components]
serverapp = "myapp.server_app:app"
clientapp = "myapp.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 3
note = """two
lines with "quotes" and 'apostrophes' \\ and a backslash"""
"#;

    fn fab(binary: &[u8]) -> Fab {
        let app = AppManifest::parse(PYPROJECT, Path::new("pyproject.toml")).unwrap();
        Fab::new(&app, PYPROJECT, HOST_TARGET, Bytes::copy_from_slice(binary))
    }

    /// Offset of the binary in a packed FAB.
    fn binary_offset(packed: &[u8]) -> usize {
        let m = u32::from_le_bytes(packed[10..14].try_into().unwrap()) as usize;
        HEADER_LEN + m + 8
    }

    #[test]
    fn the_manifest_comes_from_pyproject() {
        let f = fab(b"\x7fELF binary");
        let m = &f.manifest;
        assert_eq!(
            (m.name.as_str(), m.version.as_str(), m.publisher.as_str()),
            ("myapp", "1.2.0", "alice")
        );
        assert_eq!(m.serverapp, "myapp.server_app:app");
        assert_eq!(m.clientapp, "myapp.client_app:app");
        assert_eq!(m.target, HOST_TARGET);
        assert_eq!(m.binary_sha256, sha256_hex(b"\x7fELF binary"));
        assert_eq!(m.pyproject, PYPROJECT);
    }

    #[test]
    fn pack_and_unpack_round_trip() {
        let f = fab(b"\x7fELF binary \x00\xff");
        let packed = f.pack();
        assert!(packed.starts_with(b"FLORETFAB\x01"));
        assert_eq!(Fab::unpack(packed.clone()).unwrap(), f);
        assert_eq!(
            Fab::unpack_verified(packed.clone(), &fab_hash(&packed)).unwrap(),
            f
        );
    }

    #[test]
    fn packing_is_deterministic() {
        assert_eq!(fab(b"abc").pack(), fab(b"abc").pack());
        assert_ne!(fab_hash(&fab(b"abc").pack()), fab_hash(&fab(b"abd").pack()));
    }

    #[test]
    fn the_binary_is_not_copied_on_unpack() {
        let packed = fab(b"some binary").pack();
        let unpacked = Fab::unpack(packed.clone()).unwrap();
        let at = binary_offset(&packed);
        assert_eq!(unpacked.binary.as_ptr(), packed[at..].as_ptr());
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_flipped_binary_byte_is_a_hash_mismatch() {
        let packed = fab(b"the real binary").pack();
        let mut tampered = packed.to_vec();
        let at = binary_offset(&packed) + 4;
        tampered[at] ^= 0x01;
        let err = Fab::unpack(Bytes::from(tampered)).unwrap_err();
        assert!(matches!(err, FabError::BinaryHash { .. }), "{err:?}");
        assert!(err.to_string().contains("tampered"), "{err}");
    }

    #[test]
    fn a_swapped_manifest_hash_is_refused() {
        let mut f = fab(b"binary one");
        f.manifest.binary_sha256 = sha256_hex(b"binary two");
        let err = Fab::unpack(f.pack()).unwrap_err();
        assert!(matches!(err, FabError::BinaryHash { .. }), "{err:?}");
    }

    #[test]
    fn a_wrong_fab_hash_is_refused_before_unpacking() {
        let packed = fab(b"binary").pack();
        let err = Fab::unpack_verified(packed, &sha256_hex(b"other")).unwrap_err();
        assert!(matches!(err, FabError::FabHash { .. }), "{err:?}");
    }

    #[test]
    fn an_empty_binary_is_missing() {
        let err = Fab::unpack(fab(b"").pack()).unwrap_err();
        assert_eq!(err, FabError::MissingBinary);
        assert!(err.to_string().contains("flwr build"));
    }

    #[test]
    fn header_problems_are_named() {
        assert_eq!(Fab::unpack(Bytes::new()).unwrap_err(), FabError::NotAFab);
        assert_eq!(
            Fab::unpack(Bytes::from_static(b"PK\x03\x04 a zip file")).unwrap_err(),
            FabError::NotAFab
        );
        let mut packed = fab(b"x").pack().to_vec();
        packed[9] = 7;
        assert_eq!(
            Fab::unpack(Bytes::from(packed.clone())).unwrap_err(),
            FabError::UnsupportedVersion {
                found: 7,
                supported: 1
            }
        );
        packed[9] = FORMAT_VERSION;
        packed[10..14].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            Fab::unpack(Bytes::from(packed)).unwrap_err(),
            FabError::ManifestTooLarge(u32::MAX)
        );
    }

    #[test]
    fn truncation_and_trailing_bytes_are_refused() {
        let packed = fab(b"binary bytes").pack();
        for cut in [10, 13, 20, binary_offset(&packed) - 3, packed.len() - 1] {
            let err = Fab::unpack(packed.slice(..cut)).unwrap_err();
            assert!(
                matches!(err, FabError::Truncated { .. }),
                "cut {cut}: {err:?}"
            );
        }
        let mut longer = packed.to_vec();
        longer.extend_from_slice(b"extra");
        assert_eq!(
            Fab::unpack(Bytes::from(longer)).unwrap_err(),
            FabError::TrailingBytes(5)
        );
    }

    #[test]
    fn an_invalid_manifest_is_refused() {
        let packed = |manifest: &str| {
            let mut out = MAGIC.to_vec();
            out.push(FORMAT_VERSION);
            out.extend_from_slice(&(manifest.len() as u32).to_le_bytes());
            out.extend_from_slice(manifest.as_bytes());
            out.extend_from_slice(&1u64.to_le_bytes());
            out.push(b'x');
            Bytes::from(out)
        };
        let mut m = fab(b"x").manifest;
        m.binary_sha256 = "ABC".into();
        let err = Fab::unpack(packed(&toml::to_string(&m).unwrap())).unwrap_err();
        assert!(err.to_string().contains("binary_sha256"), "{err}");
        let err = Fab::unpack(packed("name = \"x\"\n")).unwrap_err();
        assert!(matches!(err, FabError::Manifest(_)), "{err:?}");
        let mut m = fab(b"x").manifest;
        m.target = " ".into();
        let err = Fab::unpack(packed(&toml::to_string(&m).unwrap())).unwrap_err();
        assert!(err.to_string().contains("`target` is empty"), "{err}");
    }

    #[test]
    fn another_target_is_refused_with_both_triples() {
        let mut f = fab(b"x");
        assert_eq!(f.check_target(), Ok(()));
        f.manifest.target = "riscv64gc-unknown-none-elf".into();
        let err = f.check_target().unwrap_err().to_string();
        assert!(err.contains("riscv64gc-unknown-none-elf"), "{err}");
        assert!(err.contains(HOST_TARGET), "{err}");
    }

    #[test]
    fn the_format_is_told_by_the_first_bytes() {
        let native = fab(b"binary").pack();
        assert_eq!(FabFormat::of(&native), Some(FabFormat::Native));
        let zip = flower::pack(PYPROJECT, &[]).unwrap();
        assert_eq!(FabFormat::of(&zip), Some(FabFormat::Flower));
        assert_eq!(FabFormat::of(b"#!/bin/sh"), None);
        assert!(matches!(
            AnyFab::unpack_verified(native.clone(), &fab_hash(&native)).unwrap(),
            AnyFab::Native(_)
        ));
        let flower = AnyFab::unpack_verified(zip.clone(), &fab_hash(&zip)).unwrap();
        assert_eq!((flower.name(), flower.version()), ("myapp", "1.2.0"));
        assert!(matches!(
            AnyFab::unpack_verified(zip, &fab_hash(&native)).unwrap_err(),
            FabError::FabHash { .. }
        ));
        let garbage = Bytes::from_static(b"garbage");
        assert_eq!(
            AnyFab::unpack_verified(garbage.clone(), &fab_hash(&garbage)).unwrap_err(),
            FabError::NotAFab
        );
    }

    #[test]
    fn host_target_is_a_triple() {
        assert!(HOST_TARGET.split('-').count() >= 2, "{HOST_TARGET}");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Fab::unpack(Bytes::from(bytes));
        }

        #[test]
        fn garbage_after_the_magic_never_panics(
            version in prop_oneof![Just(FORMAT_VERSION), any::<u8>()],
            tail in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let mut bytes = MAGIC.to_vec();
            bytes.push(version);
            bytes.extend(tail);
            prop_assert!(Fab::unpack(Bytes::from(bytes)).is_err());
        }

        #[test]
        fn any_single_flipped_bit_is_detected(seed in any::<u64>(), bit in 0u8..8) {
            let packed = fab(b"a small binary").pack();
            let at = (seed % packed.len() as u64) as usize;
            let mut tampered = packed.to_vec();
            tampered[at] ^= 1 << bit;
            // Either refused, or (a flip inside the manifest's free text, such as the
            // pyproject) unpacked with a different manifest: never the same FAB with a
            // different hash passing as the original.
            match Fab::unpack(Bytes::from(tampered.clone())) {
                Err(_) => {}
                Ok(f) => {
                    prop_assert_ne!(&f.manifest, &fab(b"a small binary").manifest);
                    prop_assert_eq!(&f.binary[..], b"a small binary");
                }
            }
            prop_assert!(Fab::unpack_verified(Bytes::from(tampered), &fab_hash(&packed)).is_err());
        }
    }
}
