//! User authentication on the Control API: bearer tokens, callers, login and refresh.

use super::double::FakeControl;
use super::*;
use crate::grpc::{bind_control, bind_control_with_users, control_client};
use floret_core::{
    Caller, Control, ControlError, ControlFor, Credentials, Tokens, UserAuthError, UserAuthority,
};
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

/// `good` is alice's access token, `old` an expired one; alice's password is `pw`.
struct Authority;

fn tokens(access: &str) -> Tokens {
    Tokens {
        access_token: access.into(),
        access_expires_at: 10.0,
        refresh_token: "refresh".into(),
        refresh_expires_at: 20.0,
        username: "alice".into(),
    }
}

impl UserAuthority for Authority {
    fn login(&self, credentials: &Credentials) -> Result<Tokens, UserAuthError> {
        match credentials {
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
            "old" => Err(UserAuthError::AccessExpired),
            _ => Err(UserAuthError::NotLoggedIn),
        }
    }
}

async fn setup() -> (Arc<Views>, Server, super::super::ControlClient) {
    let views = Arc::new(Views::default());
    let server = bind_control_with_users(
        localhost(),
        views.clone(),
        Arc::new(Authority),
        ServerOptions::default(),
    )
    .await
    .unwrap();
    let client = control_client(&server.local_addr().to_string())
        .await
        .unwrap();
    (views, server, client)
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
