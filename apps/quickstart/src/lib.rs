//! floret-app-quickstart: Floret's counterpart of Flower's NumPy app template, used by the
//! benchmarks. The ServerApp runs FedAvg over `num-arrays` float32 arrays holding
//! `total-params` values; each ClientApp "trains" by adding seeded noise to what it receives
//! and reports a loss and an example count. There is no data and no model, so a run measures
//! the runtime itself.
//!
//! It depends only on floret-core and floret-strategies (plus small utility crates), never
//! on the actors, transports, simulation or CLI that run it.

pub mod client_app;
pub mod noise;
pub mod server_app;

pub use client_app::client_app;
pub use server_app::{QuickstartConfig, QuickstartServer, initial_arrays, server_app};

/// The app's `pyproject.toml`, as shipped with the crate.
pub const PYPROJECT: &str = include_str!("../pyproject.toml");

/// `[tool.flwr.app.components] serverapp`: the name the CLI registers `server_app()` under.
pub const SERVER_COMPONENT: &str = "quickstart.server_app:app";
/// `[tool.flwr.app.components] clientapp`: the name the CLI registers `client_app()` under.
pub const CLIENT_COMPONENT: &str = "quickstart.client_app:app";
/// `(serverapp, clientapp)` component strings.
pub const COMPONENTS: (&str, &str) = (SERVER_COMPONENT, CLIENT_COMPONENT);

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{Context, UserConfigValue};

    fn pyproject() -> toml::Table {
        PYPROJECT.parse().expect("pyproject.toml is valid TOML")
    }

    fn table<'a>(root: &'a toml::Table, path: &str) -> &'a toml::Table {
        path.split('.').fold(root, |t, key| {
            t.get(key)
                .and_then(toml::Value::as_table)
                .unwrap_or_else(|| panic!("no [{path}]"))
        })
    }

    #[test]
    fn pyproject_components_match_the_constants() {
        let root = pyproject();
        let components = table(&root, "tool.flwr.app.components");
        assert_eq!(
            components.get("serverapp").and_then(|v| v.as_str()),
            Some(SERVER_COMPONENT)
        );
        assert_eq!(
            components.get("clientapp").and_then(|v| v.as_str()),
            Some(CLIENT_COMPONENT)
        );
        assert_eq!(COMPONENTS, (SERVER_COMPONENT, CLIENT_COMPONENT));
        let project = table(&root, "project");
        assert_eq!(
            project.get("name").and_then(|v| v.as_str()),
            Some("quickstart")
        );
    }

    #[test]
    fn pyproject_federations_are_declared() {
        let root = pyproject();
        let feds = table(&root, "tool.flwr.federations");
        assert_eq!(
            feds.get("default").and_then(|v| v.as_str()),
            Some("local-simulation")
        );
        let nodes = |fed: &str| {
            let options = table(&root, &format!("tool.flwr.federations.{fed}.options"));
            options.get("num-supernodes").and_then(|v| v.as_integer())
        };
        assert_eq!(nodes("local-simulation"), Some(10));
        assert_eq!(nodes("simulation-1k"), Some(1000));
    }

    #[test]
    fn pyproject_config_is_what_the_server_reads() {
        let root = pyproject();
        let mut ctx = Context::default();
        for (key, value) in table(&root, "tool.flwr.app.config") {
            let value = match value {
                toml::Value::Integer(i) => UserConfigValue::Int(*i),
                toml::Value::Float(f) => UserConfigValue::Float(*f),
                toml::Value::String(s) => UserConfigValue::Str(s.clone()),
                other => panic!("{key} = {other} is not a number or a string"),
            };
            ctx.run_config.insert(key.clone(), value);
        }
        let cfg = QuickstartConfig::from_context(&ctx).unwrap();
        assert_eq!(
            (cfg.num_server_rounds, cfg.total_params, cfg.num_arrays),
            (3, 100_000, 4)
        );
        assert_eq!((cfg.fraction_train, cfg.fraction_evaluate), (1.0, 1.0));
        assert_eq!(cfg.round_timeout, std::time::Duration::from_secs(600));
        assert_eq!(cfg.strategy.name(), "FedAvg");
    }
}
