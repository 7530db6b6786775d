//! A running gRPC server: the listening socket, the serving task, and a shutdown that ends
//! long-lived streams so that in-flight calls can finish.

use super::appio::{ClientAppIoService, ObjectsService, ServerAppIoService};
use super::control_service::ControlService;
use super::fleet_service::FleetService;
#[cfg(feature = "quic")]
use super::options::ServerSecurity;
use super::options::{MAX_FAB_MESSAGE_LEN, MAX_MESSAGE_LEN, ServerOptions, server_builder};
use crate::guard::{Guard, PreAuth, Tracker};
use crate::objects::TransferStats;
use crate::objects::outbox::Outbox;
use crate::objects::store::ObjectStore;
use crate::proto::v1;
#[cfg(feature = "quic")]
use crate::quic::QuicServer;
#[cfg(feature = "quic")]
use crate::tls::ServerTls;
use crate::transport_error::{Api, TransportError};
use floret_core::{ClientAppIo, Control, ControlFor, Fleet, ServerAppIo, UserAuthority};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;

/// A gRPC server serving one API on one socket. Dropping it starts a graceful shutdown in
/// the background; [`Server::shutdown`] also waits for it.
pub struct Server {
    /// Where it listens (the real port when bound to port 0).
    local_addr: SocketAddr,
    /// Set to `true` to stop accepting connections and end open streams.
    stop: watch::Sender<bool>,
    /// Serves until stopped and every connection has closed.
    task: Option<JoinHandle<()>>,
    /// How long `shutdown` waits for calls in flight.
    grace: Duration,
    /// The same API over QUIC, on the UDP port of the same number.
    #[cfg(feature = "quic")]
    quic: Option<QuicServer>,
    /// The chunks of the Fleet or AppIo API; `None` for the Control API.
    objects: Option<Arc<ObjectStore>>,
}

/// Resolves once the server is told to stop (or is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone: the server was dropped, which stops it too.
    let _ = stop.wait_for(|&stopped| stopped).await;
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Chunks sent and received by the Fleet or AppIo API, and what its object store
    /// holds now (all zero for the Control API).
    pub fn transfer_stats(&self) -> TransferStats {
        self.objects
            .as_ref()
            .map(|o| TransferStats::of(&o.counters, o.size()))
            .unwrap_or_default()
    }

    #[cfg(test)]
    pub(crate) fn objects(&self) -> Option<&Arc<ObjectStore>> {
        self.objects.as_ref()
    }

    /// Stops accepting connections, ends `Subscribe` and `StreamEvents` streams and
    /// `Receive` and `NextTask` long polls, lets unary calls in flight finish (for at most the shutdown grace, 5 s by default) and
    /// returns once the server is gone.
    pub async fn shutdown(mut self) {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(self.grace, &mut task).await.is_err()
        {
            tracing::warn!(
                addr = %self.local_addr,
                "calls still in flight after {:?}; closing them",
                self.grace
            );
            task.abort();
        }
        #[cfg(feature = "quic")]
        if let Some(quic) = self.quic.take() {
            // The QUIC side drains within the same grace, then closes its endpoint.
            let mut task = quic.task;
            if tokio::time::timeout(self.grace + Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
                quic.endpoint
                    .close(quinn::VarInt::from_u32(0), b"server shut down");
            }
        }
    }

    /// Whether the API is also served over QUIC (on the UDP port of the same number).
    pub fn serves_quic(&self) -> bool {
        #[cfg(feature = "quic")]
        return self.quic.is_some();
        #[cfg(not(feature = "quic"))]
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Serves `fleet` as the Fleet API on `addr` (port 0 picks a free port).
///
/// # Errors
/// [`TransportError::Bind`] when the address cannot be listened on (in use, not of this
/// machine, privileged).
pub async fn bind_fleet(addr: SocketAddr, fleet: Arc<dyn Fleet>) -> Result<Server, TransportError> {
    bind_fleet_with(addr, fleet, ServerOptions::default()).await
}

/// [`bind_fleet`] with explicit options.
///
/// # Errors
/// As [`bind_fleet`].
pub async fn bind_fleet_with(
    addr: SocketAddr,
    fleet: Arc<dyn Fleet>,
    options: ServerOptions,
) -> Result<Server, TransportError> {
    let listener = listen(Api::Fleet, addr).await?;
    let (stop, stop_rx) = watch::channel(false);
    let objects = Arc::new(
        ObjectStore::new(options.chunking.chunk_len(), options.lease).limited(options.limits),
    );
    let service = FleetService::new(
        fleet,
        objects.clone(),
        options.chunking,
        stop_rx.clone(),
        options.node_auth.clone(),
    );
    // GetFab answers a whole FAB; what nodes send stays small (each call's own limit is
    // checked by the guard as its body arrives).
    let max_request = options.limits.max_request_bytes;
    let routes = Routes::new(
        v1::fleet_server::FleetServer::new(service)
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(MAX_FAB_MESSAGE_LEN),
    );
    tokio::spawn(sweep(objects.clone(), options.lease, stop_rx.clone()));
    let pre_auth = options.node_auth.clone().map(super::NodeAuth::pre_auth);
    start(
        (Api::Fleet, addr),
        listener,
        (routes, max_request, pre_auth),
        (stop, stop_rx),
        &options,
        Some(objects),
    )
}

/// Serves `control` as the Control API on `addr` (port 0 picks a free port).
///
/// # Errors
/// [`TransportError::Bind`] when the address cannot be listened on.
pub async fn bind_control(
    addr: SocketAddr,
    control: Arc<dyn Control>,
) -> Result<Server, TransportError> {
    bind_control_with(addr, control, ServerOptions::default()).await
}

/// [`bind_control`] with explicit options.
///
/// # Errors
/// As [`bind_control`].
pub async fn bind_control_with(
    addr: SocketAddr,
    control: Arc<dyn Control>,
    options: ServerOptions,
) -> Result<Server, TransportError> {
    let (stop, stop_rx) = watch::channel(false);
    let service = ControlService::new(control, stop_rx.clone());
    serve_control(addr, (service, None), (stop, stop_rx), options).await
}

/// [`bind_control_with`] for a SuperLink with user authentication: every call must carry
/// an access token from `Login`, which `users` resolves to a caller, and is answered by
/// `control`'s view for that caller.
///
/// # Errors
/// As [`bind_control`].
pub async fn bind_control_with_users(
    addr: SocketAddr,
    control: Arc<dyn ControlFor>,
    users: Arc<dyn UserAuthority>,
    options: ServerOptions,
) -> Result<Server, TransportError> {
    let (stop, stop_rx) = watch::channel(false);
    let pre_auth = super::control_service::pre_auth(users.clone());
    let service = ControlService::with_users(control, users, stop_rx.clone());
    serve_control(addr, (service, Some(pre_auth)), (stop, stop_rx), options).await
}

async fn serve_control(
    addr: SocketAddr,
    (service, pre_auth): (ControlService, Option<PreAuth>),
    (stop, stop_rx): (watch::Sender<bool>, watch::Receiver<bool>),
    options: ServerOptions,
) -> Result<Server, TransportError> {
    let listener = listen(Api::Control, addr).await?;
    // StartRun may carry a FAB (the guard holds every other call to a small request).
    let max_request = options
        .limits
        .request_limit(Api::Control, "/floret.v1.Control/StartRun")
        .bytes;
    let routes = Routes::new(
        v1::control_server::ControlServer::new(service)
            .max_decoding_message_size(max_request)
            .max_encoding_message_size(MAX_MESSAGE_LEN),
    );
    start(
        (Api::Control, addr),
        listener,
        (routes, max_request, pre_auth),
        (stop, stop_rx),
        &options,
        None,
    )
}

/// Serves `appio` as the ServerAppIo API on `addr` (port 0 picks a free port): where
/// process-isolated ServerApps drive their runs.
///
/// # Errors
/// [`TransportError::Bind`] when the address cannot be listened on; its message names
/// `--serverappio-api-address`.
pub async fn bind_serverappio(
    addr: SocketAddr,
    appio: Arc<dyn ServerAppIo>,
) -> Result<Server, TransportError> {
    bind_serverappio_with(addr, appio, ServerOptions::default()).await
}

/// [`bind_serverappio`] with explicit options.
///
/// # Errors
/// As [`bind_serverappio`].
pub async fn bind_serverappio_with(
    addr: SocketAddr,
    appio: Arc<dyn ServerAppIo>,
    options: ServerOptions,
) -> Result<Server, TransportError> {
    let max_request = options.limits.max_request_bytes;
    bind_appio(Api::ServerAppIo, addr, options, |outbox, stop| {
        let service = ServerAppIoService::new(appio, outbox, stop);
        Routes::new(
            v1::server_app_io_server::ServerAppIoServer::new(service)
                .max_decoding_message_size(max_request)
                .max_encoding_message_size(MAX_MESSAGE_LEN),
        )
    })
    .await
}

/// Serves `appio` as the ClientAppIo API on `addr` (port 0 picks a free port): where
/// process-isolated ClientApps take their node's messages.
///
/// # Errors
/// [`TransportError::Bind`] when the address cannot be listened on; its message names
/// `--clientappio-api-address`.
pub async fn bind_clientappio(
    addr: SocketAddr,
    appio: Arc<dyn ClientAppIo>,
) -> Result<Server, TransportError> {
    bind_clientappio_with(addr, appio, ServerOptions::default()).await
}

/// [`bind_clientappio`] with explicit options.
///
/// # Errors
/// As [`bind_clientappio`].
pub async fn bind_clientappio_with(
    addr: SocketAddr,
    appio: Arc<dyn ClientAppIo>,
    options: ServerOptions,
) -> Result<Server, TransportError> {
    let max_request = options.limits.max_request_bytes;
    bind_appio(Api::ClientAppIo, addr, options, |outbox, stop| {
        let service = ClientAppIoService::new(appio, outbox, stop);
        Routes::new(
            v1::client_app_io_server::ClientAppIoServer::new(service)
                .max_decoding_message_size(max_request)
                .max_encoding_message_size(MAX_MESSAGE_LEN),
        )
    })
    .await
}

/// An AppIo API: the service `router` adds to the server builder, next to the
/// AppIoObjects service that moves its chunks, both over one object store.
async fn bind_appio(
    api: Api,
    addr: SocketAddr,
    options: ServerOptions,
    routes: impl FnOnce(Arc<Outbox>, watch::Receiver<bool>) -> Routes,
) -> Result<Server, TransportError> {
    let listener = listen(api, addr).await?;
    let (stop, stop_rx) = watch::channel(false);
    let objects = Arc::new(
        ObjectStore::new(options.chunking.chunk_len(), options.lease).limited(options.limits),
    );
    let outbox = Arc::new(Outbox {
        objects: objects.clone(),
        chunking: options.chunking,
    });
    let routes = routes(outbox, stop_rx.clone()).add_service(
        v1::app_io_objects_server::AppIoObjectsServer::new(ObjectsService::new(objects.clone()))
            .max_decoding_message_size(options.limits.max_request_bytes)
            .max_encoding_message_size(MAX_MESSAGE_LEN),
    );
    tokio::spawn(sweep(objects.clone(), options.lease, stop_rx.clone()));
    let max_request = options.limits.max_request_bytes;
    start(
        (api, addr),
        listener,
        (routes, max_request, None),
        (stop, stop_rx),
        &options,
        Some(objects),
    )
}

/// Binds before serving, so that "address in use" is reported to the caller, not logged
/// by a background task.
async fn listen(api: Api, addr: SocketAddr) -> Result<TcpListener, TransportError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| TransportError::Bind { api, addr, source })
}

/// Serves `routes` over gRPC on `listener` and, if asked, over QUIC on the UDP port of the
/// same number, both within `options.limits` (see `crate::guard`). `max_request` bounds one
/// request message (for QUIC's frame check); `pre_auth` checks a call's headers before its
/// body is read.
// Without QUIC, the size bound only QUIC frames need is not read.
#[cfg_attr(not(feature = "quic"), allow(unused_variables))]
fn start(
    (api, addr): (Api, SocketAddr),
    listener: TcpListener,
    (routes, max_request, pre_auth): (Routes, usize, Option<PreAuth>),
    (stop, stop_rx): (watch::Sender<bool>, watch::Receiver<bool>),
    options: &ServerOptions,
    objects: Option<Arc<ObjectStore>>,
) -> Result<Server, TransportError> {
    let local_addr = listener
        .local_addr()
        .map_err(|source| TransportError::Bind { api, addr, source })?;
    let guard = Guard {
        api,
        tracker: Tracker::new(options.limits),
        pre_auth,
    };
    #[cfg(not(feature = "quic"))]
    if options.quic {
        return Err(super::options::no_quic());
    }
    #[cfg(feature = "quic")]
    let quic = if options.quic {
        let tls = match &options.security {
            ServerSecurity::Tls(tls) => tls.clone(),
            ServerSecurity::Insecure => ServerTls::ephemeral()?,
        };
        Some(crate::quic::serve(
            (api, local_addr),
            &tls,
            options,
            max_request + 5,
            (routes.clone(), guard.clone()),
            stop_rx.clone(),
        )?)
    } else {
        None
    };
    let incoming = crate::guard::incoming(listener, guard.tracker.clone());
    let router = server_builder(options)?
        .layer(guard)
        .layer(crate::meter::MeterLayer(api))
        .add_routes(routes);
    let task = tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, stopped(stop_rx))
            .await
        {
            tracing::error!(addr = %local_addr, error = %e, "gRPC server failed");
        }
    });
    Ok(Server {
        local_addr,
        stop,
        task: Some(task),
        #[cfg(feature = "quic")]
        quic,
        grace: options.shutdown_grace,
        objects,
    })
}

/// Frees chunks whose holds expired, a few times per lease, until the server stops.
async fn sweep(objects: Arc<ObjectStore>, lease: Duration, stop: watch::Receiver<bool>) {
    let period = (lease / 4).clamp(Duration::from_millis(10), Duration::from_secs(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stopped = stopped(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tick.tick() => objects.sweep(),
            () = &mut stopped => break,
        }
    }
}
