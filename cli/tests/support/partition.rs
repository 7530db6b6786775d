//! A network partition on loopback: a forwarder that a test places between a SuperNode and
//! its SuperLink, on one port number for both transports (TCP for gRPC, UDP for QUIC, as a
//! SuperLink serves them), and that can be cut and healed.
//!
//! - TCP: every accepted connection is paired with one to the target and bytes are copied
//!   both ways. While cut nothing moves: the forwarder reads nothing more, writes nothing
//!   and closes nothing, so both ends see a silent stall, as they would when packets are
//!   lost (no RST, no FIN). Bytes already taken in before the cut are held, not dropped, and
//!   go on after `heal`, as TCP retransmission would deliver them: a connection that
//!   outlived the partition resumes intact, one an end gave up on closes then. A connection
//!   opened during the cut completes its handshake in the kernel (a user-space forwarder
//!   cannot drop SYNs) but carries nothing until `heal`, when the forwarder connects it on.
//! - UDP: each client address gets its own socket towards the target, so the target sees
//!   one peer per client. While cut every datagram, either way, is read and dropped.
//!
//! Everything binds 127.0.0.1 only. The forwarder runs on a small Tokio runtime of its own;
//! dropping it ends every connection and frees the port.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::runtime::Runtime;
use tokio::sync::watch;

/// Largest datagram a QUIC endpoint sends, with room to spare.
const MAX_DATAGRAM: usize = 65_536;
/// Bytes copied per read on a TCP connection.
const TCP_BUFFER: usize = 64 * 1024;

/// What went through, and what was dropped: lets a test check that a cut took effect.
#[derive(Default)]
struct Counters {
    tcp_bytes: AtomicU64,
    /// Bytes passed on from clients to the target (TCP payload and UDP datagrams).
    upstream_bytes: AtomicU64,
    tcp_connections: AtomicU64,
    udp_forwarded: AtomicU64,
    udp_dropped: AtomicU64,
}

/// A cuttable forwarder from `127.0.0.1:PORT` (TCP and UDP) to a SuperLink's Fleet API.
pub(crate) struct Partition {
    port: u16,
    target: SocketAddr,
    cut: watch::Sender<bool>,
    counters: Arc<Counters>,
    runtime: Option<Runtime>,
}

impl Partition {
    /// Starts forwarding to `target` (`127.0.0.1:PORT`, TCP and UDP), healed.
    pub(crate) fn new(target: &str) -> Partition {
        let target: SocketAddr = target
            .parse()
            .unwrap_or_else(|e| panic!("partition target {target:?}: {e}"));
        assert!(
            target.ip().is_loopback(),
            "a partition forwards on loopback only, not to {target}"
        );
        let (tcp, udp) = bind_pair();
        let port = tcp.local_addr().unwrap().port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("partition")
            .enable_all()
            .build()
            .unwrap();
        let (cut, healed) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        {
            let _entered = runtime.enter();
            let tcp = TcpListener::from_std(tcp).unwrap();
            let udp = Arc::new(UdpSocket::from_std(udp).unwrap());
            runtime.spawn(accept(tcp, target, healed.clone(), counters.clone()));
            runtime.spawn(relay(udp, target, healed, counters.clone()));
        }
        Partition {
            port,
            target,
            cut,
            counters,
            runtime: Some(runtime),
        }
    }

    /// Where a SuperNode connects instead of the SuperLink: `127.0.0.1:PORT`.
    pub(crate) fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// From now on nothing passes, either way, until [`Partition::heal`].
    pub(crate) fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Forwarding resumes; held TCP bytes go on.
    pub(crate) fn heal(&self) {
        self.cut.send_replace(false);
    }

    pub(crate) fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }

    /// Bytes copied over TCP, both ways, since the start.
    pub(crate) fn tcp_bytes(&self) -> u64 {
        self.counters.tcp_bytes.load(Ordering::Relaxed)
    }

    /// Bytes passed on from the clients to the target, over TCP and UDP, since the start:
    /// shows a SuperNode uploading, whatever its transport.
    pub(crate) fn upstream_bytes(&self) -> u64 {
        self.counters.upstream_bytes.load(Ordering::Relaxed)
    }

    /// TCP connections accepted since the start.
    pub(crate) fn tcp_connections(&self) -> u64 {
        self.counters.tcp_connections.load(Ordering::Relaxed)
    }

    /// Datagrams forwarded, both ways, since the start.
    pub(crate) fn udp_forwarded(&self) -> u64 {
        self.counters.udp_forwarded.load(Ordering::Relaxed)
    }

    /// Datagrams dropped by a cut, both ways, since the start.
    pub(crate) fn udp_dropped(&self) -> u64 {
        self.counters.udp_dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Every task waits at an await point: dropping them closes their sockets.
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// A TCP listener and a UDP socket on the same free port of 127.0.0.1.
fn bind_pair() -> (std::net::TcpListener, std::net::UdpSocket) {
    for _ in 0..100 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if let Ok(udp) = std::net::UdpSocket::bind(("127.0.0.1", port)) {
            tcp.set_nonblocking(true).unwrap();
            udp.set_nonblocking(true).unwrap();
            return (tcp, udp);
        }
    }
    panic!("no port of 127.0.0.1 was free for both TCP and UDP in 100 tries");
}

/// Returns once the partition is healed (at once if it is); `false` when the forwarder is
/// going away.
async fn healed(state: &mut watch::Receiver<bool>) -> bool {
    state.wait_for(|cut| !*cut).await.is_ok()
}

async fn accept(
    listener: TcpListener,
    target: SocketAddr,
    state: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    while let Ok((client, _)) = listener.accept().await {
        counters.tcp_connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connect_on(client, target, state.clone(), counters.clone()));
    }
}

/// Pairs an accepted connection with one to the target (once healed) and copies both ways.
async fn connect_on(
    client: TcpStream,
    target: SocketAddr,
    mut state: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    if !healed(&mut state).await {
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return; // the client sees its connection close, as with the SuperLink down
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(
        client_read,
        server_write,
        true,
        state.clone(),
        counters.clone(),
    );
    let down = pump(server_read, client_write, false, state, counters);
    // Each direction ends on its own (a half-close is passed on); the pair ends with both.
    tokio::join!(up, down);
}

/// Copies one direction (`upstream`: client to target), holding still while cut.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    upstream: bool,
    mut state: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let mut buffer = vec![0u8; TCP_BUFFER];
    loop {
        if !healed(&mut state).await {
            return;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Cut while reading: these bytes are held until the heal, not lost.
        if !healed(&mut state).await {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
        counters.tcp_bytes.fetch_add(n as u64, Ordering::Relaxed);
        if upstream {
            counters
                .upstream_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    // End of stream (or reset): passed on once healed, as a FIN would be.
    if healed(&mut state).await {
        let _ = to.shutdown().await;
    }
}

/// Relays datagrams: client -> target through one socket per client, and back.
async fn relay(
    front: Arc<UdpSocket>,
    target: SocketAddr,
    state: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let mut sessions: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buffer).await else {
            // ICMP errors of an earlier send can surface here on Linux; keep going.
            continue;
        };
        if *state.borrow() {
            counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let upstream = match sessions.get(&client) {
            Some(socket) => socket.clone(),
            None => {
                let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if socket.connect(target).await.is_err() {
                    continue;
                }
                let socket = Arc::new(socket);
                sessions.insert(client, socket.clone());
                tokio::spawn(relay_back(
                    socket.clone(),
                    front.clone(),
                    client,
                    state.clone(),
                    counters.clone(),
                ));
                socket
            }
        };
        if upstream.send(&buffer[..n]).await.is_ok() {
            counters.udp_forwarded.fetch_add(1, Ordering::Relaxed);
            counters
                .upstream_bytes
                .fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Target -> client for one client's socket.
async fn relay_back(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    state: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match upstream.recv(&mut buffer).await {
            Ok(n) => n,
            // The target's port refused a datagram (ICMP): the SuperLink is not there
            // right now; QUIC retransmits.
            Err(_) => continue,
        };
        if *state.borrow() {
            counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if front.send_to(&buffer[..n], client).await.is_ok() {
            counters.udp_forwarded.fetch_add(1, Ordering::Relaxed);
        }
    }
}
