//! FABs and their binaries on disk, by hash, so that a daemon fetches and writes an app
//! once however many runs use it.
//!
//! ```text
//! <dir>/<fab_hash>.fab          the packed FAB as received (SuperNode: no second download)
//! <dir>/<fab_hash>/<app name>   its binary, executable
//! <dir>/<fab_hash>/app/         a Flower FAB's files (a Python app), its working directory
//! <dir>/python/                 the Python bridge package the Python apps' hosts import
//! ```
//! Nothing read back is trusted: a packed FAB is used only if its sha256 is still its
//! name, a binary only if its sha256 is still the manifest's, a Python app's directory
//! only if every file of the FAB is there with its bytes (Python may add `__pycache__`).
//! Files appear by an atomic rename of a private temporary file or directory, so daemons
//! sharing a directory never see half a file or half an app. A Flower FAB's paths were
//! checked when it was read (`floret_core::fab::flower`): none leaves `app/`.

use bytes::Bytes;
use floret_core::fab::flower::FlowerFab;
use floret_core::fab::{Fab, fab_hash, sha256_hex};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// See the module doc.
#[derive(Debug, Clone)]
pub struct FabCache {
    dir: PathBuf,
}

impl FabCache {
    /// A cache in `dir`, which is created on the first write; several daemons may share it.
    pub fn new(dir: impl Into<PathBuf>) -> FabCache {
        FabCache { dir: dir.into() }
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The packed FAB stored under `hash`, if there and intact.
    pub fn packed(&self, hash: &str) -> Option<Bytes> {
        check_hash(hash).ok()?;
        let bytes = fs::read(self.dir.join(format!("{hash}.fab"))).ok()?;
        fab_hash(&bytes)
            .eq_ignore_ascii_case(hash)
            .then(|| Bytes::from(bytes))
    }

    /// Keeps a packed FAB whose hash has been checked.
    pub fn store_packed(&self, hash: &str, packed: &[u8]) -> Result<(), String> {
        check_hash(hash)?;
        write_atomically(&self.dir, &format!("{hash}.fab"), packed, false)
            .map_err(|e| format!("cannot write to the FAB cache {}: {e}", self.dir.display()))
    }

    /// Writes the binary of `fab` (unpacked, so its binary's sha256 was checked) and returns
    /// its path; an intact copy from earlier is reused.
    pub fn install(&self, hash: &str, fab: &Fab) -> Result<PathBuf, String> {
        check_hash(hash)?;
        let dir = self.dir.join(hash);
        let name = file_name(&fab.manifest.name);
        let path = dir.join(&name);
        if sha256_file(&path).is_some_and(|h| h.eq_ignore_ascii_case(&fab.manifest.binary_sha256)) {
            return Ok(path);
        }
        write_atomically(&dir, &name, &fab.binary, true).map_err(|e| {
            format!(
                "cannot write the app binary to the FAB cache {}: {e}",
                self.dir.display()
            )
        })?;
        Ok(path)
    }
}

impl FabCache {
    /// Writes the files of the Flower FAB `fab` (read, so its paths are safe and its
    /// files match its CONTENT) to `<dir>/<hash>/app` and returns that directory; an intact
    /// copy from earlier is reused, an altered one replaced.
    pub fn install_app(&self, hash: &str, fab: &FlowerFab) -> Result<PathBuf, String> {
        check_hash(hash)?;
        let parent = self.dir.join(hash);
        let app = parent.join("app");
        if app_intact(&app, fab) {
            return Ok(app);
        }
        let failed = |e: std::io::Error| {
            format!(
                "cannot write the Python app to the FAB cache {}: {e}",
                self.dir.display()
            )
        };
        fs::create_dir_all(&parent).map_err(failed)?;
        let staging = parent.join(format!(".app.{:016x}.tmp", rand::random::<u64>()));
        let written = (|| {
            for file in &fab.files {
                let path = staging.join(&file.path);
                if let Some(dir) = path.parent() {
                    fs::create_dir_all(dir)?;
                }
                fs::write(&path, &file.data)?;
            }
            if app.exists() {
                fs::remove_dir_all(&app)?;
            }
            fs::rename(&staging, &app)
        })();
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&staging);
            // Another daemon sharing the cache installed the same files first.
            if app_intact(&app, fab) {
                return Ok(app);
            }
            return Err(failed(e));
        }
        Ok(app)
    }
}

/// Whether every file of `fab` is in `dir` with its bytes.
fn app_intact(dir: &Path, fab: &FlowerFab) -> bool {
    fab.files
        .iter()
        .all(|f| fs::read(dir.join(&f.path)).is_ok_and(|bytes| bytes == f.data.as_ref()))
}

/// A FAB hash names a file: only hex digits may go into a path.
fn check_hash(hash: &str) -> Result<(), String> {
    if !hash.is_empty() && hash.len() <= 128 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("{hash:?} is not a FAB hash (hex sha256)"))
    }
}

/// The app's name as a file name: letters, digits, `-`, `_`, `.` (no leading dot).
fn file_name(app: &str) -> String {
    let name: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_start_matches('.');
    if name.is_empty() {
        "app".into()
    } else {
        name.into()
    }
}

fn sha256_file(path: &Path) -> Option<String> {
    fs::read(path).ok().map(|bytes| sha256_hex(&bytes))
}

fn write_atomically(dir: &Path, name: &str, data: &[u8], executable: bool) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = (|| {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        #[cfg(unix)]
        if executable {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        }
        #[cfg(not(unix))]
        let _ = executable;
        fs::rename(&tmp, dir.join(name))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::fab::{FabManifest, HOST_TARGET};

    fn fab(binary: &'static [u8]) -> Fab {
        Fab {
            manifest: FabManifest {
                name: "../my app".into(),
                version: "1.0.0".into(),
                publisher: "test".into(),
                serverapp: "s".into(),
                clientapp: "c".into(),
                target: HOST_TARGET.into(),
                binary_sha256: sha256_hex(binary),
                pyproject: String::new(),
            },
            binary: Bytes::from_static(binary),
        }
    }

    #[test]
    fn packed_fabs_are_kept_by_hash_and_only_returned_intact() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FabCache::new(dir.path());
        let packed = fab(b"binary").pack();
        let hash = fab_hash(&packed);
        assert!(cache.packed(&hash).is_none());
        cache.store_packed(&hash, &packed).unwrap();
        assert_eq!(cache.packed(&hash).unwrap(), packed);
        fs::write(dir.path().join(format!("{hash}.fab")), b"tampered").unwrap();
        assert!(cache.packed(&hash).is_none(), "a changed file is not used");
        assert!(cache.store_packed("../etc", b"x").is_err());
    }

    #[test]
    fn a_python_app_is_unpacked_under_its_hash_and_repaired_when_altered() {
        use floret_core::fab::flower;
        let dir = tempfile::tempdir().unwrap();
        let cache = FabCache::new(dir.path().join("cache"));
        let pyproject = "[project]\nname = \"a\"\nversion = \"1.0.0\"\n[tool.flwr.app]\npublisher = \"p\"\n[tool.flwr.app.components]\nserverapp = \"a.s:app\"\nclientapp = \"a.c:app\"\n";
        let packed = flower::pack(
            pyproject,
            &[("a/s.py".into(), Bytes::from_static(b"app = 1\n"))],
        )
        .unwrap();
        let fab = flower::unpack(&packed).unwrap();
        let hash = fab_hash(&packed);
        let app = cache.install_app(&hash, &fab).unwrap();
        assert_eq!(app, dir.path().join("cache").join(&hash).join("app"));
        assert_eq!(fs::read(app.join("a/s.py")).unwrap(), b"app = 1\n");
        assert!(app.join("pyproject.toml").is_file());
        // Python's own cache files do not make the copy stale; a changed file does.
        fs::create_dir(app.join("a/__pycache__")).unwrap();
        assert_eq!(cache.install_app(&hash, &fab).unwrap(), app);
        assert!(app.join("a/__pycache__").is_dir(), "reused as it was");
        fs::write(app.join("a/s.py"), b"import os; os.system('evil')").unwrap();
        assert_eq!(cache.install_app(&hash, &fab).unwrap(), app);
        assert_eq!(fs::read(app.join("a/s.py")).unwrap(), b"app = 1\n");
        assert!(cache.install_app("../x", &fab).is_err());
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("cache").join(&hash))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["app"], "no staging directory left behind");
    }

    #[test]
    fn a_binary_is_installed_once_and_rewritten_when_altered() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FabCache::new(dir.path());
        let fab = fab(b"#!/bin/sh\nexit 0\n");
        let hash = fab_hash(&fab.pack());
        let path = cache.install(&hash, &fab).unwrap();
        assert_eq!(path, dir.path().join(&hash).join("_my_app"));
        assert_eq!(fs::read(&path).unwrap(), fab.binary.as_ref());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o111, 0o111, "executable");
        }
        fs::write(&path, b"altered").unwrap();
        assert_eq!(cache.install(&hash, &fab).unwrap(), path);
        assert_eq!(fs::read(&path).unwrap(), fab.binary.as_ref());
    }
}
