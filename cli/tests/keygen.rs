//! `flwr keygen` as a user runs it: the layout of the seed's generate.sh, private files
//! 0600, keys our loaders read back, and a server certificate that chains to the CA.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use floret_transport::auth::{NodeKeyPair, NodePublicKey, load_allow_list};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use support::flwr;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn verify_chain(dir: &Path, name: &str) -> Result<(), rustls::Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("certificates/ca.crt")).unwrap())
        .unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let server = CertificateDer::from_pem_file(dir.join("certificates/server.pem")).unwrap();
    verifier
        .verify_server_cert(
            &server,
            &[],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[test]
fn keygen_writes_the_seed_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = flwr(&["keygen", "--clients", "3", "--out", dir.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    for f in ["ca.crt", "server.pem"] {
        assert!(dir.join("certificates").join(f).is_file(), "{f}");
    }
    for f in ["ca.key", "server.key"] {
        assert_eq!(mode(&dir.join("certificates").join(f)), 0o600, "{f}");
    }
    let keys = dir.join("keys");
    for i in 1..=3 {
        let private = keys.join(format!("client_credentials_{i}"));
        assert_eq!(mode(&private), 0o600);
        let pair = NodeKeyPair::load(&private).unwrap();
        let public =
            NodePublicKey::load(&keys.join(format!("client_credentials_{i}.pub"))).unwrap();
        assert_eq!(pair.public_key(), &public);
    }
    assert!(!keys.join("client_credentials_4").exists());
    assert_eq!(mode(&keys.join("server_credentials")), 0o600);
    let server = NodeKeyPair::load(&keys.join("server_credentials")).unwrap();
    assert_eq!(
        server.public_key(),
        &NodePublicKey::load(&keys.join("server_credentials.pub")).unwrap()
    );
    // One row, comma-separated, like generate.sh.
    let csv = std::fs::read_to_string(keys.join("client_public_keys.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1);
    assert_eq!(
        load_allow_list(&keys.join("client_public_keys.csv"))
            .unwrap()
            .len(),
        3
    );

    verify_chain(dir, "localhost").unwrap();
    verify_chain(dir, "127.0.0.1").unwrap();
    assert!(verify_chain(dir, "example.com").is_err());
}

#[test]
fn keygen_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    assert_eq!(flwr(&["keygen", "--out", dir]).code, Some(0));
    let before = std::fs::read_to_string(tmp.path().join("keys/client_credentials_1")).unwrap();
    let again = flwr(&["keygen", "--out", dir]);
    assert_eq!(again.code, Some(2), "{}", again.stderr);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("keys/client_credentials_1")).unwrap(),
        before
    );
    let forced = flwr(&[
        "keygen",
        "--out",
        dir,
        "--force",
        "--clients",
        "1",
        "--san",
        "superlink.example",
        "--san",
        "10.0.0.7",
    ]);
    assert_eq!(forced.code, Some(0), "{}", forced.stderr);
    assert_ne!(
        std::fs::read_to_string(tmp.path().join("keys/client_credentials_1")).unwrap(),
        before
    );
    verify_chain(tmp.path(), "superlink.example").unwrap();
    verify_chain(tmp.path(), "10.0.0.7").unwrap();
    assert!(verify_chain(tmp.path(), "localhost").is_err());
}

#[test]
fn keygen_rejects_a_bad_san() {
    let tmp = tempfile::tempdir().unwrap();
    let out = flwr(&[
        "keygen",
        "--out",
        tmp.path().to_str().unwrap(),
        "--san",
        "bad name!",
    ]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--san"), "{}", out.stderr);
    assert!(!tmp.path().join("keys").exists());
}
