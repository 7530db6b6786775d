//! Faults between real processes on 127.0.0.1 (TARGETS.md R2, R3): `flower-superlink`,
//! `flower-supernode` and `flwr` as a user runs them, with SuperNodes partitioned away
//! (support/partition.rs), killed with SIGKILL at the start of rounds, and killed while
//! uploading a large reply. Each scenario runs over gRPC and over QUIC.
//!
//! The scenarios depend on real time (a 30 s partition, heartbeat deadlines), so they run
//! one at a time (`SERIAL`): two of them sharing the two cores would slow each other's
//! rounds unpredictably. Every wait is bounded; every process is killed when its handle
//! drops.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::partition::Partition;
use support::*;

/// One chaos scenario at a time (see the module doc).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `round R: A/S PHASE replies, F failed[, U without reply after T]`, as the strategy
/// logs the end of a phase.
#[derive(Debug, Clone, PartialEq)]
struct PhaseEnd {
    round: u64,
    phase: String,
    replies: u64,
    sampled: u64,
    failed: u64,
    /// Some sampled node neither answered nor was answered for within the round timeout.
    timed_out: bool,
}

fn phase_end(line: &str) -> Option<PhaseEnd> {
    let rest = line.strip_prefix("round ")?;
    let (round, rest) = rest.split_once(": ")?;
    let (counts, rest) = rest.split_once(' ')?;
    let (replies, sampled) = counts.split_once('/')?;
    let (phase, rest) = rest.split_once(" replies, ")?;
    let (failed, rest) = rest.split_once(" failed").unwrap_or((rest, ""));
    Some(PhaseEnd {
        round: round.parse().ok()?,
        phase: phase.to_owned(),
        replies: replies.parse().ok()?,
        sampled: sampled.parse().ok()?,
        failed: failed.trim().parse().ok()?,
        timed_out: rest.contains("without reply"),
    })
}

/// `round R: training on S of C connected nodes`: (R, S, C).
fn training_on(line: &str) -> Option<(u64, u64, u64)> {
    let rest = line.strip_prefix("round ")?;
    let (round, rest) = rest.split_once(": training on ")?;
    let (size, rest) = rest.split_once(" of ")?;
    let connected = rest.strip_suffix(" connected nodes")?;
    Some((
        round.parse().ok()?,
        size.parse().ok()?,
        connected.parse().ok()?,
    ))
}

/// The number after `key=` in a log line (`node_id=42`).
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = line.split(&format!(" {key}=")).nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The node id a SuperNode registered under first.
fn node_id(node: &Proc) -> u64 {
    let line = node.expect_log(NODE_READY);
    field(&line, "node_id").unwrap_or_else(|| panic!("no node id in {line:?}"))
}

/// Every phase of a run, checked for what a user relies on: each phase of each round ends
/// once, no phase counts more replies (good or failed) than it sent messages, and none
/// waited out its round timeout (a node that vanished was answered for by the SuperLink).
fn checked_phases(log: &str) -> Vec<PhaseEnd> {
    let phases: Vec<PhaseEnd> = log.lines().filter_map(phase_end).collect();
    let mut seen = HashMap::new();
    for p in &phases {
        assert!(
            p.replies + p.failed <= p.sampled,
            "more replies than messages (a reply counted twice?): {p:?}\n{log}"
        );
        assert!(
            !p.timed_out,
            "a phase waited out its round timeout: {p:?}\n{log}"
        );
        let ended = seen.entry((p.round, p.phase.clone())).or_insert(0);
        *ended += 1;
        assert_eq!(
            *ended, 1,
            "round {} {} ended twice\n{log}",
            p.round, p.phase
        );
    }
    phases
}

/// No process panicked.
fn assert_no_panic(procs: &[&Proc]) {
    for p in procs {
        assert!(
            !p.stderr().contains("panicked"),
            "{} panicked:\n{}",
            p.name,
            p.stderr()
        );
    }
}

/// Waits for `flwr run --stream` to end and checks that the run completed.
fn assert_run_completed(run: &mut Proc) {
    let status = run.wait_exit(COMMAND_TIMEOUT);
    assert!(
        status.success(),
        "flwr run: {status}\n{}\n{}",
        run.stderr(),
        run.stdout()
    );
    assert!(
        run.stdout().contains("finished:completed"),
        "{}\n{}",
        run.stdout(),
        run.stderr()
    );
}

/// The digits config of the partition scenario: enough local work that a round takes a
/// noticeable fraction of a second; 2 nodes train each round whether 2 or 4 are connected
/// (so the pace of rounds hardly changes with the cut: on two cores training is what
/// costs), and all connected nodes evaluate; a round timeout far beyond anything the run
/// should wait, so that waiting on a partitioned node would show as a hang.
const PARTITION_ROUNDS: &str =
    "local-epochs=20 fraction-train=0.5 fraction-evaluate=1.0 round-timeout=300";
/// The partition the target asks the runtime to survive.
const PARTITION: Duration = Duration::from_secs(30);
/// Longest a healed node may take to register again: its reconnect backoff is capped at
/// 30 s, so a node whose last try fell just before the heal waits that long.
const REJOIN: Duration = Duration::from_secs(35);
/// How long the run should go on after the heal, at the measured pace: the longest rejoin,
/// then a few rounds that sample the rejoined nodes.
const AFTER_HEAL: Duration = Duration::from_secs(REJOIN.as_secs() + 10);
/// Rounds go a little faster with fewer nodes to evaluate: the run is planned this much
/// longer than the measured pace says.
const PACE_MARGIN: f64 = 1.2;

/// Seconds per round of digits on 4 nodes on this machine now, timed between the ends of
/// rounds of a short run of the same config (start-up excluded, or it would inflate the
/// pace and the planned run would end too soon), so the partitioned run is long enough to
/// outlast the partition and the rejoin however fast or slow the build and the machine are.
fn round_pace(app: &str) -> Duration {
    let (first, last) = (1, 4);
    let config = format!("num-server-rounds={last} {PARTITION_ROUNDS}");
    let mut run = flwr_spawn(&["run", app, "e2e", "--run-config", &config, "--stream"]);
    let ended = |round: u32| format!("round {round}: 4/4 evaluate replies");
    assert!(
        run.wait_log(&ended(first), COMMAND_TIMEOUT).is_some(),
        "calibration run: {}",
        run.stderr()
    );
    let start = Instant::now();
    assert!(
        run.wait_log(&ended(last), COMMAND_TIMEOUT).is_some(),
        "calibration run: {}",
        run.stderr()
    );
    let pace = start.elapsed() / (last - first);
    assert_run_completed(&mut run);
    pace
}

over_both_transports! {
/// R3: half the nodes partitioned away for 30 s mid-run. The run does not wait for them:
/// the SuperLink declares them offline and answers their pending messages, rounds go on
/// with the other half; after the heal they register again by themselves and later rounds
/// sample all four; no phase counts a reply twice; the run completes.
fn half_the_nodes_partitioned_for_30_s_rejoin_and_the_run_completes() {
    let _serial = serial();
    let link = SuperLink::start();
    let proxies = [Partition::new(&link.fleet), Partition::new(&link.fleet)];
    let heartbeat = ["--heartbeat-interval", "2"];
    let mut nodes: Vec<Proc> = (0..2)
        .map(|p| supernode(&link.fleet, p, 4, &heartbeat))
        .collect();
    for (i, proxy) in proxies.iter().enumerate() {
        nodes.push(supernode(&proxy.address(), 2 + i as u32, 4, &heartbeat));
    }
    let cut_ids: Vec<u64> = nodes[2..].iter().map(node_id).collect();
    for node in &nodes[..2] {
        node.expect_log(NODE_READY);
    }
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();

    let pace = round_pace(app);
    let planned = PACE_MARGIN * (PARTITION + AFTER_HEAL).as_secs_f64() / pace.as_secs_f64();
    let rounds = 3 + planned.ceil() as u64;
    let config = format!("num-server-rounds={rounds} {PARTITION_ROUNDS}");
    let mut run = flwr_spawn(&["run", app, "e2e", "--run-config", &config, "--stream"]);
    assert!(
        run.wait_log("round 2: 4/4 evaluate replies", COMMAND_TIMEOUT).is_some(),
        "no full round 2: {}",
        run.stderr()
    );

    // The cut.
    let before_cut = run.stderr().lines().count();
    let cut_at = Instant::now();
    for proxy in &proxies {
        proxy.cut();
    }
    // The phases in flight (and any sampled before the SuperLink noticed) end with the
    // cut nodes answered for by the SuperLink, long before the heal.
    let answered_for = run.wait_log_lines(PARTITION - Duration::from_secs(5), |lines| {
        lines[before_cut..]
            .iter()
            .find(|l| l.contains("left out") && l.contains("missed its heartbeats and is offline"))
            .cloned()
    });
    assert!(
        answered_for.is_some(),
        "no message to a cut node was answered for within {:?} of the cut: {}",
        PARTITION - Duration::from_secs(5),
        run.stderr()
    );
    // Seconds after the cut, any copy under way at the cut has long ended.
    let moved_at_cut: Vec<u64> = proxies.iter().map(Partition::tcp_bytes).collect();
    for id in &cut_ids {
        let offline = link.proc.wait_log_lines(PARTITION, |lines| {
            lines.iter().find(|l| {
                l.contains("missed its heartbeats: offline") && field(l, "node_id") == Some(*id)
            }).cloned()
        });
        assert!(offline.is_some(), "node {id} not declared offline: {}", link.proc.stderr());
    }
    let with_the_others = run.wait_log_lines(PARTITION, |lines| {
        lines[before_cut..]
            .iter()
            .filter_map(|l| training_on(l))
            .find(|&(_, size, connected)| size == 2 && connected == 2)
    });
    assert!(
        with_the_others.is_some(),
        "no round trained on the 2 reachable nodes during the cut: {}",
        run.stderr()
    );
    assert!(
        cut_at.elapsed() < PARTITION,
        "the cut nodes were not left behind within the partition"
    );
    // The partition lasts its 30 s of real time: that is the scenario, not a wait for
    // something to happen.
    std::thread::sleep(PARTITION.saturating_sub(cut_at.elapsed()));
    // The partition held: nothing crossed it over TCP, and over QUIC the nodes kept trying.
    for (proxy, &at_cut) in proxies.iter().zip(&moved_at_cut) {
        assert_eq!(proxy.tcp_bytes(), at_cut, "TCP bytes crossed the cut");
        if transport() == "quic" {
            assert!(proxy.udp_dropped() > 0, "no datagram met the cut");
        }
    }
    assert!(
        run.stdout().is_empty() && !run.stderr().contains("FedAvg finished"),
        "the run ended during the partition ({rounds} rounds planned at {pace:?} each): \
         raise AFTER_HEAL or PACE_MARGIN\n{}",
        run.stderr()
    );
    let before_heal = run.stderr().lines().count();
    let node_lines: Vec<usize> = nodes[2..].iter().map(|n| n.stderr().lines().count()).collect();
    for proxy in &proxies {
        proxy.heal();
    }
    let healed_at = Instant::now();

    // They come back by themselves, under new ids (the SuperLink forgot them).
    for ((node, &from), old) in nodes[2..].iter().zip(&node_lines).zip(&cut_ids) {
        let again = node.wait_log_lines(REJOIN, |lines| {
            lines[from..]
                .iter()
                // Either way in: `registered node_id=` once the heartbeat was refused,
                // `registered again under a new id node_id=` once the stream closed.
                .filter(|l| l.contains(NODE_READY) || l.contains("registered again under a new id"))
                .find_map(|l| field(l, "node_id").filter(|id| id != old))
        });
        assert!(
            again.is_some(),
            "{} did not register again within {REJOIN:?} of the heal: {}",
            node.name,
            node.stderr()
        );
    }
    let rejoined_after = healed_at.elapsed();
    // Later rounds sample from all 4 again, and all 4 answer.
    let full_again = run.wait_log_lines(COMMAND_TIMEOUT, |lines| {
        let later = &lines[before_heal..];
        let trained = later
            .iter()
            .filter_map(|l| training_on(l))
            .any(|(_, size, connected)| size == 2 && connected == 4);
        let evaluated = later
            .iter()
            .filter_map(|l| phase_end(l))
            .any(|p| p.phase == "evaluate" && p.replies == 4 && p.sampled == 4);
        (trained && evaluated).then_some(())
    });
    assert!(
        full_again.is_some(),
        "no round after the heal sampled and heard from all 4 nodes: {}",
        run.stderr()
    );
    assert_run_completed(&mut run);
    let ended_after_heal = healed_at.elapsed();
    let phases = checked_phases(&run.stderr());
    assert_eq!(
        phases.iter().filter(|p| p.phase == "train").count() as u64,
        rounds,
        "{}",
        run.stderr()
    );
    let mut all: Vec<&Proc> = nodes.iter().collect();
    all.push(&link.proc);
    assert_no_panic(&all);
    eprintln!(
        "R3 {}: {rounds} rounds at {pace:?} per round; rejoined {rejoined_after:?} and the run \
         ended {ended_after_heal:?} after the heal",
        transport()
    );
}}

/// A small seeded generator (xorshift64*), so that the victims of every round are the same
/// from one test run to the next.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }

    /// `k` distinct indices below `n`.
    fn choose(&mut self, k: usize, n: usize) -> Vec<usize> {
        let mut picked = Vec::with_capacity(k);
        while picked.len() < k {
            let i = self.below(n);
            if !picked.contains(&i) {
                picked.push(i);
            }
        }
        picked.sort_unstable();
        picked
    }
}

over_both_transports! {
/// R2 in deployment: 10 SuperNodes, 3 of them (a seeded choice among those registered)
/// killed with SIGKILL as each round starts and restarted once its training phase is over. Every round ends without
/// waiting out its timeout, aggregating the survivors, and the run completes.
fn thirty_percent_of_nodes_killed_each_round_the_run_completes() {
    let _serial = serial();
    const NODES: u32 = 10;
    const VICTIMS: usize = 3;
    const ROUNDS: u64 = 4;
    let link = SuperLink::start();
    let heartbeat = ["--heartbeat-interval", "1"];
    let mut nodes: Vec<Proc> = (0..NODES)
        .map(|p| supernode(&link.fleet, p, NODES, &heartbeat))
        .collect();
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("digits", &link.control);
    let app = app.path().to_str().unwrap();
    // Enough local work that a node is still training when it is killed; a round timeout
    // far beyond what the run should need.
    let config = format!("num-server-rounds={ROUNDS} local-epochs=100 round-timeout=120");
    let started = Instant::now();
    let mut run = flwr_spawn(&["run", app, "e2e", "--run-config", &config, "--stream"]);
    let mut rng = Seeded(0x05ee_d0fc_4a05);
    let mut killed = Vec::new();
    let mut retired = Vec::new();
    for round in 1..=ROUNDS {
        let start = format!("round {round}: training on ");
        assert!(
            run.wait_log(&start, COMMAND_TIMEOUT).is_some(),
            "round {round} did not start: {}",
            run.stderr()
        );
        // Victims among the nodes in the round: a node restarted after the last round
        // that has not registered yet was not sampled, and killing it would test nothing.
        let registered: Vec<usize> = (0..nodes.len())
            .filter(|&i| nodes[i].wait_log(NODE_READY, Duration::ZERO).is_some())
            .collect();
        assert!(registered.len() > VICTIMS, "round {round}: {registered:?}");
        let victims: Vec<usize> = rng
            .choose(VICTIMS, registered.len())
            .into_iter()
            .map(|i| registered[i])
            .collect();
        for &v in &victims {
            nodes[v].signal("KILL");
        }
        killed.push(victims.clone());
        let end = format!("round {round}: ");
        let ended = run.wait_log_lines(COMMAND_TIMEOUT, |lines| {
            lines
                .iter()
                .filter(|l| l.starts_with(&end))
                .filter_map(|l| phase_end(l))
                .find(|p| p.phase == "train")
        });
        assert!(ended.is_some(), "round {round}'s training did not end: {}", run.stderr());
        for &v in &victims {
            nodes[v].wait_exit(READY_TIMEOUT);
            let fresh = supernode(&link.fleet, v as u32, NODES, &heartbeat);
            retired.push(std::mem::replace(&mut nodes[v], fresh));
        }
    }
    assert_run_completed(&mut run);
    let took = started.elapsed();
    let log = run.stderr();
    let phases = checked_phases(&log);
    let mut failed = 0;
    for round in 1..=ROUNDS {
        let train = phases
            .iter()
            .find(|p| p.round == round && p.phase == "train")
            .unwrap_or_else(|| panic!("no end of round {round}'s training:\n{log}"));
        // The survivors are aggregated: only killed nodes fail (or answer before dying).
        assert!(
            train.failed <= VICTIMS as u64 && train.replies + train.failed == train.sampled,
            "round {round}: {train:?}\n{log}"
        );
        assert!(train.replies >= 2, "round {round}: {train:?}\n{log}");
        failed += train.failed;
    }
    // The kills landed while nodes were working: most killed nodes never answered.
    assert!(
        failed >= ROUNDS,
        "only {failed} failed replies over {ROUNDS} rounds of {VICTIMS} kills: the kills came \
         too late to test anything\n{log}"
    );
    let mut all: Vec<&Proc> = nodes.iter().chain(&retired).collect();
    all.push(&link.proc);
    assert_no_panic(&all);
    let trains: Vec<String> = phases
        .iter()
        .filter(|p| p.phase == "train")
        .map(|p| format!("{}/{} ({} failed)", p.replies, p.sampled, p.failed))
        .collect();
    eprintln!(
        "R2 {}: {ROUNDS} rounds in {took:?}, victims {killed:?}, train replies {trains:?}",
        transport()
    );
}}

/// `round R: evaluate metrics: eval_loss=X, ...`: (R, X).
fn eval_loss(line: &str) -> Option<(u64, f64)> {
    let rest = line.strip_prefix("round ")?;
    let (round, rest) = rest.split_once(": evaluate metrics: eval_loss=")?;
    let value = rest.split(',').next()?;
    Some((round.parse().ok()?, value.parse().ok()?))
}

over_both_transports! {
/// A SuperNode killed (SIGKILL) while it uploads a large training reply, then restarted:
/// the round completes without that reply (a partial upload is never taken for a reply),
/// the model stays intact, and the run completes on all three nodes again.
fn a_supernode_killed_mid_upload_of_a_large_reply_leaves_nothing_corrupt() {
    let _serial = serial();
    // 25M float32 parameters: a 100 MB reply, long enough on the wire to be caught in it.
    const PARAMS: u64 = 25_000_000;
    const MODEL_BYTES: u64 = PARAMS * 4;
    let link = SuperLink::start();
    let heartbeat = ["--heartbeat-interval", "10"];
    // Node 0 reaches the SuperLink through a forwarder that counts what it uploads.
    let watch = Partition::new(&link.fleet);
    let mut nodes = vec![supernode(&watch.address(), 0, 3, &heartbeat)];
    nodes.extend((1..3).map(|p| supernode(&link.fleet, p, 3, &heartbeat)));
    for node in &nodes {
        node.expect_log(NODE_READY);
    }
    let app = app_for("quickstart", &link.control);
    let app = app.path().to_str().unwrap();
    let config = format!("num-server-rounds=3 total-params={PARAMS} round-timeout=120");
    let mut run = flwr_spawn(&["run", app, "e2e", "--run-config", &config, "--stream"]);
    assert!(
        run.wait_log("round 2: training on 3 of 3", COMMAND_TIMEOUT).is_some(),
        "round 2 did not start on 3 nodes: {}",
        run.stderr()
    );
    // Node 0 downloads the model, adds noise, then uploads: it is caught once a fifth of
    // the model has gone up.
    let base = watch.upstream_bytes();
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let at_kill = loop {
        let now = watch.upstream_bytes();
        if now - base >= MODEL_BYTES / 5 {
            nodes[0].signal("KILL");
            break now - base;
        }
        assert!(Instant::now() < deadline, "node 0 never uploaded: {}", nodes[0].stderr());
        std::thread::sleep(Duration::from_millis(1));
    };
    nodes[0].wait_exit(READY_TIMEOUT);
    assert!(
        at_kill < MODEL_BYTES,
        "node 0 had sent its whole reply ({at_kill} bytes) before the kill"
    );
    let killed = std::mem::replace(&mut nodes[0], supernode(&watch.address(), 0, 3, &heartbeat));
    nodes[0].expect_log(NODE_READY);

    assert_run_completed(&mut run);
    let log = run.stderr();
    let phases = checked_phases(&log);
    let train_2 = phases
        .iter()
        .find(|p| p.round == 2 && p.phase == "train")
        .unwrap_or_else(|| panic!("no end of round 2's training:\n{log}"));
    assert!(train_2.replies >= 2, "{train_2:?}\n{log}");
    // A reply left out is left out because its node went away, never because it arrived
    // damaged.
    for line in log.lines().filter_map(|l| l.split_once("; left out: ").map(|(_, why)| why)) {
        assert!(
            line.contains("unavailable") || line.contains("offline"),
            "a reply was left out for another reason: {line}\n{log}"
        );
    }
    let train_3 = phases
        .iter()
        .find(|p| p.round == 3 && p.phase == "train")
        .unwrap_or_else(|| panic!("no end of round 3's training:\n{log}"));
    // The restarted node is connected and sampled again. Its reply, or another's, may still
    // be left out when a node on this loaded machine misses its heartbeats mid-transfer
    // (then for unavailability, as checked above), so only a majority is required.
    assert_eq!(train_3.sampled, 3, "the restarted node is not back in round 3\n{log}");
    assert!(train_3.replies >= 2, "{train_3:?}\n{log}");
    // The model is the running mean of uniform noise in [-0.01, 0.01): each value stays
    // within 0.01 per round. A damaged array would not.
    let losses: Vec<(u64, f64)> = log.lines().filter_map(eval_loss).collect();
    assert_eq!(losses.len(), 3, "{log}");
    for (round, loss) in losses {
        assert!(
            loss.is_finite() && loss <= 0.01 * round as f64,
            "round {round}: eval_loss {loss} is not what noise gives\n{log}"
        );
    }
    let mut all: Vec<&Proc> = nodes.iter().collect();
    all.push(&killed);
    all.push(&link.proc);
    assert_no_panic(&all);
    eprintln!(
        "upload kill {}: node 0 killed after uploading {at_kill} of {MODEL_BYTES} bytes; {train_2:?}",
        transport()
    );
}}

/// Echoes every TCP connection and every datagram on one port of 127.0.0.1 (both
/// protocols), in background threads: the far side of a [`Partition`] under test.
fn echo_pair() -> u16 {
    use std::io::{Read, Write};
    let (tcp, udp) = (0..100)
        .find_map(|_| {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = tcp.local_addr().unwrap().port();
            std::net::UdpSocket::bind(("127.0.0.1", port))
                .ok()
                .map(|udp| (tcp, udp))
        })
        .expect("a port free for TCP and UDP");
    let port = tcp.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in tcp.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut buffer = [0u8; 1024];
                while let Ok(n @ 1..) = stream.read(&mut buffer) {
                    if stream.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    std::thread::spawn(move || {
        let mut buffer = [0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buffer) {
            let _ = udp.send_to(&buffer[..n], from);
        }
    });
    port
}

/// The forwarder itself: while cut, TCP stalls without closing (held bytes arrive after
/// the heal, new connections carry nothing until then) and datagrams vanish both ways;
/// after the heal everything passes again; dropping it frees the port.
#[test]
fn a_partition_stalls_tcp_drops_udp_and_heals() {
    use std::io::{ErrorKind, Read, Write};
    let port = echo_pair();
    let proxy = Partition::new(&format!("127.0.0.1:{port}"));
    // Long enough for loopback to deliver anything that is going to be delivered.
    let quiet = Duration::from_millis(300);

    let mut tcp = std::net::TcpStream::connect(proxy.address()).unwrap();
    tcp.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    let mut byte = [0u8; 1];
    tcp.write_all(b"a").unwrap();
    tcp.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"a");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.connect(proxy.address()).unwrap();
    udp.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    udp.send(b"x").unwrap();
    assert_eq!(udp.recv(&mut byte).unwrap(), 1);
    assert_eq!(&byte, b"x");

    proxy.cut();
    assert!(proxy.is_cut());
    tcp.write_all(b"b").unwrap();
    let mut late = std::net::TcpStream::connect(proxy.address()).unwrap();
    late.write_all(b"c").unwrap();
    udp.send(b"y").unwrap();
    for stream in [&mut tcp, &mut late] {
        stream.set_read_timeout(Some(quiet)).unwrap();
        let stalled = stream.read(&mut byte).unwrap_err().kind();
        assert!(
            matches!(stalled, ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{stalled:?}: a cut connection must stall, not close"
        );
        stream.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    }
    udp.set_read_timeout(Some(quiet)).unwrap();
    assert!(udp.recv(&mut byte).is_err(), "a datagram crossed the cut");
    assert!(proxy.udp_dropped() >= 1);

    proxy.heal();
    tcp.read_exact(&mut byte).unwrap();
    assert_eq!(&byte, b"b", "bytes held by the cut arrive after the heal");
    late.read_exact(&mut byte).unwrap();
    assert_eq!(
        &byte, b"c",
        "a connection opened during the cut works after the heal"
    );
    udp.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    udp.send(b"z").unwrap();
    assert_eq!(udp.recv(&mut byte).unwrap(), 1);
    assert_eq!(
        &byte, b"z",
        "the datagram sent during the cut was dropped, not held"
    );
    // a, b and c over TCP, x and z over UDP: y never went up.
    assert_eq!(proxy.upstream_bytes(), 5);

    let address = proxy.address();
    drop(proxy);
    assert!(
        matches!(tcp.read(&mut byte), Ok(0) | Err(_)),
        "connections end with the forwarder"
    );
    std::net::TcpListener::bind(&address).expect("the forwarder freed its TCP port");
    std::net::UdpSocket::bind(&address).expect("the forwarder freed its UDP port");
}
