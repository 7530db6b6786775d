//! The decisions of a `FaultyFleet`, free of I/O and of clocks: which call fails where,
//! how long it waits, what happens to a delivery, when the link is down and how long a
//! payload takes at the bandwidth cap. Time comes in as offsets from the link's start, so
//! every decision is a plain function of the plan, the link number and what came before.
//!
//! Per-call and per-delivery faults are drawn from the n-th call or delivery of the link:
//! replayable as long as the calls come in the same order (concurrent calls of one node,
//! heartbeat against push, may swap places between runs). Dropouts are keyed on the step
//! instead, so they do not depend on ordering at all.

use super::plan::{Call, Delay, FaultPlan};
use floret_core::seeded::{fnv1a, mix, unit};
use std::time::Duration;

/// Where a dropped call is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropPoint {
    /// Before the SuperLink sees it.
    Request,
    /// After the SuperLink carried it out.
    Response,
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CallFaults {
    /// Waited before the call goes through: the plan's delay, jitter drawn.
    pub delay: Duration,
    /// Where the call is lost, if it is; `None`: it goes through.
    pub drop: Option<DropPoint>,
    /// Pushes only: the request reaches the SuperLink twice.
    pub duplicate: bool,
    /// Pushes only: held back in the network for at most this long.
    pub hold: Option<Duration>,
}

/// What happens to one instruction on the subscribe stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Delivery {
    /// Never reaches the node; the SuperLink believes it delivered.
    Lost,
    /// Handed to the node `copies` times (1 or 2) after `delay`.
    Delivered {
        /// Waited before the copies are handed over: the stream's delay, jitter drawn.
        delay: Duration,
        /// 1, or 2 for a duplicate.
        copies: u8,
    },
}

/// Separate draws for separate questions about the same call.
#[derive(Clone, Copy)]
enum Draw {
    Drop = 1,
    Delay,
    Duplicate,
    Hold,
    Lost,
    Copies,
    DeliveryDelay,
    Dropout,
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Decider {
    plan: FaultPlan,
    link: u64,
    calls: u64,
    deliveries: u64,
    /// When (offset from the link's start) the link has carried every payload so far.
    busy_until: Duration,
}

impl Decider {
    /// Decisions for link number `link` (a node's index in a test), so that links with
    /// the same plan fail differently.
    pub fn new(plan: FaultPlan, link: u64) -> Decider {
        Decider {
            plan,
            link,
            calls: 0,
            deliveries: 0,
            busy_until: Duration::ZERO,
        }
    }

    /// The plan the decisions are drawn from.
    pub fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    fn draw(&self, what: Draw, index: u64) -> f64 {
        unit_of(&[self.plan.seed, self.link, what as u64, index])
    }

    fn delay(&self, delay: Delay, what: Draw, index: u64) -> Duration {
        delay.fixed + delay.jitter.mul_f64(self.draw(what, index))
    }

    /// The faults of the link's next call, a `call`.
    pub fn call(&mut self, call: Call) -> CallFaults {
        let i = self.calls;
        self.calls += 1;
        let plan = &self.plan;
        let mut faults = CallFaults {
            delay: self.delay(plan.delay, Draw::Delay, i),
            ..CallFaults::default()
        };
        if plan.drops.calls.contains(&call) {
            let d = self.draw(Draw::Drop, i);
            if d < plan.drops.request {
                faults.drop = Some(DropPoint::Request);
            } else if d < plan.drops.request + plan.drops.response {
                faults.drop = Some(DropPoint::Response);
            }
        }
        if call == Call::Push && faults.drop != Some(DropPoint::Request) {
            faults.duplicate = self.draw(Draw::Duplicate, i) < plan.duplicate_push;
            // A held push is answered at once, so it cannot also lose its response.
            if faults.drop.is_none() && self.draw(Draw::Hold, i) < plan.reorder.rate {
                faults.hold = Some(plan.reorder.hold);
            }
        }
        faults
    }

    /// What happens to the link's next delivery on the subscribe stream.
    pub fn delivery(&mut self) -> Delivery {
        let i = self.deliveries;
        self.deliveries += 1;
        let stream = self.plan.stream;
        if self.draw(Draw::Lost, i) < stream.drop {
            return Delivery::Lost;
        }
        let copies = if self.draw(Draw::Copies, i) < stream.duplicate {
            2
        } else {
            1
        };
        Delivery::Delivered {
            delay: self.delay(stream.delay, Draw::DeliveryDelay, i),
            copies,
        }
    }

    /// How long the link goes down when the first instruction of step (`group_id`,
    /// `message_type`) reaches it; `None` when the node stays. Keyed on the step alone.
    pub fn drops_out(&self, group_id: &str, message_type: &str) -> Option<Duration> {
        let dropout = self.plan.dropout.as_ref()?;
        if !dropout.groups.is_empty() && !dropout.groups.iter().any(|g| g == group_id) {
            return None;
        }
        let key = [
            self.plan.seed,
            self.link,
            Draw::Dropout as u64,
            fnv1a(group_id),
            fnv1a(message_type),
        ];
        (unit_of(&key) < dropout.rate).then_some(dropout.length)
    }

    /// How much longer the link is down at `now` by the scheduled outages, if it is.
    pub fn outage_at(&self, now: Duration) -> Option<Duration> {
        self.plan
            .outages
            .iter()
            .filter(|o| o.after <= now && now < o.after + o.length)
            .map(|o| o.after + o.length - now)
            .max()
    }

    /// When the next scheduled outage after `now` begins.
    pub fn next_outage(&self, now: Duration) -> Option<Duration> {
        self.plan
            .outages
            .iter()
            .map(|o| o.after)
            .filter(|&after| after > now)
            .min()
    }

    /// How long from `now` until `bytes` of payload have crossed the link, queued behind
    /// the payloads before them. Zero without a bandwidth cap.
    pub fn transfer(&mut self, now: Duration, bytes: usize) -> Duration {
        let Some(rate) = self.plan.bandwidth else {
            return Duration::ZERO;
        };
        if bytes == 0 {
            return Duration::ZERO;
        }
        let start = self.busy_until.max(now);
        self.busy_until = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
        self.busy_until - now
    }
}

/// A uniform draw in [0, 1) determined by `keys`: stateless, so that the same seed replays
/// the same faults whatever else the test does, and a test can ask in advance what a given
/// decision will be.
fn unit_of(keys: &[u64]) -> f64 {
    unit(
        keys.iter()
            .fold(0x9e37_79b9_7f4a_7c15, |acc, &k| mix(acc ^ mix(k))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faulty_fleet::plan::{Dropout, Drops, Outage, Reorder, StreamFaults};

    fn plan() -> FaultPlan {
        FaultPlan {
            seed: 42,
            drops: Drops {
                request: 0.1,
                response: 0.2,
                calls: Call::ALL.to_vec(),
            },
            delay: Delay {
                fixed: Duration::from_millis(10),
                jitter: Duration::from_millis(20),
            },
            duplicate_push: 0.3,
            reorder: Reorder {
                rate: 0.25,
                hold: Duration::from_millis(500),
            },
            stream: StreamFaults {
                drop: 0.1,
                duplicate: 0.2,
                delay: Delay::default(),
            },
            ..FaultPlan::default()
        }
    }

    fn calls(d: &mut Decider, n: usize, call: Call) -> Vec<CallFaults> {
        (0..n).map(|_| d.call(call)).collect()
    }

    #[test]
    fn the_same_seed_and_link_replay_the_same_faults() {
        let a = calls(&mut Decider::new(plan(), 3), 200, Call::Push);
        assert_eq!(a, calls(&mut Decider::new(plan(), 3), 200, Call::Push));
        assert_ne!(a, calls(&mut Decider::new(plan(), 4), 200, Call::Push));
        let reseeded = FaultPlan { seed: 43, ..plan() };
        assert_ne!(a, calls(&mut Decider::new(reseeded, 3), 200, Call::Push));
    }

    #[test]
    fn fault_rates_follow_the_plan() {
        let faults = calls(&mut Decider::new(plan(), 1), 10_000, Call::Push);
        let count = |f: &dyn Fn(&CallFaults) -> bool| faults.iter().filter(|c| f(c)).count();
        let requests = count(&|c| c.drop == Some(DropPoint::Request));
        let responses = count(&|c| c.drop == Some(DropPoint::Response));
        assert!((800..1_200).contains(&requests), "{requests}");
        assert!((1_750..2_250).contains(&responses), "{responses}");
        // Duplicates are drawn for every push whose request got through.
        let duplicates = count(&|c| c.duplicate);
        assert!((2_450..2_950).contains(&duplicates), "{duplicates}");
        // Holds only where nothing was dropped: 0.25 of 0.7.
        let holds = count(&|c| c.hold.is_some());
        assert!((1_550..1_950).contains(&holds), "{holds}");
        assert_eq!(count(&|c| c.hold.is_some() && c.drop.is_some()), 0);
        assert!(faults.iter().all(|c| {
            c.delay >= Duration::from_millis(10) && c.delay <= Duration::from_millis(30)
        }));
    }

    #[test]
    fn only_pushes_are_duplicated_or_held_and_drops_only_hit_the_listed_calls() {
        let mut p = plan();
        p.drops.calls = vec![Call::Push];
        let beats = calls(&mut Decider::new(p, 1), 1_000, Call::Heartbeat);
        assert!(
            beats
                .iter()
                .all(|c| c.drop.is_none() && !c.duplicate && c.hold.is_none())
        );
    }

    #[test]
    fn deliveries_are_lost_or_duplicated_at_their_rates() {
        let mut d = Decider::new(plan(), 9);
        let all: Vec<Delivery> = (0..10_000).map(|_| d.delivery()).collect();
        let lost = all.iter().filter(|x| **x == Delivery::Lost).count();
        let twice = all
            .iter()
            .filter(|x| matches!(x, Delivery::Delivered { copies: 2, .. }))
            .count();
        assert!((800..1_200).contains(&lost), "{lost}");
        assert!((1_600..2_000).contains(&twice), "{twice}");
    }

    #[test]
    fn dropouts_are_keyed_on_the_step_and_limited_to_the_listed_groups() {
        let mut p = plan();
        p.dropout = Some(Dropout {
            rate: 0.3,
            length: Duration::from_secs(3),
            groups: vec![],
        });
        let links: Vec<Decider> = (0..1_000).map(|l| Decider::new(p.clone(), l)).collect();
        let out = links
            .iter()
            .filter(|d| d.drops_out("1", "train").is_some())
            .count();
        assert!((250..350).contains(&out), "{out}");
        let both = links
            .iter()
            .filter(|d| d.drops_out("1", "train").is_some() && d.drops_out("2", "train").is_some())
            .count();
        assert!(both < 150, "rounds should hit different links: {both}");
        // Calls in between change nothing.
        let mut busy = links[7].clone();
        let before = busy.drops_out("5", "train");
        calls(&mut busy, 50, Call::Heartbeat);
        assert_eq!(busy.drops_out("5", "train"), before);

        p.dropout = Some(Dropout {
            rate: 1.0,
            length: Duration::from_secs(3),
            groups: vec!["2".into()],
        });
        let d = Decider::new(p, 0);
        assert_eq!(d.drops_out("2", "train"), Some(Duration::from_secs(3)));
        assert_eq!(d.drops_out("3", "train"), None);
    }

    #[test]
    fn scheduled_outages_cover_their_windows() {
        let mut p = FaultPlan::default();
        let s = Duration::from_secs;
        p.outages = vec![
            Outage {
                after: s(10),
                length: s(5),
            },
            Outage {
                after: s(30),
                length: s(1),
            },
        ];
        let d = Decider::new(p, 0);
        assert_eq!(d.outage_at(s(9)), None);
        assert_eq!(d.outage_at(s(10)), Some(s(5)));
        assert_eq!(d.outage_at(s(14)), Some(s(1)));
        assert_eq!(d.outage_at(s(15)), None);
        assert_eq!(d.next_outage(s(0)), Some(s(10)));
        assert_eq!(d.next_outage(s(10)), Some(s(30)));
        assert_eq!(d.next_outage(s(30)), None);
    }

    #[test]
    fn payloads_queue_behind_each_other_at_the_bandwidth_cap() {
        let p = FaultPlan {
            bandwidth: Some(1_000_000),
            ..FaultPlan::default()
        };
        let mut d = Decider::new(p, 0);
        let ms = Duration::from_millis;
        assert_eq!(d.transfer(ms(0), 500_000), ms(500));
        // Sent at 100 ms, behind the first: done at 1.5 s.
        assert_eq!(d.transfer(ms(100), 1_000_000), ms(1_400));
        // The link is idle again by 5 s.
        assert_eq!(d.transfer(ms(5_000), 250_000), ms(250));
        assert_eq!(d.transfer(ms(6_000), 0), Duration::ZERO);
        let mut uncapped = Decider::new(FaultPlan::default(), 0);
        assert_eq!(uncapped.transfer(ms(0), 1 << 30), Duration::ZERO);
    }

    #[test]
    fn unit_is_uniform_and_depends_on_every_key() {
        let below: usize = (0..10_000u64).filter(|&i| unit_of(&[1, i]) < 0.25).count();
        assert!((2_300..2_700).contains(&below), "{below}");
        assert_eq!(unit_of(&[1, 2, 3]), unit_of(&[1, 2, 3]));
        assert_ne!(unit_of(&[1, 2, 3]), unit_of(&[1, 3, 2]));
        assert_ne!(fnv1a("train"), fnv1a("evaluate"));
    }

    /// A seed must keep meaning the same faults: these are the draws the code gave when the
    /// hash moved to `floret_core::seeded`.
    #[test]
    fn draws_are_pinned() {
        assert_eq!(unit_of(&[1, 2, 3]), 0.335_126_741_439_297_1);
        assert_eq!(unit_of(&[]), 0.618_033_988_749_894_8);
        assert_eq!(fnv1a("train"), 0xdee7_95a6_c508_7209);
    }
}
