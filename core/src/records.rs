//! Records: the content of a message and of a node's persistent state.
//!
//! A `RecordDict` maps keys to one of three record kinds, as in Flower: `ArrayRecord`
//! (tensors), `MetricRecord` (numbers to aggregate) and `ConfigRecord` (settings). All keep
//! insertion order, so a model's layers stay in order on every hop. A `RecordDict` is an
//! `Arc` inside: cloning one to broadcast it to many nodes costs a reference count, and a
//! writer copies only when it actually changes a shared dict.

use crate::array::Array;
use crate::hashing::FastIndexMap;
use bytes::Bytes;
use std::sync::Arc;
use thiserror::Error;

/// A missing key or a value of another type than the reader asked for.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RecordError {
    /// No record of this kind under the key.
    #[error("no {kind} named {key:?} (present: {available})")]
    Missing {
        /// Which kind was asked for ("array", "metric", "config record", ...).
        kind: &'static str,
        /// The key that was asked for.
        key: String,
        /// The keys present, comma-separated (or "none"), so the error shows what to ask for
        /// instead.
        available: String,
    },
    /// The key holds a value or record of another type.
    #[error("{key:?} holds {found}, not {expected}")]
    WrongType {
        /// The key that was read.
        key: String,
        /// What the reader asked for, in words ("a number", "array record").
        expected: &'static str,
        /// What the key actually holds, as `type_name` / `kind` names it.
        found: &'static str,
    },
}

fn missing<'a>(
    kind: &'static str,
    key: &str,
    keys: impl Iterator<Item = &'a String>,
) -> RecordError {
    let names: Vec<&str> = keys.map(String::as_str).collect();
    RecordError::Missing {
        kind,
        key: key.to_string(),
        available: if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        },
    }
}

/// Ordered, named arrays: usually one model's parameters, layer by layer.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ArrayRecord(pub FastIndexMap<String, Array>);

impl ArrayRecord {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends (or replaces, keeping the position) an array.
    pub fn insert(&mut self, key: impl Into<String>, array: Array) {
        self.0.insert(key.into(), array);
    }

    /// The array under `key`, or an error listing the keys present.
    pub fn get(&self, key: &str) -> Result<&Array, RecordError> {
        self.0
            .get(key)
            .ok_or_else(|| missing("array", key, self.0.keys()))
    }

    /// Arrays in insertion order (layer order for a model).
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Array)> {
        self.0.iter()
    }

    /// Number of arrays.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the record holds no array.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Total payload bytes, for logs and transfer accounting.
    pub fn num_bytes(&self) -> usize {
        self.0.values().map(|a| a.data.len()).sum()
    }
}

impl FromIterator<(String, Array)> for ArrayRecord {
    fn from_iter<I: IntoIterator<Item = (String, Array)>>(iter: I) -> Self {
        ArrayRecord(iter.into_iter().collect())
    }
}

/// A metric value: numbers and lists of numbers, the types Flower aggregates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum MetricValue {
    /// A float (`double` on Flower's wire).
    F64(f64),
    /// A signed integer (`sint64` on Flower's wire).
    I64(i64),
    /// An unsigned integer (`uint64` on Flower's wire).
    U64(u64),
    /// A list of floats.
    F64List(Vec<f64>),
    /// A list of signed integers.
    I64List(Vec<i64>),
    /// A list of unsigned integers.
    U64List(Vec<u64>),
}

impl MetricValue {
    /// The type's name in words, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            MetricValue::F64(_) => "float",
            MetricValue::I64(_) => "int",
            MetricValue::U64(_) => "uint",
            MetricValue::F64List(_) => "list of float",
            MetricValue::I64List(_) => "list of int",
            MetricValue::U64List(_) => "list of uint",
        }
    }

    /// The value as a float, when it is a scalar.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetricValue::F64(v) => Some(v),
            MetricValue::I64(v) => Some(v as f64),
            MetricValue::U64(v) => Some(v as f64),
            _ => None,
        }
    }
}

impl From<f64> for MetricValue {
    fn from(v: f64) -> Self {
        MetricValue::F64(v)
    }
}
impl From<i64> for MetricValue {
    fn from(v: i64) -> Self {
        MetricValue::I64(v)
    }
}
impl From<u64> for MetricValue {
    fn from(v: u64) -> Self {
        MetricValue::U64(v)
    }
}

/// Ordered metrics, such as `train_loss` and `num-examples`.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct MetricRecord(pub FastIndexMap<String, MetricValue>);

impl MetricRecord {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends (or replaces, keeping the position) a metric.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<MetricValue>) {
        self.0.insert(key.into(), value.into());
    }

    /// The metric under `key`, or an error listing the keys present.
    pub fn get(&self, key: &str) -> Result<&MetricValue, RecordError> {
        self.0
            .get(key)
            .ok_or_else(|| missing("metric", key, self.0.keys()))
    }

    /// A scalar metric as a float (integers convert).
    pub fn get_f64(&self, key: &str) -> Result<f64, RecordError> {
        let v = self.get(key)?;
        // `ok_or_else`: the error's key string is made only for an error; the strategies
        // read a weight from every reply.
        v.as_f64().ok_or_else(|| RecordError::WrongType {
            key: key.to_string(),
            expected: "a number",
            found: v.type_name(),
        })
    }

    /// Metrics in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &MetricValue)> {
        self.0.iter()
    }

    /// Number of metrics.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the record holds no metric.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A config value: metric types plus booleans, strings and bytes, and lists of each.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ConfigValue {
    /// A float.
    F64(f64),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    Str(String),
    /// Raw bytes (shared, so cloning does not copy them).
    Bytes(Bytes),
    /// A list of floats.
    F64List(Vec<f64>),
    /// A list of signed integers.
    I64List(Vec<i64>),
    /// A list of unsigned integers.
    U64List(Vec<u64>),
    /// A list of booleans.
    BoolList(Vec<bool>),
    /// A list of strings.
    StrList(Vec<String>),
    /// A list of byte strings.
    BytesList(Vec<Bytes>),
}

impl ConfigValue {
    /// The type's name in words, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            ConfigValue::F64(_) => "float",
            ConfigValue::I64(_) => "int",
            ConfigValue::U64(_) => "uint",
            ConfigValue::Bool(_) => "bool",
            ConfigValue::Str(_) => "string",
            ConfigValue::Bytes(_) => "bytes",
            ConfigValue::F64List(_) => "list of float",
            ConfigValue::I64List(_) => "list of int",
            ConfigValue::U64List(_) => "list of uint",
            ConfigValue::BoolList(_) => "list of bool",
            ConfigValue::StrList(_) => "list of string",
            ConfigValue::BytesList(_) => "list of bytes",
        }
    }
}

impl From<f64> for ConfigValue {
    fn from(v: f64) -> Self {
        ConfigValue::F64(v)
    }
}
impl From<i64> for ConfigValue {
    fn from(v: i64) -> Self {
        ConfigValue::I64(v)
    }
}
impl From<bool> for ConfigValue {
    fn from(v: bool) -> Self {
        ConfigValue::Bool(v)
    }
}
impl From<&str> for ConfigValue {
    fn from(v: &str) -> Self {
        ConfigValue::Str(v.to_string())
    }
}
impl From<String> for ConfigValue {
    fn from(v: String) -> Self {
        ConfigValue::Str(v)
    }
}

/// Ordered settings sent with a message, such as the learning rate or the server round.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct ConfigRecord(pub FastIndexMap<String, ConfigValue>);

impl ConfigRecord {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends (or replaces, keeping the position) a setting.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<ConfigValue>) {
        self.0.insert(key.into(), value.into());
    }

    /// The setting under `key`, or an error listing the keys present.
    pub fn get(&self, key: &str) -> Result<&ConfigValue, RecordError> {
        self.0
            .get(key)
            .ok_or_else(|| missing("config", key, self.0.keys()))
    }

    /// A number as a float (integers convert).
    pub fn get_f64(&self, key: &str) -> Result<f64, RecordError> {
        match self.get(key)? {
            ConfigValue::F64(v) => Ok(*v),
            ConfigValue::I64(v) => Ok(*v as f64),
            ConfigValue::U64(v) => Ok(*v as f64),
            other => Err(wrong(key, "a number", other.type_name())),
        }
    }

    /// An integer; a float is refused rather than truncated.
    pub fn get_i64(&self, key: &str) -> Result<i64, RecordError> {
        match self.get(key)? {
            ConfigValue::I64(v) => Ok(*v),
            ConfigValue::U64(v) => {
                i64::try_from(*v).map_err(|_| wrong(key, "an int", "uint out of range"))
            }
            other => Err(wrong(key, "an int", other.type_name())),
        }
    }

    /// A boolean; no other type converts to one.
    pub fn get_bool(&self, key: &str) -> Result<bool, RecordError> {
        match self.get(key)? {
            ConfigValue::Bool(v) => Ok(*v),
            other => Err(wrong(key, "a bool", other.type_name())),
        }
    }

    /// A string; no other type converts to one.
    pub fn get_str(&self, key: &str) -> Result<&str, RecordError> {
        match self.get(key)? {
            ConfigValue::Str(v) => Ok(v),
            other => Err(wrong(key, "a string", other.type_name())),
        }
    }

    /// Settings in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &ConfigValue)> {
        self.0.iter()
    }

    /// Number of settings.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the record holds no setting.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn wrong(key: &str, expected: &'static str, found: &'static str) -> RecordError {
    RecordError::WrongType {
        key: key.to_string(),
        expected,
        found,
    }
}

/// One entry of a `RecordDict`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Record {
    /// Tensors, such as a model's parameters.
    Array(ArrayRecord),
    /// Numbers to aggregate, such as losses and example counts.
    Metric(MetricRecord),
    /// Settings, such as the learning rate.
    Config(ConfigRecord),
}

impl Record {
    /// The kind's name in words, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Array(_) => "array record",
            Record::Metric(_) => "metric record",
            Record::Config(_) => "config record",
        }
    }
}

impl From<ArrayRecord> for Record {
    fn from(r: ArrayRecord) -> Self {
        Record::Array(r)
    }
}
impl From<MetricRecord> for Record {
    fn from(r: MetricRecord) -> Self {
        Record::Metric(r)
    }
}
impl From<ConfigRecord> for Record {
    fn from(r: ConfigRecord) -> Self {
        Record::Config(r)
    }
}

/// Named records: the content of a message. Cheap to clone (shared until written).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RecordDict(Arc<FastIndexMap<String, Record>>);

macro_rules! typed_get {
    ($name:ident, $variant:ident, $ty:ty, $kind:literal) => {
        #[doc = concat!("The ", $kind, " under `key`, or an error naming what is there instead.")]
        pub fn $name(&self, key: &str) -> Result<&$ty, RecordError> {
            match self.0.get(key) {
                Some(Record::$variant(r)) => Ok(r),
                Some(other) => Err(wrong(key, $kind, other.kind())),
                None => Err(missing($kind, key, self.0.keys())),
            }
        }
    };
}

impl RecordDict {
    /// An empty dict.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a record; copies the dict first only if another holder shares it.
    pub fn insert(&mut self, key: impl Into<String>, record: impl Into<Record>) {
        Arc::make_mut(&mut self.0).insert(key.into(), record.into());
    }

    /// Builder form of `insert`.
    pub fn with(mut self, key: impl Into<String>, record: impl Into<Record>) -> Self {
        self.insert(key, record);
        self
    }

    /// The record under `key`, of whatever kind.
    pub fn get(&self, key: &str) -> Option<&Record> {
        self.0.get(key)
    }

    /// Removes a record, keeping the order of the others; copies the dict first only if another
    /// holder shares it.
    pub fn remove(&mut self, key: &str) -> Option<Record> {
        Arc::make_mut(&mut self.0).shift_remove(key)
    }

    typed_get!(array_record, Array, ArrayRecord, "array record");
    typed_get!(metric_record, Metric, MetricRecord, "metric record");
    typed_get!(config_record, Config, ConfigRecord, "config record");

    /// Records in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Record)> {
        self.0.iter()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the dict holds no record.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when both handles share one underlying dict (a broadcast, not a copy).
    pub fn shares_with(&self, other: &RecordDict) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl FromIterator<(String, Record)> for RecordDict {
    fn from_iter<I: IntoIterator<Item = (String, Record)>>(iter: I) -> Self {
        RecordDict(Arc::new(iter.into_iter().collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RecordDict {
        let mut arrays = ArrayRecord::new();
        arrays.insert("w", Array::from_slice(&[1.0f32, 2.0]));
        let mut metrics = MetricRecord::new();
        metrics.insert("num-examples", 10i64);
        metrics.insert("loss", 0.5);
        let mut config = ConfigRecord::new();
        config.insert("lr", 0.1);
        config.insert("server-round", 3i64);
        RecordDict::new()
            .with("arrays", arrays)
            .with("metrics", metrics)
            .with("config", config)
    }

    #[test]
    fn typed_getters_return_the_right_record() {
        let rd = sample();
        assert_eq!(rd.array_record("arrays").unwrap().len(), 1);
        assert_eq!(
            rd.metric_record("metrics")
                .unwrap()
                .get_f64("num-examples")
                .unwrap(),
            10.0
        );
        assert_eq!(
            rd.config_record("config")
                .unwrap()
                .get_i64("server-round")
                .unwrap(),
            3
        );
    }

    #[test]
    fn wrong_record_kind_names_both_kinds() {
        let err = sample().array_record("metrics").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"metrics\" holds metric record, not array record"
        );
    }

    #[test]
    fn missing_key_lists_what_is_present() {
        let err = sample().config_record("cfg").unwrap_err();
        assert_eq!(
            err.to_string(),
            "no config record named \"cfg\" (present: arrays, metrics, config)"
        );
    }

    #[test]
    fn float_is_not_truncated_to_int() {
        let rd = sample();
        let err = rd
            .config_record("config")
            .unwrap()
            .get_i64("lr")
            .unwrap_err();
        assert!(matches!(err, RecordError::WrongType { .. }));
    }

    #[test]
    fn clone_shares_until_written() {
        let a = sample();
        let mut b = a.clone();
        assert!(a.shares_with(&b));
        b.insert("extra", MetricRecord::new());
        assert!(!a.shares_with(&b));
        assert_eq!(a.len(), 3);
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn order_is_insertion_order() {
        let keys: Vec<_> = sample().iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, ["arrays", "metrics", "config"]);
    }
}
