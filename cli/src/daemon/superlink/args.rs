//! The SuperLink's flags, as the command line gives them; `config` layers and checks them.

use crate::daemon::flags::{FabFlags, LimitFlags, MetricsFlags, UploadLimitFlags, is_false};
use serde::Serialize;
use std::path::PathBuf;

/// Flags, with Flower's names. Each may also be set in the `--config` file (same name,
/// without the dashes in front) or as `FLWR_<NAME>` (upper case, `_` for `-`).
#[derive(Debug, clap::Parser, Serialize)]
#[command(
    name = "flower-superlink",
    version,
    about = "The Floret SuperLink: coordinates SuperNodes and runs ServerApps",
    mut_arg("isolation", |a| a.help(
        "How the ServerApps of FABs run: `subprocess` starts each as a process of the \
         SuperLink; with `process` the SuperLink starts nothing and waits for \
         `<app> serverapp --serverappio-api-address ...` to claim the run. Built-in apps run \
         inside the SuperLink either way [default: subprocess]"
    ))
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
    /// Where `flwr` connects (Control API). Without --user-auth-config, whoever reaches it
    /// can register SuperNode keys and submit apps the SuperLink runs, so a TLS SuperLink
    /// then listens on loopback only unless this is set [default: 127.0.0.1:9093 with TLS
    /// and no --user-auth-config; 0.0.0.0:9093 with --user-auth-config or --insecure].
    #[arg(long, visible_alias = "exec-api-address", value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_api_address: Option<String>,
    /// Where process-isolated ServerApps connect (ServerAppIo API) [default: 127.0.0.1:9091
    /// with --isolation process; any free port on 127.0.0.1 with subprocess].
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serverappio_api_address: Option<String>,
    /// `--isolation` and `--fab-cache-dir`.
    #[command(flatten)]
    #[serde(flatten)]
    pub fabs: FabFlags,
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
    // Limits on logins and sessions (with --user-auth-config).
    /// Password or API-token checks (argon2, 19 MiB each) run at once [default: 4].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent_logins: Option<usize>,
    /// Logins waiting for a check; beyond this a login is refused at once with "too many
    /// logins in progress" [default: 64].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_queued_logins: Option<usize>,
    /// Failed logins of one user name within --login-lockout seconds before every login
    /// as that user, even with the right password, is refused for --login-lockout seconds
    /// (doubling with each lockout in a row, up to 64 times) [default: 5].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_login_failures_per_user: Option<u32>,
    /// The same, per peer IP address, across user names and API tokens [default: 30].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_login_failures_per_address: Option<u32>,
    /// Seconds failed logins are counted over, and the first lockout [default: 60].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_lockout: Option<u64>,
    /// Seconds a login lasts at most, however often its tokens are refreshed; then
    /// `flwr login` again [default: 604800, 7 days].
    #[arg(long, value_name = "SECONDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_max_age: Option<u64>,
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
    /// How many times in a row a run left unfinished by a crash is resumed when the
    /// SuperLink starts again; after that it is failed, so that a run that crashes the
    /// SuperLink cannot crash every start (a clean shutdown starts the count anew; 0 resumes
    /// no run) [default: 3].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_resume_attempts: Option<u32>,
    /// The largest model, in bytes, a run of a built-in app may ask for in its run config
    /// (e.g. quickstart's `total-params` float32 values); a larger one is refused at submit
    /// [default: 943718400, 900 MiB, under SQLite's 1 GB limit on one stored value].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_model_bytes: Option<u64>,
    /// How long a finished run (its record, log, and FAB if no other run uses it) is kept
    /// after it finished: a whole number with a unit, s, m, h or d (`30d`, `12h`); `0`
    /// keeps finished runs forever. A finished run's checkpoint goes when it ends
    /// [default: 30d].
    #[arg(long, value_name = "AGE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// At most this many finished runs are kept, the most recently finished; older ones
    /// are deleted as `--retention` deletes them (0 deletes each run soon after it ends)
    /// [default: no count limit].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_runs: Option<u64>,
    /// The largest size, in bytes, the state database may grow to; a write past it fails
    /// as a full disk would (the run it belongs to fails, saying so), so the SuperLink
    /// cannot fill a disk it shares. Never below the database's size at start; 0: no limit
    /// but the disk's [default: 0].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_database_size: Option<u64>,
    /// Run every submitted run as a simulation (Flower's flag): the federation's
    /// `options.num-supernodes`, `options.backend.client-resources.*` and `options.chaos.*`
    /// build each run a virtual fleet of its own on this machine, in place of SuperNodes. A
    /// SuperLink without it refuses runs whose federation sets `options.num-supernodes`.
    #[arg(long)]
    #[serde(skip_serializing_if = "is_false")]
    pub simulation: bool,
    /// With --simulation: how many ClientApp calls (of one CPU each) all runs together may
    /// run at once; a call asking for more CPUs holds that many [default: the core count].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulation_workers: Option<usize>,
    /// With --simulation: the most virtual SuperNodes one run may ask for
    /// (`options.num-supernodes`); a run asking for more is refused at submit. The fleet
    /// lists its node ids, 8 bytes each [default: 1000000].
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_simulation_supernodes: Option<u64>,
    /// Connection, stream, request-size and upload limits.
    #[command(flatten)]
    #[serde(flatten)]
    pub server_limits: LimitFlags,
    /// FAB and upload limits.
    #[command(flatten)]
    #[serde(flatten)]
    pub upload_limits: UploadLimitFlags,
    /// `--metrics-address`.
    #[command(flatten)]
    #[serde(flatten)]
    pub metrics: MetricsFlags,
    /// A TOML file of settings, keyed by these flags' names (`insecure = true`,
    /// `fleet-api-address = "0.0.0.0:9092"`); FLWR_* variables override it, flags override both.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
}

impl crate::daemon::Observed for SuperLinkArgs {
    fn telemetry(&self) -> &crate::telemetry::TelemetryArgs {
        &self.telemetry
    }
}
