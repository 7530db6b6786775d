//! `flower-supernode`: the client side of a deployment. Connects to a SuperLink's Fleet
//! API, keeps the connection alive with heartbeats (reconnecting with backoff when the
//! SuperLink is away), runs the built-in ClientApps in-process for every run, and the
//! ClientApps of FABs as processes of their own (`--isolation`), which reach it through
//! its ClientAppIo API.
//!
//! ```text
//! flower-supernode
//!  ├─ SuperNode (actors) ── Fleet client ──> SuperLink
//!  │   └─ ClientApp processes of FAB runs (subprocess)
//!  ├─ ClientAppIo gRPC server <── ClientApp processes
//!  └─ signal listener: SIGINT/SIGTERM -> deactivate, kill app processes, drain
//! ```

use super::metrics::{Daemon, install as install_metrics, metrics_address};
use super::settings::layered;
use super::{
    appio_listen_address, auth_key_pair, bind_error, client_security, connect_address,
    fab_cache_dir, parse_isolation,
};
use crate::UserError;
use crate::registry::BuiltinCatalog;
use crate::remote::has_port;
use floret_actors::{
    AppLauncher, FabCache, Isolation, NodeAppIo, NodeFabs, SuperNode, SuperNodeError,
};
use floret_core::run_config::parse_node_config;
use floret_transport::auth::NodeKeyPair;
use floret_transport::grpc::ClientOptions;
use floret_transport::{ClientSecurity, TransportKind};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long the ClientAppIo server may take to drain open calls at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags, with Flower's names (plus `--heartbeat-interval`). Each may also be set in the
/// `--config` file (same name) or as `FLWR_<NAME>` (upper case, `_` for `-`).
#[derive(Debug, clap::Parser, Serialize)]
#[command(
    name = "flower-supernode",
    version,
    about = "The Floret SuperNode: connects to a SuperLink and runs ClientApps"
)]
#[serde(rename_all = "kebab-case")]
pub struct SuperNodeArgs {
    /// Logging and tracing (command line and OTEL_* / RUST_LOG only, not --config).
    #[command(flatten)]
    #[serde(skip)]
    pub telemetry: crate::telemetry::TelemetryArgs,
    /// Connect without TLS (plaintext gRPC; over QUIC, accept any certificate). For
    /// testing only.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub insecure: bool,
    /// How to reach the SuperLink: `grpc` (HTTP/2 over TCP) or `quic` (QUIC over UDP, the
    /// same port number) [default: grpc].
    #[arg(long, value_name = "grpc|quic")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// The SuperLink's Fleet API [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub superlink: Option<String>,
    /// The CA certificate that signed the SuperLink's certificate (PEM, e.g.
    /// certificates/ca.crt): connect with TLS and trust only it.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_certificates: Option<String>,
    /// Mutual TLS: this node's client certificate (PEM), for a SuperLink started with
    /// --ssl-client-ca-certfile.
    #[arg(long, value_name = "FILE", requires = "ssl_client_keyfile")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_client_certfile: Option<String>,
    /// The private key of --ssl-client-certfile (PEM).
    #[arg(long, value_name = "FILE", requires = "ssl_client_certfile")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssl_client_keyfile: Option<String>,
    /// This node's config, as `key=value` pairs of TOML values:
    /// 'partition-id=0 num-partitions=2'.
    #[arg(long, value_name = "'K=V ...'")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_config: Option<String>,
    /// Where process-isolated ClientApps connect (ClientAppIo API) [default: 127.0.0.1:9094
    /// with --isolation process; any free port on 127.0.0.1 with subprocess, so that
    /// several SuperNodes run side by side].
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clientappio_api_address: Option<String>,
    /// How the ClientApps of FABs run: `subprocess` starts one process per run; with
    /// `process` the SuperNode starts nothing and waits for
    /// `<app> clientapp --clientappio-api-address ...` to claim the run. Built-in apps run
    /// inside the SuperNode either way [default: subprocess].
    #[arg(long, value_name = "MODE", value_parser = ["subprocess", "process"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Where FABs and their app binaries are kept, by hash [default:
    /// $XDG_CACHE_HOME/floret/fabs or ~/.cache/floret/fabs].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fab_cache_dir: Option<String>,
    /// Give up after this many failed attempts to reach the SuperLink in a row
    /// [default: never].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Give up when the SuperLink has been unreachable for this many seconds
    /// [default: never].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wait_time: Option<f64>,
    /// Seconds between heartbeats; the SuperLink declares the node offline after two
    /// missed ones [default: 30].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval: Option<f64>,
    /// This node's private key for SuperNode authentication (e.g.
    /// keys/client_credentials_1): every request to the SuperLink is signed with it. PEM
    /// (PKCS#8, SEC1) or OpenSSH, unencrypted, ECDSA P-384.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_supernode_private_key: Option<String>,
    /// The matching public key (e.g. keys/client_credentials_1.pub). Optional: it is
    /// derived from the private key; when given, it must match.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_supernode_public_key: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464)
    /// [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
    /// A TOML file of settings, keyed by these flags' names (`insecure = true`,
    /// `node-config = "partition-id=0 num-partitions=2"`); FLWR_* variables override it,
    /// flags override both.
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
    transport: String,
    superlink: String,
    root_certificates: Option<String>,
    ssl_client_certfile: Option<String>,
    ssl_client_keyfile: Option<String>,
    node_config: String,
    /// Empty: chosen by `isolation` (see `appio_listen_address`).
    clientappio_api_address: String,
    isolation: String,
    /// Empty: the default cache (see `fab_cache_dir`).
    fab_cache_dir: String,
    max_retries: Option<u32>,
    max_wait_time: Option<f64>,
    heartbeat_interval: f64,
    /// Empty: requests are not signed.
    auth_supernode_private_key: String,
    auth_supernode_public_key: String,
    /// Empty: no metrics endpoint.
    metrics_address: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            insecure: false,
            transport: "grpc".into(),
            superlink: "127.0.0.1:9092".into(),
            root_certificates: None,
            ssl_client_certfile: None,
            ssl_client_keyfile: None,
            node_config: String::new(),
            clientappio_api_address: String::new(),
            isolation: "subprocess".into(),
            fab_cache_dir: String::new(),
            max_retries: None,
            max_wait_time: None,
            heartbeat_interval: 30.0,
            auth_supernode_private_key: String::new(),
            auth_supernode_public_key: String::new(),
            metrics_address: String::new(),
        }
    }
}

/// What the SuperNode runs with, validated.
#[derive(Debug, Clone)]
pub struct SuperNodeConfig {
    /// The SuperLink's Fleet API, `HOST:PORT` (resolved when connecting, so a SuperLink
    /// that is not up yet is fine).
    pub superlink: String,
    /// gRPC or QUIC.
    pub transport: TransportKind,
    /// TLS (with the roots to trust) or `--insecure`.
    pub security: ClientSecurity,
    /// What the node actor runs with: node config, heartbeats, retry limits.
    pub node: floret_actors::SuperNodeConfig,
    /// ClientAppIo API listen address; port 0 picks a free port.
    pub clientappio_api_address: SocketAddr,
    /// How the ClientApps of FABs run.
    pub isolation: Isolation,
    /// Where FABs and their binaries are written.
    pub fab_cache_dir: PathBuf,
    /// The key every Fleet request is signed with (SuperNode authentication).
    pub node_key: Option<NodeKeyPair>,
    /// Where Prometheus scrapes `/metrics`; `None`: no endpoint.
    pub metrics_address: Option<SocketAddr>,
}

impl SuperNodeConfig {
    /// Merges defaults, the `--config` file, `env` (`FLWR_*`) and the flags, and checks the
    /// result.
    pub fn from_args(
        args: &SuperNodeArgs,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<SuperNodeConfig, UserError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let s: Settings = layered(
            &Settings::default(),
            args.config.as_deref(),
            env.clone(),
            args,
        )?;
        let transport: TransportKind = s
            .transport
            .parse()
            .map_err(|e| UserError::new(format!("--transport: {e}")))?;
        let client_cert = match (&s.ssl_client_certfile, &s.ssl_client_keyfile) {
            (Some(cert), Some(key)) => Some((cert.as_str(), key.as_str())),
            (None, None) => None,
            _ => {
                return Err(UserError::new(
                    "--ssl-client-certfile and --ssl-client-keyfile go together: pass both or neither",
                ));
            }
        };
        let security = client_security(s.insecure, s.root_certificates.as_deref(), client_cert)?;
        let node_key = node_key(&s)?;
        let isolation = parse_isolation(&s.isolation)?;
        if !has_port(&s.superlink) {
            return Err(UserError::new(format!(
                "--superlink `{}` is not HOST:PORT: write e.g. 127.0.0.1:9092 (the SuperLink's Fleet API)",
                s.superlink
            )));
        }
        let clientappio_api_address = appio_listen_address(
            "clientappio-api-address",
            &s.clientappio_api_address,
            isolation,
            "127.0.0.1:9094",
        )?;
        let node_config = parse_node_config(&s.node_config)
            .map_err(|e| UserError::new(format!("--node-config: {e}")))?;
        let heartbeat_interval = seconds("heartbeat-interval", s.heartbeat_interval, false)?;
        let max_wait_time = s
            .max_wait_time
            .map(|t| seconds("max-wait-time", t, true))
            .transpose()?;
        Ok(SuperNodeConfig {
            node: floret_actors::SuperNodeConfig {
                superlink: s.superlink.clone(),
                node_config,
                heartbeat_interval,
                max_retries: s.max_retries,
                max_wait_time,
                transport: match transport {
                    TransportKind::Grpc => "grpc",
                    TransportKind::Quic => "quic",
                },
                ..floret_actors::SuperNodeConfig::default()
            },
            superlink: s.superlink,
            transport,
            security,
            clientappio_api_address,
            isolation,
            fab_cache_dir: fab_cache_dir(&s.fab_cache_dir, &env),
            node_key,
            metrics_address: metrics_address(&s.metrics_address)?,
        })
    }
}

/// The SuperNode's key pair: the public key is derived from the private one; a public key
/// file, if given, must match it (a mismatch means the wrong pair of files was passed).
fn node_key(s: &Settings) -> Result<Option<NodeKeyPair>, UserError> {
    auth_key_pair(
        "supernode",
        &s.auth_supernode_private_key,
        &s.auth_supernode_public_key,
        "keys/client_credentials_1",
    )
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
    let fleet = floret_transport::grpc::fleet_client_with(&config.superlink, options)
        .map_err(|e| UserError::new(format!("--superlink {}: {e}", config.superlink)))?;
    let appio = Arc::new(NodeAppIo::new());
    let clientappio =
        floret_transport::grpc::bind_clientappio(config.clientappio_api_address, appio.clone())
            .await
            .map_err(|e| {
                bind_error(
                    "clientappio-api-address",
                    config.clientappio_api_address,
                    &e,
                )
            })?;
    tracing::info!(
        "apps of FABs run with --isolation {}, binaries cached in {}",
        config.isolation,
        config.fab_cache_dir.display()
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
        ),
    };
    let security = match &config.security {
        ClientSecurity::Insecure => "insecure".to_string(),
        ClientSecurity::Tls(tls) => format!("TLS, trusting {}", tls.roots_path().display()),
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

/// A number of seconds from a setting: finite, positive (or zero when `zero_ok`).
fn seconds(setting: &str, value: f64, zero_ok: bool) -> Result<Duration, UserError> {
    let ok = value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0));
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|_| ok)
        .ok_or_else(|| {
            UserError::new(format!(
                "--{setting} {value}: must be a positive number of seconds, e.g. --{setting} 30"
            ))
        })
}

impl crate::daemon::Observed for SuperNodeArgs {
    fn telemetry(&self) -> &crate::telemetry::TelemetryArgs {
        &self.telemetry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use floret_core::UserConfigValue;

    fn config(args: &[&str], env: &[(&str, &str)]) -> Result<SuperNodeConfig, UserError> {
        let args = SuperNodeArgs::try_parse_from(
            std::iter::once("flower-supernode").chain(args.iter().copied()),
        )
        .unwrap();
        SuperNodeConfig::from_args(
            &args,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        assert_eq!(config(&["--insecure"], &[]).unwrap().metrics_address, None);
        let c = config(&["--insecure", "--metrics-address", "127.0.0.1:9465"], &[]).unwrap();
        assert_eq!(c.metrics_address, Some("127.0.0.1:9465".parse().unwrap()));
        let env = [("FLWR_METRICS_ADDRESS", "nowhere")];
        let e = config(&["--insecure"], &env).unwrap_err();
        assert!(e.to_string().contains("--metrics-address"), "{e}");
    }

    #[test]
    fn the_azure_walkthrough_flags_work() {
        let c = config(
            &[
                "--insecure",
                "--clientappio-api-address=0.0.0.0:9094",
                "--superlink=10.0.0.4:9092",
                "--node-config",
                "partition-id=1 num-partitions=2",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.superlink, "10.0.0.4:9092");
        assert_eq!(c.node.node_config["partition-id"], UserConfigValue::Int(1));
        assert_eq!(c.node.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.node.max_retries, None);
    }

    #[test]
    fn clientappio_defaults_to_9094_with_process_isolation() {
        let c = config(&["--insecure"], &[]).unwrap();
        assert_eq!(c.isolation, Isolation::Subprocess);
        assert_eq!(c.clientappio_api_address, "127.0.0.1:0".parse().unwrap());
        let c = config(&["--insecure", "--isolation", "process"], &[]).unwrap();
        assert_eq!(c.clientappio_api_address, "127.0.0.1:9094".parse().unwrap());
        let c = config(
            &["--insecure", "--clientappio-api-address", "127.0.0.1:9095"],
            &[("FLWR_FAB_CACHE_DIR", "/tmp/fabs")],
        )
        .unwrap();
        assert_eq!(c.clientappio_api_address, "127.0.0.1:9095".parse().unwrap());
        assert_eq!(c.fab_cache_dir, PathBuf::from("/tmp/fabs"));
    }

    #[test]
    fn malformed_node_config_names_the_word() {
        let e = config(&["--insecure", "--node-config", "partition-id=0 oops"], &[]).unwrap_err();
        assert!(e.to_string().starts_with("--node-config: `oops`"), "{e}");
    }

    #[test]
    fn environment_sets_what_flags_do_not() {
        let c = config(
            &["--insecure", "--max-retries", "3"],
            &[
                ("FLWR_MAX_RETRIES", "9"),
                ("FLWR_HEARTBEAT_INTERVAL", "0.5"),
                ("FLWR_SUPERLINK", "h:1"),
            ],
        )
        .unwrap();
        assert_eq!(c.node.max_retries, Some(3));
        assert_eq!(c.node.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.superlink, "h:1");
    }

    #[test]
    fn bad_numbers_and_addresses_are_refused() {
        assert!(config(&["--insecure", "--heartbeat-interval", "0"], &[]).is_err());
        assert!(config(&["--insecure", "--max-wait-time=-1"], &[]).is_err());
        assert!(config(&["--insecure", "--superlink", "superlink"], &[]).is_err());
        let e = config(&["--insecure", "--root-certificates", "ca.crt"], &[]).unwrap_err();
        assert!(e.to_string().contains("both given"), "{e}");
        let e = config(&[], &[]).unwrap_err().to_string();
        assert!(
            e.contains("--root-certificates") && e.contains("--insecure"),
            "{e}"
        );
        let e = config(&["--root-certificates", "/nonexistent/ca.crt"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/ca.crt") && e.contains("cannot read"),
            "{e}"
        );
        let e = config(&["--insecure", "--transport", "udp"], &[]).unwrap_err();
        assert!(e.to_string().contains("\"grpc\" or \"quic\""), "{e}");
        let c = config(&["--insecure", "--transport", "quic"], &[]).unwrap();
        assert_eq!(c.transport, TransportKind::Quic);
    }
}
