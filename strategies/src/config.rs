//! FedAvg's settings, with Flower's names and defaults, and their validation.

use crate::error::StrategyError;

/// Settings of FedAvg, named and defaulted as in Flower 1.42's message-API `FedAvg`.
#[derive(Debug, Clone, PartialEq)]
pub struct FedAvgConfig {
    /// Share of the connected nodes sampled for training each round (0.0..=1.0).
    pub fraction_train: f64,
    /// Share of the connected nodes sampled for evaluation each round; 0.0 turns the
    /// federated evaluate phase off.
    pub fraction_evaluate: f64,
    /// Fewest nodes a train phase runs on; raises the sample when the fraction gives fewer.
    pub min_train_nodes: usize,
    /// Fewest nodes an evaluate phase runs on.
    pub min_evaluate_nodes: usize,
    /// Nodes that must be connected before a phase samples. Unlike Flower, a phase waits for
    /// `max(min_available_nodes, min_<phase>_nodes)` so round 1 never trains on one node.
    pub min_available_nodes: usize,
    /// Metric in each reply that weights it in the averages (the number of examples).
    pub weighted_by_key: String,
    /// Key of the `ArrayRecord` (the model) in messages and train replies.
    pub arrayrecord_key: String,
    /// Key of the `ConfigRecord` in the messages sent to nodes.
    pub configrecord_key: String,
    /// Seed of the node sampling; `None` seeds from the operating system.
    pub seed: Option<u64>,
}

impl Default for FedAvgConfig {
    fn default() -> Self {
        FedAvgConfig {
            fraction_train: 1.0,
            fraction_evaluate: 1.0,
            min_train_nodes: 2,
            min_evaluate_nodes: 2,
            min_available_nodes: 2,
            weighted_by_key: "num-examples".to_string(),
            arrayrecord_key: "arrays".to_string(),
            configrecord_key: "config".to_string(),
            seed: None,
        }
    }
}

impl FedAvgConfig {
    /// Checks every field; the error names the first bad one and says what to set instead.
    pub fn validate(&self) -> Result<(), StrategyError> {
        check_fraction("fraction_train", self.fraction_train)?;
        check_fraction("fraction_evaluate", self.fraction_evaluate)?;
        if self.min_train_nodes == 0 {
            return Err(invalid(
                "min_train_nodes",
                "0",
                "a round must train on at least one node; set it to 1 or more (Flower's default is 2)",
            ));
        }
        if self.fraction_evaluate > 0.0 && self.min_evaluate_nodes == 0 {
            return Err(invalid(
                "min_evaluate_nodes",
                "0",
                "set it to 1 or more, or set fraction_evaluate = 0.0 to turn federated evaluation off",
            ));
        }
        check_key("weighted_by_key", &self.weighted_by_key)?;
        check_key("arrayrecord_key", &self.arrayrecord_key)?;
        check_key("configrecord_key", &self.configrecord_key)?;
        Ok(())
    }
}

fn check_fraction(field: &'static str, value: f64) -> Result<(), StrategyError> {
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        return Ok(());
    }
    Err(invalid(
        field,
        &value.to_string(),
        "it is a share of the connected nodes and must be between 0.0 and 1.0 \
         (1.0 = all nodes, 0.5 = half of them)",
    ))
}

fn check_key(field: &'static str, value: &str) -> Result<(), StrategyError> {
    if value.trim().is_empty() {
        return Err(invalid(
            field,
            &format!("{value:?}"),
            "a record key must not be empty; use the key your ClientApp reads and writes",
        ));
    }
    Ok(())
}

fn invalid(field: &'static str, value: &str, fix: &str) -> StrategyError {
    StrategyError::InvalidConfig {
        field,
        value: value.to_string(),
        fix: fix.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(err: StrategyError) -> &'static str {
        match err {
            StrategyError::InvalidConfig { field, .. } => field,
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn defaults_are_flowers_and_valid() {
        let c = FedAvgConfig::default();
        assert_eq!((c.fraction_train, c.fraction_evaluate), (1.0, 1.0));
        assert_eq!(
            (
                c.min_train_nodes,
                c.min_evaluate_nodes,
                c.min_available_nodes
            ),
            (2, 2, 2)
        );
        assert_eq!(c.weighted_by_key, "num-examples");
        assert!(c.validate().is_ok());
    }

    #[test]
    fn fractions_outside_zero_to_one_are_refused_with_the_field_name() {
        for bad in [-0.5, 1.5, f64::NAN, f64::INFINITY] {
            let c = FedAvgConfig {
                fraction_train: bad,
                ..FedAvgConfig::default()
            };
            let err = c.validate().unwrap_err();
            let text = err.to_string();
            assert!(text.contains("`fraction_train`"), "{text}");
            assert!(text.contains("between 0.0 and 1.0"), "{text}");
        }
        let c = FedAvgConfig {
            fraction_evaluate: -0.1,
            ..FedAvgConfig::default()
        };
        assert_eq!(field_of(c.validate().unwrap_err()), "fraction_evaluate");
    }

    #[test]
    fn zero_train_nodes_is_refused() {
        let c = FedAvgConfig {
            min_train_nodes: 0,
            ..FedAvgConfig::default()
        };
        assert_eq!(field_of(c.validate().unwrap_err()), "min_train_nodes");
    }

    #[test]
    fn zero_evaluate_nodes_is_fine_when_evaluation_is_off() {
        let mut c = FedAvgConfig {
            min_evaluate_nodes: 0,
            ..FedAvgConfig::default()
        };
        assert_eq!(field_of(c.validate().unwrap_err()), "min_evaluate_nodes");
        c.fraction_evaluate = 0.0;
        assert!(c.validate().is_ok());
    }

    #[test]
    fn empty_record_keys_are_refused() {
        let c = FedAvgConfig {
            weighted_by_key: " ".into(),
            ..FedAvgConfig::default()
        };
        assert_eq!(field_of(c.validate().unwrap_err()), "weighted_by_key");
    }
}
