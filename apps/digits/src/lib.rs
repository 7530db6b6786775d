//! floret-app-digits: a real federated-learning app. A small multi-layer perceptron
//! (64 -> 32 -> 10) learns smartcore's bundled handwritten digits (1797 images of 8x8
//! pixels) with FedAvg: each node trains on its IID or Dirichlet partition of the data, and
//! the ServerApp scores every global model on a held-out test split.
//!
//! It depends only on floret-core and floret-strategies (plus ndarray, smartcore and rand
//! for the numerics), never on the actors, transports, simulation or CLI that run it. The
//! numeric code (`data`, `partition`, `model`) knows nothing of messages; `client_app` and
//! `server_app` are the glue.

pub mod client_app;
pub mod data;
pub mod model;
pub mod partition;
pub mod server_app;

pub use client_app::{DataConfig, NodeData, TrainConfig, client_app, node_data};
pub use server_app::{DigitsConfig, DigitsServer, central_evaluate, server_app};

/// The app's `pyproject.toml`, as shipped with the crate.
pub const PYPROJECT: &str = include_str!("../pyproject.toml");

/// `[tool.flwr.app.components] serverapp`: the name the CLI registers `server_app()` under.
pub const SERVER_COMPONENT: &str = "digits.server_app:app";
/// `[tool.flwr.app.components] clientapp`: the name the CLI registers `client_app()` under.
pub const CLIENT_COMPONENT: &str = "digits.client_app:app";
/// `(serverapp, clientapp)` component strings.
pub const COMPONENTS: (&str, &str) = (SERVER_COMPONENT, CLIENT_COMPONENT);
