//! An app directory as the `flwr` subcommands read it: its `pyproject.toml`, parsed and
//! validated, with errors that name the directory or file and say what to pass instead.

use crate::UserError;
use anyhow::Context as _;
use floret_core::AppManifest;
use std::path::{Path, PathBuf};

/// A validated app manifest and where it was read from.
#[derive(Debug, Clone)]
pub struct Project {
    /// `APP_DIR/pyproject.toml`, for error messages.
    pub manifest_path: PathBuf,
    /// The parsed and validated `[project]` and `[tool.flwr]` tables.
    pub manifest: AppManifest,
}

impl Project {
    /// The app directory: where pyproject.toml is, and what paths in it are relative to.
    pub fn dir(&self) -> &Path {
        self.manifest_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
    }

    /// Reads `app_dir/pyproject.toml`; `command` (e.g. "flwr run") shapes the hint when the
    /// file is missing.
    pub fn load(app_dir: &Path, command: &str) -> anyhow::Result<Project> {
        let manifest_path = app_dir.join("pyproject.toml");
        let text = match std::fs::read_to_string(&manifest_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(UserError::new(format!(
                    "no pyproject.toml in {}: pass the app's directory, e.g. `{command} apps/digits`",
                    app_dir.display()
                ))
                .into());
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", manifest_path.display()));
            }
        };
        let manifest =
            AppManifest::parse(&text, &manifest_path).map_err(|e| UserError::new(e.to_string()))?;
        Ok(Project {
            manifest_path,
            manifest,
        })
    }
}
