//! The two small OpenSSH formats of ECDSA P-384 keys, parsed and written by hand (the
//! `ssh-key` crate pins an older `p384`):
//!
//! - public: `ecdsa-sha2-nistp384 BASE64 comment`, where BASE64 is the wire blob
//!   `string "ecdsa-sha2-nistp384", string "nistp384", string Q` (Q the uncompressed point);
//! - private: `-----BEGIN OPENSSH PRIVATE KEY-----`, the unencrypted `openssh-key-v1` layout
//!   that `ssh-keygen -t ecdsa -b 384 -N ""` writes.
//!
//! Every length is checked against the bytes left, so garbage is an error, never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

pub(crate) const KEY_TYPE: &str = "ecdsa-sha2-nistp384";
const CURVE: &str = "nistp384";
const MAGIC: &[u8] = b"openssh-key-v1\0";
pub(crate) const PRIVATE_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
const PRIVATE_END: &str = "-----END OPENSSH PRIVATE KEY-----";
/// Length of a P-384 scalar.
const SCALAR_LEN: usize = 48;

/// Reads SSH wire values from a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("truncated before {what}"))?;
        self.bytes = rest;
        Ok(u32::from_be_bytes(*head))
    }

    fn string(&mut self, what: &str) -> Result<&'a [u8], String> {
        let len = self.u32(what)? as usize;
        if len > self.bytes.len() {
            return Err(format!(
                "{what} claims {len} bytes but only {} remain",
                self.bytes.len()
            ));
        }
        let (s, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(s)
    }

    fn expect(&mut self, what: &str, want: &[u8]) -> Result<(), String> {
        let got = self.string(what)?;
        if got == want {
            Ok(())
        } else {
            Err(format!(
                "{what} is {:?}, expected {:?}",
                String::from_utf8_lossy(got),
                String::from_utf8_lossy(want)
            ))
        }
    }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    // Keys, comments and points are far below 4 GiB.
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

/// The wire blob of a public key from its uncompressed SEC1 point.
pub(crate) fn public_blob(point: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + KEY_TYPE.len() + 4 + CURVE.len() + 4 + point.len());
    put_string(&mut out, KEY_TYPE.as_bytes());
    put_string(&mut out, CURVE.as_bytes());
    put_string(&mut out, point);
    out
}

/// The SEC1 point inside a public key's wire blob.
pub(crate) fn parse_public_blob(blob: &[u8]) -> Result<Vec<u8>, String> {
    let mut r = Reader { bytes: blob };
    r.expect("the key type", KEY_TYPE.as_bytes())?;
    r.expect("the curve", CURVE.as_bytes())?;
    let point = r.string("the public point")?.to_vec();
    if !r.bytes.is_empty() {
        return Err(format!("{} bytes after the public point", r.bytes.len()));
    }
    Ok(point)
}

/// The SEC1 point of a one-line OpenSSH public key (`ecdsa-sha2-nistp384 AAAA... comment`).
pub(crate) fn parse_public_line(line: &str) -> Result<Vec<u8>, String> {
    let mut fields = line.split_whitespace();
    let kind = fields.next().ok_or("empty public key")?;
    if kind != KEY_TYPE {
        let shown: String = kind.chars().take(40).collect();
        return Err(format!(
            "key type {shown:?} is not {KEY_TYPE} (node keys are ECDSA P-384: ssh-keygen -t ecdsa -b 384, or flwr keygen)"
        ));
    }
    let b64 = fields.next().ok_or("no base64 key after the key type")?;
    let blob = STANDARD
        .decode(b64)
        .map_err(|e| format!("the key is not valid base64: {e}"))?;
    parse_public_blob(&blob)
}

/// The one-line form of a public key.
pub(crate) fn public_line(point: &[u8], comment: &str) -> String {
    let b64 = STANDARD.encode(public_blob(point));
    if comment.is_empty() {
        format!("{KEY_TYPE} {b64}")
    } else {
        format!("{KEY_TYPE} {b64} {comment}")
    }
}

/// The secret scalar (48 bytes, big-endian) and the public point of an unencrypted
/// OpenSSH private key file.
pub(crate) fn parse_private(text: &str) -> Result<([u8; SCALAR_LEN], Vec<u8>), String> {
    let body = text
        .trim()
        .strip_prefix(PRIVATE_BEGIN)
        .and_then(|t| t.trim_end().strip_suffix(PRIVATE_END))
        .ok_or("not an OpenSSH private key (BEGIN/END lines missing or damaged)")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let raw = STANDARD
        .decode(b64)
        .map_err(|e| format!("the OpenSSH private key is not valid base64: {e}"))?;
    let rest = raw
        .strip_prefix(MAGIC)
        .ok_or("not an openssh-key-v1 private key")?;
    let mut r = Reader { bytes: rest };
    let cipher = r.string("the cipher name")?;
    if cipher != b"none" {
        return Err(format!(
            "the key is encrypted ({}); Floret reads unencrypted keys only: remove the passphrase with `ssh-keygen -p -N \"\" -f FILE`",
            String::from_utf8_lossy(cipher)
        ));
    }
    r.string("the KDF name")?;
    r.string("the KDF options")?;
    let count = r.u32("the number of keys")?;
    if count != 1 {
        return Err(format!("the file holds {count} keys, expected 1"));
    }
    let public = parse_public_blob(r.string("the public key")?)?;
    let mut private = Reader {
        bytes: r.string("the private section")?,
    };
    let check1 = private.u32("the check number")?;
    let check2 = private.u32("the check number")?;
    if check1 != check2 {
        return Err("the check numbers differ (the file is damaged or encrypted)".into());
    }
    private.expect("the private key type", KEY_TYPE.as_bytes())?;
    private.expect("the private key curve", CURVE.as_bytes())?;
    let point = private.string("the private key's public point")?;
    if point != public.as_slice() {
        return Err("the public and private parts name different keys".into());
    }
    let mpint = private.string("the secret scalar")?;
    // An mpint: big-endian, a leading zero byte when the top bit is set, no padding.
    let digits = match mpint.iter().position(|&b| b != 0) {
        Some(first) => &mpint[first..],
        None => return Err("the secret scalar is zero".into()),
    };
    if digits.len() > SCALAR_LEN {
        return Err(format!(
            "the secret scalar has {} bytes, more than P-384's {SCALAR_LEN}",
            digits.len()
        ));
    }
    let mut scalar = [0u8; SCALAR_LEN];
    scalar[SCALAR_LEN - digits.len()..].copy_from_slice(digits);
    Ok((scalar, public))
}

/// An unencrypted OpenSSH private key file, as `ssh-keygen -N ""` writes it.
pub(crate) fn private_file(scalar: &[u8], point: &[u8], comment: &str, check: u32) -> String {
    let public = public_blob(point);
    let mut section = Vec::new();
    section.extend_from_slice(&check.to_be_bytes());
    section.extend_from_slice(&check.to_be_bytes());
    put_string(&mut section, KEY_TYPE.as_bytes());
    put_string(&mut section, CURVE.as_bytes());
    put_string(&mut section, point);
    let digits = match scalar.iter().position(|&b| b != 0) {
        Some(first) => &scalar[first..],
        None => &[][..],
    };
    let mut mpint = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_some_and(|&b| b & 0x80 != 0) {
        mpint.push(0);
    }
    mpint.extend_from_slice(digits);
    put_string(&mut section, &mpint);
    put_string(&mut section, comment.as_bytes());
    // Padded to the cipher block size (8 for "none") with 1, 2, 3, ...
    let mut pad = 1u8;
    while section.len() % 8 != 0 {
        section.push(pad);
        pad += 1;
    }
    let mut raw = MAGIC.to_vec();
    put_string(&mut raw, b"none");
    put_string(&mut raw, b"none");
    put_string(&mut raw, b"");
    raw.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut raw, &public);
    put_string(&mut raw, &section);
    let b64 = STANDARD.encode(raw);
    let mut out = String::with_capacity(b64.len() + 100);
    out.push_str(PRIVATE_BEGIN);
    out.push('\n');
    for line in b64.as_bytes().chunks(70) {
        // base64 is ASCII.
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(PRIVATE_END);
    out.push('\n');
    out
}
