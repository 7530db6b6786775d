//! SuperNode authentication with real processes: keys from `flwr keygen`, a SuperLink with
//! `--auth-list-public-keys`, SuperNodes signing with their keys, and `flwr supernode` to
//! change the allow-list while the SuperLink runs.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::path::Path;
use support::*;

/// `flwr keygen --clients n --out dir`; the test's daemons then use its certificates (node
/// authentication needs TLS).
fn keygen(dir: &Path, n: u32) {
    let o = flwr(&[
        "keygen",
        "--clients",
        &n.to_string(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(0), "flwr keygen: {}", o.stderr);
    use_tls(dir);
}

fn key(dir: &Path, name: &str) -> String {
    dir.join("keys").join(name).to_str().unwrap().to_owned()
}

fn auth_superlink(keys: &Path) -> SuperLink {
    SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--auth-list-public-keys",
            &key(keys, "client_public_keys.csv"),
            "--auth-superlink-private-key",
            &key(keys, "server_credentials"),
            "--auth-superlink-public-key",
            &key(keys, "server_credentials.pub"),
        ],
    )
}

/// The node id in a `registered node_id=N` log line.
fn node_id(line: &str) -> u64 {
    let rest = line.split("node_id=").nth(1).unwrap();
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

#[test]
fn supernodes_with_allowed_keys_complete_a_run() {
    let keys = tempfile::tempdir().unwrap();
    keygen(keys.path(), 2);
    let link = auth_superlink(keys.path());
    let nodes: Vec<Proc> = (1..=2)
        .map(|i| {
            let private = key(keys.path(), &format!("client_credentials_{i}"));
            let public = key(keys.path(), &format!("client_credentials_{i}.pub"));
            supernode(
                &link.fleet,
                i - 1,
                2,
                &[
                    "--auth-supernode-private-key",
                    &private,
                    "--auth-supernode-public-key",
                    &public,
                ],
            )
        })
        .collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&[
        "run",
        app,
        "e2e",
        "--run-config",
        "num-server-rounds=2 local-epochs=1",
        "--stream",
        "--format",
        "json",
    ]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    assert_eq!(json(&o.stdout)["status"], "finished:completed");

    let list = flwr(&["supernode", "list", app, "e2e", "--format", "json"]);
    assert_eq!(list.code, Some(0), "{}", list.stderr);
    let listed = json(&list.stdout);
    let nodes = listed["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2, "{listed}");
    assert!(nodes.iter().all(|n| n["status"] == "online"), "{listed}");
    assert!(
        nodes
            .iter()
            .all(|n| n["fingerprint"].as_str().unwrap().starts_with("SHA256:")),
        "{listed}"
    );
}

#[test]
fn an_unknown_key_is_refused_until_registered_and_after_unregistering() {
    let keys = tempfile::tempdir().unwrap();
    keygen(keys.path(), 1);
    let other = tempfile::tempdir().unwrap();
    keygen(other.path(), 1);
    let stranger_key = key(other.path(), "client_credentials_1");
    let link = auth_superlink(keys.path());
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    let stranger = |extra: &[&str]| {
        let mut args = vec!["--auth-supernode-private-key", stranger_key.as_str()];
        args.extend_from_slice(extra);
        supernode(&link.fleet, 0, 1, &args)
    };

    // Not on the list: refused, with the reason, and no node id.
    let mut refused = stranger(&[]);
    let status = refused.wait_exit(COMMAND_TIMEOUT);
    assert!(!status.success());
    let stderr = refused.stderr();
    assert!(
        stderr.contains("not on the SuperLink's allow-list"),
        "{stderr}"
    );
    assert!(!stderr.contains(NODE_READY), "{stderr}");

    // A node without a key at all is refused too.
    let mut unsigned = supernode(&link.fleet, 0, 1, &[]);
    unsigned.wait_exit(COMMAND_TIMEOUT);
    assert!(
        unsigned.stderr().contains("requires node authentication"),
        "{}",
        unsigned.stderr()
    );

    // Registered over the Control API: let in, under the id it was given.
    let pubkey = key(other.path(), "client_credentials_1.pub");
    let o = flwr(&["supernode", "register", &pubkey, app, "e2e"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let given: u64 = o
        .stdout
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("no node id in {:?}", o.stdout));
    let mut admitted = stranger(&["--heartbeat-interval", "1"]);
    assert_eq!(node_id(&admitted.expect_log(NODE_READY)), given);

    // Online once it has shown it is alive (its first heartbeat or pull, just after it
    // logs its registration): asked until then.
    let deadline = std::time::Instant::now() + COMMAND_TIMEOUT;
    loop {
        let list = flwr(&["supernode", "list", app, "e2e"]);
        assert_eq!(list.code, Some(0), "{}", list.stderr);
        let online = list
            .stdout
            .lines()
            .any(|l| l.starts_with(&given.to_string()) && l.contains("online"));
        if online {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never online:\n{}",
            list.stdout
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    // Unregistered: the connected node's next call fails and it stops.
    let o = flwr(&["supernode", "unregister", &given.to_string(), app, "e2e"]);
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let status = admitted.wait_exit(COMMAND_TIMEOUT);
    assert!(!status.success());
    assert!(
        admitted.stderr().contains("not authenticated"),
        "{}",
        admitted.stderr()
    );

    // Bad input: a file that is not a public key.
    let o = flwr(&["supernode", "register", &stranger_key, app, "e2e"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(o.stderr.contains("public key"), "{}", o.stderr);
    let o = flwr(&["supernode", "unregister", "12345", app, "e2e"]);
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr.contains("no SuperNode with id 12345"),
        "{}",
        o.stderr
    );
}
