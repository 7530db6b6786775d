//! The Fleet API's server side: gRPC calls in, `dyn Fleet` calls out, with envelopes and
//! chunks in between.

use super::inbox;
use super::node_auth::{Claim, NodeAuth, path};
use super::server::stopped;
use super::status::from_fleet_error;
use crate::convert_runs::run_info_to_proto;
use crate::meter::ApiMeter;
use crate::objects::ChunkPolicy;
use crate::objects::outbox::Outbox;
use crate::objects::store::ObjectStore;
use crate::proto::{self, v1};
use crate::transport_error::Api;
use floret_core::Fleet;
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Serves one `dyn Fleet`.
pub(crate) struct FleetService {
    fleet: Arc<dyn Fleet>,
    /// Turns messages for nodes into envelopes, keeping their chunks in the store.
    outbox: Arc<Outbox>,
    /// Ends `Subscribe` streams at shutdown.
    stop: watch::Receiver<bool>,
    /// When set, every call must be signed by a key this admits.
    auth: Option<NodeAuth>,
    /// Prometheus counters of messages sent to nodes and replies received, per transport.
    meter: ApiMeter,
}

impl FleetService {
    pub(crate) fn new(
        fleet: Arc<dyn Fleet>,
        objects: Arc<ObjectStore>,
        chunking: ChunkPolicy,
        stop: watch::Receiver<bool>,
        auth: Option<NodeAuth>,
    ) -> FleetService {
        FleetService {
            fleet,
            outbox: Arc::new(Outbox { objects, chunking }),
            stop,
            auth,
            meter: ApiMeter::new(Api::Fleet),
        }
    }

    /// With node authentication on, checks that the request to `path` is signed by a key
    /// that may make `claim`, and returns that key; without, lets everything through.
    fn authenticate<T: prost::Message>(
        &self,
        request: &Request<T>,
        path: &str,
        claim: Claim,
    ) -> Result<Option<crate::auth::NodePublicKey>, Status> {
        match &self.auth {
            Some(auth) => auth.check(request, path, claim).map(Some),
            None => Ok(None),
        }
    }

    fn objects(&self) -> &ObjectStore {
        &self.outbox.objects
    }
}

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<v1::Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl v1::fleet_server::Fleet for FleetService {
    async fn register_node(
        &self,
        request: Request<v1::RegisterNodeRequest>,
    ) -> Result<Response<v1::RegisterNodeResponse>, Status> {
        let key = self.authenticate(&request, path::REGISTER_NODE, Claim::Admitted)?;
        let r = request.into_inner();
        // The key that signed, not whatever the body says.
        let public_key = key.map_or(r.public_key, |k| k.spki_der().clone());
        let registered = self
            .fleet
            .register_node(floret_core::RegisterNode {
                public_key,
                heartbeat_interval: r.heartbeat_interval,
            })
            .await
            .map_err(from_fleet_error)?;
        Ok(Response::new(v1::RegisterNodeResponse {
            node_id: registered.node_id,
            superlink_incarnation: registered.incarnation,
        }))
    }

    async fn deactivate_node(
        &self,
        request: Request<v1::DeactivateNodeRequest>,
    ) -> Result<Response<v1::DeactivateNodeResponse>, Status> {
        let node_id = request.get_ref().node_id;
        self.authenticate(&request, path::DEACTIVATE_NODE, Claim::Node(node_id))?;
        self.fleet
            .deactivate_node(request.into_inner().node_id)
            .await
            .map_err(from_fleet_error)?;
        Ok(Response::new(v1::DeactivateNodeResponse {}))
    }

    async fn heartbeat(
        &self,
        request: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let node_id = request.get_ref().node_id;
        self.authenticate(&request, path::HEARTBEAT, Claim::Node(node_id))?;
        let r = request.into_inner();
        self.fleet
            .heartbeat(r.node_id, r.heartbeat_interval)
            .await
            .map_err(from_fleet_error)?;
        Ok(Response::new(v1::HeartbeatResponse {}))
    }

    async fn pull_messages(
        &self,
        request: Request<v1::PullMessagesRequest>,
    ) -> Result<Response<v1::PullMessagesResponse>, Status> {
        let node_id = request.get_ref().node_id;
        self.authenticate(&request, path::PULL_MESSAGES, Claim::Node(node_id))?;
        let sent = self.meter.of(&request).messages_sent.clone();
        let node_id = request.into_inner().node_id;
        let messages = self
            .fleet
            .pull_messages(node_id)
            .await
            .map_err(from_fleet_error)?;
        let envelopes = self.outbox.envelopes(node_id, &messages).await;
        sent.increment(envelopes.len() as u64);
        Ok(Response::new(v1::PullMessagesResponse { envelopes }))
    }

    async fn push_messages(
        &self,
        request: Request<v1::PushMessagesRequest>,
    ) -> Result<Response<v1::PushMessagesResponse>, Status> {
        let node_id = request.get_ref().node_id;
        self.authenticate(&request, path::PUSH_MESSAGES, Claim::Node(node_id))?;
        let received = self.meter.of(&request).messages_received.clone();
        let r = request.into_inner();
        let node_id = r.node_id;
        let opened = inbox::open_all("PushMessagesRequest.envelopes", r.envelopes)?;
        let claimed = match inbox::claim(self.objects(), node_id, &opened) {
            Ok(claimed) => claimed,
            Err(missing_object_ids) => {
                return Ok(Response::new(v1::PushMessagesResponse {
                    missing_object_ids,
                }));
            }
        };
        let messages = inbox::assemble(
            |i| format!("PushMessagesRequest.envelopes[{i}]"),
            opened,
            claimed.chunks,
        )
        .await?;
        let count = messages.len() as u64;
        self.fleet
            .push_messages(node_id, messages)
            .await
            .map_err(from_fleet_error)?;
        received.increment(count);
        // Kept on failure, so that a retry need not upload them again; the lease frees
        // them if none comes.
        self.objects().release_uploads(node_id, &claimed.ids);
        Ok(Response::new(v1::PushMessagesResponse::default()))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::GetRunResponse>, Status> {
        self.authenticate(&request, path::GET_RUN, Claim::Admitted)?;
        let run = self
            .fleet
            .get_run(request.into_inner().run_id)
            .await
            .map_err(from_fleet_error)?;
        Ok(Response::new(v1::GetRunResponse {
            run: Some(run_info_to_proto(&run)),
        }))
    }

    async fn get_fab(
        &self,
        request: Request<v1::GetFabRequest>,
    ) -> Result<Response<v1::GetFabResponse>, Status> {
        self.authenticate(&request, path::GET_FAB, Claim::Admitted)?;
        let hash_str = request.into_inner().fab_hash;
        let content = self
            .fleet
            .get_fab(&hash_str)
            .await
            .map_err(from_fleet_error)?;
        Ok(Response::new(v1::GetFabResponse {
            fab: Some(proto::Fab {
                hash_str,
                content,
                verifications: Default::default(),
            }),
        }))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        request: Request<v1::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let node_id = request.get_ref().node_id;
        self.authenticate(&request, path::SUBSCRIBE, Claim::Node(node_id))?;
        let sent = self.meter.of(&request).messages_sent.clone();
        let node_id = request.into_inner().node_id;
        let messages = self
            .fleet
            .subscribe(node_id)
            .await
            .map_err(from_fleet_error)?;
        let outbox = self.outbox.clone();
        let envelopes = ReceiverStream::new(messages)
            .then(move |message| {
                let outbox = outbox.clone();
                sent.increment(1);
                async move {
                    let mut budget = outbox.chunking.inline_budget;
                    Ok(outbox.envelope(node_id, &message, &mut budget).await)
                }
            })
            .take_until(stopped(self.stop.clone()));
        Ok(Response::new(Box::pin(envelopes)))
    }

    async fn push_object(
        &self,
        request: Request<v1::PushObjectRequest>,
    ) -> Result<Response<v1::PushObjectResponse>, Status> {
        let node_id = request.get_ref().node_id;
        self.authenticate(&request, path::PUSH_OBJECT, Claim::Node(node_id))?;
        // Chunks are kept for a registered node only: an unknown id is refused before
        // anything is stored (an upload hold for it would never be used).
        self.fleet
            .check_node(node_id)
            .await
            .map_err(from_fleet_error)?;
        let r = request.into_inner();
        inbox::accept_chunk(
            self.objects(),
            (r.node_id, r.run_id),
            "PushObjectRequest",
            &r.object_id,
            r.content,
        )
        .await?;
        Ok(Response::new(v1::PushObjectResponse {}))
    }

    async fn pull_object(
        &self,
        request: Request<v1::PullObjectRequest>,
    ) -> Result<Response<v1::PullObjectResponse>, Status> {
        let node_id = request.get_ref().node_id;
        self.authenticate(&request, path::PULL_OBJECT, Claim::Node(node_id))?;
        let r = request.into_inner();
        let content = inbox::serve_chunk(
            self.objects(),
            r.node_id,
            &format!("node {}", r.node_id),
            "PullObjectRequest",
            &r.object_id,
        )?;
        Ok(Response::new(v1::PullObjectResponse { content }))
    }

    async fn confirm_deliveries(
        &self,
        request: Request<v1::ConfirmDeliveriesRequest>,
    ) -> Result<Response<v1::ConfirmDeliveriesResponse>, Status> {
        let node_id = request.get_ref().node_id;
        self.authenticate(&request, path::CONFIRM_DELIVERIES, Claim::Node(node_id))?;
        let r = request.into_inner();
        self.objects().confirm(r.node_id, &r.delivery_ids);
        Ok(Response::new(v1::ConfirmDeliveriesResponse {}))
    }
}
