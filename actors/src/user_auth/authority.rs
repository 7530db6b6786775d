//! `AccountsAuthority`: the accounts and sessions bound to the SuperLink's clock, as the
//! `floret_core::UserAuthority` the transport asks for every Control call.

use super::accounts::Accounts;
use super::sessions::{Sessions, TokenLifetimes};
use crate::policy::clock::unix_now;
use floret_core::{Caller, Credentials, Tokens, UserAuthError, UserAuthority};
use std::sync::{Mutex, MutexGuard};

/// See the module doc.
#[derive(Debug)]
pub struct AccountsAuthority {
    accounts: Accounts,
    sessions: Mutex<Sessions>,
}

impl AccountsAuthority {
    /// Checks logins against `accounts`; the tokens it hands out last as `lifetimes` says.
    /// Sessions live in memory only: a SuperLink restart logs everyone out.
    pub fn new(accounts: Accounts, lifetimes: TokenLifetimes) -> AccountsAuthority {
        AccountsAuthority {
            accounts,
            sessions: Mutex::new(Sessions::new(lifetimes)),
        }
    }

    /// A panic elsewhere while holding the lock leaves the table consistent (every update
    /// is a few map inserts), so a poisoned lock is taken over rather than failing every
    /// later login.
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl UserAuthority for AccountsAuthority {
    fn login(&self, credentials: &Credentials) -> Result<Tokens, UserAuthError> {
        // argon2 runs before the lock is taken: a slow check never holds up other calls.
        let account = match credentials {
            Credentials::Password { username, password } => self
                .accounts
                .check_password(username, password)
                .ok_or(UserAuthError::BadCredentials)?,
            Credentials::ApiToken(token) => self
                .accounts
                .check_api_token(token)
                .ok_or(UserAuthError::BadApiToken)?,
        };
        Ok(self.sessions().open(account, unix_now(), &mut rand::rng()))
    }

    fn refresh(&self, refresh_token: &str) -> Result<Tokens, UserAuthError> {
        self.sessions()
            .refresh(refresh_token, unix_now(), &mut rand::rng())
    }

    fn authenticate(&self, access_token: &str) -> Result<Caller, UserAuthError> {
        self.sessions().authenticate(access_token, unix_now())
    }
}

#[cfg(test)]
mod tests {
    use super::super::secrets::hash_secret;
    use super::*;

    #[test]
    fn logs_in_with_a_password_or_an_api_token() {
        let mut rng = rand::rng();
        let text = format!(
            "[[users]]\nname = \"alice\"\npassword-hash = \"{}\"\napi-token-hash = \"{}\"\n",
            hash_secret("pw", &mut rng).unwrap(),
            hash_secret("tok", &mut rng).unwrap()
        );
        let authority =
            AccountsAuthority::new(Accounts::parse(&text).unwrap(), TokenLifetimes::default());
        let wrong = Credentials::Password {
            username: "alice".into(),
            password: "nope".into(),
        };
        assert_eq!(authority.login(&wrong), Err(UserAuthError::BadCredentials));
        let unknown = Credentials::Password {
            username: "mallory".into(),
            password: "pw".into(),
        };
        assert_eq!(
            authority.login(&unknown),
            Err(UserAuthError::BadCredentials)
        );
        let tokens = authority
            .login(&Credentials::Password {
                username: "alice".into(),
                password: "pw".into(),
            })
            .unwrap();
        assert_eq!(
            authority.authenticate(&tokens.access_token),
            Ok(Caller::user("alice", false))
        );
        let by_token = authority
            .login(&Credentials::ApiToken("tok".into()))
            .unwrap();
        assert_eq!(by_token.username, "alice");
        assert_eq!(
            authority.login(&Credentials::ApiToken("pw".into())),
            Err(UserAuthError::BadApiToken)
        );
        let refreshed = authority.refresh(&tokens.refresh_token).unwrap();
        assert!(authority.authenticate(&refreshed.access_token).is_ok());
    }
}
