//! The flags both daemons take, declared once and flattened into `SuperLinkArgs` and
//! `SuperNodeArgs` where each daemon lists them, so `--help` keeps its order.
//!
//! The names, the `--config` keys and the `FLWR_*` variables come from the field names,
//! as for every other flag (see `settings`). A daemon that words a flag's help for its
//! own apps overrides it with `mut_arg` (both do for `--isolation`, which names their
//! app and its AppIo flag); the doc comments here are the help otherwise.

use serde::Serialize;

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
