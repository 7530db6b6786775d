//! `flwr supernode register PUBKEY_FILE [APP_DIR] [FEDERATION]`, `flwr supernode list` and
//! `flwr supernode unregister NODE_ID`: the SuperLink's allow-list of SuperNode keys,
//! managed while it runs (node authentication). The federation is resolved as for
//! `flwr ls`.

use crate::UserError;
use crate::exit_code;
use crate::ls_cmd::utc;
use crate::remote::Remote;
use crate::report::Format;
use floret_core::NodeInfo;
use floret_transport::auth::NodePublicKey;
use serde_json::{Value, json};
use std::path::PathBuf;

/// Flags of `flwr supernode`: one of its subcommands.
#[derive(Debug, clap::Args)]
pub struct SupernodeArgs {
    /// What to do with the allow-list.
    #[command(subcommand)]
    pub command: SupernodeCommand,
}

/// The subcommands of `flwr supernode`, each a change to or a look at the SuperLink's
/// allow-list of SuperNode keys.
#[derive(Debug, clap::Subcommand)]
pub enum SupernodeCommand {
    /// Allow a SuperNode's public key (an OpenSSH `.pub` file or PEM); prints its node id.
    Register {
        /// The SuperNode's public key file, e.g. keys/client_credentials_3.pub.
        public_key: PathBuf,
        /// The app's directory, holding the pyproject.toml that names the federation.
        #[arg(default_value = ".")]
        app_dir: PathBuf,
        /// A federation with an address; defaults to the one named by `default`.
        federation: Option<String>,
    },
    /// List the SuperNodes the SuperLink knows: id, key fingerprint, status, times.
    List {
        /// The app's directory, holding the pyproject.toml that names the federation.
        #[arg(default_value = ".")]
        app_dir: PathBuf,
        /// A federation with an address; defaults to the one named by `default`.
        federation: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Default)]
        format: Format,
    },
    /// Remove a SuperNode's key from the allow-list; a connected node is disconnected.
    Unregister {
        /// The node id, as `flwr supernode list` shows it.
        node_id: u64,
        /// The app's directory, holding the pyproject.toml that names the federation.
        #[arg(default_value = ".")]
        app_dir: PathBuf,
        /// A federation with an address; defaults to the one named by `default`.
        federation: Option<String>,
    },
}

/// Runs the subcommand against the federation's SuperLink; returns the exit code.
pub async fn execute(args: SupernodeArgs) -> anyhow::Result<i32> {
    match args.command {
        SupernodeCommand::Register {
            public_key,
            app_dir,
            federation,
        } => {
            // Checked before connecting: a wrong file is the user's to fix.
            let key = NodePublicKey::load(&public_key).map_err(|e| {
                UserError::new(format!(
                    "{e} (expected a SuperNode public key such as keys/client_credentials_1.pub)"
                ))
            })?;
            let remote = Remote::load(&app_dir, federation.as_deref(), "flwr supernode register")?;
            let control = remote.connect().await?;
            let node_id = control
                .register_node_key(key.spki_der().clone())
                .await
                .map_err(|e| remote.error(e))?;
            crate::outln!(
                "registered SuperNode key {} as node {node_id}",
                key.fingerprint()
            );
        }
        SupernodeCommand::List {
            app_dir,
            federation,
            format,
        } => {
            let remote = Remote::load(&app_dir, federation.as_deref(), "flwr supernode list")?;
            let control = remote.connect().await?;
            let nodes = control.list_nodes().await.map_err(|e| remote.error(e))?;
            match format {
                Format::Default => crate::out!("{}", table(&nodes)),
                Format::Json => crate::outln!("{}", json_list(&nodes)),
            }
        }
        SupernodeCommand::Unregister {
            node_id,
            app_dir,
            federation,
        } => {
            let remote =
                Remote::load(&app_dir, federation.as_deref(), "flwr supernode unregister")?;
            let control = remote.connect().await?;
            control
                .unregister_node_key(node_id)
                .await
                .map_err(|e| remote.error(e))?;
            crate::outln!("unregistered node {node_id}");
        }
    }
    Ok(exit_code::OK)
}

/// `SHA256:...` as `ssh-keygen -l` shows it, or `-` for a node without a key.
fn fingerprint(node: &NodeInfo) -> String {
    if node.public_key.is_empty() {
        return "-".into();
    }
    NodePublicKey::from_spki_der(&node.public_key)
        .map(|k| k.fingerprint())
        .unwrap_or_else(|_| "(invalid key)".into())
}

fn status(node: &NodeInfo) -> &'static str {
    if node.online { "online" } else { "offline" }
}

fn time(t: Option<f64>) -> String {
    match t {
        Some(t) if t > 0.0 => utc(t),
        _ => "-".into(),
    }
}

fn table(nodes: &[NodeInfo]) -> String {
    if nodes.is_empty() {
        return "no SuperNodes\n".to_owned();
    }
    let mut rows = vec![[
        "node id".to_owned(),
        "key fingerprint".to_owned(),
        "status".to_owned(),
        "registered at".to_owned(),
        "last seen".to_owned(),
    ]];
    for n in nodes {
        rows.push([
            n.node_id.to_string(),
            fingerprint(n),
            status(n).to_owned(),
            time(Some(n.registered_at)),
            time(n.last_seen),
        ]);
    }
    crate::columns::render(&rows)
}

fn json_list(nodes: &[NodeInfo]) -> Value {
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.node_id,
                "fingerprint": fingerprint(n),
                "status": status(n),
                "registered_at": time(Some(n.registered_at)),
                "last_seen": time(n.last_seen),
            })
        })
        .collect();
    json!({ "nodes": nodes })
}
