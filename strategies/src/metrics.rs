//! Streaming weighted mean of reply metrics.
//!
//! Every numeric metric is averaged, weighted by the reply's weight, over the replies that
//! carry it; lists are averaged element by element when their lengths agree. The weight
//! metric itself (`num-examples`) is summed, so the result says how many examples the round
//! saw. A key whose replies disagree (a list in one, a number in another, or lists of
//! different lengths) is left out and reported by `finish`.

use crate::canonical::Mergeable;
use floret_core::{MetricRecord, MetricValue};
use indexmap::IndexMap;

/// Running weighted sums of the metrics folded so far.
#[derive(Debug)]
pub struct MetricAccumulator {
    /// The metric that weights the replies; summed, not averaged.
    weight_key: String,
    /// One entry per metric key, in the order keys were first seen.
    entries: IndexMap<String, Entry>,
}

#[derive(Debug)]
enum Entry {
    Weight { total: f64, kind: Kind },
    Scalar { sum: f64, weight: f64 },
    List { sums: Vec<f64>, weight: f64 },
    Conflict(&'static str),
}

/// Number type of the summed weight: integers stay integers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    I64,
    U64,
    F64,
}

impl Kind {
    /// The kind of a sum of a `self` and an `other`: integers of mixed sign become i64,
    /// anything with a float becomes f64.
    fn widen(self, other: Kind) -> Kind {
        if self == other {
            self
        } else if self == Kind::F64 || other == Kind::F64 {
            Kind::F64
        } else {
            Kind::I64
        }
    }
}

impl MetricAccumulator {
    /// Nothing folded yet; `weight_key` names the metric that weights replies (summed, not
    /// averaged).
    pub fn new(weight_key: impl Into<String>) -> Self {
        MetricAccumulator {
            weight_key: weight_key.into(),
            entries: IndexMap::new(),
        }
    }

    /// Adds one reply's metrics with its weight (already checked to be positive).
    pub fn fold(&mut self, metrics: &MetricRecord, weight: f64) {
        for (key, value) in metrics.iter() {
            if *key == self.weight_key {
                self.fold_weight(key, value, weight);
                continue;
            }
            match self.entries.get_mut(key.as_str()) {
                Some(entry) => entry.add(value, weight),
                None => {
                    self.entries
                        .insert(key.clone(), Entry::first(value, weight));
                }
            }
        }
    }

    fn fold_weight(&mut self, key: &str, value: &MetricValue, weight: f64) {
        let kind = match value {
            MetricValue::I64(_) => Kind::I64,
            MetricValue::U64(_) => Kind::U64,
            _ => Kind::F64,
        };
        match self.entries.get_mut(key) {
            Some(Entry::Weight { total, kind: k }) => {
                *total += weight;
                *k = k.widen(kind);
            }
            _ => {
                self.entries.insert(
                    key.to_string(),
                    Entry::Weight {
                        total: weight,
                        kind,
                    },
                );
            }
        }
    }

    /// The aggregated metrics, and `(key, why)` for each key left out.
    pub fn finish(self) -> (MetricRecord, Vec<(String, &'static str)>) {
        let mut out = MetricRecord::new();
        let mut dropped = Vec::new();
        for (key, entry) in self.entries {
            match entry {
                // Weights below 2^53 are exact in f64, so the integer casts are exact too.
                Entry::Weight { total, kind } => match kind {
                    Kind::I64 => out.insert(key, total as i64),
                    Kind::U64 => out.insert(key, total as u64),
                    Kind::F64 => out.insert(key, total),
                },
                Entry::Scalar { sum, weight } => out.insert(key, sum / weight),
                Entry::List { sums, weight } => out.insert(
                    key,
                    MetricValue::F64List(sums.into_iter().map(|s| s / weight).collect()),
                ),
                Entry::Conflict(why) => dropped.push((key, why)),
            }
        }
        (out, dropped)
    }
}

impl Mergeable for MetricAccumulator {
    fn empty_like(&self) -> Self {
        MetricAccumulator::new(self.weight_key.clone())
    }

    /// Adds `later`'s sums and weights key by key; a key `later` saw first comes after
    /// this one's keys, as it would have in one fold over both.
    fn merge(&mut self, later: Self) {
        for (key, entry) in later.entries {
            match self.entries.get_mut(&key) {
                Some(mine) => mine.merge(entry),
                None => {
                    self.entries.insert(key, entry);
                }
            }
        }
    }
}

impl Entry {
    fn merge(&mut self, later: Entry) {
        match (&mut *self, later) {
            (Entry::Weight { total, kind }, Entry::Weight { total: t, kind: k }) => {
                *total += t;
                *kind = kind.widen(k);
            }
            (Entry::Scalar { sum, weight }, Entry::Scalar { sum: s, weight: w }) => {
                *sum += s;
                *weight += w;
            }
            (Entry::List { sums, weight }, Entry::List { sums: s, weight: w }) => {
                if sums.len() != s.len() {
                    *self = Entry::Conflict("lists of different lengths");
                    return;
                }
                sums.iter_mut().zip(s).for_each(|(a, b)| *a += b);
                *weight += w;
            }
            (Entry::Conflict(_), _) => {}
            (_, Entry::Conflict(why)) => *self = Entry::Conflict(why),
            _ => *self = Entry::Conflict("a number in some replies, a list in others"),
        }
    }

    fn first(value: &MetricValue, weight: f64) -> Entry {
        match value.as_f64() {
            Some(v) => Entry::Scalar {
                sum: weight * v,
                weight,
            },
            None => Entry::List {
                sums: list(value).map(|v| weight * v).collect(),
                weight,
            },
        }
    }

    fn add(&mut self, value: &MetricValue, w: f64) {
        match (&mut *self, value.as_f64()) {
            (Entry::Scalar { sum, weight }, Some(v)) => {
                *sum += w * v;
                *weight += w;
            }
            (Entry::List { sums, weight }, None) => {
                if sums.len() != list_len(value) {
                    *self = Entry::Conflict("lists of different lengths");
                    return;
                }
                for (s, v) in sums.iter_mut().zip(list(value)) {
                    *s += w * v;
                }
                *weight += w;
            }
            (Entry::Conflict(_), _) => {}
            _ => *self = Entry::Conflict("a number in some replies, a list in others"),
        }
    }
}

fn list_len(value: &MetricValue) -> usize {
    match value {
        MetricValue::F64List(v) => v.len(),
        MetricValue::I64List(v) => v.len(),
        MetricValue::U64List(v) => v.len(),
        _ => 0,
    }
}

fn list(value: &MetricValue) -> Box<dyn Iterator<Item = f64> + '_> {
    match value {
        MetricValue::F64List(v) => Box::new(v.iter().copied()),
        MetricValue::I64List(v) => Box::new(v.iter().map(|&x| x as f64)),
        MetricValue::U64List(v) => Box::new(v.iter().map(|&x| x as f64)),
        _ => Box::new(std::iter::empty()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(pairs: Vec<(&str, MetricValue)>) -> MetricRecord {
        let mut m = MetricRecord::new();
        for (k, v) in pairs {
            m.insert(k, v);
        }
        m
    }

    #[test]
    fn weighted_mean_and_summed_weight() {
        let mut acc = MetricAccumulator::new("num-examples");
        acc.fold(
            &metrics(vec![("loss", 1.0.into()), ("num-examples", 1i64.into())]),
            1.0,
        );
        acc.fold(
            &metrics(vec![("loss", 3.0.into()), ("num-examples", 3i64.into())]),
            3.0,
        );
        let (out, dropped) = acc.finish();
        assert!(dropped.is_empty());
        assert_eq!(out.get("loss").unwrap(), &MetricValue::F64(2.5));
        assert_eq!(out.get("num-examples").unwrap(), &MetricValue::I64(4));
    }

    #[test]
    fn lists_average_elementwise_and_integers_become_floats() {
        let mut acc = MetricAccumulator::new("n");
        acc.fold(
            &metrics(vec![("per-class", MetricValue::I64List(vec![1, 2]))]),
            1.0,
        );
        acc.fold(
            &metrics(vec![("per-class", MetricValue::F64List(vec![3.0, 4.0]))]),
            3.0,
        );
        let (out, _) = acc.finish();
        assert_eq!(
            out.get("per-class").unwrap(),
            &MetricValue::F64List(vec![2.5, 3.5])
        );
    }

    #[test]
    fn a_key_is_averaged_over_the_replies_that_have_it() {
        let mut acc = MetricAccumulator::new("n");
        acc.fold(&metrics(vec![("acc", 0.5.into())]), 2.0);
        acc.fold(&metrics(vec![("other", 1i64.into())]), 5.0);
        let (out, _) = acc.finish();
        assert_eq!(out.get_f64("acc").unwrap(), 0.5);
        assert_eq!(out.get_f64("other").unwrap(), 1.0);
    }

    #[test]
    fn disagreeing_keys_are_dropped_and_reported() {
        let mut acc = MetricAccumulator::new("n");
        acc.fold(
            &metrics(vec![
                ("a", MetricValue::F64List(vec![1.0])),
                ("b", 1.0.into()),
            ]),
            1.0,
        );
        acc.fold(
            &metrics(vec![
                ("a", MetricValue::F64List(vec![1.0, 2.0])),
                ("b", MetricValue::F64List(vec![])),
            ]),
            1.0,
        );
        let (out, dropped) = acc.finish();
        assert!(out.is_empty());
        let keys: Vec<&str> = dropped.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn merged_partials_give_the_fold_of_both() {
        let a = metrics(vec![("loss", 1.0.into()), ("n", 1i64.into())]);
        let b = metrics(vec![
            ("loss", 3.0.into()),
            ("n", 3i64.into()),
            ("per-class", MetricValue::F64List(vec![1.0])),
        ]);
        let mut one = MetricAccumulator::new("n");
        one.fold(&a, 1.0);
        one.fold(&b, 3.0);
        let mut first = MetricAccumulator::new("n");
        first.fold(&a, 1.0);
        let mut second = first.empty_like();
        second.fold(&b, 3.0);
        first.merge(second);
        assert_eq!(first.finish(), one.finish());
    }

    #[test]
    fn float_weights_sum_as_floats() {
        let mut acc = MetricAccumulator::new("n");
        acc.fold(&metrics(vec![("n", 1.5.into())]), 1.5);
        acc.fold(&metrics(vec![("n", 2i64.into())]), 2.0);
        assert_eq!(acc.finish().0.get("n").unwrap(), &MetricValue::F64(3.5));
    }
}
