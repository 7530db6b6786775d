//! `flwr run` on a Flower app written in Python: the app's components are Python
//! references (`mypkg.server_app:app`) and it has no Cargo.toml. Its ServerApp and a pool
//! of ClientApp workers start in the user's Python (`--python`, `FLORET_PYTHON`, or
//! `python3` on PATH) through `floret-python`, then the local simulation runs them as it
//! runs a Rust app's.
//!
//! For a federation with an `address`, the app is packed as Flower packs it, a zip of its
//! files (`floret_core::fab::flower`; which files: [`pack`]), and submitted as any FAB is
//! (`submit`); the daemons run it with their own Python (`python_host`).

use crate::build_cmd::PackedFab;
use crate::credentials::flwr_home;
use crate::project::Project;
use crate::registry::BuiltinCatalog;
use crate::run_cmd::{Prepared, RunArgs, simulate};
use crate::{UserError, submit};
use anyhow::Context as _;
use bytes::Bytes;
use floret_core::AppCatalog;
use floret_core::fab::{fab_hash, flower};
use floret_python::{BridgeError, PythonSettings};
use floret_simulation::SimulationOptions;
use std::path::{Path, PathBuf};

/// Whether `prepared` is a Flower app in Python. A copy of a built-in app's
/// `pyproject.toml` names components this binary has, and still runs them.
pub fn is_python_app(args: &RunArgs, prepared: &Prepared) -> bool {
    is_python_project(&args.app_dir, &prepared.project)
}

/// [`is_python_app`] for the app in `app_dir` described by `project`.
pub fn is_python_project(app_dir: &Path, project: &Project) -> bool {
    let manifest = &project.manifest;
    let builtin = BuiltinCatalog.server_app(&manifest.serverapp).is_some()
        && BuiltinCatalog.client_app(&manifest.clientapp).is_some();
    !builtin && floret_python::is_python_app(app_dir, &manifest.serverapp, &manifest.clientapp)
}

/// Packs the Python app in `app_dir` as Flower's `flwr build` does: its `pyproject.toml`
/// and the files its top-level `.gitignore` keeps, `[tool.flwr.app] fab-include` /
/// `fab-exclude` select (gitignore-style patterns) and `floret_core::fab::flower::included`
/// takes, found by walking the directory without following symbolic links (as Flower)
/// and without entering the directories whose files would all be left out (`.venv`,
/// `__pycache__`, `.git`, …). Unlike Flower, a pattern that matches nothing is not an
/// error.
pub fn pack(app_dir: &Path, project: &Project) -> anyhow::Result<PackedFab> {
    let pyproject = std::fs::read_to_string(&project.manifest_path)
        .with_context(|| format!("reading {}", project.manifest_path.display()))?;
    let ignore = match std::fs::read_to_string(app_dir.join(".gitignore")) {
        Ok(text) => flower::GitIgnore::parse(&text),
        Err(_) => flower::GitIgnore::default(),
    };
    let mut files = Vec::new();
    collect(app_dir, "", &ignore, &mut files)?;
    let (include, exclude) = user_patterns(&pyproject, &project.manifest_path)?;
    files.retain(|(path, _)| {
        include.as_ref().is_none_or(|spec| spec.ignores(path))
            && exclude.as_ref().is_none_or(|spec| !spec.ignores(path))
    });
    let bytes = flower::pack(&pyproject, &files)
        .map_err(|e| UserError::new(format!("packing {}: {e}", app_dir.display())))?;
    let manifest = &project.manifest;
    Ok(PackedFab {
        name: manifest.name.clone(),
        version: manifest.version.clone().unwrap_or_else(|| "0.0.0".into()),
        runs_on: "Python (a Flower FAB)".into(),
        hash: fab_hash(&bytes),
        bytes,
    })
}

/// `[tool.flwr.app] fab-include` and `fab-exclude`, each a list of gitignore-style
/// patterns (a file matches when the patterns, read as a `.gitignore`, would ignore it).
fn user_patterns(
    pyproject: &str,
    path: &Path,
) -> anyhow::Result<(Option<flower::GitIgnore>, Option<flower::GitIgnore>)> {
    let doc: toml::Table = pyproject
        .parse()
        .with_context(|| format!("reading {}", path.display()))?;
    let app = doc
        .get("tool")
        .and_then(|t| t.get("flwr"))
        .and_then(|t| t.get("app"));
    let patterns = |key: &str| -> anyhow::Result<Option<flower::GitIgnore>> {
        let Some(value) = app.and_then(|a| a.get(key)) else {
            return Ok(None);
        };
        let list = value
            .as_array()
            .filter(|l| !l.is_empty())
            .and_then(|l| l.iter().map(|v| v.as_str()).collect::<Option<Vec<_>>>())
            .ok_or_else(|| {
                UserError::new(format!(
                    "{}: [tool.flwr.app] {key} must be a non-empty list of patterns, e.g. {key} = [\"mypkg/**/*.py\"]",
                    path.display()
                ))
            })?;
        Ok(Some(flower::GitIgnore::parse(&list.join("\n"))))
    };
    Ok((patterns("fab-include")?, patterns("fab-exclude")?))
}

/// The files under `dir` (relative path `rel`) that go into the FAB.
fn collect(
    dir: &Path,
    rel: &str,
    ignore: &flower::GitIgnore,
    out: &mut Vec<(String, Bytes)>,
) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut entries: Vec<_> = entries
        .collect::<Result<_, _>>()
        .with_context(|| format!("reading {}", dir.display()))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let path = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        if kind.is_dir() {
            // A directory whose Python files would be left out holds nothing of the app.
            if name != ".git"
                && flower::included(&format!("{path}/probe.py"))
                && !ignore.ignores_dir(&path)
            {
                collect(&entry.path(), &path, ignore, out)?;
            }
        } else if kind.is_file() && flower::included(&path) && !ignore.ignores(&path) {
            let data = std::fs::read(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            out.push((path, Bytes::from(data)));
        }
    }
    Ok(())
}

/// The file name Flower's `flwr build` gives a FAB:
/// `<publisher>.<name>.<version with dashes>.<first 8 hex of its sha256>.fab`.
pub fn fab_file_name(project: &Project, hash: &str) -> String {
    let manifest = &project.manifest;
    format!(
        "{}.{}.{}.{}.fab",
        manifest.publisher.as_deref().unwrap_or("unknown"),
        manifest.name,
        manifest
            .version
            .as_deref()
            .unwrap_or("0.0.0")
            .replace('.', "-"),
        &hash[..hash.len().min(8)]
    )
}

/// Runs the Python app in a local simulation; returns the exit code.
pub async fn execute(args: &RunArgs, prepared: Prepared) -> anyhow::Result<i32> {
    let Prepared {
        project,
        federation,
        run_config,
    } = prepared;
    if federation.address.is_some() {
        let fab = pack(&args.app_dir, &project)?;
        return submit::execute(args, &project, &federation, run_config, Some(fab)).await;
    }
    let Some(num_supernodes) = federation.options.num_supernodes else {
        return Err(UserError::new(format!(
            "federation {:?} has no options.num-supernodes: add options.num-supernodes = 10",
            federation.name
        ))
        .into());
    };
    let workers = SimulationOptions {
        num_supernodes,
        num_cpus: federation.options.client_resources.num_cpus,
        num_gpus: federation.options.client_resources.num_gpus,
    }
    .workers()
    .min(usize::try_from(num_supernodes).unwrap_or(usize::MAX));
    let bridge_dir =
        floret_python::install_bridge(&flwr_home()?.join("python")).map_err(anyhow::Error::from)?;
    let app_dir = std::path::absolute(&args.app_dir).unwrap_or_else(|_| args.app_dir.clone());
    let settings = PythonSettings {
        python: args
            .python
            .clone()
            .unwrap_or_else(|| PathBuf::from("python3")),
        app_dir,
        serverapp: project.manifest.serverapp.clone(),
        clientapp: project.manifest.clientapp.clone(),
        bridge_dir,
    };
    let app = floret_python::start(&settings, workers).map_err(|e| match e {
        BridgeError::User(line) => anyhow::Error::from(UserError::new(line)),
        other => anyhow::Error::from(other),
    })?;
    simulate(
        &project,
        &federation,
        run_config,
        args.output(),
        app.server_app,
        app.client_app,
    )
    .await
}
