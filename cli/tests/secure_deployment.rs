//! Part 4 of the seed tutorial with our binaries: `flwr keygen` makes the certificates and
//! keys, a TLS SuperLink admits only the SuperNodes on its key list, two authenticated
//! SuperNodes join, and `flwr run . pyconde --stream` reaches the SuperLink over TLS with
//! the federation's `root-certificates` — over gRPC and over QUIC. Every path is relative
//! to the app directory, as the tutorial has it, and every process runs there.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::path::Path;
use support::*;

/// Few, short rounds of digits.
const QUICK: &str = "num-server-rounds=2 local-epochs=1";

/// An app directory holding the digits app's pyproject.toml with the tutorial's `pyconde`
/// federation added, and everything `flwr keygen` writes.
fn app_with_keys(control: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let o = flwr(&["keygen", "--out", dir.path().to_str().unwrap()]);
    assert_eq!(o.code, Some(0), "flwr keygen: {}", o.stderr);
    write_federation(dir.path(), control, Some("certificates/ca.crt"));
    dir
}

/// Writes the `pyconde` federation; without `root_certificates` it is the tutorial's
/// `pyconde25`, a SuperLink with a publicly trusted certificate: only an address.
fn write_federation(dir: &Path, control: &str, root_certificates: Option<&str>) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/digits/pyproject.toml");
    let mut manifest = std::fs::read_to_string(source).unwrap();
    let roots = root_certificates
        .map(|r| format!("root-certificates = \"{r}\"\n"))
        .unwrap_or_default();
    manifest.push_str(&format!(
        "\n[tool.flwr.federations.pyconde]\naddress = \"{control}\"\n{roots}transport = \"{}\"\n",
        transport()
    ));
    std::fs::write(dir.join("pyproject.toml"), manifest).unwrap();
}

/// The tutorial's `flower-superlink` command, on free loopback ports.
fn secure_superlink(app: &Path) -> SuperLink {
    SuperLink::launch(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--ssl-ca-certfile",
            "certificates/ca.crt",
            "--ssl-certfile",
            "certificates/server.pem",
            "--ssl-keyfile",
            "certificates/server.key",
            "--auth-list-public-keys",
            "keys/client_public_keys.csv",
            "--auth-superlink-private-key",
            "keys/server_credentials",
            "--auth-superlink-public-key",
            "keys/server_credentials.pub",
        ],
        Some(app),
    )
}

/// The tutorial's `flower-supernode` command for client `n` (1-based) with key `key`.
fn secure_supernode(app: &Path, fleet: &str, n: u32, key: &str) -> Proc {
    supernode_trusting(app, fleet, n, key, None)
}

/// [`secure_supernode`]; with `ca`, without `--root-certificates` and with `SSL_CERT_FILE`
/// naming `ca` instead.
fn supernode_trusting(app: &Path, fleet: &str, n: u32, key: &str, ca: Option<&Path>) -> Proc {
    let private = format!("keys/{key}");
    let public = format!("keys/{key}.pub");
    let node_config = format!("num-partitions=2 partition-id={}", n - 1);
    let roots: &[&str] = match ca {
        Some(_) => &[],
        None => &["--root-certificates", "certificates/ca.crt"],
    };
    let env: Vec<(&str, &Path)> = ca.map(|ca| ("SSL_CERT_FILE", ca)).into_iter().collect();
    Proc::spawn_with_env(
        &format!("supernode {n}"),
        SUPERNODE,
        &[
            &["--superlink", fleet, "--transport", transport()][..],
            roots,
            &[
                "--auth-supernode-private-key",
                &private,
                "--auth-supernode-public-key",
                &public,
                "--node-config",
                &node_config,
            ],
        ]
        .concat(),
        Some(app),
        &env,
    )
}

over_both_transports! {
fn the_seeds_part_4_runs_with_tls_and_node_authentication() {
    let dir = app_with_keys("127.0.0.1:1");
    let app = dir.path();
    let link = secure_superlink(app);
    write_federation(app, &link.control, Some("certificates/ca.crt"));
    let nodes = [
        secure_supernode(app, &link.fleet, 1, "client_credentials_1"),
        secure_supernode(app, &link.fleet, 2, "client_credentials_2"),
    ];
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let mut run = Proc::spawn_in(
        "flwr run . pyconde --stream",
        FLWR,
        &["run", ".", "pyconde", "--stream", "--run-config", QUICK],
        Some(app),
    );
    let status = run.wait_exit(COMMAND_TIMEOUT);
    assert!(status.success(), "{}\n{}", run.stdout(), run.stderr());
    assert!(run.stdout().contains("finished:completed"), "{}", run.stdout());
    // `flwr ls` over the same TLS connection.
    let mut ls = Proc::spawn_in("flwr ls", FLWR, &["ls", ".", "pyconde"], Some(app));
    assert!(ls.wait_exit(COMMAND_TIMEOUT).success(), "{}", ls.stderr());
    assert!(ls.stdout().contains("finished:completed"), "{}", ls.stdout());
}
}

over_both_transports! {
fn a_supernode_whose_key_is_not_on_the_list_is_refused() {
    let dir = app_with_keys("127.0.0.1:1");
    let app = dir.path();
    // A second set of keys: its client keys are on no list of this SuperLink.
    let other = tempfile::tempdir().unwrap();
    let o = flwr(&["keygen", "--out", other.path().to_str().unwrap()]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let stranger = app.join("keys/stranger");
    std::fs::copy(other.path().join("keys/client_credentials_1"), &stranger).unwrap();
    std::fs::copy(
        other.path().join("keys/client_credentials_1.pub"),
        app.join("keys/stranger.pub"),
    )
    .unwrap();
    let link = secure_superlink(app);
    let mut node = secure_supernode(app, &link.fleet, 1, "stranger");
    let status = node.wait_exit(COMMAND_TIMEOUT);
    assert!(!status.success(), "a refused SuperNode exits with an error");
    let stderr = node.stderr();
    assert!(stderr.contains("not on the SuperLink's allow-list"), "{stderr}");
    assert!(!stderr.contains(NODE_READY), "{stderr}");
}
}

over_both_transports! {
fn flwr_with_the_wrong_ca_fails_with_a_clear_error() {
    let dir = app_with_keys("127.0.0.1:1");
    let app = dir.path();
    let link = secure_superlink(app);
    let other = tempfile::tempdir().unwrap();
    let o = flwr(&["keygen", "--out", other.path().to_str().unwrap()]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let wrong_ca = other.path().join("certificates/ca.crt");
    write_federation(app, &link.control, Some(wrong_ca.to_str().unwrap()));
    let mut ls = Proc::spawn_in("flwr ls", FLWR, &["ls", ".", "pyconde"], Some(app));
    let status = ls.wait_exit(COMMAND_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{}", ls.stderr());
    let stderr = ls.stderr();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("not signed by the CA in the root certificates"),
        "{stderr}"
    );
}
}

/// `flwr` in `app` with `SSL_CERT_FILE` set to `ca`, or with neither it nor
/// `SSL_CERT_DIR` (the system's trust store then).
fn flwr_trusting(app: &Path, args: &[&str], ca: Option<&Path>) -> std::process::Output {
    let mut command = std::process::Command::new(FLWR);
    command
        .args(args)
        .current_dir(app)
        .env_remove("RUST_LOG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env("NO_COLOR", "1");
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    command.output().unwrap()
}

over_both_transports! {
fn a_federation_with_only_an_address_trusts_the_platforms_certificates() {
    let dir = app_with_keys("127.0.0.1:1");
    let app = dir.path();
    let link = secure_superlink(app);
    write_federation(app, &link.control, None);
    let ca = app.join("certificates/ca.crt");
    let run = flwr_trusting(app, &["run", ".", "pyconde", "--run-config", QUICK], Some(&ca));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let run_id = started_run_id(&String::from_utf8_lossy(&run.stdout));
    let ls = flwr_trusting(app, &["ls", ".", "pyconde"], Some(&ca));
    let stdout = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{}", String::from_utf8_lossy(&ls.stderr));
    assert!(stdout.contains(&run_id.to_string()), "{stdout}");
    // flower-supernode without --root-certificates trusts the same store.
    let node = supernode_trusting(app, &link.fleet, 1, "client_credentials_1", Some(&ca));
    node.expect_log(NODE_READY);
    // The test CA is in no system store: refused, in one line that says how to trust it.
    let refused = flwr_trusting(app, &["ls", ".", "pyconde"], None);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains("certificate") && stderr.contains("SSL_CERT_FILE"),
        "{stderr}"
    );
}
}

#[test]
fn node_authentication_without_tls_is_refused_at_start() {
    let dir = app_with_keys("127.0.0.1:1");
    let stderr = SuperLink::refuse_insecure(
        &["--auth-list-public-keys", "keys/client_public_keys.csv"],
        Some(dir.path()),
    );
    assert!(stderr.contains("needs TLS"), "{stderr}");
}
