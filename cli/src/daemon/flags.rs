//! The flags both daemons take, declared once and flattened into `SuperLinkArgs` and
//! `SuperNodeArgs` where each daemon lists them, so `--help` keeps its order.
//!
//! The names, the `--config` keys and the `FLWR_*` variables come from the field names,
//! as for every other flag (see `settings`). A daemon that words a flag's help for its
//! own apps overrides it with `mut_arg` (both do for `--isolation`, which names their
//! app and its AppIo flag); the doc comments here are the help otherwise.

use floret_transport::limits::ServerLimits;
use serde::Serialize;
use std::time::Duration;

/// How the apps of FABs run and where their binaries are kept.
#[derive(Debug, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FabFlags {
    /// How the apps of FABs run: `subprocess` starts each as a process of the daemon;
    /// with `process` the daemon starts nothing and waits for the app to claim the run.
    /// Built-in apps run inside the daemon either way [default: subprocess].
    #[arg(long, value_name = "MODE", value_parser = ["subprocess", "process"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Where app binaries from FABs are kept, by hash [default: $XDG_CACHE_HOME/floret/fabs
    /// or ~/.cache/floret/fabs].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fab_cache_dir: Option<String>,
    /// The Python that runs Flower apps in Python (Flower-format FABs): it needs `flwr` and
    /// the apps' own dependencies [default: FLORET_PYTHON, else python3 on PATH].
    #[arg(long, value_name = "PATH")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<String>,
}

/// Where Prometheus scrapes the daemon.
#[derive(Debug, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MetricsFlags {
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9464)
    /// [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_address: Option<String>,
}

/// For `skip_serializing_if`: a switch that was not given is no setting, so the `--config`
/// file or `FLWR_*` may still turn it on.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// What peers may hold of the daemon's servers: connections, calls and request sizes (see
/// the README's "Limits"). Defaults come from
/// `floret_transport::limits::ServerLimits`, sized for 10,000 SuperNodes.
#[derive(Debug, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LimitFlags {
    /// Connections each API accepts at once, from all peers; beyond it a new one is closed
    /// at once [default: 32768].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Connections each API accepts at once from one IP address [default: 16384].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_ip: Option<usize>,
    /// Calls open at once on one connection (HTTP/2 and QUIC streams) [default: 256].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
    /// Seconds a new connection may send nothing at all (not even a TLS hello) before it is
    /// closed [default: 10].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<u64>,
    /// Seconds a connection may stay open without a call in progress before it is closed;
    /// SuperNodes keep a stream open and are never idle [default: 300].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_idle_timeout: Option<u64>,
    /// The largest request, in bytes, of a call that carries messages or chunks (Fleet
    /// PushMessages and PushObject, the AppIo APIs) [default: 67108864, 64 MiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_size: Option<usize>,
    /// Bytes of large requests (over 1 MiB) each API receives at once; a request that would
    /// pass it waits, unread, for others to finish [default: 1073741824, 1 GiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_inflight_request_bytes: Option<usize>,
}

/// The SuperLink's limits on what peers send it beyond [`LimitFlags`]: FABs and uploads.
#[derive(Debug, clap::Args, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct UploadLimitFlags {
    /// The largest FAB, in bytes, a StartRun may carry [default and most: 536870912,
    /// 512 MiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_fab_size: Option<usize>,
    /// Bytes of uploaded chunks one SuperNode may have waiting for its PushMessages
    /// [default: 1073741824, 1 GiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes_per_node: Option<usize>,
    /// Bytes of uploaded chunks the SuperNodes of one run together may have waiting, so
    /// that one heavy run cannot fill the SuperLink for the others
    /// [default: 4294967296, 4 GiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes_per_run: Option<usize>,
    /// Bytes of uploaded chunks all SuperNodes together may have waiting
    /// [default: 8589934592, 8 GiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_upload_bytes: Option<usize>,
}

/// The [`LimitSettings`] of a daemon's layered settings `$s`, which hold the fields of
/// [`LimitFlags`] under the same names: the one place that maps those flags, for both
/// daemons. A macro, not a function, because each daemon's `Settings` is its own struct
/// with these fields inline (serde's `flatten` would lose `deny_unknown_fields` and the
/// numbers `FLWR_*` variables give as strings). What `$s` lacks (the SuperNode takes no
/// upload limits) stays at its default; the SuperLink sets those by struct update.
macro_rules! connection_limits {
    ($s:expr) => {
        $crate::daemon::flags::LimitSettings {
            max_connections: $s.max_connections,
            max_connections_per_ip: $s.max_connections_per_ip,
            max_concurrent_streams: $s.max_concurrent_streams,
            handshake_timeout: $s.handshake_timeout,
            connection_idle_timeout: $s.connection_idle_timeout,
            max_request_size: $s.max_request_size,
            max_inflight_request_bytes: $s.max_inflight_request_bytes,
            ..$crate::daemon::flags::LimitSettings::default()
        }
    };
}
pub(crate) use connection_limits;

/// The settings of [`LimitFlags`] after layering, as the `--config` file spells them.
#[derive(Debug, serde::Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct LimitSettings {
    /// `--max-connections`.
    pub max_connections: usize,
    /// `--max-connections-per-ip`.
    pub max_connections_per_ip: usize,
    /// `--max-concurrent-streams`.
    pub max_concurrent_streams: u32,
    /// `--handshake-timeout`.
    pub handshake_timeout: u64,
    /// `--connection-idle-timeout`.
    pub connection_idle_timeout: u64,
    /// `--max-request-size`.
    pub max_request_size: usize,
    /// `--max-fab-size`.
    pub max_fab_size: usize,
    /// `--max-upload-bytes-per-node`.
    pub max_upload_bytes_per_node: usize,
    /// `--max-upload-bytes-per-run`.
    pub max_upload_bytes_per_run: usize,
    /// `--max-upload-bytes`.
    pub max_upload_bytes: usize,
    /// `--max-inflight-request-bytes`.
    pub max_inflight_request_bytes: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        let d = ServerLimits::default();
        LimitSettings {
            max_connections: d.max_connections,
            max_connections_per_ip: d.max_connections_per_ip,
            max_concurrent_streams: d.max_concurrent_streams,
            handshake_timeout: d.handshake_timeout.as_secs(),
            connection_idle_timeout: d.idle_timeout.as_secs(),
            max_request_size: d.max_request_bytes,
            max_fab_size: d.max_fab_bytes,
            max_upload_bytes_per_node: d.max_upload_bytes_per_node,
            max_upload_bytes_per_run: d.max_upload_bytes_per_run,
            max_upload_bytes: d.max_upload_bytes,
            max_inflight_request_bytes: d.max_inflight_request_bytes,
        }
    }
}

impl LimitSettings {
    /// The checked limits: every one at least 1, the FAB size at most what a SuperNode
    /// accepts.
    pub fn limits(&self) -> Result<ServerLimits, crate::UserError> {
        let positive = |flag: &str, n: u64| {
            if n == 0 {
                Err(crate::UserError::new(format!(
                    "--{flag} 0: give a number above 0"
                )))
            } else {
                Ok(())
            }
        };
        positive("max-connections", self.max_connections as u64)?;
        positive("max-connections-per-ip", self.max_connections_per_ip as u64)?;
        positive(
            "max-concurrent-streams",
            u64::from(self.max_concurrent_streams),
        )?;
        positive("handshake-timeout", self.handshake_timeout)?;
        positive("connection-idle-timeout", self.connection_idle_timeout)?;
        positive("max-request-size", self.max_request_size as u64)?;
        positive("max-fab-size", self.max_fab_size as u64)?;
        positive(
            "max-upload-bytes-per-node",
            self.max_upload_bytes_per_node as u64,
        )?;
        positive(
            "max-upload-bytes-per-run",
            self.max_upload_bytes_per_run as u64,
        )?;
        positive("max-upload-bytes", self.max_upload_bytes as u64)?;
        positive(
            "max-inflight-request-bytes",
            self.max_inflight_request_bytes as u64,
        )?;
        let most = floret_transport::grpc::MAX_FAB_LEN;
        if self.max_fab_size > most {
            return Err(crate::UserError::new(format!(
                "--max-fab-size {}: at most {most} bytes, the largest FAB a SuperNode accepts",
                self.max_fab_size
            )));
        }
        Ok(ServerLimits {
            max_connections: self.max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_concurrent_streams: self.max_concurrent_streams,
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
            idle_timeout: Duration::from_secs(self.connection_idle_timeout),
            max_request_bytes: self.max_request_size,
            max_fab_bytes: self.max_fab_size,
            max_upload_bytes_per_node: self.max_upload_bytes_per_node,
            max_upload_bytes_per_run: self.max_upload_bytes_per_run,
            max_upload_bytes: self.max_upload_bytes,
            max_inflight_request_bytes: self.max_inflight_request_bytes,
        })
    }
}
