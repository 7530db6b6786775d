//! One phase of a round over the `Grid`: wait for nodes, send, and fold replies as they
//! arrive until every sent message is answered or the round timeout passes.
//!
//! The decisions (what a reply is worth, how it is folded) live in a `Folder`; this module
//! only moves replies from the grid to it, sorts out the ones this phase is not waiting for
//! (late or repeated), counts, and tells the user what happened.

use crate::error::StrategyError;
use crate::reply::Rejection;
use crate::sampling::Backoff;
use floret_core::{Grid, GridError, Message, NodeSet, PhaseSummary, RunEvent};
use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

/// Single-reply lines sent to the user per phase; the rest go to the tracing log only.
const MAX_LOGGED_REPLIES: u64 = 20;
/// Batches with more reply bytes than this are folded on a blocking thread, so a large
/// model does not stall the other tasks of the runtime while it is averaged.
const OFFLOAD_BYTES: usize = 1 << 20;

/// Folds the replies of one phase into running aggregates.
pub(crate) trait Folder: Send + 'static {
    /// Folds the valid replies of `batch` and returns, by index, the others and why each
    /// was left out.
    fn fold(&mut self, batch: &[Message]) -> Vec<(usize, Rejection)>;

    /// Payload bytes `fold` would read from `batch` (decides where to fold it).
    fn weight_of(&self, batch: &[Message]) -> usize;
}

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

    /// Sends `messages` (the i-th to node `targets[i]`) and folds their replies with `folder`
    /// until all are answered or the timeout passes. Replies to other messages (late ones
    /// from an earlier phase, repeats) are counted as `late` and left out; replies the folder
    /// rejects are counted as `failures`. `sampled - replies - failures` nodes did not answer
    /// in time.
    pub(crate) async fn collect<F: Folder>(
        &self,
        targets: &[u64],
        messages: Vec<Message>,
        folder: F,
    ) -> Result<(PhaseSummary, F), StrategyError> {
        let mut summary = PhaseSummary {
            sampled: messages.len() as u64,
            ..PhaseSummary::default()
        };
        let ids = self
            .grid
            .send(messages)
            .instrument(info_span!(
                "broadcast",
                phase = self.name,
                messages = summary.sampled
            ))
            .await
            .map_err(|e| self.grid_error(e))?;
        let mut pending: HashMap<String, u64> =
            ids.into_iter().zip(targets.iter().copied()).collect();
        let deadline = Instant::now() + self.timeout;
        let mut logged = 0;
        let waiting = info_span!("await replies", phase = self.name);
        let folder = self
            .await_replies(&mut pending, deadline, folder, &mut summary, &mut logged)
            .instrument(waiting)
            .await?;
        self.report(&summary, &pending, logged);
        Ok((summary, folder))
    }

    /// The receive loop of `collect`: folds each batch of awaited replies as it arrives.
    async fn await_replies<F: Folder>(
        &self,
        pending: &mut HashMap<String, u64>,
        deadline: Instant,
        mut folder: F,
        summary: &mut PhaseSummary,
        logged: &mut u64,
    ) -> Result<F, StrategyError> {
        let mut folding = Duration::ZERO;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let batch = self
                .grid
                .receive(left)
                .await
                .map_err(|e| self.grid_error(e))?;
            let mut awaited = Vec::with_capacity(batch.len());
            for reply in batch {
                if pending
                    .remove(&reply.metadata.reply_to_message_id)
                    .is_some()
                {
                    awaited.push(reply);
                } else {
                    summary.late += 1;
                    let why = "it answers no message of this phase (late from an earlier one, or repeated)";
                    self.left_out(&reply, &why, logged);
                }
            }
            if awaited.is_empty() {
                continue;
            }
            let aggregate = info_span!("aggregate", phase = self.name, replies = awaited.len());
            let rejected;
            let started = Instant::now();
            (folder, awaited, rejected) = self.fold(folder, awaited).instrument(aggregate).await?;
            folding += started.elapsed();
            summary.replies += awaited.len().saturating_sub(rejected.len()) as u64;
            summary.failures += rejected.len() as u64;
            for (i, why) in rejected {
                if let Some(reply) = awaited.get(i) {
                    self.left_out(reply, &why, logged);
                }
            }
            // `awaited` is dropped here: a folded reply is not kept.
        }
        crate::meter::aggregated(self.name, folding);
        Ok(folder)
    }

    /// Folds a batch here, or on a blocking thread when it is large.
    async fn fold<F: Folder>(
        &self,
        mut folder: F,
        batch: Vec<Message>,
    ) -> Result<Folded<F>, StrategyError> {
        if folder.weight_of(&batch) < OFFLOAD_BYTES {
            let rejected = folder.fold(&batch);
            return Ok((folder, batch, rejected));
        }
        let job = tokio::task::spawn_blocking(move || {
            let rejected = folder.fold(&batch);
            (folder, batch, rejected)
        });
        match job.await {
            Ok(done) => Ok(done),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only a runtime that is shutting down cancels a blocking task.
            Err(_) => Err(self.grid_error(GridError::Stopped)),
        }
    }

    fn left_out(&self, reply: &Message, why: &dyn Display, logged: &mut u64) {
        let node = reply.metadata.src_node_id;
        warn!(
            node_id = node,
            message_id = %reply.metadata.reply_to_message_id,
            reason = %why,
            "{} reply left out", self.name
        );
        if *logged < MAX_LOGGED_REPLIES {
            let line = format!(
                "round {}: {} reply from node {node} left out: {why}",
                self.round, self.name
            );
            self.grid.emit(RunEvent::Log(line));
        }
        *logged += 1;
    }

    fn report(&self, s: &PhaseSummary, unanswered: &HashMap<String, u64>, logged: u64) {
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
            let mut nodes: Vec<u64> = unanswered.values().take(20).copied().collect();
            nodes.sort_unstable();
            warn!(
                ?nodes,
                count = unanswered.len(),
                "{} messages without reply",
                self.name
            );
        }
        if s.late > 0 {
            line += &format!(", {} late", s.late);
        }
        if logged > MAX_LOGGED_REPLIES {
            line += &format!(
                " ({} more replies left out; see the server log)",
                logged - MAX_LOGGED_REPLIES
            );
        }
        self.log(line);
    }
}

/// A folder handed back with its batch and the batch's rejected replies.
type Folded<F> = (F, Vec<Message>, Vec<(usize, Rejection)>);
