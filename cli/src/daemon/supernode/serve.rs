//! Running the SuperNode: its ClientAppIo API and the node actor, which connects to the
//! SuperLink; the server drains once the node has stopped, whichever way it stopped.

use super::config::SuperNodeConfig;
use crate::UserError;
use crate::daemon::metrics::{Daemon, install as install_metrics};
use crate::daemon::{bind_error, connect_address};
use crate::registry::BuiltinCatalog;
use floret_actors::{AppLauncher, FabCache, NodeAppIo, NodeFabs, SuperNode, SuperNodeError};
use floret_transport::ClientSecurity;
use floret_transport::grpc::{ClientOptions, FleetClient};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long the ClientAppIo server may take to drain open calls at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The SuperNode's client for its SuperLink's Fleet API, as `config` says (transport, TLS,
/// the key that signs every request). Load generators that play many nodes in one process
/// use it too, so they connect exactly as `flower-supernode` does.
///
/// # Errors
/// `--superlink` is not `HOST:PORT`.
pub fn fleet_client(config: &SuperNodeConfig) -> Result<FleetClient, UserError> {
    let options = ClientOptions {
        transport: config.transport,
        security: config.security.clone(),
        node_key: config.node_key.clone(),
        ..ClientOptions::default()
    };
    if let Some(key) = &config.node_key {
        tracing::info!(
            key = %key.public_key().fingerprint(),
            "signing requests with this node's key"
        );
    }
    floret_transport::grpc::fleet_client_with(&config.superlink, options)
        .map_err(|e| UserError::new(format!("--superlink {}: {e}", config.superlink)))
}

/// Runs the SuperNode until `shutdown` resolves (Ok) or it gives up reaching the SuperLink
/// (an error saying so).
pub async fn serve(
    config: SuperNodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_address {
        install_metrics(addr, Daemon::SuperNode)?;
    }
    let fleet = fleet_client(&config)?;
    let appio = Arc::new(NodeAppIo::new());
    let clientappio = floret_transport::grpc::bind_clientappio_with(
        config.clientappio_api_address,
        appio.clone(),
        floret_transport::grpc::ServerOptions {
            limits: config.server_limits,
            ..floret_transport::grpc::ServerOptions::default()
        },
    )
    .await
    .map_err(|e| {
        bind_error(
            "clientappio-api-address",
            config.clientappio_api_address,
            &e,
        )
    })?;
    tracing::info!(
        "apps of FABs run with --isolation {}, binaries cached in {}, Flower apps in Python with {}",
        config.isolation,
        config.fab_cache_dir.display(),
        config.python.display()
    );
    tracing::info!(
        "ClientAppIo API (ClientApps) listening on {}",
        clientappio.local_addr()
    );
    let fabs = NodeFabs {
        io: appio,
        launcher: AppLauncher::new(
            config.isolation,
            FabCache::new(&config.fab_cache_dir),
            connect_address(clientappio.local_addr()),
        )
        .with_python(crate::daemon::python_host(&config.python)?),
    };
    let security = match &config.security {
        ClientSecurity::Insecure => "insecure".to_string(),
        ClientSecurity::Tls(tls) => format!("TLS, trusting {}", tls.trusted()),
    };
    tracing::info!(
        "Starting Floret SuperNode, SuperLink at {} over {} ({security})",
        config.superlink,
        config.transport
    );
    let ran = SuperNode::run_with_fabs(
        config.node,
        Arc::new(fleet),
        Arc::new(BuiltinCatalog),
        Some(fabs),
        shutdown,
    )
    .await;
    if tokio::time::timeout(DRAIN_TIMEOUT, clientappio.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("ClientAppIo calls did not end within {DRAIN_TIMEOUT:?}; leaving them");
    }
    ran.map_err(|e| match e {
        SuperNodeError::Config(_) => anyhow::Error::from(UserError::new(e.to_string())),
        other => anyhow::Error::from(other),
    })?;
    tracing::info!("SuperNode stopped");
    Ok(())
}
