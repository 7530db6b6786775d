//! Heartbeat and liveness policy, as pure arithmetic: no clock, no I/O.
//!
//! A SuperNode promises a heartbeat interval `I` when it registers. It beats every
//! `beat_factor * I` (Flower: 0.8), jittered by `+-jitter` (Flower: 10 %) so that ten
//! thousand nodes started together do not beat in lockstep. Each beat renews its lease to
//! `now + patience * I` (Flower: 2 intervals); the SuperLink's sweeper declares a node
//! offline once `now` is past its lease. A beat that arrives late by almost a whole interval
//! therefore still keeps the node online, while a crashed node is noticed within
//! `patience * I + sweep_interval`.

use std::time::Duration;

/// Flower's default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);

/// Longest interval a node may ask for: a day. Bounds the leases so they stay finite and a
/// misconfigured node cannot stay "online" for years without a sound.
pub const MAX_HEARTBEAT_INTERVAL_SECS: f64 = 86_400.0;

/// The factors of the heartbeat protocol, shared by the SuperLink (patience, sweep) and
/// the SuperNode (beat factor, jitter).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeartbeatPolicy {
    /// Intervals a node may stay silent before it counts as offline.
    pub patience: f64,
    /// Share of the interval after which a node beats, so a beat lands well before its
    /// lease ends even when the network is slow.
    pub beat_factor: f64,
    /// Relative spread of the beat delay (0.1 = +-10 %), to de-synchronise nodes.
    pub jitter: f64,
    /// How often the SuperLink looks for overdue nodes and expired messages; bounds how
    /// late after its lease a dead node is noticed.
    pub sweep_interval: Duration,
}

impl Default for HeartbeatPolicy {
    fn default() -> Self {
        HeartbeatPolicy {
            patience: 2.0,
            beat_factor: 0.8,
            jitter: 0.1,
            sweep_interval: Duration::from_secs(1),
        }
    }
}

impl HeartbeatPolicy {
    /// Checks that a node following this policy stays online while it beats: the latest
    /// beat (`beat_factor * (1 + jitter)` intervals) must come before the lease ends.
    pub fn validate(&self) -> Result<(), String> {
        let finite = [self.patience, self.beat_factor, self.jitter]
            .iter()
            .all(|v| v.is_finite());
        if !finite || self.patience <= 0.0 || self.beat_factor <= 0.0 {
            return Err(format!(
                "heartbeat patience and beat factor must be positive numbers (got {} and {})",
                self.patience, self.beat_factor
            ));
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(format!(
                "heartbeat jitter must be in [0, 1) (got {}); Flower uses 0.1",
                self.jitter
            ));
        }
        if self.beat_factor * (1.0 + self.jitter) >= self.patience {
            return Err(format!(
                "a node beating every {} intervals (+-{}) would miss its lease of {} intervals: \
                 lower the beat factor or raise the patience",
                self.beat_factor, self.jitter, self.patience
            ));
        }
        if self.sweep_interval.is_zero() {
            return Err("the sweep interval must be longer than zero (e.g. 1 s)".into());
        }
        Ok(())
    }

    /// Until when (Unix seconds) a node that beats at `now` with `interval_secs` counts as
    /// online.
    pub fn online_until(&self, now: f64, interval_secs: f64) -> f64 {
        now + self.patience * interval_secs
    }

    /// How long a node waits before its next beat; `sample` is uniform in [0, 1) and picks
    /// the point inside the jitter band.
    pub fn beat_delay(&self, interval: Duration, sample: f64) -> Duration {
        let spread = self.jitter * (2.0 * sample.clamp(0.0, 1.0) - 1.0);
        interval.mul_f64((self.beat_factor * (1.0 + spread)).max(0.0))
    }
}

/// True once `now` is past a node's lease.
pub fn is_offline(online_until: f64, now: f64) -> bool {
    now > online_until
}

/// Checks the interval a node asks for (seconds, as it travels on the wire).
pub fn check_interval(interval_secs: f64) -> Result<(), String> {
    if interval_secs.is_finite()
        && interval_secs > 0.0
        && interval_secs <= MAX_HEARTBEAT_INTERVAL_SECS
    {
        Ok(())
    } else {
        Err(format!(
            "heartbeat interval must be between 0 and {MAX_HEARTBEAT_INTERVAL_SECS} seconds \
             (got {interval_secs}); Flower's default is 30"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_secs(30);

    #[test]
    fn defaults_are_flowers_and_valid() {
        let p = HeartbeatPolicy::default();
        assert_eq!((p.patience, p.beat_factor, p.jitter), (2.0, 0.8, 0.1));
        assert_eq!(p.validate(), Ok(()));
    }

    #[test]
    fn beat_delay_stays_inside_the_jitter_band() {
        let p = HeartbeatPolicy::default();
        assert_eq!(p.beat_delay(I, 0.0), Duration::from_secs(30).mul_f64(0.72));
        assert_eq!(p.beat_delay(I, 0.5), Duration::from_secs(24));
        for i in 0..=100 {
            let d = p.beat_delay(I, f64::from(i) / 100.0).as_secs_f64();
            assert!((21.6 - 1e-9..=26.4 + 1e-9).contains(&d), "{d}");
        }
    }

    /// Virtual time: a node beating with the worst jitter every time never goes offline;
    /// once it stops, it goes offline exactly `patience` intervals after its last beat.
    #[test]
    fn a_beating_node_stays_online_and_a_silent_one_goes_offline_after_two_intervals() {
        let p = HeartbeatPolicy::default();
        let interval = I.as_secs_f64();
        let mut now = 1_000.0;
        let mut lease = p.online_until(now, interval);
        for beat in 0..1_000 {
            let sample = if beat % 2 == 0 { 0.999_999 } else { 0.0 };
            now += p.beat_delay(I, sample).as_secs_f64();
            assert!(!is_offline(lease, now), "offline at beat {beat}");
            lease = p.online_until(now, interval);
        }
        let last_beat = now;
        assert!(!is_offline(lease, last_beat + 2.0 * interval));
        assert!(is_offline(lease, last_beat + 2.0 * interval + 0.001));
    }

    #[test]
    fn a_policy_whose_beats_miss_the_lease_is_refused() {
        let p = HeartbeatPolicy {
            patience: 1.0,
            beat_factor: 0.95,
            ..HeartbeatPolicy::default()
        };
        assert!(p.validate().unwrap_err().contains("miss its lease"));
        let p = HeartbeatPolicy {
            jitter: 1.5,
            ..HeartbeatPolicy::default()
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn intervals_must_be_positive_and_bounded() {
        assert!(check_interval(30.0).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e9] {
            assert!(check_interval(bad).is_err(), "{bad}");
        }
    }
}
