//! `flwr login [APP_DIR] [FEDERATION]`, `flwr logout [APP_DIR] [FEDERATION]` and
//! `flwr hash-password`.
//!
//! `login` exchanges a username and password (prompted on a terminal, the password without
//! echo; `--username` and `--password-stdin` for scripts) or an API token
//! (`--api-token-stdin`) for the SuperLink's access and refresh tokens, and stores them
//! (see `credentials`). `hash-password` makes the argon2 hash an operator puts in the
//! SuperLink's accounts file (`--user-auth-config`).

use crate::UserError;
use crate::credentials::{self, StoredLogin, UserSession};
use crate::exit_code;
use crate::project::Project;
use crate::remote::Remote;
use anyhow::Context;
use floret_core::{Control, Credentials};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

/// Flags of `flwr login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The app's directory, holding the pyproject.toml that names the federation.
    #[arg(default_value = ".")]
    pub app_dir: PathBuf,
    /// A federation with an address and `enable-user-auth = true`; defaults to the one
    /// named by `default`.
    pub federation: Option<String>,
    /// The user to log in as (asked for on a terminal when not given).
    #[arg(long, value_name = "NAME", conflicts_with = "api_token_stdin")]
    pub username: Option<String>,
    /// Read the password from the first line of stdin instead of asking for it.
    #[arg(long, conflicts_with = "api_token_stdin")]
    pub password_stdin: bool,
    /// Log in with an API token, read from the first line of stdin.
    #[arg(long)]
    pub api_token_stdin: bool,
}

/// Flags of `flwr logout`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The app's directory, holding the pyproject.toml that names the federation.
    #[arg(default_value = ".")]
    pub app_dir: PathBuf,
    /// The federation to log out of; defaults to the one named by `default`.
    pub federation: Option<String>,
}

/// Flags of `flwr hash-password`: none, the secret comes from stdin.
#[derive(Debug, clap::Args)]
pub struct HashPasswordArgs {}

/// Logs in, stores the tokens and proves they work with one call; returns the exit code.
pub async fn execute(args: LoginArgs) -> anyhow::Result<i32> {
    let project = Project::load(&args.app_dir, "flwr login")?;
    let remote = Remote::from_project(&project, args.federation.as_deref(), "flwr login")?;
    if !remote.user_auth {
        return Err(UserError::new(format!(
            "federation `{0}` does not use user authentication: add enable-user-auth = true to [tool.flwr.federations.{0}] if its SuperLink runs with --user-auth-config",
            remote.federation
        ))
        .into());
    }
    let credentials = read_credentials(&args)?;
    let client = remote.connect_client().await?;
    let tokens = client
        .login(&credentials)
        .await
        .map_err(|e| remote.login_error(e))?;
    let path = remote.credentials_path()?;
    let login = StoredLogin::new(&remote.address, tokens);
    credentials::save(&path, &login)
        .with_context(|| format!("cannot store the login in {}", path.display()))?;
    // Proves the tokens work before saying so.
    let session: Arc<dyn Control> =
        Arc::new(UserSession::new(client, login.clone(), path).map_err(|e| remote.error(e))?);
    session.list_runs().await.map_err(|e| remote.error(e))?;
    crate::outln!("logged in to `{}` as {}", remote.federation, login.username);
    Ok(exit_code::OK)
}

/// Ends the session on the federation's SuperLink (both tokens stop working there) and
/// forgets the stored tokens; returns the exit code.
///
/// The local tokens are removed even when the SuperLink cannot be reached, but then the
/// command says so and exits 1: the session stays valid there until it expires or an admin
/// revokes it (`flwr session revoke`).
pub async fn logout(args: LogoutArgs) -> anyhow::Result<i32> {
    let project = Project::load(&args.app_dir, "flwr logout")?;
    let remote = Remote::from_project(&project, args.federation.as_deref(), "flwr logout")?;
    let path = remote.credentials_path()?;
    let Some(login) = credentials::load(&path).ok().flatten() else {
        let removed = credentials::remove(&path)
            .with_context(|| format!("cannot remove {}", path.display()))?;
        if removed {
            crate::outln!(
                "logged out of `{}` (the stored login was damaged)",
                remote.federation
            );
        } else {
            crate::outln!("not logged in to `{}`", remote.federation);
        }
        return Ok(exit_code::OK);
    };
    let revoked = match remote.connect_client().await {
        Ok(client) => client
            .logout(&login.refresh_token)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("{e:#}")),
    };
    credentials::remove(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    match revoked {
        Ok(()) => {
            crate::outln!("logged out of `{}`", remote.federation);
            Ok(exit_code::OK)
        }
        Err(reason) => Err(anyhow::anyhow!(
            "forgot the login to `{}`, but could not end the session on its SuperLink ({reason}): it stays valid there until it expires or an admin runs `flwr session revoke`",
            remote.federation
        )),
    }
}

/// Reads a secret from stdin and prints its argon2id hash for the accounts file.
pub async fn hash_password(_args: HashPasswordArgs) -> anyhow::Result<i32> {
    let secret = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let again = rpassword::prompt_password("Again: ").context("cannot read the password")?;
        if first != again {
            return Err(UserError::new("the two passwords differ: try again").into());
        }
        first
    } else {
        stdin_line("the password")?
    };
    if secret.is_empty() {
        return Err(UserError::new("the password is empty: write one on stdin").into());
    }
    let hash = floret_actors::user_auth::hash_secret(&secret, &mut rand::rng())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
    crate::outln!("{hash}");
    Ok(exit_code::OK)
}

/// What to log in with, from the flags, stdin, or the terminal.
fn read_credentials(args: &LoginArgs) -> Result<Credentials, UserError> {
    if args.api_token_stdin {
        let token = stdin_line("the API token")?;
        if token.is_empty() {
            return Err(UserError::new("--api-token-stdin: stdin holds no token"));
        }
        return Ok(Credentials::ApiToken(token));
    }
    let tty = std::io::stdin().is_terminal();
    let username = match &args.username {
        Some(name) => name.clone(),
        None if tty && !args.password_stdin => prompt("Username: ")?,
        None => {
            return Err(UserError::new(
                "no username: pass --username NAME (with --password-stdin in scripts), or run flwr login on a terminal",
            ));
        }
    };
    if username.is_empty() {
        return Err(UserError::new("the username is empty"));
    }
    let password = if args.password_stdin {
        stdin_line("the password")?
    } else if tty {
        rpassword::prompt_password("Password: ")
            .map_err(|e| UserError::new(format!("cannot read the password: {e}")))?
    } else {
        return Err(UserError::new(
            "stdin is not a terminal: pass --password-stdin and write the password on stdin",
        ));
    };
    Ok(Credentials::Password { username, password })
}

fn prompt(question: &str) -> Result<String, UserError> {
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    stdin_line("the username")
}

/// The first line of stdin without its line ending.
fn stdin_line(what: &str) -> Result<String, UserError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| UserError::new(format!("cannot read {what} from stdin: {e}")))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}
