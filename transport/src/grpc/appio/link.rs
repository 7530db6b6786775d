//! What both AppIo clients share: the connection to the daemon, calls that wait for the
//! daemon to listen, and the chunk transfers of large arrays both ways. [`Client`] is the
//! whole of an AppIo client but its API's stub, so that each call is written once.

use super::wire::context_from_parts;
use crate::grpc::options::{ClientOptions, MAX_MESSAGE_LEN, link};
use crate::grpc::status::{refused, to_appio_error};
use crate::link::Link as Channel;
use crate::objects::assembly::Assembly;
use crate::objects::cache::ChunkCache;
use crate::objects::envelope::{self, Opened};
use crate::objects::id::ObjectId;
use crate::objects::outbox::{pack, requested};
use crate::objects::store::Counters;
use crate::objects::{TransferStats, deadline_after};
use crate::proto::v1;
use crate::transport_error::{Api, TransportError};
use bytes::Bytes;
use floret_core::{AppIoError, Context, Message};
use futures_util::{StreamExt, TryStreamExt, stream};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Response, Status};

type ObjectsRpc = v1::app_io_objects_client::AppIoObjectsClient<Channel>;

/// Rounds of "push what is missing, then send again" before giving up.
const PUSH_ROUNDS: usize = 3;

/// An AppIo client: the [`Link`] to its daemon and `R`, the API's generated stub over the
/// link's channel. Clones share the connection and the chunk cache.
#[derive(Clone)]
pub(crate) struct Client<R> {
    pub(crate) link: Arc<Link>,
    rpc: R,
}

impl<R: Clone> Client<R> {
    /// A client of `api` at `address`; `stub` makes the API's stub over the channel (with
    /// `MAX_MESSAGE_LEN` as its message limits).
    pub(crate) fn connect(
        api: Api,
        address: &str,
        options: ClientOptions,
        stub: impl FnOnce(Channel) -> R,
    ) -> Result<Client<R>, TransportError> {
        let link = Link::new(api, address, options)?;
        let rpc = stub(link.channel());
        Ok(Client {
            link: Arc::new(link),
            rpc,
        })
    }

    /// The unary call `method` of the stub with `request`, as [`Link::call`] makes it.
    pub(crate) async fn call<Q, T, Fut>(
        &self,
        wait: Duration,
        request: &Q,
        method: impl Fn(R, Q) -> Fut,
    ) -> Result<T, AppIoError>
    where
        Q: Clone,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.link.call_on(wait, &self.rpc, request, method).await
    }
}

pub(crate) struct Link {
    /// Which API this is, for error messages.
    api: Api,
    /// `HOST:PORT` as given, for error messages.
    address: String,
    /// Lazy: nothing is opened until the first call.
    channel: Channel,
    objects: ObjectsRpc,
    options: ClientOptions,
    /// Verified chunks of transfers abandoned mid-way, for a retry to skip.
    cache: Arc<ChunkCache>,
    counters: Counters,
}

impl Link {
    fn new(api: Api, address: &str, options: ClientOptions) -> Result<Link, TransportError> {
        let channel = link(api, address, &options, MAX_MESSAGE_LEN)?;
        let objects = ObjectsRpc::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN);
        Ok(Link {
            api,
            address: address.to_string(),
            channel,
            objects,
            cache: Arc::new(ChunkCache::new(options.cache_ttl)),
            options,
            counters: Counters::default(),
        })
    }

    fn channel(&self) -> Channel {
        self.channel.clone()
    }

    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    pub(crate) fn transfer_stats(&self) -> TransferStats {
        TransferStats::of(&self.counters, self.cache.size())
    }

    /// The daemon answered something this client cannot use.
    pub(crate) fn invalid_reply(&self, what: impl std::fmt::Display) -> AppIoError {
        AppIoError::Invalid(format!(
            "{} at {} sent {what}",
            self.api.name(),
            self.address
        ))
    }

    /// One unary call, made by `call`. While nothing listens at the address (the daemon
    /// is starting), it is made again after growing pauses, for up to `connect_patience`:
    /// such a request never left, so repeating it is safe. Each attempt may take
    /// `request_timeout` plus `wait` (the call's own long-poll time).
    async fn call<T, F, Fut>(&self, wait: Duration, mut call: F) -> Result<T, AppIoError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let limit = self.options.request_timeout.saturating_add(wait);
        let deadline = deadline_after(self.options.connect_patience);
        let mut pause = Duration::from_millis(20);
        loop {
            match tokio::time::timeout(limit, call()).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if refused(&status) && deadline_after(pause) <= deadline => {
                    tracing::debug!(address = %self.address, "nothing listens yet; retrying in {pause:?}");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Ok(Err(status)) => return Err(to_appio_error(&status, self.api, &self.address)),
                Err(_) => {
                    return Err(AppIoError::Unavailable(format!(
                        "{} at {} did not answer within {limit:?}",
                        self.api.name(),
                        self.address
                    )));
                }
            }
        }
    }

    /// [`Link::call`] of `method` on `rpc` with `request`: each attempt gets its own clone
    /// of both, since a tonic call takes them by value.
    async fn call_on<R, Q, T, Fut>(
        &self,
        wait: Duration,
        rpc: &R,
        request: &Q,
        method: impl Fn(R, Q) -> Fut,
    ) -> Result<T, AppIoError>
    where
        R: Clone,
        Q: Clone,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        self.call(wait, || method(rpc.clone(), request.clone()))
            .await
    }

    /// Splits messages into envelopes and the chunks they name.
    pub(crate) async fn pack(
        &self,
        messages: &[Message],
    ) -> (Vec<v1::Envelope>, HashMap<ObjectId, Bytes>) {
        pack(messages, &self.options.chunking, &self.counters).await
    }

    /// Sends a batch that names `chunks`: `attempt` makes the call and answers its result
    /// with the ids of the chunks the daemon lacks; those are pushed and the call repeated.
    pub(crate) async fn push<T, F, Fut>(
        &self,
        token: &str,
        chunks: &HashMap<ObjectId, Bytes>,
        mut attempt: F,
    ) -> Result<T, AppIoError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, Vec<String>), AppIoError>>,
    {
        for _ in 0..PUSH_ROUNDS {
            let (result, missing) = attempt().await?;
            if missing.is_empty() {
                return Ok(result);
            }
            let uploads = requested(&missing, chunks).map_err(|s| {
                self.invalid_reply(format_args!(
                    "a request for chunk {s:?}, which this call does not carry"
                ))
            })?;
            stream::iter(uploads.into_iter().map(Ok))
                .try_for_each_concurrent(self.options.concurrency(), |(id, c)| {
                    self.upload(token, id, c)
                })
                .await?;
        }
        Err(AppIoError::Invalid(format!(
            "{} at {} still lacked chunks after {PUSH_ROUNDS} uploads",
            self.api.name(),
            self.address
        )))
    }

    async fn upload(&self, token: &str, id: ObjectId, content: Bytes) -> Result<(), AppIoError> {
        let len = content.len();
        let request = v1::AppPushObjectRequest {
            token: token.to_string(),
            object_id: id.to_hex(),
            content,
        };
        self.call_on(
            Duration::ZERO,
            &self.objects,
            &request,
            |mut rpc, r| async move { rpc.push_object(r).await },
        )
        .await?;
        self.counters.sent(len);
        Ok(())
    }

    /// Fetches one chunk, checks it against its id and copies it into place.
    async fn fetch(
        &self,
        token: &str,
        id: ObjectId,
        assembly: &Assembly,
    ) -> Result<(), AppIoError> {
        let request = v1::AppPullObjectRequest {
            token: token.to_string(),
            object_id: id.to_hex(),
        };
        let content = self
            .call_on(
                Duration::ZERO,
                &self.objects,
                &request,
                |mut rpc, r| async move { rpc.pull_object(r).await },
            )
            .await?
            .content;
        let len = content.len();
        assembly.receive(id, content).await.map_err(|actual| {
            self.invalid_reply(format_args!("chunk {id} corrupt: its sha256 is {actual}"))
        })?;
        self.counters.received(len);
        Ok(())
    }

    /// Receives `envelopes` and the state of `context` in one batch, so that their chunks
    /// are fetched together: the messages, and the context they came with.
    pub(crate) async fn receive_in_context(
        &self,
        token: &str,
        mut envelopes: Vec<v1::Envelope>,
        context: v1::AppContext,
    ) -> Result<(Vec<Message>, Context), AppIoError> {
        let no_state = || self.invalid_reply("a context without its state");
        envelopes.push(context.state.ok_or_else(no_state)?);
        let mut messages = self.receive(token, envelopes).await?;
        let state = messages.pop().ok_or_else(no_state)?;
        let context = context_from_parts(context.context, state)
            .map_err(|e| self.invalid_reply(format_args!("an invalid context: {e}")))?;
        Ok((messages, context))
    }

    /// Turns received envelopes into messages: fetches the chunks not in the cache (a few
    /// at a time, each copied into place as it arrives), assembles, and tells the daemon it may free what it kept for us.
    pub(crate) async fn receive(
        &self,
        token: &str,
        envelopes: Vec<v1::Envelope>,
    ) -> Result<Vec<Message>, AppIoError> {
        self.cache.expire();
        let opened = envelopes
            .into_iter()
            .map(envelope::open)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid_reply(format_args!("an invalid message: {e}")))?;
        let needed: HashSet<ObjectId> = opened.iter().flat_map(Opened::chunk_ids).collect();
        let deliveries = envelope::deliveries(&opened);
        let (assembly, missing) = Assembly::start(opened, self.cache.clone());
        stream::iter(missing)
            .map(|id| self.fetch(token, id, &assembly))
            .buffer_unordered(self.options.concurrency())
            .try_collect::<()>()
            .await?;
        let messages = assembly
            .finish()
            .await
            .map_err(|e| AppIoError::Invalid(format!("assembling a message failed: {e}")))?
            .map_err(|(_, e)| self.invalid_reply(format_args!("an invalid message: {e}")));
        self.cache.remove_all(needed);
        if !deliveries.is_empty() {
            let mut rpc = self.objects.clone();
            let request = v1::AppConfirmDeliveriesRequest {
                token: token.to_string(),
                delivery_ids: deliveries,
            };
            // Best effort: if it is lost, the daemon frees the chunks when its lease ends.
            tokio::spawn(async move {
                if let Err(status) = rpc.confirm_deliveries(request).await {
                    tracing::debug!(%status, "could not confirm deliveries");
                }
            });
        }
        messages
    }
}
