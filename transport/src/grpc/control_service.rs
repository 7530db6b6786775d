//! The Control API's server side: gRPC calls in, `dyn Control` calls out.
//!
//! With user authentication (`ControlService::with_users`), every run call must carry
//! `authorization: Bearer <access token>`: the token is resolved to a `Caller` by the
//! `UserAuthority`, and the call goes to that caller's view of the SuperLink
//! (`ControlFor`). `Login`, `RefreshToken` and `Logout` are the only calls without a token;
//! `ListSessions` and `RevokeSessions` are for admins. A login's peer address goes to the
//! authority for its per-address rate limit: tonic's connect info over gRPC, the same
//! extension set by the QUIC server.

use super::control_client::AUTHORIZATION;
use super::server::stopped;
use super::status::{from_control_error, from_decode_error};
use crate::convert_runs::{run_event_to_proto, run_info_to_proto, start_run_from_proto};
use crate::proto::v1;
use floret_core::{
    Caller, Control, ControlError, ControlFor, Credentials, SessionSelector, Tokens, UserAuthError,
    UserAuthority,
};
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
    /// `None`: no user authentication, every call goes to `control`.
    users: Option<Users>,
    /// Ends `StreamEvents` streams at shutdown.
    stop: watch::Receiver<bool>,
}

/// User authentication: who holds a token, and each caller's view of the runs.
struct Users {
    authority: Arc<dyn UserAuthority>,
    views: Arc<dyn ControlFor>,
}

/// What a call without a valid login hears. The server does not know the federation's
/// name in the user's pyproject.toml; the CLI words its own line with it.
const LOGIN_HINT: &str = "not logged in: run `flwr login . <federation>` for this SuperLink";

impl ControlService {
    pub(crate) fn new(control: Arc<dyn Control>, stop: watch::Receiver<bool>) -> Self {
        ControlService {
            control,
            users: None,
            stop,
        }
    }

    /// A service that authenticates users: each call is answered by `views` for the
    /// caller `authority` finds behind its token.
    pub(crate) fn with_users(
        views: Arc<dyn ControlFor>,
        authority: Arc<dyn UserAuthority>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        ControlService {
            control: views.control_for(Caller::anonymous()),
            users: Some(Users { authority, views }),
            stop,
        }
    }

    /// The Control to answer this call with: the caller's view with user authentication,
    /// else the one shared view.
    fn control_for<T>(&self, request: &Request<T>) -> Result<Arc<dyn Control>, Status> {
        let Some(users) = &self.users else {
            return Ok(self.control.clone());
        };
        Ok(users.views.control_for(caller(users, request)?))
    }

    fn authority(&self) -> Result<&Arc<dyn UserAuthority>, Status> {
        self.users
            .as_ref()
            .map(|u| &u.authority)
            .ok_or_else(|| Status::failed_precondition(UserAuthError::Disabled.to_string()))
    }

    /// The logged-in caller of an admin call (sessions), on a SuperLink with user auth.
    fn user<T>(&self, request: &Request<T>) -> Result<(Caller, &Arc<dyn UserAuthority>), Status> {
        let users = self
            .users
            .as_ref()
            .ok_or_else(|| Status::failed_precondition(UserAuthError::Disabled.to_string()))?;
        Ok((caller(users, request)?, &users.authority))
    }
}

/// The caller behind a request's bearer token.
fn caller<T>(users: &Users, request: &Request<T>) -> Result<Caller, Status> {
    let header = request
        .metadata()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    caller_of(users.authority.as_ref(), header)
}

/// The caller behind an `authorization: Bearer <token>` header value.
fn caller_of(authority: &dyn UserAuthority, header: Option<&str>) -> Result<Caller, Status> {
    let token = header
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| not_logged_in(LOGIN_HINT))?;
    match authority.authenticate(token) {
        Ok(caller) => Ok(caller),
        Err(UserAuthError::AccessExpired) => Err(from_control_error(ControlError::TokenExpired)),
        Err(_) => Err(not_logged_in(LOGIN_HINT)),
    }
}

/// The calls a user makes without a valid access token: before holding one, or (Logout)
/// after it expired.
const WITHOUT_TOKEN: [&str; 3] = ["Login", "RefreshToken", "Logout"];

/// User authentication from the headers alone, before the body of a call is read: without a
/// valid access token, no `StartRun` body (a FAB of up to `--max-fab-size`) is received.
/// The service checks the token again when it picks the caller's view; that lookup is
/// cheap, unlike a login.
pub(crate) fn pre_auth(authority: Arc<dyn UserAuthority>) -> crate::guard::PreAuth {
    Arc::new(move |path, headers, _| {
        let method = path.rsplit('/').next().unwrap_or(path);
        if WITHOUT_TOKEN.contains(&method) {
            return Ok(());
        }
        let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
        caller_of(authority.as_ref(), header).map(drop)
    })
}

fn not_logged_in(message: &str) -> Status {
    from_control_error(ControlError::Unauthenticated(message.to_owned()))
}

/// A refused login or refresh. Wrong credentials and expired logins say what to do; the
/// caller's CLI shows the text as is.
fn auth_refused(e: &UserAuthError) -> Status {
    let message = match e {
        UserAuthError::BadCredentials | UserAuthError::BadApiToken => e.to_string(),
        UserAuthError::NotLoggedIn
        | UserAuthError::RefreshExpired
        | UserAuthError::AccessExpired => {
            "the login has expired: run `flwr login . <federation>` again".to_owned()
        }
        UserAuthError::Disabled => return Status::failed_precondition(e.to_string()),
        UserAuthError::TooManyLogins | UserAuthError::LockedOut { .. } => {
            return Status::resource_exhausted(e.to_string());
        }
        UserAuthError::NotAdmin => return Status::permission_denied(e.to_string()),
    };
    not_logged_in(&message)
}

fn tokens_to_proto(t: Tokens) -> v1::AuthTokens {
    v1::AuthTokens {
        access_token: t.access_token,
        access_expires_at: t.access_expires_at,
        refresh_token: t.refresh_token,
        refresh_expires_at: t.refresh_expires_at,
        username: t.username,
    }
}

fn session_to_proto(s: floret_core::SessionInfo) -> v1::SessionInfo {
    v1::SessionInfo {
        id: s.id,
        user: s.user,
        admin: s.admin,
        created_at: s.created_at,
        last_used_at: s.last_used_at,
        expires_at: s.expires_at,
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
        let control = self.control_for(&request)?;
        let start = start_run_from_proto(request.into_inner())
            .map_err(|e| from_decode_error("StartRun", &e))?;
        let run_id = control.start_run(start).await.map_err(from_control_error)?;
        Ok(Response::new(v1::StartRunResponse { run_id }))
    }

    async fn stop_run(
        &self,
        request: Request<v1::StopRunRequest>,
    ) -> Result<Response<v1::StopRunResponse>, Status> {
        self.control_for(&request)?
            .stop_run(request.into_inner().run_id)
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::StopRunResponse {}))
    }

    async fn list_runs(
        &self,
        request: Request<v1::ListRunsRequest>,
    ) -> Result<Response<v1::ListRunsResponse>, Status> {
        let runs = self
            .control_for(&request)?
            .list_runs()
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::ListRunsResponse {
            runs: runs.iter().map(run_info_to_proto).collect(),
        }))
    }

    async fn get_run(
        &self,
        request: Request<v1::GetRunRequest>,
    ) -> Result<Response<v1::GetRunResponse>, Status> {
        let run = self
            .control_for(&request)?
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
        let control = self.control_for(&request)?;
        let r = request.into_inner();
        let events = control
            .stream_events(r.run_id, r.follow)
            .await
            .map_err(from_control_error)?;
        let events = ReceiverStream::new(events)
            .map(|e| Ok(run_event_to_proto(&e)))
            .take_until(drained(self.stop.clone()));
        Ok(Response::new(Box::pin(events)))
    }

    async fn login(
        &self,
        request: Request<v1::LoginRequest>,
    ) -> Result<Response<v1::AuthTokens>, Status> {
        let authority = self.authority()?.clone();
        // The guard's connection record: set for TCP, TLS and QUIC connections alike.
        let peer = crate::guard::ConnInfo::of(request.extensions())
            .map(|c| c.remote.ip())
            .or_else(|| request.remote_addr().map(|a| a.ip()));
        let r = request.into_inner();
        let credentials = if !r.api_token.is_empty() {
            Credentials::ApiToken(r.api_token)
        } else if !r.username.is_empty() {
            Credentials::Password {
                username: r.username,
                password: r.password,
            }
        } else {
            return Err(Status::invalid_argument(
                "Login needs a username and password, or an API token",
            ));
        };
        let tokens = authority
            .login(credentials, peer)
            .await
            .map_err(|e| auth_refused(&e))?;
        Ok(Response::new(tokens_to_proto(tokens)))
    }

    async fn logout(
        &self,
        request: Request<v1::LogoutRequest>,
    ) -> Result<Response<v1::LogoutResponse>, Status> {
        self.authority()?
            .logout(&request.into_inner().refresh_token);
        Ok(Response::new(v1::LogoutResponse {}))
    }

    async fn list_sessions(
        &self,
        request: Request<v1::ListSessionsRequest>,
    ) -> Result<Response<v1::ListSessionsResponse>, Status> {
        let (caller, authority) = self.user(&request)?;
        let sessions = authority.sessions(&caller).map_err(|e| auth_refused(&e))?;
        Ok(Response::new(v1::ListSessionsResponse {
            sessions: sessions.into_iter().map(session_to_proto).collect(),
        }))
    }

    async fn revoke_sessions(
        &self,
        request: Request<v1::RevokeSessionsRequest>,
    ) -> Result<Response<v1::RevokeSessionsResponse>, Status> {
        let (caller, authority) = self.user(&request)?;
        let which = match request.into_inner().which {
            Some(v1::revoke_sessions_request::Which::SessionId(id)) => SessionSelector::Id(id),
            Some(v1::revoke_sessions_request::Which::User(user)) if !user.is_empty() => {
                SessionSelector::User(user)
            }
            _ => {
                return Err(Status::invalid_argument(
                    "RevokeSessions needs a session id or a user name",
                ));
            }
        };
        let revoked = authority
            .revoke(&caller, &which)
            .map_err(|e| auth_refused(&e))?;
        Ok(Response::new(v1::RevokeSessionsResponse {
            revoked: u64::try_from(revoked).unwrap_or(u64::MAX),
        }))
    }

    async fn refresh_token(
        &self,
        request: Request<v1::RefreshTokenRequest>,
    ) -> Result<Response<v1::AuthTokens>, Status> {
        let authority = self.authority()?;
        let tokens = authority
            .refresh(&request.into_inner().refresh_token)
            .map_err(|e| auth_refused(&e))?;
        Ok(Response::new(tokens_to_proto(tokens)))
    }

    async fn register_node_key(
        &self,
        request: Request<v1::RegisterNodeKeyRequest>,
    ) -> Result<Response<v1::RegisterNodeKeyResponse>, Status> {
        // Who asks first: a stranger learns nothing, not even whether the key would do.
        let control = self.control_for(&request)?;
        let public_key = request.get_ref().public_key.clone();
        // Only keys a SuperNode could sign with reach the allow-list.
        crate::auth::NodePublicKey::from_spki_der(&public_key)
            .map_err(|e| Status::invalid_argument(format!("RegisterNodeKey.public_key: {e}")))?;
        let node_id = control
            .register_node_key(public_key)
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::RegisterNodeKeyResponse { node_id }))
    }

    async fn list_nodes(
        &self,
        request: Request<v1::ListNodesRequest>,
    ) -> Result<Response<v1::ListNodesResponse>, Status> {
        let nodes = self
            .control_for(&request)?
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
        let node_id = request.get_ref().node_id;
        self.control_for(&request)?
            .unregister_node_key(node_id)
            .await
            .map_err(from_control_error)?;
        Ok(Response::new(v1::UnregisterNodeKeyResponse {}))
    }
}
