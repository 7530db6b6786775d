//! Running the SuperLink: its three APIs over one `SuperLinkService`, and one way of
//! stopping them, taken on a signal and when a later part fails to start alike.

use super::config::SuperLinkConfig;
use super::control_access::{Level, announcement};
use super::state::open_state;
use crate::daemon::metrics::{Daemon, install as install_metrics};
use crate::daemon::{bind_error, connect_address};
use crate::registry::BuiltinCatalog;
use floret_actors::user_auth::AccountsAuthority;
use floret_actors::{
    AppLauncher, FabCache, HeartbeatPolicy, LinkAppIo, LinkFabs, LinkState, SuperLinkService,
    VirtualFleets,
};
use floret_core::NodeAuthority;
use floret_simulation::LinkFleets;
use floret_transport::ServerSecurity;
use floret_transport::grpc::{NodeAuth, Server, ServerOptions};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long the servers may take to drain open calls after the service has shut down.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the SuperLink until `shutdown` resolves, then shuts it down gracefully: unfinished
/// runs end finished:stopped, open calls drain, and the function returns.
pub async fn serve(
    config: SuperLinkConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_address {
        install_metrics(addr, Daemon::SuperLink)?;
    }
    let state = open_state(
        &config.store,
        config.node_auth.as_ref(),
        config.max_database_size,
    )?;
    let mut started = Started::default();
    let outcome = start(config, state, &mut started).await;
    if outcome.is_ok() {
        shutdown.await;
        tracing::info!("shutting down: stopping unfinished runs");
    }
    started.stop().await;
    outcome?;
    tracing::info!("SuperLink stopped");
    Ok(())
}

/// What `serve` has started so far. Each part is recorded as soon as it is up, so that
/// [`Started::stop`] stops exactly what is running, in the one order that is right.
#[derive(Default)]
struct Started {
    serverappio: Option<Server>,
    service: Option<SuperLinkService>,
    fleet: Option<Server>,
    control: Option<Server>,
}

impl Started {
    /// The service first, so that runs end finished:stopped and their processes are
    /// killed while the servers still answer; then the servers drain, together, for at
    /// most [`DRAIN_TIMEOUT`].
    async fn stop(self) {
        if let Some(service) = self.service {
            service.shutdown().await;
        }
        let drain = |server: Option<Server>| async move {
            if let Some(server) = server {
                server.shutdown().await;
            }
        };
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            tokio::join!(
                drain(self.fleet),
                drain(self.control),
                drain(self.serverappio)
            )
        })
        .await;
        if drained.is_err() {
            tracing::warn!("open calls did not end within {DRAIN_TIMEOUT:?}; leaving them");
        }
    }
}

/// Brings up the ServerAppIo API, the service over `state`, then the Fleet and Control
/// APIs, recording each in `started`.
async fn start(
    config: SuperLinkConfig,
    state: Arc<dyn LinkState>,
    started: &mut Started,
) -> anyhow::Result<()> {
    let mut fleet_options = ServerOptions {
        security: config.fleet_security.clone(),
        quic: true,
        limits: config.server_limits,
        ..ServerOptions::default()
    };
    if config.node_auth.is_some() {
        let authority: Arc<dyn NodeAuthority> = state.clone();
        fleet_options.node_auth = Some(NodeAuth::new(authority));
    }
    let appio = Arc::new(LinkAppIo::new(state.clone()));
    let serverappio = started.serverappio.insert(
        floret_transport::grpc::bind_serverappio_with(
            config.serverappio_api_address,
            appio.clone(),
            ServerOptions {
                limits: config.server_limits,
                ..ServerOptions::default()
            },
        )
        .await
        .map_err(|e| {
            bind_error(
                "serverappio-api-address",
                config.serverappio_api_address,
                &e,
            )
        })?,
    );
    let fabs = LinkFabs {
        io: appio,
        launcher: AppLauncher::new(
            config.isolation,
            FabCache::new(&config.fab_cache_dir),
            connect_address(serverappio.local_addr()),
        )
        .with_python(crate::daemon::python_host(&config.python)?),
        simulation_workers: config.simulation_workers,
    };
    let fleets = config.simulation_workers.map(|workers| {
        tracing::info!(
            workers,
            "simulation mode (--simulation): every run gets a virtual fleet from its options.num-supernodes; at most {workers} ClientApp calls at once (--simulation-workers)"
        );
        let fleets = LinkFleets::new(
            Arc::new(BuiltinCatalog),
            workers,
            config.max_simulation_supernodes,
        );
        Arc::new(fleets) as Arc<dyn VirtualFleets>
    });
    let service = started.service.insert(
        SuperLinkService::start_with(
            state,
            Arc::new(BuiltinCatalog),
            HeartbeatPolicy::default(),
            Some(fabs),
            config.limits,
            fleets,
        )
        .await?,
    );
    let fleet = started.fleet.insert(
        floret_transport::grpc::bind_fleet_with(
            config.fleet_api_address,
            service.fleet(),
            fleet_options,
        )
        .await
        .map_err(|e| bind_error("fleet-api-address", config.fleet_api_address, &e))?,
    );
    let served = ServerOptions {
        security: config.security.clone(),
        quic: true,
        limits: config.server_limits,
        ..ServerOptions::default()
    };
    let bound = match config.user_auth {
        Some(accounts) => {
            tracing::info!(
                "user authentication on: {} accounts; flwr must log in",
                accounts.users().len()
            );
            floret_transport::grpc::bind_control_with_users(
                config.control_api_address,
                service.control(),
                Arc::new(AccountsAuthority::new(accounts, config.login_limits)),
                served,
            )
            .await
        }
        None => {
            floret_transport::grpc::bind_control_with(
                config.control_api_address,
                service.control(),
                served,
            )
            .await
        }
    };
    let control = started.control.insert(
        bound.map_err(|e| bind_error("control-api-address", config.control_api_address, &e))?,
    );
    tracing::info!(
        "apps of FABs run with --isolation {}, binaries cached in {}, Flower apps in Python with {}",
        config.isolation,
        config.fab_cache_dir.display(),
        config.python.display()
    );
    tracing::info!(
        "ServerAppIo API (ServerApps) listening on {}",
        serverappio.local_addr()
    );
    let mode = match (&config.security, &config.fleet_security) {
        (ServerSecurity::Insecure, _) => {
            "plaintext gRPC (--insecure); QUIC with a throwaway certificate"
        }
        (_, ServerSecurity::Tls(tls)) if tls.is_mutual() => "TLS, mutual on the Fleet API",
        _ => "TLS",
    };
    tracing::info!("Fleet and Control APIs: gRPC over TCP and QUIC over UDP, same ports; {mode}");
    tracing::info!("Fleet API (SuperNodes) listening on {}", fleet.local_addr());
    tracing::info!("Control API (flwr) listening on {}", control.local_addr());
    match announcement(config.control_access, control.local_addr()) {
        Some((Level::Warn, line)) => tracing::warn!("{line}"),
        Some((Level::Info, line)) => tracing::info!("{line}"),
        None => {}
    }
    Ok(())
}
