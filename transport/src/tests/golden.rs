//! Bytes produced by Flower 1.42's own generated Python classes (the `flwr` wheel's
//! `flwr/proto/*_pb2.py` descriptors, serialised with the `protobuf` package), decoded and
//! re-encoded here. Both implementations write fields in field-number order, so Floret's
//! encoding must reproduce Flower's byte for byte.

use crate::{decode_context, decode_message, encode_context, encode_message};
use bytes::Bytes;
use floret_core::{
    Array, ArrayRecord, ConfigRecord, ConfigValue, Context, DType, Message, MessageError, Metadata,
    MetricRecord, MetricValue, Payload, RecordDict, UserConfig, UserConfigValue,
};
use prost::Message as _;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// `Metadata(run_id=1)`: field 1, varint.
#[test]
fn metadata_field_numbers_match_flower() {
    let md = crate::convert::metadata_to_proto(&Metadata {
        run_id: 1,
        ..Metadata::default()
    });
    assert_eq!(md.encode_to_vec(), hex("0801"));

    // ttl is field 7 (double, tag 0x39), message_type field 8 (tag 0x42), created_at 9 (0x49).
    let md = crate::convert::metadata_to_proto(&Metadata {
        ttl: 1.0,
        message_type: "query".into(),
        created_at: 2.0,
        ..Metadata::default()
    });
    assert_eq!(
        md.encode_to_vec(),
        hex("39000000000000f03f4205717565727949" /* created_at */)
            .into_iter()
            .chain(2.0f64.to_le_bytes())
            .collect::<Vec<u8>>()
    );

    // Floret's trace context is field 1001 (string: tag 8010 = varint ca 3e), far from
    // Flower's numbers; Flower's decoders skip it as unknown.
    let md = crate::convert::metadata_to_proto(&Metadata {
        trace_context: "00-ab".into(),
        ..Metadata::default()
    });
    assert_eq!(md.encode_to_vec(), hex("ca3e0530302d6162"));
}

const MESSAGE_WITH_CONTENT: &str = "0a25082a12036d2d31200732013339000000000018e5404205747261696e4900002040fc54d94112c8030a630a0661727261797312590a350a0d6c61796572302e77656967687412240a07666c6f61743332120202021a0372617722100000803f0000004000004040000080400a200a0b6c61796572302e6269617312110a07666c6f617433321201001a037261770a87010a076d6574726963731a7c0a110a046c6f7373120909000000000000d03f0a120a0c6e756d2d6578616d706c6573120210050a120a03626967120b18ffffffffffffffffff010a1f0a066c6f737365731215aa01120a10000000000000f83f00000000000000c00a0b0a04696e74731203b201000a110a0575696e74731208ba01050a0301ac020acb010a06636f6e66696722c0010a0f0a026c721209097b14ae47e17a843f0a120a0c7365727665722d726f756e64120210060a0a0a0473656564120218090a0a0a04666c6167120220010a100a046e616d6512082a066665646176670a0c0a04626c6f621204320200ff0a130a02646c120daa010a0a08000000000000e03f0a0d0a02736c1207b201040a0201020a0c0a02756c1206ba01030a01070a0d0a02626c1207c201040a0201000a0f0a0373746c1208ca01050a01610a000a0f0a0362796c1208d201050a01780a000a090a05656d7074792200";

fn message_with_content() -> Message {
    let mut arrays = ArrayRecord::new();
    arrays.insert(
        "layer0.weight",
        Array::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0]),
    );
    arrays.insert(
        "layer0.bias",
        Array {
            dtype: DType::F32,
            shape: vec![0],
            stype: "raw".into(),
            data: Bytes::new(),
        },
    );
    let mut metrics = MetricRecord::new();
    metrics.insert("loss", 0.25);
    metrics.insert("num-examples", -3i64);
    metrics.insert("big", u64::MAX);
    metrics.insert("losses", MetricValue::F64List(vec![1.5, -2.0]));
    metrics.insert("ints", MetricValue::I64List(vec![]));
    metrics.insert("uints", MetricValue::U64List(vec![1, 300]));
    let mut config = ConfigRecord::new();
    config.insert("lr", 0.01);
    config.insert("server-round", 3i64);
    config.insert("seed", ConfigValue::U64(9));
    config.insert("flag", true);
    config.insert("name", "fedavg");
    config.insert("blob", ConfigValue::Bytes(Bytes::from_static(b"\x00\xff")));
    config.insert("dl", ConfigValue::F64List(vec![0.5]));
    config.insert("sl", ConfigValue::I64List(vec![-1, 1]));
    config.insert("ul", ConfigValue::U64List(vec![7]));
    config.insert("bl", ConfigValue::BoolList(vec![true, false]));
    config.insert("stl", ConfigValue::StrList(vec!["a".into(), String::new()]));
    config.insert(
        "byl",
        ConfigValue::BytesList(vec![Bytes::from_static(b"x"), Bytes::new()]),
    );
    let content = RecordDict::new()
        .with("arrays", arrays)
        .with("metrics", metrics)
        .with("config", config)
        .with("empty", ConfigRecord::new());
    Message {
        metadata: Metadata {
            run_id: 42,
            message_id: "m-1".into(),
            src_node_id: 0,
            dst_node_id: 7,
            reply_to_message_id: String::new(),
            group_id: "3".into(),
            ttl: 43200.0,
            message_type: "train".into(),
            created_at: 1_700_000_000.5,
            // Flower sends none; Floret's extension field is then simply absent.
            trace_context: String::new(),
        },
        payload: Payload::Content(content),
    }
}

#[test]
fn flower_message_with_every_value_kind() {
    let wire = hex(MESSAGE_WITH_CONTENT);
    let expected = message_with_content();
    let decoded = decode_message(&wire).unwrap();
    assert_eq!(decoded, expected);
    assert_eq!(encode_message(&expected).as_ref(), &wire[..]);
}

#[test]
fn flower_error_reply() {
    let wire =
        hex("0a1c082a18072a036d2d3132013339000000000018e5404205747261696e1a0808041204626f6f6d");
    let expected = Message {
        metadata: Metadata {
            run_id: 42,
            src_node_id: 7,
            dst_node_id: 0,
            reply_to_message_id: "m-1".into(),
            group_id: "3".into(),
            ttl: 43200.0,
            message_type: "train".into(),
            ..Metadata::default()
        },
        payload: Payload::Error(MessageError::new(2, "boom")),
    };
    assert_eq!(decode_message(&wire).unwrap(), expected);
    assert_eq!(encode_message(&expected).as_ref(), &wire[..]);
}

/// Flower declares `node_config` / `run_config` as `map<string, Scalar>`; one entry each keeps
/// Python's map serialisation order out of the picture.
#[test]
fn flower_context() {
    let wire = hex(
        "080510091a120a0c706172746974696f6e2d69641202400222070a050a01731a002a0f0a026c721209099a9999999999b93f",
    );
    let node_config: UserConfig = [("partition-id".to_string(), UserConfigValue::Int(1))]
        .into_iter()
        .collect();
    let run_config: UserConfig = [("lr".to_string(), UserConfigValue::Float(0.1))]
        .into_iter()
        .collect();
    let expected = Context {
        run_id: 5,
        node_id: 9,
        node_config,
        state: RecordDict::new().with("s", MetricRecord::new()),
        run_config,
    };
    assert_eq!(decode_context(&wire).unwrap(), expected);
    assert_eq!(encode_context(&expected).as_ref(), &wire[..]);
}
