//! Reading a reply: what a train or evaluate reply must carry, and why one is left out.
//!
//! Layout as in Flower's message API: a train reply carries the updated model as an
//! `ArrayRecord` (under the strategy's `arrayrecord_key`, "arrays" by default) and a
//! `MetricRecord` under "metrics" holding the weight (`num-examples`); an evaluate reply
//! carries only the metrics. Like Flower, a reply whose records sit under other keys is still
//! read when it holds exactly one record of the needed kind.

use floret_core::{
    ArrayError, ArrayRecord, DType, Message, MetricRecord, Payload, Record, RecordDict,
};
use thiserror::Error;

/// Key of the metrics in a reply.
pub const METRICS_KEY: &str = "metrics";

/// Why a reply was left out of the aggregate. Never fatal: the reply is counted as a failure.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum Rejection {
    /// The node answered with an error instead of content.
    #[error("the node reported error {code}: {reason}")]
    ErrorReply {
        /// The error's code, one of `floret_core::error_code`.
        code: i64,
        /// The node's reason.
        reason: String,
    },
    /// No array record under the strategy's key, and not exactly one elsewhere; the lookup's error.
    #[error("no model in the reply: {0}")]
    NoArrays(String),
    /// No metric record under "metrics", and not exactly one elsewhere; the lookup's error.
    #[error("no metrics in the reply: {0}")]
    NoMetrics(String),
    /// The weight metric is missing or not a number; the lookup's error.
    #[error("no usable weight: {0}")]
    NoWeight(String),
    /// The weight metric is zero, negative, infinite or NaN.
    #[error("weight metric {key:?} is {value}; it must be a positive finite number")]
    BadWeight {
        /// The weight metric's key.
        key: String,
        /// The value it holds.
        value: f64,
    },
    /// The model has an array, named here, that the reply lacks.
    #[error("array {0:?} of the model is missing from the reply")]
    MissingArray(String),
    /// The reply has an array, named here, that the model lacks.
    #[error("the reply has an array {0:?} that the model does not have")]
    UnexpectedArray(String),
    /// An array's dtype differs from the model's.
    #[error("array {key:?} has dtype {found}, but the model's is {expected}")]
    ArrayDType {
        /// The array's name.
        key: String,
        /// The model's dtype, by its numpy name.
        expected: String,
        /// The reply's dtype, by its numpy name.
        found: String,
    },
    /// An array's shape differs from the model's.
    #[error("array {key:?} has shape {found:?}, but the model's is {expected:?}")]
    ArrayShape {
        /// The array's name.
        key: String,
        /// The model's shape.
        expected: Vec<i32>,
        /// The reply's shape.
        found: Vec<i32>,
    },
    /// A robust aggregator holds the round's replies, and they reached its limit.
    #[error(
        "the strategy holds at most {limit} bytes of replies a round, and this one would pass          it; raise the limit (FedAvg::with_buffer_limit) or sample fewer nodes"
    )]
    BufferFull {
        /// The limit, in bytes.
        limit: usize,
    },
    /// An array's data cannot be read (another stype, or a length its shape does not need).
    #[error("array {key:?} is unreadable: {source}")]
    ArrayData {
        /// The array's name.
        key: String,
        /// Why it could not be read.
        #[source]
        source: ArrayError,
    },
}

impl Rejection {
    pub(crate) fn dtype(key: &str, expected: &DType, found: &DType) -> Self {
        Rejection::ArrayDType {
            key: key.to_string(),
            expected: expected.as_str().to_string(),
            found: found.as_str().to_string(),
        }
    }
}

/// The parts of a train reply that FedAvg folds, borrowed from the message.
#[derive(Debug, Clone, Copy)]
pub struct TrainReply<'a> {
    /// The updated model.
    pub arrays: &'a ArrayRecord,
    /// The node's metrics, weight included.
    pub metrics: &'a MetricRecord,
    /// How much this reply counts in the average (usually `num-examples`): finite and above 0.
    pub weight: f64,
}

/// Reads a train reply: its model, its metrics and its weight (`weight_key` in the metrics).
pub fn train_reply<'a>(
    reply: &'a Message,
    arrays_key: &str,
    weight_key: &str,
) -> Result<TrainReply<'a>, Rejection> {
    let content = content(reply)?;
    let arrays = find_arrays(content, arrays_key)?;
    let metrics = find_metrics(content)?;
    let weight = weight(metrics, weight_key)?;
    Ok(TrainReply {
        arrays,
        metrics,
        weight,
    })
}

/// Reads an evaluate reply: its metrics and its weight.
pub fn evaluate_reply<'a>(
    reply: &'a Message,
    weight_key: &str,
) -> Result<(&'a MetricRecord, f64), Rejection> {
    let metrics = find_metrics(content(reply)?)?;
    Ok((metrics, weight(metrics, weight_key)?))
}

fn content(reply: &Message) -> Result<&RecordDict, Rejection> {
    match &reply.payload {
        Payload::Content(c) => Ok(c),
        Payload::Error(e) => Err(Rejection::ErrorReply {
            code: e.code,
            reason: e.reason.clone(),
        }),
    }
}

fn find_arrays<'a>(content: &'a RecordDict, key: &str) -> Result<&'a ArrayRecord, Rejection> {
    content.array_record(key).or_else(|err| {
        sole(content, |r| match r {
            Record::Array(a) => Some(a),
            _ => None,
        })
        .ok_or_else(|| Rejection::NoArrays(err.to_string()))
    })
}

fn find_metrics(content: &RecordDict) -> Result<&MetricRecord, Rejection> {
    content.metric_record(METRICS_KEY).or_else(|err| {
        sole(content, |r| match r {
            Record::Metric(m) => Some(m),
            _ => None,
        })
        .ok_or_else(|| Rejection::NoMetrics(err.to_string()))
    })
}

/// The only record of one kind, if there is exactly one.
fn sole<'a, T>(
    content: &'a RecordDict,
    kind: impl Fn(&'a Record) -> Option<&'a T>,
) -> Option<&'a T> {
    let mut found = content.iter().filter_map(|(_, r)| kind(r));
    match (found.next(), found.next()) {
        (Some(one), None) => Some(one),
        _ => None,
    }
}

fn weight(metrics: &MetricRecord, key: &str) -> Result<f64, Rejection> {
    let value = metrics
        .get_f64(key)
        .map_err(|e| Rejection::NoWeight(e.to_string()))?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(Rejection::BadWeight {
            key: key.to_string(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{Array, MessageError, error_code};

    fn metrics(n: i64) -> MetricRecord {
        let mut m = MetricRecord::new();
        m.insert("num-examples", n);
        m
    }

    fn arrays() -> ArrayRecord {
        let mut a = ArrayRecord::new();
        a.insert("w", Array::from_slice(&[1.0f32]));
        a
    }

    fn reply(content: RecordDict) -> Message {
        Message::new(content, 0, "train")
    }

    #[test]
    fn reads_arrays_metrics_and_weight() {
        let m = reply(
            RecordDict::new()
                .with("arrays", arrays())
                .with("metrics", metrics(3)),
        );
        let r = train_reply(&m, "arrays", "num-examples").unwrap();
        assert_eq!(r.weight, 3.0);
        assert_eq!(r.arrays.len(), 1);
    }

    #[test]
    fn a_sole_record_under_another_key_is_accepted_like_flower() {
        let m = reply(
            RecordDict::new()
                .with("model", arrays())
                .with("m", metrics(3)),
        );
        assert!(train_reply(&m, "arrays", "num-examples").is_ok());
    }

    #[test]
    fn error_reply_is_rejected_with_code_and_reason() {
        let mut m = reply(RecordDict::new());
        m.payload = Payload::Error(MessageError::new(
            error_code::CLIENT_APP_RAISED_EXCEPTION,
            "boom",
        ));
        let err = train_reply(&m, "arrays", "num-examples").unwrap_err();
        assert_eq!(err.to_string(), "the node reported error 2: boom");
    }

    #[test]
    fn missing_records_and_weights_are_named() {
        let m = reply(RecordDict::new().with("metrics", metrics(3)));
        let err = train_reply(&m, "arrays", "num-examples").unwrap_err();
        assert!(matches!(err, Rejection::NoArrays(_)), "{err}");

        let m = reply(RecordDict::new().with("arrays", arrays()));
        let err = train_reply(&m, "arrays", "num-examples").unwrap_err();
        assert!(matches!(err, Rejection::NoMetrics(_)), "{err}");

        let m = reply(RecordDict::new().with("metrics", MetricRecord::new()));
        let err = evaluate_reply(&m, "num-examples").unwrap_err();
        assert!(err.to_string().contains("num-examples"), "{err}");
    }

    #[test]
    fn zero_negative_and_nan_weights_are_rejected() {
        for bad in [0.0, -2.0, f64::NAN] {
            let mut mr = MetricRecord::new();
            mr.insert("num-examples", bad);
            let m = reply(RecordDict::new().with("metrics", mr));
            let err = evaluate_reply(&m, "num-examples").unwrap_err();
            assert!(matches!(err, Rejection::BadWeight { .. }), "{err}");
        }
    }
}
