//! The ClientAppIo API's client side: `ClientAppIoClient` implements
//! `floret_core::ClientAppIo` over gRPC, for a process-isolated ClientApp.

use super::link::Client;
use super::wire::{carrier, context_head};
use crate::TransferStats;
use crate::grpc::options::{ClientOptions, MAX_MESSAGE_LEN};
use crate::link::Link as Channel;
use crate::proto::v1;
use crate::transport_error::{Api, TransportError};
use async_trait::async_trait;
use floret_core::{AppIoError, ClientAppIo, ClientTask, Context, Payload};
use std::time::Duration;

type Rpc = v1::client_app_io_client::ClientAppIoClient<Channel>;

/// A ClientApp process's connection to its SuperNode's ClientAppIo API. Clones share the
/// connection and the chunk cache.
#[derive(Clone)]
pub struct ClientAppIoClient(Client<Rpc>);

/// A client for the ClientAppIo API at `address` (`HOST:PORT`) with default options.
/// Connects lazily, and each call waits up to 30 s for the SuperNode to listen: the
/// process may start a moment before its daemon.
///
/// # Errors
/// [`TransportError::InvalidAddress`] when `address` is not `HOST:PORT`.
pub fn clientappio_client(address: &str) -> Result<ClientAppIoClient, TransportError> {
    clientappio_client_with(address, ClientOptions::default())
}

/// [`clientappio_client`] with explicit options.
///
/// # Errors
/// As [`clientappio_client`].
pub fn clientappio_client_with(
    address: &str,
    options: ClientOptions,
) -> Result<ClientAppIoClient, TransportError> {
    Client::connect(Api::ClientAppIo, address, options, |channel| {
        Rpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_MESSAGE_LEN)
    })
    .map(ClientAppIoClient)
}

impl ClientAppIoClient {
    /// Chunks fetched and uploaded so far, and those held in the cache now.
    pub fn transfer_stats(&self) -> TransferStats {
        self.0.link.transfer_stats()
    }
}

#[async_trait]
impl ClientAppIo for ClientAppIoClient {
    async fn next_task(
        &self,
        token: &str,
        timeout: Duration,
    ) -> Result<Option<ClientTask>, AppIoError> {
        let request = v1::NextTaskRequest {
            token: token.to_string(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        let response = self
            .0
            .call(timeout, &request, |mut rpc, r| async move {
                rpc.next_task(r).await
            })
            .await?;
        let (message, context) = match (response.message, response.context) {
            (None, None) => return Ok(None),
            (Some(m), Some(c)) => (m, c),
            _ => {
                return Err(self
                    .0
                    .link
                    .invalid_reply("a task without its message or context"));
            }
        };
        let (mut messages, context) = self
            .0
            .link
            .receive_in_context(token, vec![message], context)
            .await?;
        let message = messages
            .pop()
            .ok_or_else(|| self.0.link.invalid_reply("a task that did not assemble"))?;
        Ok(Some(ClientTask { message, context }))
    }

    async fn complete_task(
        &self,
        token: &str,
        message_id: &str,
        reply: Payload,
        context: Context,
    ) -> Result<(), AppIoError> {
        let head = context_head(&context);
        let carriers = [carrier(reply), carrier(Payload::Content(context.state))];
        let (envelopes, chunks) = self.0.link.pack(&carriers).await;
        let [reply, state]: [_; 2] = envelopes
            .try_into()
            .map_err(|_| AppIoError::Invalid("packing two messages gave another number".into()))?;
        let request = v1::CompleteTaskRequest {
            token: token.to_string(),
            message_id: message_id.to_string(),
            reply: Some(reply),
            context: Some(v1::AppContext {
                context: Some(head),
                state: Some(state),
            }),
        };
        self.0
            .link
            .push(token, &chunks, || async {
                let response = self
                    .0
                    .call(Duration::ZERO, &request, |mut rpc, r| async move {
                        rpc.complete_task(r).await
                    })
                    .await?;
                Ok(((), response.missing_object_ids))
            })
            .await
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

impl std::fmt::Debug for ClientAppIoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAppIoClient")
            .field("address", &self.0.link.address())
            .finish_non_exhaustive()
    }
}
