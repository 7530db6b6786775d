//! The AppIo vocabulary on the wire, beyond messages: a run context as `AppContext` (its
//! state as an envelope, so that arrays in it are chunked), a reply payload as an envelope's
//! message, a ServerApp's outcome, and the key under which a token's chunks are kept.

use crate::convert::{context_from_proto, context_to_proto};
use crate::error::{DecodeError, Loc};
use crate::proto::{self, v1};
use floret_core::{AppOutcome, Context, Message, Metadata, Payload, RecordDict};
use sha2::{Digest, Sha256};

/// The object store's key for the app process that holds `token`: chunks are delivered to
/// a token and served to that token only. The first 8 bytes of its sha256, so that the key
/// reveals nothing of the token.
pub(crate) fn peer(token: &str) -> u64 {
    let digest = Sha256::digest(token.as_bytes());
    let mut key = [0u8; 8];
    key.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(key)
}

/// A message that only carries `payload`: how a context's state and a reply's payload
/// travel in an envelope (the metadata means nothing).
pub(crate) fn carrier(payload: Payload) -> Message {
    Message {
        metadata: Metadata::default(),
        payload,
    }
}

/// A context without its state, which travels as `carrier(Payload::Content(state))`.
pub(crate) fn context_head(c: &Context) -> proto::Context {
    let head = Context {
        run_id: c.run_id,
        node_id: c.node_id,
        node_config: c.node_config.clone(),
        state: RecordDict::new(),
        run_config: c.run_config.clone(),
    };
    proto::Context {
        state: None,
        ..context_to_proto(&head)
    }
}

/// The context of an `AppContext` whose head is `head` and whose state `state` carries.
pub(crate) fn context_from_parts(
    head: Option<proto::Context>,
    state: Message,
) -> Result<Context, DecodeError> {
    let loc = Loc::Root("AppContext");
    let head = head.ok_or_else(|| loc.field("context").missing())?;
    let mut context = context_from_proto(proto::Context {
        state: None,
        ..head
    })?;
    context.state = match state.payload {
        Payload::Content(state) => state,
        Payload::Error(_) => {
            return Err(loc
                .field("state")
                .invalid("carries an error where the context's state belongs"));
        }
    };
    Ok(context)
}

pub(crate) fn outcome_to_proto(token: String, outcome: AppOutcome) -> v1::FinishRequest {
    v1::FinishRequest {
        token,
        failure: match outcome {
            AppOutcome::Completed => None,
            AppOutcome::Failed(reason) => Some(reason),
        },
    }
}

pub(crate) fn outcome_from_proto(failure: Option<String>) -> AppOutcome {
    match failure {
        None => AppOutcome::Completed,
        Some(reason) => AppOutcome::Failed(reason),
    }
}
