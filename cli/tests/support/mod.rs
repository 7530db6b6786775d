//! A small harness for multi-process tests and benches: starts `flower-superlink`,
//! `flower-supernode` and `flwr` as real processes on 127.0.0.1, waits for readiness by
//! reading their logs, and kills whatever it started when dropped, also when a test fails.
#![allow(dead_code)]

pub(crate) mod otlp;
pub(crate) mod partition;

use std::cell::{Cell, RefCell};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Generous, because CI machines have two busy cores; a healthy start takes milliseconds.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound for a whole `flwr` command or a run; only reached when something hangs.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

pub(crate) const SUPERLINK: &str = env!("CARGO_BIN_EXE_flower-superlink");
pub(crate) const SUPERNODE: &str = env!("CARGO_BIN_EXE_flower-supernode");
pub(crate) const FLWR: &str = env!("CARGO_BIN_EXE_flwr");
/// The quickstart app as a user's app binary (tests/support/test_app.rs).
pub(crate) const TEST_APP: &str = env!("CARGO_BIN_EXE_floret-test-app");

/// Lines a process wrote to one stream, and a way to wait for more.
#[derive(Default)]
struct Lines {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

impl Lines {
    fn collect(self: &Arc<Self>, stream: impl Read + Send + 'static) {
        let me = self.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                me.lines.lock().unwrap().0.push(line);
                me.changed.notify_all();
            }
            me.lines.lock().unwrap().1 = true;
            me.changed.notify_all();
        });
    }

    /// The first line containing `needle`, waiting up to `timeout` for it.
    fn wait_for(&self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap();
        loop {
            if let Some(line) = guard.0.iter().find(|l| l.contains(needle)) {
                return Some(line.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if guard.1 {
                return None;
            }
            guard = self.changed.wait_timeout(guard, left).unwrap().0;
        }
    }

    /// Waits up to `timeout` for the stream to close (the reader has seen everything).
    fn wait_closed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap();
        while !guard.1 {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return;
            };
            guard = self.changed.wait_timeout(guard, left).unwrap().0;
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().0.join("\n")
    }

    /// Waits up to `timeout` until `check` finds what it looks for in the lines so far
    /// (it is asked again on every new line); `None` if the time passed or the stream
    /// closed first.
    fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[String]) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut guard = self.lines.lock().unwrap();
        loop {
            if let Some(found) = check(&guard.0) {
                return Some(found);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if guard.1 {
                return None;
            }
            guard = self.changed.wait_timeout(guard, left).unwrap().0;
        }
    }
}

/// A process the test started; killed on drop.
pub(crate) struct Proc {
    pub name: String,
    child: Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program`; daemons log at `info`, `flwr` at its default (`warn`), so that its
    /// stderr holds only what a user sees.
    pub(crate) fn spawn(name: &str, program: &str, args: &[&str]) -> Proc {
        Proc::spawn_in(name, program, args, None)
    }

    /// [`Proc::spawn`] in the directory `cwd` (relative paths in `args` are from there).
    pub(crate) fn spawn_in(name: &str, program: &str, args: &[&str], cwd: Option<&Path>) -> Proc {
        Proc::spawn_with_env(name, program, args, cwd, &[])
    }

    /// [`Proc::spawn_in`] with `env` added to its environment.
    pub(crate) fn spawn_with_env(
        name: &str,
        program: &str,
        args: &[&str],
        cwd: Option<&Path>,
        env: &[(&str, &Path)],
    ) -> Proc {
        let mut command = Command::new(program);
        command.envs(env.iter().copied());
        if let Some(cwd) = cwd {
            command.current_dir(cwd);
        }
        if program == FLWR {
            command.env_remove("RUST_LOG");
        } else {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .args(args)
            .env("NO_COLOR", "1")
            // FABs and app binaries SuperNodes cache stay in the build tree, not in the
            // home directory of whoever runs the tests.
            .env(
                "FLWR_FAB_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("fab-cache"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let stdout = Arc::new(Lines::default());
        let stderr = Arc::new(Lines::default());
        stdout.collect(child.stdout.take().unwrap());
        stderr.collect(child.stderr.take().unwrap());
        Proc {
            name: name.to_owned(),
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first stderr (log) line containing `needle`; panics after `READY_TIMEOUT`.
    pub(crate) fn expect_log(&self, needle: &str) -> String {
        self.stderr
            .wait_for(needle, READY_TIMEOUT)
            .unwrap_or_else(|| {
                panic!(
                    "{} did not log {needle:?} within {READY_TIMEOUT:?}; its log:\n{}",
                    self.name,
                    self.stderr.text()
                )
            })
    }

    /// The first stdout line containing `needle`, or `None` if the process ended without it.
    pub(crate) fn wait_stdout(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.stdout.wait_for(needle, timeout)
    }

    pub(crate) fn stdout(&self) -> String {
        self.stdout.text()
    }

    /// The first stderr (log) line containing `needle`, or `None` if it did not come
    /// within `timeout` (or the process ended without it).
    pub(crate) fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.stderr.wait_for(needle, timeout)
    }

    /// Waits up to `timeout` until `check`, given all stderr (log) lines so far, finds what
    /// it looks for; `None` if the time passed or the process ended first.
    pub(crate) fn wait_log_lines<T>(
        &self,
        timeout: Duration,
        check: impl FnMut(&[String]) -> Option<T>,
    ) -> Option<T> {
        self.stderr.wait_until(timeout, check)
    }

    pub(crate) fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) through kill(1).
    pub(crate) fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{signal} {} ({})", self.pid(), self.name);
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.status = Some(status);
                // Let the reader threads drain the pipes.
                self.stderr.wait_closed(Duration::from_secs(5));
                self.stdout.wait_closed(Duration::from_secs(5));
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not exit within {timeout:?}; its log:\n{}",
                    self.name,
                    self.stderr.text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn kill(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Proc {
    /// SIGTERM, then SIGKILL after a grace period: a daemon stopped with SIGTERM ends the
    /// app processes it started, which a SIGKILL would leave running.
    fn stop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.status = Some(status);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "--- {} (pid {}) stderr ---\n{}\n--- stdout ---\n{}",
                self.name,
                self.child.id(),
                self.stderr.text(),
                self.stdout.text()
            );
        }
    }
}

/// A running `flower-superlink` on 127.0.0.1 with OS-chosen ports.
pub(crate) struct SuperLink {
    pub proc: Proc,
    pub fleet: String,
    pub control: String,
    /// Its own state directory (`--state-dir`), unless the test chose `--database` or
    /// `--state-dir` itself: tests never touch the user's `~/.flwr`, nor each other's state.
    pub state_dir: Option<tempfile::TempDir>,
}

impl SuperLink {
    /// Starts on free ports and waits until both APIs listen.
    pub(crate) fn start() -> SuperLink {
        SuperLink::start_on("127.0.0.1:0", "127.0.0.1:0")
    }

    pub(crate) fn start_on(fleet: &str, control: &str) -> SuperLink {
        SuperLink::start_with(fleet, control, &[])
    }

    /// Kills this SuperLink as a crash would (SIGKILL) and starts another on the same
    /// addresses with `extra`; returns it once it logged that it resumed `run_id`.
    pub(crate) fn crash_and_restart(mut self, extra: &[&str], run_id: &str) -> SuperLink {
        self.proc.signal("KILL");
        self.proc.wait_exit(READY_TIMEOUT);
        let restarted = SuperLink::start_with(&self.fleet, &self.control, extra);
        restarted
            .proc
            .expect_log(&format!("run {run_id} resumed after a SuperLink restart"));
        restarted
    }

    /// Starts with `extra` flags (`--isolation process`, ...).
    pub(crate) fn start_with(fleet: &str, control: &str, extra: &[&str]) -> SuperLink {
        let security = superlink_security();
        let mut args: Vec<&str> = security.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        SuperLink::launch(fleet, control, &args, None)
    }

    /// Starts `--insecure` on free ports with `extra` flags in `cwd`, which the SuperLink must
    /// refuse with exit code 2; returns what it wrote to stderr.
    pub(crate) fn refuse_insecure(extra: &[&str], cwd: Option<&Path>) -> String {
        let mut args = vec![
            "--insecure",
            "--fleet-api-address",
            "127.0.0.1:0",
            "--control-api-address",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let mut proc = Proc::spawn_in("flower-superlink", SUPERLINK, &args, cwd);
        let status = proc.wait_exit(READY_TIMEOUT);
        assert_eq!(status.code(), Some(2), "{}", proc.stderr());
        proc.stderr()
    }

    /// Starts with exactly `args` (plus the two API addresses) in `cwd`: for TLS, where
    /// `--insecure` must not be given.
    pub(crate) fn launch(
        fleet: &str,
        control: &str,
        args: &[&str],
        cwd: Option<&Path>,
    ) -> SuperLink {
        let mut all = vec![
            "--fleet-api-address",
            fleet,
            "--control-api-address",
            control,
        ];
        all.extend_from_slice(args);
        let chosen = args
            .iter()
            .any(|a| a.starts_with("--database") || a.starts_with("--state-dir"));
        let state_dir = (!chosen).then(|| tempfile::tempdir().expect("temp state dir"));
        let state_path = state_dir
            .as_ref()
            .map(|d| d.path().to_string_lossy().into_owned());
        if let Some(path) = &state_path {
            all.extend_from_slice(&["--state-dir", path]);
        }
        let proc = Proc::spawn_in("flower-superlink", SUPERLINK, &all, cwd);
        let fleet = address_after(&proc.expect_log("Fleet API (SuperNodes) listening on "));
        let control = address_after(&proc.expect_log("Control API (flwr) listening on "));
        SuperLink {
            proc,
            fleet,
            control,
            state_dir,
        }
    }

    /// Where process-isolated ServerApps connect (the ServerAppIo API).
    pub(crate) fn serverappio(&self) -> String {
        address_after(
            &self
                .proc
                .expect_log("ServerAppIo API (ServerApps) listening on "),
        )
    }
}

/// This workspace's target directory (tests that build apps share its caches).
pub(crate) fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is target/tmp")
        .to_owned()
}

/// Where a SuperNode's process-isolated ClientApps connect (its ClientAppIo API).
pub(crate) fn clientappio(node: &Proc) -> String {
    address_after(&node.expect_log("ClientAppIo API (ClientApps) listening on "))
}

/// The `pid=N` of every log line of `proc` containing `needle`.
pub(crate) fn logged_pids(proc: &Proc, needle: &str) -> Vec<u32> {
    proc.stderr()
        .lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split("pid=").nth(1))
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// Whether a process with this pid exists (and is not a zombie).
pub(crate) fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

fn address_after(line: &str) -> String {
    line.rsplit(' ').next().unwrap().trim().to_owned()
}

thread_local! {
    /// The transport this test's SuperNodes and federations use (each test runs on a
    /// thread of its own); set by [`over_both_transports!`].
    static TRANSPORT: Cell<&'static str> = const { Cell::new("grpc") };
}

/// Makes the SuperNodes and federations that this test starts use `transport`.
pub(crate) fn use_transport(transport: &'static str) {
    TRANSPORT.with(|t| t.set(transport));
}

thread_local! {
    /// Where `flwr keygen` wrote this test's certificates, when its daemons use TLS.
    static PKI: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Makes the SuperLinks, SuperNodes and federations this test starts use TLS with the
/// certificates `flwr keygen` wrote under `dir` (instead of `--insecure`).
pub(crate) fn use_tls(dir: &Path) {
    PKI.with(|p| *p.borrow_mut() = Some(dir.to_path_buf()));
}

fn pki_file(name: &str) -> Option<String> {
    PKI.with(|p| {
        p.borrow().as_ref().map(|dir| {
            dir.join("certificates")
                .join(name)
                .to_string_lossy()
                .into_owned()
        })
    })
}

/// `--insecure`, or the TLS flags of a SuperLink (see [`use_tls`]).
fn superlink_security() -> Vec<String> {
    match (
        pki_file("ca.crt"),
        pki_file("server.pem"),
        pki_file("server.key"),
    ) {
        (Some(ca), Some(cert), Some(key)) => vec![
            "--ssl-ca-certfile".into(),
            ca,
            "--ssl-certfile".into(),
            cert,
            "--ssl-keyfile".into(),
            key,
        ],
        _ => vec!["--insecure".into()],
    }
}

/// `--insecure`, or a SuperNode's `--root-certificates` (see [`use_tls`]).
fn supernode_security() -> Vec<String> {
    match pki_file("ca.crt") {
        Some(ca) => vec!["--root-certificates".into(), ca],
        None => vec!["--insecure".into()],
    }
}

/// `grpc` or `quic`: see [`use_transport`].
pub(crate) fn transport() -> &'static str {
    TRANSPORT.with(Cell::get)
}

/// Defines the test `name` twice, as `name::grpc` and `name::quic`: the same body, with the
/// SuperNodes and federations it starts on that transport (the SuperLink serves both).
#[macro_export]
macro_rules! over_both_transports {
    ($(#[doc = $doc:literal])* fn $name:ident() $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body() $body

            #[test]
            fn grpc() {
                use_transport("grpc");
                body();
            }

            #[test]
            fn quic() {
                use_transport("quic");
                body();
            }
        }
    };
}

/// Starts a SuperNode of a `num`-way partitioned federation; `extra` adds flags.
pub(crate) fn supernode(fleet: &str, partition: u32, num: u32, extra: &[&str]) -> Proc {
    let node_config = format!("partition-id={partition} num-partitions={num}");
    let security = supernode_security();
    let mut args: Vec<&str> = security.iter().map(String::as_str).collect();
    args.extend([
        "--transport",
        transport(),
        "--superlink",
        fleet,
        "--node-config",
        &node_config,
    ]);
    args.extend_from_slice(extra);
    Proc::spawn(&format!("supernode {partition}"), SUPERNODE, &args)
}

/// A port that was free a moment ago (for a SuperLink that must start after its nodes).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A copy of a built-in app's directory whose pyproject.toml gains a federation `e2e`
/// pointing at `control` (with this test's transport and TLS).
pub(crate) fn app_for(app: &str, control: &str) -> tempfile::TempDir {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../apps")
        .join(app)
        .join("pyproject.toml");
    let mut manifest = std::fs::read_to_string(&source).unwrap();
    // TOML literal strings: a path is taken as written.
    let security = match pki_file("ca.crt") {
        Some(ca) => format!("root-certificates = '{ca}'"),
        None => "insecure = true".to_owned(),
    };
    manifest.push_str(&format!(
        "\n[tool.flwr.federations.e2e]\naddress = \"{control}\"\n{security}\ntransport = \"{}\"\n",
        transport()
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pyproject.toml"), manifest).unwrap();
    dir
}

/// What a finished `flwr` command left behind.
pub(crate) struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `flwr` to completion (bounded by `COMMAND_TIMEOUT`).
pub(crate) fn flwr(args: &[&str]) -> Outcome {
    let mut proc = Proc::spawn(&format!("flwr {}", args.join(" ")), FLWR, args);
    let status = proc.wait_exit(COMMAND_TIMEOUT);
    Outcome {
        code: status.code(),
        stdout: proc.stdout(),
        stderr: proc.stderr(),
    }
}

/// `flwr` in the background, for commands that follow a run.
pub(crate) fn flwr_spawn(args: &[&str]) -> Proc {
    Proc::spawn(&format!("flwr {}", args.join(" ")), FLWR, args)
}

/// What a SuperNode logs once it is registered with its SuperLink.
pub(crate) const NODE_READY: &str = "registered node_id=";
/// What a SuperNode logs when its SuperLink cannot be reached and it will try again.
pub(crate) const NODE_RETRYING: &str = "SuperLink unreachable";

/// `flwr args` with `FLWR_HOME=home` and `stdin` written to its standard input: each user
/// of a user-auth test has their own home, as two people on two machines would, and
/// `--password-stdin` reads the password from there.
pub(crate) fn flwr_as(home: &Path, args: &[&str], stdin: &str) -> Outcome {
    use std::io::Write;
    let mut child = Command::new(FLWR)
        .args(args)
        .env("FLWR_HOME", home)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flwr");
    // Dropping stdin closes it: flwr never waits for more.
    let _ = child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("flwr output");
    Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `flwr hash-password` for `password`: the argon2id hash an accounts file holds.
pub(crate) fn hash_password(home: &Path, password: &str) -> String {
    let o = flwr_as(home, &["hash-password"], &format!("{password}\n"));
    assert_eq!(o.code, Some(0), "hash-password: {}", o.stderr);
    let hash = o.stdout.trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// Writes `dir/users.toml` for `--user-auth-config` with one entry per `(name, password,
/// role)` (no role line for `None`), hashing each password with `flwr hash-password`.
pub(crate) fn write_accounts(dir: &Path, users: &[(&str, &str, Option<&str>)]) -> PathBuf {
    let entries: Vec<String> = users
        .iter()
        .map(|(name, password, role)| {
            let role = role.map_or(String::new(), |r| format!("role = \"{r}\"\n"));
            format!(
                "[[users]]\nname = \"{name}\"\npassword-hash = \"{}\"\n{role}",
                hash_password(dir, password)
            )
        })
        .collect();
    let path = dir.join("users.toml");
    std::fs::write(&path, entries.join("\n")).unwrap();
    path
}

/// A SuperLink with user authentication from `accounts` and the `extra` flags.
pub(crate) fn user_auth_link(accounts: &Path, extra: &[&str]) -> SuperLink {
    let mut args = vec!["--user-auth-config", accounts.to_str().unwrap()];
    args.extend_from_slice(extra);
    SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &args)
}

/// Turns on `enable-user-auth` for the app directory's federation (see `app_for`).
pub(crate) fn enable_user_auth(app_dir: &Path) {
    let manifest = app_dir.join("pyproject.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("enable-user-auth = true\n");
    std::fs::write(&manifest, text).unwrap();
}

/// `flwr login app e2e` as `user`, the password given on stdin.
pub(crate) fn login(home: &Path, app: &str, user: &str, password: &str) -> Outcome {
    flwr_as(
        home,
        &["login", app, "e2e", "--username", user, "--password-stdin"],
        &format!("{password}\n"),
    )
}

/// `flwr keygen --out dir` (one SuperNode key pair); the test's daemons and federations
/// then use TLS, which user authentication needs (the SuperLink refuses it with
/// `--insecure`).
pub(crate) fn keygen_tls(dir: &Path) {
    let o = flwr(&["keygen", "--out", dir.to_str().unwrap()]);
    assert_eq!(o.code, Some(0), "flwr keygen: {}", o.stderr);
    use_tls(dir);
}

/// The one `error: ...` line of a failed command with exit code 2, no panic.
pub(crate) fn user_error(o: &Outcome) -> String {
    assert_eq!(o.code, Some(2), "stdout: {} stderr: {}", o.stdout, o.stderr);
    let errors: Vec<&str> = o
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "one error line: {}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    errors[0].to_owned()
}

/// The status `flwr ls --run-id` reports for a run.
pub(crate) fn status_of(app: &str, run_id: u64) -> String {
    let id = run_id.to_string();
    let o = flwr(&["ls", app, "e2e", "--run-id", &id, "--format", "json"]);
    assert_eq!(o.code, Some(0), "flwr ls: {}", o.stderr);
    json(&o.stdout)["runs"][0]["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls `flwr ls` until the run has `status` (a run ends on its own schedule).
pub(crate) fn wait_for_status(app: &str, run_id: u64, status: &str) {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        let now = status_of(app, run_id);
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "run {run_id} is {now}, not {status}, after {COMMAND_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `text` as JSON, or a panic that shows the text.
pub(crate) fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The run id in `flwr run`'s `started run 42`.
pub(crate) fn started_run_id(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("started run "))
        .and_then(|id| id.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `started run ID` in {stdout:?}"))
}

/// Waits until `follower` (`flwr log --stream` of a run its SuperLink resumed after a
/// crash) shows FedAvg resuming from a round after the first, then the round after that
/// evaluated by all `nodes`: a round that cannot have been logged before the crash, so the
/// run goes on.
pub(crate) fn resumes_and_goes_on(follower: &Proc, nodes: u32) {
    let resumed = follower
        .wait_stdout("resuming from round", COMMAND_TIMEOUT)
        .unwrap_or_else(|| panic!("no resume: {}", follower.stdout()));
    // "FedAvg: resuming from round N of ... (checkpoint after round N-1)".
    let round: u64 = resumed
        .split("resuming from round ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no round in {resumed:?}"));
    assert!(round > 1, "{resumed}");
    let next = format!("round {}: {nodes}/{nodes} evaluate replies", round + 1);
    assert!(
        follower.wait_stdout(&next, COMMAND_TIMEOUT).is_some(),
        "{next:?} not in {}",
        follower.stdout()
    );
}
