//! The ClientAppIo API's server side: gRPC calls in, `dyn ClientAppIo` calls out, with
//! envelopes and chunks in between.

use super::serving::{ContextIn, context_out, poll_timeout, unless_stopped};
use super::wire::peer;
use crate::grpc::TransportKind;
use crate::grpc::inbox;
use crate::grpc::status::from_appio_error;
use crate::meter::Counters;
use crate::objects::outbox::Outbox;
use crate::proto::v1;
use crate::transport_error::Api;
use floret_core::ClientAppIo;
use std::sync::Arc;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

/// Serves one `dyn ClientAppIo`.
pub(crate) struct ClientAppIoService {
    appio: Arc<dyn ClientAppIo>,
    /// Envelopes for app processes, their chunks kept in the server's store.
    outbox: Arc<Outbox>,
    /// Ends `NextTask` long polls at shutdown.
    stop: watch::Receiver<bool>,
    /// Prometheus counters of the messages it hands to apps and takes from them (AppIo
    /// APIs are served over gRPC only).
    meter: Counters,
}

impl ClientAppIoService {
    pub(crate) fn new(
        appio: Arc<dyn ClientAppIo>,
        outbox: Arc<Outbox>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        ClientAppIoService {
            appio,
            outbox,
            stop,
            meter: Counters::new(Api::ClientAppIo, TransportKind::Grpc),
        }
    }
}

#[tonic::async_trait]
impl v1::client_app_io_server::ClientAppIo for ClientAppIoService {
    async fn next_task(
        &self,
        request: Request<v1::NextTaskRequest>,
    ) -> Result<Response<v1::NextTaskResponse>, Status> {
        let r = request.into_inner();
        let timeout = poll_timeout(r.timeout_ms);
        let task = unless_stopped(&self.stop, async {
            self.appio
                .next_task(&r.token, timeout)
                .await
                .map_err(from_appio_error)
        })
        .await?;
        let Some(task) = task else {
            return Ok(Response::new(v1::NextTaskResponse::default()));
        };
        let peer = peer(&r.token);
        let mut budget = self.outbox.chunking.inline_budget;
        let message = self.outbox.envelope(peer, &task.message, &mut budget).await;
        let context = context_out(&self.outbox, peer, &task.context, &mut budget).await;
        self.meter.messages_sent.increment(1);
        Ok(Response::new(v1::NextTaskResponse {
            message: Some(message),
            context: Some(context),
        }))
    }

    async fn complete_task(
        &self,
        request: Request<v1::CompleteTaskRequest>,
    ) -> Result<Response<v1::CompleteTaskResponse>, Status> {
        let r = request.into_inner();
        let peer = peer(&r.token);
        let reply = r
            .reply
            .ok_or_else(|| Status::invalid_argument("CompleteTaskRequest.reply is missing"))?;
        let reply = inbox::open("CompleteTaskRequest.reply", reply)?;
        let (context, state) = ContextIn::open("CompleteTaskRequest.context", r.context)?;
        let claimed = match inbox::claim(&self.outbox.objects, peer, [&reply, &state]) {
            Ok(claimed) => claimed,
            Err(missing_object_ids) => {
                return Ok(Response::new(v1::CompleteTaskResponse {
                    missing_object_ids,
                }));
            }
        };
        let what = |i| match i {
            0 => "CompleteTaskRequest.reply".to_string(),
            _ => "CompleteTaskRequest.context.state".to_string(),
        };
        let [reply, state]: [_; 2] = inbox::assemble(what, vec![reply, state], claimed.chunks)
            .await?
            .try_into()
            .map_err(|_| Status::internal("assembling two envelopes gave another number"))?;
        let context = context.finish(state)?;
        self.appio
            .complete_task(&r.token, &r.message_id, reply.payload, context)
            .await
            .map_err(from_appio_error)?;
        self.meter.messages_received.increment(1);
        self.outbox.objects.release_uploads(peer, &claimed.ids);
        Ok(Response::new(v1::CompleteTaskResponse::default()))
    }

    async fn claim(
        &self,
        _request: Request<v1::ClaimRequest>,
    ) -> Result<Response<v1::ClaimResponse>, Status> {
        let token = self.appio.claim().await.map_err(from_appio_error)?;
        Ok(Response::new(v1::ClaimResponse { token }))
    }
}
