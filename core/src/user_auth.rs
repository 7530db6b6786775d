//! User authentication for the Control API: who is calling, and the authority that turns
//! credentials into tokens and tokens into callers.
//!
//! The transport resolves each Control call's bearer token to a [`Caller`] through a
//! [`UserAuthority`] and hands the caller to the SuperLink, so neither the SuperLink's run
//! logic nor this crate ever sees wire types or token bytes beyond opaque strings.

use crate::api::Control;
use async_trait::async_trait;
use std::net::IpAddr;
use std::sync::Arc;
use thiserror::Error;

/// The user behind a Control call. With user authentication off every call is
/// [`Caller::anonymous`], which sees every run; with it on, a user sees only the runs they
/// own, unless they are an admin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Caller {
    /// The logged-in user; `None` when the SuperLink runs without user authentication.
    pub user: Option<String>,
    /// Admins see and stop every user's runs.
    pub admin: bool,
}

impl Caller {
    /// A caller on a SuperLink without user authentication.
    pub fn anonymous() -> Caller {
        Caller::default()
    }

    /// A logged-in user.
    pub fn user(name: impl Into<String>, admin: bool) -> Caller {
        Caller {
            user: Some(name.into()),
            admin,
        }
    }

    /// Whether this caller may see (and stop) a run owned by `owner`. Runs recorded while
    /// user authentication was off have an empty owner and belong to admins only.
    pub fn may_access(&self, owner: &str) -> bool {
        match &self.user {
            None => true,
            Some(_) if self.admin => true,
            Some(user) => user == owner,
        }
    }

    /// Whether this caller may manage the SuperLink itself (the SuperNode key list): anyone
    /// without user authentication, else admins only.
    pub fn may_administer(&self) -> bool {
        self.user.is_none() || self.admin
    }

    /// The owner recorded on the runs this caller starts: empty without user auth.
    pub fn owner(&self) -> String {
        self.user.clone().unwrap_or_default()
    }
}

/// What `flwr login` proves itself with.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A user name and password, checked against the SuperLink's accounts file.
    Password {
        /// The account's name.
        username: String,
        /// The password in clear; kept out of `Debug` output.
        password: String,
    },
    /// A long-lived token for scripts, issued by the SuperLink's operator.
    ApiToken(String),
}

impl std::fmt::Debug for Credentials {
    // Secrets never reach logs, even at debug level.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .finish_non_exhaustive(),
            Credentials::ApiToken(_) => f.write_str("ApiToken(..)"),
        }
    }
}

/// The result of a login or refresh: an access token for every Control call, and a
/// refresh token to get a new pair when the access token expires.
#[derive(Clone, PartialEq)]
pub struct Tokens {
    /// Sent as the bearer token of every Control call; opaque to the client.
    pub access_token: String,
    /// Unix seconds after which the access token is refused as expired.
    pub access_expires_at: f64,
    /// Exchanged for a new pair once the access token has expired; usable once.
    pub refresh_token: String,
    /// Unix seconds after which the refresh token is refused: log in again.
    pub refresh_expires_at: f64,
    /// Who logged in, for the CLI's "logged in as" line.
    pub username: String,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("username", &self.username)
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish_non_exhaustive()
    }
}

/// Why a login, refresh or token check was refused. Unknown users and wrong passwords
/// share one variant so that a client cannot probe which user names exist.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UserAuthError {
    /// The user name is unknown or the password wrong (one variant, so names cannot be probed).
    #[error("wrong username or password")]
    BadCredentials,
    /// The API token is not one the operator issued.
    #[error("unknown API token")]
    BadApiToken,
    /// No token, or one this SuperLink never issued (it restarted, or the user logged out).
    #[error("not logged in")]
    NotLoggedIn,
    /// The access token was valid but its time is up: refresh it.
    #[error("the access token has expired")]
    AccessExpired,
    /// The refresh token's time is up too (or it was already used): log in again.
    #[error("the login has expired")]
    RefreshExpired,
    /// This SuperLink does not authenticate users.
    #[error("user authentication is not enabled on this SuperLink")]
    Disabled,
    /// Every password check slot and every queue place is taken: the login was refused
    /// before any work was done, so a flood of logins cannot exhaust the SuperLink's memory.
    #[error("too many logins in progress on this SuperLink: retry in a few seconds")]
    TooManyLogins,
    /// Too many failed logins for this user name or from this address: every login for
    /// them, even with the right password, is refused until the lockout ends.
    #[error(
        "too many failed logins for this user or from this address: retry in {retry_after_s} s"
    )]
    LockedOut {
        /// Whole seconds until a login is considered again.
        retry_after_s: u64,
    },
    /// Listing or revoking other users' sessions is for admins.
    #[error(
        "only an admin may list or revoke sessions: log in as a user with role = \"admin\" in the accounts file"
    )]
    NotAdmin,
}

/// One open login as an admin sees it (`flwr session list`): never its tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionInfo {
    /// Names the session for `flwr session revoke --id`.
    pub id: u64,
    /// Who logged in.
    pub user: String,
    /// Whether the user is an admin.
    pub admin: bool,
    /// Unix seconds of the login.
    pub created_at: f64,
    /// Unix seconds of the last call, login or refresh made with it.
    pub last_used_at: f64,
    /// Unix seconds after which it cannot be refreshed any more: the sooner of the refresh
    /// token's expiry and the session's absolute end.
    pub expires_at: f64,
}

/// Which sessions `flwr session revoke` ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionSelector {
    /// One session, by its id.
    Id(u64),
    /// Every session of one user.
    User(String),
}

/// The SuperLink's accounts and sessions. Implementations read the clock; the decisions
/// themselves live in pure code that takes the time as a parameter.
#[async_trait]
pub trait UserAuthority: Send + Sync {
    /// Exchanges credentials for a fresh token pair. `peer` is the address the login came
    /// from (when the transport knows it), for the per-address rate limit. Async because
    /// a login may wait its turn for the slow (argon2) check.
    async fn login(
        &self,
        credentials: Credentials,
        peer: Option<IpAddr>,
    ) -> Result<Tokens, UserAuthError>;
    /// Exchanges a refresh token for a new pair; the old refresh token stops working.
    fn refresh(&self, refresh_token: &str) -> Result<Tokens, UserAuthError>;
    /// The caller an access token belongs to.
    fn authenticate(&self, access_token: &str) -> Result<Caller, UserAuthError>;
    /// Ends the session of a refresh token (`flwr logout`): both its tokens stop working.
    /// Unknown tokens are ignored, so logging out twice is not an error.
    fn logout(&self, refresh_token: &str);
    /// The open sessions, for an admin `caller`.
    ///
    /// # Errors
    /// `NotAdmin` for anyone else; `Disabled` where sessions are not kept (the default).
    fn sessions(&self, caller: &Caller) -> Result<Vec<SessionInfo>, UserAuthError> {
        let _ = caller;
        Err(UserAuthError::Disabled)
    }
    /// Ends the sessions `which` selects, for an admin `caller`; answers how many ended.
    ///
    /// # Errors
    /// As [`UserAuthority::sessions`].
    fn revoke(&self, caller: &Caller, which: &SessionSelector) -> Result<usize, UserAuthError> {
        let _ = (caller, which);
        Err(UserAuthError::Disabled)
    }
}

/// A Control API that answers each caller for the runs they may see (the SuperLink's
/// `LinkControl`). The transport resolves the caller of each call from its token and asks
/// for that caller's view, so the `Control` trait itself stays identity-free and every
/// in-process user of it (simulation, tests) is unchanged.
pub trait ControlFor: Send + Sync {
    /// `caller`'s view of the Control API.
    fn control_for(&self, caller: Caller) -> Arc<dyn Control>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_see_their_own_runs_admins_and_anonymous_see_all() {
        let alice = Caller::user("alice", false);
        assert!(alice.may_access("alice"));
        assert!(!alice.may_access("bob"));
        assert!(!alice.may_access(""));
        assert!(Caller::user("root", true).may_access("bob"));
        assert!(Caller::anonymous().may_access("bob"));
        assert_eq!(Caller::anonymous().owner(), "");
        assert_eq!(alice.owner(), "alice");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = Credentials::Password {
            username: "alice".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::ApiToken("tok".into())).contains("tok"));
    }
}
