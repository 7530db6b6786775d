//! Built-in apps, linked into the binaries and found by the component strings of their
//! `pyproject.toml` (`serverapp = "digits.server_app:app"`), as Flower finds Python objects.

use crate::UserError;
use floret_core::{AppCatalog, AppManifest, ClientApp, ServerApp};
use std::sync::Arc;

/// One built-in app: its component strings and constructors.
struct BuiltinApp {
    serverapp: &'static str,
    clientapp: &'static str,
    server_app: fn() -> Arc<dyn ServerApp>,
    client_app: fn() -> ClientApp,
}

const BUILTIN: [BuiltinApp; 2] = [
    BuiltinApp {
        serverapp: floret_app_quickstart::SERVER_COMPONENT,
        clientapp: floret_app_quickstart::CLIENT_COMPONENT,
        server_app: floret_app_quickstart::server_app,
        client_app: floret_app_quickstart::client_app,
    },
    BuiltinApp {
        serverapp: floret_app_digits::SERVER_COMPONENT,
        clientapp: floret_app_digits::CLIENT_COMPONENT,
        server_app: floret_app_digits::server_app,
        client_app: floret_app_digits::client_app,
    },
];

/// The apps this binary carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuiltinCatalog;

impl AppCatalog for BuiltinCatalog {
    fn server_app(&self, component: &str) -> Option<Arc<dyn ServerApp>> {
        BUILTIN
            .iter()
            .find(|a| a.serverapp == component)
            .map(|a| (a.server_app)())
    }

    fn client_app(&self, component: &str) -> Option<ClientApp> {
        BUILTIN
            .iter()
            .find(|a| a.clientapp == component)
            .map(|a| (a.client_app)())
    }

    fn components(&self) -> Vec<(String, String)> {
        BUILTIN
            .iter()
            .map(|a| (a.serverapp.to_string(), a.clientapp.to_string()))
            .collect()
    }
}

/// The ServerApp and ClientApp a manifest names; an unknown component is an error listing
/// the known ones.
pub fn resolve(
    catalog: &dyn AppCatalog,
    manifest: &AppManifest,
) -> Result<(Arc<dyn ServerApp>, ClientApp), UserError> {
    let known = catalog.components();
    let server = catalog.server_app(&manifest.serverapp).ok_or_else(|| {
        unknown(
            "serverapp",
            &manifest.serverapp,
            known.iter().map(|c| c.0.as_str()),
        )
    })?;
    let client = catalog.client_app(&manifest.clientapp).ok_or_else(|| {
        unknown(
            "clientapp",
            &manifest.clientapp,
            known.iter().map(|c| c.1.as_str()),
        )
    })?;
    Ok((server, client))
}

fn unknown<'a>(which: &str, given: &str, known: impl Iterator<Item = &'a str>) -> UserError {
    let known: Vec<&str> = known.collect();
    UserError::new(format!(
        "unknown {which} component {given:?} in [tool.flwr.app.components]: use one of {}",
        known.join(", ")
    ))
}
