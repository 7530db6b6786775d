//! What a server lets one peer, or all of them together, hold of it: connections, streams,
//! request bytes and uploaded chunks. Pure decisions on counts and times, no I/O and no
//! clock: the accept loop, the connection wrapper, the request layer (`crate::guard`) and the
//! object store ask these functions and act on the answer, so each rule is written once and
//! tested here with plain numbers.
//!
//! The defaults are sized so that a federation of 10,000 SuperNodes, each with one
//! connection, a `Subscribe` stream and a few chunk transfers, never meets them, while a peer
//! without credentials cannot make the SuperLink hold more than a bounded amount: a
//! connection that sends nothing is closed after [`ServerLimits::handshake_timeout`], one
//! that has no call open after [`ServerLimits::idle_timeout`], and a request is refused as
//! soon as its length prefix says it is too large.

use crate::transport_error::Api;
use std::net::IpAddr;
use std::time::Duration;

/// The limits of one server (one API on one address, over gRPC and QUIC alike). Each field
/// is a flag of `flower-superlink` (and, where it applies, `flower-supernode`); the error a
/// peer meets names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once, from all peers (`--max-connections`). Default 32,768.
    pub max_connections: usize,
    /// Connections open at once from one IP address (`--max-connections-per-ip`). Default
    /// 16,384: a whole federation behind one NAT address still fits.
    pub max_connections_per_ip: usize,
    /// Calls open at once on one connection (`--max-concurrent-streams`): HTTP/2's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` and QUIC's stream limit. Default 256; a SuperNode
    /// uses a `Subscribe`, a heartbeat and four chunk transfers.
    pub max_concurrent_streams: u32,
    /// How long a new connection may go without sending a byte (not even a TLS hello or the
    /// HTTP/2 preface) before it is closed (`--handshake-timeout`). Default 10 s.
    pub handshake_timeout: Duration,
    /// How long a connection may stay open with no call in progress before it is closed
    /// (`--connection-idle-timeout`). A SuperNode keeps its `Subscribe` stream open, so it is
    /// never idle; clients reconnect on their next call. Default 5 minutes.
    pub idle_timeout: Duration,
    /// The largest request of a call that carries messages or chunks (`--max-request-size`):
    /// Fleet `PushMessages` and the AppIo APIs. Default 64 MiB.
    pub max_request_bytes: usize,
    /// The largest FAB a `StartRun` may carry (`--max-fab-size`). Default 512 MiB (Flower's
    /// gRPC message limit), which is also the most a SuperNode accepts from `GetFab`.
    pub max_fab_bytes: usize,
    /// Bytes of uploaded chunks one node may have waiting for its `PushMessages`
    /// (`--max-upload-bytes-per-node`). Default 1 GiB: one reply with the largest model a
    /// built-in app allows (`--max-model-bytes`, 900 MiB) fits.
    pub max_upload_bytes_per_node: usize,
    /// Bytes of uploaded chunks the nodes of one run together may have waiting
    /// (`--max-upload-bytes-per-run`). Default 4 GiB: four nodes' worth of
    /// `--max-upload-bytes-per-node` at once, so a round of large replies streams through
    /// while half of `--max-upload-bytes` stays for the other runs, and one heavy run
    /// cannot fill the SuperLink for everyone.
    pub max_upload_bytes_per_run: usize,
    /// Bytes of uploaded chunks all nodes together may have waiting
    /// (`--max-upload-bytes`). Default 8 GiB.
    pub max_upload_bytes: usize,
    /// Bytes of large requests (over [`SMALL_REQUEST_BYTES`]) being received at once, all
    /// calls of the server together (`--max-inflight-request-bytes`): a request that would
    /// pass it waits, unread, until others are done, so that many large bodies at once
    /// (FABs in `StartRun`s, say) cannot add up. Default 1 GiB.
    pub max_inflight_request_bytes: usize,
}

/// The largest request of a call that carries neither messages nor a FAB (heartbeats,
/// registrations, logins, listing runs): what it carries is a few ids and names.
pub const SMALL_REQUEST_BYTES: usize = 1024 * 1024;

/// Room for the fields around the largest chunk or FAB in its request.
const ENVELOPE_SLACK: usize = 1024 * 1024;

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_connections: 32_768,
            max_connections_per_ip: 16_384,
            max_concurrent_streams: 256,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_request_bytes: crate::grpc::MAX_MESSAGE_LEN,
            max_fab_bytes: crate::grpc::MAX_FAB_LEN,
            max_upload_bytes_per_node: 1024 * 1024 * 1024,
            max_upload_bytes_per_run: 4 * 1024 * 1024 * 1024,
            max_upload_bytes: 8 * 1024 * 1024 * 1024,
            max_inflight_request_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// Why a connection was refused or closed; its `Display` is the log line and names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRefused {
    /// The server holds `max_connections` connections.
    #[error(
        "refused a connection from {peer}: {open} connections are open, the limit of --max-connections"
    )]
    TooMany {
        /// The address refused.
        peer: IpAddr,
        /// Connections open.
        open: usize,
    },
    /// The peer's address holds `max_connections_per_ip` connections.
    #[error(
        "refused a connection from {peer}: it has {open} connections open, the limit of --max-connections-per-ip"
    )]
    TooManyFromPeer {
        /// The address refused.
        peer: IpAddr,
        /// Its connections open.
        open: usize,
    },
}

impl ServerLimits {
    /// Whether one more connection from `peer` is admitted, given `open` connections in all
    /// and `open_from_peer` of them from that address.
    ///
    /// # Errors
    /// [`ConnectionRefused`] naming the cap that is full.
    pub fn admit_connection(
        &self,
        peer: IpAddr,
        open: usize,
        open_from_peer: usize,
    ) -> Result<(), ConnectionRefused> {
        if open >= self.max_connections {
            return Err(ConnectionRefused::TooMany { peer, open });
        }
        if open_from_peer >= self.max_connections_per_ip {
            return Err(ConnectionRefused::TooManyFromPeer {
                peer,
                open: open_from_peer,
            });
        }
        Ok(())
    }

    /// What to do with a connection, given what it has done (times are offsets from when
    /// it was accepted, on any monotonic clock).
    pub fn connection_verdict(&self, c: &Activity) -> Verdict {
        let (deadline, why) = if !c.received_any {
            (
                self.handshake_timeout,
                Closed::Silent(self.handshake_timeout),
            )
        } else if c.open_calls > 0 {
            return Verdict::Keep {
                recheck_at: c.now.saturating_add(self.idle_timeout),
            };
        } else {
            (
                c.last_active.saturating_add(self.idle_timeout),
                Closed::Idle(self.idle_timeout),
            )
        };
        if c.now >= deadline {
            Verdict::Close(why)
        } else {
            Verdict::Keep {
                recheck_at: deadline,
            }
        }
    }

    /// The most bytes a request body of `path` on `api` may have, and the flag that sets it.
    pub fn request_limit(&self, api: Api, path: &str) -> RequestLimit {
        let method = path.rsplit('/').next().unwrap_or(path);
        let small = RequestLimit {
            bytes: SMALL_REQUEST_BYTES.min(self.max_request_bytes),
            flag: None,
        };
        let messages = RequestLimit {
            bytes: self.max_request_bytes,
            flag: Some("--max-request-size"),
        };
        match api {
            Api::Control if method == "StartRun" => RequestLimit {
                bytes: self.max_fab_bytes.saturating_add(ENVELOPE_SLACK),
                flag: Some("--max-fab-size"),
            },
            Api::Control => small,
            Api::Fleet => match method {
                "PushMessages" => messages,
                "PushObject" => RequestLimit {
                    bytes: (crate::MAX_CHUNK_LEN + ENVELOPE_SLACK).min(self.max_request_bytes),
                    flag: Some("--max-request-size"),
                },
                _ => small,
            },
            // Apps on the same machine (or ones the operator pointed there) that move messages
            // and chunks in most of their calls.
            Api::ServerAppIo | Api::ClientAppIo => messages,
        }
    }

    /// Whether `len` more bytes of uploaded chunks may be held, given what the uploading
    /// node, its run and all nodes hold now.
    ///
    /// # Errors
    /// [`UploadRefused`] naming the cap and its flag.
    pub fn admit_upload(&self, held: UploadsHeld, len: usize) -> Result<(), UploadRefused> {
        if held.node.saturating_add(len) > self.max_upload_bytes_per_node {
            return Err(UploadRefused::Node {
                held: held.node,
                limit: self.max_upload_bytes_per_node,
            });
        }
        if let Some((run_id, run_held)) = held.run
            && run_held.saturating_add(len) > self.max_upload_bytes_per_run
        {
            return Err(UploadRefused::Run {
                run_id,
                held: run_held,
                limit: self.max_upload_bytes_per_run,
            });
        }
        if held.all.saturating_add(len) > self.max_upload_bytes {
            return Err(UploadRefused::All {
                held: held.all,
                limit: self.max_upload_bytes,
            });
        }
        Ok(())
    }
}

/// The run a batch of messages' chunks count against: the one run they all belong to, or
/// 0 (counted against no run) for an empty batch or one that mixes runs. A SuperNode
/// pushes one reply per call, so its uploads always name their run.
pub fn batch_run(runs: impl IntoIterator<Item = u64>) -> u64 {
    let mut runs = runs.into_iter();
    let first = runs.next().unwrap_or(0);
    if runs.all(|r| r == first) { first } else { 0 }
}

/// Bytes of uploaded chunks held now, as [`ServerLimits::admit_upload`] weighs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadsHeld {
    /// By the uploading node.
    pub node: usize,
    /// The run the chunk is for and what its nodes hold; `None` when the node named no run
    /// (a client that predates the field), which only the node and total caps bound.
    pub run: Option<(u64, usize)>,
    /// By all nodes.
    pub all: usize,
}

impl ServerLimits {
    /// How much of the in-flight budget a request announcing `len` bytes to `path` takes,
    /// in KiB (the unit of the budget): `None` for a small request, which takes none.
    ///
    /// # Errors
    /// The refusal, for a request larger than the whole budget (it could never start).
    pub fn inflight_share(&self, path: &str, len: usize) -> Result<Option<u32>, String> {
        if len <= SMALL_REQUEST_BYTES {
            return Ok(None);
        }
        if len > self.max_inflight_request_bytes {
            return Err(format!(
                "{path}: the request is {len} bytes, more than the server receives at once, {} bytes (--max-inflight-request-bytes)",
                self.max_inflight_request_bytes
            ));
        }
        Ok(Some(u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX)))
    }

    /// The in-flight budget in KiB, as [`ServerLimits::inflight_share`] counts.
    pub fn inflight_budget(&self) -> usize {
        self.max_inflight_request_bytes.div_ceil(1024)
    }
}

/// What a connection has done, as [`ServerLimits::connection_verdict`] reads it. Times are
/// since the connection was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Now.
    pub now: Duration,
    /// Whether the peer has sent a single byte.
    pub received_any: bool,
    /// Calls (HTTP/2 or QUIC streams) in progress.
    pub open_calls: usize,
    /// When the last call ended or began (0 before the first).
    pub last_active: Duration,
}

/// [`ServerLimits::connection_verdict`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep it; ask again at `recheck_at` (since the connection was accepted).
    Keep {
        /// When to ask again.
        recheck_at: Duration,
    },
    /// Close it now, for this reason.
    Close(Closed),
}

/// Why a connection was closed; its `Display` is the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    /// It sent nothing at all.
    #[error("closed a connection that sent nothing for {0:?} (--handshake-timeout)")]
    Silent(Duration),
    /// It had no call open.
    #[error("closed a connection with no call open for {0:?} (--connection-idle-timeout)")]
    Idle(Duration),
}

/// The limit on one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimit {
    /// Most bytes of protobuf (the gRPC length prefix says how many).
    pub bytes: usize,
    /// The flag that raises it; `None` for calls whose requests are small by nature.
    pub flag: Option<&'static str>,
}

impl RequestLimit {
    /// Why a request of `len` bytes to `path` is refused, for the peer and the log.
    pub fn refusal(&self, path: &str, len: usize) -> String {
        match self.flag {
            Some(flag) => format!(
                "{path}: the request is {len} bytes, over the server's limit of {} bytes ({flag})",
                self.bytes
            ),
            None => format!(
                "{path}: the request is {len} bytes; requests of this call are at most {} bytes",
                self.bytes
            ),
        }
    }
}

/// Why an uploaded chunk was refused; its `Display` goes to the node and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UploadRefused {
    /// The node's own cap.
    #[error(
        "the node already has {held} bytes of uploaded chunks waiting for its PushMessages, the SuperLink's limit is {limit} (--max-upload-bytes-per-node)"
    )]
    Node {
        /// Bytes the node holds.
        held: usize,
        /// The cap.
        limit: usize,
    },
    /// The cap on one run's nodes together.
    #[error(
        "run {run_id} already has {held} bytes of uploaded chunks waiting for PushMessages, the SuperLink's limit is {limit} (--max-upload-bytes-per-run); retry when the run's pending replies are in"
    )]
    Run {
        /// The run.
        run_id: u64,
        /// Bytes its nodes hold.
        held: usize,
        /// The cap.
        limit: usize,
    },
    /// The cap over all nodes.
    #[error(
        "the SuperLink already holds {held} bytes of chunks uploaded by nodes, its limit is {limit} (--max-upload-bytes); retry later"
    )]
    All {
        /// Bytes all nodes hold.
        held: usize,
        /// The cap.
        limit: usize,
    },
}

/// How long the accept loop waits after its `consecutive`-th failure in a row (out of file
/// descriptors, say) before it tries again: from 10 ms, doubling, to at most 1 s, so a full
/// descriptor table costs a few wake-ups per second instead of a spinning core.
pub fn accept_backoff(consecutive: u32) -> Duration {
    let ms = 10u64.saturating_mul(1u64 << consecutive.saturating_sub(1).min(7));
    Duration::from_millis(ms.min(1000))
}

/// How long an upload hold may live, however often its node renews it: `lease` per
/// upload, and at most this many leases from the first, so that a node that keeps
/// uploading without ever sending its `PushMessages` frees its chunks anyway.
pub const MAX_UPLOAD_LEASES: u32 = 6;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const PEER: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn limits() -> ServerLimits {
        ServerLimits {
            max_connections: 10,
            max_connections_per_ip: 3,
            ..ServerLimits::default()
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn connections_are_admitted_up_to_each_cap_and_the_refusal_names_its_flag() {
        let l = limits();
        assert!(l.admit_connection(PEER, 9, 2).is_ok());
        let e = l.admit_connection(PEER, 9, 3).unwrap_err();
        assert!(e.to_string().contains("--max-connections-per-ip"), "{e}");
        let e = l.admit_connection(PEER, 10, 0).unwrap_err();
        assert!(e.to_string().contains("--max-connections"), "{e}");
    }

    #[test]
    fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
        let l = ServerLimits::default();
        let silent = |now| Activity {
            now,
            received_any: false,
            open_calls: 0,
            last_active: Duration::ZERO,
        };
        assert_eq!(
            l.connection_verdict(&silent(secs(1))),
            Verdict::Keep {
                recheck_at: secs(10)
            }
        );
        assert_eq!(
            l.connection_verdict(&silent(secs(10))),
            Verdict::Close(Closed::Silent(secs(10)))
        );
        assert!(
            Closed::Silent(secs(10))
                .to_string()
                .contains("--handshake-timeout")
        );
    }

    #[test]
    fn a_connection_with_a_call_open_is_kept_however_long_it_lasts() {
        let l = ServerLimits::default();
        let streaming = Activity {
            now: secs(86_400),
            received_any: true,
            open_calls: 1,
            last_active: Duration::ZERO,
        };
        assert_eq!(
            l.connection_verdict(&streaming),
            Verdict::Keep {
                recheck_at: secs(86_400 + 300)
            }
        );
    }

    #[test]
    fn a_connection_without_calls_is_closed_after_the_idle_timeout_since_its_last_call() {
        let l = ServerLimits::default();
        let idle = |now| Activity {
            now,
            received_any: true,
            open_calls: 0,
            last_active: secs(100),
        };
        assert_eq!(
            l.connection_verdict(&idle(secs(399))),
            Verdict::Keep {
                recheck_at: secs(400)
            }
        );
        assert_eq!(
            l.connection_verdict(&idle(secs(400))),
            Verdict::Close(Closed::Idle(secs(300)))
        );
    }

    #[test]
    fn heartbeating_nodes_never_look_idle() {
        // A node without a stream open, heart-beating every 30 s (at most every 5 minutes).
        let l = ServerLimits::default();
        for beat in 1..1000u64 {
            let verdict = l.connection_verdict(&Activity {
                now: secs(beat * 299),
                received_any: true,
                open_calls: 0,
                last_active: secs((beat - 1) * 299 + 1),
            });
            assert!(matches!(verdict, Verdict::Keep { .. }), "{beat}");
        }
    }

    #[test]
    fn request_limits_follow_what_each_call_carries() {
        let l = ServerLimits {
            max_fab_bytes: 10 << 20,
            ..ServerLimits::default()
        };
        let start_run = l.request_limit(Api::Control, "/floret.v1.Control/StartRun");
        assert_eq!(start_run.bytes, 11 << 20);
        assert!(
            start_run
                .refusal("StartRun", 12 << 20)
                .contains("--max-fab-size")
        );
        let login = l.request_limit(Api::Control, "/floret.v1.Control/Login");
        assert_eq!(login.bytes, SMALL_REQUEST_BYTES);
        let beat = l.request_limit(Api::Fleet, "/floret.v1.Fleet/Heartbeat");
        assert_eq!(beat.bytes, SMALL_REQUEST_BYTES);
        let chunk = l.request_limit(Api::Fleet, "/floret.v1.Fleet/PushObject");
        assert!(chunk.bytes > crate::MAX_CHUNK_LEN && chunk.bytes < 8 << 20);
        let push = l.request_limit(Api::Fleet, "/floret.v1.Fleet/PushMessages");
        assert_eq!(push.bytes, l.max_request_bytes);
        assert!(
            push.refusal("PushMessages", 1)
                .contains("--max-request-size")
        );
        let app = l.request_limit(Api::ServerAppIo, "/floret.v1.ServerAppIo/Send");
        assert_eq!(app.bytes, l.max_request_bytes);
    }

    #[test]
    fn uploads_are_admitted_up_to_the_node_run_and_total_caps() {
        let l = ServerLimits {
            max_upload_bytes_per_node: 10,
            max_upload_bytes_per_run: 15,
            max_upload_bytes: 25,
            ..ServerLimits::default()
        };
        let held = |node, run, all| UploadsHeld { node, run, all };
        assert!(l.admit_upload(held(6, Some((1, 11)), 6), 4).is_ok());
        let e = l.admit_upload(held(7, Some((1, 7)), 7), 4).unwrap_err();
        assert!(e.to_string().contains("--max-upload-bytes-per-node"), "{e}");
        let e = l.admit_upload(held(0, Some((9, 12)), 12), 4).unwrap_err();
        assert_eq!(
            e,
            UploadRefused::Run {
                run_id: 9,
                held: 12,
                limit: 15
            }
        );
        assert!(e.to_string().contains("run 9"), "{e}");
        assert!(e.to_string().contains("--max-upload-bytes-per-run"), "{e}");
        // Another run, or a chunk that names none, still fits under the total.
        assert!(l.admit_upload(held(0, Some((2, 0)), 12), 4).is_ok());
        assert!(l.admit_upload(held(0, None, 12), 4).is_ok());
        let e = l.admit_upload(held(0, None, 22), 4).unwrap_err();
        assert!(e.to_string().contains("--max-upload-bytes)"), "{e}");
    }

    #[test]
    fn a_batch_counts_against_its_one_run_or_none() {
        assert_eq!(batch_run([]), 0);
        assert_eq!(batch_run([7]), 7);
        assert_eq!(batch_run([7, 7]), 7);
        assert_eq!(batch_run([7, 8]), 0);
    }

    #[test]
    fn large_requests_take_their_size_of_the_inflight_budget_and_small_ones_none() {
        let l = ServerLimits {
            max_inflight_request_bytes: 10 << 20,
            ..ServerLimits::default()
        };
        assert_eq!(l.inflight_share("p", 100), Ok(None));
        assert_eq!(l.inflight_share("p", SMALL_REQUEST_BYTES), Ok(None));
        assert_eq!(l.inflight_share("p", 4 << 20), Ok(Some(4096)));
        assert_eq!(l.inflight_share("p", (4 << 20) + 1), Ok(Some(4097)));
        assert_eq!(l.inflight_budget(), 10240);
        let e = l.inflight_share("p", 11 << 20).unwrap_err();
        assert!(e.contains("--max-inflight-request-bytes"), "{e}");
    }

    #[test]
    fn accept_failures_back_off_from_10_ms_to_a_second() {
        assert_eq!(accept_backoff(1), Duration::from_millis(10));
        assert_eq!(accept_backoff(2), Duration::from_millis(20));
        assert_eq!(accept_backoff(7), Duration::from_millis(640));
        assert_eq!(accept_backoff(8), Duration::from_secs(1));
        assert_eq!(accept_backoff(1000), Duration::from_secs(1));
    }
}
