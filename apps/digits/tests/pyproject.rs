//! The shipped pyproject.toml agrees with the constants the CLI registers the app under,
//! and its run config is one the ServerApp accepts.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod common;

use floret_app_digits::{CLIENT_COMPONENT, COMPONENTS, PYPROJECT, SERVER_COMPONENT};

#[test]
fn components_match_the_constants() {
    let root: toml::Table = PYPROJECT.parse().unwrap();
    let components = &root["tool"]["flwr"]["app"]["components"];
    assert_eq!(components["serverapp"].as_str(), Some(SERVER_COMPONENT));
    assert_eq!(components["clientapp"].as_str(), Some(CLIENT_COMPONENT));
    assert_eq!(COMPONENTS, (SERVER_COMPONENT, CLIENT_COMPONENT));
    assert_eq!(root["project"]["name"].as_str(), Some("digits"));
    let feds = &root["tool"]["flwr"]["federations"];
    assert_eq!(feds["default"].as_str(), Some("local-simulation"));
    assert_eq!(
        feds["local-simulation"]["options"]["num-supernodes"].as_integer(),
        Some(10)
    );
}

#[test]
fn run_config_is_valid_and_complete() {
    let rc = common::run_config();
    let keys: Vec<&str> = rc.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "num-server-rounds",
            "fraction-train",
            "fraction-evaluate",
            "local-epochs",
            "lr",
            "batch-size",
            "partitioner",
            "dirichlet-alpha",
            "seed",
            "round-timeout",
            "strategy",
            "proximal-mu",
            "server-learning-rate",
            "server-momentum",
            "eta",
            "eta-l",
            "beta-1",
            "beta-2",
            "tau",
            "beta",
            "num-malicious-nodes",
            "num-nodes-to-select",
            "q",
            "client-learning-rate",
        ]
    );
    let cfg = common::server_config(&rc);
    // The shipped config is FedAvg, every strategy parameter left to its default.
    assert_eq!(cfg.strategy.name(), "FedAvg");
    let train = cfg.train_config();
    assert_eq!(train.get_i64("local-epochs").unwrap(), cfg.local_epochs);
    assert_eq!(train.get_f64("lr").unwrap(), cfg.lr);
    assert_eq!(train.get_i64("batch-size").unwrap(), cfg.batch_size);
}
