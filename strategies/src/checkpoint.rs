//! FedAvg's checkpoint: what a run needs to go on after its ServerApp was started again
//! (a SuperLink restarted after a crash), and how it is written.
//!
//! A checkpoint is taken at the end of every round, so a resumed run repeats at most the
//! round that was under way. It holds the last completed round, the global model, the
//! history so far, the base seed of the node sampling and the server optimiser's state
//! (FedAvgM's momentum, FedAdam's moments: `server_update`); with those, the rounds that
//! follow are the ones an uninterrupted run would have had (see `round_rng`).
//!
//! The bytes are sealed (`floret_core::codec`) as kind [`CHECKPOINT_KIND`] at
//! [`CHECKPOINT_VERSION`], so a checkpoint written by a newer Floret is refused by name
//! instead of being misread, and a later format can still read this one.
//!
//! Pure: encoding, decoding and the compatibility checks do no I/O; `fedavg` moves the
//! bytes through the `Grid`.

use crate::error::StrategyError;
use crate::fedavg::History;
use crate::server_update::ServerState;
use floret_core::ArrayRecord;
use floret_core::codec::{self, Bincode, Codec};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Kind tag of a sealed FedAvg checkpoint.
pub const CHECKPOINT_KIND: &str = "fedavg-checkpoint";

/// Format version this build writes, and the newest it reads. Version 2 added the server
/// optimiser's state; a version 1 checkpoint reads with none (FedAvg had none).
pub const CHECKPOINT_VERSION: u16 = 2;

/// A FedAvg run after its last completed round, as read back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub(crate) struct Checkpoint {
    /// Rounds the run was started with; a resume with another number is refused.
    pub num_rounds: u64,
    /// The last round whose checkpoint this is (1..=num_rounds).
    pub completed: u64,
    /// Base seed of the node sampling (see `round_rng`).
    pub seed: u64,
    /// History up to and including `completed`; `arrays` is the global model after it.
    pub history: History,
    /// The server optimiser's state after `completed`.
    pub server: ServerState,
}

/// Version 1: `Checkpoint` without `server`.
#[derive(Deserialize)]
struct CheckpointV1 {
    num_rounds: u64,
    completed: u64,
    seed: u64,
    history: History,
}

/// The same fields as [`Checkpoint`], borrowed, for writing without copying the model.
/// Field order and types must match `Checkpoint`: bincode has no field names.
#[derive(Serialize)]
struct CheckpointRef<'a> {
    num_rounds: u64,
    completed: u64,
    seed: u64,
    history: &'a History,
    server: &'a ServerState,
}

/// Seals the state of a run after round `completed`.
pub(crate) fn encode(
    num_rounds: u64,
    completed: u64,
    seed: u64,
    history: &History,
    server: &ServerState,
) -> Result<Vec<u8>, StrategyError> {
    let value = CheckpointRef {
        num_rounds,
        completed,
        seed,
        history,
        server,
    };
    codec::encode_sealed(&Bincode, CHECKPOINT_KIND, CHECKPOINT_VERSION, &value)
        .map_err(|e| checkpoint_error(e.to_string()))
}

/// Opens a checkpoint; a newer format version, another kind or damaged bytes are refused
/// with the reason.
pub(crate) fn decode(bytes: &[u8]) -> Result<Checkpoint, StrategyError> {
    let envelope = codec::open(CHECKPOINT_KIND, CHECKPOINT_VERSION, bytes)
        .map_err(|e| checkpoint_error(e.to_string()))?;
    match envelope.version {
        CHECKPOINT_VERSION => Bincode
            .decode(CHECKPOINT_KIND, envelope.body)
            .map_err(|e| checkpoint_error(e.to_string())),
        1 => Bincode
            .decode(CHECKPOINT_KIND, envelope.body)
            .map(|v1: CheckpointV1| Checkpoint {
                num_rounds: v1.num_rounds,
                completed: v1.completed,
                seed: v1.seed,
                history: v1.history,
                server: ServerState::default(),
            })
            .map_err(|e| checkpoint_error(e.to_string())),
        // Version 1 is the first; anything below it was never written by Floret.
        older => Err(checkpoint_error(format!(
            "{CHECKPOINT_KIND} format version {older} is unknown (this build reads 1 to \
             {CHECKPOINT_VERSION})"
        ))),
    }
}

impl Checkpoint {
    /// Refuses a checkpoint that does not belong to a run started with these settings: a
    /// resumed run must be the run that was interrupted, or its result means nothing.
    pub(crate) fn check(
        &self,
        num_rounds: u64,
        seed: Option<u64>,
        initial: &ArrayRecord,
    ) -> Result<(), StrategyError> {
        if self.num_rounds != num_rounds {
            return Err(checkpoint_error(format!(
                "it is of a run of {} rounds, but this run has {num_rounds}; keep num_rounds \
                 as it was, or start a new run",
                self.num_rounds
            )));
        }
        if self.completed == 0 || self.completed > self.num_rounds {
            return Err(checkpoint_error(format!(
                "it claims round {} of {} was completed",
                self.completed, self.num_rounds
            )));
        }
        if let Some(seed) = seed.filter(|&s| s != self.seed) {
            return Err(checkpoint_error(format!(
                "it was sampled with seed {}, but this run's seed is {seed}; keep the seed \
                 as it was, or start a new run",
                self.seed
            )));
        }
        let shape = |a: &ArrayRecord| -> Vec<(String, String, Vec<i32>)> {
            a.iter()
                .map(|(k, v)| (k.clone(), v.dtype.as_str().to_string(), v.shape.clone()))
                .collect()
        };
        let (saved, given) = (shape(&self.history.arrays), shape(initial));
        if saved != given {
            return Err(checkpoint_error(format!(
                "its model (key, dtype, shape) is {saved:?}, but this run's initial model is \
                 {given:?}; the app's model changed since the run started"
            )));
        }
        Ok(())
    }
}

fn checkpoint_error(reason: String) -> StrategyError {
    StrategyError::Checkpoint { reason }
}

/// The node-sampling RNG of one round: seeded from the run's base seed and the round
/// number alone, not carried over from the rounds before. So a run resumed at round k+1
/// samples exactly the nodes the uninterrupted run would have, without storing the RNG's
/// internal state (whose layout `rand` does not promise to keep).
pub(crate) fn round_rng(seed: u64, round: u64) -> SmallRng {
    // Golden-ratio increment (as in splitmix64): neighbouring rounds get far-apart seeds.
    SmallRng::seed_from_u64(seed ^ round.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Lowercase hex sha256 of a model: of each array's data, in the record's order. Equal
/// digests mean bitwise-equal models (same keys in the same order assumed), which is how
/// users and tests compare the final models of two runs.
pub fn model_sha256(arrays: &ArrayRecord) -> String {
    let mut hasher = Sha256::new();
    for (_, array) in arrays.iter() {
        hasher.update(&array.data);
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{Array, MetricRecord, RoundSummary};
    use rand::Rng;

    fn history() -> History {
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", Array::from_slice(&[1.5f32, -2.0]));
        let mut m = MetricRecord::new();
        m.insert("loss", 0.5);
        History {
            rounds: vec![RoundSummary {
                round: 1,
                ..RoundSummary::default()
            }],
            central: vec![(1, m)],
            arrays,
        }
    }

    #[test]
    fn a_checkpoint_reads_back_as_written() {
        let h = history();
        let server = ServerState {
            first: vec![vec![0.5, -1.0]],
            second: vec![vec![0.25, 1.0]],
            clipping_norm: Some(0.7),
        };
        let bytes = encode(3, 1, 42, &h, &server).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(
            back,
            Checkpoint {
                num_rounds: 3,
                completed: 1,
                seed: 42,
                history: h.clone(),
                server,
            }
        );
        assert!(back.check(3, Some(42), &h.arrays).is_ok());
        assert!(back.check(3, None, &h.arrays).is_ok());
    }

    /// A run checkpointed by the build before server optimisers resumes on this one.
    #[test]
    fn a_version_1_checkpoint_reads_with_no_server_state() {
        #[derive(Serialize)]
        struct V1<'a> {
            num_rounds: u64,
            completed: u64,
            seed: u64,
            history: &'a History,
        }
        let h = history();
        let v1 = V1 {
            num_rounds: 3,
            completed: 2,
            seed: 9,
            history: &h,
        };
        let bytes = codec::encode_sealed(&Bincode, CHECKPOINT_KIND, 1, &v1).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!((back.completed, back.seed), (2, 9));
        assert_eq!(back.history, h);
        assert_eq!(back.server, ServerState::default());
    }

    #[test]
    fn newer_versions_other_kinds_and_garbage_are_refused() {
        let body = Bincode.encode("x", &5u64).unwrap();
        let newer = codec::seal(CHECKPOINT_KIND, CHECKPOINT_VERSION + 1, &body);
        let e = decode(&newer).unwrap_err().to_string();
        assert!(e.contains("is newer than this build reads"), "{e}");
        let zero = codec::seal(CHECKPOINT_KIND, 0, &body);
        assert!(decode(&zero).unwrap_err().to_string().contains("unknown"));
        let other = codec::seal("message", 1, &body);
        assert!(decode(&other).is_err());
        assert!(decode(b"not a checkpoint").is_err());
    }

    #[test]
    fn a_checkpoint_of_another_run_setup_is_refused() {
        let h = history();
        let c = decode(&encode(3, 1, 42, &h, &ServerState::default()).unwrap()).unwrap();
        let e = c.check(5, None, &h.arrays).unwrap_err().to_string();
        assert!(e.contains("run of 3 rounds, but this run has 5"), "{e}");
        let e = c.check(3, Some(7), &h.arrays).unwrap_err().to_string();
        assert!(e.contains("seed 42"), "{e}");
        let mut bigger = ArrayRecord::new();
        bigger.insert("w", Array::from_slice(&[0f32; 3]));
        let e = c.check(3, Some(42), &bigger).unwrap_err().to_string();
        assert!(e.contains("model changed"), "{e}");
    }

    #[test]
    fn round_rngs_depend_on_seed_and_round_only() {
        let draw = |seed, round| round_rng(seed, round).random::<u64>();
        assert_eq!(draw(1, 2), draw(1, 2));
        assert_ne!(draw(1, 2), draw(1, 3));
        assert_ne!(draw(1, 2), draw(2, 2));
    }

    #[test]
    fn model_digest_is_over_the_data() {
        let h = history();
        assert_eq!(model_sha256(&h.arrays), model_sha256(&h.arrays.clone()));
        let mut other = ArrayRecord::new();
        other.insert("w", Array::from_slice(&[1.5f32, -2.5]));
        assert_ne!(model_sha256(&h.arrays), model_sha256(&other));
        assert_eq!(model_sha256(&ArrayRecord::new()).len(), 64);
    }
}
