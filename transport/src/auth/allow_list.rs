//! The SuperLink's allow-list file (`--auth-list-public-keys FILE.csv`): OpenSSH one-line
//! public keys, either all on one comma-separated row (what Flower's `generate.sh` and
//! `flwr keygen` write) or one per line, or a mix. Blank lines and `#` comments are skipped.

use super::error::AllowListError;
use super::keys::NodePublicKey;
use std::collections::HashSet;
use std::path::Path;

/// The distinct keys of an allow-list, in file order. `source_name` names the text in
/// errors (a path, or "allow-list").
///
/// # Errors
/// [`AllowListError`] naming the first line (and field) that is not a P-384 public key.
pub fn parse_allow_list(
    text: &str,
    source_name: &str,
) -> Result<Vec<NodePublicKey>, AllowListError> {
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        let many = fields.len() > 1;
        for (j, field) in fields.into_iter().enumerate() {
            let key = NodePublicKey::parse(field).map_err(|e| AllowListError {
                source_name: source_name.to_string(),
                line: i + 1,
                problem: if many {
                    format!("key {}: {e}", j + 1)
                } else {
                    e.to_string()
                },
            })?;
            if seen.insert(key.clone()) {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

/// Reads and parses an allow-list file.
///
/// # Errors
/// [`AllowListError`] with line 0 when the file cannot be read, else as
/// [`parse_allow_list`].
pub fn load_allow_list(path: &Path) -> Result<Vec<NodePublicKey>, AllowListError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| AllowListError {
        source_name: name.clone(),
        line: 0,
        problem: format!("cannot read the file: {e}"),
    })?;
    parse_allow_list(&text, &name)
}
