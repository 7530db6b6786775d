//! The AppIoObjects service: the chunks of the envelopes an AppIo service and its app
//! processes exchange, kept per token.

use super::wire::peer;
use crate::grpc::inbox;
use crate::objects::store::ObjectStore;
use crate::proto::v1;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Serves the object store of one AppIo server.
pub(crate) struct ObjectsService {
    objects: Arc<ObjectStore>,
}

impl ObjectsService {
    pub(crate) fn new(objects: Arc<ObjectStore>) -> ObjectsService {
        ObjectsService { objects }
    }
}

#[tonic::async_trait]
impl v1::app_io_objects_server::AppIoObjects for ObjectsService {
    /// Not checked against the AppIo implementation: an upload for a token no run knows is
    /// never claimed and goes at the end of the store's lease.
    async fn push_object(
        &self,
        request: Request<v1::AppPushObjectRequest>,
    ) -> Result<Response<v1::AppPushObjectResponse>, Status> {
        let r = request.into_inner();
        inbox::accept_chunk(
            &self.objects,
            // An app's uploads are bounded per token; the Fleet's per-run cap is for nodes.
            (peer(&r.token), 0),
            "AppPushObjectRequest",
            &r.object_id,
            r.content,
        )
        .await?;
        Ok(Response::new(v1::AppPushObjectResponse {}))
    }

    async fn pull_object(
        &self,
        request: Request<v1::AppPullObjectRequest>,
    ) -> Result<Response<v1::AppPullObjectResponse>, Status> {
        let r = request.into_inner();
        let content = inbox::serve_chunk(
            &self.objects,
            peer(&r.token),
            "this token",
            "AppPullObjectRequest",
            &r.object_id,
        )?;
        Ok(Response::new(v1::AppPullObjectResponse { content }))
    }

    async fn confirm_deliveries(
        &self,
        request: Request<v1::AppConfirmDeliveriesRequest>,
    ) -> Result<Response<v1::AppConfirmDeliveriesResponse>, Status> {
        let r = request.into_inner();
        self.objects.confirm(peer(&r.token), &r.delivery_ids);
        Ok(Response::new(v1::AppConfirmDeliveriesResponse {}))
    }
}
