//! Daemon settings in layers, through the `config` crate: built-in defaults < the TOML file
//! of `--config` < `FLWR_*` environment variables < command-line flags.
//!
//! Keys are the flags' names (`fleet-api-address = "0.0.0.0:9092"` in the file,
//! `FLWR_FLEET_API_ADDRESS` in the environment). Only `FLWR_*` variables that name a known
//! key are read, so unrelated ones (`FLWR_TELEMETRY_ENABLED`) pass by; an unknown key in the
//! file is an error, because a misspelt setting that is silently ignored costs an evening.

use crate::UserError;
use config::{Config, FileFormat, Map, Source, Value, ValueKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Merges the layers and deserializes the result. `defaults` and `flags` are serialized to
/// find their keys; `flags` should skip the flags that were not given.
pub fn layered<T: DeserializeOwned>(
    defaults: &impl Serialize,
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    flags: &impl Serialize,
) -> Result<T, UserError> {
    let defaults = Config::try_from(defaults).map_err(internal)?;
    let keys: Vec<String> = defaults.collect().map_err(internal)?.into_keys().collect();
    let mut builder = Config::builder().add_source(defaults);
    if let Some(path) = file {
        if !path.is_file() {
            return Err(UserError::new(format!(
                "--config {}: no such file: pass the path of a TOML file",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(FileFormat::Toml));
    }
    let flags = Config::try_from(flags).map_err(internal)?;
    let merged = builder
        .add_source(FlwrEnv::read(&keys, env))
        .add_source(flags)
        .build()
        .map_err(|e| setting_error(e, file))?;
    merged.try_deserialize().map_err(|e| setting_error(e, file))
}

/// The environment variable that sets `key`: `fleet-api-address` -> `FLWR_FLEET_API_ADDRESS`.
pub fn env_var(key: &str) -> String {
    format!("FLWR_{}", key.to_ascii_uppercase().replace('-', "_"))
}

/// `FLWR_*` variables that name a known key, as a `config` source.
#[derive(Debug, Clone)]
struct FlwrEnv {
    /// (key, variable name, value)
    values: Vec<(String, String, String)>,
}

impl FlwrEnv {
    fn read(keys: &[String], env: impl IntoIterator<Item = (String, String)>) -> FlwrEnv {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let values = keys
            .iter()
            .filter_map(|key| {
                let name = env_var(key);
                env.iter()
                    .find(|(var, _)| *var == name)
                    .map(|(_, value)| (key.clone(), name, value.clone()))
            })
            .collect();
        FlwrEnv { values }
    }
}

impl Source for FlwrEnv {
    fn clone_into_box(&self) -> Box<dyn Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self
            .values
            .iter()
            .map(|(key, var, value)| {
                let origin = format!("environment variable {var}");
                (
                    key.clone(),
                    Value::new(Some(&origin), ValueKind::String(value.clone())),
                )
            })
            .collect())
    }
}

/// A `config` error as one line: TOML's caret diagram is dropped, and a problem in the file
/// names the file as given (`config` writes it relative to the working directory).
fn setting_error(e: config::ConfigError, file: Option<&Path>) -> UserError {
    let text = e.to_string();
    let mut msg = text
        .lines()
        .filter(|line| !line.contains('|'))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    if msg.contains("environment variable") {
        return UserError::new(msg);
    }
    if let Some(path) = file {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let (Some(at), Some(name)) = (msg.rfind(" in "), name)
            && msg.ends_with(&name)
        {
            msg.truncate(at);
            msg.truncate(msg.trim_end_matches([':', ' ']).len());
        }
        msg = format!("--config {}: {msg}", path.display());
    }
    UserError::new(msg)
}

/// Serializing our own settings types cannot fail; if it ever does, say so plainly.
fn internal(e: config::ConfigError) -> UserError {
    UserError::new(format!("internal error while reading settings: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::io::Write as _;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "kebab-case", deny_unknown_fields)]
    struct Settings {
        address: String,
        retries: Option<u32>,
        insecure: bool,
    }

    #[derive(Serialize, Default)]
    #[serde(rename_all = "kebab-case")]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        address: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retries: Option<u32>,
    }

    fn defaults() -> Settings {
        Settings {
            address: "default".into(),
            retries: None,
            insecure: false,
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_when_nothing_is_given() {
        let s: Settings = layered(&defaults(), None, env(&[]), &Flags::default()).unwrap();
        assert_eq!(s, defaults());
    }

    #[test]
    fn file_beats_defaults_env_beats_file_flags_beat_env() {
        let f = file("address = \"file\"\nretries = 1\ninsecure = true\n");
        let s: Settings =
            layered(&defaults(), Some(f.path()), env(&[]), &Flags::default()).unwrap();
        assert_eq!(
            (s.address.as_str(), s.retries, s.insecure),
            ("file", Some(1), true)
        );

        let vars = env(&[("FLWR_ADDRESS", "env"), ("FLWR_RETRIES", "2")]);
        let s: Settings =
            layered(&defaults(), Some(f.path()), vars.clone(), &Flags::default()).unwrap();
        assert_eq!((s.address.as_str(), s.retries), ("env", Some(2)));

        let flags = Flags {
            address: Some("flag".into()),
            retries: None,
        };
        let s: Settings = layered(&defaults(), Some(f.path()), vars, &flags).unwrap();
        assert_eq!((s.address.as_str(), s.retries), ("flag", Some(2)));
    }

    #[test]
    fn unrelated_flwr_variables_are_ignored() {
        let vars = env(&[("FLWR_TELEMETRY_ENABLED", "0"), ("FLWR_INSECURE", "true")]);
        let s: Settings = layered(&defaults(), None, vars, &Flags::default()).unwrap();
        assert!(s.insecure);
    }

    #[test]
    fn bad_values_and_unknown_keys_name_the_problem() {
        let vars = env(&[("FLWR_RETRIES", "many")]);
        let e = layered::<Settings>(&defaults(), None, vars, &Flags::default()).unwrap_err();
        assert!(e.to_string().contains("FLWR_RETRIES"), "{e}");

        let f = file("adress = \"x\"\n");
        let e = layered::<Settings>(&defaults(), Some(f.path()), env(&[]), &Flags::default())
            .unwrap_err();
        assert!(e.to_string().contains("adress"), "{e}");

        let e = layered::<Settings>(
            &defaults(),
            Some(Path::new("/nonexistent/floret.toml")),
            env(&[]),
            &Flags::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no such file"), "{e}");
    }
}
