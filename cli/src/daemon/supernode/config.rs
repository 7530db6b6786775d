//! The SuperNode's settings: defaults, the `--config` file, `FLWR_*` and the flags merged
//! (`crate::daemon::settings`), then checked into a [`SuperNodeConfig`] before anything
//! starts, so that a bad setting is one line and exit 2.

use super::args::SuperNodeArgs;
use crate::UserError;
use crate::daemon::flags::{LimitSettings, connection_limits};
use crate::daemon::metrics::metrics_address;
use crate::daemon::settings::layered;
use crate::daemon::{
    CLIENT_TLS_FLAGS, appio_listen_address, auth_key_pair, auth_needs_tls, client_security,
    fab_cache_dir, parse_isolation, python_path,
};
use crate::remote::has_port;
use floret_actors::Isolation;
use floret_core::run_config::parse_node_config;
use floret_transport::auth::NodeKeyPair;
use floret_transport::limits::ServerLimits;
use floret_transport::{ClientSecurity, TransportKind};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Empty: `FLORET_PYTHON` or `python3` (see `python_path`).
    python: String,
    max_retries: Option<u32>,
    max_wait_time: Option<f64>,
    heartbeat_interval: f64,
    /// Empty: requests are not signed.
    auth_supernode_private_key: String,
    auth_supernode_public_key: String,
    /// Empty: no metrics endpoint.
    metrics_address: String,
    // What app processes may hold of the ClientAppIo server (`LimitFlags`).
    max_connections: usize,
    max_connections_per_ip: usize,
    max_concurrent_streams: u32,
    handshake_timeout: u64,
    connection_idle_timeout: u64,
    max_request_size: usize,
    max_inflight_request_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let limits = LimitSettings::default();
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
            python: String::new(),
            max_retries: None,
            max_wait_time: None,
            heartbeat_interval: 30.0,
            auth_supernode_private_key: String::new(),
            auth_supernode_public_key: String::new(),
            metrics_address: String::new(),
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            max_concurrent_streams: limits.max_concurrent_streams,
            handshake_timeout: limits.handshake_timeout,
            connection_idle_timeout: limits.connection_idle_timeout,
            max_request_size: limits.max_request_size,
            max_inflight_request_bytes: limits.max_inflight_request_bytes,
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
    /// The Python that runs Flower apps in Python (`--python`).
    pub python: PathBuf,
    /// The key every Fleet request is signed with (SuperNode authentication).
    pub node_key: Option<NodeKeyPair>,
    /// Where Prometheus scrapes `/metrics`; `None`: no endpoint.
    pub metrics_address: Option<SocketAddr>,
    /// What app processes may hold of the ClientAppIo server.
    pub server_limits: ServerLimits,
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
        if node_key.is_some() {
            auth_needs_tls(
                s.insecure,
                "--auth-supernode-private-key",
                "node signatures do not cover request bodies and TLS keeps them intact",
                CLIENT_TLS_FLAGS,
            )?;
        }
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
            python: python_path(&s.python, &env),
            node_key,
            metrics_address: metrics_address(&s.metrics_address)?,
            server_limits: connection_limits!(s).limits()?,
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

    /// The Python of Flower FABs: `--python`, else `FLWR_PYTHON` (the layered settings),
    /// else `FLORET_PYTHON` (as `flwr run`), else `python3` on PATH.
    #[test]
    fn the_python_comes_from_the_flag_the_environment_or_path() {
        let python = |args: &[&str], env: &[(&str, &str)]| {
            let mut all = vec!["--insecure"];
            all.extend_from_slice(args);
            config(&all, env).unwrap().python
        };
        assert_eq!(python(&[], &[]), PathBuf::from("python3"));
        assert_eq!(
            python(&[], &[("FLORET_PYTHON", "/venv/bin/python")]),
            PathBuf::from("/venv/bin/python")
        );
        let both = [("FLORET_PYTHON", "/a/python"), ("FLWR_PYTHON", "/b/python")];
        assert_eq!(python(&[], &both), PathBuf::from("/b/python"));
        assert_eq!(
            python(&["--python", "/c/python"], &both),
            PathBuf::from("/c/python")
        );
    }

    /// A negative number reaches the check that names the flag, rather than clap taking
    /// `-1` for an unknown flag.
    #[test]
    fn a_negative_number_of_seconds_is_refused_naming_the_flag() {
        for flag in ["--heartbeat-interval", "--max-wait-time"] {
            let e = config(&["--insecure", flag, "-1"], &[])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{flag} -1: must be a positive number")),
                "{e}"
            );
        }
        let e = SuperNodeArgs::try_parse_from(["flower-supernode", "--max-retries", "-1"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid value '-1' for '--max-retries"), "{e}");
    }

    /// A signing key over --insecure is refused at start with one line naming both flags,
    /// by the same rule as the SuperLink's node and user authentication.
    #[test]
    fn an_auth_key_needs_tls() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("client_credentials_1");
        let pair = floret_transport::auth::NodeKeyPair::generate().unwrap();
        std::fs::write(&key, pair.to_openssh_private("n")).unwrap();
        let key = key.to_str().unwrap();
        let e = config(&["--insecure", "--auth-supernode-private-key", key], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--auth-supernode-private-key needs TLS, but --insecure was given")
                && e.contains("--root-certificates"),
            "{e}"
        );
        assert!(config(&["--insecure"], &[]).unwrap().node_key.is_none());
    }

    #[test]
    fn bad_numbers_and_addresses_are_refused() {
        assert!(config(&["--insecure", "--heartbeat-interval", "0"], &[]).is_err());
        assert!(config(&["--insecure", "--max-wait-time=-1"], &[]).is_err());
        assert!(config(&["--insecure", "--superlink", "superlink"], &[]).is_err());
        let e = config(&["--insecure", "--root-certificates", "ca.crt"], &[]).unwrap_err();
        assert!(e.to_string().contains("both given"), "{e}");
        // Neither flag: TLS trusting the platform's CA certificates, or, on a machine
        // without any, an error that says how to give one.
        match config(&[], &[]) {
            Ok(c) => assert!(matches!(c.security, ClientSecurity::Tls(_))),
            Err(e) => assert!(
                e.to_string().contains("SSL_CERT_FILE") && e.to_string().contains("--insecure"),
                "{e}"
            ),
        }
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
