//! The app process of a Flower FAB (a Python app) on a daemon:
//! `<daemon> __python-app serverapp|clientapp --<role>io-api-address ADDR --token T
//! --app-dir DIR --python PYTHON --bridge-cache DIR`.
//!
//! A daemon starts its own executable so (`floret_actors::apps::isolation`, the hidden
//! word `PYTHON_APP_MODE`) for a run whose FAB is Flower's zip: the process speaks AppIo
//! to its daemon exactly as a Rust app's binary does (`floret_app::host`'s `serverapp`
//! and `clientapp` modes, the same code), and hosts the user's Python through
//! `floret-python` on the app's files, which the daemon unpacked into its FAB cache. So a
//! Python app gets TLS, node authentication, persistence, resume and traces as a Rust app
//! does, and a Docker image that has the daemon has its host too (it needs a Python with
//! `flwr` besides: `--python`).
//!
//! A Python that is missing or cannot run the app (no `flwr`, a component that does not
//! import) is found once the run is claimed: the ServerApp's process fails the run with
//! the one line that says so; a ClientApp's answers each message with an error reply
//! carrying that line.

use crate::app_host::clientapp::{ClientAppArgs, serve_with as serve_client};
use crate::app_host::serverapp::{ServerAppArgs, serve_with as serve_server};
use crate::exit_code;
use clap::Parser;
use floret_actors::apps::isolation::PYTHON_APP_MODE;
use floret_core::AppManifest;
use floret_python::{BridgeError, PythonSettings};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the Python app is and what runs it.
#[derive(Debug, clap::Args)]
pub struct PythonFlags {
    /// The app's unpacked files (its `pyproject.toml` names the components).
    #[arg(long, value_name = "DIR")]
    pub app_dir: PathBuf,
    /// The Python with `flwr` and the app's dependencies.
    #[arg(long, value_name = "PATH", default_value = "python3")]
    pub python: PathBuf,
    /// Where the bridge's Python package is written (once per version).
    #[arg(long, value_name = "DIR")]
    pub bridge_cache: PathBuf,
}

/// Flags of `__python-app serverapp`.
#[derive(Debug, Parser)]
#[command(about = "Host a Flower app's Python ServerApp for a run on a SuperLink")]
pub struct PythonServerArgs {
    /// As a Rust app's `serverapp` mode.
    #[command(flatten)]
    pub appio: ServerAppArgs,
    /// The Python app.
    #[command(flatten)]
    pub python: PythonFlags,
}

/// Flags of `__python-app clientapp`.
#[derive(Debug, Parser)]
#[command(about = "Host a Flower app's Python ClientApp for a run on a SuperNode")]
pub struct PythonClientArgs {
    /// As a Rust app's `clientapp` mode.
    #[command(flatten)]
    pub appio: ClientAppArgs,
    /// The Python app.
    #[command(flatten)]
    pub python: PythonFlags,
}

/// Whether a daemon's arguments ask for this mode: `args[1]` is `PYTHON_APP_MODE`.
pub fn requested(args: &[OsString]) -> bool {
    args.get(1).is_some_and(|a| a == PYTHON_APP_MODE)
}

/// Runs the mode (`args[0]` the daemon, `args[1]` the hidden word, `args[2]` the role).
pub fn run(args: Vec<OsString>) -> ExitCode {
    let program = args
        .first()
        .and_then(|p| Path::new(p).file_name())
        .map_or_else(|| "daemon".to_owned(), |n| n.to_string_lossy().into_owned());
    let role = args.get(2).map(|r| r.to_string_lossy().into_owned());
    let mode_args = |role: &str| -> Vec<OsString> {
        std::iter::once(OsString::from(format!(
            "{program} {PYTHON_APP_MODE} {role}"
        )))
        .chain(args.iter().skip(3).cloned())
        .collect()
    };
    match role.as_deref() {
        Some("serverapp") => floret_app::process::app_main_with_args(
            "floret-serverapp",
            mode_args("serverapp"),
            2,
            |args: PythonServerArgs| async move {
                let settings = settings(&args.python)?;
                serve_server(
                    args.appio,
                    Box::new(move |workers| match workers {
                        None => floret_python::start_server(&settings)
                            .map(|server| (server, None))
                            .map_err(line),
                        Some(workers) => floret_python::start(&settings, workers)
                            .map(|app| (app.server_app, Some(app.client_app)))
                            .map_err(line),
                    }),
                )
                .await
            },
        ),
        Some("clientapp") => floret_app::process::app_main_with_args(
            "floret-clientapp",
            mode_args("clientapp"),
            1,
            |args: PythonClientArgs| async move {
                let settings = settings(&args.python)?;
                // One worker: the process answers its SuperNode's messages one at a time.
                serve_client(
                    args.appio,
                    Box::new(move || floret_python::start_client(&settings, 1).map_err(line)),
                )
                .await
            },
        ),
        _ => {
            eprintln!(
                "error: {PYTHON_APP_MODE} is started by the daemon itself for a Flower app in Python: name serverapp or clientapp"
            );
            ExitCode::from(exit_code::USAGE as u8)
        }
    }
}

/// The bridge's settings for the app in `flags.app_dir`, its components from its
/// `pyproject.toml`.
fn settings(flags: &PythonFlags) -> anyhow::Result<PythonSettings> {
    let manifest_path = flags.app_dir.join("pyproject.toml");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", manifest_path.display()))?;
    let manifest = AppManifest::parse(&text, &manifest_path)?;
    let bridge_dir = floret_python::install_bridge(&flags.bridge_cache)?;
    Ok(PythonSettings {
        python: flags.python.clone(),
        app_dir: std::path::absolute(&flags.app_dir).unwrap_or_else(|_| flags.app_dir.clone()),
        serverapp: manifest.serverapp,
        clientapp: manifest.clientapp,
        bridge_dir,
    })
}

/// The one line a run's status or an error reply carries.
fn line(e: BridgeError) -> String {
    match e {
        BridgeError::User(line) => line,
        other => other.to_string(),
    }
}

impl floret_app::process::Observed for PythonServerArgs {
    fn telemetry(&self) -> &floret_app::telemetry::TelemetryArgs {
        &self.appio.telemetry
    }
}

impl floret_app::process::Observed for PythonClientArgs {
    fn telemetry(&self) -> &floret_app::telemetry::TelemetryArgs {
        &self.appio.telemetry
    }
}
