//! The bridge's Python package, carried inside the binary and written where the user's
//! Python imports it: `flwr` is one file to install, and the Python side always matches
//! the Rust side that speaks to it.

use crate::BridgeError;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The package's files, as in `python/floret_bridge/`.
const FILES: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../floret_bridge/__init__.py")),
    ("__main__.py", include_str!("../floret_bridge/__main__.py")),
    ("arrays.py", include_str!("../floret_bridge/arrays.py")),
    (
        "components.py",
        include_str!("../floret_bridge/components.py"),
    ),
    (
        "fastpaths.py",
        include_str!("../floret_bridge/fastpaths.py"),
    ),
    ("frames.py", include_str!("../floret_bridge/frames.py")),
    ("npy.py", include_str!("../floret_bridge/npy.py")),
    ("server.py", include_str!("../floret_bridge/server.py")),
    ("wire.py", include_str!("../floret_bridge/wire.py")),
    ("worker.py", include_str!("../floret_bridge/worker.py")),
];

/// Writes the package under `cache` (once per version of its files) and returns the
/// directory to put on `PYTHONPATH`.
pub(crate) fn install(cache: &Path) -> Result<PathBuf, BridgeError> {
    let mut hash = Sha256::new();
    for (name, text) in FILES {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(text.as_bytes());
    }
    let digest = hash.finalize();
    let tag: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let root = cache.join(format!("floret_bridge-{tag}"));
    if root.join("floret_bridge").join("__main__.py").is_file() {
        return Ok(root);
    }
    let io = |e: std::io::Error| BridgeError::Io(format!("writing {}: {e}", root.display()));
    // Written beside and renamed, so a concurrent `flwr` never sees half a package.
    let staging = cache.join(format!("floret_bridge-{tag}.{}", std::process::id()));
    let package = staging.join("floret_bridge");
    std::fs::create_dir_all(&package).map_err(io)?;
    for (name, text) in FILES {
        std::fs::write(package.join(name), text).map_err(io)?;
    }
    match std::fs::rename(&staging, &root) {
        Ok(()) => Ok(root),
        // Another process installed the same files first.
        Err(_) if root.join("floret_bridge").join("__main__.py").is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(root)
        }
        Err(e) => Err(io(e)),
    }
}

/// The package's source files by name, for tests that run it from a directory of their own.
pub fn files() -> impl Iterator<Item = (&'static str, &'static str)> {
    FILES.iter().copied()
}
