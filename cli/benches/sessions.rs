//! D3 of TARGETS.md on loopback, with the release binaries: one `flower-superlink` (TLS,
//! SuperNode authentication) holding NODES authenticated, heart-beating SuperNode sessions,
//! first alone and then with JUNK connections opened alongside that never send a byte; then
//! a normal run on the same federation.
//!
//! The sessions are real SuperNodes: this process builds each from `flower-supernode`'s own
//! flags (its key from `flwr keygen --clients NODES`, `--heartbeat-interval 30`, Flower's
//! default) and runs the SuperNode actor with its own Fleet client, so each holds its own TLS
//! connection, its instruction stream and its heartbeats, exactly as a daemon does; only the
//! ClientAppIo listener of FAB runs is left out (built-in apps need none). The junk comes from
//! child processes (this binary again), 10,000 connections each, because one process may hold
//! 20,000 descriptors here.
//!
//! Reported: the SuperLink's CPU time over each window (as a share of one core), its resident
//! memory (VmRSS, and the peak VmHWM), sessions lost in each window, what became of the junk,
//! and the wall time of `flwr run` of the quickstart (10 of the nodes sampled per round).
//!
//! `cargo bench -p floret-cli --bench sessions [-- NODES [JUNK [WINDOW_S]]]` (defaults
//! 10000, 20000 and 60).

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

#[path = "../tests/support/mod.rs"]
mod support;

use clap::Parser;
use floret_cli::daemon::supernode::{SuperNodeArgs, SuperNodeConfig, fleet_client};
use floret_cli::registry::BuiltinCatalog;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;

/// Set in a child process: `ADDRESS COUNT HOLD_S`, open COUNT idle connections to ADDRESS
/// and watch them for HOLD_S seconds.
const JUNK_ENV: &str = "FLORET_D3_JUNK";
/// Most connections one junk child opens (one process may hold 20,000 descriptors here).
const JUNK_PER_CHILD: usize = 10_000;
/// How fast sessions are started: a herd of TLS handshakes at once would measure the
/// handshakes, not the sessions.
const STARTS_PER_SECOND: u64 = 1_000;

fn main() {
    if let Ok(spec) = std::env::var(JUNK_ENV) {
        return junk_child(&spec);
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let number =
        |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let nodes = number(0, 10_000) as u32;
    let junk = number(1, 20_000) as usize;
    let window = Duration::from_secs(number(2, 60));

    let pki = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let o = flwr(&[
        "keygen",
        "--clients",
        &nodes.to_string(),
        "--out",
        pki.path().to_str().unwrap(),
    ]);
    assert_eq!(o.code, Some(0), "flwr keygen: {}", o.stderr);
    eprintln!("D3: {nodes} node keys in {:?}", started.elapsed());
    use_tls(pki.path());
    let keys = pki.path().join("keys");
    let key = |name: &str| keys.join(name).to_str().unwrap().to_owned();
    let link = SuperLink::start_with(
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[
            "--database",
            ":memory:",
            "--auth-list-public-keys",
            &key("client_public_keys.csv"),
            "--auth-superlink-private-key",
            &key("server_credentials"),
            "--auth-superlink-public-key",
            &key("server_credentials.pub"),
        ],
    );
    let pid = link.proc.pid();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Fleet clients spawn their connection tasks on the runtime they are made in.
    let _in_runtime = runtime.enter();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let ca = pki.path().join("certificates/ca.crt");
    let started = Instant::now();
    for i in 1..=nodes {
        let flags = [
            "flower-supernode".to_owned(),
            "--superlink".into(),
            link.fleet.clone(),
            "--root-certificates".into(),
            ca.to_str().unwrap().into(),
            "--auth-supernode-private-key".into(),
            key(&format!("client_credentials_{i}")),
            "--auth-supernode-public-key".into(),
            key(&format!("client_credentials_{i}.pub")),
            "--node-config".into(),
            format!("partition-id={} num-partitions={nodes}", i - 1),
        ];
        let config = SuperNodeConfig::from_args(
            &SuperNodeArgs::try_parse_from(flags).unwrap(),
            std::iter::empty(),
        )
        .unwrap();
        let fleet = fleet_client(&config).unwrap();
        let mut stopped = stopped.clone();
        runtime.spawn(floret_actors::SuperNode::run(
            config.node,
            Arc::new(fleet),
            Arc::new(BuiltinCatalog),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        if u64::from(i) % (STARTS_PER_SECOND / 10) == 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let all_in = link.proc.wait_log_lines(Duration::from_secs(600), |lines| {
        (count(lines, "node registered") >= nodes as usize).then_some(())
    });
    assert!(
        all_in.is_some(),
        "only {} of {nodes} nodes registered",
        count_log(&link, "node registered")
    );
    eprintln!("D3: {nodes} sessions registered in {:?}", started.elapsed());
    // Let the registration burst settle into steady heart-beating.
    std::thread::sleep(Duration::from_secs(10));

    println!(
        "| window | SuperLink CPU (share of one core) | VmRSS MB | VmHWM MB | sessions lost |"
    );
    println!("|---|---|---|---|---|");
    measure("sessions alone", &link, pid, window);

    let mut children = Vec::new();
    let mut left = junk;
    while left > 0 {
        let n = left.min(JUNK_PER_CHILD);
        left -= n;
        let hold = window.as_secs() + 5;
        children.push(
            std::process::Command::new(std::env::current_exe().unwrap())
                .env(JUNK_ENV, format!("{} {n} {hold}", link.fleet))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::inherit())
                .spawn()
                .unwrap(),
        );
    }
    measure(&format!("with {junk} junk connections"), &link, pid, window);
    for child in children {
        let out = child.wait_with_output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            println!("{line}");
        }
    }

    let app = app_for("quickstart", &link.control);
    let config =
        "num-server-rounds=3 total-params=100000 fraction-train=0.001 fraction-evaluate=0.001";
    let started = Instant::now();
    let o = flwr(&[
        "run",
        app.path().to_str().unwrap(),
        "e2e",
        "--run-config",
        config,
        "--stream",
    ]);
    let took = started.elapsed();
    assert_eq!(o.code, Some(0), "flwr run: {}\n{}", o.stderr, o.stdout);
    assert!(o.stdout.contains("finished:completed"), "{}", o.stdout);
    println!(
        "flwr run of the quickstart ({config}) over the {nodes} sessions: completed in {took:.2?}"
    );
    println!(
        "SuperLink after the run: VmRSS {:.1} MB, VmHWM {:.1} MB",
        status_kb(pid, "VmRSS:") as f64 / 1024.0,
        status_kb(pid, "VmHWM:") as f64 / 1024.0
    );
    stop.send_replace(true);
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// One measured window: CPU seconds the SuperLink used over it, its memory at the end, and
/// sessions it lost (declared offline or deactivated) meanwhile.
fn measure(label: &str, link: &SuperLink, pid: u32, window: Duration) {
    let lost = |link: &SuperLink| {
        count_log(link, "missed its heartbeats: offline") + count_log(link, "node deactivated")
    };
    let (cpu0, lost0, t0) = (cpu_seconds(pid), lost(link), Instant::now());
    std::thread::sleep(window);
    let share = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    println!(
        "| {label} | {:.1} % | {:.1} | {:.1} | {} |",
        100.0 * share,
        status_kb(pid, "VmRSS:") as f64 / 1024.0,
        status_kb(pid, "VmHWM:") as f64 / 1024.0,
        lost(link) - lost0
    );
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

fn count_log(link: &SuperLink, needle: &str) -> usize {
    link.proc
        .stderr()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// User plus system CPU time of `pid` so far, in seconds (`/proc/PID/stat`, in clock ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The junk child: opens COUNT TCP connections that never send a byte, then watches them
/// for HOLD_S seconds and prints one line on what became of them.
fn junk_child(spec: &str) {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    let address: SocketAddr = parts[0].parse().unwrap();
    let count: usize = parts[1].parse().unwrap();
    let hold = Duration::from_secs(parts[2].parse().unwrap());
    let started = Instant::now();
    let mut open = Vec::with_capacity(count);
    let mut refused = 0;
    for _ in 0..count {
        match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
            Ok(stream) => {
                stream.set_nonblocking(true).unwrap();
                open.push(stream);
            }
            Err(_) => refused += 1,
        }
    }
    let opened = open.len();
    let mut closed_at: Vec<Duration> = Vec::new();
    let mut buf = [0u8; 1];
    while started.elapsed() < hold && !open.is_empty() {
        open.retain(|s| match s.peek(&mut buf) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => true,
            // End of stream, a reset, or bytes (a server saying goodbye): closed by the peer.
            _ => {
                closed_at.push(started.elapsed());
                false
            }
        });
        std::thread::sleep(Duration::from_millis(200));
    }
    let span =
        |d: Option<&Duration>| d.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    println!(
        "junk child: {opened} of {count} connected ({refused} failed to connect); the SuperLink closed {} \
         (first after {}, last after {}); {} still open after {:.0} s",
        closed_at.len(),
        span(closed_at.first()),
        span(closed_at.last()),
        open.len(),
        started.elapsed().as_secs_f64()
    );
}
