//! The Fleet API's client side: `FleetClient` implements `floret_core::Fleet` over gRPC, so
//! a SuperNode runs unchanged against a remote SuperLink.
//!
//! Connections are lazy and self-healing: nothing is opened until the first call, and after
//! a failure the next call connects again. Chunk transfers retry through such reconnects for
//! `transfer_patience`, fetching only the chunks not yet received.

use super::node_auth::{path, sign};
use super::options::{ClientOptions, MAX_FAB_MESSAGE_LEN, MAX_MESSAGE_LEN, link};
use super::status::{Failure, classify, to_fleet_error};
use crate::convert_runs::run_info_from_proto;
use crate::limits::batch_run;
use crate::link::Link;
use crate::meter;
use crate::objects::assembly::Assembly;
use crate::objects::cache::ChunkCache;
use crate::objects::envelope::{self, Opened};
use crate::objects::id::ObjectId;
use crate::objects::outbox::{pack, requested};
use crate::objects::store::Counters;
use crate::objects::{TransferStats, deadline_after};
use crate::proto::v1;
use crate::transport_error::{Api, TransportError};
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{Fleet, FleetError, Message, RegisterNode, Registration, RunInfo};
use futures_util::{StreamExt, TryStreamExt, stream};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::{Response, Status, Streaming};

type Rpc = v1::fleet_client::FleetClient<Link>;

/// Messages a `Subscribe` reader may have assembled before the SuperNode takes them.
const SUBSCRIBE_BUFFER: usize = 16;
/// Rounds of "push what is missing, then PushMessages again" before giving up.
const PUSH_ROUNDS: usize = 3;

/// A SuperNode's connection to a SuperLink's Fleet API. Clones share the connection and
/// the chunk cache.
#[derive(Clone)]
pub struct FleetClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// `HOST:PORT` as given, for error messages.
    address: String,
    rpc: Rpc,
    options: ClientOptions,
    /// Verified chunks of transfers abandoned mid-way, for a retry to skip.
    cache: Arc<ChunkCache>,
    counters: Counters,
    /// Prometheus counters of the link's transport: messages received and replies sent.
    meter: meter::Counters,
}

/// A client for the Fleet API at `address` (`HOST:PORT`) with default options. Connects
/// lazily: a SuperNode may start before its SuperLink.
///
/// # Errors
/// [`TransportError::InvalidAddress`] when `address` is not `HOST:PORT`.
pub fn fleet_client(address: &str) -> Result<FleetClient, TransportError> {
    fleet_client_with(address, ClientOptions::default())
}

/// [`fleet_client`] with explicit options.
///
/// # Errors
/// As [`fleet_client`].
pub fn fleet_client_with(
    address: &str,
    options: ClientOptions,
) -> Result<FleetClient, TransportError> {
    let channel = link(Api::Fleet, address, &options, MAX_FAB_MESSAGE_LEN)?;
    let meter = channel.counters().clone();
    // Responses may be as large as a FAB (GetFab); requests stay small.
    let rpc = Rpc::new(channel)
        .max_decoding_message_size(MAX_FAB_MESSAGE_LEN)
        .max_encoding_message_size(MAX_MESSAGE_LEN);
    Ok(FleetClient {
        inner: Arc::new(Inner {
            address: address.to_string(),
            rpc,
            cache: Arc::new(ChunkCache::new(options.cache_ttl)),
            options,
            counters: Counters::default(),
            meter,
        }),
    })
}

/// How one chunk transfer attempt ended.
enum Attempt<T> {
    Done(T),
    /// Worth another try after a pause (the link is down or slow).
    Retry(FleetError),
    Fail(FleetError),
}

impl FleetClient {
    /// Chunks fetched and uploaded so far, and those held in the cache now.
    pub fn transfer_stats(&self) -> TransferStats {
        TransferStats::of(&self.inner.counters, self.inner.cache.size())
    }

    fn rpc(&self) -> Rpc {
        self.inner.rpc.clone()
    }

    /// A request to `path`, signed when this client has a node key (node authentication).
    /// Called once per attempt, so that every retry carries a fresh nonce.
    fn signed<T: prost::Message>(&self, path: &str, body: T) -> tonic::Request<T> {
        sign(self.inner.options.node_key.as_ref(), path, body)
    }

    fn error(&self, status: &Status, asked: u64) -> FleetError {
        to_fleet_error(status, &self.inner.address, asked)
    }

    fn timed_out(&self) -> FleetError {
        FleetError::Unavailable(format!(
            "the SuperLink at {} did not answer within {:?}",
            self.inner.address, self.inner.options.request_timeout
        ))
    }

    /// One unary call with the request timeout; `asked` is the node or run id the call is
    /// about, reported when the SuperLink does not know it.
    async fn call<T>(
        &self,
        asked: u64,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, FleetError> {
        match tokio::time::timeout(self.inner.options.request_timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.error(&status, asked)),
            Err(_) => Err(self.timed_out()),
        }
    }

    /// One attempt of a chunk transfer call, sorted into done / retry / fail.
    async fn attempt<T>(
        &self,
        asked: u64,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Attempt<T> {
        match tokio::time::timeout(self.inner.options.request_timeout, call).await {
            Ok(Ok(response)) => Attempt::Done(response.into_inner()),
            Ok(Err(status)) => match classify(&status) {
                Failure::Transport(_) => Attempt::Retry(self.error(&status, asked)),
                _ => Attempt::Fail(self.error(&status, asked)),
            },
            Err(_) => Attempt::Retry(self.timed_out()),
        }
    }

    /// Repeats `attempt` with growing pauses while it asks for a retry and the patience
    /// lasts.
    async fn with_patience<T, F, Fut>(&self, mut attempt: F) -> Result<T, FleetError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T>>,
    {
        let deadline = deadline_after(self.inner.options.transfer_patience);
        let mut pause = Duration::from_millis(50);
        loop {
            match attempt().await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Fail(e) => return Err(e),
                Attempt::Retry(e) => {
                    if deadline_after(pause) > deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, "chunk transfer interrupted; retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Fetches one chunk, checks it against its id and copies it into place.
    async fn fetch(
        &self,
        node_id: u64,
        id: ObjectId,
        assembly: &Assembly,
    ) -> Result<(), FleetError> {
        let request = v1::PullObjectRequest {
            node_id,
            object_id: id.to_hex(),
        };
        let content = self
            .with_patience(|| {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move {
                    self.attempt(
                        node_id,
                        rpc.pull_object(self.signed(path::PULL_OBJECT, request)),
                    )
                    .await
                }
            })
            .await?
            .content;
        let len = content.len();
        assembly.receive(id, content).await.map_err(|actual| {
            FleetError::Invalid(format!(
                "chunk {id} from the SuperLink at {} is corrupt: its sha256 is {actual}",
                self.inner.address
            ))
        })?;
        self.inner.counters.received(len);
        Ok(())
    }

    /// Uploads one chunk of a message of `run_id` (0: of several runs).
    async fn upload(
        &self,
        (node_id, run_id): (u64, u64),
        id: ObjectId,
        content: Bytes,
    ) -> Result<(), FleetError> {
        let len = content.len();
        let request = v1::PushObjectRequest {
            node_id,
            object_id: id.to_hex(),
            content,
            run_id,
        };
        self.with_patience(|| {
            let mut rpc = self.rpc();
            let request = request.clone();
            async move {
                self.attempt(
                    node_id,
                    rpc.push_object(self.signed(path::PUSH_OBJECT, request)),
                )
                .await
            }
        })
        .await?;
        self.inner.counters.sent(len);
        Ok(())
    }

    /// Turns received envelopes into messages: fetches the chunks not in the cache (a few
    /// at a time, each copied into place as it arrives), assembles, and tells the SuperLink
    /// it may free what it kept for us.
    async fn receive(
        &self,
        node_id: u64,
        envelopes: Vec<v1::Envelope>,
    ) -> Result<Vec<Message>, FleetError> {
        let cache = &self.inner.cache;
        cache.expire();
        let opened = envelopes
            .into_iter()
            .map(envelope::open)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                FleetError::Invalid(format!("the SuperLink sent an invalid message: {e}"))
            })?;
        let deliveries = envelope::deliveries(&opened);
        let needed: HashSet<ObjectId> = opened.iter().flat_map(Opened::chunk_ids).collect();
        let (assembly, missing) = Assembly::start(opened, cache.clone());
        stream::iter(missing)
            .map(|id| self.fetch(node_id, id, &assembly))
            .buffer_unordered(self.inner.options.concurrency())
            .try_collect::<()>()
            .await?;
        let messages = assemble(assembly).await;
        if let Ok(messages) = &messages {
            self.inner
                .meter
                .messages_received
                .increment(messages.len() as u64);
        }
        cache.remove_all(needed);
        if !deliveries.is_empty() {
            let mut rpc = self.rpc();
            let request = self.signed(
                path::CONFIRM_DELIVERIES,
                v1::ConfirmDeliveriesRequest {
                    node_id,
                    delivery_ids: deliveries,
                },
            );
            // Best effort: if it is lost, the SuperLink frees the chunks when its lease ends.
            tokio::spawn(async move {
                if let Err(status) = rpc.confirm_deliveries(request).await {
                    tracing::debug!(node_id, %status, "could not confirm deliveries");
                }
            });
        }
        messages
    }

    /// Reads a `Subscribe` stream into `tx` until either side ends.
    async fn forward(
        self,
        node_id: u64,
        mut envelopes: Streaming<v1::Envelope>,
        tx: mpsc::Sender<Message>,
    ) {
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = envelopes.message() => next,
            };
            let envelope = match next {
                Ok(Some(envelope)) => envelope,
                Ok(None) => {
                    tracing::debug!(node_id, "the SuperLink ended the Subscribe stream");
                    return;
                }
                Err(status) => {
                    let e = self.error(&status, node_id);
                    tracing::debug!(node_id, error = %e, "Subscribe stream broke");
                    return;
                }
            };
            let received = tokio::select! {
                () = tx.closed() => return,
                received = self.receive(node_id, vec![envelope]) => received,
            };
            match received {
                Ok(messages) => {
                    for m in messages {
                        if tx.send(m).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(node_id, error = %e, "dropped a message that could not be received")
                }
            }
        }
    }
}

/// The messages of a batch whose chunks have all been received.
async fn assemble(assembly: Assembly) -> Result<Vec<Message>, FleetError> {
    assembly
        .finish()
        .await
        .map_err(|e| FleetError::Invalid(format!("assembling a message failed: {e}")))?
        .map_err(|(_, e)| {
            FleetError::Invalid(format!("the SuperLink sent an invalid message: {e}"))
        })
}

#[async_trait]
impl Fleet for FleetClient {
    async fn register_node(&self, request: RegisterNode) -> Result<Registration, FleetError> {
        let public_key = match &self.inner.options.node_key {
            Some(key) if request.public_key.is_empty() => key.public_key().spki_der().clone(),
            _ => request.public_key,
        };
        let request = v1::RegisterNodeRequest {
            public_key,
            heartbeat_interval: request.heartbeat_interval,
        };
        let mut rpc = self.rpc();
        let reply = self
            .call(
                0,
                rpc.register_node(self.signed(path::REGISTER_NODE, request)),
            )
            .await?;
        Ok(Registration {
            node_id: reply.node_id,
            incarnation: reply.superlink_incarnation,
        })
    }

    async fn deactivate_node(&self, node_id: u64) -> Result<(), FleetError> {
        let mut rpc = self.rpc();
        self.call(
            node_id,
            rpc.deactivate_node(
                self.signed(path::DEACTIVATE_NODE, v1::DeactivateNodeRequest { node_id }),
            ),
        )
        .await?;
        Ok(())
    }

    async fn heartbeat(&self, node_id: u64, heartbeat_interval: f64) -> Result<(), FleetError> {
        let mut rpc = self.rpc();
        let request = v1::HeartbeatRequest {
            node_id,
            heartbeat_interval,
        };
        self.call(
            node_id,
            rpc.heartbeat(self.signed(path::HEARTBEAT, request)),
        )
        .await?;
        Ok(())
    }

    async fn pull_messages(&self, node_id: u64) -> Result<Vec<Message>, FleetError> {
        let mut rpc = self.rpc();
        let response = self
            .call(
                node_id,
                rpc.pull_messages(
                    self.signed(path::PULL_MESSAGES, v1::PullMessagesRequest { node_id }),
                ),
            )
            .await?;
        self.receive(node_id, response.envelopes).await
    }

    async fn push_messages(&self, node_id: u64, messages: Vec<Message>) -> Result<(), FleetError> {
        let (envelopes, chunks) = pack(
            &messages,
            &self.inner.options.chunking,
            &self.inner.counters,
        )
        .await;
        let run_id = batch_run(messages.iter().map(|m| m.metadata.run_id));
        for _ in 0..PUSH_ROUNDS {
            let mut rpc = self.rpc();
            let request = v1::PushMessagesRequest {
                node_id,
                envelopes: envelopes.clone(),
            };
            let missing = self
                .call(
                    node_id,
                    rpc.push_messages(self.signed(path::PUSH_MESSAGES, request)),
                )
                .await?
                .missing_object_ids;
            if missing.is_empty() {
                self.inner
                    .meter
                    .messages_sent
                    .increment(messages.len() as u64);
                return Ok(());
            }
            let uploads = requested(&missing, &chunks).map_err(|s| {
                FleetError::Invalid(format!(
                    "the SuperLink asked for chunk {s:?}, which these messages do not contain"
                ))
            })?;
            stream::iter(uploads.into_iter().map(Ok))
                .try_for_each_concurrent(self.inner.options.concurrency(), |(id, c)| {
                    self.upload((node_id, run_id), id, c)
                })
                .await?;
        }
        Err(FleetError::Invalid(format!(
            "the SuperLink still lacked chunks after {PUSH_ROUNDS} uploads"
        )))
    }

    async fn get_run(&self, run_id: u64) -> Result<RunInfo, FleetError> {
        let mut rpc = self.rpc();
        let run = self
            .call(
                run_id,
                rpc.get_run(self.signed(path::GET_RUN, v1::GetRunRequest { run_id })),
            )
            .await?
            .run
            .ok_or_else(|| {
                FleetError::Invalid("the SuperLink answered GetRun without a run".into())
            })?;
        run_info_from_proto(run)
            .map_err(|e| FleetError::Invalid(format!("the SuperLink sent an invalid run: {e}")))
    }

    async fn get_fab(&self, fab_hash: &str) -> Result<Bytes, FleetError> {
        let mut rpc = self.rpc();
        let request = v1::GetFabRequest {
            fab_hash: fab_hash.to_string(),
        };
        let fab = self
            .call(0, rpc.get_fab(self.signed(path::GET_FAB, request)))
            .await?
            .fab
            .ok_or_else(|| {
                FleetError::Invalid(format!(
                    "the SuperLink at {} answered GetFab without a FAB",
                    self.inner.address
                ))
            })?;
        Ok(fab.content)
    }

    async fn subscribe(&self, node_id: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        let mut rpc = self.rpc();
        let envelopes = self
            .call(
                node_id,
                rpc.subscribe(self.signed(path::SUBSCRIBE, v1::SubscribeRequest { node_id })),
            )
            .await?;
        let (tx, rx) = mpsc::channel(SUBSCRIBE_BUFFER);
        tokio::spawn(self.clone().forward(node_id, envelopes, tx));
        Ok(rx)
    }
}

impl std::fmt::Debug for FleetClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetClient")
            .field("address", &self.inner.address)
            .finish_non_exhaustive()
    }
}
