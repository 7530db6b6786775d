//! The quickstart app as the simulation tests run it: its `pyproject.toml` config with
//! the test's overrides, under a federation name of the test's.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use floret_core::AppManifest;
use floret_core::AppRef;
use floret_core::run_config::{apply_overrides, parse_overrides};
use floret_simulation::SimulationRun;
use std::path::Path;

/// The quickstart app with `overrides` (run-config syntax) applied to its shipped config.
pub(crate) fn quickstart(federation: &str, overrides: &str) -> SimulationRun {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../apps/quickstart/pyproject.toml");
    let manifest = AppManifest::parse(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
    let run_config =
        apply_overrides(&manifest.config, &parse_overrides(overrides).unwrap()).unwrap();
    SimulationRun {
        app: AppRef {
            name: "quickstart".into(),
            ..AppRef::default()
        },
        federation: federation.into(),
        run_config,
        server_app: floret_app_quickstart::server_app(),
        client_app: floret_app_quickstart::client_app(),
    }
}
