//! User configuration values: the typed scalars of `[tool.flwr.app.config]`, `--run-config`
//! overrides and `--node-config`, as Flower's `UserConfig` (bool, int, float, string).

use indexmap::IndexMap;
use std::fmt;

/// One run-config or node-config value. Integers and floats stay distinct so that an app
/// reading `num-server-rounds` gets an integer back, as the TOML said.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum UserConfigValue {
    /// A TOML boolean.
    Bool(bool),
    /// A TOML integer.
    Int(i64),
    /// A TOML float.
    Float(f64),
    /// A TOML string.
    Str(String),
}

/// An ordered map of config keys to values; order follows the manifest so listings are stable.
pub type UserConfig = IndexMap<String, UserConfigValue>;

impl UserConfigValue {
    /// The type's name as a user would write it in an error message.
    pub fn type_name(&self) -> &'static str {
        match self {
            UserConfigValue::Bool(_) => "bool",
            UserConfigValue::Int(_) => "int",
            UserConfigValue::Float(_) => "float",
            UserConfigValue::Str(_) => "string",
        }
    }
}

impl fmt::Display for UserConfigValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserConfigValue::Bool(v) => write!(f, "{v}"),
            UserConfigValue::Int(v) => write!(f, "{v}"),
            UserConfigValue::Float(v) => write!(f, "{v:?}"),
            UserConfigValue::Str(v) => write!(f, "{v:?}"),
        }
    }
}
