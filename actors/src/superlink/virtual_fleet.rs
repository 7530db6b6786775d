//! Runs of a `--simulation` SuperLink: each one gets a virtual fleet of its own instead of
//! the SuperNodes connected to the Fleet API.
//!
//! The run is an ordinary run of the SuperLink's `LinkState` (created by `LinkControl`,
//! owned by a Run actor, ended through `run_end`), so `flwr ls`, `flwr log --stream`,
//! `flwr stop`, user-auth owners, persistence and resume treat it as any other. Only its
//! ServerApp's grid differs: status, events and checkpoints go to the SuperLink's state
//! through the run's `LinkGrid`, while its messages go to a virtual fleet built from the
//! run's `options.*` (`StartRun.federation_options`). The fleet lives in the simulation
//! crate, which depends on this one; this port is how the Run actor reaches it.
//!
//! Which kind of SuperLink accepts which run is one pure rule, [`check_run_kind`].

use crate::superlink::grid::LinkGrid;
use async_trait::async_trait;
use floret_core::{AppRef, Grid, RunInfo, UserConfig};
use std::sync::Arc;

/// Builds the virtual fleets of a `--simulation` SuperLink's runs.
#[async_trait]
pub trait VirtualFleets: Send + Sync + 'static {
    /// Checks a run's `options.*` and, for a built-in app (`Some`), its ClientApp at
    /// submit, before anything is created: `Err` is one line naming the key or component
    /// and the fix. A FAB's ClientApp (`None`) runs in the FAB's own process.
    fn check(&self, app: Option<&AppRef>, options: &UserConfig) -> Result<(), String>;
    /// The grid the run's ServerApp talks to: `link` for the run's status, events and
    /// checkpoints, a virtual fleet of the run's own for its messages. The fleet ends when
    /// the grid is dropped (the run ended, was stopped or suspended).
    async fn grid(
        &self,
        run: &RunInfo,
        options: &UserConfig,
        link: LinkGrid,
    ) -> Result<Arc<dyn Grid>, String>;
}

/// A run's virtual fleet: the builder and the run's `options.*`.
#[derive(Clone)]
pub struct RunFleet {
    /// The SuperLink's fleet builder.
    pub fleets: Arc<dyn VirtualFleets>,
    /// The run's `federation_options`, as submitted.
    pub options: UserConfig,
}

/// Whether a SuperLink accepts a run with these `federation_options`: a deployment
/// SuperLink refuses a run that asks for a simulation (`num-supernodes`, `chaos.*`), which
/// would otherwise wait for SuperNodes that never come or silently drop the faults; a
/// `--simulation` SuperLink refuses one that does not say how many virtual SuperNodes to
/// run. `Err` is the one line the user sees.
pub fn check_run_kind(simulation: bool, options: &UserConfig) -> Result<(), String> {
    let simulation_key = options
        .keys()
        .find(|k| *k == "num-supernodes" || k.starts_with("chaos."));
    match (simulation, simulation_key) {
        (false, Some(key)) => Err(format!(
            "the federation sets options.{key}, which asks for a simulation, but this \
             SuperLink runs deployments on its SuperNodes: start it with `flower-superlink \
             --simulation`, or remove options.num-supernodes and options.chaos.* to run on \
             its SuperNodes"
        )),
        (true, _) if !options.contains_key("num-supernodes") => Err(
            "this SuperLink runs simulations (--simulation) and the federation does not say \
             how many virtual SuperNodes to run: set options.num-supernodes = 10 in the \
             federation"
                .to_owned(),
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::UserConfigValue;

    fn options(num_supernodes: Option<i64>) -> UserConfig {
        let mut o = UserConfig::new();
        if let Some(n) = num_supernodes {
            o.insert("num-supernodes".into(), UserConfigValue::Int(n));
        }
        o
    }

    #[test]
    fn a_deployment_superlink_refuses_a_simulation_run_naming_the_flag() {
        let e = check_run_kind(false, &options(Some(10))).unwrap_err();
        assert!(e.contains("flower-superlink --simulation"), "{e}");
        assert!(e.contains("options.num-supernodes, which asks"), "{e}");
        assert!(!e.contains('\n'));
        let mut chaos = options(None);
        chaos.insert("chaos.dropout-rate".into(), UserConfigValue::Float(0.3));
        let e = check_run_kind(false, &chaos).unwrap_err();
        assert!(e.contains("options.chaos.dropout-rate, which asks"), "{e}");
        assert_eq!(check_run_kind(false, &options(None)), Ok(()));
    }

    #[test]
    fn a_simulation_superlink_needs_the_fleet_size() {
        let e = check_run_kind(true, &options(None)).unwrap_err();
        assert!(e.contains("set options.num-supernodes = 10"), "{e}");
        assert_eq!(check_run_kind(true, &options(Some(3))), Ok(()));
    }
}
