//! The SuperLink's connection limits against real processes on 127.0.0.1: connections that
//! never send a byte are closed, connections over the per-address cap are refused, and the
//! SuperLink goes on serving runs either way (issue 12, finding 2).

// Tests may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

/// Whether the server closes `stream` before `deadline` (a read sees EOF or a reset).
fn closed_before(stream: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // The server's HTTP/2 settings, sent before it hears from the peer.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn connections_that_send_nothing_are_closed_and_a_run_still_completes() {
    let link = SuperLink::start_with("127.0.0.1:0", "127.0.0.1:0", &["--handshake-timeout", "2"]);
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&link.fleet).unwrap())
        .collect();
    let deadline = opened + Duration::from_secs(15);
    let open = silent
        .iter_mut()
        .map(|s| closed_before(s, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(open, 0, "silent connections left open after 15 s");
    assert!(opened.elapsed() >= Duration::from_secs(2));
    link.proc.expect_log("--handshake-timeout");

    let nodes: Vec<Proc> = (0..2).map(|p| supernode(&link.fleet, p, 2, &[])).collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();
    let o = flwr(&[
        "run",
        app,
        "e2e",
        "--run-config",
        "total-params=1000",
        "--stream",
        "--format",
        "json",
    ]);
    assert_eq!(o.code, Some(0), "flwr run: {}", o.stderr);
    assert!(o.stdout.contains("finished:completed"), "{}", o.stdout);
}

#[test]
fn connections_over_the_per_address_cap_are_refused_and_the_superlink_still_serves() {
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--max-connections-per-ip",
            "20",
            "--handshake-timeout",
            "60",
        ],
    );
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&link.fleet).unwrap())
        .collect();
    let mut over = TcpStream::connect(&link.fleet).unwrap();
    assert!(closed_before(
        &mut over,
        Instant::now() + Duration::from_secs(5)
    ));
    link.proc.expect_log("--max-connections-per-ip");
    let soon = Instant::now() + Duration::from_millis(200);
    assert!(held.iter_mut().all(|s| !closed_before(s, soon)));

    // The Control API has its own count; the Fleet API serves again once some close.
    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();
    let ls = flwr(&["ls", app, "e2e", "--format", "json"]);
    assert_eq!(ls.code, Some(0), "{}", ls.stderr);
    drop(held);
    let node = supernode(&link.fleet, 0, 1, &[]);
    node.expect_log(NODE_READY);
}
