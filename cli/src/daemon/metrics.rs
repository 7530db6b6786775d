//! `--metrics-address`: the daemons' Prometheus endpoint. The libraries record through the
//! `metrics` facade; only here, in a daemon given the flag, is an exporter installed, so a
//! daemon without it pays nothing for the recording calls.
//!
//! The exporter must be installed before the servers are bound: they take their counter
//! handles when they start, and a handle taken before there is a recorder stays a no-op.

use super::{bind_error, listen_address};
use crate::UserError;
use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::net::{SocketAddr, TcpListener};

/// Histogram buckets of the `_seconds` metrics: from a millisecond fold of a tiny model to
/// rounds of several minutes.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// `--metrics-address` as configured: empty is off, anything else must be `HOST:PORT`.
pub fn metrics_address(value: &str) -> Result<Option<SocketAddr>, UserError> {
    if value.is_empty() {
        return Ok(None);
    }
    listen_address("metrics-address", value).map(Some)
}

/// Which daemon serves the metrics: decides the series shown at 0 before anything happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// `flower-superlink`: besides the reconnect counter and app-process gauge, its
    /// missed-heartbeat and completed-round counters start at 0.
    SuperLink,
    /// `flower-supernode`: only the reconnect counter and app-process gauge start at 0.
    SuperNode,
}

/// Serves Prometheus metrics at `http://addr/metrics` from this tokio runtime, and
/// describes every metric so the page has HELP lines.
///
/// # Errors
/// A [`UserError`] naming `--metrics-address` when the address cannot be listened on (in
/// use, not of this machine); a plain error when a recorder is installed already.
pub fn install(addr: SocketAddr, daemon: Daemon) -> anyhow::Result<SocketAddr> {
    // The exporter binds inside `install` but reports a failure only as text; binding here
    // first tells "in use" apart from other failures, and turns port 0 into a real port
    // that can be logged.
    let addr = TcpListener::bind(addr)
        .and_then(|probe| probe.local_addr())
        .map_err(|e| bind_error("metrics-address", addr, &e))?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| anyhow::anyhow!("metrics buckets: {e}"))?
        .install()
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr} (--metrics-address): {e}"))?;
    describe();
    zeros(daemon);
    tracing::info!("metrics at http://{addr}/metrics");
    Ok(addr)
}

/// Shows the event counters and gauges of `daemon` at 0 from the start: a series that
/// appears only at its first event makes "no reconnects yet" look like "not measured", and
/// breaks `rate()` over the first scrape.
fn zeros(daemon: Daemon) {
    use floret_actors::meter as actors;
    metrics::counter!(actors::RECONNECTS).increment(0);
    metrics::gauge!(actors::APP_PROCESSES).increment(0.0);
    if daemon == Daemon::SuperLink {
        metrics::counter!(actors::HEARTBEATS_MISSED).increment(0);
        metrics::counter!(floret_strategies::meter::ROUNDS_COMPLETED).increment(0);
    }
}

/// HELP lines for every metric either daemon records.
pub fn describe() {
    use floret_actors::meter as actors;
    use floret_strategies::meter as strategies;
    use floret_transport::meter as transport;
    describe_counter!(
        transport::MESSAGES_RECEIVED,
        "Flower messages received, by API and transport (SuperLink Fleet: replies; SuperNode Fleet: instructions)"
    );
    describe_counter!(
        transport::MESSAGES_SENT,
        "Flower messages sent, by API and transport (SuperLink Fleet: instructions; SuperNode Fleet: replies)"
    );
    describe_counter!(
        transport::BYTES_RECEIVED,
        Unit::Bytes,
        "Bytes of call bodies received, by API and transport"
    );
    describe_counter!(
        transport::BYTES_SENT,
        Unit::Bytes,
        "Bytes of call bodies sent, by API and transport"
    );
    describe_gauge!(
        transport::OBJECT_STORE_BYTES,
        Unit::Bytes,
        "Bytes of array chunks held for transfer by the Fleet and AppIo servers"
    );
    describe_gauge!(
        actors::NODES_ONLINE,
        "SuperNodes registered with the SuperLink"
    );
    describe_gauge!(actors::RUNS, "Runs known to the SuperLink, by status");
    describe_counter!(
        actors::HEARTBEATS_MISSED,
        "SuperNodes declared offline because their heartbeat lease ran out"
    );
    describe_counter!(
        actors::RECONNECTS,
        "Links made again after a lost one (SuperNode: new sessions; SuperLink: repeated Subscribe)"
    );
    describe_gauge!(
        actors::APP_PROCESSES,
        "ServerApp and ClientApp processes running, started by this daemon"
    );
    describe_counter!(
        strategies::ROUNDS_COMPLETED,
        "Rounds completed by ServerApps running in this process"
    );
    describe_histogram!(
        strategies::ROUND_DURATION,
        Unit::Seconds,
        "Wall time of completed rounds"
    );
    describe_counter!(
        crate::telemetry::ENDED_METRIC,
        "Spans finished while traces are exported; minus exported and dropped, those the full export queue refused"
    );
    describe_counter!(
        crate::telemetry::EXPORTED_METRIC,
        "Spans sent to the OTLP collector (--otlp-endpoint)"
    );
    describe_counter!(
        crate::telemetry::DROPPED_METRIC,
        "Spans lost because their export to the OTLP collector failed (unreachable, slow or refusing)"
    );
    describe_histogram!(
        strategies::AGGREGATION,
        Unit::Seconds,
        "Time a round's phase spent aggregating replies, by phase"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_off_unless_an_address_is_given() {
        assert_eq!(metrics_address("").unwrap(), None);
        assert_eq!(
            metrics_address("127.0.0.1:9464").unwrap(),
            Some("127.0.0.1:9464".parse().unwrap())
        );
    }

    #[test]
    fn a_bad_address_names_the_flag() {
        let e = metrics_address("not-an-address").unwrap_err();
        assert!(e.to_string().contains("--metrics-address"), "{e}");
    }

    #[test]
    fn a_port_in_use_is_the_users_to_fix() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = install(held.local_addr().unwrap(), Daemon::SuperLink).unwrap_err();
        let user = e.downcast_ref::<UserError>().expect("a user error");
        assert!(user.to_string().contains("--metrics-address"), "{user}");
        assert!(user.to_string().contains("already in use"), "{user}");
    }
}
