//! One phase of a round over the `Grid`: wait for nodes, send, and fold replies as they
//! arrive until every sent message is answered or the round timeout passes.
//!
//! The decisions (what a reply is worth, how and in which order it is folded: the
//! canonical order of `canonical`) live in a `folding::PhaseFold`, which the grid may also
//! fold replies into where they arrive; this module only moves the replies that reach the
//! ServerApp whole to it, sorts out the ones this phase is not waiting for (late or
//! repeated), waits until the fold has every reply, counts, and tells the user what
//! happened.

use crate::canonical::Mergeable;
use crate::error::StrategyError;
use crate::folding::PhaseFold;
use crate::reply::Rejection;
use crate::sampling::Backoff;
use floret_core::hashing::FastHashMap;
use floret_core::{Grid, GridError, Message, NodeSet, PhaseSummary, ReplyFold, RunEvent};
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span};

/// Distinct reasons a phase's summary line names; the others are counted together.
const MAX_REASONS: usize = 5;
/// Batches with more reply bytes than this are folded on a blocking thread, so a large
/// model does not stall the other tasks of the runtime while it is averaged.
const OFFLOAD_BYTES: usize = 1 << 20;

/// Where a phase runs and how long it may wait.
pub(crate) struct Phase<'a> {
    pub grid: &'a dyn Grid,
    pub round: u64,
    /// `train` or `evaluate`, for logs and errors.
    pub name: &'static str,
    pub timeout: Duration,
}

impl Phase<'_> {
    /// Tells the user (a `RunEvent::Log`) and the tracing log.
    pub(crate) fn log(&self, line: String) {
        info!("{line}");
        self.grid.emit(RunEvent::Log(line));
    }

    pub(crate) fn grid_error(&self, source: GridError) -> StrategyError {
        StrategyError::Grid {
            round: self.round,
            source,
        }
    }

    /// Polls the connected nodes (50 ms, doubling to 1 s) until `required` are connected or
    /// the timeout passes, and returns the last set seen, which may be too small.
    pub(crate) async fn wait_for_nodes(&self, required: usize) -> Result<NodeSet, StrategyError> {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Backoff::new();
        let mut announced = false;
        loop {
            let nodes = self.grid.node_ids().await.map_err(|e| self.grid_error(e))?;
            let left = deadline.saturating_duration_since(Instant::now());
            if nodes.len() >= required || left.is_zero() {
                return Ok(nodes);
            }
            if !announced {
                announced = true;
                self.log(format!(
                    "round {}: waiting up to {:?} for {required} nodes to connect before {} ({} connected)",
                    self.round,
                    self.timeout,
                    self.name,
                    nodes.len()
                ));
            }
            drop(nodes);
            tokio::time::sleep(backoff.next_delay(left)).await;
        }
    }

    /// Sends `template` to each of `targets` and folds their replies with `fold`
    /// until all are in or the timeout passes; the grid may fold them where they arrive
    /// (`Grid::broadcast_folding`), and then delivers nothing for them. Replies to other
    /// messages (late ones from an earlier phase, repeats) are counted as `late` and left
    /// out; replies the fold rejects are counted as `failures`. `sampled - replies -
    /// failures` nodes did not answer in time. The caller then takes the aggregate with
    /// `PhaseFold::finish`.
    pub(crate) async fn collect<P: Mergeable + Send + Sync + 'static>(
        &self,
        targets: &[u64],
        template: Message,
        fold: &Arc<PhaseFold<P>>,
    ) -> Result<PhaseSummary, StrategyError> {
        let mut summary = PhaseSummary {
            sampled: targets.len() as u64,
            ..PhaseSummary::default()
        };
        let offered: Arc<dyn ReplyFold> = fold.clone();
        let ids = self
            .grid
            .broadcast_folding(template, targets, offered)
            .instrument(info_span!(
                "broadcast",
                phase = self.name,
                messages = summary.sampled
            ))
            .await
            .map_err(|e| self.grid_error(e))?;
        let mut pending = Pending::new(ids, targets);
        let deadline = Instant::now() + self.timeout;
        let mut left_out = LeftOut::default();
        let waiting = info_span!("await replies", phase = self.name);
        self.await_replies(&mut pending, deadline, fold, &mut summary, &mut left_out)
            .instrument(waiting)
            .await?;
        // Replies folded where they arrived are in the aggregate and sent no receipt:
        // count them (after the folds in progress end).
        let here = fold.close();
        summary.replies += here.folded;
        summary.failures += here.left_out.len() as u64;
        for (node, why) in here.left_out {
            left_out.add(node, why.to_string());
        }
        let unanswered: Vec<u64> = if fold.all_in() {
            Vec::new()
        } else {
            targets.iter().copied().filter(|&n| !fold.has(n)).collect()
        };
        self.report(&summary, &unanswered, &left_out);
        Ok(summary)
    }

    /// The receive loop of `collect`: folds each batch of awaited replies that arrives
    /// whole, until the fold has every sampled node's reply (folded here or where it
    /// arrived) or the deadline passes.
    async fn await_replies<P: Mergeable + Send + Sync + 'static>(
        &self,
        pending: &mut Pending<'_>,
        deadline: Instant,
        fold: &Arc<PhaseFold<P>>,
        summary: &mut PhaseSummary,
        left_out: &mut LeftOut,
    ) -> Result<(), StrategyError> {
        let mut folding = Duration::ZERO;
        while !fold.all_in() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            // A grid that folds where replies arrive loses nothing when its `receive` is
            // dropped here (`Grid::send_folding`); one that does not never completes the
            // fold on its own, so its `receive` is never dropped.
            let batch = tokio::select! {
                biased;
                () = fold.all_folded() => break,
                batch = self.grid.receive(left) => batch.map_err(|e| self.grid_error(e))?,
            };
            let mut awaited = Vec::with_capacity(batch.len());
            for reply in batch {
                if pending.take(&reply.metadata.reply_to_message_id) {
                    awaited.push(reply);
                } else {
                    summary.late += 1;
                    let why = "it answers no message of this phase (late from an earlier one, or repeated)";
                    self.left_out(&reply, &why, left_out);
                }
            }
            if awaited.is_empty() {
                continue;
            }
            let count = awaited.len();
            let aggregate = info_span!("aggregate", phase = self.name, replies = count);
            let started = Instant::now();
            let rejected = self.fold(fold, awaited).instrument(aggregate).await?;
            folding += started.elapsed();
            summary.replies += count.saturating_sub(rejected.len()) as u64;
            summary.failures += rejected.len() as u64;
            for (reply, why) in rejected {
                self.left_out(&reply, &why, left_out);
            }
        }
        crate::meter::aggregated(self.name, folding);
        Ok(())
    }

    /// Folds a batch here, or on a blocking thread when it is large.
    async fn fold<P: Mergeable + Send + Sync + 'static>(
        &self,
        fold: &Arc<PhaseFold<P>>,
        batch: Vec<Message>,
    ) -> Result<Vec<(Message, Rejection)>, StrategyError> {
        if PhaseFold::<P>::weight_of(&batch) < OFFLOAD_BYTES {
            return Ok(fold.fold_batch(batch));
        }
        let fold = fold.clone();
        match tokio::task::spawn_blocking(move || fold.fold_batch(batch)).await {
            Ok(rejected) => Ok(rejected),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime that is shutting down cancels a blocking task.
            Err(_) => Err(self.grid_error(GridError::Stopped)),
        }
    }

    /// Notes a reply left out. One line per reply would be one line per node, hundreds a
    /// round in a large federation (and each printed twice in a simulation, which shows
    /// both the log and the run's events): so each reply goes to the debug log only, and
    /// the phase's summary line says how many were left out and why.
    fn left_out(&self, reply: &Message, why: &dyn Display, left_out: &mut LeftOut) {
        let node = reply.metadata.src_node_id;
        debug!(
            node_id = node,
            message_id = %reply.metadata.reply_to_message_id,
            reason = %why,
            "{} reply left out", self.name
        );
        left_out.add(node, why.to_string());
    }

    /// The phase's one summary line, for the user and the log.
    fn report(&self, s: &PhaseSummary, unanswered: &[u64], left_out: &LeftOut) {
        let mut line = format!(
            "round {}: {}/{} {} replies, {} failed",
            self.round, s.replies, s.sampled, self.name, s.failures
        );
        if !unanswered.is_empty() {
            line += &format!(
                ", {} without reply after {:?}",
                unanswered.len(),
                self.timeout
            );
            let mut nodes: Vec<u64> = unanswered.iter().take(20).copied().collect();
            nodes.sort_unstable();
            debug!(
                ?nodes,
                count = unanswered.len(),
                "{} messages without reply",
                self.name
            );
        }
        if s.late > 0 {
            line += &format!(", {} late", s.late);
        }
        line += &left_out.describe();
        self.log(line);
    }
}

/// The ids of a phase's messages, for telling the replies that reach the ServerApp whole
/// (all of them, over the network) from late or repeated ones. Looked up by id only once
/// such a reply comes: a simulation folds every reply where it is made, and a million ids
/// need not be hashed for nothing.
struct Pending<'a> {
    ids: Vec<String>,
    targets: &'a [u64],
    /// The ids not answered yet, by id; built at the first lookup.
    map: Option<FastHashMap<String, u64>>,
}

impl<'a> Pending<'a> {
    fn new(ids: Vec<String>, targets: &'a [u64]) -> Self {
        Pending {
            ids,
            targets,
            map: None,
        }
    }

    /// Whether `reply_to` is a message of this phase not answered before; it is not one
    /// any more.
    fn take(&mut self, reply_to: &str) -> bool {
        let map = self.map.get_or_insert_with(|| {
            let ids = std::mem::take(&mut self.ids);
            let mut map = FastHashMap::with_capacity_and_hasher(ids.len(), Default::default());
            map.extend(ids.into_iter().zip(self.targets.iter().copied()));
            map
        });
        map.remove(reply_to).is_some()
    }
}

/// The replies a phase left out, grouped by reason in the order the reasons first came.
#[derive(Debug, Default)]
struct LeftOut {
    /// `(reason, replies, the first node)`.
    reasons: Vec<(String, u64, u64)>,
}

impl LeftOut {
    /// Counts a reply of `node` left out for `reason`. A reason that names its node (a
    /// dropout says "node 7 unavailable") is grouped without the id, so that replies left
    /// out for the same cause make one clause.
    fn add(&mut self, node: u64, reason: String) {
        let reason = reason.replace(&format!("node {node}"), "node");
        match self.reasons.iter_mut().find(|(r, _, _)| *r == reason) {
            Some((_, count, _)) => *count += 1,
            None => self.reasons.push((reason, 1, node)),
        }
    }

    /// `""`, or `"; left out: REASON (N replies, e.g. from node ID)"` for the first
    /// `MAX_REASONS` reasons, then how many replies were left out for others.
    fn describe(&self) -> String {
        if self.reasons.is_empty() {
            return String::new();
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .take(MAX_REASONS)
            .map(|(reason, count, node)| match count {
                1 => format!("{reason} (from node {node})"),
                _ => format!("{reason} ({count} replies, e.g. from node {node})"),
            })
            .collect();
        let others: u64 = self.reasons.iter().skip(MAX_REASONS).map(|r| r.1).sum();
        if others > 0 {
            parts.push(format!(
                "{others} more for other reasons (debug log: --log-level debug)"
            ));
        }
        format!("; left out: {}", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_left_out_adds_nothing_to_the_summary() {
        assert_eq!(LeftOut::default().describe(), "");
    }

    #[test]
    fn many_replies_left_out_for_one_reason_make_one_clause() {
        let mut left_out = LeftOut::default();
        for node in 10..90 {
            left_out.add(node, "weight is 0".into());
        }
        left_out.add(7, "late".into());
        left_out.add(11, "node 11 unavailable".into());
        left_out.add(2, "node 2 unavailable".into());
        left_out.add(1, "error 1 on node 1".into());
        assert_eq!(
            left_out.describe(),
            "; left out: weight is 0 (80 replies, e.g. from node 10); late (from node 7); \
             node unavailable (2 replies, e.g. from node 11); error 1 on node (from node 1)"
        );
    }

    #[test]
    fn reasons_past_the_first_few_are_counted_together() {
        let mut left_out = LeftOut::default();
        for (node, reason) in ["a", "b", "c", "d", "e", "f", "g", "f"]
            .into_iter()
            .enumerate()
        {
            left_out.add(node as u64, reason.into());
        }
        assert_eq!(
            left_out.describe(),
            "; left out: a (from node 0); b (from node 1); c (from node 2); d (from node 3); \
             e (from node 4); 3 more for other reasons (debug log: --log-level debug)"
        );
    }
}
