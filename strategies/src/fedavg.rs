//! FedAvg over the message API (Flower 1.42's `FedAvg.start`), with streaming aggregation.
//!
//! Each round: wait for enough nodes, sample, send `train` messages carrying the model (in
//! node-id order), fold the replies into a weighted average as they arrive, each in its
//! turn of the canonical order (`canonical`: the same replies give the same bits at any
//! worker count), run the optional central evaluation on the new model, then (when
//! `fraction_evaluate > 0`) the same for `evaluate` messages, whose replies only carry
//! metrics. Round numbers run from 1 to `num_rounds`; there is no
//! round 0, not even for the central evaluation.
//!
//! After every round the run's state is saved through `Grid::save_checkpoint` (see
//! `checkpoint`), and `start` first looks for one: a ServerApp started again after a
//! SuperLink restart goes on after the last completed round, and ends with the model an
//! uninterrupted run would have. The final model's sha256 is logged ("final model sha256
//! <hex>") so that the models of two runs can be compared.
//!
//! Where Floret differs from Flower on purpose:
//! - a phase samples only once `max(min_available_nodes, min_<phase>_nodes)` nodes are
//!   connected, waiting up to the round timeout; a train phase that cannot start is an error,
//!   an evaluate phase that cannot start is skipped with a log line (the model is fine);
//! - bad replies (errors, wrong arrays, no weight, late) are counted and left out, never fatal;
//!   a round without any valid train reply keeps the previous model;
//! - the weight metric is summed into the aggregated metrics instead of being dropped.

use crate::aggregate::{self, ArrayAccumulator};
use crate::canonical::Mergeable;
use crate::checkpoint::{self, Checkpoint, model_sha256, round_rng};
use crate::config::FedAvgConfig;
use crate::dp::{self, DpConfig, Side};
use crate::error::StrategyError;
use crate::folding::PhaseFold;
use crate::metrics::MetricAccumulator;
use crate::phase::Phase;
use crate::reply::{self, Rejection};
use crate::robust::{Buffered, ReplyBuffer, Robust};
use crate::sampling::{required_nodes, sample_nodes, sample_size};
use crate::server_update::{ServerState, ServerUpdate};
use crate::shard::ShardPlan;
use bytes::Bytes;
use floret_core::{
    ArrayRecord, ConfigRecord, Grid, GridError, Message, MetricRecord, MetricValue, PhaseSummary,
    RecordDict, RoundSummary, RunEvent, message_type,
};
use rand::rngs::SmallRng;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tracing::{Instrument, debug, info_span, warn};

/// Central evaluation: `(round, model) -> metrics`, run by the server after each round's
/// aggregation (Flower's `evaluate_fn`). It runs on a blocking thread, so it may be slow.
pub type EvaluateFn = dyn Fn(u64, &ArrayRecord) -> Option<MetricRecord> + Send + Sync;

/// Key of the server round in the config sent with every message.
const SERVER_ROUND_KEY: &str = "server-round";
/// Key of FedProx's proximal term weight in the train config (Flower's name).
const PROXIMAL_MU_KEY: &str = "proximal-mu";

/// Federated averaging: the global model is the average of the nodes' models, weighted by
/// how many examples each trained on.
///
/// The same machinery runs Flower's FedAvg family: a `ServerUpdate` turns the round's
/// average into the next model (FedAvgM, FedAdagrad, FedAdam, FedYogi), and FedProx sends
/// its `proximal-mu` to the nodes.
pub struct FedAvg {
    config: FedAvgConfig,
    evaluate_fn: Option<Arc<EvaluateFn>>,
    update: ServerUpdate,
    /// FedProx's `proximal_mu`, sent to the nodes as `proximal-mu` with every train message.
    proximal_mu: Option<f64>,
    /// An aggregator that needs all of a round's replies (FedMedian, Krum, ...), in place
    /// of the streaming weighted sum.
    robust: Option<Robust>,
    /// Bytes of reply arrays a robust aggregator may hold per round.
    buffer_limit: usize,
    /// Central differential privacy: clipping and noise (see `dp`).
    dp: Option<DpConfig>,
}

/// Default of `FedAvg::with_buffer_limit`: 8 GiB of replies a round.
pub const DEFAULT_BUFFER_LIMIT: usize = 8 << 30;

impl fmt::Debug for FedAvg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FedAvg")
            .field("config", &self.config)
            .field("evaluate_fn", &self.evaluate_fn.is_some())
            .field("update", &self.update)
            .field("proximal_mu", &self.proximal_mu)
            .field("robust", &self.robust)
            .field("dp", &self.dp)
            .finish()
    }
}

/// What a run produced: per-round summaries, central evaluations, and the final model.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct History {
    /// One summary per round, in order; the aggregated client metrics are in each phase's
    /// `PhaseSummary::metrics`.
    pub rounds: Vec<RoundSummary>,
    /// `(round, metrics)` of each central evaluation that returned metrics.
    pub central: Vec<(u64, MetricRecord)>,
    /// The global model after the last round.
    pub arrays: ArrayRecord,
}

/// The settings of one `start` call, shared by its rounds.
struct Run<'a> {
    grid: &'a dyn Grid,
    num_rounds: u64,
    timeout: Duration,
    train_config: &'a ConfigRecord,
    evaluate_config: &'a ConfigRecord,
}

impl FedAvg {
    /// A FedAvg with validated settings.
    pub fn new(config: FedAvgConfig) -> Result<FedAvg, StrategyError> {
        config.validate()?;
        Ok(FedAvg {
            config,
            evaluate_fn: None,
            update: ServerUpdate::Average,
            proximal_mu: None,
            robust: None,
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            dp: None,
        })
    }

    /// Central differential privacy around this strategy (Flower's
    /// `DifferentialPrivacy{Server,Client}Side{Fixed,Adaptive}Clipping` wrappers): each
    /// reply's update is clipped (by the server, or by the nodes' mod, to the norm sent
    /// as `clipping_norm`), and Gaussian noise seeded by the run's seed and the round is
    /// added to each new model. See `dp`.
    pub fn with_dp(mut self, config: DpConfig) -> Result<Self, StrategyError> {
        config
            .validate()
            .map_err(|(field, value, fix)| StrategyError::InvalidConfig { field, value, fix })?;
        self.dp = Some(config);
        Ok(self)
    }

    /// Aggregates each round with `robust` (FedMedian, FedTrimmedAvg, Krum, MultiKrum,
    /// Bulyan, QFedAvg) instead of the weighted average. These hold the round's replies
    /// (see `robust`); they take no server optimiser, as in Flower.
    pub fn with_robust(mut self, robust: Robust) -> Result<Self, StrategyError> {
        robust
            .validate()
            .map_err(|(field, value, fix)| StrategyError::InvalidConfig { field, value, fix })?;
        if self.update != ServerUpdate::Average || self.proximal_mu.is_some() {
            return Err(StrategyError::InvalidConfig {
                field: "robust",
                value: robust.name().into(),
                fix: format!(
                    "{} aggregates the replies itself; use it without {}",
                    robust.name(),
                    self.name()
                ),
            });
        }
        self.robust = Some(robust);
        Ok(self)
    }

    /// How many bytes of reply arrays a robust aggregator may hold in one round (default
    /// 8 GiB); replies past it are left out, each with a reason naming this limit.
    pub fn with_buffer_limit(mut self, bytes: usize) -> Self {
        self.buffer_limit = bytes;
        self
    }

    /// The server's step from the round's average to the next model: FedAvgM, FedAdagrad,
    /// FedAdam or FedYogi (`ServerUpdate`); refused when a parameter is out of range.
    pub fn with_server_update(mut self, update: ServerUpdate) -> Result<Self, StrategyError> {
        update.validate()?;
        if let Some(robust) = &self.robust {
            return Err(StrategyError::InvalidConfig {
                field: "server_update",
                value: update.name().into(),
                fix: format!("{} takes no server optimiser", robust.name()),
            });
        }
        self.update = update;
        Ok(self)
    }

    /// FedProx: sends `proximal-mu` = `mu` with every train message, for the nodes' proximal
    /// term `mu / 2 * ||w - w_global||^2`. Flower warns at 0.0 (plain FedAvg); so does this.
    pub fn with_proximal_mu(mut self, mu: f64) -> Result<Self, StrategyError> {
        if !(mu.is_finite() && mu >= 0.0) {
            return Err(StrategyError::InvalidConfig {
                field: "proximal_mu",
                value: mu.to_string(),
                fix: "set a non-negative number, e.g. 0.1".into(),
            });
        }
        if mu == 0.0 {
            warn!("FedProx with proximal_mu = 0.0 is FedAvg; set e.g. 0.1 for a proximal term");
        }
        self.proximal_mu = Some(mu);
        Ok(self)
    }

    /// The strategy's name as Flower spells its class: `FedAvg`, `FedProx`, `FedAvgM`, ...
    pub fn name(&self) -> &'static str {
        match &self.robust {
            Some(robust) => robust.name(),
            None => self.update.name_with(self.proximal_mu),
        }
    }

    /// Optional centralized evaluation run by the server after each round's aggregation
    /// (Flower's evaluate_fn).
    pub fn with_evaluate_fn(
        mut self,
        f: impl Fn(u64, &ArrayRecord) -> Option<MetricRecord> + Send + Sync + 'static,
    ) -> Self {
        self.evaluate_fn = Some(Arc::new(f));
        self
    }

    /// The settings this strategy runs with.
    pub fn config(&self) -> &FedAvgConfig {
        &self.config
    }

    /// Runs `num_rounds` rounds from `initial_arrays` and returns what happened.
    ///
    /// `round_timeout` bounds each wait of a round on its own: for enough nodes to connect,
    /// and for the replies of each phase. `train_config` and `evaluate_config` are sent to
    /// the nodes with `"server-round"` added.
    ///
    /// When the grid holds a checkpoint of this run, the run resumes after the round it was
    /// taken; a checkpoint of a run with other settings (rounds, seed, model shape) or of a
    /// newer format is refused with `StrategyError::Checkpoint`.
    pub async fn start(
        &self,
        grid: &dyn Grid,
        initial_arrays: ArrayRecord,
        num_rounds: u64,
        round_timeout: Duration,
        train_config: ConfigRecord,
        evaluate_config: ConfigRecord,
    ) -> Result<History, StrategyError> {
        if round_timeout.is_zero() {
            return Err(StrategyError::InvalidConfig {
                field: "round_timeout",
                value: "0s".into(),
                fix: "nodes need time to reply; give each round e.g. 60 s (Flower's default is 3600 s)"
                    .into(),
            });
        }
        aggregate::check_model(&initial_arrays)?;
        let run = Run {
            grid,
            num_rounds,
            timeout: round_timeout,
            train_config: &train_config,
            evaluate_config: &evaluate_config,
        };
        let span = info_span!("fedavg", run_id = grid.run_id(), num_rounds);
        async move {
            log(
                grid,
                format!(
                    "{}: {num_rounds} rounds, model of {} arrays ({} bytes), round timeout {round_timeout:?}",
                    self.name(),
                    initial_arrays.len(),
                    initial_arrays.num_bytes()
                ),
            );
            let (seed, first, mut history, mut server) = match self.resume(grid, num_rounds, &initial_arrays).await? {
                Some(saved) => (saved.seed, saved.completed + 1, saved.history, saved.server),
                None => {
                    // Drawn once and kept in every checkpoint, so that a resumed run samples
                    // as this one would have even without a configured seed.
                    let seed = self
                        .config
                        .seed
                        .unwrap_or_else(rand::random);
                    let history = History {
                        arrays: initial_arrays,
                        ..History::default()
                    };
                    (seed, 1, history, ServerState::default())
                }
            };
            for round in first..=num_rounds {
                let started = tokio::time::Instant::now();
                let summary = self
                    .round(&run, round, seed, &mut history, &mut server)
                    .instrument(info_span!(
                        "round",
                        round,
                        otel.name = %format_args!("round {round}")
                    ))
                    .await?;
                crate::meter::round_completed(started.elapsed());
                history.rounds.push(summary);
                save_checkpoint(grid, num_rounds, round, seed, &history, &server).await;
            }
            log(grid, format!("{} finished {num_rounds} rounds", self.name()));
            log(
                grid,
                format!(
                    "final model sha256 {}",
                    digest(num_rounds, &history.arrays).await?
                ),
            );
            Ok(history)
        }
        .instrument(span)
        .await
    }

    /// The run's checkpoint, checked against this run's settings, when there is one: the
    /// ServerApp was started again (a SuperLink restarted) and the run goes on from it.
    async fn resume(
        &self,
        grid: &dyn Grid,
        num_rounds: u64,
        initial_arrays: &ArrayRecord,
    ) -> Result<Option<Checkpoint>, StrategyError> {
        let bytes = match grid.load_checkpoint().await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) => {
                return Err(StrategyError::Checkpoint {
                    reason: format!("it could not be read: {e}"),
                });
            }
        };
        let saved = checkpoint::decode(&bytes)?;
        saved.check(num_rounds, self.config.seed, initial_arrays)?;
        if saved.completed == num_rounds {
            log(
                grid,
                format!(
                    "{}: all {num_rounds} rounds were completed before the restart",
                    self.name()
                ),
            );
        } else {
            log(
                grid,
                format!(
                    "{}: resuming from round {} of {num_rounds} (checkpoint after round {})",
                    self.name(),
                    saved.completed + 1,
                    saved.completed
                ),
            );
        }
        Ok(Some(saved))
    }

    async fn round(
        &self,
        run: &Run<'_>,
        round: u64,
        seed: u64,
        history: &mut History,
        server: &mut ServerState,
    ) -> Result<RoundSummary, StrategyError> {
        run.grid.emit(RunEvent::RoundStarted {
            round,
            num_rounds: run.num_rounds,
        });
        let rng = &mut round_rng(seed, round);
        let train = self
            .train(run, round, (rng, seed), &mut history.arrays, server)
            .await?;
        let central = match &self.evaluate_fn {
            Some(f) => central_evaluate(f, round, &history.arrays).await?,
            None => None,
        };
        if let Some(metrics) = &central {
            log(
                run.grid,
                format!("round {round}: central evaluation: {}", show(metrics)),
            );
            history.central.push((round, metrics.clone()));
        }
        let evaluate = if self.config.fraction_evaluate > 0.0 {
            self.evaluate(run, round, rng, &history.arrays).await?
        } else {
            None
        };
        let summary = RoundSummary {
            round,
            train: Some(train),
            evaluate,
            central,
        };
        run.grid.emit(RunEvent::RoundFinished(summary.clone()));
        Ok(summary)
    }

    async fn train(
        &self,
        run: &Run<'_>,
        round: u64,
        (rng, seed): (&mut SmallRng, u64),
        arrays: &mut ArrayRecord,
        server: &mut ServerState,
    ) -> Result<PhaseSummary, StrategyError> {
        let c = &self.config;
        let norm = self
            .dp
            .as_ref()
            .map(|dp| server.clipping_norm.unwrap_or_else(|| dp.initial_norm()));
        let mut train_config = run.train_config.clone();
        if let (Some(dp), Some(norm)) = (&self.dp, norm)
            && dp.side == Side::Client
        {
            train_config.insert(dp::CLIPPING_NORM_KEY, norm);
        }
        let phase = Phase {
            grid: run.grid,
            round,
            name: "train",
            timeout: run.timeout,
        };
        let required = required_nodes(c.min_available_nodes, c.min_train_nodes);
        let (plan, targets, template) = async {
            let nodes = phase.wait_for_nodes(required).await?;
            if nodes.len() < required {
                return Err(StrategyError::NotEnoughNodes {
                    round,
                    phase: "train",
                    required,
                    available: nodes.len(),
                    waited: run.timeout,
                });
            }
            let connected = nodes.len();
            let size = sample_size(c.fraction_train, c.min_train_nodes, connected);
            let plan = ShardPlan::new(&sample_nodes(rng, nodes, size));
            phase.log(format!(
                "round {round}: training on {size} of {connected} connected nodes"
            ));
            let targets = plan.send_order(run.grid.fold_lanes());
            let template = self.template(arrays, &train_config, round, message_type::TRAIN);
            Ok((plan, targets, template))
        }
        .instrument(info_span!("configure", phase = "train"))
        .await?;
        let sums = TrainSums {
            arrays: ArrayAccumulator::new(arrays)?,
            metrics: MetricAccumulator::new(&c.weighted_by_key),
            buffer: self
                .robust
                .as_ref()
                .map(|_| ReplyBuffer::new(self.buffer_limit)),
            counted: 0,
            clipped: 0,
        };
        let clip = match (&self.dp, norm) {
            (Some(dp), Some(norm)) => Some(Clip {
                server: dp.side == Side::Server,
                adaptive: matches!(dp.clipping, dp::Clipping::Adaptive { .. }),
                global: Arc::new(arrays.clone()),
                norm,
            }),
            _ => None,
        };
        let fold = train_fold(plan, sums, c, clip);
        let summary = phase.collect(&targets, template, &fold).await?;
        let _aggregate = info_span!("aggregate", phase = "train", last = true).entered();
        debug!(
            peak_waiting = fold.peak_waiting(),
            "train replies that waited for their turn"
        );
        let sums = fold.finish();
        let (clipped, counted) = (sums.clipped, sums.counted);
        let summary = self.aggregate(&phase, summary, sums, arrays, server)?;
        if let (Some(dp), Some(norm)) = (&self.dp, norm) {
            let mut rng = DpConfig::rng(seed, round);
            let next = dp.finish_round(norm, clipped, counted, arrays, &mut rng);
            if next != norm {
                phase.log(format!(
                    "round {round}: {clipped} of {counted} updates clipped; clipping norm {norm:.6} -> {next:.6}"
                ));
            }
            server.clipping_norm = Some(next);
        }
        Ok(summary)
    }

    /// The train phase's aggregate: the new model into `arrays` (the robust rule's, or the
    /// weighted average stepped by the server update), and the phase's metrics.
    fn aggregate(
        &self,
        phase: &Phase<'_>,
        mut summary: PhaseSummary,
        sums: TrainSums,
        arrays: &mut ArrayRecord,
        server: &mut ServerState,
    ) -> Result<PhaseSummary, StrategyError> {
        let c = &self.config;
        let round = phase.round;
        if let (Some(robust), Some(buffer)) = (&self.robust, &sums.buffer) {
            let aggregate = robust.aggregate(arrays, buffer.replies(), &c.weighted_by_key);
            debug!(
                replies = buffer.replies().len(),
                bytes = buffer.bytes(),
                "train replies held for {}",
                robust.name()
            );
            if !aggregate.selected.is_empty() {
                phase.log(format!(
                    "round {round}: {} selected node(s) {:?} of {}",
                    robust.name(),
                    aggregate.selected,
                    buffer.replies().len()
                ));
            }
            summary.metrics = match aggregate.metrics {
                Some(selected) => {
                    phase.log_metrics(&selected);
                    selected
                }
                None => finish_metrics(phase, sums.metrics),
            };
            match aggregate.arrays {
                Ok(next) => *arrays = next,
                Err(why) => phase.log(format!(
                    "round {round}: {}: {why}; keeping the previous model",
                    robust.name()
                )),
            }
            return Ok(summary);
        }
        summary.metrics = finish_metrics(phase, sums.metrics);
        match sums.arrays.finish() {
            Some(average) => *arrays = self.update.apply(round, server, arrays, average)?,
            None => phase.log(format!(
                "round {round}: no valid train reply; keeping the previous model"
            )),
        }
        Ok(summary)
    }

    /// Runs the evaluate phase; `None` when too few nodes connected to run it.
    async fn evaluate(
        &self,
        run: &Run<'_>,
        round: u64,
        rng: &mut SmallRng,
        arrays: &ArrayRecord,
    ) -> Result<Option<PhaseSummary>, StrategyError> {
        let c = &self.config;
        let phase = Phase {
            grid: run.grid,
            round,
            name: "evaluate",
            timeout: run.timeout,
        };
        let required = required_nodes(c.min_available_nodes, c.min_evaluate_nodes);
        let configure = info_span!("configure", phase = "evaluate");
        let nodes = phase
            .wait_for_nodes(required)
            .instrument(configure.clone())
            .await?;
        let _configuring = configure.enter();
        if nodes.len() < required {
            // One line, in the log and the run's events (a WARN beside it would print twice).
            phase.log(format!(
                "round {round}: skipping federated evaluation: it needs {required} connected nodes, \
                 {} connected within {:?}",
                nodes.len(),
                run.timeout
            ));
            return Ok(None);
        }
        let size = sample_size(c.fraction_evaluate, c.min_evaluate_nodes, nodes.len());
        let plan = ShardPlan::new(&sample_nodes(rng, nodes, size));
        let targets = plan.send_order(run.grid.fold_lanes());
        let template = self.template(arrays, run.evaluate_config, round, message_type::EVALUATE);
        drop(_configuring);
        let fold = evaluate_fold(plan, &c.weighted_by_key);
        let mut summary = phase.collect(&targets, template, &fold).await?;
        let _aggregate = info_span!("aggregate", phase = "evaluate", last = true).entered();
        summary.metrics = finish_metrics(&phase, fold.finish());
        Ok(Some(summary))
    }

    /// The phase's message, sent to every target (`Grid::broadcast_folding`): one content
    /// dict for all, not copies.
    fn template(
        &self,
        arrays: &ArrayRecord,
        config: &ConfigRecord,
        round: u64,
        kind: &str,
    ) -> Message {
        let mut config = config.clone();
        config.insert(SERVER_ROUND_KEY, i64::try_from(round).unwrap_or(i64::MAX));
        if let Some(mu) = self.proximal_mu.filter(|_| kind == message_type::TRAIN) {
            config.insert(PROXIMAL_MU_KEY, mu);
        }
        let content = RecordDict::new()
            .with(self.config.arrayrecord_key.as_str(), arrays.clone())
            .with(self.config.configrecord_key.as_str(), config);
        Message::new(content, 0, kind).with_group_id(round.to_string())
    }
}

/// A train phase's partial aggregate: the model's sums and the metrics' sums.
struct TrainSums {
    arrays: ArrayAccumulator,
    metrics: MetricAccumulator,
    /// A robust aggregator's replies, held instead of summed into `arrays`.
    buffer: Option<ReplyBuffer>,
    /// Valid replies folded, and how many of their updates were clipped (DP).
    counted: usize,
    clipped: usize,
}

impl Mergeable for TrainSums {
    fn empty_like(&self) -> Self {
        TrainSums {
            arrays: self.arrays.empty_like(),
            metrics: self.metrics.empty_like(),
            buffer: self.buffer.as_ref().map(ReplyBuffer::empty_like),
            counted: 0,
            clipped: 0,
        }
    }

    fn merge(&mut self, later: Self) {
        self.arrays.merge(later.arrays);
        self.metrics.merge(later.metrics);
        if let (Some(buffer), Some(later)) = (&mut self.buffer, later.buffer) {
            buffer.merge(later);
        }
        self.counted += later.counted;
        self.clipped += later.clipped;
    }
}

/// A round's clip: by the server (each reply's update, before folding) or by the nodes
/// (whose adaptive mod reports `norm_bit`).
struct Clip {
    server: bool,
    /// The norm adapts: nodes must report `norm_bit`.
    adaptive: bool,
    global: Arc<ArrayRecord>,
    norm: f64,
}

/// The train phase's fold into `TrainSums`: what a reply must be to count, and how the
/// valid ones are summed (or held, for a robust rule), in canonical order.
fn train_fold(
    plan: ShardPlan,
    sums: TrainSums,
    c: &FedAvgConfig,
    clip: Option<Clip>,
) -> Arc<PhaseFold<TrainSums>> {
    let (arrays_key, weight_key) = (c.arrayrecord_key.clone(), c.weighted_by_key.clone());
    let adaptive_client = clip.as_ref().is_some_and(|c| !c.server && c.adaptive);
    let check = {
        let (arrays_key, weight_key) = (arrays_key.clone(), weight_key.clone());
        move |total: &TrainSums, m: &Message| {
            let r = reply::train_reply(m, &arrays_key, &weight_key)?;
            total.arrays.check(r.arrays)?;
            if adaptive_client && r.metrics.get(dp::NORM_BIT_KEY).is_err() {
                return Err(Rejection::NoMetrics(format!(
                    "no {:?} metric: with client-side adaptive clipping every node needs \
                     dp::adaptive_clipping_mod",
                    dp::NORM_BIT_KEY
                )));
            }
            match &total.buffer {
                Some(buffer) => buffer
                    .reserve(r.arrays.num_bytes())
                    .map_err(|limit| Rejection::BufferFull { limit }),
                None => Ok(()),
            }
        }
    };
    let fold = move |p: &mut TrainSums, run: Vec<Message>| {
        fold_train(p, &run, &arrays_key, &weight_key, clip.as_ref());
    };
    PhaseFold::new(plan, sums, Box::new(check), Box::new(fold))
}

/// Folds train replies already checked by `train_fold`'s check, in the order given.
fn fold_train(
    sums: &mut TrainSums,
    run: &[Message],
    arrays_key: &str,
    weight_key: &str,
    clip: Option<&Clip>,
) {
    // The server's clip makes new arrays, which the checked views then borrow.
    let clipped: Vec<Option<ArrayRecord>> = run
        .iter()
        .map(|message| {
            let clip = clip.filter(|c| c.server)?;
            let r = reply::train_reply(message, arrays_key, weight_key).ok()?;
            let (arrays, was_clipped) = dp::clip_update(r.arrays, &clip.global, clip.norm);
            sums.clipped += usize::from(was_clipped);
            Some(arrays)
        })
        .collect();
    let mut checked = Vec::with_capacity(run.len());
    let mut metrics = Vec::with_capacity(run.len());
    for (message, own) in run.iter().zip(&clipped) {
        let read = reply::train_reply(message, arrays_key, weight_key).and_then(|r| {
            let arrays = own.as_ref().unwrap_or(r.arrays);
            Ok((sums.arrays.check(arrays)?, arrays, r))
        });
        if let Ok((checked_arrays, arrays, r)) = read {
            sums.counted += 1;
            if clip.is_some_and(|c| !c.server) && norm_bit(r.metrics) {
                sums.clipped += 1;
            }
            match &mut sums.buffer {
                Some(buffer) => buffer.push(Buffered {
                    node: message.metadata.src_node_id,
                    arrays: arrays.clone(),
                    metrics: r.metrics.clone(),
                    weight: r.weight,
                }),
                None => checked.push((checked_arrays, r.weight)),
            }
            metrics.push((r.metrics, r.weight));
        }
    }
    sums.arrays.fold(&checked);
    for (m, w) in metrics {
        sums.metrics.fold(m, w);
    }
}

/// Whether a reply's `norm_bit` says its node clipped (truthy, as Flower reads it).
fn norm_bit(metrics: &MetricRecord) -> bool {
    metrics
        .get_f64(dp::NORM_BIT_KEY)
        .is_ok_and(|bit| bit != 0.0)
}

/// The evaluate phase's fold: metrics only, in canonical order.
fn evaluate_fold(plan: ShardPlan, weight_key: &str) -> Arc<PhaseFold<MetricAccumulator>> {
    let (check_key, fold_key) = (weight_key.to_owned(), weight_key.to_owned());
    PhaseFold::new(
        plan,
        MetricAccumulator::new(weight_key),
        Box::new(move |_, m| reply::evaluate_reply(m, &check_key).map(drop)),
        Box::new(move |p, run| fold_evaluate(p, &run, &fold_key)),
    )
}

fn fold_evaluate(metrics: &mut MetricAccumulator, run: &[Message], weight_key: &str) {
    for message in run {
        if let Ok((m, w)) = reply::evaluate_reply(message, weight_key) {
            metrics.fold(m, w);
        }
    }
}

/// The aggregated metrics of a phase; keys the replies disagreed on are logged and left out.
fn finish_metrics(phase: &Phase<'_>, metrics: MetricAccumulator) -> MetricRecord {
    let (out, dropped) = metrics.finish();
    for (key, why) in dropped {
        warn!(key, why, "metric left out of the aggregate");
        phase.log(format!(
            "round {}: {} metric {key:?} not aggregated: {why}",
            phase.round, phase.name
        ));
    }
    phase.log_metrics(&out);
    out
}

impl Phase<'_> {
    /// The phase's aggregated metrics, in one line.
    fn log_metrics(&self, metrics: &MetricRecord) {
        if !metrics.is_empty() {
            self.log(format!(
                "round {}: {} metrics: {}",
                self.round,
                self.name,
                show(metrics)
            ));
        }
    }
}

/// Keeps the run's state after `round` in the grid. A grid that cannot keep checkpoints
/// (`Unsupported`) is fine: the run simply cannot resume. Any other failure is reported and
/// the run goes on: losing the ability to resume is no reason to lose the run.
async fn save_checkpoint(
    grid: &dyn Grid,
    num_rounds: u64,
    round: u64,
    seed: u64,
    history: &History,
    server: &ServerState,
) {
    // Off the async threads: encoding copies the whole model.
    let history = history.clone();
    let server = server.clone();
    let encoded = match tokio::task::spawn_blocking(move || {
        checkpoint::encode(num_rounds, round, seed, &history, &server)
    })
    .await
    {
        Ok(encoded) => encoded.map_err(|e| e.to_string()),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(e.to_string()),
    };
    let failure = match encoded {
        Ok(bytes) => match grid.save_checkpoint(Bytes::from(bytes)).await {
            Ok(()) => {
                debug!(round, "checkpoint saved");
                return;
            }
            Err(GridError::Unsupported(_)) => return,
            Err(e) => e.to_string(),
        },
        Err(e) => e,
    };
    warn!(round, "could not save a checkpoint: {failure}");
    log(
        grid,
        format!(
            "round {round}: could not save a checkpoint ({failure}); the run goes on, but after \
             a SuperLink restart it would resume from an earlier round"
        ),
    );
}

/// The model's sha256 (see `checkpoint::model_sha256`), on a blocking thread: hashing a
/// large model takes a while.
async fn digest(round: u64, arrays: &ArrayRecord) -> Result<String, StrategyError> {
    let arrays = arrays.clone();
    match tokio::task::spawn_blocking(move || model_sha256(&arrays)).await {
        Ok(digest) => Ok(digest),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime that is shutting down cancels a blocking task.
        Err(_) => Err(StrategyError::Grid {
            round,
            source: GridError::Stopped,
        }),
    }
}

/// Runs the user's central evaluation on a blocking thread: it may be as slow as training.
async fn central_evaluate(
    f: &Arc<EvaluateFn>,
    round: u64,
    arrays: &ArrayRecord,
) -> Result<Option<MetricRecord>, StrategyError> {
    let (f, model) = (Arc::clone(f), arrays.clone());
    match tokio::task::spawn_blocking(move || f(round, &model)).await {
        Ok(metrics) => Ok(metrics),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime that is shutting down cancels a blocking task.
        Err(_) => Err(StrategyError::Grid {
            round,
            source: GridError::Stopped,
        }),
    }
}

fn log(grid: &dyn Grid, line: String) {
    tracing::info!("{line}");
    grid.emit(RunEvent::Log(line));
}

/// A float with at most six decimals and no trailing zeros (`2.5`, `0.123457`).
fn short(x: f64) -> String {
    let s = format!("{x:.6}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `key=value` pairs for a log line.
fn show(metrics: &MetricRecord) -> String {
    let pairs: Vec<String> = metrics
        .iter()
        .map(|(k, v)| match v {
            MetricValue::F64(x) => format!("{k}={}", short(*x)),
            MetricValue::I64(x) => format!("{k}={x}"),
            MetricValue::U64(x) => format!("{k}={x}"),
            MetricValue::F64List(x) => format!("{k}={x:.4?}"),
            MetricValue::I64List(x) => format!("{k}={x:?}"),
            MetricValue::U64List(x) => format!("{k}={x:?}"),
        })
        .collect();
    pairs.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_show_metrics_briefly() {
        let mut m = MetricRecord::new();
        m.insert("num-examples", 600i64);
        m.insert("loss", 2.5);
        m.insert("accuracy", 0.123_456_789);
        m.insert("per-class", MetricValue::F64List(vec![0.5, 0.25]));
        assert_eq!(
            show(&m),
            "num-examples=600, loss=2.5, accuracy=0.123457, per-class=[0.5000, 0.2500]"
        );
        assert_eq!(short(3.0), "3");
    }
}
