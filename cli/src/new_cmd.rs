//! `flwr new [NAME] [--template ndarray|burn|minimal] [--publisher P]`: makes an app crate
//! from a template built into `flwr`, with no download.
//!
//! The crate depends on this checkout's `floret-app` (the app host, without `flwr`'s own
//! code) by path and starts from a copy of this workspace's `Cargo.lock`, so it resolves to
//! the dependency versions Floret was built with: already downloaded, it builds offline,
//! and every app made by this `flwr` compiles the same dependencies the same way, which
//! `flwr run`'s shared build cache (see `build_cmd`) then compiles only once. The `burn`
//! template's lock is that one plus burn's own crates (`templates/burn/Cargo.lock`), which
//! cargo downloads at the app's first build; burn stays out of Floret's own build. On a
//! terminal, missing arguments are asked for; otherwise NAME is required and the rest has
//! defaults, so scripts never block.

use crate::{UserError, exit_code};
use anyhow::Context as _;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

/// Flags of `flwr new`.
#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// The app's name: its directory, Cargo package and project name (lowercase letters,
    /// digits and hyphens, starting with a letter).
    pub name: Option<String>,
    /// The template: ndarray (a small model on bundled data), burn (a CNN in the burn
    /// deep-learning framework) or minimal (random arrays), or Flower's framework name for
    /// it, in any case (NumPy makes ndarray, PyTorch makes burn).
    #[arg(long, short = 't', visible_alias = "framework")]
    pub template: Option<String>,
    /// The publisher in [tool.flwr.app] (default: your user name).
    #[arg(long, alias = "username")]
    pub publisher: Option<String>,
}

/// An app template: its own files, and the dependencies its code needs beyond floret-app.
#[derive(Debug)]
struct Template {
    name: &'static str,
    about: &'static str,
    /// Dependencies Floret's workspace has too, at the same version (so already built).
    dependencies: &'static str,
    /// Cargo.toml lines of the template's own beyond those: crates Floret does not use,
    /// features, profile settings.
    cargo_extra: &'static str,
    /// The Cargo.lock the app starts from.
    lock: &'static str,
    files: &'static [(&'static str, &'static str)],
}

/// The handwritten digits that the ndarray and the burn templates ship.
const DIGITS: &str = include_str!("../templates/ndarray/data/digits.txt");

const TEMPLATES: [Template; 3] = [
    Template {
        name: "ndarray",
        about: "softmax regression on the handwritten digits in ndarray (Flower's NumPy template)",
        dependencies: "ndarray = \"0.17.2\"\n",
        cargo_extra: "",
        lock: WORKSPACE_LOCK,
        files: &[
            (
                "pyproject.toml",
                include_str!("../templates/ndarray/pyproject.toml.tmpl"),
            ),
            (
                "README.md",
                include_str!("../templates/ndarray/README.md.tmpl"),
            ),
            (
                "src/server_app.rs",
                include_str!("../templates/ndarray/src/server_app.rs"),
            ),
            (
                "src/client_app.rs",
                include_str!("../templates/ndarray/src/client_app.rs"),
            ),
            (
                "src/task.rs",
                include_str!("../templates/ndarray/src/task.rs"),
            ),
            ("data/digits.txt", DIGITS),
        ],
    },
    Template {
        name: "burn",
        about: "a CNN in burn (autodiff, Adam; CPU, or GPU by a feature) on the digits (Flower's PyTorch template)",
        dependencies: "",
        cargo_extra: include_str!("../templates/burn/Cargo.toml.part"),
        // This workspace's lock plus burn's crates, as cargo resolved them when the
        // template was last tested. After the workspace's lock changes, refresh it: in an
        // app from `flwr new x --template burn`, copy this workspace's Cargo.lock over
        // x/Cargo.lock, run `cargo fetch`, copy the result here, and run
        // `cargo test -p floret-cli --test burn_template`.
        lock: include_str!("../templates/burn/Cargo.lock"),
        files: &[
            (
                "pyproject.toml",
                include_str!("../templates/burn/pyproject.toml.tmpl"),
            ),
            (
                "README.md",
                include_str!("../templates/burn/README.md.tmpl"),
            ),
            (
                "src/server_app.rs",
                include_str!("../templates/burn/src/server_app.rs"),
            ),
            (
                "src/client_app.rs",
                include_str!("../templates/burn/src/client_app.rs"),
            ),
            ("src/task.rs", include_str!("../templates/burn/src/task.rs")),
            (
                "src/task/data.rs",
                include_str!("../templates/burn/src/task/data.rs"),
            ),
            ("data/digits.txt", DIGITS),
        ],
    },
    Template {
        name: "minimal",
        about: "FedAvg over random arrays that clients nudge with noise, no data",
        dependencies: "",
        cargo_extra: "",
        lock: WORKSPACE_LOCK,
        files: &[
            (
                "pyproject.toml",
                include_str!("../templates/minimal/pyproject.toml.tmpl"),
            ),
            (
                "README.md",
                include_str!("../templates/minimal/README.md.tmpl"),
            ),
            (
                "src/server_app.rs",
                include_str!("../templates/minimal/src/server_app.rs"),
            ),
            (
                "src/client_app.rs",
                include_str!("../templates/minimal/src/client_app.rs"),
            ),
            (
                "src/task.rs",
                include_str!("../templates/minimal/src/task.rs"),
            ),
        ],
    },
];

/// Files every template shares.
const COMMON: [(&str, &str); 3] = [
    (
        "Cargo.toml",
        include_str!("../templates/common/Cargo.toml.tmpl"),
    ),
    (
        "src/main.rs",
        include_str!("../templates/common/src/main.rs"),
    ),
    (".gitignore", include_str!("../templates/common/gitignore")),
];

/// This workspace's lock file: the versions Floret was built with, hence downloaded.
const WORKSPACE_LOCK: &str = include_str!("../../Cargo.lock");

/// Names an app cannot take: Rust keywords and standard crates (cargo refuses them),
/// the crates an app depends on, and the built-in apps (whose components would shadow it).
const RESERVED: &str = "\
    abstract alloc as async await become box break burn const continue core crate digits do \
    dyn else enum extern false final fn for gen if impl in let loop macro match mod \
    move mut ndarray override priv proc_macro pub quickstart ref return self static std \
    struct super test trait true try type typeof unsafe unsized use virtual where while \
    yield";

const DEFAULT_TEMPLATE: &str = "ndarray";

/// Makes the app directory; returns the exit code.
pub async fn execute(args: NewArgs) -> anyhow::Result<i32> {
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let (name, module) = match args.name {
        Some(name) => {
            let module = check_name(&name)?;
            (name, module)
        }
        None if interactive => ask_until("App name", "myapp", check_name)?,
        None => {
            return Err(UserError::new(
                "pass NAME: `flwr new NAME [--template ndarray|burn|minimal] [--publisher P]` (there is no terminal to ask on)",
            )
            .into());
        }
    };
    let template = match args.template {
        Some(t) => find_template(&t)?,
        None if interactive => ask_template()?,
        None => find_template(DEFAULT_TEMPLATE)?,
    };
    let publisher = match args.publisher {
        Some(p) => {
            check_publisher(&p)?;
            p
        }
        None if interactive => ask_until("Publisher", &default_publisher(), check_publisher)?.0,
        None => default_publisher(),
    };
    let dir = Path::new(&name);
    check_target_dir(dir)?;
    let files = render(template, &name, &module, &publisher);
    write_all(dir, &files)?;
    crate::outln!(
        "made {name}/ from the {} template\n\n    cd {name}\n    flwr run .\n",
        template.name
    );
    Ok(exit_code::OK)
}

/// Checks an app name; returns its module name (`my-app` -> `my_app`), which the
/// components in pyproject.toml use.
fn check_name(name: &str) -> Result<String, UserError> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    let starts = name.starts_with(|c: char| c.is_ascii_lowercase());
    let ends = name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(valid_chars && starts && ends) || name.len() > 64 {
        let lowered: String = name
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let trimmed: String = lowered
            .trim_start_matches(|c: char| !c.is_ascii_lowercase())
            .chars()
            .take(64)
            .collect();
        let suggestion = match trimmed.trim_end_matches('-') {
            "" => "myapp",
            s => s,
        };
        return Err(UserError::new(format!(
            "invalid app name {name:?}: use lowercase letters, digits and hyphens, starting with a letter (at most 64), e.g. `flwr new {suggestion}`"
        )));
    }
    let module = name.replace('-', "_");
    if RESERVED.split_whitespace().any(|r| r == module) || module.starts_with("floret") {
        return Err(UserError::new(format!(
            "the app name {name:?} is taken (by Rust, a dependency or a built-in app): choose another, e.g. `flwr new my-{name}`"
        )));
    }
    Ok(module)
}

fn check_publisher(publisher: &str) -> Result<(), UserError> {
    let ok = !publisher.is_empty()
        && publisher.len() <= 64
        && publisher
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(UserError::new(format!(
            "invalid publisher {publisher:?}: use letters, digits, '-', '_' and '.' (at most 64), e.g. --publisher flwrlabs"
        )))
    }
}

/// The user's login name when it makes a valid publisher.
fn default_publisher() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| check_publisher(u).is_ok())
        .unwrap_or_else(|| "flwrlabs".to_owned())
}

fn template_names() -> String {
    TEMPLATES
        .iter()
        .map(|t| match flower_name_of(t.name) {
            Some(flower) => format!("{} (Flower's {flower})", t.name),
            None => t.name.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Flower's `flwr new` frameworks (as its prompt spells them, 1.18), each with the template
/// that plays its role here, if there is one yet.
const FLOWER_FRAMEWORKS: [(&str, Option<&str>); 9] = [
    ("PyTorch", Some("burn")),
    ("TensorFlow", None),
    ("sklearn", None),
    ("HuggingFace", None),
    ("JAX", None),
    ("MLX", None),
    ("NumPy", Some("ndarray")),
    ("FlowerTune", None),
    ("Flower Baseline", None),
];

/// Flower's name for the framework a template stands in for.
fn flower_name_of(template: &str) -> Option<&'static str> {
    FLOWER_FRAMEWORKS
        .iter()
        .find(|(_, t)| *t == Some(template))
        .map(|(flower, _)| *flower)
}

/// A name as users vary it: case, spaces, hyphens and underscores do not count
/// (`numpy`, `NumPy`, `flower-baseline`).
fn normalized(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The template a name asks for: a template's own name, or one of Flower's framework
/// names (`NumPy` is `ndarray`), in any case.
fn find_template(name: &str) -> Result<&'static Template, UserError> {
    let wanted = normalized(name);
    let by_name = |template_name: &str| TEMPLATES.iter().find(|t| t.name == template_name);
    if let Some(template) = TEMPLATES.iter().find(|t| normalized(t.name) == wanted) {
        return Ok(template);
    }
    if let Some((flower, template)) = FLOWER_FRAMEWORKS
        .iter()
        .find(|(flower, _)| normalized(flower) == wanted)
    {
        return template.and_then(by_name).ok_or_else(|| {
            UserError::new(format!(
                "Flower's {flower} template has no Rust counterpart yet: use one of {}, e.g. `flwr new NAME --template ndarray`",
                template_names()
            ))
        });
    }
    let known = TEMPLATES
        .iter()
        .map(|t| t.name)
        .chain(FLOWER_FRAMEWORKS.iter().map(|(flower, _)| *flower));
    Err(UserError::new(format!(
        "unknown template {name:?}{}: use one of {}",
        floret_core::suggest::did_you_mean(name, known),
        template_names()
    )))
}

/// An existing directory is fine only when empty; the app is never written over files.
fn check_target_dir(dir: &Path) -> Result<(), UserError> {
    if !dir.exists() {
        return Ok(());
    }
    let empty = dir.is_dir()
        && std::fs::read_dir(dir)
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false);
    if empty {
        Ok(())
    } else {
        Err(UserError::new(format!(
            "{} already exists and is not an empty directory: choose another NAME, or move it away",
            dir.display()
        )))
    }
}

/// The app's files, placeholders filled in.
fn render(
    template: &Template,
    name: &str,
    module: &str,
    publisher: &str,
) -> Vec<(&'static str, String)> {
    let app_dir = floret_app_dir().replace('\\', "\\\\").replace('"', "\\\"");
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{module}}", module)
            .replace("{{publisher}}", publisher)
            .replace("{{floret_app_path}}", &app_dir)
            .replace(
                "{{dependencies}}",
                &format!("{}{}", template.dependencies, template.cargo_extra),
            )
    };
    COMMON
        .iter()
        .chain(template.files)
        .map(|(path, text)| (*path, fill(text)))
        .chain(std::iter::once(("Cargo.lock", template.lock.to_owned())))
        .collect()
}

/// This checkout's `app/` (floret-app), a sibling of the `cli/` this binary was built from.
fn floret_app_dir() -> String {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR"));
    cli.parent()
        .unwrap_or(cli)
        .join("app")
        .to_string_lossy()
        .into_owned()
}

/// Writes the files under `dir`; removes what it made if a write fails.
fn write_all(dir: &Path, files: &[(&str, String)]) -> anyhow::Result<()> {
    let existed = dir.exists();
    let result = files.iter().try_for_each(|(path, text)| {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)
    });
    if let Err(e) = result {
        if existed {
            for (path, _) in files {
                let _ = std::fs::remove_file(dir.join(path));
            }
        } else {
            let _ = std::fs::remove_dir_all(dir);
        }
        return Err(e).with_context(|| format!("writing the app into {}", dir.display()));
    }
    Ok(())
}

/// Asks on stderr until `check` accepts the answer; an empty line answers `default`.
fn ask_until<T>(
    question: &str,
    default: &str,
    check: impl Fn(&str) -> Result<T, UserError>,
) -> anyhow::Result<(String, T)> {
    loop {
        eprint!("{question} [{default}]: ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line)? == 0 {
            return Err(UserError::new(format!(
                "no answer to \"{question}\": pass it on the command line"
            ))
            .into());
        }
        let answer = match line.trim() {
            "" => default,
            answer => answer,
        };
        match check(answer) {
            Ok(checked) => return Ok((answer.to_owned(), checked)),
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// Lists the templates and asks for one by number or name (Flower's names work too).
fn ask_template() -> anyhow::Result<&'static Template> {
    eprintln!("Templates (by number, by name, or by Flower's framework name, e.g. NumPy):");
    for (i, t) in TEMPLATES.iter().enumerate() {
        eprintln!("  {}) {:<8} {}", i + 1, t.name, t.about);
    }
    let by_number_or_name = |answer: &str| {
        let by_number = answer
            .parse::<usize>()
            .ok()
            .and_then(|n| TEMPLATES.get(n.wrapping_sub(1)));
        by_number.map_or_else(|| find_template(answer), Ok)
    };
    Ok(ask_until("Template", DEFAULT_TEMPLATE, by_number_or_name)?.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_a_suggestion() {
        assert_eq!(check_name("my-app2").unwrap(), "my_app2");
        assert_eq!(check_name("a").unwrap(), "a");
        for (bad, suggestion) in [
            ("MyApp", "flwr new myapp"),
            ("my app", "flwr new my-app"),
            ("2fast", "flwr new fast"),
            ("app-", "flwr new app"),
            ("", "flwr new myapp"),
            ("../x", "flwr new x"),
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains(suggestion), "{bad:?}: {e}");
        }
        for taken in [
            "fn",
            "std",
            "test",
            "quickstart",
            "digits",
            "ndarray",
            "floret-cli",
        ] {
            let e = check_name(taken).unwrap_err().to_string();
            assert!(e.contains("is taken"), "{taken}: {e}");
        }
    }

    #[test]
    fn publishers_are_plain_words() {
        assert!(check_publisher("flwr-labs.io_2").is_ok());
        for bad in ["", "a b", "x\"y", "é"] {
            assert!(check_publisher(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flowers_framework_names_find_the_template_in_its_role() {
        for name in ["NumPy", "numpy", "NUMPY", "ndarray", "NdArray"] {
            assert_eq!(find_template(name).unwrap().name, "ndarray", "{name}");
        }
        for name in ["PyTorch", "pytorch", "burn", "Burn"] {
            assert_eq!(find_template(name).unwrap().name, "burn", "{name}");
        }
        assert_eq!(find_template("minimal").unwrap().name, "minimal");
    }

    #[test]
    fn a_flower_framework_without_a_rust_template_lists_what_there_is() {
        for name in ["TensorFlow", "tensorflow", "flower-baseline", "sklearn"] {
            let e = find_template(name).unwrap_err().to_string();
            assert!(e.contains("has no Rust counterpart yet"), "{name}: {e}");
            assert!(
                e.contains("use one of ndarray (Flower's NumPy), burn (Flower's PyTorch), minimal"),
                "{name}: {e}"
            );
            assert_eq!(e.lines().count(), 1);
        }
    }

    #[test]
    fn an_unknown_template_lists_the_known_ones() {
        let e = find_template("numpi").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown template \"numpi\" (did you mean `NumPy`?): use one of ndarray (Flower's NumPy), burn (Flower's PyTorch), minimal"
        );
        let e = find_template("keras").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown template \"keras\": use one of ndarray (Flower's NumPy), burn (Flower's PyTorch), minimal"
        );
    }

    #[test]
    fn every_placeholder_is_filled() {
        for template in &TEMPLATES {
            let files = render(template, "my-app", "my_app", "alice");
            for (path, text) in &files {
                assert!(!text.contains("{{"), "{} {path}", template.name);
            }
            let text = |p: &str| &files.iter().find(|(path, _)| *path == p).unwrap().1;
            assert!(text("pyproject.toml").contains("serverapp = \"my_app.server_app:app\""));
            assert!(text("pyproject.toml").contains("publisher = \"alice\""));
            assert!(text("Cargo.toml").contains("name = \"my-app\""));
            assert!(text("Cargo.toml").contains(&floret_app_dir()));
            assert!(text("src/main.rs").contains("floret_app::run("));
            assert_eq!(text("Cargo.lock"), template.lock);
        }
    }

    /// burn comes from the burn template's own Cargo.toml lines and lock, at one version
    /// proven to build, and never from Floret's workspace.
    #[test]
    fn the_burn_template_pins_burn_outside_the_workspace() {
        let burn = find_template("burn").unwrap();
        let files = render(burn, "cnn", "cnn", "alice");
        let text = |p: &str| &files.iter().find(|(path, _)| *path == p).unwrap().1;
        assert!(text("Cargo.toml").contains("burn = { version = \"=0.22.1\""));
        assert!(text("Cargo.toml").contains("wgpu = [\"burn/wgpu\"]"));
        assert!(text("Cargo.lock").contains("name = \"burn\"\nversion = \"0.22.1\""));
        assert_eq!(text("data/digits.txt"), DIGITS);
        assert!(!WORKSPACE_LOCK.contains("name = \"burn\""));
        assert!(!include_str!("../../Cargo.toml").contains("burn"));
    }

    #[test]
    fn template_dependencies_match_the_workspace() {
        let workspace = include_str!("../../Cargo.toml");
        for template in &TEMPLATES {
            for line in template.dependencies.lines() {
                assert!(workspace.contains(line), "{}: {line}", template.name);
            }
        }
    }

    #[test]
    fn a_non_empty_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_target_dir(&dir.path().join("new")).is_ok());
        assert!(check_target_dir(dir.path()).is_ok());
        std::fs::write(dir.path().join("file"), "").unwrap();
        let e = check_target_dir(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("already exists and is not an empty directory"),
            "{e}"
        );
        assert!(check_target_dir(&dir.path().join("file")).is_err());
    }
}
