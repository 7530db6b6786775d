//! `flwr run` on a Flower app written in Python: the app's components are Python
//! references (`mypkg.server_app:app`) and it has no Cargo.toml. Its ServerApp and a pool
//! of ClientApp workers start in the user's Python (`--python`, `FLORET_PYTHON`, or
//! `python3` on PATH) through `floret-python`, then the local simulation runs them as it
//! runs a Rust app's.

use crate::UserError;
use crate::credentials::flwr_home;
use crate::registry::BuiltinCatalog;
use crate::run_cmd::{Prepared, RunArgs, simulate};
use floret_core::AppCatalog;
use floret_python::{BridgeError, PythonSettings};
use floret_simulation::SimulationOptions;
use std::path::PathBuf;

/// Whether `prepared` is a Flower app in Python. A copy of a built-in app's
/// `pyproject.toml` names components this binary has, and still runs them.
pub fn is_python_app(args: &RunArgs, prepared: &Prepared) -> bool {
    let manifest = &prepared.project.manifest;
    let builtin = BuiltinCatalog.server_app(&manifest.serverapp).is_some()
        && BuiltinCatalog.client_app(&manifest.clientapp).is_some();
    !builtin
        && floret_python::is_python_app(&args.app_dir, &manifest.serverapp, &manifest.clientapp)
}

/// Runs the Python app in a local simulation; returns the exit code.
pub async fn execute(args: &RunArgs, prepared: Prepared) -> anyhow::Result<i32> {
    let Prepared {
        project,
        federation,
        run_config,
    } = prepared;
    if federation.address.is_some() {
        return Err(UserError::new(format!(
            "federation {:?} is a SuperLink: this Floret runs Flower apps in Python in local simulation only; pick a federation without `address` (e.g. `flwr run {} local-simulation`)",
            federation.name,
            args.app_dir.display()
        ))
        .into());
    }
    let Some(num_supernodes) = federation.options.num_supernodes else {
        return Err(UserError::new(format!(
            "federation {:?} has no options.num-supernodes: add options.num-supernodes = 10",
            federation.name
        ))
        .into());
    };
    let workers = SimulationOptions {
        num_supernodes,
        num_cpus: federation.options.client_resources.num_cpus,
        num_gpus: federation.options.client_resources.num_gpus,
    }
    .workers()
    .min(usize::try_from(num_supernodes).unwrap_or(usize::MAX));
    let bridge_dir =
        floret_python::install_bridge(&flwr_home()?.join("python")).map_err(anyhow::Error::from)?;
    let app_dir = std::path::absolute(&args.app_dir).unwrap_or_else(|_| args.app_dir.clone());
    let settings = PythonSettings {
        python: args
            .python
            .clone()
            .unwrap_or_else(|| PathBuf::from("python3")),
        app_dir,
        serverapp: project.manifest.serverapp.clone(),
        clientapp: project.manifest.clientapp.clone(),
        bridge_dir,
    };
    let app = floret_python::start(&settings, workers).map_err(|e| match e {
        BridgeError::User(line) => anyhow::Error::from(UserError::new(line)),
        other => anyhow::Error::from(other),
    })?;
    simulate(
        &project,
        &federation,
        run_config,
        args.output(),
        app.server_app,
        app.client_app,
    )
    .await
}
