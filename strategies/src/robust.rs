//! Aggregators that need every reply of the round at once: Flower's FedMedian,
//! FedTrimmedAvg, Krum, MultiKrum and Bulyan (robust to a share of bad or malicious
//! replies), and QFedAvg (fair: weights nodes by their loss).
//!
//! Unlike FedAvg's sum, these cannot fold a reply and forget it, so the train phase keeps
//! the round's valid replies in a [`ReplyBuffer`]: shared views of the replies' arrays (no
//! copy of the data), in the canonical node order of `canonical` (so ties break the same
//! way at any worker count), and accounted in bytes against a limit
//! (`FedAvg::with_buffer_limit`). A buffer merges by appending, which makes it one more
//! `Mergeable` partial.
//!
//! The arithmetic is Flower 1.42's (`flwr/serverapp/strategy/fedmedian.py`,
//! `fedtrimmedavg.py`, `multikrum.py`, `krum.py`, `bulyan.py`, `qfedavg.py`; the fixtures'
//! README in `tools/flower-fixtures/` describes each step), computed in f64 and stored in
//! the model's dtype. Where Floret differs on purpose:
//! - Krum's distances are `||x_i - x_j||^2` computed directly in f64, not expanded as
//!   `|x_i|^2 + |x_j|^2 - 2 x_i.x_j` in the model's dtype, and a reply's own distance is
//!   left out by index, not by assuming it sorts first: a duplicate reply cannot shadow it;
//! - QFedAvg keeps a float32 model float32 (Flower's returns float64).
//!
//! Pure: no I/O.

use crate::canonical::Mergeable;
use crate::metrics::MetricAccumulator;
use crate::values;
use floret_core::{ArrayRecord, MetricRecord};
use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering as Atomic};

/// An aggregator over all of a round's replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Robust {
    /// FedMedian: the coordinate-wise median.
    Median,
    /// FedTrimmedAvg: the coordinate-wise mean of what is left after cutting `beta` of the
    /// replies from each end; `beta` in [0, 0.5).
    TrimmedMean {
        /// Share cut from each end (Flower's default 0.2).
        beta: f64,
    },
    /// Krum: the reply closest to its `n - f - 2` nearest neighbours.
    Krum {
        /// `num_malicious_nodes`, `f`.
        num_malicious_nodes: usize,
    },
    /// MultiKrum: the weighted average of the `num_nodes_to_select` replies with the best
    /// Krum scores.
    MultiKrum {
        /// `num_malicious_nodes`, `f`.
        num_malicious_nodes: usize,
        /// `num_nodes_to_select`, `m`.
        num_nodes_to_select: usize,
    },
    /// Bulyan: MultiKrum selects `n - 2f` replies, then each coordinate is the mean of the
    /// `n - 4f` selected values closest to their median. Needs `n >= 4f + 3` replies.
    Bulyan {
        /// `num_malicious_nodes`, `f`.
        num_malicious_nodes: usize,
    },
    /// QFedAvg (q-FFL, Li et al. 2020): each reply's update is weighted by its loss to the
    /// power `q`.
    QFedAvg {
        /// `q`: 0 weighs every node alike; larger favours nodes with high loss.
        q: f64,
        /// `client_learning_rate`, the nodes' learning rate (Lipschitz constant `1 / lr`).
        client_learning_rate: f64,
        /// Metric holding each reply's loss (`train_loss_key`, default `train_loss`).
        loss_key: String,
    },
}

/// One buffered reply: its node, its model (sharing the message's data), its metrics and
/// its weight.
#[derive(Debug, Clone)]
pub struct Buffered {
    /// The node that sent it.
    pub node: u64,
    /// Its model.
    pub arrays: ArrayRecord,
    /// Its metrics.
    pub metrics: MetricRecord,
    /// Its weight (`num-examples`).
    pub weight: f64,
}

/// A round's buffered replies, in canonical order, and the bytes they hold.
#[derive(Debug)]
pub struct ReplyBuffer {
    replies: Vec<Buffered>,
    /// Bytes reserved by every partial of this round: the limit is the round's, not a shard's.
    reserved: Arc<AtomicUsize>,
    limit: usize,
}

impl ReplyBuffer {
    /// An empty buffer that may hold up to `limit` bytes of reply arrays.
    pub fn new(limit: usize) -> Self {
        ReplyBuffer {
            replies: Vec::new(),
            reserved: Arc::default(),
            limit,
        }
    }

    /// Reserves room for `bytes` more, or says the round's buffer is full.
    pub fn reserve(&self, bytes: usize) -> Result<(), usize> {
        let before = self.reserved.fetch_add(bytes, Atomic::Relaxed);
        if before.saturating_add(bytes) > self.limit {
            self.reserved.fetch_sub(bytes, Atomic::Relaxed);
            return Err(self.limit);
        }
        Ok(())
    }

    /// Adds a reply (room for it was reserved when it was checked).
    pub fn push(&mut self, reply: Buffered) {
        self.replies.push(reply);
    }

    /// The replies, in canonical order.
    pub fn replies(&self) -> &[Buffered] {
        &self.replies
    }

    /// Bytes of reply arrays held for the round.
    pub fn bytes(&self) -> usize {
        self.reserved.load(Atomic::Relaxed)
    }
}

impl Mergeable for ReplyBuffer {
    fn empty_like(&self) -> Self {
        ReplyBuffer {
            replies: Vec::new(),
            reserved: self.reserved.clone(),
            limit: self.limit,
        }
    }

    fn merge(&mut self, later: Self) {
        self.replies.extend(later.replies);
    }
}

/// What a robust aggregation made of a round.
#[derive(Debug)]
pub struct Aggregate {
    /// The new model, or `None` when the rule could not aggregate (too few replies for
    /// Bulyan), with why.
    pub arrays: Result<ArrayRecord, String>,
    /// For the Krum family and Bulyan, the metrics of the selected replies (Flower averages
    /// only those); `None` keeps the metrics of every reply.
    pub metrics: Option<MetricRecord>,
    /// The nodes selected, for the Krum family and Bulyan, in score order.
    pub selected: Vec<u64>,
}

impl Robust {
    /// FedTrimmedAvg with Flower's default beta (0.2).
    pub fn trimmed_mean() -> Robust {
        Robust::TrimmedMean { beta: 0.2 }
    }

    /// Flower's class name.
    pub fn name(&self) -> &'static str {
        match self {
            Robust::Median => "FedMedian",
            Robust::TrimmedMean { .. } => "FedTrimmedAvg",
            Robust::Krum { .. } => "Krum",
            Robust::MultiKrum { .. } => "MultiKrum",
            Robust::Bulyan { .. } => "Bulyan",
            Robust::QFedAvg { .. } => "QFedAvg",
        }
    }

    /// Checks the parameters; the message names the bad one and what to set.
    pub fn validate(&self) -> Result<(), (&'static str, String, String)> {
        match self {
            Robust::TrimmedMean { beta } if !(0.0..0.5).contains(beta) => Err((
                "beta",
                beta.to_string(),
                "set a share in [0, 0.5), e.g. 0.2 (Flower's default)".into(),
            )),
            Robust::MultiKrum {
                num_nodes_to_select: 0,
                ..
            } => Err((
                "num_nodes_to_select",
                "0".into(),
                "select at least 1 (Krum selects 1)".into(),
            )),
            Robust::QFedAvg {
                q,
                client_learning_rate,
                ..
            } => {
                if !(q.is_finite() && *q >= 0.0) {
                    Err(("q", q.to_string(), "set a number >= 0, e.g. 0.1".into()))
                } else if !(client_learning_rate.is_finite() && *client_learning_rate > 0.0) {
                    Err((
                        "client_learning_rate",
                        client_learning_rate.to_string(),
                        "set the nodes' positive learning rate, e.g. 0.1".into(),
                    ))
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// The round's aggregate of `replies` (canonical order), from the `current` model.
    pub fn aggregate(
        &self,
        current: &ArrayRecord,
        replies: &[Buffered],
        weight_key: &str,
    ) -> Aggregate {
        let plain = |arrays| Aggregate {
            arrays,
            metrics: None,
            selected: Vec::new(),
        };
        if replies.is_empty() {
            return plain(Err("no valid reply".into()));
        }
        let flat: Vec<Vec<Vec<f64>>> = replies.iter().map(|r| flatten(&r.arrays)).collect();
        match self {
            Robust::Median => plain(Ok(per_coordinate(current, &flat, |v| median(v)))),
            Robust::TrimmedMean { beta } => {
                let cut = (beta * replies.len() as f64) as usize;
                plain(Ok(per_coordinate(current, &flat, |v| {
                    v.sort_by(f64::total_cmp);
                    let kept = &v[cut..v.len() - cut];
                    kept.iter().sum::<f64>() / kept.len() as f64
                })))
            }
            Robust::Krum {
                num_malicious_nodes,
            }
            | Robust::MultiKrum {
                num_malicious_nodes,
                ..
            } => {
                let select = match self {
                    Robust::MultiKrum {
                        num_nodes_to_select,
                        ..
                    } => *num_nodes_to_select,
                    _ => 1,
                };
                let chosen = multikrum(&flat, *num_malicious_nodes, select);
                let total: f64 = chosen.iter().map(|&i| replies[i].weight).sum();
                let arrays = per_coordinate_of(current, &chosen, &flat, |values| {
                    values
                        .iter()
                        .zip(&chosen)
                        .map(|(v, &i)| v * replies[i].weight)
                        .sum::<f64>()
                        / total
                });
                selected(replies, &chosen, weight_key, Ok(arrays))
            }
            Robust::Bulyan {
                num_malicious_nodes: f,
            } => {
                let n = replies.len();
                if n < 4 * f + 3 {
                    return plain(Err(format!(
                        "Bulyan needs at least 4f + 3 = {} valid replies for f = {f}, and {n} came",
                        4 * f + 3
                    )));
                }
                let theta = n - 2 * f;
                let beta = theta - 2 * f;
                let chosen = multikrum(&flat, *f, theta);
                let arrays = per_coordinate_of(current, &chosen, &flat, |values| {
                    let mut sorted = values.to_vec();
                    let med = median(&mut sorted);
                    // The beta values closest to the median; ties keep score order.
                    let mut by_distance: Vec<usize> = (0..values.len()).collect();
                    by_distance.sort_by(|&a, &b| {
                        (values[a] - med)
                            .abs()
                            .partial_cmp(&(values[b] - med).abs())
                            .unwrap_or(Ordering::Equal)
                    });
                    by_distance[..beta].iter().map(|&i| values[i]).sum::<f64>() / beta as f64
                });
                selected(replies, &chosen, weight_key, Ok(arrays))
            }
            Robust::QFedAvg {
                q,
                client_learning_rate,
                loss_key,
            } => plain(qfedavg(
                current,
                replies,
                &flat,
                *q,
                *client_learning_rate,
                loss_key,
            )),
        }
    }
}

/// The aggregate of the `chosen` replies, with their metrics averaged in that order.
fn selected(
    replies: &[Buffered],
    chosen: &[usize],
    weight_key: &str,
    arrays: Result<ArrayRecord, String>,
) -> Aggregate {
    let mut metrics = MetricAccumulator::new(weight_key);
    for &i in chosen {
        metrics.fold(&replies[i].metrics, replies[i].weight);
    }
    Aggregate {
        arrays,
        metrics: Some(metrics.finish().0),
        selected: chosen.iter().map(|&i| replies[i].node).collect(),
    }
}

/// Coordinates per block of Krum's distances: 16 KiB of each row.
const KRUM_BLOCK: usize = 2048;

/// Indices of the `m` replies with the lowest Krum scores, in score order (ties: lower
/// index first). A score is the sum of squared distances to the `max(1, n - f - 2)`
/// nearest other replies.
fn multikrum(flat: &[Vec<Vec<f64>>], f: usize, m: usize) -> Vec<usize> {
    let n = flat.len();
    let closest = n.saturating_sub(f + 2).max(1);
    let rows: Vec<Vec<f64>> = flat.iter().map(|r| r.concat()).collect();
    let len = rows.first().map_or(0, Vec::len);
    // Pairs i < j, in the order (0, 1), (0, 2), ..., (1, 2), ...
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .collect();
    let mut sums = vec![0.0; pairs.len()];
    // By blocks of coordinates that all the rows' blocks fit in cache together: every pair
    // reads its block from cache, not each pair its whole rows from memory (the pairs are
    // n^2 / 2 passes over the model otherwise).
    for start in (0..len).step_by(KRUM_BLOCK) {
        let end = (start + KRUM_BLOCK).min(len);
        for (sum, &(i, j)) in sums.iter_mut().zip(&pairs) {
            *sum += squared_distance(&rows[i][start..end], &rows[j][start..end]);
        }
    }
    let mut to_others: Vec<Vec<f64>> = vec![Vec::with_capacity(n); n];
    for (&d, &(i, j)) in sums.iter().zip(&pairs) {
        to_others[i].push(d);
        to_others[j].push(d);
    }
    let scores: Vec<f64> = to_others
        .into_iter()
        .map(|mut others| {
            others.sort_by(f64::total_cmp);
            others.iter().take(closest).sum()
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    order.truncate(m.min(n));
    order
}

/// `|a - b|^2`, summed in eight lanes so that the loop vectorises (the order is fixed, so
/// the result is too).
fn squared_distance(a: &[f64], b: &[f64]) -> f64 {
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    let mut lanes = [0.0f64; 8];
    for (x, y) in ac.iter().zip(bc) {
        for k in 0..8 {
            let d = x[k] - y[k];
            lanes[k] += d * d;
        }
    }
    let tail: f64 = ar.iter().zip(br).map(|(x, y)| (x - y) * (x - y)).sum();
    lanes.iter().sum::<f64>() + tail
}

/// QFedAvg's update: `w - sum(F^q * L (w - w_k)) / sum(q F^(q-1) |L (w - w_k)|^2 + L F^q)`.
fn qfedavg(
    current: &ArrayRecord,
    replies: &[Buffered],
    flat: &[Vec<Vec<f64>>],
    q: f64,
    client_learning_rate: f64,
    loss_key: &str,
) -> Result<ArrayRecord, String> {
    let global = flatten(current);
    let lipschitz = 1.0 / client_learning_rate;
    let mut sum_delta: Vec<Vec<f64>> = global.iter().map(|a| vec![0.0; a.len()]).collect();
    let mut sum_h = 0.0;
    for (reply, local) in replies.iter().zip(flat) {
        let loss = reply.metrics.get_f64(loss_key).map_err(|_| {
            format!(
                "QFedAvg needs each train reply's loss in metric {loss_key:?}, and node {}'s \
                 reply has none",
                reply.node
            )
        })?;
        let grads: Vec<Vec<f64>> = global
            .iter()
            .zip(local)
            .map(|(g, l)| g.iter().zip(l).map(|(g, l)| lipschitz * (g - l)).collect())
            .collect();
        let norm: f64 = grads.iter().flatten().map(|x| x * x).sum();
        let base = loss + 1e-10;
        let lpq = base.powf(q);
        for (sum, grad) in sum_delta.iter_mut().zip(&grads) {
            sum.iter_mut().zip(grad).for_each(|(s, g)| *s += g * lpq);
        }
        sum_h += q * base.powf(q - 1.0) * norm + lipschitz * lpq;
    }
    let next = global
        .iter()
        .zip(&sum_delta)
        .map(|(g, d)| g.iter().zip(d).map(|(g, d)| g - d / sum_h).collect())
        .collect();
    Ok(unflatten(current, next))
}

/// `f` of each coordinate's values across all replies.
fn per_coordinate(
    current: &ArrayRecord,
    flat: &[Vec<Vec<f64>>],
    f: impl Fn(&mut Vec<f64>) -> f64,
) -> ArrayRecord {
    let all: Vec<usize> = (0..flat.len()).collect();
    per_coordinate_of(current, &all, flat, |values| f(&mut values.to_vec()))
}

/// `f` of each coordinate's values across the replies `chosen`, in that order.
fn per_coordinate_of(
    current: &ArrayRecord,
    chosen: &[usize],
    flat: &[Vec<Vec<f64>>],
    f: impl Fn(&[f64]) -> f64,
) -> ArrayRecord {
    let mut values = Vec::with_capacity(chosen.len());
    let arrays = current
        .iter()
        .enumerate()
        .map(|(k, (_, a))| {
            let len = flat.first().map_or(0, |r| r[k].len());
            debug_assert!(a.num_elements().map_or(true, |n| n == len));
            (0..len)
                .map(|e| {
                    values.clear();
                    values.extend(chosen.iter().map(|&i| flat[i][k][e]));
                    f(&values)
                })
                .collect()
        })
        .collect();
    unflatten(current, arrays)
}

/// NumPy's median: the middle value, or the mean of the two middle values.
fn median(values: &mut [f64]) -> f64 {
    let n = values.len();
    let (below, mid, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
    let mid = *mid;
    if n % 2 == 1 {
        mid
    } else {
        // The largest of the lower half is the other middle value.
        let lower = below.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (lower + mid) / 2.0
    }
}

/// Each array of `arrays` as f64 values, in the record's order (checked replies: every
/// dtype is one FedAvg averages).
fn flatten(arrays: &ArrayRecord) -> Vec<Vec<f64>> {
    arrays
        .iter()
        .map(|(_, a)| values::to_f64(a).unwrap_or_default())
        .collect()
}

/// `values` shaped and typed as `like`'s arrays.
fn unflatten(like: &ArrayRecord, values: Vec<Vec<f64>>) -> ArrayRecord {
    like.iter()
        .zip(values)
        .map(|((key, a), v)| (key.clone(), values::from_f64(a, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::Array;

    fn reply(node: u64, v: &[f32], weight: f64) -> Buffered {
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", Array::from_slice(v));
        let mut metrics = MetricRecord::new();
        metrics.insert("num-examples", weight as i64);
        metrics.insert("train_loss", node as f64);
        Buffered {
            node,
            arrays,
            metrics,
            weight,
        }
    }

    fn model(n: usize) -> ArrayRecord {
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", Array::from_slice(&vec![0f32; n]));
        arrays
    }

    fn values(a: &Aggregate) -> Vec<f32> {
        a.arrays.as_ref().unwrap().0["w"]
            .values::<f32>()
            .unwrap()
            .into_owned()
    }

    /// Four honest replies near 1 and one attacker at 100.
    fn attacked() -> Vec<Buffered> {
        vec![
            reply(1, &[1.0, 2.0], 10.0),
            reply(2, &[1.1, 2.1], 10.0),
            reply(3, &[0.9, 1.9], 10.0),
            reply(4, &[1.0, 2.2], 10.0),
            reply(5, &[100.0, -100.0], 10.0),
        ]
    }

    #[test]
    fn the_median_ignores_one_outlier_and_averages_the_middle_pair() {
        let a = Robust::Median.aggregate(&model(2), &attacked(), "num-examples");
        assert_eq!(values(&a), [1.0, 2.0]);
        let even = Robust::Median.aggregate(&model(2), &attacked()[..4], "num-examples");
        assert_eq!(values(&even), [1.0, 2.05]);
    }

    #[test]
    fn the_trimmed_mean_cuts_beta_from_each_end() {
        // beta 0.2 of 5: one from each end.
        let a = Robust::trimmed_mean().aggregate(&model(2), &attacked(), "num-examples");
        let mean = |v: [f32; 3]| (v.iter().map(|&x| f64::from(x)).sum::<f64>() / 3.0) as f32;
        assert_eq!(values(&a), [mean([1.0, 1.0, 1.1]), mean([1.9, 2.0, 2.1])]);
    }

    #[test]
    fn krum_selects_one_honest_reply_and_multikrum_averages_several() {
        let krum = Robust::Krum {
            num_malicious_nodes: 1,
        }
        .aggregate(&model(2), &attacked(), "num-examples");
        assert_eq!(krum.selected.len(), 1);
        assert_ne!(krum.selected[0], 5);
        let chosen = krum.selected[0] as usize - 1;
        assert_eq!(values(&krum), values_of(&attacked()[chosen]));
        let multi = Robust::MultiKrum {
            num_malicious_nodes: 1,
            num_nodes_to_select: 3,
        }
        .aggregate(&model(2), &attacked(), "num-examples");
        assert_eq!(multi.selected.len(), 3);
        assert!(!multi.selected.contains(&5));
        let m = multi.metrics.unwrap();
        assert_eq!(m.get_f64("num-examples").unwrap(), 30.0);
    }

    fn values_of(r: &Buffered) -> Vec<f32> {
        r.arrays.0["w"].values::<f32>().unwrap().into_owned()
    }

    #[test]
    fn bulyan_needs_4f_plus_3_replies_and_resists_the_outlier() {
        let few = Robust::Bulyan {
            num_malicious_nodes: 1,
        }
        .aggregate(&model(2), &attacked(), "num-examples");
        assert!(few.arrays.unwrap_err().contains("at least 4f + 3 = 7"));
        let mut seven = attacked();
        seven.push(reply(6, &[1.05, 2.05], 10.0));
        seven.push(reply(7, &[0.95, 1.95], 10.0));
        let a = Robust::Bulyan {
            num_malicious_nodes: 1,
        }
        .aggregate(&model(2), &seven, "num-examples");
        let v = values(&a);
        assert!(
            (v[0] - 1.0).abs() < 0.1 && (v[1] - 2.0).abs() < 0.1,
            "{v:?}"
        );
        assert!(!a.selected.contains(&5));
    }

    #[test]
    fn qfedavg_with_q_zero_is_the_plain_mean_of_the_models() {
        let replies = [reply(1, &[1.0], 1.0), reply(2, &[3.0], 100.0)];
        let a = Robust::QFedAvg {
            q: 0.0,
            client_learning_rate: 0.1,
            loss_key: "train_loss".into(),
        }
        .aggregate(&model(1), &replies, "num-examples");
        assert_eq!(values(&a), [2.0]);
    }

    #[test]
    fn a_buffer_refuses_what_would_pass_its_limit_across_partials() {
        let b = ReplyBuffer::new(100);
        let other = b.empty_like();
        assert!(b.reserve(60).is_ok());
        assert_eq!(other.reserve(50), Err(100));
        assert!(other.reserve(40).is_ok());
        assert_eq!(b.bytes(), 100);
    }
}
