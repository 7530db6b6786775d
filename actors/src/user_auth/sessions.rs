//! Login sessions: one per `flwr login`, holding the sha256 of its current access and
//! refresh tokens. Pure: every operation takes the time (Unix seconds) and the random
//! source, so expiry is exact in tests.
//!
//! A session ends when its refresh token lapses unused, at its absolute end (`max_s` after
//! the login, however often it was refreshed), at `flwr logout`, or when an admin revokes
//! it (`flwr session revoke`).

use super::accounts::{Account, Role};
use super::secrets::{new_token, token_digest};
use floret_core::{Caller, SessionInfo, SessionSelector, Tokens, UserAuthError};
use rand::RngCore;
use std::collections::HashMap;

/// How long tokens live.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLifetimes {
    /// Seconds an access token is accepted: short, so a leaked one is soon useless.
    pub access_s: f64,
    /// Seconds a refresh token is accepted: how long a login lasts unused.
    pub refresh_s: f64,
    /// Seconds a login lasts at most, however often it is refreshed: a stolen refresh
    /// token cannot be kept alive forever, and users prove their password again.
    pub max_s: f64,
}

impl Default for TokenLifetimes {
    /// 15 minutes, 12 hours, and 7 days at most.
    fn default() -> Self {
        TokenLifetimes {
            access_s: 15.0 * 60.0,
            refresh_s: 12.0 * 3600.0,
            max_s: 7.0 * 24.0 * 3600.0,
        }
    }
}

type Digest = [u8; 32];

#[derive(Debug, Clone)]
struct Session {
    user: String,
    admin: bool,
    created_at: f64,
    last_used_at: f64,
    access: Digest,
    access_expires_at: f64,
    refresh: Digest,
    refresh_expires_at: f64,
}

/// The sessions of a SuperLink. In memory: a restarted SuperLink asks everyone to log in
/// again.
#[derive(Debug, Default)]
pub struct Sessions {
    lifetimes: TokenLifetimes,
    next_id: u64,
    sessions: HashMap<u64, Session>,
    by_access: HashMap<Digest, u64>,
    by_refresh: HashMap<Digest, u64>,
}

impl Sessions {
    /// No sessions yet; tokens issued later live as long as `lifetimes` says.
    pub fn new(lifetimes: TokenLifetimes) -> Sessions {
        Sessions {
            lifetimes,
            ..Sessions::default()
        }
    }

    /// Opens a session for an account whose credentials were checked.
    pub fn open(&mut self, account: &Account, now: f64, rng: &mut impl RngCore) -> Tokens {
        self.prune(now);
        self.next_id += 1;
        let id = self.next_id;
        let admin = account.role == Role::Admin;
        let (tokens, session) = self.issue(&account.name, admin, now, now, rng);
        self.by_access.insert(session.access, id);
        self.by_refresh.insert(session.refresh, id);
        self.sessions.insert(id, session);
        tokens
    }

    /// The caller behind an access token.
    ///
    /// # Errors
    /// `NotLoggedIn` for a token this SuperLink did not issue or that was replaced by a
    /// refresh; `AccessExpired` once its time is up (the client then refreshes).
    pub fn authenticate(&mut self, access_token: &str, now: f64) -> Result<Caller, UserAuthError> {
        let session = self
            .by_access
            .get(&token_digest(access_token))
            .and_then(|id| self.sessions.get_mut(id))
            .ok_or(UserAuthError::NotLoggedIn)?;
        if now >= session.access_expires_at {
            return Err(UserAuthError::AccessExpired);
        }
        session.last_used_at = session.last_used_at.max(now);
        Ok(Caller::user(session.user.clone(), session.admin))
    }

    /// A new token pair for a refresh token; both old tokens stop working, so a stolen
    /// refresh token is good for one use at most.
    ///
    /// # Errors
    /// `NotLoggedIn` for an unknown (or already used) refresh token; `RefreshExpired` once
    /// its time is up or the session has reached its absolute end.
    pub fn refresh(
        &mut self,
        refresh_token: &str,
        now: f64,
        rng: &mut impl RngCore,
    ) -> Result<Tokens, UserAuthError> {
        let digest = token_digest(refresh_token);
        let id = *self
            .by_refresh
            .get(&digest)
            .ok_or(UserAuthError::NotLoggedIn)?;
        let Some(old) = self.sessions.get(&id).cloned() else {
            self.by_refresh.remove(&digest);
            return Err(UserAuthError::NotLoggedIn);
        };
        if now >= old.refresh_expires_at {
            self.close(id);
            return Err(UserAuthError::RefreshExpired);
        }
        self.by_access.remove(&old.access);
        self.by_refresh.remove(&old.refresh);
        let (tokens, session) = self.issue(&old.user, old.admin, old.created_at, now, rng);
        self.by_access.insert(session.access, id);
        self.by_refresh.insert(session.refresh, id);
        self.sessions.insert(id, session);
        Ok(tokens)
    }

    /// Ends the session of a refresh token (`flwr logout`); unknown tokens are ignored.
    pub fn logout(&mut self, refresh_token: &str) {
        if let Some(id) = self.by_refresh.get(&token_digest(refresh_token)).copied() {
            self.close(id);
        }
    }

    /// The open sessions, oldest first.
    pub fn list(&mut self, now: f64) -> Vec<SessionInfo> {
        self.prune(now);
        let mut list: Vec<SessionInfo> = self
            .sessions
            .iter()
            .map(|(id, s)| SessionInfo {
                id: *id,
                user: s.user.clone(),
                admin: s.admin,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                expires_at: s.refresh_expires_at,
            })
            .collect();
        list.sort_by_key(|s| s.id);
        list
    }

    /// Ends the sessions `which` selects; answers how many.
    pub fn revoke(&mut self, which: &SessionSelector) -> usize {
        let ids: Vec<u64> = match which {
            SessionSelector::Id(id) => self
                .sessions
                .contains_key(id)
                .then_some(*id)
                .into_iter()
                .collect(),
            SessionSelector::User(user) => self
                .sessions
                .iter()
                .filter(|(_, s)| &s.user == user)
                .map(|(id, _)| *id)
                .collect(),
        };
        for id in &ids {
            self.close(*id);
        }
        ids.len()
    }

    /// Open sessions, for tests and metrics.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// A new token pair for a session that began at `created_at`: neither token outlives
    /// the session's absolute end.
    fn issue(
        &self,
        user: &str,
        admin: bool,
        created_at: f64,
        now: f64,
        rng: &mut impl RngCore,
    ) -> (Tokens, Session) {
        let access_token = new_token(rng);
        let refresh_token = new_token(rng);
        let end = created_at + self.lifetimes.max_s;
        let session = Session {
            user: user.to_owned(),
            admin,
            created_at,
            last_used_at: now,
            access: token_digest(&access_token),
            access_expires_at: (now + self.lifetimes.access_s).min(end),
            refresh: token_digest(&refresh_token),
            refresh_expires_at: (now + self.lifetimes.refresh_s).min(end),
        };
        let tokens = Tokens {
            access_token,
            access_expires_at: session.access_expires_at,
            refresh_token,
            refresh_expires_at: session.refresh_expires_at,
            username: user.to_owned(),
        };
        (tokens, session)
    }

    fn close(&mut self, id: u64) {
        if let Some(s) = self.sessions.remove(&id) {
            self.by_access.remove(&s.access);
            self.by_refresh.remove(&s.refresh);
        }
    }

    /// Forgets sessions whose refresh token has expired, so the table stays as small as the
    /// number of live logins. An expired access token of a live session stays known, so its
    /// holder hears "expired" (and refreshes) rather than "not logged in".
    fn prune(&mut self, now: f64) {
        let dead: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| now >= s.refresh_expires_at)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.close(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn account(name: &str, role: Role) -> Account {
        Account {
            name: name.into(),
            role,
            password_hash: None,
            api_token_hash: None,
        }
    }

    fn sessions() -> (Sessions, StdRng) {
        let lifetimes = TokenLifetimes {
            access_s: 60.0,
            refresh_s: 600.0,
            max_s: 1000.0,
        };
        (Sessions::new(lifetimes), StdRng::seed_from_u64(3))
    }

    #[test]
    fn an_access_token_names_its_user_until_it_expires() {
        let (mut s, mut rng) = sessions();
        let t = s.open(&account("alice", Role::User), 1000.0, &mut rng);
        assert_eq!(t.access_expires_at, 1060.0);
        assert_eq!(t.refresh_expires_at, 1600.0);
        assert_eq!(
            s.authenticate(&t.access_token, 1059.9),
            Ok(Caller::user("alice", false))
        );
        assert_eq!(
            s.authenticate(&t.access_token, 1060.0),
            Err(UserAuthError::AccessExpired)
        );
        assert_eq!(
            s.authenticate("made-up", 1000.0),
            Err(UserAuthError::NotLoggedIn)
        );
        // The refresh token is not an access token.
        assert_eq!(
            s.authenticate(&t.refresh_token, 1000.0),
            Err(UserAuthError::NotLoggedIn)
        );
        let admin = s.open(&account("root", Role::Admin), 1000.0, &mut rng);
        assert_eq!(
            s.authenticate(&admin.access_token, 1000.0),
            Ok(Caller::user("root", true))
        );
    }

    #[test]
    fn refresh_rotates_both_tokens() {
        let (mut s, mut rng) = sessions();
        let first = s.open(&account("alice", Role::User), 1000.0, &mut rng);
        let second = s.refresh(&first.refresh_token, 1100.0, &mut rng).unwrap();
        assert_ne!(second.access_token, first.access_token);
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_eq!(second.access_expires_at, 1160.0);
        assert_eq!(second.username, "alice");
        assert_eq!(
            s.authenticate(&second.access_token, 1100.0),
            Ok(Caller::user("alice", false))
        );
        // The old pair is gone: a replayed refresh token is refused.
        assert_eq!(
            s.authenticate(&first.access_token, 1100.0),
            Err(UserAuthError::NotLoggedIn)
        );
        assert_eq!(
            s.refresh(&first.refresh_token, 1100.0, &mut rng),
            Err(UserAuthError::NotLoggedIn)
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn an_expired_refresh_token_asks_for_a_new_login() {
        let (mut s, mut rng) = sessions();
        let t = s.open(&account("alice", Role::User), 1000.0, &mut rng);
        assert_eq!(
            s.refresh(&t.refresh_token, 1600.0, &mut rng),
            Err(UserAuthError::RefreshExpired)
        );
        assert!(s.is_empty());
        assert_eq!(
            s.refresh(&t.refresh_token, 1600.0, &mut rng),
            Err(UserAuthError::NotLoggedIn)
        );
    }

    #[test]
    fn logout_and_pruning_forget_sessions() {
        let (mut s, mut rng) = sessions();
        let a = s.open(&account("alice", Role::User), 1000.0, &mut rng);
        s.logout(&a.refresh_token);
        assert_eq!(
            s.authenticate(&a.access_token, 1000.0),
            Err(UserAuthError::NotLoggedIn)
        );
        let _old = s.open(&account("bob", Role::User), 1000.0, &mut rng);
        let _new = s.open(&account("bob", Role::User), 1700.0, &mut rng);
        assert_eq!(s.len(), 1, "the session whose refresh expired was pruned");
    }

    #[test]
    fn refreshing_never_extends_a_login_past_its_absolute_end() {
        let (mut s, mut rng) = sessions();
        let mut t = s.open(&account("alice", Role::User), 1000.0, &mut rng);
        for now in [1500.0, 1900.0] {
            t = s.refresh(&t.refresh_token, now, &mut rng).unwrap();
        }
        assert_eq!(t.refresh_expires_at, 2000.0, "capped at login + max_s");
        assert_eq!(t.access_expires_at, 1960.0);
        let t = s.refresh(&t.refresh_token, 1990.0, &mut rng).unwrap();
        assert_eq!(t.access_expires_at, 2000.0);
        assert_eq!(
            s.refresh(&t.refresh_token, 2000.0, &mut rng),
            Err(UserAuthError::RefreshExpired),
            "log in again"
        );
        assert!(s.is_empty());
    }

    #[test]
    fn sessions_are_listed_without_tokens_and_revoked_by_id_or_user() {
        let (mut s, mut rng) = sessions();
        let a1 = s.open(&account("alice", Role::User), 1000.0, &mut rng);
        let a2 = s.open(&account("alice", Role::User), 1010.0, &mut rng);
        let b = s.open(&account("bob", Role::Admin), 1020.0, &mut rng);
        s.authenticate(&a1.access_token, 1030.0).unwrap();
        let list = s.list(1040.0);
        assert_eq!(list.len(), 3);
        assert_eq!(
            list[0],
            SessionInfo {
                id: 1,
                user: "alice".into(),
                admin: false,
                created_at: 1000.0,
                last_used_at: 1030.0,
                expires_at: 1600.0,
            }
        );
        assert!(list[2].admin);
        assert!(!format!("{list:?}").contains(&a1.access_token));
        assert_eq!(s.revoke(&SessionSelector::Id(list[1].id)), 1);
        assert_eq!(s.revoke(&SessionSelector::Id(99)), 0);
        assert_eq!(
            s.refresh(&a2.refresh_token, 1050.0, &mut rng),
            Err(UserAuthError::NotLoggedIn)
        );
        assert_eq!(s.revoke(&SessionSelector::User("alice".into())), 1);
        assert_eq!(
            s.authenticate(&a1.access_token, 1050.0),
            Err(UserAuthError::NotLoggedIn)
        );
        assert!(s.authenticate(&b.access_token, 1050.0).is_ok());
        assert_eq!(s.len(), 1);
    }
}
