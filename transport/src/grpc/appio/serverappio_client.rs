//! The ServerAppIo API's client side: `ServerAppIoClient` implements
//! `floret_core::ServerAppIo` over gRPC, for a process-isolated ServerApp.

use super::link::Link;
use super::wire::{context_from_parts, outcome_to_proto};
use crate::TransferStats;
use crate::convert_runs::run_event_to_proto;
use crate::grpc::options::{ClientOptions, MAX_MESSAGE_LEN};
use crate::link::Link as Channel;
use crate::proto::v1;
use crate::transport_error::{Api, TransportError};
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{AppIoError, AppOutcome, Context, Message, NodeSet, RunEvent, ServerAppIo};
use std::sync::Arc;
use std::time::Duration;

type Rpc = v1::server_app_io_client::ServerAppIoClient<Channel>;

/// A ServerApp process's connection to its SuperLink's ServerAppIo API. Clones share the
/// connection and the chunk cache.
#[derive(Clone)]
pub struct ServerAppIoClient {
    link: Arc<Link>,
    rpc: Rpc,
}

/// A client for the ServerAppIo API at `address` (`HOST:PORT`) with default options.
/// Connects lazily, and each call waits up to 30 s for the SuperLink to listen: the
/// process may start a moment before its daemon.
///
/// # Errors
/// [`TransportError::InvalidAddress`] when `address` is not `HOST:PORT`.
pub fn serverappio_client(address: &str) -> Result<ServerAppIoClient, TransportError> {
    serverappio_client_with(address, ClientOptions::default())
}

/// [`serverappio_client`] with explicit options.
///
/// # Errors
/// As [`serverappio_client`].
pub fn serverappio_client_with(
    address: &str,
    options: ClientOptions,
) -> Result<ServerAppIoClient, TransportError> {
    let link = Link::new(Api::ServerAppIo, address, options)?;
    let rpc = Rpc::new(link.channel())
        .max_decoding_message_size(MAX_MESSAGE_LEN)
        .max_encoding_message_size(MAX_MESSAGE_LEN);
    Ok(ServerAppIoClient {
        link: Arc::new(link),
        rpc,
    })
}

impl ServerAppIoClient {
    /// Chunks fetched and uploaded so far, and those held in the cache now.
    pub fn transfer_stats(&self) -> TransferStats {
        self.link.transfer_stats()
    }

    fn rpc(&self) -> Rpc {
        self.rpc.clone()
    }
}

#[async_trait]
impl ServerAppIo for ServerAppIoClient {
    async fn context(&self, token: &str) -> Result<Context, AppIoError> {
        let request = v1::ContextRequest {
            token: token.to_string(),
        };
        let response = self
            .link
            .call(Duration::ZERO, || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.context(request).await }
            })
            .await?;
        let context = response
            .context
            .ok_or_else(|| self.link.invalid_reply("no context"))?;
        let state = context
            .state
            .ok_or_else(|| self.link.invalid_reply("a context without its state"))?;
        let state = self
            .link
            .receive(token, vec![state])
            .await?
            .pop()
            .ok_or_else(|| self.link.invalid_reply("a context without its state"))?;
        context_from_parts(context.context, state).map_err(|e| {
            self.link
                .invalid_reply(format_args!("an invalid context: {e}"))
        })
    }

    async fn node_ids(&self, token: &str) -> Result<NodeSet, AppIoError> {
        let request = v1::NodeIdsRequest {
            token: token.to_string(),
        };
        let response = self
            .link
            .call(Duration::ZERO, || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.node_ids(request).await }
            })
            .await?;
        Ok(response.node_ids.into())
    }

    async fn send(&self, token: &str, messages: Vec<Message>) -> Result<Vec<String>, AppIoError> {
        let (envelopes, chunks) = self.link.pack(&messages).await;
        let request = v1::SendRequest {
            token: token.to_string(),
            envelopes,
        };
        self.link
            .push(token, &chunks, || async {
                let response = self
                    .link
                    .call(Duration::ZERO, || {
                        let mut rpc = self.rpc();
                        let request = request.clone();
                        async move { rpc.send(request).await }
                    })
                    .await?;
                Ok((response.message_ids, response.missing_object_ids))
            })
            .await
    }

    async fn pull(&self, token: &str, message_ids: &[String]) -> Result<Vec<Message>, AppIoError> {
        let request = v1::PullRequest {
            token: token.to_string(),
            message_ids: message_ids.to_vec(),
        };
        let response = self
            .link
            .call(Duration::ZERO, || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.pull(request).await }
            })
            .await?;
        self.link.receive(token, response.envelopes).await
    }

    async fn receive(&self, token: &str, timeout: Duration) -> Result<Vec<Message>, AppIoError> {
        let request = v1::ReceiveRequest {
            token: token.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let response = self
            .link
            .call(timeout, || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.receive(request).await }
            })
            .await?;
        self.link.receive(token, response.envelopes).await
    }

    async fn emit(&self, token: &str, event: RunEvent) -> Result<(), AppIoError> {
        let request = v1::EmitRequest {
            token: token.to_string(),
            event: Some(run_event_to_proto(&event)),
        };
        self.link
            .call(Duration::ZERO, || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.emit(request).await }
            })
            .await?;
        Ok(())
    }

    async fn finish(&self, token: &str, outcome: AppOutcome) -> Result<(), AppIoError> {
        let request = outcome_to_proto(token.to_string(), outcome);
        self.link
            .call(Duration::ZERO, || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.finish(request).await }
            })
            .await?;
        Ok(())
    }

    async fn load_checkpoint(&self, token: &str) -> Result<Option<Bytes>, AppIoError> {
        let request = v1::LoadCheckpointRequest {
            token: token.to_string(),
        };
        let response = self
            .link
            .call(Duration::ZERO, || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.load_checkpoint(request).await }
            })
            .await?;
        Ok(response.checkpoint)
    }

    async fn save_checkpoint(&self, token: &str, checkpoint: Bytes) -> Result<(), AppIoError> {
        let request = v1::SaveCheckpointRequest {
            token: token.to_string(),
            checkpoint,
        };
        self.link
            .call(Duration::ZERO, || {
                let mut rpc = self.rpc();
                let request = request.clone();
                async move { rpc.save_checkpoint(request).await }
            })
            .await?;
        Ok(())
    }

    async fn claim(&self) -> Result<Option<String>, AppIoError> {
        let response = self
            .link
            .call(Duration::ZERO, || {
                let mut rpc = self.rpc();
                async move { rpc.claim(v1::ClaimRequest {}).await }
            })
            .await?;
        Ok(response.token)
    }
}

impl std::fmt::Debug for ServerAppIoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAppIoClient")
            .field("address", &self.link.address())
            .finish_non_exhaustive()
    }
}
