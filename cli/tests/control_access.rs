//! Who may use the Control API, as operators and users meet it: what the SuperLink says at
//! start about who can reach it, `flwr supernode` for an admin and for a user with user
//! authentication on, and a registered node that never shows up again (a ghost) holding
//! up no round. Real processes on 127.0.0.1 only: where the Control API listens by
//! default (loopback without user auth, a test must not open 0.0.0.0) is decided by a pure
//! function, unit-tested in `daemon::superlink::control_access`.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use floret_core::{Fleet, RegisterNode};
use std::time::{Duration, Instant};
use support::*;

/// `--insecure` keeps the Control API open as in Flower, and says loudly what that means.
#[test]
fn an_insecure_superlink_warns_that_anyone_who_reaches_its_control_api_can_run_code() {
    let link = SuperLink::start();
    let line = link
        .proc
        .expect_log("without TLS or user authentication (--insecure)");
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("Control API on {}", link.control))
            && line.contains("register SuperNode keys")
            && line.contains("submit apps whose binaries this SuperLink runs")
            && line.contains("--user-auth-config"),
        "{line}"
    );
}

/// A TLS SuperLink without user authentication says its Control API is for this machine
/// only, and how to open it. (Here the loopback address is given, as every test's is; the
/// default when none is given is loopback too, see the module doc.)
#[test]
fn a_tls_superlink_without_user_auth_says_its_control_api_is_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    keygen_tls(dir.path());
    let link = SuperLink::start();
    assert!(link.control.starts_with("127.0.0.1:"), "{}", link.control);
    let line = link
        .proc
        .expect_log(&format!("Control API on loopback only ({})", link.control));
    assert!(line.contains("INFO"), "{line}");
    assert!(
        line.contains("--control-api-address 0.0.0.0:9093")
            && line.contains("FLWR_CONTROL_API_ADDRESS")
            && line.contains("--user-auth-config"),
        "{line}"
    );
    assert!(
        !link
            .proc
            .stderr()
            .contains("without TLS or user authentication"),
        "no --insecure warning over TLS"
    );
}

/// With user authentication on, the SuperNode key list is an admin's: `flwr supernode
/// register/list/unregister` work for one (they used to fail with "this SuperLink does
/// not manage SuperNode keys", because the CLI's logged-in session did not pass them on),
/// and a user who is not an admin is told the admin role is needed.
#[test]
fn with_user_auth_only_an_admin_manages_supernode_keys() {
    let dir = tempfile::tempdir().unwrap();
    keygen_tls(dir.path());
    let [alice, root, nobody] = ["alice", "root", "nobody"].map(|u| dir.path().join(u));
    let accounts = write_accounts(
        dir.path(),
        &[
            ("alice", "alice-pw", None),
            ("root", "root-pw", Some("admin")),
        ],
    );
    let link = user_auth_link(&accounts, &[]);
    link.proc.expect_log("user authentication on: 2 accounts");
    assert!(
        !link.proc.stderr().contains("Control API on loopback only"),
        "user authentication guards it: no loopback line"
    );
    let app_dir = app_for("quickstart", &link.control);
    enable_user_auth(app_dir.path());
    let app = app_dir.path().to_str().unwrap();
    let key = dir.path().join("keys").join("client_credentials_1.pub");
    let key = key.to_str().unwrap();
    for (home, user, password) in [(&alice, "alice", "alice-pw"), (&root, "root", "root-pw")] {
        let o = login(home, app, user, password);
        assert_eq!(o.code, Some(0), "login {user}: {}", o.stderr);
    }

    // Not logged in: the way to log in.
    let e = user_error(&flwr_as(&nobody, &["supernode", "list", app, "e2e"], ""));
    assert!(e.contains("flwr login . e2e"), "{e}");

    // A user: refused, with the role that is needed, and nothing registered.
    for args in [
        vec!["supernode", "register", key, app, "e2e"],
        vec!["supernode", "list", app, "e2e"],
        vec!["supernode", "unregister", "12345", app, "e2e"],
    ] {
        let e = user_error(&flwr_as(&alice, &args, ""));
        assert!(
            e.contains("requires the admin role") && e.contains("\"alice\" is not an admin"),
            "{args:?}: {e}"
        );
        assert!(
            !e.contains("flwr login"),
            "logging in again would not help: {e}"
        );
    }

    // The admin: registers, lists, unregisters.
    let o = flwr_as(&root, &["supernode", "register", key, app, "e2e"], "");
    assert_eq!(o.code, Some(0), "register: {}", o.stderr);
    let node_id: u64 = o
        .stdout
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no node id in {:?}", o.stdout));
    let o = flwr_as(
        &root,
        &["supernode", "list", app, "e2e", "--format", "json"],
        "",
    );
    assert_eq!(o.code, Some(0), "list: {}", o.stderr);
    let listed = json(&o.stdout);
    let nodes = listed["nodes"].as_array().unwrap();
    assert!(
        nodes
            .iter()
            .any(|n| n["node_id"] == node_id && n["status"] == "offline"),
        "{listed}"
    );
    let id = node_id.to_string();
    let o = flwr_as(&root, &["supernode", "unregister", &id, app, "e2e"], "");
    assert_eq!(o.code, Some(0), "unregister: {}", o.stderr);
    let o = flwr_as(&root, &["supernode", "list", app, "e2e"], "");
    assert_eq!(o.code, Some(0), "list: {}", o.stderr);
    assert!(!o.stdout.contains(&id), "{}", o.stdout);
}

/// One `RegisterNode` that nobody follows up (a heartbeat interval of a day keeps it
/// registered for two) is not sampled: a round that trains on every available node
/// completes with the two real SuperNodes at once instead of waiting out its timeout.
#[test]
fn a_ghost_node_does_not_hold_up_a_round() {
    let link = SuperLink::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ghost = runtime.block_on(async {
        let fleet = floret_transport::grpc::fleet_client(&link.fleet).unwrap();
        fleet
            .register_node(RegisterNode {
                heartbeat_interval: 86_400.0,
                ..RegisterNode::default()
            })
            .await
            .unwrap()
            .node_id
    });
    link.proc.expect_log(&format!("node_id={ghost}"));
    let nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();
    let started = Instant::now();
    let o = flwr(&[
        "run",
        app,
        "e2e",
        "--run-config",
        "num-server-rounds=1 total-params=1000 round-timeout=90.0",
        "--stream",
        "--format",
        "json",
    ]);
    let took = started.elapsed();
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(report["status"], "finished:completed", "{report}");
    let train = &report["rounds"][0]["train"];
    assert_eq!(
        (&train["sampled"], &train["replies"], &train["lost"]),
        (&2.into(), &2.into(), &0.into()),
        "only the two live nodes are sampled: {report}"
    );
    assert!(
        took < Duration::from_secs(45),
        "the round waited {took:?} (for the ghost?)"
    );
}
