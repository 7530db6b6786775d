//! The SuperNode's flags, as the command line gives them; `config` layers and checks them.

use crate::daemon::flags::{FabFlags, LimitFlags, MetricsFlags, is_false};
use serde::Serialize;
use std::path::PathBuf;

/// Flags, with Flower's names (plus `--heartbeat-interval`). Each may also be set in the
/// `--config` file (same name) or as `FLWR_<NAME>` (upper case, `_` for `-`). The numeric
/// flags take negative numbers, so that `--heartbeat-interval -1` gets the validation's
/// error naming the flag rather than clap's "unexpected argument".
#[derive(Debug, clap::Parser, Serialize)]
#[command(
    name = "flower-supernode",
    version,
    about = "The Floret SuperNode: connects to a SuperLink and runs ClientApps",
    mut_arg("isolation", |a| a.help(
        "How the ClientApps of FABs run: `subprocess` starts one process per run; with \
         `process` the SuperNode starts nothing and waits for \
         `<app> clientapp --clientappio-api-address ...` to claim the run. Built-in apps run \
         inside the SuperNode either way [default: subprocess]"
    )),
    mut_arg("fab_cache_dir", |a| a.help(
        "Where FABs and their app binaries are kept, by hash [default: \
         $XDG_CACHE_HOME/floret/fabs or ~/.cache/floret/fabs]"
    ))
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
    /// `--isolation` and `--fab-cache-dir`.
    #[command(flatten)]
    #[serde(flatten)]
    pub fabs: FabFlags,
    /// Give up after this many failed attempts to reach the SuperLink in a row
    /// [default: never].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// Give up when the SuperLink has been unreachable for this many seconds
    /// [default: never].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_wait_time: Option<f64>,
    /// Seconds between heartbeats; the SuperLink declares the node offline after two
    /// missed ones [default: 30].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
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
    /// Connection, stream and request-size limits of the ClientAppIo API.
    #[command(flatten)]
    #[serde(flatten)]
    pub server_limits: LimitFlags,
    /// `--metrics-address`.
    #[command(flatten)]
    #[serde(flatten)]
    pub metrics: MetricsFlags,
    /// A TOML file of settings, keyed by these flags' names (`insecure = true`,
    /// `node-config = "partition-id=0 num-partitions=2"`); FLWR_* variables override it,
    /// flags override both.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

impl crate::daemon::Observed for SuperNodeArgs {
    fn telemetry(&self) -> &crate::telemetry::TelemetryArgs {
        &self.telemetry
    }
}
