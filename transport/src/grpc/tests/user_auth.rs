//! User authentication on the Control API: bearer tokens, callers, login and refresh,
//! logout, admin session calls, and the login's peer address over both transports.

use super::double::FakeControl;
use super::*;
use crate::grpc::{
    ClientSecurity, ServerSecurity, TransportKind, bind_control, bind_control_with_users,
    control_client, control_client_with,
};
use async_trait::async_trait;
use floret_core::{
    Caller, Control, ControlError, ControlFor, Credentials, SessionInfo, SessionSelector, Tokens,
    UserAuthError, UserAuthority,
};
use std::net::IpAddr;
use std::sync::Mutex;

/// Hands out one shared `FakeControl` and remembers who asked.
#[derive(Default)]
struct Views {
    control: Arc<FakeControl>,
    callers: Mutex<Vec<Caller>>,
}

impl ControlFor for Views {
    fn control_for(&self, caller: Caller) -> Arc<dyn Control> {
        self.callers.lock().unwrap().push(caller);
        self.control.clone()
    }
}

/// `good` is alice's access token, `old` an expired one, `root` an admin's; alice's
/// password is `pw`, `flood` is refused as too many logins. Remembers login peers and
/// logged-out refresh tokens.
#[derive(Default)]
struct Authority {
    peers: Mutex<Vec<Option<IpAddr>>>,
    logged_out: Mutex<Vec<String>>,
}

fn tokens(access: &str) -> Tokens {
    Tokens {
        access_token: access.into(),
        access_expires_at: 10.0,
        refresh_token: "refresh".into(),
        refresh_expires_at: 20.0,
        username: "alice".into(),
    }
}

#[async_trait]
impl UserAuthority for Authority {
    async fn login(
        &self,
        credentials: Credentials,
        peer: Option<IpAddr>,
    ) -> Result<Tokens, UserAuthError> {
        self.peers.lock().unwrap().push(peer);
        match &credentials {
            Credentials::Password { password, .. } if password == "flood" => {
                Err(UserAuthError::TooManyLogins)
            }
            Credentials::Password { password, .. } if password == "locked" => {
                Err(UserAuthError::LockedOut { retry_after_s: 42 })
            }
            Credentials::Password { username, password }
                if username == "alice" && password == "pw" =>
            {
                Ok(tokens("good"))
            }
            Credentials::Password { .. } => Err(UserAuthError::BadCredentials),
            Credentials::ApiToken(_) => Err(UserAuthError::BadApiToken),
        }
    }

    fn refresh(&self, refresh_token: &str) -> Result<Tokens, UserAuthError> {
        match refresh_token {
            "refresh" => Ok(tokens("good")),
            _ => Err(UserAuthError::RefreshExpired),
        }
    }

    fn authenticate(&self, access_token: &str) -> Result<Caller, UserAuthError> {
        match access_token {
            "good" => Ok(Caller::user("alice", false)),
            "root" => Ok(Caller::user("root", true)),
            "old" => Err(UserAuthError::AccessExpired),
            _ => Err(UserAuthError::NotLoggedIn),
        }
    }

    fn logout(&self, refresh_token: &str) {
        self.logged_out
            .lock()
            .unwrap()
            .push(refresh_token.to_owned());
    }

    fn sessions(&self, caller: &Caller) -> Result<Vec<SessionInfo>, UserAuthError> {
        if !caller.admin {
            return Err(UserAuthError::NotAdmin);
        }
        Ok(vec![SessionInfo {
            id: 7,
            user: "alice".into(),
            admin: false,
            created_at: 1.0,
            last_used_at: 2.0,
            expires_at: 3.0,
        }])
    }

    fn revoke(&self, caller: &Caller, which: &SessionSelector) -> Result<usize, UserAuthError> {
        if !caller.admin {
            return Err(UserAuthError::NotAdmin);
        }
        Ok(match which {
            SessionSelector::Id(7) => 1,
            SessionSelector::User(u) if u == "alice" => 1,
            _ => 0,
        })
    }
}

async fn setup() -> (Arc<Views>, Server, super::super::ControlClient) {
    let (views, _authority, server, client) = setup_with(Arc::default()).await;
    (views, server, client)
}

async fn setup_with(
    authority: Arc<Authority>,
) -> (
    Arc<Views>,
    Arc<Authority>,
    Server,
    super::super::ControlClient,
) {
    let views = Arc::new(Views::default());
    let server = bind_control_with_users(
        localhost(),
        views.clone(),
        authority.clone(),
        ServerOptions {
            security: ServerSecurity::Insecure,
            quic: true,
            ..ServerOptions::default()
        },
    )
    .await
    .unwrap();
    let client = control_client(&server.local_addr().to_string())
        .await
        .unwrap();
    (views, authority, server, client)
}

#[tokio::test]
async fn calls_without_a_valid_token_are_refused_with_the_login_hint() {
    let (views, server, client) = setup().await;
    for client in [client.clone(), client.with_access_token("forged").unwrap()] {
        let err = client.list_runs().await.unwrap_err();
        let ControlError::Unauthenticated(text) = &err else {
            panic!("{err:?}");
        };
        assert!(text.contains("flwr login"), "{text}");
        assert!(client.stop_run(1).await.is_err());
        assert!(client.stream_events(1, false).await.is_err());
    }
    assert_eq!(
        client.with_access_token("old").unwrap().list_runs().await,
        Err(ControlError::TokenExpired)
    );
    assert!(
        views.callers.lock().unwrap().len() == 1,
        "only the anonymous default view"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_valid_token_reaches_the_callers_view() {
    let (views, server, client) = setup().await;
    let pair = client
        .login(&Credentials::Password {
            username: "alice".into(),
            password: "pw".into(),
        })
        .await
        .unwrap();
    assert_eq!(pair, tokens("good"));
    let authed = client.with_access_token(&pair.access_token).unwrap();
    assert!(authed.list_runs().await.unwrap().is_empty());
    assert_eq!(
        views.callers.lock().unwrap().last(),
        Some(&Caller::user("alice", false))
    );
    assert_eq!(
        client.refresh_token("refresh").await.unwrap(),
        tokens("good")
    );
    server.shutdown().await;
}

/// The SuperNode key calls carry the token like every other call: without it a logged-in
/// admin's `flwr supernode list` was refused as not logged in.
#[tokio::test]
async fn the_node_key_calls_carry_the_callers_token() {
    let (views, server, client) = setup().await;
    let authed = client.with_access_token("good").unwrap();
    let alice = Some(Caller::user("alice", false));
    // The fake answers these as a SuperLink without a key list; what counts is who asked.
    let _ = authed.list_nodes().await;
    assert_eq!(views.callers.lock().unwrap().last(), alice.as_ref());
    views.callers.lock().unwrap().clear();
    let _ = authed.unregister_node_key(7).await;
    assert_eq!(views.callers.lock().unwrap().last(), alice.as_ref());
    views.callers.lock().unwrap().clear();
    let key = crate::auth::NodeKeyPair::generate().unwrap();
    let _ = authed
        .register_node_key(key.public_key().spki_der().clone())
        .await;
    assert_eq!(views.callers.lock().unwrap().last(), alice.as_ref());
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_and_expired_logins_say_what_to_do() {
    let (_views, server, client) = setup().await;
    let wrong = client
        .login(&Credentials::Password {
            username: "alice".into(),
            password: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        wrong,
        ControlError::Unauthenticated("wrong username or password".into())
    );
    let expired = client.refresh_token("stale").await.unwrap_err();
    assert!(
        matches!(&expired, ControlError::Unauthenticated(t) if t.contains("flwr login")),
        "{expired:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_superlink_without_user_auth_refuses_login_and_ignores_tokens() {
    let server = bind_control(localhost(), Arc::new(FakeControl::default()))
        .await
        .unwrap();
    let client = control_client(&server.local_addr().to_string())
        .await
        .unwrap();
    let err = client
        .login(&Credentials::ApiToken("t".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::Invalid(t) if t.contains("not enabled")),
        "{err:?}"
    );
    let authed = client.with_access_token("anything").unwrap();
    assert!(authed.list_runs().await.unwrap().is_empty());
    server.shutdown().await;
}

fn password(password: &str) -> Credentials {
    Credentials::Password {
        username: "alice".into(),
        password: password.into(),
    }
}

#[tokio::test]
async fn a_login_carries_the_peer_address_over_grpc_and_quic() {
    let (_views, authority, server, _client) = setup_with(Arc::default()).await;
    for transport in [TransportKind::Grpc, TransportKind::Quic] {
        let options = ClientOptions {
            transport,
            security: ClientSecurity::Insecure,
            ..ClientOptions::default()
        };
        let client = control_client_with(&server.local_addr().to_string(), options)
            .await
            .unwrap();
        client.login(&password("pw")).await.unwrap();
    }
    let peers = authority.peers.lock().unwrap().clone();
    let loopback = Some(IpAddr::from([127, 0, 0, 1]));
    assert_eq!(peers, vec![loopback, loopback]);
    server.shutdown().await;
}

#[tokio::test]
async fn refused_logins_say_why_and_when_to_retry() {
    let (_views, server, client) = setup().await;
    let flood = client.login(&password("flood")).await.unwrap_err();
    assert!(
        matches!(&flood, ControlError::Invalid(t) if t.contains("too many logins in progress") && t.contains("retry")),
        "{flood:?}"
    );
    let locked = client.login(&password("locked")).await.unwrap_err();
    assert!(
        matches!(&locked, ControlError::Invalid(t) if t.contains("retry in 42 s")),
        "{locked:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn logout_reaches_the_superlink_and_sessions_are_for_admins() {
    let (_views, authority, server, client) = setup_with(Arc::default()).await;
    client.logout("refresh").await.unwrap();
    assert_eq!(*authority.logged_out.lock().unwrap(), vec!["refresh"]);

    let alice = client.with_access_token("good").unwrap();
    let refused = alice.list_sessions().await.unwrap_err();
    assert!(
        matches!(&refused, ControlError::Forbidden(t) if t.contains("only an admin")),
        "{refused:?}"
    );
    assert!(
        alice
            .revoke_sessions(&SessionSelector::User("root".into()))
            .await
            .is_err()
    );
    let anonymous = client.list_sessions().await.unwrap_err();
    assert!(
        matches!(anonymous, ControlError::Unauthenticated(_)),
        "{anonymous:?}"
    );

    let root = client.with_access_token("root").unwrap();
    let sessions = root.list_sessions().await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].user, "alice");
    assert_eq!(root.revoke_sessions(&SessionSelector::Id(7)).await, Ok(1));
    assert_eq!(
        root.revoke_sessions(&SessionSelector::User("bob".into()))
            .await,
        Ok(0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_start_run_without_a_valid_token_is_refused_before_its_body_is_read() {
    let (_views, server, _client) = setup().await;
    for headers in [vec![], vec![("authorization", "Bearer forged")]] {
        // The FAB announced never arrives: the answer comes from the headers alone.
        let status = super::limits::answer_to_unfinished_body(
            server.local_addr(),
            "/floret.v1.Control/StartRun",
            400_000_000,
            &headers,
        )
        .await;
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("flwr login"), "{status:?}");
    }
}
