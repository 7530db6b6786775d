//! proptest strategies for the core data model, covering every record and value kind.

use bytes::Bytes;
use floret_core::{
    Array, ArrayRecord, ConfigRecord, ConfigValue, Context, DType, Message, MessageError, Metadata,
    MetricRecord, MetricValue, Payload, Record, RecordDict, STYPE_RAW, UserConfig, UserConfigValue,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// Whether generated floats may be NaN (which defeats `PartialEq`; compare bytes instead).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Floats {
    NoNan,
    Any,
}

pub(crate) fn float(f: Floats) -> BoxedStrategy<f64> {
    use proptest::num::f64 as F;
    let no_nan = F::POSITIVE | F::NEGATIVE | F::NORMAL | F::SUBNORMAL | F::ZERO | F::INFINITE;
    match f {
        Floats::NoNan => no_nan.boxed(),
        Floats::Any => (no_nan | F::QUIET_NAN).boxed(),
    }
}

/// Keys: empty, ASCII, and arbitrary Unicode.
pub(crate) fn key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9._-]{0,10}", ".{0,6}"]
}

fn blob(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Arrays Floret computes with (raw layout, consistent length) and foreign ones (npy bytes,
/// dtypes Floret only carries).
pub(crate) fn array() -> impl Strategy<Value = Array> {
    let known = prop_oneof![
        Just(DType::F32),
        Just(DType::F64),
        Just(DType::I32),
        Just(DType::I64),
        Just(DType::U8),
    ];
    let raw = (known, vec(0i32..4, 0..4)).prop_flat_map(|(dtype, shape)| {
        let n: usize = shape.iter().map(|&d| d as usize).product();
        let len = n * dtype.size().unwrap_or(1);
        vec(any::<u8>(), len).prop_map(move |data| Array {
            dtype: dtype.clone(),
            shape: shape.clone(),
            stype: STYPE_RAW.to_string(),
            data: Bytes::from(data),
        })
    });
    let foreign_dtype = prop_oneof![
        Just(DType::F32),
        Just(DType::Other("float16".into())),
        Just(DType::Other("bool".into())),
        Just(DType::Other("<U5".into())),
    ];
    let foreign = (
        foreign_dtype,
        vec(0i32..1000, 0..3),
        prop_oneof![Just("numpy.ndarray"), Just("")],
        blob(64),
    )
        .prop_map(|(dtype, shape, stype, data)| Array {
            dtype,
            shape,
            stype: stype.to_string(),
            data,
        });
    prop_oneof![3 => raw, 1 => foreign]
}

pub(crate) fn array_record() -> impl Strategy<Value = ArrayRecord> {
    vec((key(), array()), 0..4).prop_map(|items| items.into_iter().collect())
}

pub(crate) fn metric_value(f: Floats) -> impl Strategy<Value = MetricValue> {
    prop_oneof![
        float(f).prop_map(MetricValue::F64),
        any::<i64>().prop_map(MetricValue::I64),
        any::<u64>().prop_map(MetricValue::U64),
        vec(float(f), 0..4).prop_map(MetricValue::F64List),
        vec(any::<i64>(), 0..4).prop_map(MetricValue::I64List),
        vec(any::<u64>(), 0..4).prop_map(MetricValue::U64List),
    ]
}

pub(crate) fn metric_record(f: Floats) -> impl Strategy<Value = MetricRecord> {
    vec((key(), metric_value(f)), 0..5).prop_map(|items| MetricRecord(items.into_iter().collect()))
}

pub(crate) fn config_value(f: Floats) -> impl Strategy<Value = ConfigValue> {
    prop_oneof![
        float(f).prop_map(ConfigValue::F64),
        any::<i64>().prop_map(ConfigValue::I64),
        any::<u64>().prop_map(ConfigValue::U64),
        any::<bool>().prop_map(ConfigValue::Bool),
        ".{0,8}".prop_map(ConfigValue::Str),
        blob(16).prop_map(ConfigValue::Bytes),
        vec(float(f), 0..4).prop_map(ConfigValue::F64List),
        vec(any::<i64>(), 0..4).prop_map(ConfigValue::I64List),
        vec(any::<u64>(), 0..4).prop_map(ConfigValue::U64List),
        vec(any::<bool>(), 0..4).prop_map(ConfigValue::BoolList),
        vec(".{0,4}", 0..4).prop_map(ConfigValue::StrList),
        vec(blob(8), 0..4).prop_map(ConfigValue::BytesList),
    ]
}

pub(crate) fn config_record(f: Floats) -> impl Strategy<Value = ConfigRecord> {
    vec((key(), config_value(f)), 0..5).prop_map(|items| ConfigRecord(items.into_iter().collect()))
}

pub(crate) fn record(f: Floats) -> impl Strategy<Value = Record> {
    prop_oneof![
        array_record().prop_map(Record::Array),
        metric_record(f).prop_map(Record::Metric),
        config_record(f).prop_map(Record::Config),
    ]
}

pub(crate) fn record_dict(f: Floats) -> impl Strategy<Value = RecordDict> {
    vec((key(), record(f)), 0..4).prop_map(|items| items.into_iter().collect())
}

pub(crate) fn metadata(f: Floats) -> impl Strategy<Value = Metadata> {
    (
        (any::<u64>(), ".{0,8}", any::<u64>(), any::<u64>()),
        (".{0,8}", ".{0,4}", float(f), ".{0,12}", float(f)),
        ".{0,55}",
    )
        .prop_map(
            |(
                (run_id, message_id, src_node_id, dst_node_id),
                (reply_to_message_id, group_id, ttl, message_type, created_at),
                trace_context,
            )| {
                Metadata {
                    run_id,
                    message_id,
                    src_node_id,
                    dst_node_id,
                    reply_to_message_id,
                    group_id,
                    ttl,
                    message_type,
                    created_at,
                    trace_context,
                }
            },
        )
}

pub(crate) fn message(f: Floats) -> impl Strategy<Value = Message> {
    let payload = prop_oneof![
        3 => record_dict(f).prop_map(Payload::Content),
        1 => (any::<i64>(), ".{0,16}").prop_map(|(code, reason)| Payload::Error(MessageError { code, reason })),
    ];
    (metadata(f), payload).prop_map(|(metadata, payload)| Message { metadata, payload })
}

pub(crate) fn user_config(f: Floats) -> impl Strategy<Value = UserConfig> {
    let value = prop_oneof![
        any::<bool>().prop_map(UserConfigValue::Bool),
        any::<i64>().prop_map(UserConfigValue::Int),
        float(f).prop_map(UserConfigValue::Float),
        ".{0,8}".prop_map(UserConfigValue::Str),
    ];
    vec((key(), value), 0..5).prop_map(|items| items.into_iter().collect())
}

pub(crate) fn context(f: Floats) -> impl Strategy<Value = Context> {
    (
        any::<u64>(),
        any::<u64>(),
        user_config(f),
        record_dict(f),
        user_config(f),
    )
        .prop_map(
            |(run_id, node_id, node_config, state, run_config)| Context {
                run_id,
                node_id,
                node_config,
                state,
                run_config,
            },
        )
}
