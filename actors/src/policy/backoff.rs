//! Reconnect policy, as pure arithmetic: how long to wait before the next attempt, and when
//! to give up. No clock, no I/O: the caller passes elapsed time and a random sample, so the
//! policy is tested exactly and the SuperNode stays a thin loop around it.
//!
//! Delays grow exponentially up to a cap and are jittered downwards (a delay `d` becomes a
//! value in `[d * (1 - jitter), d]`), so a SuperLink coming back is not hit by every node in
//! the same millisecond. The budget mirrors Flower's `--max-retries` (retries after the first
//! attempt) and `--max-wait-time` (total time spent trying); both unset means "forever".

use std::fmt;
use std::time::Duration;

/// Exponential backoff with a cap and downward jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry, before jitter.
    pub initial: Duration,
    /// Largest delay, before jitter; a SuperLink back after an hour is noticed within it.
    pub max: Duration,
    /// Growth of the delay per retry.
    pub multiplier: f64,
    /// Share of a delay that may be cut off at random, in [0, 1].
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Checks the settings; the error says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial.is_zero() || self.max < self.initial {
            return Err(format!(
                "backoff delays must satisfy 0 < initial <= max (got {:?} and {:?})",
                self.initial, self.max
            ));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(format!(
                "backoff multiplier must be 1 or more (got {})",
                self.multiplier
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(format!(
                "backoff jitter must be in [0, 1] (got {})",
                self.jitter
            ));
        }
        Ok(())
    }

    /// Delay before retry number `retry` (0 = the first retry); `sample` is uniform in
    /// [0, 1).
    pub fn delay(&self, retry: u32, sample: f64) -> Duration {
        // Exponent capped so the float stays finite; the cap on the delay does the rest.
        let growth = self.multiplier.powi(retry.min(64) as i32);
        let full = self.initial.as_secs_f64() * growth;
        let capped = full.min(self.max.as_secs_f64());
        let cut = self.jitter * sample.clamp(0.0, 1.0);
        Duration::from_secs_f64(capped * (1.0 - cut))
    }
}

/// Which limit ended the retrying, named as the SuperNode's flags name it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// `--max-retries` was reached: this many retries after the first failed attempt.
    Retries(u32),
    /// `--max-wait-time` was reached: the outage lasted this long.
    WaitTime(Duration),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Retries(n) => write!(f, "--max-retries {n}"),
            Limit::WaitTime(d) => write!(f, "--max-wait-time {}", d.as_secs_f64()),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDecision {
    /// Try again once this delay (backoff with jitter) has passed.
    RetryAfter(Duration),
    /// Stop retrying: the budget is spent, and this is the limit that spent it.
    GiveUp(Limit),
}

/// How long a SuperNode keeps trying to reach its SuperLink in one outage.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryBudget {
    /// Retries after the first failed attempt; `None` retries forever.
    pub max_retries: Option<u32>,
    /// Time from the first failed attempt after which no new attempt starts; `None` = no
    /// limit.
    pub max_wait_time: Option<Duration>,
}

impl RetryBudget {
    /// The decision after `failures` failed attempts (1 after the first), `elapsed` since the
    /// outage began. The last delay is shortened so the final attempt happens at the deadline
    /// rather than after it.
    pub fn after_failure(
        &self,
        backoff: &Backoff,
        failures: u32,
        elapsed: Duration,
        sample: f64,
    ) -> RetryDecision {
        if let Some(max) = self.max_retries
            && failures > max
        {
            return RetryDecision::GiveUp(Limit::Retries(max));
        }
        let delay = backoff.delay(failures.saturating_sub(1), sample);
        match self.max_wait_time {
            Some(max) if elapsed >= max => RetryDecision::GiveUp(Limit::WaitTime(max)),
            Some(max) => RetryDecision::RetryAfter(delay.min(max - elapsed)),
            None => RetryDecision::RetryAfter(delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        let got: Vec<Duration> = (0..8).map(|r| b.delay(r, 0.5)).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 30, 30, 30].map(S));
        assert_eq!(
            b.delay(u32::MAX, 0.0),
            S(30),
            "huge retry counts stay capped"
        );
    }

    #[test]
    fn jitter_only_shortens_and_stays_in_its_band() {
        let b = Backoff::default();
        for retry in 0..10 {
            let full = b.delay(retry, 0.0);
            for i in 0..100 {
                let d = b.delay(retry, f64::from(i) / 100.0);
                assert!(d <= full && d >= full.mul_f64(0.5), "{d:?} vs {full:?}");
            }
        }
        assert!(b.delay(20, 0.999) >= S(15));
    }

    #[test]
    fn max_retries_counts_retries_after_the_first_attempt() {
        let budget = RetryBudget {
            max_retries: Some(2),
            max_wait_time: None,
        };
        let b = Backoff::default();
        assert!(matches!(
            budget.after_failure(&b, 1, S(0), 0.0),
            RetryDecision::RetryAfter(_)
        ));
        assert!(matches!(
            budget.after_failure(&b, 2, S(1), 0.0),
            RetryDecision::RetryAfter(_)
        ));
        assert_eq!(
            budget.after_failure(&b, 3, S(3), 0.0),
            RetryDecision::GiveUp(Limit::Retries(2))
        );
        let none = RetryBudget {
            max_retries: Some(0),
            max_wait_time: None,
        };
        assert_eq!(
            none.after_failure(&b, 1, S(0), 0.0),
            RetryDecision::GiveUp(Limit::Retries(0))
        );
    }

    #[test]
    fn max_wait_time_shortens_the_last_delay_then_gives_up() {
        let budget = RetryBudget {
            max_retries: None,
            max_wait_time: Some(S(10)),
        };
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::default()
        };
        assert_eq!(
            budget.after_failure(&b, 4, S(7), 0.0),
            RetryDecision::RetryAfter(S(3)),
            "8 s would overshoot the deadline"
        );
        assert_eq!(
            budget.after_failure(&b, 5, S(10), 0.0),
            RetryDecision::GiveUp(Limit::WaitTime(S(10)))
        );
    }

    #[test]
    fn an_unlimited_budget_retries_forever_at_the_cap() {
        let budget = RetryBudget::default();
        assert_eq!(
            budget.after_failure(&Backoff::default(), 1_000_000, S(1_000_000), 0.0),
            RetryDecision::RetryAfter(S(30))
        );
    }

    #[test]
    fn limits_are_named_like_the_flags() {
        assert_eq!(Limit::Retries(3).to_string(), "--max-retries 3");
        assert_eq!(
            Limit::WaitTime(Duration::from_millis(2500)).to_string(),
            "--max-wait-time 2.5"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let b = Backoff {
            initial: S(0),
            ..Backoff::default()
        };
        assert!(b.validate().is_err());
        let b = Backoff {
            multiplier: 0.5,
            ..Backoff::default()
        };
        assert!(b.validate().is_err());
        assert!(Backoff::default().validate().is_ok());
    }
}
