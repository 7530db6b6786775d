//! The rules both stores obey, written once: how ids and timestamps are stamped, who may
//! send and answer, when an instruction expires, what the SuperLink answers in a node's
//! place, in which order redelivered work comes back, and how nodes are listed.
//!
//! Pure: no I/O and no clock. Callers pass `now`, so each rule is tested here on its own
//! and each store only decides where the data lives.

use super::{NewRun, RunInfo, StateError};
use floret_core::{
    Message, MessageError, Metadata, NodeInfo, Payload, ReplyFold, RunStatus, error_code,
};
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// Why an instruction's node is unavailable when it was never registered (or is gone
/// already) at the moment of the push.
pub(super) const NOT_CONNECTED: &str = "it is not connected to this SuperLink";

/// Why a node the sweep found past its lease is unavailable.
pub(super) const OFFLINE: &str = "it missed its heartbeats and is offline";

/// A message's id: its run, the store's lifetime tag and a store-wide counter, in hex.
/// Unique within a store by the counter; across SuperLink lifetimes by the run id (random,
/// so a fresh store does not reuse the last one's) and the tag (drawn anew each time a
/// store is opened, so a database restored from a backup, whose counter went back, does
/// not reissue ids either). SuperNodes de-duplicate instructions by this id, so an id
/// reissued for another instruction would be silently dropped.
///
/// Written by hand rather than with `format!`: a simulation stamps two ids per node and
/// round, and the formatting machinery cost about a tenth of a million-node round.
pub(super) fn message_id(run_id: u64, lifetime: u32, counter: u64) -> String {
    let mut id = [0u8; 16 + 1 + 8 + 1 + 16];
    let mut len = push_hex(&mut id, 0, run_id);
    id[len] = b'-';
    len = push_hex(&mut id, len + 1, u64::from(lifetime));
    id[len] = b'-';
    len = push_hex(&mut id, len + 1, counter);
    // Hex digits and dashes only: always UTF-8.
    String::from_utf8_lossy(&id[..len]).into_owned()
}

/// Writes `value` at `at` in lower-case hex without leading zeros (`0` for zero), as
/// `{:x}`, and returns where it ends.
fn push_hex(out: &mut [u8], at: usize, value: u64) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let nibbles = (64 - value.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in out[at..at + nibbles].iter_mut().enumerate() {
        *slot = DIGITS[((value >> ((nibbles - 1 - i) * 4)) & 0xf) as usize];
    }
    at + nibbles
}

/// The run, lifetime tag and counter of an id `message_id` wrote; `None` for any other
/// string (leading zeros, upper case, a part too long or missing), so that exactly one
/// string names each instruction.
pub(super) fn parse_message_id(id: &str) -> Option<(u64, u32, u64)> {
    fn part(s: &str) -> Option<u64> {
        let canonical = !s.is_empty()
            && s.len() <= 16
            && (s == "0" || !s.starts_with('0'))
            && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        canonical.then(|| u64::from_str_radix(s, 16).ok()).flatten()
    }
    let mut parts = id.split('-');
    let run_id = part(parts.next()?)?;
    let lifetime = u32::try_from(part(parts.next()?)?).ok()?;
    let counter = part(parts.next()?)?;
    parts
        .next()
        .is_none()
        .then_some((run_id, lifetime, counter))
}

/// How a store numbers its runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunIds {
    /// Random non-zero 64-bit ids, as Flower's: a SuperLink started on fresh state never
    /// reuses the ids of the one before, whose runs SuperNodes may still hold state for.
    Random,
    /// 1, 2, 3, …: for a simulation, whose chaos draws are keyed by run id so that a
    /// seeded simulation repeats exactly, and which no SuperNode outlives.
    Sequential,
}

/// A new run's id: the next one for `Sequential` (`last` is the highest so far), else the
/// first of `draw`'s values that is neither 0 (no run) nor `taken`.
pub(super) fn new_run_id(
    ids: RunIds,
    last: u64,
    mut draw: impl FnMut() -> u64,
    taken: impl Fn(u64) -> bool,
) -> u64 {
    match ids {
        RunIds::Sequential => last + 1,
        RunIds::Random => loop {
            let id = draw();
            if id != 0 && !taken(id) {
                break id;
            }
        },
    }
}

/// A SuperLink incarnation id from a random draw: never 0, which SuperNodes read as "this
/// SuperLink does not say" (an older one), for which they keep their caches.
pub(super) fn incarnation(mut draw: impl FnMut() -> u64) -> u64 {
    loop {
        let id = draw();
        if id != 0 {
            break id;
        }
    }
}

/// The order runs are listed in (`flwr ls`): oldest first, as they were submitted. Not by
/// id: run ids are random.
pub(super) fn sort_for_listing(runs: &mut [RunInfo]) {
    runs.sort_by(|a, b| {
        a.created_at
            .total_cmp(&b.created_at)
            .then(a.run_id.cmp(&b.run_id))
    });
}

/// A new run's record: `pending`, created and changed at `now`.
pub(super) fn new_run(run_id: u64, run: NewRun, now: f64) -> RunInfo {
    RunInfo {
        run_id,
        app: run.app,
        federation: run.federation,
        run_config: run.run_config,
        status: RunStatus::Pending,
        reason: String::new(),
        created_at: now,
        status_changed_at: now,
        owner: run.owner,
    }
}

/// Moves `info` to `status` if the run's state machine allows it; unchanged otherwise.
pub(super) fn set_status(
    info: &mut RunInfo,
    status: RunStatus,
    reason: &str,
    now: f64,
) -> Result<(), StateError> {
    info.status = info.status.transition(status)?;
    info.reason = reason.to_string();
    info.status_changed_at = now;
    Ok(())
}

/// Only a running run sends instructions.
pub(super) fn check_can_send(run_id: u64, status: RunStatus) -> Result<(), StateError> {
    if status == RunStatus::Running {
        Ok(())
    } else {
        Err(StateError::RunNotRunning(run_id))
    }
}

/// A finished run's log and checkpoint are final.
pub(super) fn check_open(run_id: u64, status: RunStatus) -> Result<(), StateError> {
    if status.is_finished() {
        Err(StateError::RunFinished(run_id))
    } else {
        Ok(())
    }
}

/// Stamps an instruction as the SuperLink sends it: its run, its id, the SuperLink as its
/// source (whatever the ServerApp wrote there) and `now` as its creation time.
pub(super) fn stamp_instruction(md: &mut Metadata, run_id: u64, message_id: String, now: f64) {
    md.run_id = run_id;
    md.message_id = message_id;
    md.src_node_id = 0;
    md.created_at = now;
}

/// Whether `from` may answer the instruction it names, sent to `to`: only its own node may.
/// (An instruction not in flight is refused by the caller with `UnknownReply`.)
pub(super) fn check_replier(message_id: &str, from: u64, to: u64) -> Result<(), StateError> {
    if from == to {
        Ok(())
    } else {
        Err(StateError::WrongReplier {
            message_id: message_id.to_string(),
            from,
            to,
        })
    }
}

/// Stamps an accepted reply: its own id, the run of the instruction it answers, `now`.
pub(super) fn stamp_reply(md: &mut Metadata, run_id: u64, message_id: String, now: f64) {
    md.message_id = message_id;
    md.run_id = run_id;
    md.created_at = now;
}

/// When an instruction created at `created_at` with `ttl` expires; `None` for one without a
/// creation time, which never does (the rule of `Message::is_expired`).
pub(super) fn expires_at(created_at: f64, ttl: f64) -> Option<f64> {
    (created_at > 0.0).then_some(created_at + ttl)
}

/// Whether an instruction expiring at `expires_at` has expired at `now`: the end itself is
/// still alive.
pub(super) fn is_expired(expires_at: Option<f64>, now: f64) -> bool {
    expires_at.is_some_and(|end| now > end)
}

/// The error answering an instruction to `node` that cannot reach it.
pub(super) fn node_unavailable(node: u64, reason: &str) -> MessageError {
    MessageError::new(
        error_code::NODE_UNAVAILABLE,
        format!("node {node} unavailable: {reason}"),
    )
}

/// The error answering an instruction whose TTL ended before its node replied.
pub(super) fn ttl_expired(flight: &Inflight) -> MessageError {
    MessageError::new(
        error_code::MESSAGE_TTL_EXPIRED,
        format!(
            "message TTL of {} s expired before node {} replied",
            flight.ttl, flight.dst_node_id
        ),
    )
}

/// An instruction sent and not answered yet, kept small: just enough to check who may
/// answer and to answer in the node's place (node unavailable, TTL expired) without the
/// content.
#[derive(Clone)]
pub(super) struct Inflight {
    pub(super) run_id: u64,
    pub(super) dst_node_id: u64,
    created_at: f64,
    ttl: f64,
    /// What the instructions of one push share.
    pub(super) push: Arc<Push>,
}

/// What the instructions of one push share: one copy for a round's million.
pub(super) struct Push {
    /// Group id and message type, copied into error replies so the ServerApp files them
    /// under the right round and phase.
    group_id: String,
    message_type: String,
    /// Where the replies are folded as they arrive (`Grid::send_folding`), if anywhere.
    pub(super) fold: Option<Arc<dyn ReplyFold>>,
}

impl Inflight {
    /// The flight of an instruction not stamped yet: its run, node and TTL, sent at `now`.
    pub(super) fn unstamped(run_id: u64, md: &Metadata, now: f64, push: Arc<Push>) -> Inflight {
        Inflight {
            run_id,
            dst_node_id: md.dst_node_id,
            created_at: now,
            ttl: md.ttl,
            push,
        }
    }

    /// What the instructions of a push share, made from its first one.
    pub(super) fn push_of(md: &Metadata, fold: Option<Arc<dyn ReplyFold>>) -> Arc<Push> {
        Arc::new(Push {
            group_id: md.group_id.clone(),
            message_type: md.message_type.clone(),
            fold,
        })
    }

    /// Whether an instruction with `md` would have this flight but for its node: the same
    /// TTL, group id and message type.
    pub(super) fn takes_like(&self, md: &Metadata) -> bool {
        self.ttl.to_bits() == md.ttl.to_bits()
            && self.push.group_id == md.group_id
            && self.push.message_type == md.message_type
    }

    /// This flight, for an instruction to `node`.
    pub(super) fn for_node(&self, node: u64) -> Inflight {
        Inflight {
            dst_node_id: node,
            ..self.clone()
        }
    }

    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(super) fn of(md: &Metadata) -> Inflight {
        Inflight::sharing(md, &mut None, None)
    }

    /// As `of`, but reusing `last`'s group id and message type when they are the same: a
    /// round's million instructions then keep one copy of them, not two million. Replies
    /// go to `fold` when there is one.
    pub(super) fn sharing(
        md: &Metadata,
        last: &mut Option<Arc<Push>>,
        fold: Option<&Arc<dyn ReplyFold>>,
    ) -> Inflight {
        let push = match last {
            Some(p) if p.group_id == md.group_id && p.message_type == md.message_type => p.clone(),
            _ => last
                .insert(Arc::new(Push {
                    group_id: md.group_id.clone(),
                    message_type: md.message_type.clone(),
                    fold: fold.cloned(),
                }))
                .clone(),
        };
        Inflight {
            run_id: md.run_id,
            dst_node_id: md.dst_node_id,
            created_at: md.created_at,
            ttl: md.ttl,
            push,
        }
    }

    pub(super) fn is_expired(&self, now: f64) -> bool {
        is_expired(expires_at(self.created_at, self.ttl), now)
    }

    /// When the instruction was sent.
    pub(super) fn created_at(&self) -> f64 {
        self.created_at
    }
}

/// The error reply the SuperLink gives in a node's place: it looks as if the node had
/// answered message `reply_to`, so a strategy needs no special case.
pub(super) fn error_reply(
    flight: &Inflight,
    reply_to: String,
    message_id: String,
    error: MessageError,
    now: f64,
) -> Message {
    Message {
        metadata: Metadata {
            run_id: flight.run_id,
            message_id,
            src_node_id: flight.dst_node_id,
            dst_node_id: 0,
            reply_to_message_id: reply_to,
            group_id: flight.push.group_id.clone(),
            ttl: flight.ttl,
            message_type: flight.push.message_type.clone(),
            created_at: now,
            trace_context: String::new(),
        },
        payload: Payload::Error(error),
    }
}

/// Puts instructions a node took and did not answer back at the head of its queue, in the
/// order it took them: redelivered work goes before newer work. (The SQLite store gets the
/// same order from the queue position each row keeps.)
pub(super) fn requeue<T>(queue: &mut VecDeque<T>, again: Vec<T>) {
    for m in again.into_iter().rev() {
        queue.push_front(m);
    }
}

/// Every node with an allowed key (`keyed`), then every registered node without one
/// (`registered`: id, and whether it has shown it is alive, which is what `online` says
/// of it), by id.
pub(super) fn nodes_info(mut keyed: Vec<NodeInfo>, registered: &[(u64, bool)]) -> Vec<NodeInfo> {
    let with_key: HashSet<u64> = keyed.iter().map(|n| n.node_id).collect();
    keyed.extend(
        registered
            .iter()
            .filter(|(id, _)| !with_key.contains(id))
            .map(|&(node_id, online)| NodeInfo {
                node_id,
                online,
                ..NodeInfo::default()
            }),
    );
    keyed.sort_by_key(|n| n.node_id);
    keyed
}

/// FAB hashes are hex; either case names the same FAB.
pub(super) fn fab_key(fab_hash: &str) -> String {
    fab_hash.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::{RecordDict, SubStatus};

    fn flight(created_at: f64, ttl: f64) -> Inflight {
        let mut m = Message::new(RecordDict::new(), 7, "train").with_group_id("3");
        m.metadata.run_id = 2;
        m.metadata.created_at = created_at;
        m.metadata.ttl = ttl;
        Inflight::of(&m.metadata)
    }

    #[test]
    fn runs_are_listed_in_the_order_they_were_submitted_whatever_their_random_ids() {
        let run = |id, at| new_run(id, super::super::NewRun::default(), at);
        let mut runs = vec![run(9, 3.0), run(1, 2.0), run(u64::MAX, 1.0), run(5, 2.0)];
        sort_for_listing(&mut runs);
        let ids: Vec<u64> = runs.iter().map(|r| r.run_id).collect();
        assert_eq!(ids, vec![u64::MAX, 1, 5, 9]);
    }

    #[test]
    fn message_ids_parse_back_and_nothing_else_does() {
        for (run, lifetime, counter) in [(1, 0, 1), (255, 0xab, 16), (u64::MAX, u32::MAX, 0)] {
            let id = message_id(run, lifetime, counter);
            assert_eq!(
                parse_message_id(&id),
                Some((run, lifetime, counter)),
                "{id}"
            );
        }
        for bad in [
            "",
            "1-0",
            "1-0-1-2",
            "01-0-1",
            "1-0-0a",
            "1-0-A",
            "1--1",
            "1-0-x",
            "1-100000000-1",
            "1-0-10000000000000000",
            " 1-0-1",
        ] {
            assert_eq!(parse_message_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn message_ids_name_their_run_lifetime_and_counter_in_hex() {
        assert_eq!(message_id(255, 0xab, 16), "ff-ab-10");
    }

    #[test]
    fn message_ids_read_as_hex_formatting_would_write_them() {
        let values = [
            0,
            1,
            9,
            10,
            15,
            16,
            255,
            0x1000,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ];
        for &run in &values {
            for &counter in &values {
                let lifetime = (counter as u32) ^ 0xdead_beef;
                assert_eq!(
                    message_id(run, lifetime, counter),
                    format!("{run:x}-{lifetime:x}-{counter:x}")
                );
            }
        }
    }

    #[test]
    fn message_ids_of_two_lifetimes_differ_even_when_run_and_counter_repeat() {
        assert_ne!(message_id(1, 7, 1), message_id(1, 8, 1));
    }

    #[test]
    fn random_run_ids_skip_zero_and_ids_in_use() {
        let mut draws = [0, 5, 9].into_iter();
        let id = new_run_id(RunIds::Random, 0, || draws.next().unwrap(), |id| id == 5);
        assert_eq!(id, 9);
    }

    #[test]
    fn random_run_ids_of_two_fresh_stores_differ() {
        let a = new_run_id(RunIds::Random, 0, rand::random, |_| false);
        let b = new_run_id(RunIds::Random, 0, rand::random, |_| false);
        assert_ne!(
            a, b,
            "two fresh SuperLinks would name their first run alike"
        );
    }

    #[test]
    fn sequential_run_ids_count_up_from_the_last() {
        assert_eq!(new_run_id(RunIds::Sequential, 0, || 7, |_| false), 1);
        assert_eq!(new_run_id(RunIds::Sequential, 41, || 7, |_| false), 42);
    }

    #[test]
    fn an_incarnation_is_never_zero() {
        let mut draws = [0, 0, 3].into_iter();
        assert_eq!(incarnation(|| draws.next().unwrap()), 3);
    }

    #[test]
    fn a_new_run_is_pending_since_now() {
        let info = new_run(4, NewRun::default(), 12.5);
        assert_eq!(info.status, RunStatus::Pending);
        assert_eq!(
            (info.run_id, info.created_at, info.status_changed_at),
            (4, 12.5, 12.5)
        );
    }

    #[test]
    fn a_refused_transition_changes_nothing() {
        let mut info = new_run(1, NewRun::default(), 1.0);
        set_status(&mut info, RunStatus::Starting, "go", 2.0).unwrap();
        assert_eq!((info.reason.as_str(), info.status_changed_at), ("go", 2.0));
        let before = info.clone();
        assert!(matches!(
            set_status(&mut info, RunStatus::Pending, "back", 3.0),
            Err(StateError::Transition(_))
        ));
        assert_eq!(info, before);
    }

    #[test]
    fn only_running_runs_send_and_only_unfinished_ones_log() {
        assert_eq!(check_can_send(1, RunStatus::Running), Ok(()));
        assert_eq!(
            check_can_send(1, RunStatus::Pending),
            Err(StateError::RunNotRunning(1))
        );
        assert_eq!(check_open(1, RunStatus::Running), Ok(()));
        assert_eq!(
            check_open(1, RunStatus::Finished(SubStatus::Stopped)),
            Err(StateError::RunFinished(1))
        );
    }

    #[test]
    fn a_sent_instruction_comes_from_the_superlink() {
        let mut md = Metadata {
            src_node_id: 99,
            ..Metadata::default()
        };
        stamp_instruction(&mut md, 3, "3-1".into(), 8.0);
        assert_eq!((md.run_id, md.message_id.as_str()), (3, "3-1"));
        assert_eq!((md.src_node_id, md.created_at), (0, 8.0));
    }

    #[test]
    fn only_the_addressed_node_may_answer() {
        assert_eq!(check_replier("m", 5, 5), Ok(()));
        assert_eq!(
            check_replier("m", 9, 5),
            Err(StateError::WrongReplier {
                message_id: "m".into(),
                from: 9,
                to: 5
            })
        );
    }

    #[test]
    fn a_reply_is_stamped_with_its_instructions_run() {
        let mut md = Message::new(RecordDict::new(), 0, "train").metadata;
        md.run_id = 77;
        stamp_reply(&mut md, 3, "3-2".into(), 9.0);
        assert_eq!(
            (md.run_id, md.message_id.as_str(), md.created_at),
            (3, "3-2", 9.0)
        );
    }

    #[test]
    fn the_ttl_end_itself_is_alive_and_no_creation_time_never_expires() {
        assert_eq!(expires_at(100.0, 5.0), Some(105.0));
        assert!(!flight(100.0, 5.0).is_expired(105.0));
        assert!(flight(100.0, 5.0).is_expired(105.5));
        assert_eq!(expires_at(0.0, 5.0), None);
        assert!(!flight(0.0, 5.0).is_expired(1e12));
    }

    #[test]
    fn an_error_reply_looks_like_the_nodes_own_answer() {
        let f = flight(1.0, 30.0);
        let reply = error_reply(
            &f,
            "2-1".into(),
            "2-2".into(),
            node_unavailable(7, OFFLINE),
            4.0,
        );
        let md = &reply.metadata;
        assert_eq!((md.run_id, md.src_node_id, md.dst_node_id), (2, 7, 0));
        assert_eq!(
            (md.reply_to_message_id.as_str(), md.message_id.as_str()),
            ("2-1", "2-2")
        );
        assert_eq!(
            (md.group_id.as_str(), md.message_type.as_str()),
            ("3", "train")
        );
        assert_eq!((md.ttl, md.created_at), (30.0, 4.0));
        let err = reply.error().unwrap();
        assert_eq!(err.code, error_code::NODE_UNAVAILABLE);
        assert_eq!(
            err.reason,
            "node 7 unavailable: it missed its heartbeats and is offline"
        );
        let expired = ttl_expired(&flight(1.0, 5.0));
        assert_eq!(expired.code, error_code::MESSAGE_TTL_EXPIRED);
        assert_eq!(
            expired.reason,
            "message TTL of 5 s expired before node 7 replied"
        );
    }

    #[test]
    fn redelivered_work_goes_before_newer_work_in_its_order() {
        let mut queue = VecDeque::from(["late"]);
        requeue(&mut queue, vec!["evaluate", "query"]);
        assert_eq!(queue, ["evaluate", "query", "late"]);
    }

    #[test]
    fn nodes_are_listed_keyed_or_not_by_id() {
        let keyed = vec![NodeInfo {
            node_id: 9,
            online: false,
            registered_at: 3.0,
            ..NodeInfo::default()
        }];
        let registered = [(2, true), (9, true), (4, false)];
        let got: Vec<(u64, bool, f64)> = nodes_info(keyed, &registered)
            .iter()
            .map(|n| (n.node_id, n.online, n.registered_at))
            .collect();
        assert_eq!(got, [(2, true, 0.0), (4, false, 0.0), (9, false, 3.0)]);
    }

    #[test]
    fn fab_hashes_ignore_case() {
        assert_eq!(fab_key("ABcd"), "abcd");
    }
}
