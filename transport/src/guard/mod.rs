//! The servers' defences against peers that hold resources without doing anything useful:
//! the I/O half of `crate::limits`, which makes every decision.
//!
//! ```text
//! TcpListener ── incoming (caps per server and per IP, backoff on accept errors)
//!   └ GuardedIo (closes a silent or idle connection) ── tonic/hyper HTTP/2
//!       └ Guarded (per call: counts open calls, authenticates before the body,
//!                  refuses a body over its method's limit while it arrives) ── routes
//! quinn::Endpoint ── the same caps, timeouts and `Guarded` (see `crate::quic::server`)
//! ```
//!
//! Every connection gets a [`ConnState`], reachable from each of its requests through the
//! [`ConnInfo`] extension, so that the call layer can tell the connection a call began or
//! ended, and the connection can tell whether it is idle.

mod incoming;
mod layer;

pub(crate) use incoming::incoming;
#[cfg(feature = "quic")]
pub(crate) use layer::Guarded;
pub(crate) use layer::{Guard, PreAuth};

use crate::limits::{Activity, ConnectionRefused, ServerLimits};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

/// Connections open on one server (both transports), per peer address.
pub(crate) struct Tracker {
    limits: ServerLimits,
    open: Mutex<Open>,
    /// Refusals and closes are logged at most once a second, with a count of the others:
    /// a flood of junk connections must not become a flood of log lines.
    log: LogThrottle,
    /// The in-flight budget of large requests, in KiB (see
    /// [`ServerLimits::inflight_share`]).
    pub(crate) inflight: Arc<tokio::sync::Semaphore>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

impl Tracker {
    pub(crate) fn new(limits: ServerLimits) -> Arc<Tracker> {
        let budget = limits
            .inflight_budget()
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        Arc::new(Tracker {
            limits,
            open: Mutex::default(),
            log: LogThrottle::default(),
            inflight: Arc::new(tokio::sync::Semaphore::new(budget)),
        })
    }

    pub(crate) fn limits(&self) -> &ServerLimits {
        &self.limits
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // Counts only: a panic elsewhere cannot leave them unusable.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more connection from `peer`, held until the connection is dropped.
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Result<Slot, ConnectionRefused> {
        let ip = peer.ip();
        let mut open = self.lock();
        let from_peer = open.per_ip.get(&ip).copied().unwrap_or(0);
        self.limits.admit_connection(ip, open.total, from_peer)?;
        open.total += 1;
        *open.per_ip.entry(ip).or_insert(0) += 1;
        Ok(Slot {
            tracker: self.clone(),
            ip,
        })
    }

    /// Logs `line` at WARN unless one was logged in the last second (then counts it).
    pub(crate) fn warn(&self, line: &dyn std::fmt::Display) {
        self.log.warn(line);
    }
}

/// One admitted connection's place in the counts.
pub(crate) struct Slot {
    tracker: Arc<Tracker>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.tracker.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

/// What one connection has done, shared by its I/O and its calls.
pub(crate) struct ConnState {
    opened: Instant,
    received_any: AtomicBool,
    open_calls: AtomicUsize,
    /// Milliseconds from `opened` to the last call's start or end.
    last_active_ms: AtomicU64,
    /// The node key (its `floret-auth-node-key` header) whose signature a call on this
    /// connection has passed in full: see `NodeAuth::pre_auth`.
    signed_in: std::sync::OnceLock<(String, crate::auth::NodePublicKey)>,
}

impl ConnState {
    pub(crate) fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            opened: Instant::now(),
            received_any: AtomicBool::new(false),
            open_calls: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            signed_in: std::sync::OnceLock::new(),
        })
    }

    /// The key this connection signed in with, if its header is `header`.
    pub(crate) fn signed_in_as(&self, header: &str) -> Option<&crate::auth::NodePublicKey> {
        self.signed_in
            .get()
            .filter(|(h, _)| h == header)
            .map(|(_, key)| key)
    }

    /// Records the key whose signature a call on this connection passed; the first stays.
    pub(crate) fn sign_in(&self, header: &str, key: &crate::auth::NodePublicKey) {
        let _ = self.signed_in.set((header.to_owned(), key.clone()));
    }

    pub(crate) fn received(&self) {
        self.received_any.store(true, Ordering::Relaxed);
    }

    fn touch(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// A call began; it counts as open until the returned guard is dropped.
    pub(crate) fn call_started(self: &Arc<Self>) -> CallGuard {
        self.received();
        self.open_calls.fetch_add(1, Ordering::Relaxed);
        self.touch();
        CallGuard(self.clone())
    }

    /// What [`ServerLimits::connection_verdict`] needs, as of `now`.
    pub(crate) fn activity(&self, now: Instant) -> Activity {
        Activity {
            now: now.saturating_duration_since(self.opened),
            received_any: self.received_any.load(Ordering::Relaxed),
            open_calls: self.open_calls.load(Ordering::Relaxed),
            last_active: std::time::Duration::from_millis(
                self.last_active_ms.load(Ordering::Relaxed),
            ),
        }
    }

    /// `since_open` (a time in the connection's `Activity`) on the clock.
    pub(crate) fn at(&self, since_open: std::time::Duration) -> Instant {
        crate::objects::deadline_after_from(self.opened, since_open)
    }
}

/// An open call; dropping it ends the call (the response body is done or abandoned).
pub(crate) struct CallGuard(Arc<ConnState>);

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.open_calls.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Put in every request's extensions (by tonic from [`GuardedIo`]'s connect info, by the
/// QUIC server directly): which connection it came on.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    /// The peer's address.
    pub(crate) remote: SocketAddr,
    pub(crate) state: Arc<ConnState>,
    /// A QUIC connection (always TLS 1.3); TCP connections are told apart by tonic's TLS
    /// connect info.
    pub(crate) quic: bool,
}

impl ConnInfo {
    /// The state of a request's connection when that connection is encrypted and
    /// authenticated end to end (TLS over TCP, or QUIC, which is always TLS 1.3): what one
    /// call on it proved about the peer holds for its later calls.
    pub(crate) fn encrypted(extensions: &http::Extensions) -> Option<&Arc<ConnState>> {
        extensions
            .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
            .map(|tls| &tls.get_ref().state)
            .or_else(|| {
                extensions
                    .get::<ConnInfo>()
                    .filter(|c| c.quic)
                    .map(|c| &c.state)
            })
    }

    /// The connection of a request, whichever way it came (plaintext, TLS or QUIC).
    pub(crate) fn of(extensions: &http::Extensions) -> Option<&ConnInfo> {
        extensions.get::<ConnInfo>().or_else(|| {
            extensions
                .get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
                .map(tonic::transport::server::TlsConnectInfo::get_ref)
        })
    }
}

/// At most one WARN line a second; the lines in between are counted into the next one.
#[derive(Default)]
struct LogThrottle {
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    fn warn(&self, line: &dyn std::fmt::Display) {
        let now = Instant::now();
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (last, suppressed) = &mut *state;
        if last.is_some_and(|t| now.saturating_duration_since(t).as_secs() < 1) {
            *suppressed += 1;
            return;
        }
        if *suppressed > 0 {
            tracing::warn!("{line} (and {suppressed} more like it since the last such line)");
        } else {
            tracing::warn!("{line}");
        }
        *last = Some(now);
        *suppressed = 0;
    }
}
