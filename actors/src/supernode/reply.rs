//! Getting a reply to the SuperLink. A training result is worth waiting for: while the
//! SuperLink is unreachable the push is retried with backoff, up to the instruction's TTL
//! (after which the SuperLink has answered it in the node's place anyway). Any other
//! refusal (the instruction was already answered, the node was forgotten, the SuperLink's
//! state database is full) drops the reply with a warning that carries the SuperLink's
//! reason: the SuperLink has moved on and so do we, but the node's work is lost and the
//! operator of the node should see why (a full database on the SuperLink is not routine).

use crate::policy::backoff::Backoff;
use crate::policy::clock::unix_now;
use floret_core::{Fleet, FleetError, Message, MessageError, Metadata, Payload, RecordDict};
use std::sync::Arc;
use std::time::Duration;

/// Upper bound on how long one reply is retried, whatever its TTL says.
const MAX_PUSH_WAIT: Duration = Duration::from_secs(3600);

/// Pushes `reply` from its source node in a task of its own, so neither the SuperNode nor
/// a ClientApp host waits for the network.
pub(super) fn spawn_push(fleet: Arc<dyn Fleet>, backoff: Backoff, reply: Message, expires_at: f64) {
    tokio::spawn(push(fleet, backoff, reply, expires_at));
}

async fn push(fleet: Arc<dyn Fleet>, backoff: Backoff, reply: Message, expires_at: f64) {
    let node_id = reply.metadata.src_node_id;
    let run_id = reply.metadata.run_id;
    let reply_to = reply.metadata.reply_to_message_id.clone();
    let deadline = tokio::time::Instant::now() + time_left(expires_at, unix_now(), MAX_PUSH_WAIT);
    let mut retry = 0;
    loop {
        match fleet.push_messages(node_id, vec![reply.clone()]).await {
            Ok(()) => return,
            Err(FleetError::Unavailable(e)) => {
                let delay = backoff.delay(retry, rand::random());
                if tokio::time::Instant::now() + delay > deadline {
                    tracing::warn!(node_id, run_id, message_id = %reply_to,
                        "reply dropped: SuperLink unreachable until the message expired ({e})");
                    return;
                }
                tokio::time::sleep(delay).await;
                retry += 1;
            }
            Err(e) => {
                tracing::warn!(node_id, run_id, message_id = %reply_to,
                    "reply dropped: the SuperLink refused it: {e}");
                return;
            }
        }
    }
}

/// An error reply to the instruction with metadata `md`, for failures outside the
/// ClientApp's handlers.
pub(super) fn error_reply(md: &Metadata, code: i64, reason: String) -> Message {
    reply_with(md, Payload::Error(MessageError::new(code, reason)))
}

/// The reply carrying `payload` to the instruction with metadata `md`.
pub(super) fn reply_with(md: &Metadata, payload: Payload) -> Message {
    let header = Message {
        metadata: md.clone(),
        payload: Payload::Content(RecordDict::new()),
    };
    header.reply(payload)
}

/// Time from `now` until `expires_at` (Unix seconds), at most `cap`. Both come from a
/// peer's clock and TTL, so a NaN, past or absurd deadline gives zero instead of panicking
/// a `Duration` conversion.
pub(super) fn time_left(expires_at: f64, now: f64, cap: Duration) -> Duration {
    Duration::try_from_secs_f64((expires_at - now).clamp(0.0, cap.as_secs_f64()))
        .unwrap_or(Duration::ZERO)
}

/// When (node clock, Unix seconds) the SuperLink stops waiting for a reply to the
/// instruction with metadata `md`.
pub(super) fn expires_at(md: &Metadata) -> f64 {
    if md.created_at > 0.0 {
        md.created_at + md.ttl
    } else {
        unix_now() + md.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use floret_core::{RegisterNode, RunInfo};
    use std::sync::Mutex;
    use tokio::sync::mpsc;

    /// A SuperLink whose database is full: every reply is refused with its reason.
    struct FullLink;

    const FULL: &str = "refused 1 of 1 replies: the SuperLink's database refused the write: \
                        the state database is full: free disk space where it is kept";

    #[async_trait]
    impl Fleet for FullLink {
        async fn register_node(
            &self,
            _: RegisterNode,
        ) -> Result<floret_core::api::Registration, FleetError> {
            Err(FleetError::Invalid(FULL.into()))
        }
        async fn deactivate_node(&self, _: u64) -> Result<(), FleetError> {
            Err(FleetError::Invalid(FULL.into()))
        }
        async fn heartbeat(&self, _: u64, _: f64) -> Result<(), FleetError> {
            Err(FleetError::Invalid(FULL.into()))
        }
        async fn pull_messages(&self, _: u64) -> Result<Vec<Message>, FleetError> {
            Err(FleetError::Invalid(FULL.into()))
        }
        async fn push_messages(&self, _: u64, _: Vec<Message>) -> Result<(), FleetError> {
            Err(FleetError::Invalid(FULL.into()))
        }
        async fn get_run(&self, _: u64) -> Result<RunInfo, FleetError> {
            Err(FleetError::Invalid(FULL.into()))
        }
        async fn subscribe(&self, _: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
            Err(FleetError::Invalid(FULL.into()))
        }
    }

    /// Log lines, for the level they were logged at.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Issue 12: a reply refused because the SuperLink's database is full was an INFO line,
    /// easy to miss while the node's work was lost. It is a warning with the reason.
    #[tokio::test]
    async fn a_refused_reply_is_a_warning_with_the_superlinks_reason() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let md = Metadata {
            run_id: 7,
            message_id: "7-1".into(),
            dst_node_id: 3,
            ttl: 60.0,
            ..Metadata::default()
        };
        let reply = reply_with(&md, Payload::Content(RecordDict::new()));
        push(
            Arc::new(FullLink),
            Backoff::default(),
            reply,
            unix_now() + 60.0,
        )
        .await;
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("reply dropped"))
            .unwrap_or_else(|| panic!("no line about the reply: {text}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains("the state database is full"), "{line}");
    }

    /// A deadline built from a peer's clock and TTL never panics the conversion: NaN,
    /// infinite and past deadlines wait zero, a far one waits at most the cap.
    #[test]
    fn time_left_is_zero_for_a_nonsense_deadline_and_capped_for_a_far_one() {
        let cap = Duration::from_secs(60);
        assert_eq!(time_left(110.5, 100.0, cap), Duration::from_secs_f64(10.5));
        assert_eq!(time_left(1e300, 100.0, cap), cap);
        for bad in [f64::NAN, f64::NEG_INFINITY, 50.0] {
            assert_eq!(time_left(bad, 100.0, cap), Duration::ZERO, "{bad}");
        }
        assert_eq!(time_left(f64::INFINITY, f64::INFINITY, cap), Duration::ZERO);
    }
}
