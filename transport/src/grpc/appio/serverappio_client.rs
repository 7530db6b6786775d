//! The ServerAppIo API's client side: `ServerAppIoClient` implements
//! `floret_core::ServerAppIo` over gRPC, for a process-isolated ServerApp.

use super::link::Client;
use super::wire::outcome_to_proto;
use crate::TransferStats;
use crate::convert_runs::run_event_to_proto;
use crate::grpc::options::{ClientOptions, MAX_MESSAGE_LEN};
use crate::link::Link as Channel;
use crate::proto::v1;
use crate::transport_error::{Api, TransportError};
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{AppIoError, AppOutcome, Context, Message, NodeSet, RunEvent, ServerAppIo};
use std::time::Duration;

type Rpc = v1::server_app_io_client::ServerAppIoClient<Channel>;

/// A ServerApp process's connection to its SuperLink's ServerAppIo API. Clones share the
/// connection and the chunk cache.
#[derive(Clone)]
pub struct ServerAppIoClient(Client<Rpc>);

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
    Client::connect(Api::ServerAppIo, address, options, |channel| {
        Rpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN)
    })
    .map(ServerAppIoClient)
}

impl ServerAppIoClient {
    /// Chunks fetched and uploaded so far, and those held in the cache now.
    pub fn transfer_stats(&self) -> TransferStats {
        self.0.link.transfer_stats()
    }
}

#[async_trait]
impl ServerAppIo for ServerAppIoClient {
    async fn context(&self, token: &str) -> Result<Context, AppIoError> {
        let request = v1::ContextRequest {
            token: token.to_string(),
        };
        let response = self
            .0
            .call(Duration::ZERO, &request, |mut rpc, r| async move {
                rpc.context(r).await
            })
            .await?;
        let context = response
            .context
            .ok_or_else(|| self.0.link.invalid_reply("no context"))?;
        let (_, context) = self
            .0
            .link
            .receive_in_context(token, Vec::new(), context)
            .await?;
        Ok(context)
    }

    async fn node_ids(&self, token: &str) -> Result<NodeSet, AppIoError> {
        let request = v1::NodeIdsRequest {
            token: token.to_string(),
        };
        let response = self
            .0
            .call(Duration::ZERO, &request, |mut rpc, r| async move {
                rpc.node_ids(r).await
            })
            .await?;
        Ok(response.node_ids.into())
    }

    async fn send(&self, token: &str, messages: Vec<Message>) -> Result<Vec<String>, AppIoError> {
        let (envelopes, chunks) = self.0.link.pack(&messages).await;
        let request = v1::SendRequest {
            token: token.to_string(),
            envelopes,
        };
        self.0
            .link
            .push(token, &chunks, || async {
                let response = self
                    .0
                    .call(Duration::ZERO, &request, |mut rpc, r| async move {
                        rpc.send(r).await
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
            .0
            .call(Duration::ZERO, &request, |mut rpc, r| async move {
                rpc.pull(r).await
            })
            .await?;
        self.0.link.receive(token, response.envelopes).await
    }

    async fn receive(&self, token: &str, timeout: Duration) -> Result<Vec<Message>, AppIoError> {
        let request = v1::ReceiveRequest {
            token: token.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let response = self
            .0
            .call(timeout, &request, |mut rpc, r| async move {
                rpc.receive(r).await
            })
            .await?;
        self.0.link.receive(token, response.envelopes).await
    }

    async fn emit(&self, token: &str, event: RunEvent) -> Result<(), AppIoError> {
        let request = v1::EmitRequest {
            token: token.to_string(),
            event: Some(run_event_to_proto(&event)),
        };
        self.0
            .call(Duration::ZERO, &request, |mut rpc, r| async move {
                rpc.emit(r).await
            })
            .await?;
        Ok(())
    }

    async fn finish(&self, token: &str, outcome: AppOutcome) -> Result<(), AppIoError> {
        let request = outcome_to_proto(token.to_string(), outcome);
        self.0
            .call(Duration::ZERO, &request, |mut rpc, r| async move {
                rpc.finish(r).await
            })
            .await?;
        Ok(())
    }

    async fn load_checkpoint(&self, token: &str) -> Result<Option<Bytes>, AppIoError> {
        let request = v1::LoadCheckpointRequest {
            token: token.to_string(),
        };
        let response = self
            .0
            .call(Duration::ZERO, &request, |mut rpc, r| async move {
                rpc.load_checkpoint(r).await
            })
            .await?;
        Ok(response.checkpoint)
    }

    async fn save_checkpoint(&self, token: &str, checkpoint: Bytes) -> Result<(), AppIoError> {
        let request = v1::SaveCheckpointRequest {
            token: token.to_string(),
            checkpoint,
        };
        self.0
            .call(Duration::ZERO, &request, |mut rpc, r| async move {
                rpc.save_checkpoint(r).await
            })
            .await?;
        Ok(())
    }

    async fn claim(&self) -> Result<Option<String>, AppIoError> {
        let response = self
            .0
            .call(
                Duration::ZERO,
                &v1::ClaimRequest {},
                |mut rpc, r| async move { rpc.claim(r).await },
            )
            .await?;
        Ok(response.token)
    }
}

impl std::fmt::Debug for ServerAppIoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerAppIoClient")
            .field("address", &self.0.link.address())
            .finish_non_exhaustive()
    }
}
