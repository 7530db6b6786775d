//! User authentication as users meet it: `flower-superlink --user-auth-config`, a
//! federation with `enable-user-auth = true`, `flwr login`, and runs that only their owner
//! (or an admin) can see or stop. Real processes on 127.0.0.1; each user has their own
//! `FLWR_HOME`, as two people on two machines would.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const QUICK: &str = "num-server-rounds=2 local-epochs=1";

/// Starts `flower-superlink --insecure --user-auth-config accounts`, which must refuse to
/// start with exit code 2; returns what it wrote to stderr.
fn refused_start(accounts: &Path) -> String {
    SuperLink::refuse_insecure(&["--user-auth-config", accounts.to_str().unwrap()], None)
}

#[test]
fn users_must_log_in_and_see_only_their_own_runs() {
    let dir = tempfile::tempdir().unwrap();
    keygen_tls(dir.path());
    let [alice, bob, root] = ["alice", "bob", "root"].map(|u| dir.path().join(u));
    let accounts = write_accounts(
        dir.path(),
        &[
            ("alice", "alice-pw", None),
            ("bob", "bob-pw", None),
            ("root", "root-pw", Some("admin")),
        ],
    );

    let link = user_auth_link(&accounts, &[]);
    link.proc.expect_log("user authentication on: 3 accounts");
    let nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app_dir = app_for("digits", &link.control);
    enable_user_auth(app_dir.path());
    let app = app_dir.path().to_str().unwrap();

    // Not logged in: refused before anything is sent, with the way to log in.
    let refused = user_error(&flwr_as(&alice, &["ls", app, "e2e"], ""));
    assert_eq!(
        refused,
        "error: not logged in to e2e: run 'flwr login . e2e'"
    );
    let refused = user_error(&flwr_as(&alice, &["run", app, "e2e"], ""));
    assert!(refused.contains("flwr login . e2e"), "{refused}");

    // A wrong password, and an unknown user, say the same thing.
    let wrong = user_error(&login(&alice, app, "alice", "nope"));
    assert!(wrong.contains("wrong username or password"), "{wrong}");
    let unknown = user_error(&login(&alice, app, "mallory", "alice-pw"));
    assert_eq!(unknown, wrong);
    assert!(
        !alice.join("credentials").exists()
            || std::fs::read_dir(alice.join("credentials"))
                .unwrap()
                .next()
                .is_none()
    );

    // Alice logs in; her tokens are hers alone.
    let o = login(&alice, app, "alice", "alice-pw");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.contains("logged in to `e2e` as alice"),
        "{}",
        o.stdout
    );
    let stored: Vec<_> = std::fs::read_dir(alice.join("credentials"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&stored[0]), 0o600);
        assert_eq!(mode(&alice.join("credentials")), 0o700);
    }

    // Alice runs the app, and sees it through.
    let o = flwr_as(&alice, &["run", app, "e2e", "--run-config", QUICK], "");
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    let run_id: u64 = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("started run "))
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no run id in {}", o.stdout));
    let id = run_id.to_string();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let o = flwr_as(
            &alice,
            &["ls", app, "e2e", "--run-id", &id, "--format", "json"],
            "",
        );
        assert_eq!(o.code, Some(0), "{}", o.stderr);
        let run = &json(&o.stdout)["runs"][0];
        assert_eq!(run["owner"], "alice");
        if run["status"] == "finished:completed" {
            break;
        }
        assert!(Instant::now() < deadline, "run {run_id}: {run}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Bob sees none of it: alice's run answers exactly like a run that does not exist.
    let o = login(&bob, app, "bob", "bob-pw");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = flwr_as(&bob, &["ls", app, "e2e"], "");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert_eq!(o.stdout.trim(), "no runs");
    let absent = 987_654_u64;
    for command in ["stop", "log"] {
        let theirs = user_error(&flwr_as(&bob, &[command, &id, app, "e2e"], ""));
        let missing = user_error(&flwr_as(
            &bob,
            &[command, &absent.to_string(), app, "e2e"],
            "",
        ));
        assert_eq!(
            theirs,
            missing.replace(&absent.to_string(), &id),
            "`flwr {command}` on another user's run"
        );
    }
    let theirs = user_error(&flwr_as(&bob, &["ls", app, "e2e", "--run-id", &id], ""));
    assert!(
        theirs.contains(&format!("no run with id {run_id}")),
        "{theirs}"
    );

    // The admin sees every run, with its owner.
    let o = login(&root, app, "root", "root-pw");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = flwr_as(&root, &["ls", app, "e2e"], "");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(
        o.stdout.lines().next().unwrap().ends_with("owner"),
        "{}",
        o.stdout
    );
    let row = o
        .stdout
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("run {run_id} not listed for the admin: {}", o.stdout));
    assert!(row.ends_with("alice"), "{row}");

    // Logging out forgets the tokens.
    let o = flwr_as(&bob, &["logout", app, "e2e"], "");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let refused = user_error(&flwr_as(&bob, &["ls", app, "e2e"], ""));
    assert!(refused.contains("not logged in to e2e"), "{refused}");
}

#[test]
fn a_superlink_with_user_auth_refuses_a_federation_without_it() {
    let dir = tempfile::tempdir().unwrap();
    keygen_tls(dir.path());
    let accounts = write_accounts(dir.path(), &[("alice", "pw", None)]);
    let link = user_auth_link(&accounts, &[]);
    let app_dir = app_for("digits", &link.control);
    let app = app_dir.path().to_str().unwrap();
    let e = user_error(&flwr_as(dir.path(), &["ls", app, "e2e"], ""));
    assert!(
        e.contains("requires a login") && e.contains("enable-user-auth = true"),
        "{e}"
    );
}

#[test]
fn a_bad_accounts_file_stops_the_superlink_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users.toml");
    std::fs::write(
        &path,
        "[[users]]\nname = \"alice\"\nrole = \"root\"\npassword-hash = \"x\"\n",
    )
    .unwrap();
    let stderr = refused_start(&path);
    let line = stderr
        .lines()
        .find(|l| l.contains("--user-auth-config"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        line.contains("user \"alice\" (line 2)") && line.contains("unknown role"),
        "{line}"
    );
}

/// Passwords in plaintext: a SuperLink given user authentication and `--insecure` does not
/// start, and says so in one line naming both flags.
#[test]
fn user_auth_with_insecure_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_accounts(dir.path(), &[("alice", "pw", None)]);
    let stderr = refused_start(&path);
    assert!(
        stderr.contains("--user-auth-config needs TLS, but --insecure was given"),
        "{stderr}"
    );
}

/// A SuperLink with user authentication, the given extra flags, and users alice and root
/// (an admin); answers it with an app directory whose federation `e2e` logs in.
fn link_with_users(dir: &Path, flags: &[&str]) -> (SuperLink, tempfile::TempDir) {
    keygen_tls(dir);
    let accounts = write_accounts(
        dir,
        &[
            ("alice", "alice-pw", None),
            ("root", "root-pw", Some("admin")),
        ],
    );
    let link = user_auth_link(&accounts, flags);
    let app_dir = app_for("digits", &link.control);
    enable_user_auth(app_dir.path());
    (link, app_dir)
}

/// Guessing is pointless: after `--max-login-failures-per-user` wrong passwords even the
/// right one is refused until `--login-lockout` has passed. Sessions end where they should:
/// an admin lists and revokes them (a user may not), and `flwr logout` ends the session on
/// the SuperLink, so a copy of the tokens is worthless afterwards.
#[test]
fn logins_are_rate_limited_and_sessions_end_on_revoke_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let (_link, app_dir) = link_with_users(
        dir.path(),
        &["--max-login-failures-per-user", "2", "--login-lockout", "4"],
    );
    let app = app_dir.path().to_str().unwrap();
    let [alice, root] = ["alice", "root"].map(|u| dir.path().join(u));

    for _ in 0..2 {
        let wrong = user_error(&login(&alice, app, "alice", "guess"));
        assert!(wrong.contains("wrong username or password"), "{wrong}");
    }
    let locked_at = Instant::now();
    let locked = user_error(&login(&alice, app, "alice", "alice-pw"));
    assert!(
        locked.contains("too many failed logins") && locked.contains("retry in"),
        "{locked}"
    );
    std::thread::sleep(
        Duration::from_secs(4).saturating_sub(locked_at.elapsed()) + Duration::from_millis(300),
    );
    let o = login(&alice, app, "alice", "alice-pw");
    assert_eq!(o.code, Some(0), "after the lockout: {}", o.stderr);

    // Sessions are for admins.
    let refused = user_error(&flwr_as(&alice, &["session", "list", app, "e2e"], ""));
    assert!(refused.contains("only an admin"), "{refused}");
    let o = login(&root, app, "root", "root-pw");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = flwr_as(
        &root,
        &["session", "list", app, "e2e", "--format", "json"],
        "",
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let sessions = json(&o.stdout)["sessions"].as_array().unwrap().clone();
    let users: Vec<&str> = sessions
        .iter()
        .map(|s| s["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "root"], "{}", o.stdout);
    assert_eq!(sessions[1]["role"], "admin");
    let stored = |home: &Path| {
        let dir = home.join("credentials");
        let file = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        (file.clone(), std::fs::read_to_string(file).unwrap())
    };
    let (_, alice_login) = stored(&alice);
    let token = alice_login
        .lines()
        .find_map(|l| l.strip_prefix("access-token = "))
        .unwrap()
        .trim_matches('"');
    assert!(!o.stdout.contains(token), "a list never shows tokens");

    // The admin revokes alice's sessions: her tokens stop working at once.
    let o = flwr_as(
        &root,
        &["session", "revoke", app, "e2e", "--user", "alice"],
        "",
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(o.stdout.contains("revoked 1 session"), "{}", o.stdout);
    let refused = user_error(&flwr_as(&alice, &["ls", app, "e2e"], ""));
    assert!(refused.contains("no longer valid"), "{refused}");

    // Logging out ends the session on the SuperLink: a copy of the tokens kept from before
    // is refused afterwards.
    let (file, copy) = stored(&root);
    let o = flwr_as(&root, &["logout", app, "e2e"], "");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    assert!(!file.exists());
    std::fs::write(&file, copy).unwrap();
    let refused = user_error(&flwr_as(&root, &["ls", app, "e2e"], ""));
    assert!(refused.contains("no longer valid"), "{refused}");
}

/// Refreshing does not keep a login alive past `--session-max-age`: then the user logs in
/// again.
#[test]
fn a_login_ends_at_its_absolute_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let (_link, app_dir) = link_with_users(dir.path(), &["--session-max-age", "3"]);
    let app = app_dir.path().to_str().unwrap();
    let alice = dir.path().join("alice");
    let o = login(&alice, app, "alice", "alice-pw");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let o = flwr_as(&alice, &["ls", app, "e2e"], "");
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    std::thread::sleep(Duration::from_millis(3300));
    let refused = user_error(&flwr_as(&alice, &["ls", app, "e2e"], ""));
    assert!(
        refused.contains("no longer valid") && refused.contains("flwr login"),
        "{refused}"
    );
}
