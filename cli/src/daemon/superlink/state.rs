//! Where the SuperLink keeps its state (a SQLite database by default, memory with
//! `--database :memory:`), and opening it ready to serve: created if new, with the
//! SuperNode keys of `--auth-list-public-keys` recorded.

use super::config::NodeAuthConfig;
use crate::UserError;
use floret_actors::{LinkState, MemoryLinkState, SqliteLinkState};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the SuperLink keeps its state.
#[derive(Debug, Clone, PartialEq)]
pub enum Store {
    /// In memory: forgotten when the SuperLink stops (`--database :memory:`).
    Memory,
    /// A SQLite database file: runs survive restarts and crashes.
    File(PathBuf),
}

/// The database of `--database` / `--state-dir`.
pub(super) fn store(
    database: &str,
    state_dir: &str,
    env: &[(String, String)],
) -> Result<Store, UserError> {
    // Flower spells the in-memory store `:flwr-in-memory-state:`.
    if matches!(database, ":memory:" | ":flwr-in-memory-state:") {
        return Ok(Store::Memory);
    }
    if !database.is_empty() {
        return Ok(Store::File(PathBuf::from(database)));
    }
    if !state_dir.is_empty() {
        return Ok(Store::File(Path::new(state_dir).join(DATABASE_FILE)));
    }
    let var = |name: &str| {
        env.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
    };
    let dir = if let Some(home) = var(crate::credentials::FLWR_HOME) {
        home.join("superlink")
    } else if let Some(home) = var("HOME") {
        home.join(".flwr").join("superlink")
    } else {
        return Err(UserError::new(
            "neither FLWR_HOME nor HOME is set, so there is no default state directory: pass --state-dir DIR, --database FILE, or --database :memory:",
        ));
    };
    Ok(Store::File(dir.join(DATABASE_FILE)))
}

/// The database's name inside the state directory.
const DATABASE_FILE: &str = "state.db";

/// Opens the store of `--database` (creating the state directory of the default one) and
/// records whether SuperNodes must authenticate, and with which keys, before any server
/// is up to ask.
pub(super) fn open_state(
    store: &Store,
    node_auth: Option<&NodeAuthConfig>,
    max_size: Option<u64>,
) -> anyhow::Result<Arc<dyn LinkState>> {
    let state = open(store, max_size)?;
    state.set_node_auth(node_auth.is_some());
    if let Some(auth) = node_auth {
        let now = floret_actors::state::unix_now();
        for key in &auth.allowed {
            state
                .allow_node_key(key.spki_der().clone(), now)
                .map_err(|e| anyhow::anyhow!("could not record the allowed SuperNode keys: {e}"))?;
        }
        tracing::info!(
            allowed = auth.allowed.len(),
            "SuperNode authentication on: only allowed keys may connect"
        );
    }
    Ok(state)
}

/// The store itself, empty or as the last SuperLink left it, capped at `max_size` bytes
/// (`--max-database-size`, a database file only).
fn open(store: &Store, max_size: Option<u64>) -> anyhow::Result<Arc<dyn LinkState>> {
    let path = match store {
        Store::Memory => {
            if max_size.is_some() {
                tracing::warn!(
                    "--max-database-size has no effect with --database :memory: (no file)"
                );
            }
            tracing::info!(
                "state kept in memory (--database :memory:): runs end with the SuperLink"
            );
            return Ok(Arc::new(MemoryLinkState::new()));
        }
        Store::File(path) => path,
    };
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            UserError::new(format!(
                "cannot create the state directory {}: {e}; pass --state-dir with a writable directory, or --database :memory:",
                dir.display()
            ))
        })?;
    }
    let state = SqliteLinkState::open(path).map_err(|e| UserError::new(e.to_string()))?;
    tracing::info!(
        "state kept in {} (runs resume after a restart)",
        path.display()
    );
    if let Some(bytes) = max_size {
        let cap = state.limit_size(bytes).map_err(|e| {
            UserError::new(format!("--max-database-size {bytes}: cannot set it: {e}"))
        })?;
        if cap > bytes {
            tracing::warn!(
                "--max-database-size {bytes} is below the size of {} already: capped at its \
                 size, {cap} bytes; delete finished runs (--retention) to make room",
                path.display()
            );
        } else {
            tracing::info!("state database capped at {cap} bytes (--max-database-size)");
        }
    }
    Ok(Arc::new(state))
}
