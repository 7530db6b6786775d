//! `flwr build [APP_DIR] [--profile release|dev]`: builds a user's app crate with cargo
//! and packs its binary into a FAB (see `floret_core::fab`), written to
//! `APP_DIR/target/<name>-<version>.fab`. `flwr run` uses the same steps for app crates.
//! A Flower app in Python is packed as Flower's FAB instead (`python_cmd::pack`), written
//! to `APP_DIR/<publisher>.<name>.<version>.<hash8>.fab` as Flower's `flwr build` names it.
//!
//! Apps build into one shared target directory (`target_dir`: `$FLWR_HOME/target`, i.e.
//! `~/.flwr/target`, unless `--target-dir`, `FLWR_TARGET_DIR` or `CARGO_TARGET_DIR` names
//! another), so that a second app made by the same `flwr` compiles only its own crate:
//! apps from `flwr new` share their Cargo.lock, features and profile, hence every
//! compiled dependency.
//!
//! Cargo's own output goes to stderr as it happens, so a compile error reads as it does in
//! `cargo build`; the binary is found from cargo's JSON artifact messages, which also honours
//! `CARGO_TARGET_DIR` and other cargo configuration.

use crate::project::Project;
use crate::{UserError, exit_code};
use anyhow::Context as _;
use bytes::Bytes;
use floret_core::fab::{Fab, HOST_TARGET, fab_hash};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The cargo profile an app is built with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Optimised (`cargo build --release`): what a federation should run.
    Release,
    /// Unoptimised and quick to compile (`cargo build`): for trying changes.
    Dev,
}

/// Flags of `flwr build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The app's directory, holding its pyproject.toml (and Cargo.toml for a Rust app).
    #[arg(default_value = ".")]
    pub app_dir: PathBuf,
    /// Cargo profile to build with.
    #[arg(long, value_enum, default_value_t = Profile::Release)]
    pub profile: Profile,
    /// Where cargo builds.
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Where app crates are built: the build cache `flwr build` and `flwr run` share.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CacheArgs {
    /// Cargo's target directory for app crates, shared by all your apps so that each
    /// compiles Floret and its dependencies once [default: CARGO_TARGET_DIR when set, else
    /// $FLWR_HOME/target, i.e. ~/.flwr/target]. Pass APP_DIR/target for an app's own.
    #[arg(long, value_name = "DIR", env = "FLWR_TARGET_DIR")]
    pub target_dir: Option<PathBuf>,
}

/// The cargo target directory an app builds in: `--target-dir` (or `FLWR_TARGET_DIR`),
/// else `CARGO_TARGET_DIR`, else `target` under flwr's home (`FLWR_HOME`, else `~/.flwr`).
/// `var` reads the environment.
pub fn target_dir(
    cache: &CacheArgs,
    var: impl Fn(&str) -> Option<String>,
) -> Result<PathBuf, UserError> {
    let var = |name: &str| var(name).filter(|v| !v.is_empty());
    if let Some(dir) = &cache.target_dir {
        return Ok(dir.clone());
    }
    if let Some(dir) = var("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let home = match (var(crate::credentials::FLWR_HOME), var("HOME")) {
        (Some(home), _) => PathBuf::from(home),
        (None, Some(home)) => Path::new(&home).join(".flwr"),
        (None, None) => {
            return Err(UserError::new(
                "neither FLWR_HOME nor HOME is set, so there is no default build cache: pass --target-dir DIR (or set FLWR_TARGET_DIR)",
            ));
        }
    };
    Ok(home.join("target"))
}

/// A packed FAB and its sha256 (the run's `AppRef.fab_hash`).
#[derive(Debug, Clone)]
pub struct PackedFab {
    /// The app's `[project] name`.
    pub name: String,
    /// The app's `[project] version`.
    pub version: String,
    /// What runs it, for messages: the binary's target triple, or Python for a Flower FAB.
    pub runs_on: String,
    /// The packed FAB, as written to disk and sent to a SuperLink.
    pub bytes: Bytes,
    /// Lowercase hex sha256 of `bytes`.
    pub hash: String,
}

/// Builds the app, writes its FAB and prints where and its hash; returns the exit code.
pub async fn execute(args: BuildArgs) -> anyhow::Result<i32> {
    if !args.app_dir.join("pyproject.toml").is_file() {
        return Err(UserError::new(format!(
            "no pyproject.toml in {}: `flwr build` needs an app directory with pyproject.toml (and Cargo.toml for a Rust app, as `flwr new NAME` makes)",
            args.app_dir.display()
        ))
        .into());
    }
    let project = Project::load(&args.app_dir, "flwr build")?;
    let (fab, path) = if crate::python_cmd::is_python_project(&args.app_dir, &project) {
        // A Flower app in Python: Flower's own FAB, named as Flower's `flwr build` names it.
        let fab = crate::python_cmd::pack(&args.app_dir, &project)?;
        let path = args
            .app_dir
            .join(crate::python_cmd::fab_file_name(&project, &fab.hash));
        (fab, path)
    } else {
        let binary = cargo_build(&args.app_dir, &project, args.profile, &args.cache)?;
        let fab = pack(&project, &binary)?;
        let dir = args.app_dir.join("target");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{}-{}.fab", fab.name, fab.version));
        (fab, path)
    };
    std::fs::write(&path, &fab.bytes).with_context(|| format!("writing {}", path.display()))?;
    crate::outln!("fab: {}", path.display());
    crate::outln!("sha256: {}", fab.hash);
    eprintln!(
        "built {} {} for {} ({:.1} MB)",
        fab.name,
        fab.version,
        fab.runs_on,
        fab.bytes.len() as f64 / 1e6
    );
    Ok(exit_code::OK)
}

/// Runs `cargo build` on `app_dir/Cargo.toml` in the build cache `cache` names, with
/// cargo's output on stderr, and returns the app's executable. A compile error is exit 1
/// (cargo has shown it); a directory without Cargo.toml is the user's to fix (exit 2).
pub fn cargo_build(
    app_dir: &Path,
    project: &Project,
    profile: Profile,
    cache: &CacheArgs,
) -> anyhow::Result<PathBuf> {
    let manifest_path = app_dir.join("Cargo.toml");
    if !manifest_path.is_file() {
        return Err(UserError::new(format!(
            "no Cargo.toml in {}: an app to build is a Rust crate, as `flwr new NAME` makes (built-in apps such as apps/digits run with `flwr run` directly)",
            app_dir.display()
        ))
        .into());
    }
    let manifest_path = manifest_path
        .canonicalize()
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let target_dir = target_dir(cache, |k| std::env::var(k).ok())?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest_path)
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if profile == Profile::Release {
        command.arg("--release");
    }
    eprintln!(
        "building {} ({} profile): cargo build --manifest-path {} --target-dir {}{}",
        project.manifest.name,
        match profile {
            Profile::Release => "release",
            Profile::Dev => "dev",
        },
        manifest_path.display(),
        target_dir.display(),
        if profile == Profile::Release {
            " --release"
        } else {
            ""
        }
    );
    let mut child = command.spawn().with_context(|| {
        format!(
            "cannot run {}: is Rust installed (https://rustup.rs)?",
            Path::new(&cargo).display()
        )
    })?;
    let mut binaries = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.context("reading cargo's output")?;
            if let Some(binary) = executable_of(&line, &manifest_path) {
                binaries.push(binary);
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        anyhow::bail!(
            "cargo could not build {} ({status}): its errors are above",
            app_dir.display()
        );
    }
    choose_binary(binaries, &project.manifest.name, &manifest_path)
}

/// A binary built for the package of `manifest_path`, from one line of cargo's JSON output.
fn executable_of(line: &str, manifest_path: &Path) -> Option<(String, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    if message["reason"] != "compiler-artifact" {
        return None;
    }
    let is_bin = message["target"]["kind"]
        .as_array()
        .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"));
    let ours = message["manifest_path"]
        .as_str()
        .and_then(|p| Path::new(p).canonicalize().ok())
        .is_some_and(|p| p == manifest_path);
    let executable = message["executable"].as_str()?;
    let name = message["target"]["name"].as_str()?;
    (is_bin && ours).then(|| (name.to_owned(), PathBuf::from(executable)))
}

/// The app's binary: the only one, or the one named like the app.
fn choose_binary(
    mut binaries: Vec<(String, PathBuf)>,
    app_name: &str,
    manifest_path: &Path,
) -> anyhow::Result<PathBuf> {
    if binaries.len() == 1 {
        return Ok(binaries.remove(0).1);
    }
    let names: Vec<&str> = binaries.iter().map(|(n, _)| n.as_str()).collect();
    if names.is_empty() {
        return Err(UserError::new(format!(
            "{} builds no binary: add src/main.rs with `fn main() -> std::process::ExitCode {{ floret_app::run(server_app::app, client_app::app) }}`",
            manifest_path.display()
        ))
        .into());
    }
    match binaries.iter().find(|(n, _)| n == app_name) {
        Some((_, path)) => Ok(path.clone()),
        None => Err(UserError::new(format!(
            "{} builds several binaries ({}) and none is named like the app ({app_name}): name the app's [[bin]] \"{app_name}\"",
            manifest_path.display(),
            names.join(", ")
        ))
        .into()),
    }
}

/// Packs the built `binary` with the app's manifest. The target triple is this machine's
/// (cargo builds for the host unless told otherwise), or `CARGO_BUILD_TARGET` when set.
pub fn pack(project: &Project, binary: &Path) -> anyhow::Result<PackedFab> {
    let pyproject = std::fs::read_to_string(&project.manifest_path)
        .with_context(|| format!("reading {}", project.manifest_path.display()))?;
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let target = std::env::var("CARGO_BUILD_TARGET").unwrap_or_else(|_| HOST_TARGET.to_owned());
    let fab = Fab::new(&project.manifest, &pyproject, &target, Bytes::from(bytes));
    let packed = fab.pack();
    Ok(PackedFab {
        hash: fab_hash(&packed),
        name: fab.manifest.name,
        version: fab.manifest.version,
        runs_on: fab.manifest.target,
        bytes: packed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_binaries_of_the_app_package_are_taken() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("Cargo.toml");
        std::fs::write(&manifest, "").unwrap();
        let manifest = manifest.canonicalize().unwrap();
        let line = |kind: &str, path: &Path| {
            serde_json::json!({
                "reason": "compiler-artifact",
                "manifest_path": path,
                "target": { "kind": [kind], "name": "myapp" },
                "executable": if kind == "bin" { Some("/t/debug/myapp") } else { None },
            })
            .to_string()
        };
        assert_eq!(
            executable_of(&line("bin", &manifest), &manifest),
            Some(("myapp".into(), PathBuf::from("/t/debug/myapp")))
        );
        assert_eq!(executable_of(&line("lib", &manifest), &manifest), None);
        assert_eq!(
            executable_of(&line("bin", Path::new("/elsewhere/Cargo.toml")), &manifest),
            None
        );
        assert_eq!(executable_of("not json", &manifest), None);
        assert_eq!(
            executable_of(r#"{"reason":"build-finished","success":true}"#, &manifest),
            None
        );
    }

    #[test]
    fn apps_share_one_build_cache_unless_told_otherwise() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let flag = CacheArgs {
            target_dir: Some(PathBuf::from("/flag")),
        };
        let none = CacheArgs::default();
        let all = env(&[
            ("CARGO_TARGET_DIR", "/cargo"),
            ("FLWR_HOME", "/flwr"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(target_dir(&flag, all).unwrap(), Path::new("/flag"));
        assert_eq!(target_dir(&none, all).unwrap(), Path::new("/cargo"));
        let homes = env(&[
            ("CARGO_TARGET_DIR", ""),
            ("FLWR_HOME", "/flwr"),
            ("HOME", "/home/u"),
        ]);
        assert_eq!(target_dir(&none, homes).unwrap(), Path::new("/flwr/target"));
        let home = env(&[("HOME", "/home/u")]);
        assert_eq!(
            target_dir(&none, home).unwrap(),
            Path::new("/home/u/.flwr/target")
        );
        let e = target_dir(&none, env(&[])).unwrap_err().to_string();
        assert!(e.contains("--target-dir"), "{e}");
    }

    #[test]
    fn the_binary_named_like_the_app_wins() {
        let m = Path::new("app/Cargo.toml");
        let bins = vec![
            ("tool".to_owned(), PathBuf::from("/t/tool")),
            ("myapp".to_owned(), PathBuf::from("/t/myapp")),
        ];
        assert_eq!(
            choose_binary(bins.clone(), "myapp", m).unwrap(),
            Path::new("/t/myapp")
        );
        let err = choose_binary(bins, "other", m).unwrap_err().to_string();
        assert!(err.contains("tool, myapp"), "{err}");
        let err = choose_binary(Vec::new(), "myapp", m)
            .unwrap_err()
            .to_string();
        assert!(err.contains("builds no binary"), "{err}");
    }
}
