//! `flower-superlink`: the server side of a deployment. Serves the Fleet API (SuperNodes
//! connect, default port 9092), the Control API (`flwr` connects, default port 9093) and
//! the ServerAppIo API (process-isolated ServerApps connect) over gRPC, runs built-in
//! ServerApps in-process and the ServerApps of FABs as processes of their own
//! (`--isolation`), keeps its state in memory.
//!
//! ```text
//! flower-superlink
//!  ├─ Fleet gRPC server ───────┐
//!  ├─ Control gRPC server ─────┼─> SuperLinkService (actors) ─> MemoryLinkState
//!  ├─ ServerAppIo gRPC server ─┘    └─ ServerApp processes of FAB runs (subprocess)
//!  └─ signal listener: SIGINT/SIGTERM -> service shutdown (runs end finished:stopped,
//!                                        their processes are killed), then the servers drain
//! ```

use super::metrics::{Daemon, install as install_metrics, metrics_address};
use super::settings::layered;
use super::{
    appio_listen_address, auth_key_pair, bind_error, connect_address, fab_cache_dir,
    listen_address, parse_isolation, server_security,
};
use crate::UserError;
use crate::registry::BuiltinCatalog;
use floret_actors::user_auth::{Accounts, AccountsAuthority, TokenLifetimes};
use floret_actors::{
    AppLauncher, FabCache, HeartbeatPolicy, Isolation, LinkAppIo, LinkFabs, LinkState,
    MemoryLinkState, SqliteLinkState, SuperLinkService,
};
use floret_core::NodeAuthority;
use floret_transport::ServerSecurity;
use floret_transport::auth::{NodeKeyPair, NodePublicKey, load_allow_list};
use floret_transport::grpc::{NodeAuth, ServerOptions};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long the servers may take to drain open calls after the service has shut down.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags, with Flower's names. Each may also be set in the `--config` file (same name,
/// without the dashes in front) or as `FLWR_<NAME>` (upper case, `_` for `-`).
#[derive(Debug, clap::Parser, Serialize)]
#[command(
    name = "flower-superlink",
    version,
    about = "The Floret SuperLink: coordinates SuperNodes and runs ServerApps"
)]
#[serde(rename_all = "kebab-case")]
pub struct SuperLinkArgs {
    /// Logging and tracing (command line and OTEL_* / RUST_LOG only, not --config).
    #[command(flatten)]
    #[serde(skip)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// Serve without TLS (plaintext gRPC; QUIC then uses a throwaway self-signed
    /// certificate that only --insecure clients accept). For testing only.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub insecure: bool,
    /// The CA certificate that signed --ssl-certfile; the SuperLink checks the pair at
    /// start (PEM, e.g. certificates/ca.crt from `flwr keygen`).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_ca_certfile: Option<String>,
    /// The SuperLink's TLS certificate (PEM, e.g. certificates/server.pem).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_certfile: Option<String>,
    /// The private key of --ssl-certfile (PEM, e.g. certificates/server.key).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_keyfile: Option<String>,
    /// Mutual TLS on the Fleet API: SuperNodes must present a client certificate signed
    /// by this CA (PEM) [default: no client certificates].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_client_ca_certfile: Option<String>,
    /// Where SuperNodes connect (Fleet API) [default: 0.0.0.0:9092].
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet_api_address: Option<String>,
    /// Where `flwr` connects (Control API) [default: 0.0.0.0:9093].
    #[arg(long, visible_alias = "exec-api-address", value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_api_address: Option<String>,
    /// Where process-isolated ServerApps connect (ServerAppIo API) [default: 127.0.0.1:9091
    /// with --isolation process; any free port on 127.0.0.1 with subprocess].
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serverappio_api_address: Option<String>,
    /// How the ServerApps of FABs run: `subprocess` starts each as a process of the
    /// SuperLink; with `process` the SuperLink starts nothing and waits for
    /// `<app> serverapp --serverappio-api-address ...` to claim the run. Built-in apps run
    /// inside the SuperLink either way [default: subprocess].
    #[arg(long, value_name = "MODE", value_parser = ["subprocess", "process"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Where app binaries from FABs are kept, by hash [default: $XDG_CACHE_HOME/floret/fabs
    /// or ~/.cache/floret/fabs].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fab_cache_dir: Option<String>,
    /// The SQLite database that keeps nodes, runs, messages, FABs and checkpoints across
    /// restarts; `:memory:` keeps them in memory only, forgotten when the SuperLink stops
    /// [default: state.db in --state-dir].
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Where the default database lives [default: $FLWR_HOME/superlink, or
    /// ~/.flwr/superlink].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// Turn on user authentication for the Control API with this accounts file (TOML:
    /// `[[users]]` tables with `name`, `password-hash` or `api-token-hash` from
    /// `flwr hash-password`, and `role = "user"|"admin"`). `flwr` must then log in first
    /// (`flwr login`), and users see only their own runs.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_auth_config: Option<String>,
    /// Turns on SuperNode authentication: only SuperNodes whose public key is in this CSV
    /// (OpenSSH `ecdsa-sha2-nistp384` keys, comma-separated or one per line, as
    /// `flwr keygen` writes keys/client_public_keys.csv) or added with
    /// `flwr supernode register` may connect.
    #[arg(long, value_name = "FILE.csv")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_list_public_keys: Option<String>,
    /// The SuperLink's own private key (keys/server_credentials).
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_superlink_private_key: Option<String>,
    /// The SuperLink's own public key (keys/server_credentials.pub); must match the private key.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_superlink_public_key: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464)
    /// [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    /// A TOML file of settings, keyed by these flags' names (`insecure = true`,
    /// `fleet-api-address = "0.0.0.0:9092"`); FLWR_* variables override it, flags override both.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The merged settings before validation.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Settings {
    insecure: bool,
    ssl_ca_certfile: Option<String>,
    ssl_certfile: Option<String>,
    ssl_keyfile: Option<String>,
    ssl_client_ca_certfile: Option<String>,
    fleet_api_address: String,
    control_api_address: String,
    /// Empty: chosen by `isolation` (see `appio_listen_address`).
    serverappio_api_address: String,
    isolation: String,
    /// Empty: the default cache (see `fab_cache_dir`).
    fab_cache_dir: String,
    /// Empty: `state.db` in the state directory.
    database: String,
    /// Empty: the default (see `state_dir`).
    state_dir: String,
    /// Empty: no user authentication.
    user_auth_config: String,
    /// Empty: node authentication off.
    auth_list_public_keys: String,
    auth_superlink_private_key: String,
    auth_superlink_public_key: String,
    /// Empty: no metrics endpoint.
    metrics_address: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            insecure: false,
            ssl_ca_certfile: None,
            ssl_certfile: None,
            ssl_keyfile: None,
            ssl_client_ca_certfile: None,
            fleet_api_address: "0.0.0.0:9092".into(),
            control_api_address: "0.0.0.0:9093".into(),
            serverappio_api_address: String::new(),
            isolation: "subprocess".into(),
            fab_cache_dir: String::new(),
            database: String::new(),
            state_dir: String::new(),
            user_auth_config: String::new(),
            auth_list_public_keys: String::new(),
            auth_superlink_private_key: String::new(),
            auth_superlink_public_key: String::new(),
            metrics_address: String::new(),
        }
    }
}

/// SuperNode authentication, from `--auth-*` files.
#[derive(Debug, Clone)]
pub struct NodeAuthConfig {
    /// The keys of `--auth-list-public-keys`.
    pub allowed: Vec<NodePublicKey>,
    /// The SuperLink's own key pair (`--auth-superlink-private-key`), loaded and checked
    /// against `--auth-superlink-public-key` at startup so that a wrong file fails now,
    /// not later. Not used to sign anything yet: it is kept for SuperLink-to-SuperNode
    /// authentication, which Flower's flags anticipate.
    pub superlink_key: Option<NodeKeyPair>,
}

impl PartialEq for NodeAuthConfig {
    fn eq(&self, other: &Self) -> bool {
        self.allowed == other.allowed
            && self.superlink_key.as_ref().map(NodeKeyPair::public_key)
                == other.superlink_key.as_ref().map(NodeKeyPair::public_key)
    }
}

impl NodeAuthConfig {
    fn from_settings(s: &Settings) -> Result<Option<NodeAuthConfig>, UserError> {
        let superlink_key = superlink_key(s)?;
        if s.auth_list_public_keys.is_empty() {
            if superlink_key.is_some() {
                tracing::warn!(
                    "--auth-superlink-private-key without --auth-list-public-keys: node authentication is off"
                );
            }
            return Ok(None);
        }
        let allowed = load_allow_list(Path::new(&s.auth_list_public_keys)).map_err(|e| {
            UserError::new(format!(
                "--auth-list-public-keys {e}: list SuperNode public keys (`ecdsa-sha2-nistp384 AAAA...`), comma-separated or one per line, e.g. keys/client_public_keys.csv from `flwr keygen`"
            ))
        })?;
        Ok(Some(NodeAuthConfig {
            allowed,
            superlink_key,
        }))
    }
}

fn superlink_key(s: &Settings) -> Result<Option<NodeKeyPair>, UserError> {
    auth_key_pair(
        "superlink",
        &s.auth_superlink_private_key,
        &s.auth_superlink_public_key,
        "keys/server_credentials",
    )
}

/// What the SuperLink runs with, validated.
#[derive(Debug, Clone)]
pub struct SuperLinkConfig {
    /// TLS (or plaintext) of the Control API; the Fleet API's adds client certificates
    /// under mutual TLS. Both APIs are served over gRPC (TCP) and QUIC (UDP, same port).
    pub security: ServerSecurity,
    /// The Fleet API's TLS: `security`, plus the client CA under mutual TLS.
    pub fleet_security: ServerSecurity,
    /// Fleet API listen address; port 0 picks a free port (logged once bound).
    pub fleet_api_address: SocketAddr,
    /// Control API listen address; port 0 picks a free port.
    pub control_api_address: SocketAddr,
    /// ServerAppIo API listen address; port 0 picks a free port.
    pub serverappio_api_address: SocketAddr,
    /// How the ServerApps of FABs run.
    pub isolation: Isolation,
    /// Where their binaries are written.
    pub fab_cache_dir: PathBuf,
    /// The accounts of `--user-auth-config`; `None`: no user authentication.
    pub user_auth: Option<Accounts>,
    /// SuperNode authentication; `None`: any SuperNode may connect.
    pub node_auth: Option<NodeAuthConfig>,
    /// Where the state is kept.
    pub store: Store,
    /// Where Prometheus scrapes `/metrics`; `None`: no endpoint.
    pub metrics_address: Option<SocketAddr>,
}

/// Where the SuperLink keeps its state.
#[derive(Debug, Clone, PartialEq)]
pub enum Store {
    /// In memory: forgotten when the SuperLink stops (`--database :memory:`).
    Memory,
    /// A SQLite database file: runs survive restarts and crashes.
    File(PathBuf),
}

/// The database of `--database` / `--state-dir`.
fn store(database: &str, state_dir: &str, env: &[(String, String)]) -> Result<Store, UserError> {
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

impl SuperLinkConfig {
    /// Merges defaults, the `--config` file, `env` (`FLWR_*`) and the flags, and checks the
    /// result.
    pub fn from_args(
        args: &SuperLinkArgs,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<SuperLinkConfig, UserError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let s: Settings = layered(
            &Settings::default(),
            args.config.as_deref(),
            env.clone(),
            args,
        )?;
        let security = server_security(
            s.insecure,
            s.ssl_ca_certfile.as_deref(),
            s.ssl_certfile.as_deref(),
            s.ssl_keyfile.as_deref(),
        )?;
        let fleet_security = match (&security, s.ssl_client_ca_certfile.as_deref()) {
            (ServerSecurity::Tls(tls), Some(ca)) => ServerSecurity::Tls(
                tls.clone()
                    .require_client_certificates(ca.as_ref())
                    .map_err(|e| UserError::new(format!("--ssl-client-ca-certfile: {e}")))?,
            ),
            (ServerSecurity::Insecure, Some(_)) => {
                return Err(UserError::new(
                    "--ssl-client-ca-certfile needs TLS: pass --ssl-certfile and --ssl-keyfile instead of --insecure",
                ));
            }
            (security, None) => security.clone(),
        };
        let node_auth = NodeAuthConfig::from_settings(&s)?;
        if node_auth.is_some() && matches!(security, ServerSecurity::Insecure) {
            return Err(UserError::new(
                "--auth-list-public-keys needs TLS: node signatures do not cover request bodies and TLS keeps them intact; pass --ssl-ca-certfile, --ssl-certfile and --ssl-keyfile instead of --insecure",
            ));
        }
        let isolation = parse_isolation(&s.isolation)?;
        let store = store(&s.database, &s.state_dir, &env)?;
        Ok(SuperLinkConfig {
            security,
            fleet_security,
            fleet_api_address: listen_address("fleet-api-address", &s.fleet_api_address)?,
            control_api_address: listen_address("control-api-address", &s.control_api_address)?,
            serverappio_api_address: appio_listen_address(
                "serverappio-api-address",
                &s.serverappio_api_address,
                isolation,
                "127.0.0.1:9091",
            )?,
            isolation,
            fab_cache_dir: fab_cache_dir(&s.fab_cache_dir, &env),
            user_auth: user_auth_accounts(&s.user_auth_config)?,
            node_auth,
            store,
            metrics_address: metrics_address(&s.metrics_address)?,
        })
    }
}

/// Reads and checks `--user-auth-config` now, so a typo in the accounts file stops the
/// SuperLink at startup instead of refusing every login later.
fn user_auth_accounts(path: &str) -> Result<Option<Accounts>, UserError> {
    if path.is_empty() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| UserError::new(format!("--user-auth-config {path}: cannot read it: {e}")))?;
    Accounts::parse(&text)
        .map(Some)
        .map_err(|e| UserError::new(format!("--user-auth-config {path}: {e}")))
}

/// Opens the store of `--database`, creating the state directory of the default one.
fn open_state(store: &Store) -> anyhow::Result<Arc<dyn LinkState>> {
    let path = match store {
        Store::Memory => {
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
    Ok(Arc::new(state))
}

/// Runs the SuperLink until `shutdown` resolves, then shuts it down gracefully: unfinished
/// runs end finished:stopped, open calls drain, and the function returns.
pub async fn serve(
    config: SuperLinkConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(addr) = config.metrics_address {
        install_metrics(addr, Daemon::SuperLink)?;
    }
    let state = open_state(&config.store)?;
    state.set_node_auth(config.node_auth.is_some());
    let mut fleet_options = ServerOptions {
        security: config.fleet_security.clone(),
        quic: true,
        ..ServerOptions::default()
    };
    if let Some(auth) = &config.node_auth {
        state.set_node_auth(true);
        let now = floret_actors::state::unix_now();
        for key in &auth.allowed {
            state
                .allow_node_key(key.spki_der().clone(), now)
                .map_err(|e| anyhow::anyhow!("could not record the allowed SuperNode keys: {e}"))?;
        }
        let authority: Arc<dyn NodeAuthority> = state.clone();
        fleet_options.node_auth = Some(NodeAuth::new(authority));
        tracing::info!(
            allowed = auth.allowed.len(),
            "SuperNode authentication on: only allowed keys may connect"
        );
    }
    let appio = Arc::new(LinkAppIo::new(state.clone()));
    let serverappio =
        floret_transport::grpc::bind_serverappio(config.serverappio_api_address, appio.clone())
            .await
            .map_err(|e| {
                bind_error(
                    "serverappio-api-address",
                    config.serverappio_api_address,
                    &e,
                )
            })?;
    let fabs = LinkFabs {
        io: appio,
        launcher: AppLauncher::new(
            config.isolation,
            FabCache::new(&config.fab_cache_dir),
            connect_address(serverappio.local_addr()),
        ),
    };
    let service = match SuperLinkService::start_with_fabs(
        state,
        Arc::new(BuiltinCatalog),
        HeartbeatPolicy::default(),
        Some(fabs),
    )
    .await
    {
        Ok(service) => service,
        Err(e) => {
            serverappio.shutdown().await;
            return Err(e.into());
        }
    };
    let served = |security: &ServerSecurity| ServerOptions {
        security: security.clone(),
        quic: true,
        ..ServerOptions::default()
    };
    let fleet = match floret_transport::grpc::bind_fleet_with(
        config.fleet_api_address,
        service.fleet(),
        fleet_options,
    )
    .await
    {
        Ok(server) => server,
        Err(e) => {
            service.shutdown().await;
            serverappio.shutdown().await;
            return Err(bind_error(
                "fleet-api-address",
                config.fleet_api_address,
                &e,
            ));
        }
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
                Arc::new(AccountsAuthority::new(accounts, TokenLifetimes::default())),
                served(&config.security),
            )
            .await
        }
        None => {
            floret_transport::grpc::bind_control_with(
                config.control_api_address,
                service.control(),
                served(&config.security),
            )
            .await
        }
    };
    let control = match bound {
        Ok(server) => server,
        Err(e) => {
            fleet.shutdown().await;
            service.shutdown().await;
            serverappio.shutdown().await;
            return Err(bind_error(
                "control-api-address",
                config.control_api_address,
                &e,
            ));
        }
    };
    tracing::info!(
        "apps of FABs run with --isolation {}, binaries cached in {}",
        config.isolation,
        config.fab_cache_dir.display()
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
    shutdown.await;
    tracing::info!("shutting down: stopping unfinished runs");
    service.shutdown().await;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        tokio::join!(fleet.shutdown(), control.shutdown(), serverappio.shutdown())
    })
    .await;
    if drained.is_err() {
        tracing::warn!("open calls did not end within {DRAIN_TIMEOUT:?}; leaving them");
    }
    tracing::info!("SuperLink stopped");
    Ok(())
}

impl crate::daemon::Observed for SuperLinkArgs {
    fn telemetry(&self) -> &crate::telemetry::TelemetryArgs {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn config(args: &[&str], env: &[(&str, &str)]) -> Result<SuperLinkConfig, UserError> {
        let args = SuperLinkArgs::try_parse_from(
            std::iter::once("flower-superlink").chain(args.iter().copied()),
        )
        .unwrap();
        // A HOME, as every login has, unless the test sets its own.
        let home = [("HOME", "/home/user")];
        let env = if env.iter().any(|(k, _)| *k == "HOME") {
            env
        } else {
            &home.iter().chain(env).copied().collect::<Vec<_>>().leak()[..]
        };
        SuperLinkConfig::from_args(
            &args,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn defaults_are_flowers_ports() {
        let c = config(&["--insecure"], &[]).unwrap();
        assert_eq!(c.fleet_api_address, "0.0.0.0:9092".parse().unwrap());
        assert_eq!(c.control_api_address, "0.0.0.0:9093".parse().unwrap());
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given_by_flag_or_environment() {
        assert_eq!(config(&["--insecure"], &[]).unwrap().metrics_address, None);
        let env = [("FLWR_METRICS_ADDRESS", "127.0.0.1:9464")];
        let c = config(&["--insecure"], &env).unwrap();
        assert_eq!(c.metrics_address, Some("127.0.0.1:9464".parse().unwrap()));
        let c = config(&["--insecure", "--metrics-address", "0.0.0.0:9465"], &env).unwrap();
        assert_eq!(c.metrics_address, Some("0.0.0.0:9465".parse().unwrap()));
        let e = config(&["--insecure", "--metrics-address", "9464"], &[]).unwrap_err();
        assert!(e.to_string().contains("--metrics-address"), "{e}");
    }

    #[test]
    fn without_certificates_or_insecure_it_refuses_to_start() {
        let e = config(&[], &[]).unwrap_err().to_string();
        assert!(
            e.contains("--ssl-certfile") && e.contains("--insecure") && e.contains("flwr keygen"),
            "{e}"
        );
        assert!(config(&[], &[("FLWR_INSECURE", "true")]).is_ok());
        let e = config(&["--insecure", "--ssl-certfile", "x.pem"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("both given"), "{e}");
        let e = config(&["--ssl-certfile", "x.pem"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("without --ssl-keyfile"), "{e}");
        let e = config(
            &["--ssl-certfile", "/nonexistent.pem", "--ssl-keyfile", "/k"],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/nonexistent.pem") && e.contains("cannot read"),
            "{e}"
        );
        let e = config(&["--insecure", "--ssl-client-ca-certfile", "ca.crt"], &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs TLS"), "{e}");
    }

    #[test]
    fn exec_api_address_is_an_alias_and_flags_beat_the_environment() {
        let c = config(
            &["--insecure", "--exec-api-address", "127.0.0.1:1"],
            &[
                ("FLWR_CONTROL_API_ADDRESS", "127.0.0.1:2"),
                ("FLWR_FLEET_API_ADDRESS", "127.0.0.1:3"),
            ],
        )
        .unwrap();
        assert_eq!(c.control_api_address, "127.0.0.1:1".parse().unwrap());
        assert_eq!(c.fleet_api_address, "127.0.0.1:3".parse().unwrap());
    }

    #[test]
    fn state_lives_in_a_database_under_the_state_dir_unless_told_otherwise() {
        let store = |args: &[&str], env: &[(&str, &str)]| config(args, env).unwrap().store;
        let file = |p: &str| Store::File(PathBuf::from(p));
        assert_eq!(
            store(&["--insecure"], &[]),
            file("/home/user/.flwr/superlink/state.db")
        );
        assert_eq!(
            store(&["--insecure"], &[("FLWR_HOME", "/srv/flwr")]),
            file("/srv/flwr/superlink/state.db")
        );
        assert_eq!(
            store(&["--insecure", "--state-dir", "/var/lib/floret"], &[]),
            file("/var/lib/floret/state.db")
        );
        assert_eq!(
            store(
                &["--insecure", "--database", "runs.db", "--state-dir", "/x"],
                &[]
            ),
            file("runs.db")
        );
        assert_eq!(
            store(&["--insecure", "--database", ":memory:"], &[]),
            Store::Memory
        );
        assert_eq!(
            store(&["--insecure", "--database", ":flwr-in-memory-state:"], &[]),
            Store::Memory
        );
        let e = config(&["--insecure"], &[("HOME", "")]).unwrap_err();
        assert!(e.to_string().contains("--state-dir"), "{e}");
    }

    #[test]
    fn serverappio_defaults_to_9091_with_process_isolation() {
        let c = config(&["--insecure"], &[]).unwrap();
        assert_eq!(c.isolation, Isolation::Subprocess);
        assert_eq!(c.serverappio_api_address, "127.0.0.1:0".parse().unwrap());
        let c = config(&["--insecure", "--isolation", "process"], &[]).unwrap();
        assert_eq!(c.isolation, Isolation::Process);
        assert_eq!(c.serverappio_api_address, "127.0.0.1:9091".parse().unwrap());
        let c = config(
            &["--insecure", "--fab-cache-dir", "/tmp/fabs"],
            &[("FLWR_SERVERAPPIO_API_ADDRESS", "0.0.0.0:7")],
        )
        .unwrap();
        assert_eq!(c.serverappio_api_address, "0.0.0.0:7".parse().unwrap());
        assert_eq!(c.fab_cache_dir, PathBuf::from("/tmp/fabs"));
        let e = config(&["--insecure", "--serverappio-api-address", "9091"], &[]).unwrap_err();
        assert!(e.to_string().contains("--serverappio-api-address"), "{e}");
    }

    #[test]
    fn a_bad_accounts_file_is_one_line_naming_it() {
        let missing = config(
            &[
                "--insecure",
                "--user-auth-config",
                "/nonexistent/users.toml",
            ],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            missing.starts_with("--user-auth-config /nonexistent/users.toml: cannot read it"),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            "[[users]]\nname = \"alice\"\npassword-hash = \"hunter2\"\n",
        )
        .unwrap();
        let path = path.to_str().unwrap();
        let e = config(&["--insecure", "--user-auth-config", path], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(path) && e.contains("user \"alice\" (line 2)"),
            "{e}"
        );
        assert!(e.contains("flwr hash-password") && !e.contains('\n'), "{e}");
        assert_eq!(config(&["--insecure"], &[]).unwrap().user_auth, None);
    }

    #[test]
    fn node_auth_files_are_checked_at_startup() {
        use floret_transport::auth::NodeKeyPair;
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();
        let a = NodeKeyPair::generate().unwrap();
        let b = NodeKeyPair::generate().unwrap();
        let server = NodeKeyPair::generate().unwrap();
        std::fs::write(
            path("ok.csv"),
            format!(
                "{},{}\n",
                a.public_key().to_openssh("a"),
                b.public_key().to_openssh("b")
            ),
        )
        .unwrap();
        std::fs::write(
            path("bad.csv"),
            format!("{}\nnot a key\n", a.public_key().to_openssh("a")),
        )
        .unwrap();
        std::fs::write(path("server"), server.to_openssh_private("s")).unwrap();
        std::fs::write(path("server.pub"), server.public_key().to_openssh("s")).unwrap();
        std::fs::write(path("other.pub"), a.public_key().to_openssh("a")).unwrap();

        let c = config(&["--insecure"], &[]).unwrap();
        assert!(c.node_auth.is_none());
        // Node authentication needs TLS.
        let e = config(
            &["--insecure", "--auth-list-public-keys", &path("ok.csv")],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("needs TLS"), "{e}");
        let keygen = crate::keygen_cmd::KeygenArgs {
            clients: 1,
            out: dir.path().to_path_buf(),
            san: Vec::new(),
            days: 1,
            force: false,
        };
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::keygen_cmd::execute(keygen))
            .unwrap();
        let (ca, cert, key) = (
            path("certificates/ca.crt"),
            path("certificates/server.pem"),
            path("certificates/server.key"),
        );
        let tls = [
            "--ssl-ca-certfile",
            ca.as_str(),
            "--ssl-certfile",
            cert.as_str(),
            "--ssl-keyfile",
            key.as_str(),
        ];
        let c = config(
            &[
                tls[0],
                tls[1],
                tls[2],
                tls[3],
                tls[4],
                tls[5],
                "--auth-list-public-keys",
                &path("ok.csv"),
                "--auth-superlink-private-key",
                &path("server"),
                "--auth-superlink-public-key",
                &path("server.pub"),
            ],
            &[],
        )
        .unwrap();
        let auth = c.node_auth.unwrap();
        assert_eq!(auth.allowed.len(), 2);
        assert_eq!(
            auth.superlink_key.unwrap().public_key(),
            server.public_key()
        );

        let e = config(
            &["--insecure", "--auth-list-public-keys", &path("bad.csv")],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad.csv: line 2:"), "{e}");
        let e = config(
            &["--insecure", "--auth-list-public-keys", &path("nope.csv")],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("nope.csv"), "{e}");
        let e = config(
            &[
                "--insecure",
                "--auth-list-public-keys",
                &path("ok.csv"),
                "--auth-superlink-private-key",
                &path("server"),
                "--auth-superlink-public-key",
                &path("other.pub"),
            ],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
    }
}
