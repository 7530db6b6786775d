//! User configuration values: the typed scalars of `[tool.flwr.app.config]`, `--run-config`
//! overrides and `--node-config`, as Flower's `UserConfig` (bool, int, float, string).

use crate::hashing::{FastIndexMap, FastState};
use indexmap::IndexMap;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

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
///
/// It reads and writes as the `IndexMap` it derefs to, but a clone shares the map until one
/// side changes it (copy on write): every ClientApp call of a simulation gets the run's
/// config in its `Context`, and a million calls must not copy a million maps of strings.
#[derive(Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct UserConfig(Arc<FastIndexMap<String, UserConfigValue>>);

impl UserConfig {
    /// An empty config.
    pub fn new() -> UserConfig {
        UserConfig::default()
    }

    /// An empty config with room for `n` keys.
    pub fn with_capacity(n: usize) -> UserConfig {
        UserConfig(Arc::new(FastIndexMap::with_capacity_and_hasher(
            n,
            FastState::default(),
        )))
    }
}

impl Deref for UserConfig {
    type Target = FastIndexMap<String, UserConfigValue>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for UserConfig {
    /// Copies the map first when another clone still shares it.
    fn deref_mut(&mut self) -> &mut Self::Target {
        Arc::make_mut(&mut self.0)
    }
}

impl fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<IndexMap<String, UserConfigValue>> for UserConfig {
    fn from(map: IndexMap<String, UserConfigValue>) -> UserConfig {
        map.into_iter().collect()
    }
}

impl FromIterator<(String, UserConfigValue)> for UserConfig {
    fn from_iter<I: IntoIterator<Item = (String, UserConfigValue)>>(iter: I) -> UserConfig {
        UserConfig(Arc::new(iter.into_iter().collect()))
    }
}

impl Extend<(String, UserConfigValue)> for UserConfig {
    fn extend<I: IntoIterator<Item = (String, UserConfigValue)>>(&mut self, iter: I) {
        Arc::make_mut(&mut self.0).extend(iter);
    }
}

impl IntoIterator for UserConfig {
    type Item = (String, UserConfigValue);
    type IntoIter = indexmap::map::IntoIter<String, UserConfigValue>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}

impl<'a> IntoIterator for &'a UserConfig {
    type Item = (&'a String, &'a UserConfigValue);
    type IntoIter = indexmap::map::Iter<'a, String, UserConfigValue>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> UserConfig {
        [
            ("lr".to_string(), UserConfigValue::Float(0.1)),
            ("num-server-rounds".to_string(), UserConfigValue::Int(3)),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn a_clone_shares_the_map_until_one_side_changes_it() {
        let original = config();
        let mut copy = original.clone();
        assert!(std::ptr::eq(&*original, &*copy), "a clone copies nothing");
        copy.insert("lr".into(), UserConfigValue::Float(0.5));
        assert_eq!(original.get("lr"), Some(&UserConfigValue::Float(0.1)));
        assert_eq!(copy.get("lr"), Some(&UserConfigValue::Float(0.5)));
        assert_eq!(copy.keys().collect::<Vec<_>>(), ["lr", "num-server-rounds"]);
    }

    #[test]
    fn it_serialises_as_the_plain_map_in_order() {
        let text = toml::to_string(&config()).unwrap();
        assert_eq!(text, toml::to_string(&*config()).unwrap());
        assert!(text.find("lr").unwrap() < text.find("num-server-rounds").unwrap());
        let back: UserConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, config());
        assert_eq!(format!("{:?}", config()), format!("{:?}", *config()));
    }
}
