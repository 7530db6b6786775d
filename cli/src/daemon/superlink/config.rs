//! The SuperLink's settings: defaults, the `--config` file, `FLWR_*` and the flags merged
//! (`crate::daemon::settings`), then checked into a [`SuperLinkConfig`] before anything
//! starts, so that a bad setting is one line and exit 2.

use super::args::SuperLinkArgs;
use super::control_access::{ControlAccess, control_api_address};
use super::state::{Store, store};
use crate::UserError;
use crate::daemon::flags::{LimitSettings, connection_limits};
use crate::daemon::metrics::metrics_address;
use crate::daemon::settings::layered;
use crate::daemon::{
    SERVER_TLS_FLAGS, appio_listen_address, auth_key_pair, auth_needs_tls, fab_cache_dir,
    listen_address, parse_isolation, python_path, server_security,
};
use floret_actors::state::Retention;
use floret_actors::state::retention::parse_age;
use floret_actors::user_auth::{Accounts, GateLimits, LoginLimits, ThrottlePolicy, TokenLifetimes};
use floret_actors::{Isolation, RunLimits};
use floret_transport::ServerSecurity;
use floret_transport::auth::{NodeKeyPair, NodePublicKey, load_allow_list};
use floret_transport::limits::ServerLimits;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
    /// Empty: chosen by TLS and user authentication (see `control_access`).
    control_api_address: String,
    /// Empty: chosen by `isolation` (see `appio_listen_address`).
    serverappio_api_address: String,
    isolation: String,
    /// Empty: the default cache (see `fab_cache_dir`).
    fab_cache_dir: String,
    /// Empty: `FLORET_PYTHON` or `python3` (see `python_path`).
    python: String,
    /// Empty: `state.db` in the state directory.
    database: String,
    /// Empty: the default (see `state_dir`).
    state_dir: String,
    /// Empty: no user authentication.
    user_auth_config: String,
    max_concurrent_logins: usize,
    max_queued_logins: usize,
    max_login_failures_per_user: u32,
    max_login_failures_per_address: u32,
    login_lockout: u64,
    session_max_age: u64,
    /// Empty: node authentication off.
    auth_list_public_keys: String,
    auth_superlink_private_key: String,
    auth_superlink_public_key: String,
    /// Empty: no metrics endpoint.
    metrics_address: String,
    max_resume_attempts: u32,
    max_model_bytes: u64,
    /// `30d`, `12h`, ...; `0`: keep forever.
    retention: String,
    /// `None`: no count limit.
    retention_runs: Option<u64>,
    /// 0: no limit.
    max_database_size: u64,
    simulation: bool,
    simulation_workers: usize,
    max_simulation_supernodes: u64,
    // What peers may hold of the servers (`LimitFlags`).
    max_connections: usize,
    max_connections_per_ip: usize,
    max_concurrent_streams: u32,
    handshake_timeout: u64,
    connection_idle_timeout: u64,
    max_request_size: usize,
    max_inflight_request_bytes: usize,
    max_fab_size: usize,
    max_upload_bytes_per_node: usize,
    max_upload_bytes_per_run: usize,
    max_upload_bytes: usize,
}

impl Default for Settings {
    fn default() -> Self {
        let limits = LimitSettings::default();
        Settings {
            insecure: false,
            ssl_ca_certfile: None,
            ssl_certfile: None,
            ssl_keyfile: None,
            ssl_client_ca_certfile: None,
            fleet_api_address: "0.0.0.0:9092".into(),
            control_api_address: String::new(),
            serverappio_api_address: String::new(),
            isolation: "subprocess".into(),
            fab_cache_dir: String::new(),
            python: String::new(),
            database: String::new(),
            state_dir: String::new(),
            user_auth_config: String::new(),
            max_concurrent_logins: LoginLimits::default().gate.max_concurrent,
            max_queued_logins: LoginLimits::default().gate.max_queued,
            max_login_failures_per_user: ThrottlePolicy::default().max_failures_per_user,
            max_login_failures_per_address: ThrottlePolicy::default().max_failures_per_address,
            // Whole seconds: the defaults are.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            login_lockout: ThrottlePolicy::default().lockout_s as u64,
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            session_max_age: TokenLifetimes::default().max_s as u64,
            auth_list_public_keys: String::new(),
            auth_superlink_private_key: String::new(),
            auth_superlink_public_key: String::new(),
            metrics_address: String::new(),
            max_resume_attempts: RunLimits::default().max_resume_attempts,
            max_model_bytes: RunLimits::default().max_model_bytes,
            retention: "30d".into(),
            retention_runs: None,
            max_database_size: 0,
            simulation: false,
            simulation_workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_simulation_supernodes: 1_000_000,
            max_connections: limits.max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            max_concurrent_streams: limits.max_concurrent_streams,
            handshake_timeout: limits.handshake_timeout,
            connection_idle_timeout: limits.connection_idle_timeout,
            max_request_size: limits.max_request_size,
            max_inflight_request_bytes: limits.max_inflight_request_bytes,
            max_fab_size: limits.max_fab_size,
            max_upload_bytes_per_node: limits.max_upload_bytes_per_node,
            max_upload_bytes_per_run: limits.max_upload_bytes_per_run,
            max_upload_bytes: limits.max_upload_bytes,
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
    /// Why the Control API listens there: `serve` says so at start.
    pub control_access: ControlAccess,
    /// ServerAppIo API listen address; port 0 picks a free port.
    pub serverappio_api_address: SocketAddr,
    /// How the ServerApps of FABs run.
    pub isolation: Isolation,
    /// Where their binaries are written.
    pub fab_cache_dir: PathBuf,
    /// The Python that runs Flower apps in Python (`--python`).
    pub python: PathBuf,
    /// The accounts of `--user-auth-config`; `None`: no user authentication.
    pub user_auth: Option<Accounts>,
    /// How many logins are checked and wait at once, the login rate limits, and how long
    /// a session lasts (`--max-concurrent-logins` ...).
    pub login_limits: LoginLimits,
    /// SuperNode authentication; `None`: any SuperNode may connect.
    pub node_auth: Option<NodeAuthConfig>,
    /// Where the state is kept.
    pub store: Store,
    /// Where Prometheus scrapes `/metrics`; `None`: no endpoint.
    pub metrics_address: Option<SocketAddr>,
    /// What runs may ask for: resumes after crashes, model size; how long finished runs
    /// are kept.
    pub limits: RunLimits,
    /// The state database's size cap in bytes (`--max-database-size`); `None`: the disk's.
    pub max_database_size: Option<u64>,
    /// What peers may hold of the Fleet, Control and ServerAppIo servers.
    pub server_limits: ServerLimits,
    /// `--simulation`: every run gets a virtual fleet, and together they run at most this
    /// many ClientApp calls at once (`--simulation-workers`); `None`: runs use SuperNodes.
    pub simulation_workers: Option<usize>,
    /// The most virtual SuperNodes a simulation run may ask for
    /// (`--max-simulation-supernodes`).
    pub max_simulation_supernodes: u64,
}

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
        if node_auth.is_some() {
            auth_needs_tls(
                s.insecure,
                "--auth-list-public-keys",
                "node signatures do not cover request bodies and TLS keeps them intact",
                SERVER_TLS_FLAGS,
            )?;
        }
        let user_auth = user_auth_accounts(&s.user_auth_config)?;
        if user_auth.is_some() {
            auth_needs_tls(
                s.insecure,
                "--user-auth-config",
                "passwords and session tokens would travel in plaintext",
                SERVER_TLS_FLAGS,
            )?;
        }
        let isolation = parse_isolation(&s.isolation)?;
        let store = store(&s.database, &s.state_dir, &env)?;
        let (control_api, control_access) =
            control_api_address(&s.control_api_address, s.insecure, user_auth.is_some());
        Ok(SuperLinkConfig {
            security,
            fleet_security,
            fleet_api_address: listen_address("fleet-api-address", &s.fleet_api_address)?,
            control_api_address: listen_address("control-api-address", control_api)?,
            control_access,
            serverappio_api_address: appio_listen_address(
                "serverappio-api-address",
                &s.serverappio_api_address,
                isolation,
                "127.0.0.1:9091",
            )?,
            isolation,
            fab_cache_dir: fab_cache_dir(&s.fab_cache_dir, &env),
            python: python_path(&s.python, &env),
            user_auth,
            login_limits: login_limits(&s)?,
            node_auth,
            store,
            metrics_address: metrics_address(&s.metrics_address)?,
            limits: RunLimits {
                max_resume_attempts: s.max_resume_attempts,
                max_model_bytes: s.max_model_bytes,
                retention: retention(&s)?,
            },
            max_database_size: (s.max_database_size > 0).then_some(s.max_database_size),
            simulation_workers: simulation_workers(&s)?,
            max_simulation_supernodes: s.max_simulation_supernodes,
            server_limits: LimitSettings {
                max_fab_size: s.max_fab_size,
                max_upload_bytes_per_node: s.max_upload_bytes_per_node,
                max_upload_bytes_per_run: s.max_upload_bytes_per_run,
                max_upload_bytes: s.max_upload_bytes,
                ..connection_limits!(s)
            }
            .limits()?,
        })
    }
}

/// `--simulation` and `--simulation-workers`, checked: no worker would run no ClientApp.
fn simulation_workers(s: &Settings) -> Result<Option<usize>, UserError> {
    if s.simulation_workers == 0 {
        return Err(UserError::new(
            "--simulation-workers must be at least 1 (got 0): leave it unset for one per core",
        ));
    }
    Ok(s.simulation.then_some(s.simulation_workers))
}

/// `--retention` and `--retention-runs`, checked.
fn retention(s: &Settings) -> Result<Retention, UserError> {
    let max_age =
        parse_age(&s.retention).map_err(|e| UserError::new(format!("--retention {e}")))?;
    let max_runs = s
        .retention_runs
        .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    Ok(Retention {
        max_age,
        max_runs,
        ..Retention::default()
    })
}

/// The login and session limits, each checked: a zero would refuse every login.
fn login_limits(s: &Settings) -> Result<LoginLimits, UserError> {
    let at_least_one = |flag: &str, value: u64, what: &str| {
        if value == 0 {
            Err(UserError::new(format!(
                "--{flag} 0 would {what}: give at least 1"
            )))
        } else {
            Ok(())
        }
    };
    let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    at_least_one(
        "max-concurrent-logins",
        wide(s.max_concurrent_logins),
        "never check a login",
    )?;
    at_least_one(
        "max-login-failures-per-user",
        u64::from(s.max_login_failures_per_user),
        "lock out every user",
    )?;
    at_least_one(
        "max-login-failures-per-address",
        u64::from(s.max_login_failures_per_address),
        "lock out every address",
    )?;
    at_least_one("login-lockout", s.login_lockout, "count no failure")?;
    at_least_one(
        "session-max-age",
        s.session_max_age,
        "end every login at once",
    )?;
    // Seconds as f64, exact below 2^53.
    #[allow(clippy::cast_precision_loss)]
    let (lockout_s, max_age_s) = (s.login_lockout as f64, s.session_max_age as f64);
    let defaults = LoginLimits::default();
    Ok(LoginLimits {
        lifetimes: TokenLifetimes {
            max_s: max_age_s,
            ..defaults.lifetimes
        },
        gate: GateLimits {
            max_concurrent: s.max_concurrent_logins,
            max_queued: s.max_queued_logins,
        },
        throttle: ThrottlePolicy {
            max_failures_per_user: s.max_login_failures_per_user,
            max_failures_per_address: s.max_login_failures_per_address,
            window_s: lockout_s,
            lockout_s,
            max_lockout_s: lockout_s * 64.0,
            ..defaults.throttle
        },
    })
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

    /// Without user authentication a TLS SuperLink keeps its Control API on loopback unless
    /// some layer above the defaults names an address; `--insecure` stays open as in Flower.
    #[test]
    fn the_control_api_is_closed_unless_opened_on_purpose() {
        let dir = tempfile::tempdir().unwrap();
        let tls = keygen_tls(dir.path());
        let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
        let c = config(&tls, &[]).unwrap();
        assert_eq!(c.control_api_address, "127.0.0.1:9093".parse().unwrap());
        assert_eq!(c.control_access, ControlAccess::LoopbackByDefault);
        assert_eq!(c.fleet_api_address, "0.0.0.0:9092".parse().unwrap());

        let mut flag = tls.clone();
        flag.extend(["--control-api-address", "0.0.0.0:9093"]);
        let c = config(&flag, &[]).unwrap();
        assert_eq!(c.control_api_address, "0.0.0.0:9093".parse().unwrap());
        assert_eq!(c.control_access, ControlAccess::Given);

        let env = [("FLWR_CONTROL_API_ADDRESS", "0.0.0.0:7")];
        let c = config(&tls, &env).unwrap();
        assert_eq!(c.control_api_address, "0.0.0.0:7".parse().unwrap());
        assert_eq!(c.control_access, ControlAccess::Given);

        let file = dir.path().join("superlink.toml");
        std::fs::write(&file, "control-api-address = \"0.0.0.0:8\"\n").unwrap();
        let mut from_file = tls.clone();
        from_file.extend(["--config", file.to_str().unwrap()]);
        let c = config(&from_file, &[]).unwrap();
        assert_eq!(c.control_api_address, "0.0.0.0:8".parse().unwrap());
        assert_eq!(c.control_access, ControlAccess::Given);

        let c = config(&["--insecure"], &[]).unwrap();
        assert_eq!(c.control_api_address, "0.0.0.0:9093".parse().unwrap());
        assert_eq!(c.control_access, ControlAccess::Insecure);
    }

    #[test]
    fn run_limits_have_defaults_and_are_set_by_file_environment_or_flag() {
        let c = config(&["--insecure"], &[]).unwrap();
        assert_eq!(c.limits, RunLimits::default());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("superlink.toml");
        std::fs::write(&file, "max-resume-attempts = 5\nmax-model-bytes = 1000\n").unwrap();
        let file = file.to_str().unwrap();
        let c = config(&["--insecure", "--config", file], &[]).unwrap();
        assert_eq!(
            c.limits,
            RunLimits {
                max_resume_attempts: 5,
                max_model_bytes: 1000,
                ..RunLimits::default()
            }
        );
        let env = [("FLWR_MAX_RESUME_ATTEMPTS", "0")];
        let c = config(
            &["--insecure", "--config", file, "--max-model-bytes", "7"],
            &env,
        )
        .unwrap();
        assert_eq!(
            c.limits,
            RunLimits {
                max_resume_attempts: 0,
                max_model_bytes: 7,
                ..RunLimits::default()
            }
        );
        let e = config(&["--insecure"], &[("FLWR_MAX_MODEL_BYTES", "lots")]).unwrap_err();
        assert!(e.to_string().contains("max-model-bytes"), "{e}");
    }

    #[test]
    fn simulation_mode_and_its_worker_budget_come_from_flag_env_or_file() {
        let c = config(&["--insecure"], &[]).unwrap();
        assert_eq!(c.simulation_workers, None, "deployment by default");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let c = config(&["--insecure", "--simulation"], &[]).unwrap();
        assert_eq!(c.simulation_workers, Some(cores));
        let c = config(
            &["--insecure", "--simulation"],
            &[("FLWR_SIMULATION_WORKERS", "3")],
        )
        .unwrap();
        assert_eq!(c.simulation_workers, Some(3));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("superlink.toml");
        std::fs::write(&file, "simulation = true\nsimulation-workers = 5\n").unwrap();
        let c = config(&["--insecure", "--config", file.to_str().unwrap()], &[]).unwrap();
        assert_eq!(c.simulation_workers, Some(5));
        let e = config(
            &["--insecure", "--simulation", "--simulation-workers", "0"],
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("--simulation-workers must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn retention_and_the_database_cap_have_defaults_and_knobs() {
        let c = config(&["--insecure"], &[]).unwrap();
        assert_eq!(c.limits.retention, Retention::default());
        assert_eq!(
            c.limits.retention.max_age,
            Some(std::time::Duration::from_secs(30 * 24 * 3600))
        );
        assert_eq!(c.limits.retention.max_runs, None);
        assert_eq!(c.max_database_size, None);
        let c = config(
            &[
                "--insecure",
                "--retention",
                "12h",
                "--retention-runs",
                "100",
                "--max-database-size",
                "1000000",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            c.limits.retention.max_age,
            Some(std::time::Duration::from_secs(12 * 3600))
        );
        assert_eq!(c.limits.retention.max_runs, Some(100));
        assert_eq!(c.max_database_size, Some(1_000_000));
        let env = [("FLWR_RETENTION", "0"), ("FLWR_RETENTION_RUNS", "0")];
        let c = config(&["--insecure"], &env).unwrap();
        assert_eq!(c.limits.retention.max_age, None, "0 keeps forever");
        assert_eq!(c.limits.retention.max_runs, Some(0));
        let e = config(&["--insecure", "--retention", "30"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--retention \"30\" is not a retention period"),
            "{e}"
        );
        assert!(e.contains("e.g. 30d, 12h"), "{e}");
    }

    #[test]
    fn server_limits_have_defaults_and_are_set_by_file_environment_or_flag() {
        let c = config(&["--insecure"], &[]).unwrap();
        assert_eq!(c.server_limits, ServerLimits::default());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("superlink.toml");
        std::fs::write(&file, "max-connections = 100\nhandshake-timeout = 3\n").unwrap();
        let file = file.to_str().unwrap();
        let env = [("FLWR_MAX_UPLOAD_BYTES", "5000")];
        let c = config(
            &["--insecure", "--config", file, "--max-fab-size", "1000"],
            &env,
        )
        .unwrap();
        assert_eq!(c.server_limits.max_connections, 100);
        assert_eq!(
            c.server_limits.handshake_timeout,
            std::time::Duration::from_secs(3)
        );
        assert_eq!(c.server_limits.max_upload_bytes, 5000);
        assert_eq!(c.server_limits.max_fab_bytes, 1000);
        let e = config(&["--insecure", "--connection-idle-timeout", "0"], &[]).unwrap_err();
        assert!(e.to_string().contains("--connection-idle-timeout 0"), "{e}");
        let e = config(&["--insecure", "--max-fab-size", "999999999999"], &[]).unwrap_err();
        assert!(e.to_string().contains("at most 536870912"), "{e}");
    }

    #[test]
    fn the_per_run_upload_cap_is_set_by_file_environment_or_flag_and_zero_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("superlink.toml");
        std::fs::write(&file, "max-upload-bytes-per-run = 100\n").unwrap();
        let file = file.to_str().unwrap();
        let by_file = config(&["--insecure", "--config", file], &[]).unwrap();
        assert_eq!(by_file.server_limits.max_upload_bytes_per_run, 100);
        let env = [("FLWR_MAX_UPLOAD_BYTES_PER_RUN", "200")];
        let by_env = config(&["--insecure", "--config", file], &env).unwrap();
        assert_eq!(by_env.server_limits.max_upload_bytes_per_run, 200);
        let flag = ["--insecure", "--max-upload-bytes-per-run", "300"];
        let by_flag = config(&flag, &env).unwrap();
        assert_eq!(by_flag.server_limits.max_upload_bytes_per_run, 300);
        let e = config(&["--insecure", "--max-upload-bytes-per-run", "0"], &[]).unwrap_err();
        assert!(
            e.to_string().contains("--max-upload-bytes-per-run 0"),
            "{e}"
        );
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
    fn the_shared_flags_keep_their_config_keys_and_beat_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("superlink.toml");
        std::fs::write(
            &file,
            "isolation = \"process\"\nfab-cache-dir = \"/srv/fabs\"\nmetrics-address = \"127.0.0.1:9464\"\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let c = config(&["--insecure", "--config", file], &[]).unwrap();
        assert_eq!(c.isolation, Isolation::Process);
        assert_eq!(c.fab_cache_dir, PathBuf::from("/srv/fabs"));
        assert_eq!(c.metrics_address, Some("127.0.0.1:9464".parse().unwrap()));
        let c = config(
            &[
                "--insecure",
                "--config",
                file,
                "--isolation",
                "subprocess",
                "--fab-cache-dir",
                "/tmp/fabs",
            ],
            &[],
        )
        .unwrap();
        assert_eq!(c.isolation, Isolation::Subprocess);
        assert_eq!(c.fab_cache_dir, PathBuf::from("/tmp/fabs"));
    }

    #[test]
    fn login_limits_come_from_flags_and_env_and_zero_is_refused() {
        let c = config(&["--insecure"], &[]).unwrap();
        assert_eq!(c.login_limits, LoginLimits::default());
        let c = config(
            &[
                "--insecure",
                "--max-concurrent-logins",
                "2",
                "--login-lockout",
                "10",
                "--session-max-age",
                "3600",
            ],
            &[("FLWR_MAX_LOGIN_FAILURES_PER_USER", "3")],
        )
        .unwrap();
        assert_eq!(c.login_limits.gate.max_concurrent, 2);
        assert_eq!(c.login_limits.throttle.max_failures_per_user, 3);
        assert_eq!(c.login_limits.throttle.lockout_s, 10.0);
        assert_eq!(c.login_limits.throttle.max_lockout_s, 640.0);
        assert_eq!(c.login_limits.lifetimes.max_s, 3600.0);
        let e = config(&["--insecure", "--max-concurrent-logins", "0"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--max-concurrent-logins 0") && e.contains("at least 1"),
            "{e}"
        );
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

    /// `flwr keygen` into `dir`, and the SuperLink's flags to serve TLS with what it wrote.
    fn keygen_tls(dir: &std::path::Path) -> [String; 6] {
        let keygen = crate::keygen_cmd::KeygenArgs {
            clients: 1,
            out: dir.to_path_buf(),
            san: Vec::new(),
            days: 1,
            force: false,
        };
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(crate::keygen_cmd::execute(keygen))
            .unwrap();
        let file = |n: &str| {
            dir.join("certificates")
                .join(n)
                .to_str()
                .unwrap()
                .to_owned()
        };
        [
            "--ssl-ca-certfile".into(),
            file("ca.crt"),
            "--ssl-certfile".into(),
            file("server.pem"),
            "--ssl-keyfile".into(),
            file("server.key"),
        ]
    }

    /// Passwords and tokens in plaintext: user authentication over --insecure is refused
    /// at start with one line naming both flags, as node authentication is.
    #[test]
    fn user_auth_needs_tls() {
        let dir = tempfile::tempdir().unwrap();
        let accounts = dir.path().join("users.toml");
        let hash = floret_actors::user_auth::hash_secret("pw", &mut rand::rng()).unwrap();
        std::fs::write(
            &accounts,
            format!("[[users]]\nname = \"alice\"\npassword-hash = \"{hash}\"\n"),
        )
        .unwrap();
        let accounts = accounts.to_str().unwrap();
        let e = config(&["--insecure", "--user-auth-config", accounts], &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--user-auth-config needs TLS, but --insecure was given")
                && !e.contains('\n'),
            "{e}"
        );
        let mut args = keygen_tls(dir.path()).to_vec();
        args.extend(["--user-auth-config".into(), accounts.to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let c = config(&args, &[]).unwrap();
        assert!(c.user_auth.is_some());
        assert_eq!(
            (c.control_api_address, c.control_access),
            ("0.0.0.0:9093".parse().unwrap(), ControlAccess::UserAuth),
            "every call needs a login: open as in Flower"
        );
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
        let tls = keygen_tls(dir.path());
        let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
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
