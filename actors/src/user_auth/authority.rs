//! `AccountsAuthority`: the accounts, sessions and login limits bound to the SuperLink's
//! clock, as the `floret_core::UserAuthority` the transport asks for every Control call.
//!
//! A login passes three doors in turn: the rate limit (`throttle`: is this user or address
//! locked out?), the gate (`gate`: is a check slot or queue place free?), and the argon2
//! check on a blocking thread. Only then is a session opened.

use super::accounts::{Account, Accounts};
use super::gate::{GateLimits, LoginGate};
use super::sessions::{Sessions, TokenLifetimes};
use super::throttle::{LoginThrottle, ThrottlePolicy};
use crate::policy::clock::unix_now;
use async_trait::async_trait;
use floret_core::{
    Caller, Credentials, SessionInfo, SessionSelector, Tokens, UserAuthError, UserAuthority,
};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Every limit on logins and sessions, with the defaults a SuperLink starts with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoginLimits {
    /// How long tokens and sessions live.
    pub lifetimes: TokenLifetimes,
    /// How many password checks run and wait at once.
    pub gate: GateLimits,
    /// How many failed logins lock a user or address, and for how long.
    pub throttle: ThrottlePolicy,
}

/// See the module doc.
#[derive(Debug)]
pub struct AccountsAuthority {
    /// Shared with the blocking threads that run the argon2 checks.
    accounts: Arc<Accounts>,
    sessions: Mutex<Sessions>,
    throttle: Mutex<LoginThrottle>,
    gate: LoginGate,
}

/// Takes over a poisoned lock: a panic elsewhere while holding it leaves the table
/// consistent (every update is a few map inserts), so failing every later login would be
/// worse.
fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl AccountsAuthority {
    /// Checks logins against `accounts` within `limits`. Sessions live in memory only: a
    /// SuperLink restart logs everyone out.
    pub fn new(accounts: Accounts, limits: LoginLimits) -> AccountsAuthority {
        AccountsAuthority {
            accounts: Arc::new(accounts),
            sessions: Mutex::new(Sessions::new(limits.lifetimes)),
            throttle: Mutex::new(LoginThrottle::new(limits.throttle)),
            gate: LoginGate::new(limits.gate),
        }
    }

    fn table(&self) -> MutexGuard<'_, Sessions> {
        locked(&self.sessions)
    }

    fn throttle(&self) -> MutexGuard<'_, LoginThrottle> {
        locked(&self.throttle)
    }
}

/// The argon2 check itself: the account the credentials prove, if any.
fn check(accounts: &Accounts, credentials: &Credentials) -> Option<Account> {
    match credentials {
        Credentials::Password { username, password } => {
            accounts.check_password(username, password).cloned()
        }
        Credentials::ApiToken(token) => accounts.check_api_token(token).cloned(),
    }
}

#[async_trait]
impl UserAuthority for AccountsAuthority {
    async fn login(
        &self,
        credentials: Credentials,
        peer: Option<IpAddr>,
    ) -> Result<Tokens, UserAuthError> {
        let (user, refused) = match &credentials {
            Credentials::Password { username, .. } => {
                (Some(username.clone()), UserAuthError::BadCredentials)
            }
            Credentials::ApiToken(_) => (None, UserAuthError::BadApiToken),
        };
        let attempt = self
            .throttle()
            .begin(user.as_deref(), peer, unix_now())
            .map_err(|retry_after_s| UserAuthError::LockedOut { retry_after_s })?;
        let accounts = self.accounts.clone();
        let checked = self.gate.run(move || check(&accounts, &credentials)).await;
        let account = match checked {
            Err(e) => {
                self.throttle().cancel(attempt);
                return Err(e);
            }
            Ok(account) => {
                self.throttle().finish(attempt, account.is_some());
                account.ok_or(refused)?
            }
        };
        Ok(self.table().open(&account, unix_now(), &mut rand::rng()))
    }

    fn refresh(&self, refresh_token: &str) -> Result<Tokens, UserAuthError> {
        self.table()
            .refresh(refresh_token, unix_now(), &mut rand::rng())
    }

    fn authenticate(&self, access_token: &str) -> Result<Caller, UserAuthError> {
        self.table().authenticate(access_token, unix_now())
    }

    fn logout(&self, refresh_token: &str) {
        self.table().logout(refresh_token);
    }

    fn sessions(&self, caller: &Caller) -> Result<Vec<SessionInfo>, UserAuthError> {
        if !caller.admin {
            return Err(UserAuthError::NotAdmin);
        }
        Ok(self.table().list(unix_now()))
    }

    fn revoke(&self, caller: &Caller, which: &SessionSelector) -> Result<usize, UserAuthError> {
        if !caller.admin {
            return Err(UserAuthError::NotAdmin);
        }
        Ok(self.table().revoke(which))
    }
}

#[cfg(test)]
mod tests {
    use super::super::secrets::hash_secret;
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    const PEER: Option<IpAddr> = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));

    fn authority(limits: LoginLimits) -> AccountsAuthority {
        let mut rng = rand::rng();
        let text = format!(
            "[[users]]\nname = \"alice\"\npassword-hash = \"{}\"\napi-token-hash = \"{}\"\n\
             [[users]]\nname = \"root\"\nrole = \"admin\"\npassword-hash = \"{}\"\n",
            hash_secret("pw", &mut rng).unwrap(),
            hash_secret("tok", &mut rng).unwrap(),
            hash_secret("root-pw", &mut rng).unwrap(),
        );
        AccountsAuthority::new(Accounts::parse(&text).unwrap(), limits)
    }

    fn password(user: &str, password: &str) -> Credentials {
        Credentials::Password {
            username: user.into(),
            password: password.into(),
        }
    }

    #[tokio::test]
    async fn logs_in_with_a_password_or_an_api_token() {
        let authority = authority(LoginLimits::default());
        assert_eq!(
            authority.login(password("alice", "nope"), PEER).await,
            Err(UserAuthError::BadCredentials)
        );
        assert_eq!(
            authority.login(password("mallory", "pw"), PEER).await,
            Err(UserAuthError::BadCredentials)
        );
        let tokens = authority
            .login(password("alice", "pw"), PEER)
            .await
            .unwrap();
        assert_eq!(
            authority.authenticate(&tokens.access_token),
            Ok(Caller::user("alice", false))
        );
        let by_token = authority
            .login(Credentials::ApiToken("tok".into()), None)
            .await
            .unwrap();
        assert_eq!(by_token.username, "alice");
        assert_eq!(
            authority
                .login(Credentials::ApiToken("pw".into()), None)
                .await,
            Err(UserAuthError::BadApiToken)
        );
        let refreshed = authority.refresh(&tokens.refresh_token).unwrap();
        assert!(authority.authenticate(&refreshed.access_token).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn after_k_wrong_passwords_the_right_one_waits_out_the_lockout() {
        let limits = LoginLimits {
            throttle: ThrottlePolicy {
                max_failures_per_user: 3,
                ..ThrottlePolicy::default()
            },
            ..LoginLimits::default()
        };
        let authority = authority(limits);
        for _ in 0..3 {
            assert_eq!(
                authority.login(password("alice", "guess"), PEER).await,
                Err(UserAuthError::BadCredentials)
            );
        }
        assert_eq!(
            authority.login(password("alice", "pw"), PEER).await,
            Err(UserAuthError::LockedOut { retry_after_s: 60 })
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(matches!(
            authority.login(password("alice", "pw"), PEER).await,
            Err(UserAuthError::LockedOut {
                retry_after_s: 30 | 31
            })
        ));
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(authority.login(password("alice", "pw"), PEER).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_login_flood_beyond_the_queue_is_refused_at_once() {
        let limits = LoginLimits {
            gate: GateLimits {
                max_concurrent: 1,
                max_queued: 2,
            },
            throttle: ThrottlePolicy {
                max_failures_per_user: u32::MAX,
                max_failures_per_address: u32::MAX,
                ..ThrottlePolicy::default()
            },
            ..LoginLimits::default()
        };
        let authority = Arc::new(authority(limits));
        let logins: Vec<_> = (0..32)
            .map(|_| {
                let authority = authority.clone();
                tokio::spawn(async move { authority.login(password("alice", "x"), PEER).await })
            })
            .collect();
        let mut refused = 0;
        for login in logins {
            match login.await.unwrap() {
                Err(UserAuthError::TooManyLogins) => refused += 1,
                Err(UserAuthError::BadCredentials) => {}
                other => panic!("{other:?}"),
            }
        }
        assert!(
            refused >= 32 - 3 - 4,
            "only 1 checking and 2 queued: {refused}"
        );
        // Refused attempts do not count as failures, and the gate is free again.
        assert!(authority.login(password("alice", "pw"), PEER).await.is_ok());
    }

    #[tokio::test]
    async fn logout_ends_the_session_and_only_admins_manage_sessions() {
        let authority = authority(LoginLimits::default());
        let alice = authority
            .login(password("alice", "pw"), PEER)
            .await
            .unwrap();
        let root = authority
            .login(password("root", "root-pw"), PEER)
            .await
            .unwrap();
        let alice_caller = authority.authenticate(&alice.access_token).unwrap();
        let root_caller = authority.authenticate(&root.access_token).unwrap();
        assert_eq!(
            authority.sessions(&alice_caller),
            Err(UserAuthError::NotAdmin)
        );
        assert_eq!(
            authority.revoke(&alice_caller, &SessionSelector::User("root".into())),
            Err(UserAuthError::NotAdmin)
        );
        let list = authority.sessions(&root_caller).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            authority.revoke(&root_caller, &SessionSelector::User("alice".into())),
            Ok(1)
        );
        assert_eq!(
            authority.refresh(&alice.refresh_token),
            Err(UserAuthError::NotLoggedIn)
        );
        authority.logout(&root.refresh_token);
        assert_eq!(
            authority.authenticate(&root.access_token),
            Err(UserAuthError::NotLoggedIn)
        );
        assert_eq!(
            authority.refresh(&root.refresh_token),
            Err(UserAuthError::NotLoggedIn)
        );
    }
}
