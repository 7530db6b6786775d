//! Login attempt rate limiting, per user name and per peer address. Pure: every operation
//! takes the time (Unix seconds), so a test can walk a lockout to the second.
//!
//! Every attempt counts as a failure when it begins and is taken back if it succeeds, so a
//! burst of concurrent guesses is limited as much as a slow series: the sixth of six
//! parallel attempts is refused before any of them has been checked. Once a user or address
//! has `max_failures` attempts within `window_s`, the next one locks it for `lockout_s`,
//! doubling with every lockout in a row up to `max_lockout_s`; while locked, every login is
//! refused, even with the right password, which is what makes guessing pointless.

use super::secrets::token_digest;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

/// How many failed logins are tolerated, and for how long a user or address is then locked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottlePolicy {
    /// Failed logins per user name within `window_s` before it is locked.
    pub max_failures_per_user: u32,
    /// Failed logins from one address within `window_s` before it is locked: larger, since
    /// several users may share an address (a NAT, a CI runner).
    pub max_failures_per_address: u32,
    /// Seconds a failure is remembered.
    pub window_s: f64,
    /// Seconds of the first lockout; each further lockout in a row doubles it.
    pub lockout_s: f64,
    /// The longest lockout.
    pub max_lockout_s: f64,
    /// Users and addresses remembered at once; beyond it the longest-quiet one is forgotten,
    /// so a flood of made-up names cannot grow the table without bound.
    pub max_tracked: usize,
}

impl Default for ThrottlePolicy {
    /// 5 failures a minute per user, 30 per address, then 1 minute locked, doubling up to
    /// 64 minutes; 100,000 users and addresses remembered.
    fn default() -> Self {
        ThrottlePolicy {
            max_failures_per_user: 5,
            max_failures_per_address: 30,
            window_s: 60.0,
            lockout_s: 60.0,
            max_lockout_s: 64.0 * 60.0,
            max_tracked: 100_000,
        }
    }
}

/// Whose attempts a record counts. User names are kept as their sha256, so a record is
/// small whatever name an attacker sends, and unknown names are counted like real ones
/// (a lockout must not reveal which users exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    User([u8; 32]),
    Address(IpAddr),
}

#[derive(Debug, Default)]
struct Record {
    /// Times of the failures within the window, oldest first.
    failures: VecDeque<f64>,
    /// No attempt before this time.
    locked_until: f64,
    /// Lockouts in a row: the exponent of the next lockout.
    lockouts: u32,
    /// The last attempt, for forgetting quiet records.
    last_seen: f64,
}

/// An admitted login attempt, counted as a failure until [`LoginThrottle::finish`] says
/// otherwise or [`LoginThrottle::cancel`] takes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    keys: [Option<Key>; 2],
}

/// The failure records of a SuperLink; see the module doc.
#[derive(Debug)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    records: HashMap<Key, Record>,
}

impl LoginThrottle {
    /// No failures yet.
    pub fn new(policy: ThrottlePolicy) -> LoginThrottle {
        LoginThrottle {
            policy,
            records: HashMap::new(),
        }
    }

    /// Admits an attempt for `user` (absent for API tokens) from `peer` (absent when the
    /// transport does not know it), counting it as a failure.
    ///
    /// # Errors
    /// The whole seconds until the user or address may try again, when either is locked or
    /// has used up its failures (which locks it now).
    pub fn begin(
        &mut self,
        user: Option<&str>,
        peer: Option<IpAddr>,
        now: f64,
    ) -> Result<Attempt, u64> {
        let keys = [
            user.map(|u| Key::User(token_digest(u))),
            peer.map(Key::Address),
        ];
        let mut retry_after = 0.0_f64;
        for key in keys.into_iter().flatten() {
            let limit = self.limit(key);
            let policy = self.policy;
            let record = self.record(key, now);
            while record
                .failures
                .front()
                .is_some_and(|t| now - t >= policy.window_s)
            {
                record.failures.pop_front();
            }
            if now < record.locked_until {
                retry_after = retry_after.max(record.locked_until - now);
            } else if record.failures.len() >= limit {
                let exponent = record.lockouts.min(30);
                let lockout = (policy.lockout_s * f64::from(1u32 << exponent))
                    .min(policy.max_lockout_s)
                    .max(1.0);
                record.locked_until = now + lockout;
                record.lockouts = record.lockouts.saturating_add(1);
                record.failures.clear();
                retry_after = retry_after.max(lockout);
            }
        }
        if retry_after > 0.0 {
            return Err(whole_seconds(retry_after));
        }
        for key in keys.into_iter().flatten() {
            self.record(key, now).failures.push_back(now);
        }
        Ok(Attempt { keys })
    }

    /// Settles an attempt. A success forgets the user's failures and lockouts, and takes
    /// the attempt back from the address's count; a failure stays counted.
    pub fn finish(&mut self, attempt: Attempt, succeeded: bool) {
        if !succeeded {
            return;
        }
        let [user, peer] = attempt.keys;
        if let Some(user) = user {
            self.records.remove(&user);
        }
        if let Some(peer) = peer {
            self.take_back(peer);
        }
    }

    /// Takes back an attempt that was never checked (refused because too many logins were
    /// in progress): it says nothing about the password.
    pub fn cancel(&mut self, attempt: Attempt) {
        for key in attempt.keys.into_iter().flatten() {
            self.take_back(key);
        }
    }

    /// Users and addresses remembered, for tests.
    pub fn tracked(&self) -> usize {
        self.records.len()
    }

    fn limit(&self, key: Key) -> usize {
        let limit = match key {
            Key::User(_) => self.policy.max_failures_per_user,
            Key::Address(_) => self.policy.max_failures_per_address,
        };
        usize::try_from(limit).unwrap_or(usize::MAX)
    }

    fn take_back(&mut self, key: Key) {
        if let Some(record) = self.records.get_mut(&key) {
            record.failures.pop_back();
        }
    }

    /// The record of `key`, made if new; making one in a full table first forgets quiet
    /// records, then the longest-quiet one.
    fn record(&mut self, key: Key, now: f64) -> &mut Record {
        if !self.records.contains_key(&key) && self.records.len() >= self.policy.max_tracked {
            self.forget_quiet(now);
            if self.records.len() >= self.policy.max_tracked
                && let Some(oldest) = self
                    .records
                    .iter()
                    .min_by(|a, b| a.1.last_seen.total_cmp(&b.1.last_seen))
                    .map(|(k, _)| *k)
            {
                self.records.remove(&oldest);
            }
        }
        let record = self.records.entry(key).or_default();
        record.last_seen = now;
        record
    }

    /// Forgets records with no failure in the window and no lockout for the longest
    /// lockout since: their next attempt starts afresh.
    fn forget_quiet(&mut self, now: f64) {
        let policy = self.policy;
        self.records.retain(|_, r| {
            now - r.last_seen < policy.window_s
                || now < r.locked_until + policy.max_lockout_s.max(policy.window_s)
        });
    }
}

/// Seconds rounded up, so "retry in N s" is never too early.
fn whole_seconds(s: f64) -> u64 {
    // A lockout is at most `max_lockout_s`, far inside u64.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let whole = s.ceil().max(1.0) as u64;
    whole
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            max_failures_per_user: 3,
            max_failures_per_address: 5,
            window_s: 60.0,
            lockout_s: 60.0,
            max_lockout_s: 200.0,
            max_tracked: 100,
        }
    }

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    fn fail(t: &mut LoginThrottle, user: &str, peer: IpAddr, now: f64) {
        let attempt = t.begin(Some(user), Some(peer), now).unwrap();
        t.finish(attempt, false);
    }

    #[test]
    fn a_user_is_locked_after_k_failures_even_for_the_right_password() {
        let mut t = LoginThrottle::new(policy());
        for i in 0..3 {
            fail(&mut t, "alice", A, 1000.0 + f64::from(i));
        }
        // The fourth attempt (the right password, say) is refused before it is checked,
        // from another address too, with the time to wait.
        assert_eq!(t.begin(Some("alice"), Some(B), 1010.0), Err(60));
        assert_eq!(t.begin(Some("alice"), Some(A), 1069.5), Err(1));
        // Other users are not affected.
        assert!(t.begin(Some("bob"), Some(B), 1010.0).is_ok());
        // After the lockout: admitted, and a success forgets the failures.
        let ok = t.begin(Some("alice"), Some(A), 1070.0).unwrap();
        t.finish(ok, true);
        for i in 0..3 {
            fail(&mut t, "alice", A, 1071.0 + f64::from(i));
        }
        assert_eq!(
            t.begin(Some("alice"), Some(B), 1080.0),
            Err(60),
            "the first lockout after a success is short again"
        );
    }

    #[test]
    fn lockouts_in_a_row_double_up_to_the_longest() {
        let mut t = LoginThrottle::new(policy());
        let mut now = 0.0;
        for expected in [60, 120, 200, 200] {
            for _ in 0..3 {
                fail(&mut t, "alice", A, now);
            }
            assert_eq!(t.begin(Some("alice"), None, now), Err(expected));
            now += f64::from(u32::try_from(expected).unwrap());
        }
    }

    #[test]
    fn failures_older_than_the_window_are_forgotten() {
        let mut t = LoginThrottle::new(policy());
        fail(&mut t, "alice", A, 0.0);
        fail(&mut t, "alice", A, 1.0);
        fail(&mut t, "alice", A, 61.0);
        assert!(t.begin(Some("alice"), Some(A), 61.5).is_ok());
    }

    #[test]
    fn concurrent_attempts_count_before_they_finish() {
        let mut t = LoginThrottle::new(policy());
        let held: Vec<Attempt> = (0..3)
            .map(|_| t.begin(Some("alice"), Some(A), 5.0).unwrap())
            .collect();
        assert_eq!(t.begin(Some("alice"), Some(A), 5.0), Err(60));
        // Attempts the gate refused say nothing about the password: taken back.
        let mut t = LoginThrottle::new(policy());
        for _ in 0..10 {
            let a = t.begin(Some("alice"), Some(A), 5.0).unwrap();
            t.cancel(a);
        }
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn an_address_is_locked_across_user_names() {
        let mut t = LoginThrottle::new(policy());
        for name in ["a", "b", "c", "d", "e"] {
            fail(&mut t, name, A, 0.0);
        }
        assert_eq!(t.begin(Some("f"), Some(A), 1.0), Err(60));
        assert_eq!(t.begin(None, Some(A), 1.5), Err(60), "API tokens too");
        assert!(t.begin(Some("f"), Some(B), 1.0).is_ok());
        // A success from the address takes its own attempt back, not the others.
        let ok = t.begin(Some("g"), Some(B), 2.0).unwrap();
        t.finish(ok, true);
    }

    #[test]
    fn the_table_stays_bounded_under_made_up_names() {
        let mut t = LoginThrottle::new(ThrottlePolicy {
            max_failures_per_address: u32::MAX,
            ..policy()
        });
        for i in 0..1000 {
            fail(&mut t, &format!("user-{i}"), A, f64::from(i) * 0.001);
        }
        assert!(t.tracked() <= 100, "{}", t.tracked());
    }
}
