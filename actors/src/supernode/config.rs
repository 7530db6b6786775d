//! What a SuperNode is configured with, and why it may stop on its own.

use crate::policy::backoff::{Backoff, Limit, RetryBudget};
use crate::policy::heartbeat::{DEFAULT_HEARTBEAT_INTERVAL, HeartbeatPolicy, check_interval};
use floret_core::{FleetError, UserConfig};
use std::time::Duration;
use thiserror::Error;

/// How a SuperNode connects and behaves; defaults are Flower's.
#[derive(Debug, Clone, PartialEq)]
pub struct SuperNodeConfig {
    /// The SuperLink's address as the user gave it (`--superlink`), for messages only: the
    /// `Fleet` handed to the SuperNode already knows where to go.
    pub superlink: String,
    /// `--node-config`: what the node's ClientApps see as `Context.node_config`.
    pub node_config: UserConfig,
    /// Interval promised to the SuperLink; the node beats a little more often (see
    /// `heartbeat`).
    pub heartbeat_interval: Duration,
    /// Beat factor and jitter; the patience and sweep fields matter to the SuperLink only.
    pub heartbeat: HeartbeatPolicy,
    /// Delays between reconnect attempts.
    pub backoff: Backoff,
    /// `--max-retries`: retries after the first failed attempt of one outage; `None` =
    /// forever.
    pub max_retries: Option<u32>,
    /// `--max-wait-time`: longest time one outage is retried; `None` = forever.
    pub max_wait_time: Option<Duration>,
    /// How the node reaches its SuperLink (`grpc`, `quic`, `memory`), for span attributes.
    pub transport: &'static str,
}

impl Default for SuperNodeConfig {
    fn default() -> Self {
        SuperNodeConfig {
            superlink: "127.0.0.1:9092".to_string(),
            node_config: UserConfig::new(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat: HeartbeatPolicy::default(),
            backoff: Backoff::default(),
            max_retries: None,
            max_wait_time: None,
            transport: "memory",
        }
    }
}

impl SuperNodeConfig {
    /// Checks every setting; the error names the bad one.
    pub fn validate(&self) -> Result<(), SuperNodeError> {
        check_interval(self.heartbeat_interval.as_secs_f64())
            .and_then(|()| self.heartbeat.validate())
            .and_then(|()| self.backoff.validate())
            .map_err(SuperNodeError::Config)
    }

    pub(super) fn budget(&self) -> RetryBudget {
        RetryBudget {
            max_retries: self.max_retries,
            max_wait_time: self.max_wait_time,
        }
    }
}

/// Why a SuperNode stopped on its own.
#[derive(Debug, Error)]
pub enum SuperNodeError {
    /// A setting is out of range; the text names it.
    #[error("invalid SuperNode configuration: {0}")]
    Config(String),
    /// The SuperLink stayed unreachable until the retry budget was spent.
    #[error(
        "gave up connecting to the SuperLink at {superlink} after {attempts} attempts in \
         {:.1} s ({limit} reached); last error: {last_error}. Check that the SuperLink is \
         running and reachable, or raise the limit",
        elapsed.as_secs_f64()
    )]
    GaveUp {
        /// The SuperLink's address, as configured.
        superlink: String,
        /// Failed attempts in this outage, the first included.
        attempts: u32,
        /// How long the outage lasted, from its first failed attempt.
        elapsed: Duration,
        /// The limit that ended the retrying.
        limit: Limit,
        /// The error of the last attempt, usually the most telling.
        last_error: FleetError,
    },
    /// The SuperLink answered but refused the node (e.g. not authenticated): retrying
    /// would not help.
    #[error("the SuperLink at {superlink} refused this SuperNode: {error}")]
    Refused {
        /// The SuperLink's address, as configured.
        superlink: String,
        /// Its answer.
        error: FleetError,
    },
    /// The actor system would not start the SuperNode actor.
    #[error("could not start the SuperNode actor: {0}")]
    Spawn(String),
    /// The SuperNode actor panicked or stopped without reporting an outcome.
    #[error("the SuperNode actor stopped unexpectedly: {0}")]
    Crashed(String),
}
