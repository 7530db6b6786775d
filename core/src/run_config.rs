//! `--run-config` and `--node-config` parsing, and applying run-config overrides to an app's
//! `[tool.flwr.app.config]` defaults.
//!
//! The syntax is Flower's: whitespace-separated `key=value` pairs whose values are TOML
//! values (`5`, `0.1`, `true`, `"a string"`, `'a string'`). Flower silently drops pairs it
//! cannot read and accepts unknown keys or wrongly typed values; Floret rejects them and says
//! what to write instead, because a silently ignored hyper-parameter wastes a whole run.

use crate::suggest::did_you_mean;
use crate::user_config::{UserConfig, UserConfigValue};
use thiserror::Error;

/// A `--run-config` / `--node-config` string or an override that does not fit the app.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    /// A word without `=`.
    #[error("`{word}` is not a key=value pair: write it as key=value, e.g. num-server-rounds=5")]
    NotAPair {
        /// The word as written.
        word: String,
    },
    /// A key with characters Flower's config keys do not allow, or an empty part.
    #[error(
        "`{key}` is not a valid config key: use letters, digits, `-` and `_`, with `.` between parts"
    )]
    InvalidKey {
        /// The key as written.
        key: String,
    },
    /// A quoted value whose quote is never closed.
    #[error(
        "the value of `{key}` opens a quote that is never closed: close it, e.g. {key}=\"a b\""
    )]
    UnclosedQuote {
        /// The key whose value it is.
        key: String,
    },
    /// A value that TOML cannot read, usually an unquoted string.
    #[error(
        "the value of `{key}` (`{value}`) is not a TOML value: quote strings, e.g. {key}=\"{value}\""
    )]
    NotAValue {
        /// The key whose value it is.
        key: String,
        /// The value as written.
        value: String,
    },
    /// A TOML value of a type config values cannot hold (an array, a table, a date).
    #[error(
        "the value of `{key}` is a {found}: config values must be a bool, int, float or string"
    )]
    UnsupportedValue {
        /// The key whose value it is.
        key: String,
        /// The TOML type found, e.g. "array".
        found: &'static str,
    },
    /// A key written twice in one string: which value was meant is a guess, so neither is
    /// taken. (Several `--run-config` flags are merged instead; see `parse_overrides_many`.)
    #[error(
        "config key `{key}` is given more than once in the same string: keep one of them (a later --run-config flag may override an earlier one)"
    )]
    DuplicateKey {
        /// The key given twice.
        key: String,
    },
    /// An override for a key the app's `[tool.flwr.app.config]` does not have.
    #[error(
        "unknown run-config key `{key}`{}: valid keys are {}",
        did_you_mean(key, valid.iter().map(String::as_str)),
        list(valid)
    )]
    UnknownKey {
        /// The key given.
        key: String,
        /// The app's keys, in manifest order.
        valid: Vec<String>,
    },
    /// An override whose type differs from the default's (other than int for float).
    #[error(
        "run-config key `{key}` has type {expected} in pyproject.toml but was given {value} (type {given}): pass a value of type {expected}"
    )]
    TypeMismatch {
        /// The key overridden.
        key: String,
        /// The default's type name.
        expected: &'static str,
        /// The override's type name.
        given: &'static str,
        /// The override, as it would be written.
        value: String,
    },
}

/// Parses one `--run-config` value, e.g. `num-server-rounds=5 fraction-fit=0.333`.
/// A key given twice in it is an error, as it is in TOML (and so in Flower).
pub fn parse_overrides(s: &str) -> Result<UserConfig, ConfigError> {
    let mut config = UserConfig::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        let (key, value, tail) = next_pair(rest)?;
        if config.contains_key(&key) {
            return Err(ConfigError::DuplicateKey { key });
        }
        config.insert(key, value);
        rest = tail.trim_start();
    }
    Ok(config)
}

/// Parses repeated `--run-config` flags; later flags override earlier ones, as Flower merges
/// them, so that a script can append an override to a fixed command line. Within one flag a
/// repeated key is still an error (`parse_overrides`).
pub fn parse_overrides_many(args: &[String]) -> Result<UserConfig, ConfigError> {
    let mut config = UserConfig::new();
    for arg in args {
        config.extend(parse_overrides(arg)?);
    }
    Ok(config)
}

/// Parses `--node-config 'partition-id=0 num-partitions=10'`. The syntax is the run-config
/// one; there are no defaults to check it against because each SuperNode defines its own.
pub fn parse_node_config(s: &str) -> Result<UserConfig, ConfigError> {
    parse_overrides(s)
}

/// Returns `defaults` with `overrides` applied, keeping the manifest's key order.
///
/// Every override must name a key of `defaults` and keep its type, so that a typo or a
/// `5.0` where the app reads an int fails before the run starts instead of inside it. The
/// one coercion is int -> float (`lr=1` where the default is `0.1`), which loses nothing.
pub fn apply_overrides(
    defaults: &UserConfig,
    overrides: &UserConfig,
) -> Result<UserConfig, ConfigError> {
    let mut config = defaults.clone();
    for (key, given) in overrides {
        let Some(slot) = config.get_mut(key) else {
            return Err(ConfigError::UnknownKey {
                key: key.clone(),
                valid: defaults.keys().cloned().collect(),
            });
        };
        *slot = match (&*slot, given) {
            (UserConfigValue::Float(_), UserConfigValue::Int(i)) => {
                UserConfigValue::Float(*i as f64)
            }
            (expected, given) if expected.type_name() == given.type_name() => given.clone(),
            (expected, given) => {
                return Err(ConfigError::TypeMismatch {
                    key: key.clone(),
                    expected: expected.type_name(),
                    given: given.type_name(),
                    value: given.to_string(),
                });
            }
        };
    }
    Ok(config)
}

/// Converts a TOML scalar into a config value; `None` for arrays, tables and datetimes,
/// which Flower's `UserConfig` cannot hold.
pub(crate) fn scalar(value: &toml::Value) -> Option<UserConfigValue> {
    match value {
        toml::Value::Boolean(b) => Some(UserConfigValue::Bool(*b)),
        toml::Value::Integer(i) => Some(UserConfigValue::Int(*i)),
        toml::Value::Float(f) => Some(UserConfigValue::Float(*f)),
        toml::Value::String(s) => Some(UserConfigValue::Str(s.clone())),
        toml::Value::Array(_) | toml::Value::Table(_) | toml::Value::Datetime(_) => None,
    }
}

/// Splits the first `key=value` pair off `s` (which starts at a non-space character) and
/// returns it parsed, with the unparsed rest.
fn next_pair(s: &str) -> Result<(String, UserConfigValue, &str), ConfigError> {
    let word_end = s.find(char::is_whitespace).unwrap_or(s.len());
    let Some(eq) = s[..word_end].find('=') else {
        return Err(ConfigError::NotAPair {
            word: s[..word_end].to_owned(),
        });
    };
    let key = &s[..eq];
    if !is_valid_key(key) {
        return Err(ConfigError::InvalidKey {
            key: key.to_owned(),
        });
    }
    let after = &s[eq + 1..];
    let value_len = match after.chars().next() {
        Some(quote @ ('"' | '\'')) => {
            quoted_len(after, quote).ok_or_else(|| ConfigError::UnclosedQuote {
                key: key.to_owned(),
            })?
        }
        _ => after.find(char::is_whitespace).unwrap_or(after.len()),
    };
    let (raw, tail) = after.split_at(value_len);
    if tail.starts_with(|c: char| !c.is_whitespace()) {
        // Text glued to a closing quote, e.g. `name="a"b`: report the whole word.
        let glued = tail.find(char::is_whitespace).unwrap_or(tail.len());
        return Err(ConfigError::NotAValue {
            key: key.to_owned(),
            value: after[..value_len + glued].to_owned(),
        });
    }
    let parsed: toml::Value = raw.parse().map_err(|_| ConfigError::NotAValue {
        key: key.to_owned(),
        value: raw.to_owned(),
    })?;
    let value = scalar(&parsed).ok_or_else(|| ConfigError::UnsupportedValue {
        key: key.to_owned(),
        found: parsed.type_str(),
    })?;
    Ok((key.to_owned(), value, tail))
}

/// Byte length of the quoted string at the start of `s`, closing quote included. Inside
/// double quotes a backslash escapes the next character, as in TOML basic strings.
fn quoted_len(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote == '"' => escaped = true,
            c if c == quote => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// A dotted key of TOML bare-key parts, the form `[tool.flwr.app.config]` keys take once
/// flattened.
fn is_valid_key(key: &str) -> bool {
    key.split('.').all(|part| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// Renders key names for an error message.
fn list(keys: &[String]) -> String {
    if keys.is_empty() {
        return "none (the app's pyproject.toml has no [tool.flwr.app.config] keys)".to_owned();
    }
    keys.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use UserConfigValue::{Bool, Float, Int, Str};
    use proptest::prelude::*;

    fn config(pairs: &[(&str, UserConfigValue)]) -> UserConfig {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn parses_the_tutorials_run_config() {
        let parsed = parse_overrides("num-server-rounds=5 fraction-fit=0.333").unwrap();
        assert_eq!(
            parsed,
            config(&[
                ("num-server-rounds", Int(5)),
                ("fraction-fit", Float(0.333))
            ])
        );
    }

    #[test]
    fn quoted_strings_may_hold_spaces_and_equals_signs() {
        let parsed = parse_overrides(
            r#"  model="resnet 18=big"   dir='C:\data x' esc="a \"b\"" flag=false "#,
        )
        .unwrap();
        assert_eq!(
            parsed,
            config(&[
                ("model", Str("resnet 18=big".into())),
                ("dir", Str(r"C:\data x".into())),
                ("esc", Str("a \"b\"".into())),
                ("flag", Bool(false)),
            ])
        );
    }

    #[test]
    fn dotted_keys_and_empty_input() {
        let parsed = parse_overrides("optim.lr=0.1 optim.name='sgd'").unwrap();
        assert_eq!(
            parsed,
            config(&[("optim.lr", Float(0.1)), ("optim.name", Str("sgd".into()))])
        );
        assert!(parse_overrides("   ").unwrap().is_empty());
    }

    #[test]
    fn unquoted_words_must_be_quoted() {
        let err = parse_overrides("model=resnet").unwrap_err();
        assert_eq!(
            err,
            ConfigError::NotAValue {
                key: "model".into(),
                value: "resnet".into()
            }
        );
        assert!(
            err.to_string()
                .contains(r#"quote strings, e.g. model="resnet""#)
        );
    }

    #[test]
    fn malformed_pairs_are_rejected() {
        assert!(matches!(
            parse_overrides("rounds=3 verbose"),
            Err(ConfigError::NotAPair { word }) if word == "verbose"
        ));
        assert!(matches!(
            parse_overrides("=3"),
            Err(ConfigError::InvalidKey { key }) if key.is_empty()
        ));
        assert!(matches!(
            parse_overrides("a..b=3"),
            Err(ConfigError::InvalidKey { .. })
        ));
        assert!(matches!(
            parse_overrides("name=\"open ended"),
            Err(ConfigError::UnclosedQuote { key }) if key == "name"
        ));
        assert!(matches!(
            parse_overrides("name=\"a\"b"),
            Err(ConfigError::NotAValue { value, .. }) if value == "\"a\"b"
        ));
        assert!(matches!(
            parse_overrides("layers=[1,2]"),
            Err(ConfigError::UnsupportedValue { found: "array", .. })
        ));
    }

    #[test]
    fn repeated_flags_merge_left_to_right() {
        let args = ["lr=0.1 rounds=3".to_owned(), "rounds=5".to_owned()];
        let parsed = parse_overrides_many(&args).unwrap();
        assert_eq!(parsed, config(&[("lr", Float(0.1)), ("rounds", Int(5))]));
    }

    #[test]
    fn a_key_repeated_within_one_string_is_an_error_naming_it() {
        for s in ["a=1 a=2", "a=1 b=2 a=1"] {
            let e = parse_overrides(s).unwrap_err();
            assert_eq!(e, ConfigError::DuplicateKey { key: "a".into() });
            assert!(e.to_string().contains("`a` is given more than once"), "{e}");
        }
        let args = ["lr=0.1".to_owned(), "rounds=3 rounds=5".to_owned()];
        assert_eq!(
            parse_overrides_many(&args),
            Err(ConfigError::DuplicateKey {
                key: "rounds".into()
            })
        );
        assert_eq!(
            parse_node_config("partition-id=0 partition-id=1"),
            Err(ConfigError::DuplicateKey {
                key: "partition-id".into()
            })
        );
    }

    #[test]
    fn node_config_uses_the_same_syntax() {
        let parsed = parse_node_config("partition-id=0 num-partitions=10").unwrap();
        assert_eq!(
            parsed,
            config(&[("partition-id", Int(0)), ("num-partitions", Int(10))])
        );
    }

    fn value_strategy() -> impl Strategy<Value = UserConfigValue> {
        prop_oneof![
            any::<bool>().prop_map(Bool),
            any::<i64>().prop_map(Int),
            (-1e12f64..1e12).prop_map(Float),
            any::<String>().prop_map(Str),
        ]
    }

    /// A TOML basic string, as a user would type it (toml's own writer may pick `"""`).
    fn basic_string(s: &str) -> String {
        let mut out = String::from('"');
        for c in s.chars() {
            match c {
                '"' | '\\' => out.extend(['\\', c]),
                c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    proptest! {
        /// Whatever a config holds, writing it as `k=<TOML value>` pairs reads back the same,
        /// so strings with spaces, `=`, quotes or backslashes survive the command line.
        #[test]
        fn rendered_pairs_parse_back(
            pairs in proptest::collection::vec(("[a-z0-9_-]{1,8}(\\.[a-z0-9_-]{1,8})?", value_strategy()), 0..8)
        ) {
            let expected: UserConfig = pairs.into_iter().collect();
            let rendered: Vec<String> = expected
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        Str(s) => basic_string(s),
                        other => other.to_string(),
                    };
                    format!("{k}={value}")
                })
                .collect();
            prop_assert_eq!(parse_overrides(&rendered.join(" \t ")).unwrap(), expected);
        }
    }

    fn defaults() -> UserConfig {
        config(&[
            ("num-server-rounds", Int(3)),
            ("fraction-fit", Float(0.5)),
            ("use-gpu", Bool(false)),
        ])
    }

    #[test]
    fn overrides_replace_defaults_and_keep_their_order() {
        let overrides = config(&[("use-gpu", Bool(true)), ("num-server-rounds", Int(7))]);
        let applied = apply_overrides(&defaults(), &overrides).unwrap();
        assert_eq!(
            applied,
            config(&[
                ("num-server-rounds", Int(7)),
                ("fraction-fit", Float(0.5)),
                ("use-gpu", Bool(true)),
            ])
        );
    }

    #[test]
    fn an_int_is_promoted_where_a_float_is_expected() {
        let applied = apply_overrides(&defaults(), &config(&[("fraction-fit", Int(1))])).unwrap();
        assert_eq!(applied["fraction-fit"], Float(1.0));
    }

    #[test]
    fn unknown_keys_list_the_valid_ones() {
        let err = apply_overrides(&defaults(), &config(&[("num-rounds", Int(5))])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown run-config key `num-rounds`: valid keys are num-server-rounds, fraction-fit, use-gpu"
        );
    }

    #[test]
    fn an_unknown_key_close_to_a_valid_one_says_which() {
        for (given, meant) in [
            ("fraction-fitt", "fraction-fit"),
            ("fraction-train", "fraction-fit"),
        ] {
            let err = apply_overrides(&defaults(), &config(&[(given, Float(0.3))])).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "unknown run-config key `{given}` (did you mean `{meant}`?): valid keys are num-server-rounds, fraction-fit, use-gpu"
                )
            );
        }
    }

    #[test]
    fn type_mismatches_name_key_expected_and_given_type() {
        let err = apply_overrides(&defaults(), &config(&[("num-server-rounds", Float(5.0))]))
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::TypeMismatch {
                key: "num-server-rounds".into(),
                expected: "int",
                given: "float",
                value: "5.0".into(),
            }
        );
        assert!(
            err.to_string()
                .starts_with("run-config key `num-server-rounds` has type int in pyproject.toml but was given 5.0 (type float)")
        );
        let err = apply_overrides(&defaults(), &config(&[("use-gpu", Str("yes".into()))]));
        assert!(matches!(
            err,
            Err(ConfigError::TypeMismatch {
                expected: "bool",
                given: "string",
                ..
            })
        ));
    }
}
