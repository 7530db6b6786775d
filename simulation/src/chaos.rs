//! Seeded faults of the virtual fleet (`options.chaos.*`): dropouts, stragglers, latency,
//! Byzantine nodes.
//!
//! Every decision is a pure function of `(seed, run id, group id, message type, node id)`,
//! hashed with SplitMix64 rather than drawn from a shared generator. Workers serve
//! instructions in whatever order the scheduler gives them, so a shared stream would hand
//! a different fault to each node from one run to the next; a hash gives the same node the
//! same fault in the same round every time. FedAvg sets the group id to the round number,
//! so a node's fault changes from round to round. The hashes are `floret_core::seeded`'s,
//! whose outputs never change: a researcher's seed keeps meaning the same faults.
//!
//! - A **dropout** is what a node that leaves looks like to the SuperLink: its
//!   instruction is answered with a `NODE_UNAVAILABLE` error reply (the ClientApp does not
//!   run), which the strategy counts as a failure without waiting for its timeout.
//! - A **straggler** runs its ClientApp, but its reply is held back until the run's next
//!   phase has started (the next instruction of the run with another group id or message
//!   type), so it is never in time: the phase it was sampled in waits out its timeout and
//!   counts it as unanswered, and the next phase counts it as `late`. A straggler of the
//!   run's last phase is never delivered.
//! - **Latency** delays every other reply (dropout errors included) on a tokio timer, so a
//!   slow reply never holds a worker.
//!
//! - A **Byzantine** node is one for the whole run, not per round: an adversary. Which
//!   nodes are is a hash of `(seed, run id, node id)` alone, salted apart from the fault
//!   draw. Its ClientApp runs as usual; the arrays of its train replies are then poisoned
//!   (`byzantine`). It may drop out or straggle like any node.
//!
//! One draw per instruction decides between dropout (`u < dropout-rate`), straggler
//! (`u < dropout-rate + straggler-rate`) and none, so the two never overlap.

use crate::byzantine;
use crate::node_ids::node_id;
use floret_core::seeded::{fnv1a, splitmix, unit};
use floret_core::trace_context::phase_of;
use floret_core::{ChaosOptions, Message, Payload, message_type};
use std::time::Duration;

/// What happens to one instruction's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Delivered, after the configured latency.
    None,
    /// The node dropped out: a `NODE_UNAVAILABLE` error reply takes its place.
    Dropout,
    /// Delivered only once the run's next phase has started.
    Straggler,
}

/// The fault decisions of one simulation; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    options: ChaosOptions,
}

/// Salt of the latency draw, so that it is independent of the fault draw.
const LATENCY_SALT: u64 = 0x6c61_7465_6e63_7921;
/// Salt of the Byzantine draw, so that which nodes are Byzantine is independent of the
/// faults they get.
const BYZANTINE_SALT: u64 = 0x6279_7a61_6e74_696e;
/// Salt of a Byzantine node's gaussian noise.
const NOISE_SALT: u64 = 0x6761_7573_7369_616e;

impl Chaos {
    /// The faults `options` asks for; `None` when it asks for none, so that the fleet keeps
    /// its fault-free path.
    pub fn new(options: &ChaosOptions) -> Option<Chaos> {
        (!options.is_off()).then(|| Chaos {
            options: options.clone(),
        })
    }

    /// The fault of the instruction of `message_type` in group `group_id` (the round, for
    /// FedAvg) to `node_id` in run `run_id`.
    pub fn fault(&self, run_id: u64, group_id: &str, message_type: &str, node_id: u64) -> Fault {
        let u = unit(self.key(run_id, group_id, message_type, node_id));
        if u < self.options.dropout_rate {
            Fault::Dropout
        } else if u < self.options.dropout_rate + self.options.straggler_rate {
            Fault::Straggler
        } else {
            Fault::None
        }
    }

    /// How long the reply to that instruction travels: `latency-ms` plus a share of
    /// `latency-jitter-ms` drawn for it.
    pub fn latency(
        &self,
        run_id: u64,
        group_id: &str,
        message_type: &str,
        node_id: u64,
    ) -> Duration {
        let jitter = self.options.latency_jitter;
        if jitter.is_zero() {
            return self.options.latency;
        }
        let key = self.key(run_id, group_id, message_type, node_id);
        self.options.latency + jitter.mul_f64(unit(splitmix(key ^ LATENCY_SALT)))
    }

    /// Whether `node_id` is Byzantine in run `run_id`: the same answer in every round.
    pub fn is_byzantine(&self, run_id: u64, node_id: u64) -> bool {
        let key = [BYZANTINE_SALT, run_id, node_id]
            .into_iter()
            .fold(splitmix(self.options.seed), |h, part| splitmix(h ^ part));
        unit(key) < self.options.byzantine_rate
    }

    /// `reply` as the node that made it sends it: a Byzantine node's train reply with its
    /// arrays poisoned (`options.chaos.byzantine-mode`, against the instruction's `arrays`),
    /// any other reply as it is.
    pub fn poison(&self, instruction: &Message, reply: Message) -> Message {
        let md = &instruction.metadata;
        if phase_of(&md.message_type) != message_type::TRAIN
            || !self.is_byzantine(md.run_id, md.dst_node_id)
        {
            return reply;
        }
        let Payload::Content(content) = &reply.payload else {
            return reply;
        };
        let global = instruction
            .content()
            .ok()
            .and_then(|c| c.array_record("arrays").ok());
        let noise_seed = splitmix(
            self.key(md.run_id, &md.group_id, &md.message_type, md.dst_node_id) ^ NOISE_SALT,
        );
        let mode = self.options.byzantine_mode;
        let scale = self
            .options
            .byzantine_scale
            .unwrap_or_else(|| mode.default_scale());
        let poisoned = byzantine::poison(mode, scale, content, global, noise_seed);
        Message {
            payload: Payload::Content(poisoned),
            ..reply
        }
    }

    /// True when some nodes may be Byzantine (`byzantine-rate` above 0).
    pub fn has_byzantine(&self) -> bool {
        self.options.byzantine_rate > 0.0
    }

    /// The line a simulation logs at its start when it has Byzantine nodes: how many of its
    /// `num_nodes` virtual nodes are, and in which mode. `None` without any.
    pub fn byzantine_summary(&self, run_id: u64, num_nodes: u64) -> Option<String> {
        if !self.has_byzantine() {
            return None;
        }
        let rate = self.options.byzantine_rate;
        let byzantine = (0..num_nodes)
            .filter(|&i| self.is_byzantine(run_id, node_id(i)))
            .count();
        Some(format!(
            "chaos: {byzantine} of {num_nodes} virtual SuperNodes are Byzantine \
             (options.chaos.byzantine-rate {rate}) and poison their train replies with {}",
            self.options.byzantine_mode
        ))
    }

    /// `fault` for an instruction as the fleet pulled it.
    pub(crate) fn fault_of(&self, m: &Message) -> Fault {
        let md = &m.metadata;
        self.fault(md.run_id, &md.group_id, &md.message_type, md.dst_node_id)
    }

    /// `latency` for an instruction as the fleet pulled it.
    pub(crate) fn latency_of(&self, m: &Message) -> Duration {
        let md = &m.metadata;
        self.latency(md.run_id, &md.group_id, &md.message_type, md.dst_node_id)
    }

    fn key(&self, run_id: u64, group_id: &str, message_type: &str, node_id: u64) -> u64 {
        [run_id, fnv1a(group_id), fnv1a(message_type), node_id]
            .into_iter()
            .fold(splitmix(self.options.seed), |h, part| splitmix(h ^ part))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{Array, ArrayRecord, ByzantineMode, MetricRecord, RecordDict};

    fn chaos(dropout_rate: f64, straggler_rate: f64, seed: u64) -> Chaos {
        Chaos::new(&ChaosOptions {
            dropout_rate,
            straggler_rate,
            seed,
            ..ChaosOptions::default()
        })
        .expect("faults asked for")
    }

    fn faults(c: &Chaos, round: u64, nodes: u64) -> Vec<Fault> {
        (0..nodes)
            .map(|i| c.fault(1, &round.to_string(), "train", node_id(i)))
            .collect()
    }

    #[test]
    fn no_fault_asked_for_keeps_the_fast_path() {
        assert!(Chaos::new(&ChaosOptions::default()).is_none());
        let seed_only = ChaosOptions {
            seed: 9,
            ..ChaosOptions::default()
        };
        assert!(Chaos::new(&seed_only).is_none());
    }

    #[test]
    fn same_seed_same_faults_other_seed_other_faults() {
        let a = chaos(0.3, 0.2, 42);
        assert_eq!(faults(&a, 1, 200), faults(&chaos(0.3, 0.2, 42), 1, 200));
        assert_ne!(faults(&a, 1, 200), faults(&chaos(0.3, 0.2, 43), 1, 200));
        // Another round, run or message type draws again.
        assert_ne!(faults(&a, 1, 200), faults(&a, 2, 200));
        let other_run: Vec<Fault> = (0..200)
            .map(|i| a.fault(2, "1", "train", node_id(i)))
            .collect();
        assert_ne!(faults(&a, 1, 200), other_run);
        let evaluate: Vec<Fault> = (0..200)
            .map(|i| a.fault(1, "1", "evaluate", node_id(i)))
            .collect();
        assert_ne!(faults(&a, 1, 200), evaluate);
    }

    #[test]
    fn the_rates_are_the_shares_of_faults() {
        let c = chaos(0.3, 0.1, 7);
        let all: Vec<Fault> = (1..=50).flat_map(|r| faults(&c, r, 200)).collect();
        let share = |f| all.iter().filter(|x| **x == f).count() as f64 / all.len() as f64;
        // 10,000 draws: the standard error of a 0.3 share is 0.0046.
        assert!(
            (share(Fault::Dropout) - 0.3).abs() < 0.02,
            "{}",
            share(Fault::Dropout)
        );
        assert!(
            (share(Fault::Straggler) - 0.1).abs() < 0.02,
            "{}",
            share(Fault::Straggler)
        );
        assert!(
            faults(&chaos(1.0, 0.0, 1), 1, 100)
                .iter()
                .all(|f| *f == Fault::Dropout)
        );
        assert!(
            faults(&chaos(0.0, 1.0, 1), 1, 100)
                .iter()
                .all(|f| *f == Fault::Straggler)
        );
    }

    #[test]
    fn latency_is_the_base_plus_seeded_jitter_within_bounds() {
        let options = ChaosOptions {
            latency: Duration::from_millis(20),
            latency_jitter: Duration::from_millis(10),
            seed: 5,
            ..ChaosOptions::default()
        };
        let c = Chaos::new(&options).expect("latency is a fault");
        let draws: Vec<Duration> = (0..100)
            .map(|i| c.latency(1, "1", "train", node_id(i)))
            .collect();
        assert!(
            draws
                .iter()
                .all(|d| *d >= Duration::from_millis(20) && *d < Duration::from_millis(30))
        );
        assert!(draws.iter().any(|d| *d > Duration::from_millis(25)));
        assert!(draws.iter().any(|d| *d < Duration::from_millis(25)));
        assert_eq!(draws[3], c.latency(1, "1", "train", node_id(3)));
        // Without jitter every reply gets exactly the base latency.
        let flat = Chaos::new(&ChaosOptions {
            latency: Duration::from_millis(20),
            ..ChaosOptions::default()
        })
        .expect("latency is a fault");
        assert_eq!(flat.latency(1, "1", "train", 77), Duration::from_millis(20));
    }

    /// A researcher's seed must keep meaning the same faults: these are the key and draws
    /// the code gave when the hash moved to `floret_core::seeded`.
    #[test]
    fn draws_are_pinned() {
        let c = chaos(0.3, 0.2, 42);
        let key = c.key(1, "1", "train", 0x1234);
        assert_eq!(key, 0xa7f0_25c9_f62e_d8be);
        assert_eq!(unit(key), 0.656_008_111_769_718_2);
        assert_eq!(unit(splitmix(key ^ LATENCY_SALT)), 0.150_590_005_277_799_42);
        assert_eq!(c.fault(1, "1", "train", 0x1234), Fault::None);
        assert_eq!(
            chaos(0.7, 0.0, 42).fault(1, "1", "train", 0x1234),
            Fault::Dropout
        );
        assert_eq!(
            chaos(0.5, 0.2, 42).fault(1, "1", "train", 0x1234),
            Fault::Straggler
        );
    }

    fn byzantine(rate: f64, seed: u64) -> Chaos {
        Chaos::new(&ChaosOptions {
            byzantine_rate: rate,
            seed,
            ..ChaosOptions::default()
        })
        .expect("Byzantine nodes are a fault")
    }

    fn byzantine_nodes(c: &Chaos, run_id: u64, nodes: u64) -> Vec<u64> {
        (0..nodes)
            .map(node_id)
            .filter(|&n| c.is_byzantine(run_id, n))
            .collect()
    }

    #[test]
    fn byzantine_nodes_are_the_rate_of_the_fleet_for_the_whole_run() {
        let c = byzantine(0.3, 42);
        let nodes = byzantine_nodes(&c, 1, 10_000);
        // 10,000 nodes: the standard error of a 0.3 share is 0.0046.
        let share = nodes.len() as f64 / 10_000.0;
        assert!((share - 0.3).abs() < 0.02, "{share}");
        assert_eq!(nodes, byzantine_nodes(&byzantine(0.3, 42), 1, 10_000));
        assert_ne!(nodes, byzantine_nodes(&byzantine(0.3, 43), 1, 10_000));
        assert_ne!(nodes, byzantine_nodes(&c, 2, 10_000), "another run, others");
        assert_eq!(byzantine_nodes(&byzantine(1.0, 1), 1, 100).len(), 100);
        assert!(byzantine_nodes(&chaos(0.3, 0.0, 42), 1, 100).is_empty());
    }

    #[test]
    fn a_byzantine_node_poisons_its_train_replies_in_every_round() {
        let c = Chaos::new(&ChaosOptions {
            byzantine_rate: 0.5,
            byzantine_mode: ByzantineMode::Zeros,
            seed: 3,
            ..ChaosOptions::default()
        })
        .expect("Byzantine nodes are a fault");
        let mut metrics = MetricRecord::new();
        metrics.insert("num-examples", 100i64);
        let reply_of = |instruction: &Message| {
            let mut arrays = ArrayRecord::new();
            arrays.insert("w", Array::from_slice(&[1.5f32, -2.0]));
            instruction.reply(Payload::Content(
                RecordDict::new()
                    .with("arrays", arrays)
                    .with("metrics", metrics.clone()),
            ))
        };
        let poisoned = |kind: &str, round: u64, node: u64| {
            let mut instruction =
                Message::new(RecordDict::new(), node, kind).with_group_id(round.to_string());
            instruction.metadata.run_id = 1;
            let reply = reply_of(&instruction);
            let sent = c.poison(&instruction, reply.clone());
            let content = sent.content().unwrap();
            assert_eq!(
                content.metric_record("metrics").unwrap(),
                reply.content().unwrap().metric_record("metrics").unwrap(),
                "metrics are sent as they are"
            );
            sent != reply
        };
        for i in 0..50 {
            let node = node_id(i);
            let attacker = c.is_byzantine(1, node);
            for round in 1..=5 {
                assert_eq!(poisoned("train", round, node), attacker, "node {i}");
                assert!(!poisoned("evaluate", round, node), "evaluate is honest");
            }
        }
        // An error reply has no arrays to poison.
        let attacker = (0..50)
            .map(node_id)
            .find(|&n| c.is_byzantine(1, n))
            .unwrap();
        let mut instruction = Message::new(RecordDict::new(), attacker, "train");
        instruction.metadata.run_id = 1;
        let error = instruction.reply(Payload::Error(floret_core::MessageError::new(1, "boom")));
        assert_eq!(c.poison(&instruction, error.clone()), error);
    }

    /// A researcher's seed must keep meaning the same attackers.
    #[test]
    fn byzantine_draws_are_pinned() {
        let attackers: Vec<u64> = (0..20)
            .filter(|&i| byzantine(0.3, 42).is_byzantine(1, node_id(i)))
            .collect();
        assert_eq!(attackers, vec![3, 4, 8, 15, 18]);
    }

    #[test]
    fn the_byzantine_summary_counts_the_fleet() {
        let c = byzantine(0.3, 42);
        let count = byzantine_nodes(&c, 1, 100).len();
        let line = c.byzantine_summary(1, 100).unwrap();
        assert!(
            line.starts_with(&format!(
                "chaos: {count} of 100 virtual SuperNodes are Byzantine"
            )),
            "{line}"
        );
        assert!(line.ends_with("with sign-flip"), "{line}");
        assert_eq!(chaos(0.3, 0.0, 1).byzantine_summary(1, 100), None);
    }
}
