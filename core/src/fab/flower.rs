//! Flower-format FABs: the app as Flower 1.42's `flwr build` bundles a Python app, so that
//! a Flower app runs on Floret's daemons unchanged.
//!
//! # Format
//!
//! A zip archive (deflated entries, every date 2024-10-01 00:00, as Flower writes them) of
//! - `pyproject.toml`, first, with `[tool.flwr.federations]` removed (Flower's rule: where
//!   the user submits from is not part of the app);
//! - the app's files, sorted by path (POSIX, relative to the app directory);
//! - `.info/CONTENT`, last: one line `path,sha256,bits` per file above (lowercase hex
//!   sha256 of the file's bytes, its size in bits), joined by `\n`.
//!
//! The FAB hash is the sha256 of the zip's bytes, as for a native FAB. Which files go in is
//! [`included`] (Flower's built-in include and exclude patterns); the directory walk that
//! feeds it is the caller's (`flwr build`), since this crate does no I/O.
//!
//! # Reading untrusted bytes
//!
//! [`unpack`] is what a daemon runs on a submitted FAB before anything is written to disk.
//! It refuses, with one line each: an archive over [`MAX_PACKED_LEN`], more than
//! [`MAX_ENTRIES`] entries, any path that is absolute, has a `..`, `.` or empty component, a
//! backslash, a NUL or a drive colon, or nests deeper than [`MAX_DEPTH`] (so writing the files
//! under a directory can never leave it), symbolic links, duplicate paths, more than
//! [`MAX_UNPACKED_LEN`] bytes once inflated (counted while inflating, never from the
//! headers, so a zip bomb stops at the bound), a missing or inconsistent `.info/CONTENT` (a
//! file it does not list, a listed file missing, a sha256 or size that differs), and a
//! `pyproject.toml` that is missing or names no components.

use super::{FabError, sha256_hex};
use crate::manifest::AppManifest;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::io::{Cursor, Read, Write};
use std::path::Path;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipArchive, ZipWriter};

/// The first bytes of a zip archive (a local file header).
pub const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// The app's manifest inside the FAB.
pub const PYPROJECT: &str = "pyproject.toml";
/// The list of files with their hashes and sizes.
pub const CONTENT: &str = ".info/CONTENT";
/// Flower's `FAB_MAX_SIZE`: a FAB holds source files, not data or weights.
pub const MAX_PACKED_LEN: usize = 10 * 1024 * 1024;
/// What the files of one FAB may add up to once inflated.
pub const MAX_UNPACKED_LEN: u64 = 64 * 1024 * 1024;
/// Entries one FAB may hold.
pub const MAX_ENTRIES: usize = 10_000;
/// Directories a path may nest (Flower's `MAX_DIR_DEPTH`), file name not counted.
pub const MAX_DEPTH: usize = 10;

/// A Flower FAB, read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowerFab {
    /// The FAB's `pyproject.toml`, parsed.
    pub manifest: AppManifest,
    /// Every file but `.info/CONTENT`, `pyproject.toml` included, in archive order; each
    /// path is safe to join to a directory (see the module doc).
    pub files: Vec<FabFile>,
}

/// One file of a Flower FAB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FabFile {
    /// Relative POSIX path, checked.
    pub path: String,
    /// The file's bytes.
    pub data: Bytes,
}

/// Whether Flower's `flwr build` puts the file at `path` (relative, POSIX) into a FAB:
/// Python, TOML, Markdown, YAML and JSON files and a top-level `LICENSE`, except tests
/// (`test_*.py`, `*_test.py`), caches (`__pycache__`), Flower's `.flwr`, virtual
/// environments and build output at the top level (`.venv`, `venv`, `env`, `ENV`,
/// `build`, `lib`, `eggs`, …), and the app's own `pyproject.toml` (written separately).
/// Floret adds one rule of its own: its history files (`runs/` at the top level, where
/// `flwr run` writes them) are not the app.
pub fn included(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let Some((file, dirs)) = parts.split_last() else {
        return false;
    };
    const TOP_EXCLUDED: &[&str] = &[
        ".flwr", ".venv", "build", "eggs", ".eggs", "lib", "lib64", "parts", "env", "venv", "ENV",
        "env.bak", "venv.bak", "runs",
    ];
    if dirs.first().is_some_and(|top| TOP_EXCLUDED.contains(top)) || dirs.contains(&"__pycache__") {
        return false;
    }
    // `pyproject.toml` is excluded at any depth, as Flower's pattern is.
    if *file == PYPROJECT
        || (file.ends_with(".py") && (file.starts_with("test_") || file.ends_with("_test.py")))
        || (dirs.is_empty() && file.ends_with(".egg"))
    {
        return false;
    }
    const EXTENSIONS: &[&str] = &[".py", ".toml", ".md", ".yaml", ".yml", ".json", ".jsonl"];
    EXTENSIONS.iter().any(|ext| file.ends_with(ext)) || (dirs.is_empty() && *file == "LICENSE")
}

/// The rules of an app's top-level `.gitignore`, which Flower's `flwr build` applies before
/// its own: a file a rule matches (the file, or a directory above it) is left out, a later
/// `!rule` takes it back; a rule with a `/` other than at its end is anchored at the app
/// directory, one without matches at any depth, a trailing `/` matches directories only;
/// `*`, `?`, `[...]` and `**` as in git.
#[derive(Debug, Clone, Default)]
pub struct GitIgnore {
    rules: Vec<IgnoreRule>,
}

#[derive(Debug, Clone)]
struct IgnoreRule {
    negated: bool,
    dir_only: bool,
    /// Path segments, `**` for any number of them; a rule that is not anchored starts
    /// with `**`.
    segments: Vec<String>,
}

impl GitIgnore {
    /// The rules of a `.gitignore` file's text; blank lines and comments are skipped.
    pub fn parse(text: &str) -> GitIgnore {
        let rules = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    return None;
                }
                let (negated, line) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest),
                    None => (false, line.strip_prefix('\\').unwrap_or(line)),
                };
                let dir_only = line.ends_with('/');
                let line = line.trim_end_matches('/');
                let anchored = line.contains('/');
                let mut segments: Vec<String> = line
                    .trim_start_matches('/')
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if segments.is_empty() {
                    return None;
                }
                if !anchored {
                    segments.insert(0, "**".to_owned());
                }
                Some(IgnoreRule {
                    negated,
                    dir_only,
                    segments,
                })
            })
            .collect();
        GitIgnore { rules }
    }

    /// Whether the file at `path` (relative, POSIX) is left out.
    pub fn ignores(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        let mut ignored = false;
        for rule in &self.rules {
            // The file itself, or one of the directories above it.
            let hit = (1..=parts.len()).any(|k| {
                (k < parts.len() || !rule.dir_only) && segments_match(&rule.segments, &parts[..k])
            });
            if hit {
                ignored = !rule.negated;
            }
        }
        ignored
    }

    /// Whether the directory at `path` and everything under it is left out, so a walk
    /// need not enter it: only when no rule takes anything back.
    pub fn ignores_dir(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        !self.rules.iter().any(|r| r.negated)
            && self
                .rules
                .iter()
                .any(|r| (1..=parts.len()).any(|k| segments_match(&r.segments, &parts[..k])))
    }
}

/// Glob segments (with `**`) against path segments.
fn segments_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| segments_match(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((segment, others)) => {
                glob_match(first.as_bytes(), segment.as_bytes()) && segments_match(rest, others)
            }
            None => false,
        },
    }
}

/// One segment against a glob: `*`, `?`, `[...]` (with `!` or `^` to negate, ranges) and
/// `\` escapes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && glob_match(rest, &text[1..]),
        Some((b'[', rest)) => {
            let Some(close) = rest.iter().skip(1).position(|&c| c == b']').map(|i| i + 1) else {
                return text.first() == Some(&b'[') && glob_match(rest, &text[1..]);
            };
            let Some((&c, text_rest)) = text.split_first() else {
                return false;
            };
            let (negated, class) = match rest[..close].split_first() {
                Some((b'!' | b'^', class)) => (true, class),
                _ => (false, &rest[..close]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= (class[i]..=class[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negated && glob_match(&rest[close + 1..], text_rest)
        }
        Some((b'\\', rest)) if !rest.is_empty() => {
            text.first() == Some(&rest[0]) && glob_match(&rest[1..], &text[1..])
        }
        Some((&c, rest)) => text.first() == Some(&c) && glob_match(rest, &text[1..]),
    }
}

/// The FAB of an app whose `pyproject.toml` reads `pyproject` and whose other files are
/// `files` (relative POSIX paths, as [`included`] chose them); deterministic for the same
/// input. Refuses an unsafe path and a result over [`MAX_PACKED_LEN`].
pub fn pack(pyproject: &str, files: &[(String, Bytes)]) -> Result<Bytes, FabError> {
    let manifest = without_federations(pyproject)?;
    let mut sorted: Vec<&(String, Bytes)> = files.iter().filter(|(p, _)| p != PYPROJECT).collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for pair in sorted.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(FabError::Flower(format!("{} is given twice", pair[0].0)));
        }
    }
    let zip_error = |e: &dyn std::fmt::Display| FabError::Flower(format!("cannot write it: {e}"));
    let date = DateTime::from_date_and_time(2024, 10, 1, 0, 0, 0).map_err(|e| zip_error(&e))?;
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(date)
        .unix_permissions(0o644);
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let mut lines = Vec::with_capacity(sorted.len() + 1);
    let mut add = |zip: &mut ZipWriter<Cursor<Vec<u8>>>, path: &str, data: &[u8]| {
        zip.start_file(path, options).map_err(|e| zip_error(&e))?;
        zip.write_all(data).map_err(|e| zip_error(&e))?;
        lines.push(format!(
            "{path},{},{}",
            sha256_hex(data),
            data.len() as u64 * 8
        ));
        Ok::<(), FabError>(())
    };
    add(&mut zip, PYPROJECT, manifest.as_bytes())?;
    for (path, data) in sorted {
        check_path(path)?;
        add(&mut zip, path, data)?;
    }
    let content = lines.join("\n");
    zip.start_file(CONTENT, options)
        .map_err(|e| zip_error(&e))?;
    zip.write_all(content.as_bytes())
        .map_err(|e| zip_error(&e))?;
    let packed = zip.finish().map_err(|e| zip_error(&e))?.into_inner();
    if packed.len() > MAX_PACKED_LEN {
        return Err(FabError::TooLarge {
            what: "the FAB",
            limit: MAX_PACKED_LEN as u64,
        });
    }
    Ok(Bytes::from(packed))
}

/// `pyproject` without `[tool.flwr.federations]`; the text unchanged when it has none.
fn without_federations(pyproject: &str) -> Result<String, FabError> {
    let mut doc: toml::Table = pyproject.parse().map_err(|e: toml::de::Error| {
        FabError::Flower(format!("pyproject.toml: {}", e.message()))
    })?;
    let removed = doc
        .get_mut("tool")
        .and_then(|t| t.as_table_mut())
        .and_then(|t| t.get_mut("flwr"))
        .and_then(|t| t.as_table_mut())
        .and_then(|t| t.remove("federations"));
    match removed {
        None => Ok(pyproject.to_owned()),
        Some(_) => {
            toml::to_string(&doc).map_err(|e| FabError::Flower(format!("pyproject.toml: {e}")))
        }
    }
}

/// Reads and checks a Flower FAB (see the module doc). Never panics, never allocates more
/// than the bounds allow.
pub fn unpack(packed: &[u8]) -> Result<FlowerFab, FabError> {
    if packed.len() > MAX_PACKED_LEN {
        return Err(FabError::TooLarge {
            what: "the FAB",
            limit: MAX_PACKED_LEN as u64,
        });
    }
    let zip_error = |e: zip::result::ZipError| FabError::Flower(format!("not a readable zip: {e}"));
    let mut archive = ZipArchive::new(Cursor::new(packed)).map_err(zip_error)?;
    if archive.len() > MAX_ENTRIES {
        return Err(FabError::Flower(format!(
            "it has {} entries, more than the {MAX_ENTRIES} allowed",
            archive.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    let mut content = None;
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let entry = archive.by_index(index).map_err(zip_error)?;
        let name = entry.name().map_err(zip_error)?.into_owned();
        if entry.is_dir() {
            check_path(name.trim_end_matches('/'))?;
            continue;
        }
        check_path(&name)?;
        if entry.is_symlink() {
            return Err(FabError::UnsafePath(format!("{name} is a symbolic link")));
        }
        if !seen.insert(name.clone()) {
            return Err(FabError::Flower(format!("{name} appears twice")));
        }
        let left = MAX_UNPACKED_LEN - total;
        // The header's size is a hint only: what is read is bounded by what is left.
        let mut data = Vec::with_capacity(entry.size().min(left).min(1 << 20) as usize);
        entry
            .take(left + 1)
            .read_to_end(&mut data)
            .map_err(|e| FabError::Flower(format!("{name} does not inflate: {e}")))?;
        if data.len() as u64 > left {
            return Err(FabError::TooLarge {
                what: "the FAB's files once unpacked",
                limit: MAX_UNPACKED_LEN,
            });
        }
        total += data.len() as u64;
        if name == CONTENT {
            content = Some(data);
        } else {
            files.push(FabFile {
                path: name,
                data: Bytes::from(data),
            });
        }
    }
    let content = content.ok_or_else(|| {
        FabError::Flower(format!("it has no {CONTENT}: build it with `flwr build`"))
    })?;
    check_content(&content, &files)?;
    let pyproject = files
        .iter()
        .find(|f| f.path == PYPROJECT)
        .ok_or_else(|| FabError::Flower(format!("it has no {PYPROJECT}")))?;
    let text = std::str::from_utf8(&pyproject.data)
        .map_err(|_| FabError::Flower(format!("its {PYPROJECT} is not UTF-8")))?;
    let manifest = AppManifest::parse(text, Path::new(PYPROJECT))
        .map_err(|e| FabError::Flower(super::one_line(&e.to_string())))?;
    Ok(FlowerFab { manifest, files })
}

/// Every file is listed in `.info/CONTENT` with its sha256 and size in bits, and every
/// listed file is there. `pyproject.toml` may be left out of the list (Flower's older
/// FABs did).
fn check_content(content: &[u8], files: &[FabFile]) -> Result<(), FabError> {
    let text = std::str::from_utf8(content)
        .map_err(|_| FabError::Flower(format!("its {CONTENT} is not UTF-8")))?;
    let mut listed: HashMap<&str, (&str, &str)> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.rsplitn(3, ',');
        let (Some(bits), Some(sha), Some(path)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(FabError::Flower(format!(
                "{CONTENT} line {line:?} is not `path,sha256,bits`"
            )));
        };
        listed.insert(path, (sha.trim(), bits.trim()));
    }
    for file in files {
        match listed.remove(file.path.as_str()) {
            Some((sha, bits)) => {
                let found = sha256_hex(&file.data);
                let size = (file.data.len() as u64 * 8).to_string();
                if !found.eq_ignore_ascii_case(sha) || size != bits {
                    return Err(FabError::ContentMismatch(file.path.clone()));
                }
            }
            None if file.path == PYPROJECT => {}
            None => {
                return Err(FabError::Flower(format!(
                    "{} is not listed in its {CONTENT}",
                    file.path
                )));
            }
        }
    }
    if let Some(path) = listed.keys().next() {
        return Err(FabError::Flower(format!(
            "{CONTENT} lists {path}, which it does not hold"
        )));
    }
    Ok(())
}

/// A relative POSIX path that stays inside whatever directory it is joined to.
fn check_path(path: &str) -> Result<(), FabError> {
    let unsafe_path = |why: &str| Err(FabError::UnsafePath(format!("{path:?} {why}")));
    if path.is_empty() {
        return unsafe_path("is empty");
    }
    if path.starts_with('/') {
        return unsafe_path("is absolute");
    }
    if path.contains('\\') || path.contains('\0') || path.contains(':') {
        return unsafe_path("has a backslash, NUL or colon");
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return unsafe_path("has an empty, `.` or `..` component");
    }
    if parts.len() > MAX_DEPTH + 1 {
        return unsafe_path(&format!("nests deeper than {MAX_DEPTH} directories"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PYPROJECT_TEXT: &str = r#"[project]
name = "numpyapp"
version = "1.0.0"

[tool.flwr.app]
publisher = "floret"

[tool.flwr.app.components]
serverapp = "numpyapp.server_app:app"
clientapp = "numpyapp.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 3

[tool.flwr.federations]
default = "local-simulation"

[tool.flwr.federations.local-simulation]
options.num-supernodes = 10
"#;

    fn files() -> Vec<(String, Bytes)> {
        vec![
            (
                "numpyapp/server_app.py".into(),
                Bytes::from_static(b"app = 1\n"),
            ),
            ("numpyapp/__init__.py".into(), Bytes::new()),
            ("README.md".into(), Bytes::from_static(b"# numpyapp\n")),
        ]
    }

    /// A zip of `entries` as given, with `.info/CONTENT` made from them unless `content`
    /// says otherwise.
    fn raw_zip(entries: &[(&str, &[u8])], content: Option<&str>) -> Vec<u8> {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        let mut lines = Vec::new();
        for (path, data) in entries {
            zip.start_file(*path, options).unwrap();
            zip.write_all(data).unwrap();
            lines.push(format!("{path},{},{}", sha256_hex(data), data.len() * 8));
        }
        let content = content.map_or_else(|| lines.join("\n"), str::to_owned);
        zip.start_file(CONTENT, options).unwrap();
        zip.write_all(content.as_bytes()).unwrap();
        zip.finish().unwrap().into_inner()
    }

    #[test]
    fn flowers_build_rules_choose_the_files() {
        for path in [
            "numpyapp/client_app.py",
            "README.md",
            "conf/model.yaml",
            "data/labels.json",
            "LICENSE",
            "pkg/sub/settings.toml",
        ] {
            assert!(included(path), "{path} is part of the app");
        }
        for path in [
            "pyproject.toml",
            "pkg/pyproject.toml",
            "numpyapp/test_task.py",
            "numpyapp/task_test.py",
            "numpyapp/__pycache__/task.cpython-311.pyc",
            "numpyapp/__pycache__/x.py",
            ".venv/lib/python3.11/site-packages/numpy/__init__.py",
            "venv/x.py",
            "build/lib/numpyapp/task.py",
            ".flwr/config.toml",
            "runs/2026-01-01-run-1/history.json",
            "numpyapp/weights.npy",
            "pkg/LICENSE",
            "data.csv",
        ] {
            assert!(!included(path), "{path} is not part of the app");
        }
        // Only the top-level `build/` is build output.
        assert!(included("numpyapp/build/steps.py"));
    }

    #[test]
    fn an_apps_gitignore_leaves_files_out_as_git_does() {
        let ignore = GitIgnore::parse(
            "# outputs\n\noutputs/\n*.json\n!keep.json\n/notes.md\ndata/**/raw_*.yaml\nsecret?.py\ncache[0-9].toml\n",
        );
        for path in [
            "outputs/model.py",
            "pkg/outputs/x.py",
            "results.json",
            "pkg/sub/metrics.json",
            "notes.md",
            "data/a/b/raw_1.yaml",
            "pkg/secret1.py",
            "cache7.toml",
        ] {
            assert!(ignore.ignores(path), "{path} is ignored");
        }
        for path in [
            "keep.json",
            "pkg/keep.json",
            "pkg/notes.md",
            "outputs.py",
            "data/a/cooked.yaml",
            "pkg/secret10.py",
            "cachex.toml",
            "pkg/task.py",
        ] {
            assert!(!ignore.ignores(path), "{path} is kept");
        }
        // A negation anywhere means a walk must still enter ignored directories.
        assert!(!ignore.ignores_dir("outputs"));
        let plain = GitIgnore::parse("outputs/\n");
        assert!(plain.ignores_dir("outputs"));
        assert!(plain.ignores_dir("pkg/outputs"));
        assert!(!plain.ignores_dir("pkg"));
        assert!(!GitIgnore::default().ignores("anything.py"));
    }

    #[test]
    fn pack_and_unpack_round_trip_in_flowers_layout() {
        let packed = pack(PYPROJECT_TEXT, &files()).unwrap();
        assert!(packed.starts_with(ZIP_MAGIC));
        assert_eq!(
            pack(PYPROJECT_TEXT, &files()).unwrap(),
            packed,
            "deterministic"
        );
        let fab = unpack(&packed).unwrap();
        let paths: Vec<&str> = fab.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "pyproject.toml",
                "README.md",
                "numpyapp/__init__.py",
                "numpyapp/server_app.py"
            ],
            "pyproject first, then sorted"
        );
        assert_eq!(fab.manifest.name, "numpyapp");
        assert_eq!(fab.manifest.serverapp, "numpyapp.server_app:app");
        assert!(
            fab.manifest.federations.is_empty(),
            "federations are not part of the FAB"
        );
        assert_eq!(
            fab.manifest.config.get("num-server-rounds"),
            Some(&crate::UserConfigValue::Int(3))
        );
        // CONTENT: one line per file, pyproject included, `path,sha256,bits`.
        let mut archive = ZipArchive::new(Cursor::new(&packed[..])).unwrap();
        let mut content = String::new();
        archive
            .by_name(CONTENT)
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        let lines: Vec<&str> = content.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[3],
            format!("numpyapp/server_app.py,{},64", sha256_hex(b"app = 1\n"))
        );
        assert!(lines[0].starts_with("pyproject.toml,"));
    }

    #[test]
    fn a_tampered_file_is_a_content_mismatch() {
        let content = format!(
            "pyproject.toml,{},{}\nnumpyapp/server_app.py,{},64",
            sha256_hex(PYPROJECT_TEXT.as_bytes()),
            PYPROJECT_TEXT.len() * 8,
            sha256_hex(b"app = 1\n")
        );
        let zip = raw_zip(
            &[
                ("pyproject.toml", PYPROJECT_TEXT.as_bytes()),
                ("numpyapp/server_app.py", b"app = 2\n"),
            ],
            Some(&content),
        );
        let err = unpack(&zip).unwrap_err();
        assert_eq!(
            err,
            FabError::ContentMismatch("numpyapp/server_app.py".into())
        );
        assert!(err.to_string().contains("tampered"), "{err}");
    }

    #[test]
    fn content_must_list_exactly_the_files() {
        let extra = raw_zip(
            &[("pyproject.toml", PYPROJECT_TEXT.as_bytes())],
            Some("pyproject.toml,00,8\nghost.py,00,8"),
        );
        let err = unpack(&extra).unwrap_err().to_string();
        assert!(
            err.contains("ghost.py") || err.contains("pyproject.toml"),
            "{err}"
        );
        let unlisted = raw_zip(
            &[
                ("pyproject.toml", PYPROJECT_TEXT.as_bytes()),
                ("a.py", b"x = 1"),
            ],
            Some(""),
        );
        let err = unpack(&unlisted).unwrap_err().to_string();
        assert!(err.contains("a.py is not listed"), "{err}");
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file(PYPROJECT, SimpleFileOptions::default())
            .unwrap();
        zip.write_all(PYPROJECT_TEXT.as_bytes()).unwrap();
        let no_content = zip.finish().unwrap().into_inner();
        let err = unpack(&no_content).unwrap_err().to_string();
        assert!(err.contains("no .info/CONTENT"), "{err}");
    }

    #[test]
    fn no_pyproject_or_no_components_is_refused() {
        let err = unpack(&raw_zip(&[("a.py", b"x")], None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no pyproject.toml"), "{err}");
        let err = unpack(&raw_zip(
            &[("pyproject.toml", b"[project]\nname = \"x\"\n")],
            None,
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("components") || err.contains("tool.flwr"),
            "{err}"
        );
    }

    #[test]
    fn paths_that_leave_the_directory_are_refused() {
        for path in [
            "../evil.py",
            "pkg/../../evil.py",
            "/etc/passwd",
            "pkg//x.py",
            "./x.py",
            "C:/x.py",
            "pkg\\..\\x.py",
            "a/b/c/d/e/f/g/h/i/j/k/x.py",
        ] {
            let zip = raw_zip(
                &[("pyproject.toml", PYPROJECT_TEXT.as_bytes()), (path, b"x")],
                None,
            );
            let err = unpack(&zip).unwrap_err();
            assert!(matches!(err, FabError::UnsafePath(_)), "{path}: {err:?}");
            assert!(
                pack(PYPROJECT_TEXT, &[(path.to_owned(), Bytes::new())]).is_err(),
                "{path} is not packed either"
            );
        }
    }

    #[test]
    fn a_zip_bomb_stops_at_the_bound() {
        // 65 MiB of zeros deflate to about 65 KiB.
        let zeros = vec![0u8; (MAX_UNPACKED_LEN + (1 << 20)) as usize];
        let zip = raw_zip(
            &[
                ("pyproject.toml", PYPROJECT_TEXT.as_bytes()),
                ("big.json", &zeros),
            ],
            None,
        );
        assert!(zip.len() < MAX_PACKED_LEN);
        let err = unpack(&zip).unwrap_err();
        assert!(matches!(err, FabError::TooLarge { .. }), "{err:?}");
        assert!(err.to_string().contains("64 MiB"), "{err}");
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let packed = pack(PYPROJECT_TEXT, &files()).unwrap();
        for cut in [0, 4, 30, packed.len() / 2, packed.len() - 1] {
            assert!(unpack(&packed[..cut]).is_err(), "cut at {cut}");
        }
        assert!(unpack(b"PK\x03\x04 and then garbage").is_err());
    }
}
