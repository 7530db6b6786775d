//! Flower's Python apps on Floret, unchanged.
//!
//! A Flower app directory (`pyproject.toml` whose components are `module:attr` and no
//! Cargo.toml) runs on Floret's engine: its ServerApp in one Python process whose `Grid`
//! is Floret's (`server`), its ClientApp in a pool of long-lived Python workers
//! (`client`), both started from the user's Python (the one with `flwr` and the app's
//! own dependencies). The engine sees a `ServerApp` and a `ClientApp` like any Rust
//! app's, so everything a local simulation has (run config, `--format json`, history
//! files, chaos options, traces) applies as it is.
//!
//! The Python side is the package in `python/floret_bridge/`, carried inside this crate
//! (`bundle`) and written under a cache directory on first use. The two sides speak
//! framed protobuf over the child's stdin/stdout (`frames`): Floret's `flwr.proto`
//! messages are byte-compatible with Flower 1.42's, so the Python side decodes them with
//! Flower's own serde.

mod bundle;
mod client;
mod frames;
mod process;
mod server;
mod wire;

use floret_core::{ClientApp, ServerApp};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

pub use bundle::files as bridge_files;

/// Why a Python app could not start.
#[derive(Debug, Error)]
pub enum BridgeError {
    /// Something the user fixes (no Python, no flwr in it, a component that does not
    /// load): one line that names the problem and the fix.
    #[error("{0}")]
    User(String),
    /// The bridge itself failed (a pipe, a file it writes).
    #[error("the Python bridge: {0}")]
    Io(String),
}

/// How to start the user's Python for one app.
#[derive(Debug, Clone)]
pub struct PythonSettings {
    /// The interpreter: `--python`, `FLORET_PYTHON`, or `python3` on PATH.
    pub python: PathBuf,
    /// The app directory, first on the app's `sys.path` (as Flower puts it).
    pub app_dir: PathBuf,
    /// `[tool.flwr.app.components] serverapp`, e.g. `"mypkg.server_app:app"`.
    pub serverapp: String,
    /// `[tool.flwr.app.components] clientapp`.
    pub clientapp: String,
    /// Where the bridge package is installed (see `install_bridge`).
    pub bridge_dir: PathBuf,
}

/// Writes the bridge's Python package under `cache` (once per version) and returns the
/// directory that goes into [`PythonSettings::bridge_dir`].
///
/// # Errors
/// [`BridgeError::Io`] when the directory cannot be written.
pub fn install_bridge(cache: &Path) -> Result<PathBuf, BridgeError> {
    bundle::install(cache)
}

/// A Python app started and loaded, ready for a run.
pub struct PythonApp {
    /// The user's ServerApp (its process is started and has loaded the component).
    pub server_app: Arc<dyn ServerApp>,
    /// A ClientApp that answers every message type through the worker pool.
    pub client_app: ClientApp,
}

impl std::fmt::Debug for PythonApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PythonApp").finish_non_exhaustive()
    }
}

/// Starts the ServerApp's process and `workers` ClientApp workers, and waits until each
/// has loaded its component, so that an app that cannot load is refused before the run.
/// Blocks for as long as the imports take.
///
/// # Errors
/// [`BridgeError::User`] with one line when the Python is missing, has no `flwr`, or a
/// component does not import or is not a Flower app; [`BridgeError::Io`] otherwise.
pub fn start(settings: &PythonSettings, workers: usize) -> Result<PythonApp, BridgeError> {
    // The ClientApp workers are forked from the ServerApp's process once it has loaded
    // (they skip Flower's imports); any it could not fork are spawned.
    let replies = Arc::new(wire::Replies::default());
    let server = server::PythonServerApp::start_spawned(settings)?
        .wait_ready(settings, Arc::clone(&replies))?;
    let forked = server.fork_workers(settings, workers.max(1));
    let pool = client::Pool::start(settings, workers, Some(replies), forked)?;
    Ok(PythonApp {
        server_app: Arc::new(server),
        client_app: pool.into_client_app(),
    })
}

/// Starts the ServerApp's process alone and waits until it has loaded its component: the
/// ServerApp of a deployed run, whose ClientApps run on the SuperNodes. Blocks for as long
/// as the import takes.
///
/// # Errors
/// As [`start`].
pub fn start_server(settings: &PythonSettings) -> Result<Arc<dyn ServerApp>, BridgeError> {
    // Replies come from the SuperNodes over the Fleet API, never from workers here, so
    // the registry stays empty and every reply is encoded for the app as it comes.
    let server = server::PythonServerApp::start_spawned(settings)?
        .wait_ready(settings, Arc::new(wire::Replies::default()))?;
    Ok(Arc::new(server))
}

/// Starts `workers` ClientApp workers alone and waits until each has loaded its component:
/// the ClientApp of a deployed run on one SuperNode. Blocks for as long as the imports take.
///
/// # Errors
/// As [`start`].
pub fn start_client(settings: &PythonSettings, workers: usize) -> Result<ClientApp, BridgeError> {
    // Spawned, not forked: no ServerApp process runs on a SuperNode; and no reply bytes
    // kept, since no ServerApp here would take them.
    Ok(client::Pool::start(settings, workers, None, Vec::new())?.into_client_app())
}

/// Whether `app_dir` holds a Flower app in Python: it is not a Cargo crate, its
/// components are Python references (`package.module:attribute`), and the ServerApp's
/// top-level package or module is in the directory (where Flower imports it from).
pub fn is_python_app(app_dir: &Path, serverapp: &str, clientapp: &str) -> bool {
    let top = serverapp.split(['.', ':']).next().unwrap_or_default();
    !app_dir.join("Cargo.toml").exists()
        && is_python_reference(serverapp)
        && is_python_reference(clientapp)
        && (app_dir.join(top).is_dir() || app_dir.join(format!("{top}.py")).is_file())
}

/// `module.path:attribute`, each part a Python identifier.
fn is_python_reference(component: &str) -> bool {
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    };
    match component.split_once(':') {
        Some((module, attr)) => module.split('.').all(ident) && ident(attr),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flower_component_references_are_python_apps() {
        let dir = tempfile::tempdir().unwrap();
        assert!(
            !is_python_app(dir.path(), "pkg.server_app:app", "pkg.client_app:app"),
            "no package pkg in the directory"
        );
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        assert!(is_python_app(
            dir.path(),
            "pkg.server_app:app",
            "pkg.client_app:app"
        ));
        assert!(!is_python_app(
            dir.path(),
            "pkg.server_app",
            "pkg.client_app:app"
        ));
        assert!(!is_python_app(
            dir.path(),
            "pkg.server-app:app",
            "pkg.client_app:app"
        ));
        std::fs::write(dir.path().join("Cargo.toml"), "").unwrap();
        assert!(!is_python_app(
            dir.path(),
            "pkg.server_app:app",
            "pkg.client_app:app"
        ));
    }
}
