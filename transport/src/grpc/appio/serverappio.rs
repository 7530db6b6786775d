//! The ServerAppIo API's server side: gRPC calls in, `dyn ServerAppIo` calls out, with
//! envelopes and chunks in between.

use super::serving::{context_out, poll_timeout, unless_stopped};
use super::wire::{outcome_from_proto, peer};
use crate::convert_runs::run_event_from_proto;
use crate::grpc::TransportKind;
use crate::grpc::inbox;
use crate::grpc::status::{from_appio_error, from_decode_error};
use crate::meter::Counters;
use crate::objects::outbox::Outbox;
use crate::proto::v1;
use crate::transport_error::Api;
use floret_core::ServerAppIo;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Serves one `dyn ServerAppIo`.
pub(crate) struct ServerAppIoService {
    appio: Arc<dyn ServerAppIo>,
    /// Envelopes for app processes, their chunks kept in the server's store.
    outbox: Arc<Outbox>,
    /// Ends `Receive` long polls at shutdown.
    stop: watch::Receiver<bool>,
    /// Prometheus counters of the messages it hands to apps and takes from them (AppIo
    /// APIs are served over gRPC only).
    meter: Counters,
}

impl ServerAppIoService {
    pub(crate) fn new(
        appio: Arc<dyn ServerAppIo>,
        outbox: Arc<Outbox>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        ServerAppIoService {
            appio,
            outbox,
            stop,
            meter: Counters::new(Api::ServerAppIo, TransportKind::Grpc),
        }
    }
}

#[tonic::async_trait]
impl v1::server_app_io_server::ServerAppIo for ServerAppIoService {
    async fn context(
        &self,
        request: Request<v1::ContextRequest>,
    ) -> Result<Response<v1::ContextResponse>, Status> {
        let token = request.into_inner().token;
        let context = self.appio.context(&token).await.map_err(from_appio_error)?;
        let mut budget = self.outbox.chunking.inline_budget;
        let context = context_out(&self.outbox, peer(&token), &context, &mut budget).await;
        Ok(Response::new(v1::ContextResponse {
            context: Some(context),
        }))
    }

    async fn node_ids(
        &self,
        request: Request<v1::NodeIdsRequest>,
    ) -> Result<Response<v1::NodeIdsResponse>, Status> {
        let nodes = self
            .appio
            .node_ids(&request.into_inner().token)
            .await
            .map_err(from_appio_error)?;
        Ok(Response::new(v1::NodeIdsResponse {
            node_ids: nodes.to_vec(),
        }))
    }

    async fn send(
        &self,
        request: Request<v1::SendRequest>,
    ) -> Result<Response<v1::SendResponse>, Status> {
        let r = request.into_inner();
        let peer = peer(&r.token);
        let opened = inbox::open_all("SendRequest.envelopes", r.envelopes)?;
        let claimed = match inbox::claim(&self.outbox.objects, peer, &opened) {
            Ok(claimed) => claimed,
            Err(missing_object_ids) => {
                return Ok(Response::new(v1::SendResponse {
                    message_ids: Vec::new(),
                    missing_object_ids,
                }));
            }
        };
        let messages = inbox::assemble(
            |i| format!("SendRequest.envelopes[{i}]"),
            opened,
            claimed.chunks,
        )
        .await?;
        let count = messages.len() as u64;
        let message_ids = self
            .appio
            .send(&r.token, messages)
            .await
            .map_err(from_appio_error)?;
        self.meter.messages_received.increment(count);
        // Kept on failure, so that a retry need not upload them again.
        self.outbox.objects.release_uploads(peer, &claimed.ids);
        Ok(Response::new(v1::SendResponse {
            message_ids,
            missing_object_ids: Vec::new(),
        }))
    }

    async fn pull(
        &self,
        request: Request<v1::PullRequest>,
    ) -> Result<Response<v1::PullResponse>, Status> {
        let r = request.into_inner();
        let replies = self
            .appio
            .pull(&r.token, &r.message_ids)
            .await
            .map_err(from_appio_error)?;
        let envelopes = self.outbox.envelopes(peer(&r.token), &replies).await;
        self.meter.messages_sent.increment(envelopes.len() as u64);
        Ok(Response::new(v1::PullResponse { envelopes }))
    }

    async fn receive(
        &self,
        request: Request<v1::ReceiveRequest>,
    ) -> Result<Response<v1::ReceiveResponse>, Status> {
        let r = request.into_inner();
        let timeout = poll_timeout(r.timeout_ms);
        let replies = unless_stopped(&self.stop, async {
            self.appio
                .receive(&r.token, timeout)
                .await
                .map_err(from_appio_error)
        })
        .await?;
        let envelopes = self.outbox.envelopes(peer(&r.token), &replies).await;
        self.meter.messages_sent.increment(envelopes.len() as u64);
        Ok(Response::new(v1::ReceiveResponse { envelopes }))
    }

    async fn emit(
        &self,
        request: Request<v1::EmitRequest>,
    ) -> Result<Response<v1::EmitResponse>, Status> {
        let r = request.into_inner();
        let event = r
            .event
            .ok_or_else(|| Status::invalid_argument("EmitRequest.event is missing"))?;
        let event =
            run_event_from_proto(event).map_err(|e| from_decode_error("EmitRequest.event", &e))?;
        self.appio
            .emit(&r.token, event)
            .await
            .map_err(from_appio_error)?;
        Ok(Response::new(v1::EmitResponse {}))
    }

    async fn finish(
        &self,
        request: Request<v1::FinishRequest>,
    ) -> Result<Response<v1::FinishResponse>, Status> {
        let r = request.into_inner();
        self.appio
            .finish(&r.token, outcome_from_proto(r.failure))
            .await
            .map_err(from_appio_error)?;
        Ok(Response::new(v1::FinishResponse {}))
    }

    async fn save_checkpoint(
        &self,
        request: Request<v1::SaveCheckpointRequest>,
    ) -> Result<Response<v1::SaveCheckpointResponse>, Status> {
        let r = request.into_inner();
        self.appio
            .save_checkpoint(&r.token, r.checkpoint)
            .await
            .map_err(from_appio_error)?;
        Ok(Response::new(v1::SaveCheckpointResponse {}))
    }

    async fn load_checkpoint(
        &self,
        request: Request<v1::LoadCheckpointRequest>,
    ) -> Result<Response<v1::LoadCheckpointResponse>, Status> {
        let checkpoint = self
            .appio
            .load_checkpoint(&request.into_inner().token)
            .await
            .map_err(from_appio_error)?;
        Ok(Response::new(v1::LoadCheckpointResponse { checkpoint }))
    }

    async fn claim(
        &self,
        _request: Request<v1::ClaimRequest>,
    ) -> Result<Response<v1::ClaimResponse>, Status> {
        let token = self.appio.claim().await.map_err(from_appio_error)?;
        Ok(Response::new(v1::ClaimResponse { token }))
    }
}
