//! How a daemon runs the apps that come as FABs (`--isolation`), and what it needs to
//! start them.
//!
//! Built-in apps always run inside the daemon. A FAB's binary runs as its own process:
//! - `subprocess` (default): the daemon writes the binary to its FAB cache and starts
//!   `<binary> serverapp|clientapp --<api>-address ADDR --token T` itself, and watches it;
//! - `process`: the daemon starts nothing; an app process started by someone else (another
//!   container, a test) connects to the AppIo API and claims the run (Flower's
//!   `--isolation process`).
//!
//! A Flower FAB (a Python app, see `floret_core::fab::flower`) has no binary: its files are
//! unpacked into the FAB cache and the daemon starts *itself* (`PythonHost::program`, its
//! own executable) in the hidden mode [`PYTHON_APP_MODE`]:
//! `<daemon> __python-app serverapp|clientapp --<api>-address ADDR --token T --app-dir DIR
//! --python PYTHON --bridge-cache DIR`. That process connects over AppIo exactly as an app
//! binary does and hosts the user's Python through `floret-python`, so TLS, node
//! authentication, persistence, resume and traces are the same for both kinds of app.

use crate::apps::app_process::{AppProcess, AppProcesses};
use crate::apps::fab_cache::FabCache;
use floret_core::UserConfig;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// The daemon starts and watches the app process itself (`--isolation subprocess`).
    #[default]
    Subprocess,
    /// The daemon starts nothing and waits for an app process started elsewhere to claim
    /// the run (`--isolation process`).
    Process,
}

impl FromStr for Isolation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "subprocess" => Ok(Isolation::Subprocess),
            "process" => Ok(Isolation::Process),
            other => Err(format!(
                "`{other}` is not an isolation mode: use subprocess or process"
            )),
        }
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Isolation::Subprocess => "subprocess",
            Isolation::Process => "process",
        })
    }
}

/// The variable that hands an app process its parent span (the W3C header's name).
pub const TRACEPARENT: &str = "TRACEPARENT";

/// The hidden first argument with which a daemon's executable runs a Flower FAB's Python
/// app as an app process (see the module doc); not a word users type.
pub const PYTHON_APP_MODE: &str = "__python-app";

/// How a daemon starts the app process of a Flower FAB (a Python app).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonHost {
    /// The executable that hosts the Python app: the daemon's own (`current_exe`), which
    /// understands [`PYTHON_APP_MODE`].
    pub program: PathBuf,
    /// The user's Python, with `flwr` and the app's dependencies (`--python`,
    /// `FLORET_PYTHON`, default `python3`).
    pub python: PathBuf,
}

/// Everything a daemon needs to start FAB apps. Cloning shares the process registry.
#[derive(Debug, Clone)]
pub struct AppLauncher {
    /// Whether the daemon starts app processes itself or waits for them to connect.
    pub isolation: Isolation,
    /// Where binaries (and, on a SuperNode, packed FABs) are kept by hash.
    pub cache: FabCache,
    /// The AppIo address an app process connects to (the bound one: a real port, and a
    /// loopback address when the API listens on all interfaces).
    pub appio_address: String,
    /// How to start a Flower FAB's Python app; `None` refuses such FABs' app processes.
    pub python: Option<PythonHost>,
    processes: AppProcesses,
}

impl AppLauncher {
    /// A launcher with no app processes yet; `appio_address` must be the bound address
    /// (see the field).
    pub fn new(isolation: Isolation, cache: FabCache, appio_address: String) -> AppLauncher {
        AppLauncher {
            isolation,
            cache,
            appio_address,
            python: None,
            processes: AppProcesses::default(),
        }
    }

    /// The launcher, able to start Flower FABs' Python apps through `host`.
    pub fn with_python(mut self, host: PythonHost) -> AppLauncher {
        self.python = Some(host);
        self
    }

    /// Starts `<binary> <role> --<role>io-api-address ADDR --token T [EXTRA...]`; `role`
    /// is `serverapp` or `clientapp`. When traced, the process gets the current span as
    /// `TRACEPARENT`, so that its spans join the run's trace.
    pub async fn spawn(
        &self,
        binary: &Path,
        role: &str,
        token: &str,
        extra: &[String],
    ) -> Result<AppProcess, String> {
        self.start(binary, None, role, token, extra).await
    }

    /// Starts the app process of a Flower FAB whose files are in `app_dir` (see the module
    /// doc); `role` and `extra` as for [`AppLauncher::spawn`].
    pub async fn spawn_python(
        &self,
        app_dir: &Path,
        role: &str,
        token: &str,
        extra: &[String],
    ) -> Result<AppProcess, String> {
        let host = self.python.as_ref().ok_or_else(|| {
            format!(
                "this daemon was not given a way to run Flower apps in Python, so it cannot start the {} of a Flower FAB",
                role_name(role)
            )
        })?;
        let mut flags = vec![
            "--app-dir".to_owned(),
            app_dir.to_string_lossy().into_owned(),
            "--python".to_owned(),
            host.python.to_string_lossy().into_owned(),
            "--bridge-cache".to_owned(),
            self.cache
                .dir()
                .join("python")
                .to_string_lossy()
                .into_owned(),
        ];
        flags.extend(extra.iter().cloned());
        self.start(&host.program, Some(PYTHON_APP_MODE), role, token, &flags)
            .await
    }

    async fn start(
        &self,
        program: &Path,
        mode: Option<&str>,
        role: &str,
        token: &str,
        extra: &[String],
    ) -> Result<AppProcess, String> {
        let binary = program;
        let flag = format!("--{role}io-api-address");
        let mut args: Vec<&str> = mode.into_iter().collect();
        args.extend([role, flag.as_str(), &self.appio_address, "--token", token]);
        args.extend(extra.iter().map(String::as_str));
        let header = floret_core::trace_context::current();
        let envs: Vec<(&str, String)> = if header.is_empty() {
            Vec::new()
        } else {
            vec![(TRACEPARENT, header)]
        };
        self.processes
            .spawn(binary, &args, &envs)
            .await
            .map_err(|e| {
                format!(
                    "could not start the {} process {}: {e}",
                    role_name(role),
                    binary.display()
                )
            })
    }

    /// Kills every app process this daemon started (shutdown).
    pub fn kill_all(&self) {
        self.processes.kill_all();
    }
}

/// The flags with which a `--simulation` SuperLink starts a FAB's ServerApp process, so
/// that the process runs the run as a simulation of its own ClientApp: the run's
/// `federation_options` (as one TOML document, the form [`simulation_options`] reads
/// back) and the SuperLink's `--simulation-workers`.
pub fn simulation_flags(options: &UserConfig, workers: usize) -> Result<Vec<String>, String> {
    let text = toml::to_string(options)
        .map_err(|e| format!("could not pass the run's options to its app process: {e}"))?;
    Ok(vec![
        "--simulation-options".to_owned(),
        text,
        "--simulation-workers".to_owned(),
        workers.to_string(),
    ])
}

/// The run's `federation_options` from a `--simulation-options` value written by
/// [`simulation_flags`].
pub fn simulation_options(text: &str) -> Result<UserConfig, String> {
    toml::from_str(text)
        .map_err(|e| format!("--simulation-options is not the options a SuperLink writes: {e}"))
}

/// `serverapp` -> `ServerApp`, for messages.
pub(crate) fn role_name(role: &str) -> &'static str {
    if role == "serverapp" {
        "ServerApp"
    } else {
        "ClientApp"
    }
}

/// Whether an AppIo session is held by an app process, and its place among the sessions
/// waiting for one (`--isolation process`). Both ends of AppIo, the SuperLink's and the
/// SuperNode's, hand waiting sessions out by the same rule, [`claim_longest_waiting`]:
/// the session that has waited longest first, by a ticket taken when it opened (run ids
/// are random and say nothing of age).
#[derive(Debug, Default)]
pub(crate) struct Claim {
    claimed: AtomicBool,
    ticket: u64,
}

impl Claim {
    /// A session's claim, `claimed` at once when its daemon started the process itself;
    /// `tickets` numbers the sessions of one endpoint.
    pub(crate) fn new(claimed: bool, tickets: &AtomicU64) -> Claim {
        Claim {
            claimed: AtomicBool::new(claimed),
            ticket: tickets.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether an app process holds the session.
    pub(crate) fn is_claimed(&self) -> bool {
        self.claimed.load(Ordering::SeqCst)
    }
}

/// Marks the longest-waiting unclaimed session of `sessions` claimed and returns it.
pub(crate) fn claim_longest_waiting<'a, S: 'a>(
    sessions: impl IntoIterator<Item = (&'a String, &'a S)>,
    claim: impl Fn(&S) -> &Claim,
) -> Option<(&'a String, &'a S)> {
    let (token, session) = sessions
        .into_iter()
        .filter(|(_, s)| !claim(s).is_claimed())
        .min_by_key(|(_, s)| claim(s).ticket)?;
    claim(session).claimed.store(true, Ordering::SeqCst);
    Some((token, session))
}

/// A fresh AppIo token: 128 random bits in hex.
pub(crate) fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_reads_and_writes_flowers_names() {
        for mode in [Isolation::Subprocess, Isolation::Process] {
            assert_eq!(mode.to_string().parse::<Isolation>().unwrap(), mode);
        }
        let e = "docker".parse::<Isolation>().unwrap_err();
        assert!(e.contains("subprocess or process"), "{e}");
    }

    #[test]
    fn a_runs_options_reach_its_app_process_unchanged() {
        use floret_core::UserConfigValue;
        let mut options = UserConfig::new();
        options.insert("num-supernodes".into(), UserConfigValue::Int(10));
        options.insert(
            "backend.client-resources.num-cpus".into(),
            UserConfigValue::Float(0.5),
        );
        options.insert("chaos.enabled".into(), UserConfigValue::Bool(true));
        options.insert("name".into(), UserConfigValue::Str("a \"b\"\n\0".into()));
        let flags = simulation_flags(&options, 3).unwrap();
        assert_eq!(flags[0], "--simulation-options");
        assert_eq!(flags[2..], ["--simulation-workers", "3"]);
        assert_eq!(simulation_options(&flags[1]).unwrap(), options);
        let e = simulation_options("num-supernodes = 10").unwrap_err();
        assert!(e.contains("--simulation-options"), "{e}");
    }

    #[test]
    fn tokens_are_128_bit_hex_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
