//! Bad input becomes a `DecodeError` that names the field, never a panic.

use crate::convert;
use crate::error::DecodeError;
use crate::proto;
use crate::proto::{config_record_value as cv, record_dict, scalar};
use crate::{decode_context, decode_message, encode_context, encode_message};
use bytes::Bytes;
use floret_core::{ArrayRecord, Message, RecordDict};
use proptest::prelude::*;
use prost::Message as _;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_message(&buf);
        let _ = decode_context(&buf);
    }

    /// Valid encodings with one byte changed or the tail cut off: the nastiest garbage,
    /// since most of it still parses.
    #[test]
    fn corrupted_encodings_never_panic(
        msg in super::strategies::message(super::strategies::Floats::Any),
        ctx in super::strategies::context(super::strategies::Floats::Any),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        for wire in [encode_message(&msg).to_vec(), encode_context(&ctx).to_vec()] {
            let mut flipped = wire.clone();
            if !flipped.is_empty() {
                let i = pos.index(flipped.len());
                flipped[i] = byte;
            }
            let truncated = &wire[..cut.index(wire.len() + 1)];
            for buf in [&flipped[..], truncated] {
                let _ = decode_message(buf);
                let _ = decode_context(buf);
            }
        }
    }
}

#[test]
fn garbage_is_an_error() {
    let cases: &[&[u8]] = &[
        &[0xff; 16],                         // invalid tag / varint
        &[0x0a, 0x05, 0x01],                 // length beyond the end
        &[0x0b],                             // deprecated group start
        &[0x0a, 0x02, 0x08],                 // truncated nested varint
        b"this is not a protobuf message!!", // text
    ];
    for buf in cases {
        assert!(decode_message(buf).is_err(), "message from {buf:?}");
        assert!(decode_context(buf).is_err(), "context from {buf:?}");
    }
    assert!(matches!(
        decode_message(&[0xff; 16]),
        Err(DecodeError::Malformed {
            what: "Message",
            ..
        })
    ));
}

#[test]
fn empty_input_is_a_message_without_metadata() {
    let err = decode_message(&[]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Missing {
            field: "Message.metadata".into()
        }
    );
    // An empty Context is valid: all of its fields have proto3 defaults.
    assert_eq!(
        decode_context(&[]).unwrap(),
        floret_core::Context::default()
    );
}

fn encoded(p: proto::Message) -> Vec<u8> {
    p.encode_to_vec()
}

fn with_content(items: Vec<record_dict::Item>) -> proto::Message {
    proto::Message {
        metadata: Some(proto::Metadata::default()),
        content: Some(proto::RecordDict { items }),
        error: None,
    }
}

fn item(key: &str, value: Option<record_dict::item::Value>) -> record_dict::Item {
    record_dict::Item {
        key: key.into(),
        value,
    }
}

fn array_item(array: proto::Array) -> record_dict::Item {
    item(
        "arrays",
        Some(record_dict::item::Value::ArrayRecord(proto::ArrayRecord {
            items: vec![proto::array_record::Item {
                key: "w".into(),
                value: Some(array),
            }],
        })),
    )
}

fn err_string(p: proto::Message) -> String {
    decode_message(&encoded(p)).unwrap_err().to_string()
}

#[test]
fn content_and_error_are_exclusive() {
    let both = proto::Message {
        error: Some(proto::Error::default()),
        ..with_content(vec![])
    };
    assert_eq!(
        err_string(both),
        "Message: has both content and error; exactly one is allowed"
    );
    let neither = proto::Message {
        content: None,
        ..with_content(vec![])
    };
    assert_eq!(
        err_string(neither),
        "Message: has neither content nor error; exactly one is required"
    );
}

#[test]
fn record_without_kind_is_named() {
    let err = err_string(with_content(vec![item("metrics", None)]));
    assert_eq!(
        err,
        "Message.content[\"metrics\"] has no value (expected one of: array_record, metric_record, config_record)"
    );
}

#[test]
fn record_values_without_value_are_named() {
    let metric = item(
        "m",
        Some(record_dict::item::Value::MetricRecord(
            proto::MetricRecord {
                items: vec![proto::metric_record::Item {
                    key: "loss".into(),
                    value: Some(proto::MetricRecordValue { value: None }),
                }],
            },
        )),
    );
    let err = err_string(with_content(vec![metric]));
    assert!(
        err.starts_with("Message.content[\"m\"].metric_record[\"loss\"] has no value"),
        "{err}"
    );

    let config = item(
        "c",
        Some(record_dict::item::Value::ConfigRecord(
            proto::ConfigRecord {
                items: vec![proto::config_record::Item {
                    key: "lr".into(),
                    value: None,
                }],
            },
        )),
    );
    let err = err_string(with_content(vec![config]));
    assert_eq!(
        err,
        "Message.content[\"c\"].config_record[\"lr\"] is missing"
    );

    let array = item(
        "a",
        Some(record_dict::item::Value::ArrayRecord(proto::ArrayRecord {
            items: vec![proto::array_record::Item {
                key: "w".into(),
                value: None,
            }],
        })),
    );
    let err = err_string(with_content(vec![array]));
    assert_eq!(err, "Message.content[\"a\"].array_record[\"w\"] is missing");
}

#[test]
fn bad_arrays_are_rejected() {
    let good = proto::Array {
        dtype: "float32".into(),
        shape: vec![2],
        stype: "raw".into(),
        data: Bytes::from(vec![0u8; 8]),
    };
    let no_dtype = proto::Array {
        dtype: String::new(),
        ..good.clone()
    };
    assert!(
        err_string(with_content(vec![array_item(no_dtype)]))
            .contains("array_record[\"w\"].dtype: is empty")
    );

    let negative = proto::Array {
        shape: vec![2, -1],
        ..good.clone()
    };
    assert_eq!(
        err_string(with_content(vec![array_item(negative)])),
        "Message.content[\"arrays\"].array_record[\"w\"].shape: [2, -1] has a negative dimension"
    );

    let short = proto::Array {
        data: Bytes::from(vec![0u8; 7]),
        ..good.clone()
    };
    assert_eq!(
        err_string(with_content(vec![array_item(short)])),
        "Message.content[\"arrays\"].array_record[\"w\"].data: is 7 bytes, but shape [2] of float32 needs 8"
    );

    let overflow = proto::Array {
        shape: vec![i32::MAX; 4],
        ..good.clone()
    };
    assert!(
        err_string(with_content(vec![array_item(overflow)])).contains("needs more than usize::MAX")
    );

    // Foreign layouts and dtypes are carried, not judged.
    let npy = proto::Array {
        dtype: "float16".into(),
        stype: "numpy.ndarray".into(),
        data: Bytes::from_static(b"\x93NUMPY"),
        ..good.clone()
    };
    assert!(decode_message(&encoded(with_content(vec![array_item(npy)]))).is_ok());
    assert!(decode_message(&encoded(with_content(vec![array_item(good)]))).is_ok());
}

#[test]
fn user_config_rejects_what_core_cannot_hold() {
    let ctx = |value: Option<scalar::Scalar>| {
        proto::Context {
            run_config: vec![proto::context::RunConfigEntry {
                key: "k".into(),
                value: Some(proto::Scalar { scalar: value }),
            }],
            ..Default::default()
        }
        .encode_to_vec()
    };
    let err =
        decode_context(&ctx(Some(scalar::Scalar::Bytes(Bytes::from_static(b"x"))))).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("Context.run_config[\"k\"]: bytes are not a config value"),
        "{err}"
    );
    let err = decode_context(&ctx(Some(scalar::Scalar::Uint64(u64::MAX)))).unwrap_err();
    assert!(
        err.to_string().contains("does not fit a signed 64-bit int"),
        "{err}"
    );
    let err = decode_context(&ctx(None)).unwrap_err();
    assert!(
        matches!(err, DecodeError::NoValue { ref field, .. } if field == "Context.run_config[\"k\"]"),
        "{err}"
    );
    // A small uint64 (another implementation's choice for a non-negative int) is accepted.
    let ok = decode_context(&ctx(Some(scalar::Scalar::Uint64(5)))).unwrap();
    assert_eq!(ok.run_config["k"], floret_core::UserConfigValue::Int(5));
}

#[test]
fn repeated_keys_keep_first_position_and_last_value() {
    let cfg = |key: &str, v: i64| proto::config_record::Item {
        key: key.into(),
        value: Some(proto::ConfigRecordValue {
            value: Some(cv::Value::Sint64(v)),
        }),
    };
    let p = with_content(vec![item(
        "c",
        Some(record_dict::item::Value::ConfigRecord(
            proto::ConfigRecord {
                items: vec![cfg("a", 1), cfg("b", 2), cfg("a", 3)],
            },
        )),
    )]);
    let msg = convert::message_from_proto(p).unwrap();
    let rec = msg.content().unwrap().config_record("c").unwrap();
    let entries: Vec<(&str, i64)> = rec
        .iter()
        .map(|(k, _)| (k.as_str(), rec.get_i64(k).unwrap()))
        .collect();
    assert_eq!(entries, [("a", 3), ("b", 2)]);
}

#[test]
fn unknown_fields_are_ignored() {
    // A newer peer may add fields: field 99 (varint) in front of a valid message.
    let msg = Message::new(RecordDict::new().with("a", ArrayRecord::new()), 1, "train");
    let mut buf = vec![0x98, 0x06, 0x01];
    buf.extend_from_slice(&encode_message(&msg));
    assert_eq!(decode_message(&buf).unwrap(), msg);
}
