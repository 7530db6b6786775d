use super::*;
use proptest::prelude::*;
use std::process::Command;
use std::time::Duration;

const PATH: &str = "/flwr.proto.Fleet/Heartbeat";
const NOW: u64 = 1_800_000_000_000;
/// The encoding of the request the tests sign.
const BODY: &[u8] = b"\x08\x07\x11\x00\x00\x00\x00\x00\x00\x3e\x40";

/// A verifier of a SuperLink that started a minute before `NOW`.
fn verifier() -> Verifier {
    Verifier::new(DEFAULT_WINDOW, NOW - 60_000)
}

fn pair() -> NodeKeyPair {
    NodeKeyPair::generate().unwrap()
}

fn lookup<'a>(h: &'a SignedHeaders) -> impl Fn(&'static str) -> Option<&'a str> + 'a {
    move |name| {
        h.pairs()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }
}

#[test]
fn key_formats_round_trip() {
    let k = pair();
    let p = k.public_key();
    assert_eq!(&NodePublicKey::parse(&p.to_openssh("node 1")).unwrap(), p);
    assert_eq!(&NodePublicKey::parse(&p.to_pem()).unwrap(), p);
    assert_eq!(&NodePublicKey::from_spki_der(p.spki_der()).unwrap(), p);
    let from_ssh = NodeKeyPair::parse(&k.to_openssh_private("c")).unwrap();
    assert_eq!(from_ssh.public_key(), p);
    let from_pkcs8 = NodeKeyPair::parse(&k.to_pkcs8_pem().unwrap()).unwrap();
    assert_eq!(from_pkcs8.public_key(), p);
    assert!(p.fingerprint().starts_with("SHA256:"));
    assert!(!format!("{k:?}").contains("BEGIN"));
}

#[test]
fn wrong_kinds_of_key_are_named() {
    let k = pair();
    let e = NodeKeyPair::parse(&k.public_key().to_openssh("")).unwrap_err();
    assert!(e.to_string().contains("public key"), "{e}");
    let e = NodePublicKey::parse("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 x").unwrap_err();
    assert!(e.to_string().contains("ECDSA P-384"), "{e}");
    let e = NodePublicKey::parse(&k.to_pkcs8_pem().unwrap()).unwrap_err();
    assert!(e.to_string().contains("not a public key"), "{e}");
}

/// Keys made by `ssh-keygen -t ecdsa -b 384` (what Flower's generate.sh runs) load, and
/// `ssh-keygen` reads the private keys we write. Skipped where ssh-keygen is missing.
#[test]
fn interoperates_with_ssh_keygen() {
    if Command::new("ssh-keygen").arg("-?").output().is_err() {
        eprintln!("ssh-keygen not found; skipping");
        return;
    }
    let dir = std::env::temp_dir().join(format!("floret-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(dir.join("k.pub"));
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ecdsa", "-b", "384", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let theirs = NodeKeyPair::load(&key).unwrap();
    let public = NodePublicKey::load(&dir.join("k.pub")).unwrap();
    assert_eq!(theirs.public_key(), &public);
    // ssh-keygen's fingerprint matches ours.
    let out = Command::new("ssh-keygen")
        .args(["-l", "-f"])
        .arg(dir.join("k.pub"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&public.fingerprint()));
    // ssh-keygen reads what we write.
    let ours = dir.join("ours");
    std::fs::write(&ours, pair().to_openssh_private("x")).unwrap();
    let mut perms = std::fs::metadata(&ours).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
    std::fs::set_permissions(&ours, perms).unwrap();
    let out = Command::new("ssh-keygen")
        .args(["-y", "-f"])
        .arg(&ours)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let derived = NodePublicKey::parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(&derived, NodeKeyPair::load(&ours).unwrap().public_key());
    // SEC1 `EC PRIVATE KEY`, as openssl writes it.
    let sec1 = dir.join("sec1.pem");
    if Command::new("openssl")
        .args(["ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out"])
        .arg(&sec1)
        .status()
        .is_ok_and(|s| s.success())
    {
        NodeKeyPair::load(&sec1).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_is_named() {
    let e = NodeKeyPair::load(std::path::Path::new("/no/such/key")).unwrap_err();
    assert!(e.to_string().contains("/no/such/key"), "{e}");
}

#[test]
fn allow_list_layouts() {
    let a = pair().public_key().clone();
    let b = pair().public_key().clone();
    let c = pair().public_key().clone();
    let one_row = format!(
        "{},{},{}\n",
        a.to_openssh("a"),
        b.to_openssh("b"),
        c.to_openssh("")
    );
    assert_eq!(
        parse_allow_list(&one_row, "x").unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );
    let per_line = format!(
        "# nodes\n{}\n\n{}\n{}\n{}\n",
        a.to_openssh("a"),
        b.to_openssh("b"),
        c.to_openssh("c"),
        a.to_openssh("dup")
    );
    assert_eq!(
        parse_allow_list(&per_line, "x").unwrap(),
        vec![a.clone(), b, c]
    );
    let bad = format!("{}\n{},garbage\n", a.to_openssh(""), a.to_openssh(""));
    let e = parse_allow_list(&bad, "keys.csv").unwrap_err();
    assert_eq!(e.line, 2);
    let msg = e.to_string();
    assert!(msg.starts_with("keys.csv: line 2: key 2:"), "{msg}");
}

#[test]
fn signed_request_verifies_once() {
    let k = pair();
    let v = verifier();
    let h = k.sign_request(PATH, BODY, NOW, 7);
    assert_eq!(
        &v.verify(PATH, BODY, lookup(&h), NOW + 1000).unwrap(),
        k.public_key()
    );
    let again = v.verify(PATH, BODY, lookup(&h), NOW + 2000).unwrap_err();
    assert!(matches!(again, AuthError::Replayed { .. }), "{again}");
    // Another nonce is fine.
    let h2 = k.sign_request(PATH, BODY, NOW, 8);
    v.verify(PATH, BODY, lookup(&h2), NOW).unwrap();
}

#[test]
fn signature_is_bound_to_path_key_and_time() {
    let k = pair();
    let v = verifier();
    let h = k.sign_request(PATH, BODY, NOW, 1);
    assert_eq!(
        v.verify("/flwr.proto.Fleet/PullMessages", BODY, lookup(&h), NOW),
        Err(AuthError::BadSignature)
    );
    let mut other_key = h.clone();
    other_key.node_key = k.sign_request(PATH, BODY, NOW, 1).node_key;
    let other = pair().sign_request(PATH, BODY, NOW, 1);
    other_key.node_key = other.node_key;
    assert_eq!(
        v.verify(PATH, BODY, lookup(&other_key), NOW),
        Err(AuthError::BadSignature)
    );
    let mut later = h.clone();
    later.timestamp = (NOW + 1).to_string();
    assert_eq!(
        v.verify(PATH, BODY, lookup(&later), NOW),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn a_body_altered_after_signing_is_refused() {
    let k = pair();
    let v = verifier();
    let h = k.sign_request(PATH, BODY, NOW, 1);
    let mut other = BODY.to_vec();
    other[1] = 8;
    assert_eq!(
        v.verify(PATH, &other, lookup(&h), NOW),
        Err(AuthError::BodyChanged)
    );
    // The digest header swapped for the new body's: the signature no longer matches.
    let mut swapped = h.clone();
    swapped.body_sha256 = k.sign_request(PATH, &other, NOW, 1).body_sha256;
    assert_eq!(
        v.verify(PATH, &other, lookup(&swapped), NOW),
        Err(AuthError::BadSignature)
    );
    assert_eq!(v.remembered(), 0, "a refused request burns no nonce");
    v.verify(PATH, BODY, lookup(&h), NOW).unwrap();
}

#[test]
fn a_request_signed_before_the_superlink_started_is_refused_even_within_the_window() {
    let k = pair();
    let captured = k.sign_request(PATH, BODY, NOW, 1);
    let before_restart = Verifier::new(DEFAULT_WINDOW, NOW - 60_000);
    before_restart
        .verify(PATH, BODY, lookup(&captured), NOW)
        .unwrap();
    // The SuperLink restarts 2 s later and forgets its nonces: the copy is within the
    // window but older than the new process.
    let restarted = Verifier::new(DEFAULT_WINDOW, NOW + 1_500);
    let e = restarted
        .verify(PATH, BODY, lookup(&captured), NOW + 2_000)
        .unwrap_err();
    assert_eq!(e, AuthError::BeforeStart { early_ms: 1_500 });
    assert!(
        e.to_string().contains("before this SuperLink started"),
        "{e}"
    );
    // What the node signs now gets in.
    let fresh = k.sign_request(PATH, BODY, NOW + 2_000, 2);
    restarted
        .verify(PATH, BODY, lookup(&fresh), NOW + 2_000)
        .unwrap();
}

#[test]
fn clock_skew_is_named() {
    let k = pair();
    let v = verifier();
    let h = k.sign_request(PATH, BODY, NOW, 1);
    let e = v.verify(PATH, BODY, lookup(&h), NOW + 95_000).unwrap_err();
    assert_eq!(
        e.to_string(),
        "clock skew of 95 s beyond the 30 s window: check the clocks of SuperNode and SuperLink"
    );
    let e = v.verify(PATH, BODY, lookup(&h), NOW - 31_000).unwrap_err();
    assert!(matches!(e, AuthError::ClockSkew { skew_s: 31, .. }), "{e}");
}

#[test]
fn missing_headers_are_named() {
    let v = verifier();
    let e = v.verify(PATH, BODY, |_| None, NOW).unwrap_err();
    assert_eq!(e, AuthError::Missing(HEADER_NODE_KEY));
}

#[test]
fn replay_cache_forgets_expired_nonces_and_is_bounded() {
    let k = pair();
    let v = Verifier::with_capacity(Duration::from_secs(30), 0, 3);
    for n in 0..3 {
        v.verify(PATH, BODY, lookup(&k.sign_request(PATH, BODY, NOW, n)), NOW)
            .unwrap();
    }
    let e = v
        .verify(PATH, BODY, lookup(&k.sign_request(PATH, BODY, NOW, 9)), NOW)
        .unwrap_err();
    assert!(matches!(e, AuthError::Overloaded(3)), "{e}");
    // Once the window has passed, the old nonces are dropped.
    let later = NOW + 31_000;
    v.verify(
        PATH,
        BODY,
        lookup(&k.sign_request(PATH, BODY, later, 10)),
        later,
    )
    .unwrap();
    assert_eq!(v.remembered(), 1);
}

proptest! {
    #[test]
    fn garbage_never_panics(s in ".{0,400}") {
        let _ = NodePublicKey::parse(&s);
        let _ = NodeKeyPair::parse(&s);
        let _ = parse_allow_list(&s, "x");
        let _ = NodePublicKey::from_spki_der(s.as_bytes());
        let _ = NodePublicKey::parse(&format!("ecdsa-sha2-nistp384 {s}"));
        let v = verifier();
        let _ = v.verify(PATH, BODY, |_| Some(s.as_str()), NOW);
    }

    #[test]
    fn garbage_openssh_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        use base64::Engine as _;
        let mut raw = b"openssh-key-v1\0".to_vec();
        raw.extend_from_slice(&bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&raw);
        let text = format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{b64}\n-----END OPENSSH PRIVATE KEY-----\n");
        let _ = NodeKeyPair::parse(&text);
        let blob = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let _ = NodePublicKey::parse(&format!("ecdsa-sha2-nistp384 {blob}"));
    }

    #[test]
    fn mangled_headers_never_verify(i in 0usize..5, pos in 0usize..200, b in any::<u8>()) {
        let k = NodeKeyPair::generate().unwrap();
        let h = k.sign_request(PATH, BODY, NOW, 5);
        let mut vals: Vec<String> = h.pairs().iter().map(|(_, v)| v.to_string()).collect();
        let mut bytes = vals[i].clone().into_bytes();
        let p = pos % bytes.len();
        prop_assume!(bytes[p] != b);
        bytes[p] = b;
        vals[i] = String::from_utf8_lossy(&bytes).into_owned();
        let names = [HEADER_NODE_KEY, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_BODY_SHA256, HEADER_SIGNATURE];
        let v = verifier();
        let r = v.verify(PATH, BODY, |n| names.iter().position(|x| *x == n).map(|j| vals[j].as_str()), NOW);
        // A changed byte may still decode to the same value (base64 padding bits), but then
        // the key is the same one.
        if let Ok(key) = r {
            prop_assert_eq!(&key, k.public_key());
        }
    }
}
