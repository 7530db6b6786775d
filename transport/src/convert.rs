//! Conversions between floret-core's data model and the generated `flwr.proto` types.
//!
//! Core -> proto is total: every core value has a wire form. Proto -> core is fallible and
//! never panics: whatever a peer sends either becomes a core value or a [`DecodeError`]
//! naming the field and the problem. Conversions from the wire take the proto value by value
//! so strings and `Bytes` move instead of being copied.

use crate::error::{DecodeError, Loc};
use crate::proto;
use crate::proto::{config_record_value as cv, metric_record_value as mv, record_dict, scalar};
use floret_core::hashing::{FastIndexMap, FastState};
use floret_core::{
    Array, ArrayRecord, ConfigRecord, ConfigValue, Context, DType, Message, MessageError, Metadata,
    MetricRecord, MetricValue, Payload, Record, RecordDict, STYPE_RAW, UserConfig, UserConfigValue,
};

// ---------------------------------------------------------------------------------------
// Core -> proto
// ---------------------------------------------------------------------------------------

pub(crate) fn message_to_proto(msg: &Message) -> proto::Message {
    let (content, error) = match &msg.payload {
        Payload::Content(rd) => (Some(record_dict_to_proto(rd)), None),
        Payload::Error(e) => (None, Some(error_to_proto(e))),
    };
    proto::Message {
        metadata: Some(metadata_to_proto(&msg.metadata)),
        content,
        error,
    }
}

pub(crate) fn metadata_to_proto(m: &Metadata) -> proto::Metadata {
    proto::Metadata {
        run_id: m.run_id,
        message_id: m.message_id.clone(),
        src_node_id: m.src_node_id,
        dst_node_id: m.dst_node_id,
        reply_to_message_id: m.reply_to_message_id.clone(),
        group_id: m.group_id.clone(),
        ttl: m.ttl,
        message_type: m.message_type.clone(),
        created_at: m.created_at,
        src_task_id: None,
        dst_task_id: None,
        traceparent: m.trace_context.clone(),
    }
}

pub(crate) fn error_to_proto(e: &MessageError) -> proto::Error {
    proto::Error {
        code: e.code,
        reason: e.reason.clone(),
    }
}

pub(crate) fn record_dict_to_proto(rd: &RecordDict) -> proto::RecordDict {
    proto::RecordDict {
        items: rd
            .iter()
            .map(|(key, record)| record_dict::Item {
                key: key.clone(),
                value: Some(match record {
                    Record::Array(r) => {
                        record_dict::item::Value::ArrayRecord(array_record_to_proto(r))
                    }
                    Record::Metric(r) => {
                        record_dict::item::Value::MetricRecord(metric_record_to_proto(r))
                    }
                    Record::Config(r) => {
                        record_dict::item::Value::ConfigRecord(config_record_to_proto(r))
                    }
                }),
            })
            .collect(),
    }
}

pub(crate) fn array_record_to_proto(r: &ArrayRecord) -> proto::ArrayRecord {
    proto::ArrayRecord {
        items: r
            .iter()
            .map(|(key, array)| proto::array_record::Item {
                key: key.clone(),
                value: Some(array_to_proto(array)),
            })
            .collect(),
    }
}

pub(crate) fn array_to_proto(a: &Array) -> proto::Array {
    proto::Array {
        dtype: a.dtype.as_str().to_string(),
        shape: a.shape.clone(),
        stype: a.stype.clone(),
        // A reference-count bump, not a copy of the tensor.
        data: a.data.clone(),
    }
}

pub(crate) fn metric_record_to_proto(r: &MetricRecord) -> proto::MetricRecord {
    proto::MetricRecord {
        items: r
            .iter()
            .map(|(key, value)| proto::metric_record::Item {
                key: key.clone(),
                value: Some(metric_value_to_proto(value)),
            })
            .collect(),
    }
}

fn metric_value_to_proto(v: &MetricValue) -> proto::MetricRecordValue {
    let value = match v {
        MetricValue::F64(x) => mv::Value::Double(*x),
        MetricValue::I64(x) => mv::Value::Sint64(*x),
        MetricValue::U64(x) => mv::Value::Uint64(*x),
        MetricValue::F64List(xs) => mv::Value::DoubleList(proto::DoubleList { vals: xs.clone() }),
        MetricValue::I64List(xs) => mv::Value::SintList(proto::SintList { vals: xs.clone() }),
        MetricValue::U64List(xs) => mv::Value::UintList(proto::UintList { vals: xs.clone() }),
    };
    proto::MetricRecordValue { value: Some(value) }
}

pub(crate) fn config_record_to_proto(r: &ConfigRecord) -> proto::ConfigRecord {
    proto::ConfigRecord {
        items: r
            .iter()
            .map(|(key, value)| proto::config_record::Item {
                key: key.clone(),
                value: Some(config_value_to_proto(value)),
            })
            .collect(),
    }
}

fn config_value_to_proto(v: &ConfigValue) -> proto::ConfigRecordValue {
    let value = match v {
        ConfigValue::F64(x) => cv::Value::Double(*x),
        ConfigValue::I64(x) => cv::Value::Sint64(*x),
        ConfigValue::U64(x) => cv::Value::Uint64(*x),
        ConfigValue::Bool(x) => cv::Value::Bool(*x),
        ConfigValue::Str(x) => cv::Value::String(x.clone()),
        ConfigValue::Bytes(x) => cv::Value::Bytes(x.clone()),
        ConfigValue::F64List(xs) => cv::Value::DoubleList(proto::DoubleList { vals: xs.clone() }),
        ConfigValue::I64List(xs) => cv::Value::SintList(proto::SintList { vals: xs.clone() }),
        ConfigValue::U64List(xs) => cv::Value::UintList(proto::UintList { vals: xs.clone() }),
        ConfigValue::BoolList(xs) => cv::Value::BoolList(proto::BoolList { vals: xs.clone() }),
        ConfigValue::StrList(xs) => cv::Value::StringList(proto::StringList { vals: xs.clone() }),
        ConfigValue::BytesList(xs) => cv::Value::BytesList(proto::BytesList { vals: xs.clone() }),
    };
    proto::ConfigRecordValue { value: Some(value) }
}

pub(crate) fn context_to_proto(c: &Context) -> proto::Context {
    proto::Context {
        run_id: c.run_id,
        node_id: c.node_id,
        node_config: c
            .node_config
            .iter()
            .map(|(key, value)| proto::context::NodeConfigEntry {
                key: key.clone(),
                value: Some(user_config_value_to_proto(value)),
            })
            .collect(),
        state: Some(record_dict_to_proto(&c.state)),
        run_config: c
            .run_config
            .iter()
            .map(|(key, value)| proto::context::RunConfigEntry {
                key: key.clone(),
                value: Some(user_config_value_to_proto(value)),
            })
            .collect(),
        series_id: 0,
    }
}

/// Flower writes user-config integers as `sint64` (never `uint64`), as here.
pub(crate) fn user_config_value_to_proto(v: &UserConfigValue) -> proto::Scalar {
    let s = match v {
        UserConfigValue::Bool(x) => scalar::Scalar::Bool(*x),
        UserConfigValue::Int(x) => scalar::Scalar::Sint64(*x),
        UserConfigValue::Float(x) => scalar::Scalar::Double(*x),
        UserConfigValue::Str(x) => scalar::Scalar::String(x.clone()),
    };
    proto::Scalar { scalar: Some(s) }
}

// ---------------------------------------------------------------------------------------
// Proto -> core
// ---------------------------------------------------------------------------------------

const METRIC_KINDS: &str = "double, sint64, uint64, double_list, sint_list, uint_list";
const CONFIG_KINDS: &str = "double, sint64, uint64, bool, string, bytes, double_list, sint_list, \
                            uint_list, bool_list, string_list, bytes_list";
const RECORD_KINDS: &str = "array_record, metric_record, config_record";
const SCALAR_KINDS: &str = "double, uint64, sint64, bool, string, bytes";

pub(crate) fn message_from_proto(p: proto::Message) -> Result<Message, DecodeError> {
    let loc = Loc::Root("Message");
    let metadata = metadata_from_proto(p.metadata.ok_or_else(|| loc.field("metadata").missing())?);
    let payload = match (p.content, p.error) {
        (Some(content), None) => {
            Payload::Content(record_dict_from_proto(content, &loc.field("content"))?)
        }
        (None, Some(error)) => Payload::Error(error_from_proto(error)),
        (Some(_), Some(_)) => {
            return Err(loc.invalid("has both content and error; exactly one is allowed"));
        }
        (None, None) => {
            return Err(loc.invalid("has neither content nor error; exactly one is required"));
        }
    };
    Ok(Message { metadata, payload })
}

/// Flower 1.42's task ids (`src_task_id`, `dst_task_id`) have no core counterpart and are
/// dropped.
pub(crate) fn metadata_from_proto(p: proto::Metadata) -> Metadata {
    Metadata {
        run_id: p.run_id,
        message_id: p.message_id,
        src_node_id: p.src_node_id,
        dst_node_id: p.dst_node_id,
        reply_to_message_id: p.reply_to_message_id,
        group_id: p.group_id,
        ttl: p.ttl,
        message_type: p.message_type,
        created_at: p.created_at,
        trace_context: p.traceparent,
    }
}

pub(crate) fn error_from_proto(p: proto::Error) -> MessageError {
    MessageError {
        code: p.code,
        reason: p.reason,
    }
}

pub(crate) fn record_dict_from_proto(
    p: proto::RecordDict,
    loc: &Loc<'_>,
) -> Result<RecordDict, DecodeError> {
    let mut records = Vec::with_capacity(p.items.len());
    for item in p.items {
        let here = loc.key(&item.key);
        let record = match item.value {
            Some(record_dict::item::Value::ArrayRecord(r)) => {
                Record::Array(array_record_from_proto(r, &here.field("array_record"))?)
            }
            Some(record_dict::item::Value::MetricRecord(r)) => {
                Record::Metric(metric_record_from_proto(r, &here.field("metric_record"))?)
            }
            Some(record_dict::item::Value::ConfigRecord(r)) => {
                Record::Config(config_record_from_proto(r, &here.field("config_record"))?)
            }
            None => return Err(here.no_value(RECORD_KINDS)),
        };
        records.push((item.key, record));
    }
    // A repeated key keeps its first position and its last value, as a Python dict does.
    Ok(records.into_iter().collect())
}

pub(crate) fn array_record_from_proto(
    p: proto::ArrayRecord,
    loc: &Loc<'_>,
) -> Result<ArrayRecord, DecodeError> {
    let mut arrays = FastIndexMap::with_capacity_and_hasher(p.items.len(), FastState::default());
    for item in p.items {
        let here = loc.key(&item.key);
        let array = array_from_proto(item.value.ok_or_else(|| here.missing())?, &here)?;
        arrays.insert(item.key, array);
    }
    Ok(ArrayRecord(arrays))
}

/// Checks what a receiver must be able to rely on: a dtype name, no negative dimensions, and
/// for Floret's raw layout of a known dtype, exactly as many bytes as the shape needs.
/// Other serialisations (Flower's `numpy.ndarray` .npy bytes) and dtypes Floret does not
/// compute with are carried through unchanged.
pub(crate) fn array_from_proto(p: proto::Array, loc: &Loc<'_>) -> Result<Array, DecodeError> {
    if p.dtype.is_empty() {
        return Err(loc
            .field("dtype")
            .invalid("is empty; expected a numpy dtype name such as \"float32\""));
    }
    let mut elements: Option<usize> = Some(1);
    for &d in &p.shape {
        let d = usize::try_from(d).map_err(|_| {
            loc.field("shape")
                .invalid(format!("{:?} has a negative dimension", p.shape))
        })?;
        elements = elements.and_then(|n| n.checked_mul(d));
    }
    let dtype = DType::parse(&p.dtype);
    if p.stype == STYPE_RAW
        && let Some(size) = dtype.size()
    {
        let expected = elements.and_then(|n| n.checked_mul(size));
        if expected != Some(p.data.len()) {
            return Err(loc.field("data").invalid(format!(
                "is {} bytes, but shape {:?} of {} needs {}",
                p.data.len(),
                p.shape,
                p.dtype,
                expected.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string())
            )));
        }
    }
    Ok(Array {
        dtype,
        shape: p.shape,
        stype: p.stype,
        data: p.data,
    })
}

pub(crate) fn metric_record_from_proto(
    p: proto::MetricRecord,
    loc: &Loc<'_>,
) -> Result<MetricRecord, DecodeError> {
    let mut values = FastIndexMap::with_capacity_and_hasher(p.items.len(), FastState::default());
    for item in p.items {
        let here = loc.key(&item.key);
        let value = item
            .value
            .ok_or_else(|| here.missing())?
            .value
            .ok_or_else(|| here.no_value(METRIC_KINDS))?;
        let value = match value {
            mv::Value::Double(x) => MetricValue::F64(x),
            mv::Value::Sint64(x) => MetricValue::I64(x),
            mv::Value::Uint64(x) => MetricValue::U64(x),
            mv::Value::DoubleList(l) => MetricValue::F64List(l.vals),
            mv::Value::SintList(l) => MetricValue::I64List(l.vals),
            mv::Value::UintList(l) => MetricValue::U64List(l.vals),
        };
        values.insert(item.key, value);
    }
    Ok(MetricRecord(values))
}

pub(crate) fn config_record_from_proto(
    p: proto::ConfigRecord,
    loc: &Loc<'_>,
) -> Result<ConfigRecord, DecodeError> {
    let mut values = FastIndexMap::with_capacity_and_hasher(p.items.len(), FastState::default());
    for item in p.items {
        let here = loc.key(&item.key);
        let value = item
            .value
            .ok_or_else(|| here.missing())?
            .value
            .ok_or_else(|| here.no_value(CONFIG_KINDS))?;
        let value = match value {
            cv::Value::Double(x) => ConfigValue::F64(x),
            cv::Value::Sint64(x) => ConfigValue::I64(x),
            cv::Value::Uint64(x) => ConfigValue::U64(x),
            cv::Value::Bool(x) => ConfigValue::Bool(x),
            cv::Value::String(x) => ConfigValue::Str(x),
            cv::Value::Bytes(x) => ConfigValue::Bytes(x),
            cv::Value::DoubleList(l) => ConfigValue::F64List(l.vals),
            cv::Value::SintList(l) => ConfigValue::I64List(l.vals),
            cv::Value::UintList(l) => ConfigValue::U64List(l.vals),
            cv::Value::BoolList(l) => ConfigValue::BoolList(l.vals),
            cv::Value::StringList(l) => ConfigValue::StrList(l.vals),
            cv::Value::BytesList(l) => ConfigValue::BytesList(l.vals),
        };
        values.insert(item.key, value);
    }
    Ok(ConfigRecord(values))
}

/// An absent `state` is an empty one (proto3 semantics, and what Flower does). Flower 1.42's
/// `series_id` has no core counterpart and is dropped.
pub(crate) fn context_from_proto(p: proto::Context) -> Result<Context, DecodeError> {
    let loc = Loc::Root("Context");
    let node_config = user_config_from_proto(
        p.node_config.into_iter().map(|e| (e.key, e.value)),
        &loc.field("node_config"),
    )?;
    let run_config = user_config_from_proto(
        p.run_config.into_iter().map(|e| (e.key, e.value)),
        &loc.field("run_config"),
    )?;
    let state = match p.state {
        Some(state) => record_dict_from_proto(state, &loc.field("state"))?,
        None => RecordDict::new(),
    };
    Ok(Context {
        run_id: p.run_id,
        node_id: p.node_id,
        node_config,
        state,
        run_config,
    })
}

pub(crate) fn user_config_from_proto(
    entries: impl Iterator<Item = (String, Option<proto::Scalar>)>,
    loc: &Loc<'_>,
) -> Result<UserConfig, DecodeError> {
    let mut config = UserConfig::new();
    for (key, value) in entries {
        let here = loc.key(&key);
        let scalar = value
            .ok_or_else(|| here.missing())?
            .scalar
            .ok_or_else(|| here.no_value(SCALAR_KINDS))?;
        let value = match scalar {
            scalar::Scalar::Bool(x) => UserConfigValue::Bool(x),
            scalar::Scalar::Sint64(x) => UserConfigValue::Int(x),
            scalar::Scalar::Double(x) => UserConfigValue::Float(x),
            scalar::Scalar::String(x) => UserConfigValue::Str(x),
            scalar::Scalar::Uint64(x) => UserConfigValue::Int(i64::try_from(x).map_err(|_| {
                here.invalid(format!("integer {x} does not fit a signed 64-bit int"))
            })?),
            scalar::Scalar::Bytes(_) => {
                return Err(
                    here.invalid("bytes are not a config value (bool, int, float or string)")
                );
            }
        };
        config.insert(key, value);
    }
    Ok(config)
}
