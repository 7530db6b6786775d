//! decode(encode(x)) == x for generated messages and contexts.
//!
//! `PartialEq` on the core maps ignores order and NaN != NaN, so every property also checks
//! that re-encoding the decoded value reproduces the original bytes exactly: that pins
//! insertion order and every float bit (NaN payloads, -0.0) as well.

use super::strategies::{self, Floats};
use crate::{
    decode_context, decode_context_bytes, decode_message, decode_message_bytes, encode_context,
    encode_message,
};
use bytes::Bytes;
use floret_core::{Array, ArrayRecord, Message, MetricRecord, Payload, RecordDict};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn message_round_trips(msg in strategies::message(Floats::NoNan)) {
        let wire = encode_message(&msg);
        let back = decode_message(&wire).expect("decoding what we encoded");
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(encode_message(&back), wire.clone());
        prop_assert_eq!(decode_message_bytes(wire).expect("zero-copy decode"), msg);
    }

    #[test]
    fn message_round_trips_bitwise_with_nan(msg in strategies::message(Floats::Any)) {
        let wire = encode_message(&msg);
        let back = decode_message(&wire).expect("decoding what we encoded");
        prop_assert_eq!(encode_message(&back), wire);
    }

    #[test]
    fn context_round_trips(ctx in strategies::context(Floats::NoNan)) {
        let wire = encode_context(&ctx);
        let back = decode_context(&wire).expect("decoding what we encoded");
        prop_assert_eq!(&back, &ctx);
        prop_assert_eq!(encode_context(&back), wire.clone());
        prop_assert_eq!(decode_context_bytes(wire).expect("zero-copy decode"), ctx);
    }

    #[test]
    fn context_round_trips_bitwise_with_nan(ctx in strategies::context(Floats::Any)) {
        let wire = encode_context(&ctx);
        let back = decode_context(&wire).expect("decoding what we encoded");
        prop_assert_eq!(encode_context(&back), wire);
    }
}

#[test]
fn empty_content_and_empty_records_survive() {
    let content = RecordDict::new()
        .with("a", ArrayRecord::new())
        .with("m", MetricRecord::new());
    for content in [RecordDict::new(), content] {
        let msg = Message::new(content, 3, "query");
        let back = decode_message(&encode_message(&msg)).unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn record_order_survives_the_wire() {
    let mut arrays = ArrayRecord::new();
    for name in ["z", "a", "m", "b"] {
        arrays.insert(name, Array::from_slice(&[1.0f32]));
    }
    let msg = Message::new(RecordDict::new().with("w", arrays), 1, "train");
    let back = decode_message(&encode_message(&msg)).unwrap();
    let Payload::Content(rd) = &back.payload else {
        panic!("content expected")
    };
    let keys: Vec<&str> = rd
        .array_record("w")
        .unwrap()
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(keys, ["z", "a", "m", "b"]);
}

#[test]
fn zero_copy_decode_slices_the_received_buffer() {
    let mut arrays = ArrayRecord::new();
    arrays.insert("w", Array::from_vec(vec![256], vec![0.5f32; 256]));
    let msg = Message::new(RecordDict::new().with("arrays", arrays), 1, "train");
    let wire: Bytes = encode_message(&msg);
    let range = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
    let back = decode_message_bytes(wire.clone()).unwrap();
    let data = &back
        .content()
        .unwrap()
        .array_record("arrays")
        .unwrap()
        .get("w")
        .unwrap()
        .data;
    assert_eq!(data.len(), 1024);
    assert!(
        range.contains(&(data.as_ptr() as usize)),
        "array data was copied"
    );
}
