//! The `burn` template, Flower's "Quickstart with PyTorch" in Rust: `flwr new --framework
//! PyTorch` makes an app whose CNN in burn passes its own tests, learns the digits in a
//! local simulation, and runs unchanged on a SuperLink with two SuperNodes, over TLS and
//! with node authentication, as the tutorial's Part 4 deploys it.
//!
//! burn is no dependency of Floret's workspace, so this is the one test that downloads
//! crates: `cargo fetch` gets the versions the template's Cargo.lock pins (from the local
//! cache when they are there), then everything runs offline. The app is made and built
//! once, into this workspace's target directory, and the tests take turns on it.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use support::*;

const APP: &str = "cnn-app";

/// `flwr args` in `dir`, cargo pointed at the workspace's target directory and offline.
fn flwr_in(dir: &Path, args: &[&str]) -> Outcome {
    let target = target_dir();
    let mut proc = Proc::spawn_with_env(
        &format!("flwr {}", args.join(" ")),
        FLWR,
        args,
        Some(dir),
        &[
            ("CARGO_TARGET_DIR", &target),
            ("CARGO_NET_OFFLINE", Path::new("true")),
        ],
    );
    // The first build compiles burn: minutes on two busy cores.
    let status = proc.wait_exit(COMMAND_TIMEOUT * 5);
    Outcome {
        code: status.code(),
        stdout: proc.stdout(),
        stderr: proc.stderr(),
    }
}

/// `cargo args` in the app's directory, into the workspace's target directory.
fn cargo(app: &Path, args: &[&str], offline: bool) -> std::process::Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .args(args)
        .current_dir(app)
        .env("CARGO_TARGET_DIR", target_dir());
    if offline {
        command.env("CARGO_NET_OFFLINE", "true");
    }
    command.output().unwrap()
}

/// The app's pyproject.toml as `flwr new` made it.
struct App {
    dir: PathBuf,
    manifest: String,
}

/// Makes the app with `flwr new --framework PyTorch`, fetches burn and builds it, once.
fn app() -> &'static App {
    static APP_ONCE: OnceLock<App> = OnceLock::new();
    APP_ONCE.get_or_init(|| {
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("burn_template");
        let _ = std::fs::remove_dir_all(&parent);
        std::fs::create_dir_all(&parent).unwrap();
        let o = flwr_in(&parent, &["new", APP, "--framework", "PyTorch"]);
        assert_eq!(o.code, Some(0), "flwr new: {}", o.stderr);
        assert!(o.stdout.contains("from the burn template"), "{}", o.stdout);
        let dir = parent.join(APP);
        let o = cargo(&dir, &["fetch"], false);
        assert!(
            o.status.success(),
            "cargo fetch: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = flwr_in(&dir, &["build", ".", "--profile", "dev"]);
        assert_eq!(o.code, Some(0), "flwr build: {}", o.stderr);
        assert!(
            !o.stderr.contains("warning"),
            "compiles cleanly: {}",
            o.stderr
        );
        let manifest = std::fs::read_to_string(dir.join("pyproject.toml")).unwrap();
        App { dir, manifest }
    })
}

/// One test at a time: they share the app, its federations and two cores.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A daemon stopped with SIGTERM when dropped, also when a test fails, so that it stops
/// the app processes it started (SIGKILL, as `Proc` sends, would leave them running).
struct Daemon(Proc);

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.0.pid();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while process_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// The template's own tests: PyTorch's parameter names and shapes, the round trip through
/// an `ArrayRecord`, the partitioners, the IDX reader on files the test writes, training;
/// and the generated code is clippy- and rustfmt-clean, as the other templates' are.
#[test]
fn the_burn_apps_own_tests_and_lints_pass() {
    let _serial = serial();
    let app = app();
    let o = cargo(&app.dir, &["test"], true);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for test in [
        "parameters_have_pytorchs_names_and_shapes",
        "a_model_round_trips_through_its_arrays_with_the_same_outputs",
        "idx_files_from_data_dir_are_read_and_checked",
        "a_small_alpha_skews_the_digits_a_node_sees_and_none_is_empty",
        "training_learns_the_digits",
    ] {
        assert!(out.contains(&format!("{test} ... ok")), "{test}: {out}");
    }
    for args in [
        &["clippy", "--all-targets", "--", "-D", "warnings"][..],
        &["fmt", "--check"],
    ] {
        let o = cargo(&app.dir, args, true);
        assert!(
            o.status.success(),
            "cargo {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// `flwr run .` on 10 simulated nodes. The template's seed fixes the run: 0.93 after 5
/// rounds; seeds 1 to 6 end between 0.92 and 0.95 (and 0.82 to 0.91 after 3 rounds).
#[test]
fn the_burn_template_trains_a_cnn_on_the_digits() {
    let _serial = serial();
    let app = app();
    let o = flwr_in(
        &app.dir,
        &[
            "run",
            ".",
            "--profile",
            "dev",
            "--format",
            "json",
            "--run-config",
            "num-server-rounds=5",
        ],
    );
    assert_eq!(o.code, Some(0), "{}", o.stderr);
    let report: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let rounds: Vec<(f64, f64)> = report["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let m = &r["server_metrics"];
            (m["loss"].as_f64().unwrap(), m["accuracy"].as_f64().unwrap())
        })
        .collect();
    assert_eq!(rounds.len(), 5, "{report}");
    assert!(rounds[4].0 < rounds[0].0, "the loss falls: {rounds:?}");
    assert!(rounds[4].1 > 0.85, "most test digits are right: {rounds:?}");
    assert!(
        o.stderr
            .contains("a CNN for 8x8 images; the ClientApps compute with burn's flex backend (CPU"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("classifies"), "{}", o.stderr);

    // The partitioner is checked before the run starts.
    let o = flwr_in(
        &app.dir,
        &["run", ".", "--profile", "dev", "-c", "partitioner='shards'"],
    );
    assert_eq!(o.code, Some(2), "{}", o.stderr);
    assert!(
        o.stderr.contains("\"iid\" or \"dirichlet\""),
        "{}",
        o.stderr
    );
}

/// Part 4 of the tutorial with the burn app: TLS, SuperNode authentication and the FAB.
/// Keys and certificates from `flwr keygen`, a SuperLink that admits only the listed
/// keys, two SuperNodes signing with theirs, each with its partition from
/// `--node-config`; the app goes to the SuperLink as a FAB and trains the CNN there.
#[test]
fn the_burn_app_runs_on_a_secure_superlink_with_two_authenticated_supernodes() {
    let _serial = serial();
    let app = app();
    let pki = tempfile::tempdir().unwrap();
    let o = flwr(&[
        "keygen",
        "--clients",
        "2",
        "--out",
        pki.path().to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(0), "flwr keygen: {}", o.stderr);
    use_tls(pki.path());
    let key = |name: &str| {
        pki.path()
            .join("keys")
            .join(name)
            .to_str()
            .unwrap()
            .to_owned()
    };
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--auth-list-public-keys",
            &key("client_public_keys.csv"),
            "--auth-superlink-private-key",
            &key("server_credentials"),
            "--auth-superlink-public-key",
            &key("server_credentials.pub"),
        ],
    );
    let control = link.control.clone();
    let nodes: Vec<Daemon> = (1..=2)
        .map(|i| {
            let private = key(&format!("client_credentials_{i}"));
            let public = key(&format!("client_credentials_{i}.pub"));
            let args = [
                "--auth-supernode-private-key",
                private.as_str(),
                "--auth-supernode-public-key",
                public.as_str(),
            ];
            Daemon(supernode(&link.fleet, i - 1, 2, &args))
        })
        .collect();
    let _link = Daemon(link.proc);
    for node in &nodes {
        node.0.expect_log(NODE_READY);
    }
    // A TOML literal string: the path is taken as written.
    let ca = pki.path().join("certificates").join("ca.crt");
    let manifest = format!(
        "{}\n[tool.flwr.federations.test-link]\naddress = \"{control}\"\nroot-certificates = '{}'\n",
        app.manifest,
        ca.display()
    );
    std::fs::write(app.dir.join("pyproject.toml"), manifest).unwrap();
    let o = flwr_in(
        &app.dir,
        &[
            "run",
            ".",
            "test-link",
            "--stream",
            "--profile",
            "dev",
            "--run-config",
            "num-server-rounds=2 fraction-fit=1.0 fraction-evaluate=1.0",
        ],
    );
    std::fs::write(app.dir.join("pyproject.toml"), &app.manifest).unwrap();
    assert_eq!(o.code, Some(0), "flwr run: {}\n{}", o.stderr, o.stdout);
    assert!(o.stdout.contains("finished:completed"), "{}", o.stdout);
    for round in [1, 2] {
        for phase in ["train", "evaluate"] {
            let line = format!("round {round}: 2/2 {phase} replies, 0 failed");
            assert!(o.stderr.contains(&line), "{line:?} not in:\n{}", o.stderr);
        }
    }
    // Each node trained on its half: 719 of the 1438 training images.
    assert!(o.stderr.contains("num-examples=1438"), "{}", o.stderr);
    assert!(o.stderr.contains("classifies"), "{}", o.stderr);
}
