//! The app manifest: an app's `pyproject.toml`, read with Flower's table layout so that
//! Flower tutorials work as written.
//!
//! Parsing is a pure function of the file's text; the caller reads the file and passes its
//! path only so that errors can name it. Every check that would otherwise fail later (in the
//! middle of `flwr run`, or on a remote SuperLink) happens here, and each error names the key
//! and says what to write instead.

use crate::federation_options::{FederationOptions, OptionError};
use crate::run_config::scalar;
use crate::user_config::{UserConfig, UserConfigValue};
use indexmap::IndexMap;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A validated `pyproject.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppManifest {
    /// `[project] name`.
    pub name: String,
    /// `[project] version`.
    pub version: Option<String>,
    /// `[tool.flwr.app] publisher`.
    pub publisher: Option<String>,
    /// `[tool.flwr.app.components] serverapp`, e.g. `"awesomeapp.server_app:app"`.
    pub serverapp: String,
    /// `[tool.flwr.app.components] clientapp`.
    pub clientapp: String,
    /// `[tool.flwr.app.config]`, nested tables flattened to dotted keys as Flower does.
    pub config: UserConfig,
    /// `[tool.flwr.federations] default`; always names an entry of `federations`.
    pub default_federation: Option<String>,
    /// `[tool.flwr.federations.<name>]` tables, in file order.
    pub federations: IndexMap<String, Federation>,
}

/// Where and how to run an app: a local simulation (no `address`) or a remote SuperLink.
#[derive(Debug, Clone, PartialEq)]
pub struct Federation {
    /// The table's name, `<name>` in `[tool.flwr.federations.<name>]`.
    pub name: String,
    /// The SuperLink's Control API address; `None` means a local simulation.
    pub address: Option<String>,
    /// `insecure`: `Some(true)` connects in plain text; unset or `false` means TLS.
    pub insecure: Option<bool>,
    /// CA certificate path as written, relative to `pyproject.toml`'s directory.
    pub root_certificates: Option<String>,
    /// `enable-user-auth`: the SuperLink asks `flwr` users to log in; default `false`.
    pub enable_user_auth: bool,
    /// `"grpc"` or `"quic"` (a Floret addition); `None` leaves the choice to the CLI.
    pub transport: Option<String>,
    /// The `options.*` keys (simulation settings).
    pub options: FederationOptions,
}

/// Why a `pyproject.toml` cannot be used, or why a federation cannot be chosen.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ManifestError {
    /// The file is not valid TOML.
    #[error("{}: invalid TOML: {message}", path.display())]
    Toml {
        /// The manifest's path, as the caller gave it.
        path: PathBuf,
        /// The TOML parser's message on one line, with the line and column it points at.
        message: String,
    },
    /// A required key is missing.
    #[error("{}: `{key}` is missing from [{table}]: {fix}", path.display())]
    Missing {
        /// The manifest's path, as the caller gave it.
        path: PathBuf,
        /// The table the key belongs in, e.g. `tool.flwr.app.components`.
        table: String,
        /// The missing key.
        key: String,
        /// What to write, e.g. an example line.
        fix: String,
    },
    /// A key holds a value of another type.
    #[error("{}: `{key}` in [{table}] must be {expected}, not {found}", path.display())]
    WrongType {
        /// The manifest's path, as the caller gave it.
        path: PathBuf,
        /// The table holding the key.
        table: String,
        /// The key.
        key: String,
        /// What the key must be, in words ("a string").
        expected: &'static str,
        /// What it is instead, in words.
        found: &'static str,
    },
    /// A key is given twice, once as nested keys and once quoted, so Flower and Floret could read
    /// different values.
    #[error(
        "{}: `{key}` is set twice in [{table}] (once as nested keys, once quoted): keep one",
        path.display()
    )]
    DuplicateKey {
        /// The manifest's path, as the caller gave it.
        path: PathBuf,
        /// The table holding the key.
        table: String,
        /// The key, dotted.
        key: String,
    },
    /// A federation table has a key that is unknown, out of range, or at odds with another.
    #[error("{}: `{key}` in federation `{federation}` {problem}: {fix}", path.display())]
    InvalidFederation {
        /// The manifest's path, as the caller gave it.
        path: PathBuf,
        /// The federation's name.
        federation: String,
        /// The offending key.
        key: String,
        /// What is wrong with it, phrased to follow the key ("is set although insecure = true").
        problem: String,
        /// What to write instead.
        fix: String,
    },
    /// `default` names a federation that no table defines.
    #[error(
        "{}: [tool.flwr.federations] default = \"{default}\" names no federation: add [tool.flwr.federations.{default}] or set default to one of: {}",
        path.display(),
        names(defined)
    )]
    UndefinedDefault {
        /// The manifest's path, as the caller gave it.
        path: PathBuf,
        /// The name `default` gives.
        default: String,
        /// The federations that are defined, in file order.
        defined: Vec<String>,
    },
    /// The user asked for a federation that no table defines.
    #[error(
        "federation `{name}` is not defined in pyproject.toml{}: use one of: {}",
        crate::suggest::did_you_mean(name, defined.iter().map(String::as_str)),
        names(defined)
    )]
    UnknownFederation {
        /// The name the user gave.
        name: String,
        /// The federations that are defined, in file order.
        defined: Vec<String>,
    },
    /// The user named no federation and the manifest sets no `default`.
    #[error(
        "no federation given and [tool.flwr.federations] sets no default: name one of: {}, or set default = \"<name>\"",
        names(defined)
    )]
    NoDefaultFederation {
        /// The federations that are defined, in file order.
        defined: Vec<String>,
    },
}

impl AppManifest {
    /// Parses and validates the text of `pyproject.toml`; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<AppManifest, ManifestError> {
        let reader = Reader { path };
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ManifestError::Toml {
                path: path.to_owned(),
                message: one_line_toml_error(text, &e),
            })?;

        let project = reader.table_at(&doc, &["project"])?;
        let app = reader.table_at(&doc, &["tool", "flwr", "app"])?;
        let components = reader.table_at(&doc, &["tool", "flwr", "app", "components"])?;
        let component_fix = |key: &str, module: &str| {
            format!("add {key} = \"<module>:<object>\", e.g. {key} = \"myapp.{module}:app\"")
        };
        let config = match reader.table_at(&doc, &["tool", "flwr", "app", "config"])? {
            Some(table) => reader.flatten("tool.flwr.app.config", table)?,
            None => UserConfig::new(),
        };
        let (default_federation, federations) =
            match reader.table_at(&doc, &["tool", "flwr", "federations"])? {
                Some(table) => reader.federations(table)?,
                None => (None, IndexMap::new()),
            };

        Ok(AppManifest {
            name: reader.required_str(project, "project", "name", "add name = \"<app name>\"")?,
            version: reader.optional_str(project, "project", "version")?,
            publisher: reader.optional_str(app, "tool.flwr.app", "publisher")?,
            serverapp: reader.required_str(
                components,
                "tool.flwr.app.components",
                "serverapp",
                &component_fix("serverapp", "server_app"),
            )?,
            clientapp: reader.required_str(
                components,
                "tool.flwr.app.components",
                "clientapp",
                &component_fix("clientapp", "client_app"),
            )?,
            config,
            default_federation,
            federations,
        })
    }

    /// The federation named on the command line, or the manifest's default when none is.
    pub fn federation(&self, name: Option<&str>) -> Result<&Federation, ManifestError> {
        let defined = || self.federations.keys().cloned().collect();
        let name = match name.or(self.default_federation.as_deref()) {
            Some(name) => name,
            None => return Err(ManifestError::NoDefaultFederation { defined: defined() }),
        };
        self.federations
            .get(name)
            .ok_or_else(|| ManifestError::UnknownFederation {
                name: name.to_owned(),
                defined: defined(),
            })
    }
}

impl Federation {
    /// A federation without an `address` runs as a simulation inside the `flwr` process.
    pub fn is_local_simulation(&self) -> bool {
        self.address.is_none()
    }
}

/// Reads typed values out of the parsed document, building errors that name the file.
struct Reader<'a> {
    path: &'a Path,
}

type Result<T, E = ManifestError> = std::result::Result<T, E>;

impl Reader<'_> {
    /// The table at `keys` below `doc`, or `None` when any part of the path is absent.
    fn table_at<'t>(&self, doc: &'t toml::Table, keys: &[&str]) -> Result<Option<&'t toml::Table>> {
        let mut table = doc;
        for (depth, key) in keys.iter().enumerate() {
            match table.get(*key) {
                None => return Ok(None),
                Some(toml::Value::Table(inner)) => table = inner,
                Some(other) => {
                    let parent = match depth {
                        0 => "the top level".to_owned(),
                        _ => keys[..depth].join("."),
                    };
                    return Err(self.wrong_type(&parent, key, "a table", other.type_str()));
                }
            }
        }
        Ok(Some(table))
    }

    fn optional_str(
        &self,
        table: Option<&toml::Table>,
        name: &str,
        key: &str,
    ) -> Result<Option<String>> {
        match table.and_then(|t| t.get(key)) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong_type(name, key, "a string", other.type_str())),
        }
    }

    fn required_str(
        &self,
        table: Option<&toml::Table>,
        name: &str,
        key: &str,
        fix: &str,
    ) -> Result<String> {
        self.optional_str(table, name, key)?
            .ok_or_else(|| ManifestError::Missing {
                path: self.path.to_owned(),
                table: name.to_owned(),
                key: key.to_owned(),
                fix: fix.to_owned(),
            })
    }

    /// Flattens nested tables into dotted keys (`a.b = 1` and `[x.a] b = 1` both give `a.b`),
    /// which is how Flower stores run config and how users write federation options.
    fn flatten(&self, name: &str, table: &toml::Table) -> Result<UserConfig> {
        let mut out = UserConfig::new();
        self.flatten_into(name, "", table, &mut out)?;
        Ok(out)
    }

    fn flatten_into(
        &self,
        name: &str,
        prefix: &str,
        table: &toml::Table,
        out: &mut UserConfig,
    ) -> Result<()> {
        for (key, value) in table {
            let key = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let toml::Value::Table(inner) = value {
                self.flatten_into(name, &key, inner, out)?;
                continue;
            }
            let Some(value) = scalar(value) else {
                return Err(self.wrong_type(
                    name,
                    &key,
                    "a bool, int, float or string",
                    value.type_str(),
                ));
            };
            if out.insert(key.clone(), value).is_some() {
                return Err(ManifestError::DuplicateKey {
                    path: self.path.to_owned(),
                    table: name.to_owned(),
                    key,
                });
            }
        }
        Ok(())
    }

    fn federations(
        &self,
        table: &toml::Table,
    ) -> Result<(Option<String>, IndexMap<String, Federation>)> {
        let mut default = None;
        let mut federations = IndexMap::new();
        for (name, value) in table {
            match (name.as_str(), value) {
                ("default", toml::Value::String(s)) => default = Some(s.clone()),
                ("default", other) => {
                    return Err(self.wrong_type(
                        "tool.flwr.federations",
                        name,
                        "a string",
                        other.type_str(),
                    ));
                }
                (_, toml::Value::Table(t)) => {
                    federations.insert(name.clone(), self.federation(name, t)?);
                }
                (_, other) => {
                    return Err(self.wrong_type(
                        "tool.flwr.federations",
                        name,
                        "a table ([tool.flwr.federations.<name>])",
                        other.type_str(),
                    ));
                }
            }
        }
        if let Some(default) = &default
            && !federations.contains_key(default)
        {
            return Err(ManifestError::UndefinedDefault {
                path: self.path.to_owned(),
                default: default.clone(),
                defined: federations.keys().cloned().collect(),
            });
        }
        Ok((default, federations))
    }

    fn federation(&self, name: &str, table: &toml::Table) -> Result<Federation> {
        let table_name = format!("tool.flwr.federations.{name}");
        let invalid = |key: &str, problem: String, fix: &str| ManifestError::InvalidFederation {
            path: self.path.to_owned(),
            federation: name.to_owned(),
            key: key.to_owned(),
            problem,
            fix: fix.to_owned(),
        };
        let option_error = |e: OptionError| match e {
            OptionError::WrongType {
                key,
                expected,
                found,
            } => self.wrong_type(&table_name, &key, expected, found),
            OptionError::Invalid { key, problem, fix } => invalid(&key, problem, &fix),
        };
        let mut federation = Federation {
            name: name.to_owned(),
            address: None,
            insecure: None,
            root_certificates: None,
            enable_user_auth: false,
            transport: None,
            options: FederationOptions::default(),
        };
        for (key, value) in self.flatten(&table_name, table)? {
            let wrong = |expected| self.wrong_type(&table_name, &key, expected, value.type_name());
            match (key.as_str(), &value) {
                ("address", UserConfigValue::Str(s)) => federation.address = Some(s.clone()),
                ("insecure", UserConfigValue::Bool(b)) => federation.insecure = Some(*b),
                ("root-certificates", UserConfigValue::Str(s)) => {
                    federation.root_certificates = Some(s.clone());
                }
                ("enable-user-auth", UserConfigValue::Bool(b)) => federation.enable_user_auth = *b,
                ("transport", UserConfigValue::Str(s)) if s == "grpc" || s == "quic" => {
                    federation.transport = Some(s.clone());
                }
                ("transport", UserConfigValue::Str(s)) => {
                    return Err(invalid(
                        &key,
                        format!("must be \"grpc\" or \"quic\" (got \"{s}\")"),
                        "set transport = \"grpc\" or transport = \"quic\"",
                    ));
                }
                (option, _) if option.starts_with("options.") => {
                    federation
                        .options
                        .set(option, &value)
                        .map_err(option_error)?;
                }
                ("address" | "root-certificates" | "transport", _) => {
                    return Err(wrong("a string"));
                }
                ("insecure" | "enable-user-auth", _) => return Err(wrong("a bool")),
                _ => {
                    return Err(invalid(
                        &key,
                        "is not a federation setting".to_owned(),
                        "use address, insecure, root-certificates, enable-user-auth, transport or options.*",
                    ));
                }
            }
        }
        if federation.is_local_simulation() && federation.options.num_supernodes.is_none() {
            return Err(invalid(
                "options.num-supernodes",
                "is required for a local simulation (a federation without `address`)".to_owned(),
                "set options.num-supernodes = 10, or set address = \"<host>:9093\" to use a SuperLink",
            ));
        }
        federation.options.check().map_err(option_error)?;
        if federation.insecure == Some(true) && federation.root_certificates.is_some() {
            return Err(invalid(
                "root-certificates",
                "is set although insecure = true".to_owned(),
                "remove root-certificates for a plain-text connection, or set insecure = false",
            ));
        }
        Ok(federation)
    }

    fn wrong_type(
        &self,
        table: &str,
        key: &str,
        expected: &'static str,
        found: &'static str,
    ) -> ManifestError {
        ManifestError::WrongType {
            path: self.path.to_owned(),
            table: table.to_owned(),
            key: key.to_owned(),
            expected,
            found,
        }
    }
}

/// Renders federation names for an error message.
fn names(defined: &[String]) -> String {
    if defined.is_empty() {
        return "none defined (add a [tool.flwr.federations.<name>] table)".to_owned();
    }
    defined.join(", ")
}

/// toml's own message spans several lines with a source excerpt; users get one line:
/// where it is and what is wrong.
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim().trim_end_matches('.');
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {what}")
        }
        None => what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation_options::{ChaosOptions, ClientResources};
    use UserConfigValue::{Float, Int, Str};

    /// The seed tutorial's app manifest, with its federations in one file.
    const TUTORIAL: &str = r#"
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "awesomeapp"
version = "1.0.0"
dependencies = ["flwr[simulation]>=1.18.0", "torch==2.5.1"]

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "flwrlabs"

[tool.flwr.app.components]
serverapp = "awesomeapp.server_app:app"
clientapp = "awesomeapp.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 3
fraction-fit = 0.5
model = "cnn"

[tool.flwr.federations]
default = "local-simulation"

[tool.flwr.federations.local-simulation]
options.num-supernodes = 10

[tool.flwr.federations.simulation-xl]
options.num-supernodes = 200
options.backend.client-resources.num-cpus = 1 # each ClientApp assumes to use 1 CPU

[tool.flwr.federations.pyconde]
address = "127.0.0.1:9093"
insecure = false
root-certificates = "certificates/ca.crt"
enable-user-auth = true
transport = "quic"
"#;

    fn parse(text: &str) -> Result<AppManifest> {
        AppManifest::parse(text, Path::new("app/pyproject.toml"))
    }

    /// The tutorial manifest with its federation tables replaced by `federations`.
    fn with_federations(federations: &str) -> String {
        let head = TUTORIAL
            .split("[tool.flwr.federations]")
            .next()
            .unwrap_or_default();
        format!("{head}{federations}")
    }

    #[test]
    fn the_tutorial_manifest_parses() {
        let m = parse(TUTORIAL).unwrap();
        assert_eq!(m.name, "awesomeapp");
        assert_eq!(m.version.as_deref(), Some("1.0.0"));
        assert_eq!(m.publisher.as_deref(), Some("flwrlabs"));
        assert_eq!(m.serverapp, "awesomeapp.server_app:app");
        assert_eq!(m.clientapp, "awesomeapp.client_app:app");
        let config: Vec<_> = m
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        assert_eq!(
            config,
            [
                ("num-server-rounds", Int(3)),
                ("fraction-fit", Float(0.5)),
                ("model", Str("cnn".into()))
            ]
        );
        let names: Vec<_> = m.federations.keys().map(String::as_str).collect();
        assert_eq!(names, ["local-simulation", "simulation-xl", "pyconde"]);

        let xl = m.federation(Some("simulation-xl")).unwrap();
        assert!(xl.is_local_simulation());
        assert_eq!(xl.options.num_supernodes, Some(200));
        assert_eq!(
            xl.options.client_resources,
            ClientResources {
                num_cpus: 1.0,
                num_gpus: 0.0
            }
        );

        let remote = m.federation(Some("pyconde")).unwrap();
        assert!(!remote.is_local_simulation());
        assert_eq!(remote.address.as_deref(), Some("127.0.0.1:9093"));
        assert_eq!(remote.insecure, Some(false));
        assert_eq!(
            remote.root_certificates.as_deref(),
            Some("certificates/ca.crt")
        );
        assert!(remote.enable_user_auth);
        assert_eq!(remote.transport.as_deref(), Some("quic"));
        assert_eq!(remote.options.num_supernodes, None);
    }

    #[test]
    fn no_federation_name_picks_the_default() {
        let m = parse(TUTORIAL).unwrap();
        let federation = m.federation(None).unwrap();
        assert_eq!(federation.name, "local-simulation");
        assert_eq!(federation.options.num_supernodes, Some(10));
    }

    #[test]
    fn an_unknown_federation_lists_the_defined_ones() {
        let m = parse(TUTORIAL).unwrap();
        let err = m.federation(Some("simulation-xxl")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "federation `simulation-xxl` is not defined in pyproject.toml \
             (did you mean `simulation-xl`?): use one of: local-simulation, simulation-xl, pyconde"
        );
    }

    #[test]
    fn without_a_default_a_name_is_required() {
        let m = parse(&with_federations(
            "[tool.flwr.federations.a]\noptions.num-supernodes = 2\n",
        ))
        .unwrap();
        assert_eq!(m.federation(Some("a")).unwrap().name, "a");
        assert_eq!(
            m.federation(None),
            Err(ManifestError::NoDefaultFederation {
                defined: vec!["a".into()]
            })
        );
    }

    #[test]
    fn zero_supernodes_is_rejected_with_the_fix() {
        let err = parse(&with_federations(
            "[tool.flwr.federations.local-simulation]\noptions.num-supernodes = 0\n",
        ))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "app/pyproject.toml: `options.num-supernodes` in federation `local-simulation` \
             must be at least 1 (got 0): set options.num-supernodes = 10"
        );
    }

    #[test]
    fn malformed_toml_reports_the_line() {
        let err = parse("[project]\nname = \"x\"\nversion = 1.0.0\n").unwrap_err();
        let ManifestError::Toml { message, .. } = &err else {
            panic!("expected a TOML error, got {err:?}");
        };
        assert!(message.contains("line 3"), "{message}");
        assert!(
            err.to_string()
                .starts_with("app/pyproject.toml: invalid TOML")
        );
    }

    #[test]
    fn missing_components_are_named() {
        let text = TUTORIAL.replace("serverapp = \"awesomeapp.server_app:app\"\n", "");
        let err = parse(&text).unwrap_err();
        assert!(matches!(&err, ManifestError::Missing { key, .. } if key == "serverapp"));
        assert!(
            err.to_string().contains(
                "`serverapp` is missing from [tool.flwr.app.components]: add serverapp ="
            )
        );
        let err = parse("[project]\nname = \"x\"\n").unwrap_err();
        assert!(matches!(err, ManifestError::Missing { key, .. } if key == "serverapp"));
    }

    #[test]
    fn project_name_is_required() {
        let text = TUTORIAL.replace("name = \"awesomeapp\"\n", "");
        assert!(
            matches!(parse(&text), Err(ManifestError::Missing { key, table, .. })
                if key == "name" && table == "project")
        );
    }

    #[test]
    fn nested_run_config_is_flattened_to_dotted_keys() {
        let text = TUTORIAL.replace(
            "model = \"cnn\"\n",
            "optim.lr = 0.1\n[tool.flwr.app.config.data]\nname = \"mnist\"\n",
        );
        let m = parse(&text).unwrap();
        assert_eq!(m.config["optim.lr"], Float(0.1));
        assert_eq!(m.config["data.name"], Str("mnist".into()));
        let text = TUTORIAL.replace("model = \"cnn\"\n", "a.b = 1\n\"a.b\" = 2\n");
        assert!(
            matches!(parse(&text), Err(ManifestError::DuplicateKey { key, .. }) if key == "a.b")
        );
    }

    #[test]
    fn arrays_in_run_config_are_rejected_by_key() {
        let text = TUTORIAL.replace("model = \"cnn\"", "layers = [64, 32]");
        let err = parse(&text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "app/pyproject.toml: `layers` in [tool.flwr.app.config] must be a bool, int, float \
             or string, not array"
        );
    }

    #[test]
    fn options_may_be_written_as_tables_or_quoted_keys() {
        let m = parse(&with_federations(
            r#"
[tool.flwr.federations.tables.options]
num-supernodes = 5
[tool.flwr.federations.tables.options.backend.client-resources]
num-cpus = 0.5
num-gpus = 0.25
[tool.flwr.federations.quoted]
"options.num-supernodes" = 3
options.backend."init-args.logging-level" = "info"
"#,
        ))
        .unwrap();
        let tables = m.federation(Some("tables")).unwrap();
        assert_eq!(tables.options.num_supernodes, Some(5));
        assert_eq!(
            tables.options.client_resources,
            ClientResources {
                num_cpus: 0.5,
                num_gpus: 0.25
            }
        );
        let quoted = m.federation(Some("quoted")).unwrap();
        assert_eq!(quoted.options.num_supernodes, Some(3));
        assert_eq!(
            quoted.options.extra["backend.init-args.logging-level"],
            Str("info".into())
        );
    }

    #[test]
    fn a_default_naming_no_federation_is_rejected() {
        let err = parse(&with_federations(
            "[tool.flwr.federations]\ndefault = \"local\"\n[tool.flwr.federations.local-simulation]\noptions.num-supernodes = 2\n",
        ))
        .unwrap_err();
        assert!(err.to_string().ends_with(
            "default = \"local\" names no federation: add [tool.flwr.federations.local] \
             or set default to one of: local-simulation"
        ));
    }

    #[test]
    fn a_local_simulation_needs_num_supernodes() {
        let err = parse(&with_federations(
            "[tool.flwr.federations.sim]\noptions.backend.client-resources.num-cpus = 2\n",
        ))
        .unwrap_err();
        assert!(
            matches!(&err, ManifestError::InvalidFederation { key, federation, .. }
                if key == "options.num-supernodes" && federation == "sim")
        );
        assert!(err.to_string().contains("set options.num-supernodes = 10"));
    }

    /// Parses one federation table named `f` and returns the error it yields.
    fn federation_error(body: &str) -> ManifestError {
        match parse(&with_federations(&format!(
            "[tool.flwr.federations.f]\n{body}"
        ))) {
            Ok(m) => panic!("expected an error, got {m:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn bad_federation_values_name_key_and_fix() {
        let cases = [
            (
                "options.num-supernodes = -2",
                "options.num-supernodes",
                "must be at least 1 (got -2)",
            ),
            (
                "options.num-supernodes = 2\noptions.backend.client-resources.num-cpus = 0",
                "options.backend.client-resources.num-cpus",
                "must be greater than 0 (got 0)",
            ),
            (
                "options.num-supernodes = 2\noptions.backend.client-resources.num-cpus = -1.5",
                "options.backend.client-resources.num-cpus",
                "must be greater than 0 (got -1.5)",
            ),
            (
                "options.num-supernodes = 2\noptions.backend.client-resources.num-gpus = -1",
                "options.backend.client-resources.num-gpus",
                "must be 0 or more (got -1)",
            ),
            (
                "address = \"h:9093\"\ntransport = \"tcp\"",
                "transport",
                "must be \"grpc\" or \"quic\" (got \"tcp\")",
            ),
            (
                "address = \"h:9093\"\ninsecure = true\nroot-certificates = \"ca.crt\"",
                "root-certificates",
                "is set although insecure = true",
            ),
            (
                "adress = \"h:9093\"",
                "adress",
                "is not a federation setting",
            ),
        ];
        for (body, key, problem) in cases {
            let err = federation_error(body);
            assert!(
                matches!(&err, ManifestError::InvalidFederation { key: k, problem: p, .. }
                    if k == key && p == problem),
                "{body}: {err:?}"
            );
        }
    }

    #[test]
    fn wrongly_typed_federation_values_are_rejected() {
        let err = federation_error("options.num-supernodes = 2.5");
        assert_eq!(
            err.to_string(),
            "app/pyproject.toml: `options.num-supernodes` in [tool.flwr.federations.f] must be an int, not float"
        );
        let err = federation_error("address = \"h:9093\"\ninsecure = \"yes\"");
        assert!(
            matches!(err, ManifestError::WrongType { key, expected: "a bool", .. } if key == "insecure")
        );
    }

    #[test]
    fn chaos_options_are_typed_and_default_to_off() {
        let m = parse(&with_federations(
            r#"
[tool.flwr.federations.calm]
options.num-supernodes = 10
[tool.flwr.federations.stormy]
options.num-supernodes = 10
options.chaos.dropout-rate = 0.3
options.chaos.straggler-rate = 0.1
options.chaos.latency-ms = 20
options.chaos.latency-jitter-ms = 2.5
options.chaos.seed = 7
[tool.flwr.federations.seeded.options]
num-supernodes = 2
chaos.seed = 3
"#,
        ))
        .unwrap();
        let calm = &m.federation(Some("calm")).unwrap().options.chaos;
        assert_eq!(calm, &ChaosOptions::default());
        assert!(calm.is_off());
        let stormy = &m.federation(Some("stormy")).unwrap().options;
        assert_eq!(
            stormy.chaos,
            ChaosOptions {
                dropout_rate: 0.3,
                straggler_rate: 0.1,
                latency: std::time::Duration::from_millis(20),
                latency_jitter: std::time::Duration::from_micros(2500),
                seed: 7,
                ..ChaosOptions::default()
            }
        );
        assert!(!stormy.chaos.is_off());
        assert!(
            stormy.extra.is_empty(),
            "chaos keys are not passed on as extras"
        );
        // A seed alone injects nothing; it must not leave the fast path.
        let seeded = &m.federation(Some("seeded")).unwrap().options.chaos;
        assert_eq!(seeded.seed, 3);
        assert!(seeded.is_off());
    }

    #[test]
    fn bad_chaos_options_name_the_key_and_the_fix() {
        let sim = "options.num-supernodes = 10\n";
        let cases = [
            (
                "options.chaos.dropout-rate = 1.5",
                "options.chaos.dropout-rate",
                "must be a fraction between 0 and 1 (got 1.5)",
                "set options.chaos.dropout-rate = 0.3",
            ),
            (
                "options.chaos.straggler-rate = -0.1",
                "options.chaos.straggler-rate",
                "must be a fraction between 0 and 1 (got -0.1)",
                "set options.chaos.straggler-rate = 0.3",
            ),
            (
                "options.chaos.dropout-rate = nan",
                "options.chaos.dropout-rate",
                "must be a fraction between 0 and 1 (got NaN)",
                "0.3",
            ),
            (
                "options.chaos.dropout-rate = 0.6\noptions.chaos.straggler-rate = 0.5",
                "options.chaos.straggler-rate",
                "plus options.chaos.dropout-rate is more than 1 (0.5 + 0.6)",
                "at most 1",
            ),
            (
                "options.chaos.latency-ms = -5",
                "options.chaos.latency-ms",
                "must be 0 or more milliseconds (got -5)",
                "set options.chaos.latency-ms = 50",
            ),
            (
                "options.chaos.seed = -1",
                "options.chaos.seed",
                "must be 0 or more (got -1)",
                "set options.chaos.seed = 42",
            ),
            (
                "options.chaos.drop-rate = 0.3",
                "options.chaos.drop-rate",
                "is not a chaos option",
                "use one of: options.chaos.dropout-rate, options.chaos.straggler-rate, \
                 options.chaos.latency-ms, options.chaos.latency-jitter-ms, options.chaos.seed",
            ),
        ];
        for (body, key, problem, fix) in cases {
            let err = federation_error(&format!("{sim}{body}"));
            assert!(
                matches!(&err, ManifestError::InvalidFederation { key: k, problem: p, fix: f, .. }
                    if k == key && p == problem && f.contains(fix)),
                "{body}: {err:?}"
            );
        }
    }

    #[test]
    fn chaos_options_travel_to_a_superlink_and_wrong_types_are_named() {
        // A `--simulation` SuperLink injects them (they go in StartRun's federation_options).
        let m = parse(&with_federations(
            "[tool.flwr.federations.remote]\naddress = \"h:9093\"\noptions.num-supernodes = 10\noptions.chaos.dropout-rate = 0.3\n",
        ))
        .unwrap();
        let remote = m.federation(Some("remote")).unwrap();
        assert_eq!(remote.options.chaos.dropout_rate, 0.3);
        let err = federation_error("options.num-supernodes = 2\noptions.chaos.seed = 1.5");
        assert!(
            matches!(&err, ManifestError::WrongType { key, expected: "an int", .. }
                if key == "options.chaos.seed"),
            "{err:?}"
        );
        let err =
            federation_error("options.num-supernodes = 2\noptions.chaos.dropout-rate = \"high\"");
        assert!(
            matches!(&err, ManifestError::WrongType { key, expected: "an int or float", .. }
                if key == "options.chaos.dropout-rate"),
            "{err:?}"
        );
    }
}
