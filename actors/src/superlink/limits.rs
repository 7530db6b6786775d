//! The limits an operator sets on runs, and the decisions that apply them, free of I/O.
//!
//! - **Resumes.** A restarted SuperLink resumes every unfinished run. A run whose ServerApp
//!   crashes the SuperLink (say, it aborts on an allocation) would then crash every start
//!   after it, with no way out but editing the database. So each start that resumes a run
//!   counts it (`RunStore::count_resume`, durable before the ServerApp runs again), and a
//!   run already resumed `max_resume_attempts` times is failed instead, with a reason
//!   saying why. A clean shutdown sets the count back to 0: only resumes that ended in a
//!   crash count.
//! - **Model size.** A built-in app whose run config sets its model's size reports it
//!   (`ServerApp::model_size`); a run asking for more than `max_model_bytes` is refused
//!   when it is submitted (and not resumed), so that accepted input cannot abort the
//!   SuperLink on allocation.

use crate::state::Retention;
use floret_core::ModelSize;

/// The default of `--max-resume-attempts`: a crash on resume once or twice may be bad
/// luck (an unrelated failure, a host reboot); three in a row is the run.
pub const DEFAULT_MAX_RESUME_ATTEMPTS: u32 = 3;

/// The default of `--max-model-bytes`: 900 MiB. SQLite stores a value of at most 1 GB, and
/// a run's broadcast and checkpoint are each one value holding the whole model plus its
/// envelope, so a larger model fails in the durable state anyway. Models federated in
/// practice are far smaller (ResNet-50: 100 MB, BERT-base: 440 MB in float32; LoRA adapters
/// of large language models: tens of MB), while the SuperLink holds several copies of the
/// model at once (the broadcast, the running sum, the checkpoint).
pub const DEFAULT_MAX_MODEL_BYTES: u64 = 900 * 1024 * 1024;

/// What the SuperLink allows a run (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunLimits {
    /// How many times in a row an unfinished run is resumed by a restarted SuperLink
    /// before it is failed instead; 0 fails every run a SuperLink finds unfinished.
    pub max_resume_attempts: u32,
    /// The largest model, in bytes, a run's config may ask for.
    pub max_model_bytes: u64,
    /// How long and how many finished runs are kept (`--retention`, `--retention-runs`).
    pub retention: Retention,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_resume_attempts: DEFAULT_MAX_RESUME_ATTEMPTS,
            max_model_bytes: DEFAULT_MAX_MODEL_BYTES,
            retention: Retention::default(),
        }
    }
}

/// Whether a restarted SuperLink resumes `run_id`, given that this start is its
/// `attempt`-th resume in a row (as `RunStore::count_resume` counted it): `Err` with the
/// reason the run fails with once it has been resumed `max` times already.
pub fn resume_verdict(run_id: u64, attempt: u32, max: u32) -> Result<(), String> {
    if attempt <= max {
        return Ok(());
    }
    if max == 0 {
        return Err(format!(
            "run {run_id} was not resumed after a SuperLink restart: this SuperLink resumes \
             no runs (--max-resume-attempts 0)"
        ));
    }
    let times = if max == 1 { "time" } else { "times" };
    Err(format!(
        "run {run_id} was not resumed again: it crashed the SuperLink {max} {times} \
         (it was resumed {max} {times} after a SuperLink restart and the SuperLink went down \
         without a clean shutdown each time); fix the run's config or app and submit it \
         anew, or raise --max-resume-attempts (now {max})"
    ))
}

/// Checks a run's model against `max_bytes`: `Err` names what sets its size, the limit and
/// the flag that raises it.
pub fn check_model_size(size: &ModelSize, max_bytes: u64) -> Result<(), String> {
    if size.bytes <= max_bytes {
        return Ok(());
    }
    Err(format!(
        "run config {} asks for a model of {} bytes, over this SuperLink's limit of {} bytes \
         (--max-model-bytes): make the model smaller, or start the SuperLink with a larger \
         --max-model-bytes",
        size.set_by, size.bytes, max_bytes
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_resumed_up_to_the_limit_and_then_failed() {
        assert_eq!(resume_verdict(7, 1, 3), Ok(()));
        assert_eq!(resume_verdict(7, 3, 3), Ok(()));
        let reason = resume_verdict(7, 4, 3).unwrap_err();
        assert!(
            reason.starts_with("run 7 was not resumed again: it crashed the SuperLink 3 times"),
            "{reason}"
        );
        assert!(reason.contains("--max-resume-attempts (now 3)"), "{reason}");
    }

    #[test]
    fn a_limit_of_zero_resumes_nothing() {
        let reason = resume_verdict(1, 1, 0).unwrap_err();
        assert!(
            reason.contains("resumes no runs (--max-resume-attempts 0)"),
            "{reason}"
        );
        let reason = resume_verdict(1, 2, 1).unwrap_err();
        assert!(reason.contains("crashed the SuperLink 1 time "), "{reason}");
    }

    #[test]
    fn a_model_over_the_limit_is_refused_naming_the_key_the_limit_and_the_flag() {
        let size = ModelSize {
            bytes: 8_000_000_000,
            set_by: "total-params=2000000000 (float32)".into(),
        };
        let err = check_model_size(&size, DEFAULT_MAX_MODEL_BYTES).unwrap_err();
        assert!(err.contains("total-params=2000000000"), "{err}");
        assert!(err.contains(&DEFAULT_MAX_MODEL_BYTES.to_string()), "{err}");
        assert!(err.contains("--max-model-bytes"), "{err}");
        let at_limit = ModelSize {
            bytes: DEFAULT_MAX_MODEL_BYTES,
            ..size
        };
        assert_eq!(check_model_size(&at_limit, DEFAULT_MAX_MODEL_BYTES), Ok(()));
    }
}
