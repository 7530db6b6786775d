//! `flwr session list [APP_DIR] [FEDERATION]` and `flwr session revoke [APP_DIR]
//! [FEDERATION] (--id ID | --user NAME)`: the logins a SuperLink with user authentication
//! holds, for its admins. Flower has no equivalent; the names follow `flwr supernode`.
//!
//! A list shows who logged in, when, when the session was last used and when it can no
//! longer be refreshed, never a token. Revoking ends the session at once: its tokens stop
//! working and its holder must log in again.

use crate::exit_code;
use crate::ls_cmd::utc;
use crate::remote::Remote;
use crate::report::Format;
use floret_core::{SessionInfo, SessionSelector};
use serde_json::{Value, json};
use std::path::PathBuf;

/// Flags of `flwr session`: one of its subcommands.
#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// What to do with the SuperLink's sessions.
    #[command(subcommand)]
    pub command: SessionCommand,
}

/// The subcommands of `flwr session` (admins only).
#[derive(Debug, clap::Subcommand)]
pub enum SessionCommand {
    /// List the open logins: id, user, role, created, last used, expires.
    List {
        /// The app's directory, holding the pyproject.toml that names the federation.
        #[arg(default_value = ".")]
        app_dir: PathBuf,
        /// A federation with `enable-user-auth = true`; defaults to the one named by
        /// `default`.
        federation: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Default)]
        format: Format,
    },
    /// End one login (`--id`, as `flwr session list` shows it) or all of a user's
    /// (`--user`): their tokens stop working at once.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "user"])))]
    Revoke {
        /// The app's directory, holding the pyproject.toml that names the federation.
        #[arg(default_value = ".")]
        app_dir: PathBuf,
        /// A federation with `enable-user-auth = true`; defaults to the one named by
        /// `default`.
        federation: Option<String>,
        /// The session to end.
        #[arg(long, value_name = "ID")]
        id: Option<u64>,
        /// End every session of this user.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
}

/// Runs the subcommand against the federation's SuperLink; returns the exit code.
pub async fn execute(args: SessionArgs) -> anyhow::Result<i32> {
    match args.command {
        SessionCommand::List {
            app_dir,
            federation,
            format,
        } => {
            let remote = Remote::load(&app_dir, federation.as_deref(), "flwr session list")?;
            let session = remote.connect_user_session("flwr session list").await?;
            let sessions = session.list_sessions().await.map_err(|e| remote.error(e))?;
            match format {
                Format::Default => crate::out!("{}", table(&sessions)),
                Format::Json => crate::outln!("{}", json_list(&sessions)),
            }
        }
        SessionCommand::Revoke {
            app_dir,
            federation,
            id,
            user,
        } => {
            let remote = Remote::load(&app_dir, federation.as_deref(), "flwr session revoke")?;
            let which = match (id, user) {
                (Some(id), _) => SessionSelector::Id(id),
                (None, Some(user)) => SessionSelector::User(user),
                // clap's group requires one of them.
                (None, None) => return Ok(exit_code::USAGE),
            };
            let session = remote.connect_user_session("flwr session revoke").await?;
            let revoked = session
                .revoke_sessions(&which)
                .await
                .map_err(|e| remote.error(e))?;
            let what = match &which {
                SessionSelector::Id(id) => format!("session {id}"),
                SessionSelector::User(user) => format!("the sessions of {user}"),
            };
            if revoked == 0 {
                return Err(crate::UserError::new(format!(
                    "no open session matches: {what} (`flwr session list` shows them)"
                ))
                .into());
            }
            crate::outln!("revoked {revoked} session(s): {what}");
        }
    }
    Ok(exit_code::OK)
}

fn role(s: &SessionInfo) -> &'static str {
    if s.admin { "admin" } else { "user" }
}

fn table(sessions: &[SessionInfo]) -> String {
    if sessions.is_empty() {
        return "no sessions\n".to_owned();
    }
    let mut rows = vec![[
        "id".to_owned(),
        "user".to_owned(),
        "role".to_owned(),
        "created at".to_owned(),
        "last used".to_owned(),
        "expires at".to_owned(),
    ]];
    for s in sessions {
        rows.push([
            s.id.to_string(),
            s.user.clone(),
            role(s).to_owned(),
            utc(s.created_at),
            utc(s.last_used_at),
            utc(s.expires_at),
        ]);
    }
    crate::columns::render(&rows)
}

fn json_list(sessions: &[SessionInfo]) -> Value {
    let sessions: Vec<Value> = sessions
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "user": s.user,
                "role": role(s),
                "created_at": utc(s.created_at),
                "last_used_at": utc(s.last_used_at),
                "expires_at": utc(s.expires_at),
            })
        })
        .collect();
    json!({ "sessions": sessions })
}
