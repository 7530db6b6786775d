//! The Control API's client side: `ControlClient` implements `floret_core::Control` over
//! gRPC for the `flwr` CLI.
//!
//! With user authentication, [`ControlClient::with_access_token`] makes a client whose every
//! call carries `authorization: Bearer <token>` ([`ControlClient::request`]); `login` and
//! `refresh_token` get the tokens.

use super::options::{
    ClientOptions, MAX_FAB_LEN, MAX_FAB_MESSAGE_LEN, MAX_MESSAGE_LEN, connected_link,
};
use super::status::to_control_error;
use crate::convert_runs::{run_event_from_proto, run_info_from_proto, start_run_to_proto};
use crate::link::Link;
use crate::proto::v1;
use crate::transport_error::{Api, TransportError};
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{
    Control, ControlError, Credentials, NodeInfo, RunEvent, RunInfo, SessionInfo, SessionSelector,
    StartRun, Tokens,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

/// The metadata key of the access token (`Bearer <token>`), as HTTP spells it.
pub(crate) const AUTHORIZATION: &str = "authorization";

type Rpc = v1::control_client::ControlClient<Link>;

/// Events a `StreamEvents` reader may hold before the CLI takes them.
const EVENT_BUFFER: usize = 64;

/// How long `control_client` waits for the SuperLink to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The `flwr` CLI's connection to a SuperLink's Control API. Clones share the connection.
#[derive(Clone)]
pub struct ControlClient {
    /// `HOST:PORT` as given, for error messages.
    address: Arc<str>,
    rpc: Rpc,
    request_timeout: Duration,
    /// `Bearer <access token>`, sent with every call; `None` without user authentication.
    bearer: Option<MetadataValue<tonic::metadata::Ascii>>,
}

/// Connects to the Control API at `address` (`HOST:PORT`), waiting at most 3 s, so that a
/// wrong or dead address fails at once with a clear error. Later calls reconnect by
/// themselves if the connection drops.
///
/// # Errors
/// [`TransportError::InvalidAddress`] for an address that is not `HOST:PORT`;
/// [`TransportError::Connect`] when nothing accepts the connection in time.
pub async fn control_client(address: &str) -> Result<ControlClient, TransportError> {
    control_client_with(
        address,
        ClientOptions {
            connect_timeout: CONNECT_TIMEOUT,
            ..ClientOptions::default()
        },
    )
    .await
}

/// [`control_client`] with explicit options.
///
/// # Errors
/// As [`control_client`].
pub async fn control_client_with(
    address: &str,
    options: ClientOptions,
) -> Result<ControlClient, TransportError> {
    let channel = connected_link(Api::Control, address, &options, MAX_MESSAGE_LEN).await?;
    Ok(ControlClient {
        address: address.into(),
        // StartRun may carry a FAB; responses stay small.
        rpc: Rpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_LEN)
            .max_encoding_message_size(MAX_FAB_MESSAGE_LEN),
        request_timeout: options.request_timeout,
        bearer: None,
    })
}

impl ControlClient {
    /// This client, sending `access_token` with every call (user authentication). Shares
    /// the connection.
    ///
    /// # Errors
    /// `Invalid` for a token that cannot be an HTTP header value (not printable ASCII):
    /// the stored credentials are damaged.
    pub fn with_access_token(&self, access_token: &str) -> Result<ControlClient, ControlError> {
        let bearer = MetadataValue::try_from(format!("Bearer {access_token}")).map_err(|_| {
            ControlError::Invalid(
                "the stored access token is not printable ASCII: log in again".into(),
            )
        })?;
        Ok(ControlClient {
            bearer: Some(bearer),
            ..self.clone()
        })
    }

    /// A request for `message`, with the access token when there is one. Every call goes
    /// through here, whatever channel the client was built on.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(bearer) = &self.bearer {
            request.metadata_mut().insert(AUTHORIZATION, bearer.clone());
        }
        request
    }

    /// Exchanges credentials for a token pair (`flwr login`).
    ///
    /// # Errors
    /// `Unauthenticated` with the SuperLink's reason for wrong credentials; `Invalid` when
    /// the SuperLink does not authenticate users; `Unavailable` when it cannot be reached.
    pub async fn login(&self, credentials: &Credentials) -> Result<Tokens, ControlError> {
        let message = match credentials {
            Credentials::Password { username, password } => v1::LoginRequest {
                username: username.clone(),
                password: password.clone(),
                api_token: String::new(),
            },
            Credentials::ApiToken(token) => v1::LoginRequest {
                api_token: token.clone(),
                ..v1::LoginRequest::default()
            },
        };
        let mut rpc = self.rpc.clone();
        let t = self.call(0, rpc.login(Request::new(message))).await?;
        Ok(tokens_from_proto(t))
    }

    /// Exchanges a refresh token for a new pair (the old one stops working).
    ///
    /// # Errors
    /// `Unauthenticated` when the login has expired (log in again); as [`Self::login`].
    pub async fn refresh_token(&self, refresh_token: &str) -> Result<Tokens, ControlError> {
        let mut rpc = self.rpc.clone();
        let request = Request::new(v1::RefreshTokenRequest {
            refresh_token: refresh_token.to_owned(),
        });
        let t = self.call(0, rpc.refresh_token(request)).await?;
        Ok(tokens_from_proto(t))
    }

    /// Ends the session of `refresh_token` on the SuperLink (`flwr logout`).
    ///
    /// # Errors
    /// `Invalid` when the SuperLink does not authenticate users; `Unavailable` when it
    /// cannot be reached.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ControlError> {
        let mut rpc = self.rpc.clone();
        let request = Request::new(v1::LogoutRequest {
            refresh_token: refresh_token.to_owned(),
        });
        self.call(0, rpc.logout(request)).await?;
        Ok(())
    }

    /// The SuperLink's open sessions (admins only), oldest first.
    ///
    /// # Errors
    /// `Invalid` with the SuperLink's reason for a caller who is not an admin; as
    /// [`Self::login`].
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, ControlError> {
        let mut rpc = self.rpc.clone();
        let request = self.request(v1::ListSessionsRequest {});
        let r = self.call(0, rpc.list_sessions(request)).await?;
        Ok(r.sessions
            .into_iter()
            .map(|s| SessionInfo {
                id: s.id,
                user: s.user,
                admin: s.admin,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                expires_at: s.expires_at,
            })
            .collect())
    }

    /// Ends the sessions `which` selects (admins only); answers how many ended.
    ///
    /// # Errors
    /// As [`Self::list_sessions`].
    pub async fn revoke_sessions(&self, which: &SessionSelector) -> Result<u64, ControlError> {
        use v1::revoke_sessions_request::Which;
        let which = match which {
            SessionSelector::Id(id) => Which::SessionId(*id),
            SessionSelector::User(user) => Which::User(user.clone()),
        };
        let mut rpc = self.rpc.clone();
        let request = self.request(v1::RevokeSessionsRequest { which: Some(which) });
        Ok(self.call(0, rpc.revoke_sessions(request)).await?.revoked)
    }

    async fn call<T>(
        &self,
        asked: u64,
        call: impl Future<Output = Result<Response<T>, Status>>,
    ) -> Result<T, ControlError> {
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(to_control_error(&status, &self.address, asked)),
            Err(_) => Err(ControlError::Unavailable(format!(
                "the SuperLink at {} did not answer within {:?}",
                self.address, self.request_timeout
            ))),
        }
    }

    fn invalid_reply(&self, what: impl std::fmt::Display) -> ControlError {
        ControlError::Invalid(format!("the SuperLink at {} sent {what}", self.address))
    }
}

fn tokens_from_proto(t: v1::AuthTokens) -> Tokens {
    Tokens {
        access_token: t.access_token,
        access_expires_at: t.access_expires_at,
        refresh_token: t.refresh_token,
        refresh_expires_at: t.refresh_expires_at,
        username: t.username,
    }
}

/// Reads a `StreamEvents` stream into `tx` until either side ends.
async fn forward(
    address: Arc<str>,
    mut events: Streaming<v1::RunEvent>,
    tx: mpsc::Sender<RunEvent>,
) {
    loop {
        let next = tokio::select! {
            () = tx.closed() => return,
            next = events.message() => next,
        };
        match next {
            Ok(Some(event)) => match run_event_from_proto(event) {
                Ok(event) => {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(%address, error = %e, "skipped an invalid run event"),
            },
            Ok(None) => return,
            Err(status) => {
                let e = to_control_error(&status, &address, 0);
                tracing::debug!(error = %e, "event stream broke");
                return;
            }
        }
    }
}

#[async_trait]
impl Control for ControlClient {
    async fn start_run(&self, request: StartRun) -> Result<u64, ControlError> {
        if let Some(fab) = request.fab.as_ref().filter(|f| f.len() > MAX_FAB_LEN) {
            return Err(ControlError::Invalid(format!(
                "the app bundle (FAB) is {} MiB; a SuperLink accepts at most {} MiB: leave \
                 large data out of the app and load it at run time",
                fab.len() >> 20,
                MAX_FAB_LEN >> 20
            )));
        }
        let mut rpc = self.rpc.clone();
        Ok(self
            .call(0, rpc.start_run(self.request(start_run_to_proto(&request))))
            .await?
            .run_id)
    }

    async fn stop_run(&self, run_id: u64) -> Result<(), ControlError> {
        let mut rpc = self.rpc.clone();
        self.call(
            run_id,
            rpc.stop_run(self.request(v1::StopRunRequest { run_id })),
        )
        .await?;
        Ok(())
    }

    async fn list_runs(&self) -> Result<Vec<RunInfo>, ControlError> {
        let mut rpc = self.rpc.clone();
        let runs = self
            .call(0, rpc.list_runs(self.request(v1::ListRunsRequest {})))
            .await?
            .runs;
        runs.into_iter()
            .map(|r| {
                run_info_from_proto(r)
                    .map_err(|e| self.invalid_reply(format_args!("an invalid run: {e}")))
            })
            .collect()
    }

    async fn get_run(&self, run_id: u64) -> Result<RunInfo, ControlError> {
        let mut rpc = self.rpc.clone();
        let run = self
            .call(
                run_id,
                rpc.get_run(self.request(v1::GetRunRequest { run_id })),
            )
            .await?
            .run
            .ok_or_else(|| self.invalid_reply("GetRun without a run"))?;
        run_info_from_proto(run)
            .map_err(|e| self.invalid_reply(format_args!("an invalid run: {e}")))
    }

    async fn stream_events(
        &self,
        run_id: u64,
        follow: bool,
    ) -> Result<mpsc::Receiver<RunEvent>, ControlError> {
        let mut rpc = self.rpc.clone();
        let events = self
            .call(
                run_id,
                rpc.stream_events(self.request(v1::StreamEventsRequest { run_id, follow })),
            )
            .await?;
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        tokio::spawn(forward(self.address.clone(), events, tx));
        Ok(rx)
    }

    async fn register_node_key(&self, public_key: Bytes) -> Result<u64, ControlError> {
        let mut rpc = self.rpc.clone();
        // With the token, as every call: without it a logged-in admin was "not logged in".
        let request = self.request(v1::RegisterNodeKeyRequest { public_key });
        Ok(self.call(0, rpc.register_node_key(request)).await?.node_id)
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ControlError> {
        let mut rpc = self.rpc.clone();
        let nodes = self
            .call(0, rpc.list_nodes(self.request(v1::ListNodesRequest {})))
            .await?
            .nodes;
        Ok(nodes
            .into_iter()
            .map(|n| NodeInfo {
                node_id: n.node_id,
                public_key: n.public_key,
                online: n.online,
                registered_at: n.registered_at,
                last_seen: n.last_seen,
            })
            .collect())
    }

    async fn unregister_node_key(&self, node_id: u64) -> Result<(), ControlError> {
        let mut rpc = self.rpc.clone();
        let request = self.request(v1::UnregisterNodeKeyRequest { node_id });
        self.call(node_id, rpc.unregister_node_key(request)).await?;
        Ok(())
    }
}

impl std::fmt::Debug for ControlClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlClient")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}
