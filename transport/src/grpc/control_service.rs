//! The Control API's server side: gRPC calls in, `dyn Control` calls out.

use super::server::stopped;
use super::status::{from_control_error, from_decode_error};
use crate::convert_runs::{run_event_to_proto, run_info_to_proto, start_run_from_proto};
use crate::proto::v1;
use floret_core::Control;
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// Serves one `dyn Control`.
pub(crate) struct ControlService {
    control: Arc<dyn Control>,
    /// Ends `StreamEvents` streams at shutdown.
    stop: watch::Receiver<bool>,
}

impl ControlService {
    pub(crate) fn new(control: Arc<dyn Control>, stop: watch::Receiver<bool>) -> Self {
        ControlService { control, stop }
    }
}

/// How long a `StreamEvents` stream may go on after shutdown began. The SuperLink finishes
/// every run before it stops its servers, so the last events (why the run stopped, and its
/// final status) are already on their way; cutting the stream at once would lose them and
/// leave the follower reconnecting to a server that is gone.
const EVENT_DRAIN: Duration = Duration::from_secs(1);

/// Resolves [`EVENT_DRAIN`] after the server is told to stop.
async fn drained(stop: watch::Receiver<bool>) {
    stopped(stop).await;
    tokio::time::sleep(EVENT_DRAIN).await;
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl v1::control_server::Control for ControlService {
    async fn start_run(
        &self,
        request: Request<v1::StartRunRequest>,
    ) -> Result<Response<v1::StartRunResponse>, Status> {
        let start = start_run_from_proto(request.into_inner())
            .map_err(|e| from_decode_error("StartRun", &e))?;
        let run_id = self
            .control
            .start_run(start)
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::StartRunResponse { run_id }))
    }

    async fn stop_run(
        &self,
        request: Request<v1::StopRunRequest>,
    ) -> Result<Response<v1::StopRunResponse>, Status> {
        self.control
            .stop_run(request.into_inner().run_id)
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::StopRunResponse {}))
    }

    async fn list_runs(
        &self,
        _request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let runs = self.control.list_runs().await.map_err(from_control_error)?;
        Ok(Response::new(v1::ListRunsResponse {
            runs: runs.iter().map(run_info_to_proto).collect(),
        }))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::GetRunResponse>, Status> {
        let run = self
            .control
            .get_run(request.into_inner().run_id)
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::GetRunResponse {
            run: Some(run_info_to_proto(&run)),
        }))
    }

    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<v1::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let r = request.into_inner();
        let events = self
            .control
            .stream_events(r.run_id, r.follow)
            .await
            .map_err(from_control_error)?;
        let events = ReceiverStream::new(events)
            .map(|e| Ok(run_event_to_proto(&e)))
            .take_until(drained(self.stop.clone()));
        Ok(Response::new(Box::pin(events)))
    }

    async fn register_node_key(
        &self,
        request: Request<v1::RegisterNodeKeyRequest>,
    ) -> Result<Response<v1::RegisterNodeKeyResponse>, Status> {
        let public_key = request.into_inner().public_key;
        // Only keys a SuperNode could sign with reach the allow-list.
        crate::auth::NodePublicKey::from_spki_der(&public_key)
            .map_err(|e| Status::invalid_argument(format!("RegisterNodeKey.public_key: {e}")))?;
        let node_id = self
            .control
            .register_node_key(public_key)
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::RegisterNodeKeyResponse { node_id }))
    }

    async fn list_nodes(
        &self,
        _request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        let nodes = self
            .control
            .list_nodes()
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::ListNodesResponse {
            nodes: nodes
                .into_iter()
                .map(|n| v1::NodeInfo {
                    node_id: n.node_id,
                    public_key: n.public_key,
                    online: n.online,
                    registered_at: n.registered_at,
                    last_seen: n.last_seen,
                })
                .collect(),
        }))
    }

    async fn unregister_node_key(
        &self,
        request: Request<v1::UnregisterNodeKeyRequest>,
    ) -> Result<Response<v1::UnregisterNodeKeyResponse>, Status> {
        self.control
            .unregister_node_key(request.into_inner().node_id)
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::UnregisterNodeKeyResponse {}))
    }
}
