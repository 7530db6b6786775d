//! The `flwr login` tokens of each SuperLink, kept under `$FLWR_HOME/credentials/` (default
//! `~/.flwr/credentials/`), one TOML file per Control API address: the directory is 0700
//! and each file 0600, since an access token is as good as the password for its lifetime.
//!
//! `UserSession` is the `Control` that `flwr run/ls/log/stop` use on a federation with
//! `enable-user-auth = true`: it sends the stored access token, and when the SuperLink
//! says it expired, refreshes it once with the refresh token, saves the new pair, and
//! calls again.

use crate::UserError;
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{
    Control, ControlError, NodeInfo, RunEvent, RunInfo, SessionInfo, SessionSelector, StartRun,
    Tokens,
};
use floret_transport::grpc::ControlClient;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::sync::mpsc;

/// The environment variable that moves `~/.flwr` (tests point it at a temporary directory).
pub const FLWR_HOME: &str = "FLWR_HOME";

/// One SuperLink's login, as stored.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StoredLogin {
    /// The Control API address the tokens belong to.
    pub address: String,
    /// Who logged in, for the "logged in as" line.
    pub username: String,
    /// Sent with every Control call; as good as the password until it expires.
    pub access_token: String,
    /// Unix seconds after which the SuperLink refuses the access token.
    pub access_expires_at: f64,
    /// Exchanged once for a new pair when the access token has expired.
    pub refresh_token: String,
    /// Unix seconds after which the refresh token is refused too: log in again.
    pub refresh_expires_at: f64,
}

impl std::fmt::Debug for StoredLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredLogin")
            .field("address", &self.address)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl StoredLogin {
    /// The login to keep for the SuperLink at `address`, from the tokens it issued.
    pub fn new(address: &str, tokens: Tokens) -> StoredLogin {
        StoredLogin {
            address: address.to_owned(),
            username: tokens.username,
            access_token: tokens.access_token,
            access_expires_at: tokens.access_expires_at,
            refresh_token: tokens.refresh_token,
            refresh_expires_at: tokens.refresh_expires_at,
        }
    }
}

/// `~/.flwr`, or `$FLWR_HOME` when set.
///
/// # Errors
/// A `UserError` when neither `FLWR_HOME` nor `HOME` is set.
pub fn flwr_home() -> Result<PathBuf, UserError> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(home) = var(FLWR_HOME) {
        return Ok(PathBuf::from(home));
    }
    var("HOME")
        .map(|home| PathBuf::from(home).join(".flwr"))
        .ok_or_else(|| {
            UserError::new("neither FLWR_HOME nor HOME is set: set FLWR_HOME to a directory for flwr's credentials")
        })
}

/// The file of `address`'s login: the address with everything but letters, digits, `.`,
/// `-` and `_` replaced by `_` (`127.0.0.1:9093` -> `127.0.0.1_9093.toml`).
pub fn credentials_path(home: &Path, address: &str) -> PathBuf {
    let name: String = address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    home.join("credentials").join(format!("{name}.toml"))
}

/// The stored login of `address`, if there is one.
///
/// # Errors
/// The file exists but cannot be read or parsed (the message names it and says to log in
/// again).
pub fn load(path: &Path) -> anyhow::Result<Option<StoredLogin>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(UserError::new(format!("cannot read {}: {e}", path.display())).into());
        }
    };
    toml::from_str(&text).map(Some).map_err(|e| {
        UserError::new(format!(
            "{} is damaged ({}): run flwr login again",
            path.display(),
            e.message().trim_end()
        ))
        .into()
    })
}

/// Writes a login, readable by its owner only: written to a 0600 temporary file in a 0700
/// directory, then renamed over the old one, so a crash never leaves half a token.
///
/// # Errors
/// The directory or file cannot be created or written.
pub fn save(path: &Path, login: &StoredLogin) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a credentials file needs a directory"))?;
    create_private_dir(dir)?;
    let text = toml::to_string(login).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("toml.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    // An older file may predate the mode: set it explicitly.
    set_mode(&tmp, 0o600)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Forgets `path`'s login; `false` when there was none.
///
/// # Errors
/// The file exists but cannot be removed.
pub fn remove(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    set_mode(dir, 0o700)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

/// See the module doc.
pub struct UserSession {
    /// The connection without a token, for `RefreshToken`.
    client: ControlClient,
    /// The connection with the current access token, and the login it came from.
    current: Mutex<(ControlClient, StoredLogin)>,
    path: PathBuf,
}

impl UserSession {
    /// A session over `client` with a stored login.
    ///
    /// # Errors
    /// `Invalid` when the stored access token cannot be sent (damaged file).
    pub fn new(
        client: ControlClient,
        login: StoredLogin,
        path: PathBuf,
    ) -> Result<UserSession, ControlError> {
        let authed = client.with_access_token(&login.access_token)?;
        Ok(UserSession {
            client,
            current: Mutex::new((authed, login)),
            path,
        })
    }

    fn current(&self) -> (ControlClient, StoredLogin) {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Calls `f` with the current token; on `TokenExpired`, refreshes and calls once more.
    async fn retry<T, Fut>(&self, f: impl Fn(ControlClient) -> Fut) -> Result<T, ControlError>
    where
        Fut: Future<Output = Result<T, ControlError>>,
    {
        let (client, login) = self.current();
        match f(client).await {
            Err(ControlError::TokenExpired) => {
                let client = self.refresh(&login).await?;
                f(client).await
            }
            other => other,
        }
    }

    /// The SuperLink's open sessions (`flwr session list`, admins only).
    ///
    /// # Errors
    /// As the SuperLink answers: `Invalid` for a user who is not an admin.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>, ControlError> {
        self.retry(|c| async move { c.list_sessions().await }).await
    }

    /// Ends the sessions `which` selects (`flwr session revoke`, admins only); answers how
    /// many ended.
    ///
    /// # Errors
    /// As [`Self::list_sessions`].
    pub async fn revoke_sessions(&self, which: &SessionSelector) -> Result<u64, ControlError> {
        self.retry(|c| async move { c.revoke_sessions(which).await })
            .await
    }

    /// Exchanges the refresh token for a new pair and stores it. When the refresh token has
    /// expired too, the SuperLink answers `Unauthenticated`, which asks to log in again.
    async fn refresh(&self, login: &StoredLogin) -> Result<ControlClient, ControlError> {
        let tokens = self.client.refresh_token(&login.refresh_token).await?;
        let login = StoredLogin::new(&login.address, tokens);
        save(&self.path, &login).map_err(|e| {
            ControlError::Invalid(format!(
                "cannot store the refreshed login in {}: {e}",
                self.path.display()
            ))
        })?;
        let client = self.client.with_access_token(&login.access_token)?;
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (client.clone(), login);
        Ok(client)
    }
}

#[async_trait]
impl Control for UserSession {
    async fn start_run(&self, request: StartRun) -> Result<u64, ControlError> {
        self.retry(|c| {
            let request = request.clone();
            async move { c.start_run(request).await }
        })
        .await
    }

    async fn stop_run(&self, run_id: u64) -> Result<(), ControlError> {
        self.retry(|c| async move { c.stop_run(run_id).await })
            .await
    }

    async fn list_runs(&self) -> Result<Vec<RunInfo>, ControlError> {
        self.retry(|c| async move { c.list_runs().await }).await
    }

    async fn get_run(&self, run_id: u64) -> Result<RunInfo, ControlError> {
        self.retry(|c| async move { c.get_run(run_id).await }).await
    }

    async fn stream_events(
        &self,
        run_id: u64,
        follow: bool,
    ) -> Result<mpsc::Receiver<RunEvent>, ControlError> {
        self.retry(|c| async move { c.stream_events(run_id, follow).await })
            .await
    }

    // The SuperNode key list: without these the trait's defaults answered a logged-in
    // admin that the SuperLink "does not manage SuperNode keys".
    async fn register_node_key(&self, public_key: Bytes) -> Result<u64, ControlError> {
        self.retry(|c| {
            let public_key = public_key.clone();
            async move { c.register_node_key(public_key).await }
        })
        .await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ControlError> {
        self.retry(|c| async move { c.list_nodes().await }).await
    }

    async fn unregister_node_key(&self, node_id: u64) -> Result<(), ControlError> {
        self.retry(|c| async move { c.unregister_node_key(node_id).await })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> StoredLogin {
        StoredLogin {
            address: "127.0.0.1:9093".into(),
            username: "alice".into(),
            access_token: "a".repeat(64),
            access_expires_at: 1.5,
            refresh_token: "r".repeat(64),
            refresh_expires_at: 2.5,
        }
    }

    #[test]
    fn addresses_become_safe_file_names() {
        let home = Path::new("/h");
        assert_eq!(
            credentials_path(home, "127.0.0.1:9093"),
            Path::new("/h/credentials/127.0.0.1_9093.toml")
        );
        assert_eq!(
            credentials_path(home, "[::1]:9093"),
            Path::new("/h/credentials/___1__9093.toml")
        );
        assert_eq!(
            credentials_path(home, "../x:1"),
            Path::new("/h/credentials/.._x_1.toml")
        );
    }

    #[test]
    fn a_login_round_trips_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = credentials_path(dir.path(), "127.0.0.1:9093");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &login()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(login()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(path.parent().unwrap()), 0o700);
        }
        assert!(!format!("{:?}", login()).contains("aaaa"));
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }

    #[test]
    fn a_damaged_file_says_to_log_in_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.toml");
        std::fs::write(&path, "username = 3").unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.to_string().contains("run flwr login again"), "{e}");
    }

    /// A SuperLink whose only valid access token is `fresh`; `stale` has expired, and the
    /// refresh token `r1` trades for `fresh` (once).
    struct Authority(Mutex<bool>);

    #[async_trait]
    impl floret_core::UserAuthority for Authority {
        async fn login(
            &self,
            _: floret_core::Credentials,
            _: Option<std::net::IpAddr>,
        ) -> Result<Tokens, floret_core::UserAuthError> {
            Err(floret_core::UserAuthError::BadCredentials)
        }
        fn logout(&self, _: &str) {}
        fn refresh(&self, token: &str) -> Result<Tokens, floret_core::UserAuthError> {
            let mut used = self.0.lock().unwrap();
            if token != "r1" || *used {
                return Err(floret_core::UserAuthError::RefreshExpired);
            }
            *used = true;
            Ok(Tokens {
                access_token: "fresh".into(),
                access_expires_at: 100.0,
                refresh_token: "r2".into(),
                refresh_expires_at: 200.0,
                username: "alice".into(),
            })
        }
        fn authenticate(
            &self,
            token: &str,
        ) -> Result<floret_core::Caller, floret_core::UserAuthError> {
            match token {
                "fresh" => Ok(floret_core::Caller::user("alice", false)),
                "stale" => Err(floret_core::UserAuthError::AccessExpired),
                _ => Err(floret_core::UserAuthError::NotLoggedIn),
            }
        }
    }

    /// No runs, for anyone.
    struct Empty;

    #[async_trait]
    impl Control for Empty {
        async fn start_run(&self, _: StartRun) -> Result<u64, ControlError> {
            Err(ControlError::Invalid("no".into()))
        }
        async fn stop_run(&self, id: u64) -> Result<(), ControlError> {
            Err(ControlError::UnknownRun(id))
        }
        async fn list_runs(&self) -> Result<Vec<RunInfo>, ControlError> {
            Ok(Vec::new())
        }
        async fn get_run(&self, id: u64) -> Result<RunInfo, ControlError> {
            Err(ControlError::UnknownRun(id))
        }
        async fn stream_events(
            &self,
            id: u64,
            _: bool,
        ) -> Result<mpsc::Receiver<RunEvent>, ControlError> {
            Err(ControlError::UnknownRun(id))
        }
    }

    impl floret_core::ControlFor for Empty {
        fn control_for(&self, _: floret_core::Caller) -> std::sync::Arc<dyn Control> {
            std::sync::Arc::new(Empty)
        }
    }

    #[tokio::test]
    async fn an_expired_access_token_is_refreshed_once_and_stored() {
        let server = floret_transport::grpc::bind_control_with_users(
            "127.0.0.1:0".parse().unwrap(),
            std::sync::Arc::new(Empty),
            std::sync::Arc::new(Authority(Mutex::new(false))),
            floret_transport::grpc::ServerOptions::default(),
        )
        .await
        .unwrap();
        let client = floret_transport::grpc::control_client(&server.local_addr().to_string())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = credentials_path(dir.path(), "x:1");
        let stale = StoredLogin {
            access_token: "stale".into(),
            refresh_token: "r1".into(),
            ..login()
        };
        let session = UserSession::new(client.clone(), stale.clone(), path.clone()).unwrap();
        assert_eq!(session.list_runs().await, Ok(Vec::new()));
        let stored = load(&path).unwrap().unwrap();
        assert_eq!(
            (stored.access_token.as_str(), stored.refresh_token.as_str()),
            ("fresh", "r2")
        );
        // Later calls use the new token without refreshing again.
        assert_eq!(session.get_run(5).await, Err(ControlError::UnknownRun(5)));

        // Once the refresh token is spent too, the user must log in again.
        let session = UserSession::new(client, stale, path).unwrap();
        let e = session.list_runs().await.unwrap_err();
        assert!(
            matches!(&e, ControlError::Unauthenticated(t) if t.contains("flwr login")),
            "{e:?}"
        );
        server.shutdown().await;
    }
}
