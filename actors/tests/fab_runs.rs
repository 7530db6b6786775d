//! Runs of apps that come as FABs, on a SuperLink and SuperNodes in this process. The
//! "app processes" are small shell scripts (to see processes start, crash and die) or this
//! test itself acting as the app process through the AppIo traits (`--isolation
//! process`), so no transport is involved; cli/tests/isolation.rs runs real app binaries
//! over gRPC.

// Tests and benches may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]
#![cfg(unix)]

mod common;

use bytes::Bytes;
use common::*;
use floret_actors::{
    AppLauncher, FabCache, HeartbeatPolicy, Isolation, LinkAppIo, LinkFabs, LinkState,
    MemoryLinkState, NodeAppIo, NodeFabs, SuperLinkService, SuperNode,
};
use floret_core::fab::{Fab, FabManifest, HOST_TARGET, fab_hash, sha256_hex};
use floret_core::{
    AppIoError, AppOutcome, AppRef, ClientAppIo, Control, ControlError, Fleet, FleetError, Message,
    MetricRecord, Payload, RecordDict, RunEvent, RunStatus, ServerAppIo, StartRun, SubStatus,
    error_code,
};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Real time: processes run on the OS's clock.
const LIMIT: Duration = Duration::from_secs(30);

/// A FAB whose binary is a shell script with `body`, built for `target`.
fn script_fab(body: &str, target: &str) -> Bytes {
    let binary = Bytes::from(format!("#!/bin/sh\n{body}\n"));
    Fab {
        manifest: FabManifest {
            name: "script".into(),
            version: "1.0.0".into(),
            publisher: "test".into(),
            serverapp: "script:server".into(),
            clientapp: "script:client".into(),
            target: target.into(),
            binary_sha256: sha256_hex(&binary),
            pyproject: String::new(),
        },
        binary,
    }
    .pack()
}

fn fab_request(fab: Bytes) -> StartRun {
    StartRun {
        app: AppRef {
            name: "script".into(),
            serverapp: "script:server".into(),
            clientapp: "script:client".into(),
            fab_hash: fab_hash(&fab),
        },
        fab: Some(fab),
        ..StartRun::default()
    }
}

/// A SuperLink that runs FABs with `isolation`, caching binaries under `dir`.
async fn link(isolation: Isolation, dir: &Path) -> (SuperLinkService, Arc<LinkAppIo>) {
    let state: Arc<dyn LinkState> = Arc::new(MemoryLinkState::new());
    let io = Arc::new(LinkAppIo::new(state.clone()));
    let fabs = LinkFabs {
        io: io.clone(),
        launcher: AppLauncher::new(isolation, FabCache::new(dir), "127.0.0.1:1".into()),
        simulation_workers: None,
    };
    let catalog = Arc::new(TestCatalog::new());
    let service =
        SuperLinkService::start_with_fabs(state, catalog, HeartbeatPolicy::default(), Some(fabs))
            .await
            .unwrap();
    (service, io)
}

async fn status_is(service: &SuperLinkService, run_id: u64, status: RunStatus) {
    let state = service.state();
    wait_until(&format!("run {run_id} {status}"), LIMIT, || {
        state.run_status(run_id) == Some(status)
    })
    .await;
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim()
            .starts_with('Z')
    })
}

const FLOWER_PYPROJECT: &str = "[project]\nname = \"pyapp\"\nversion = \"1.0.0\"\n\
[tool.flwr.app]\npublisher = \"t\"\n[tool.flwr.app.components]\n\
serverapp = \"pyapp.server_app:app\"\nclientapp = \"pyapp.client_app:app\"\n";

/// A zip of `entries` and an `.info/CONTENT` (`content`, or made from the entries).
fn flower_zip(entries: &[(&str, &[u8])], content: Option<String>) -> Bytes {
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut lines = Vec::new();
    for (path, data) in entries {
        zip.start_file(*path, options).unwrap();
        zip.write_all(data).unwrap();
        lines.push(format!("{path},{},{}", sha256_hex(data), data.len() * 8));
    }
    zip.start_file(".info/CONTENT", options).unwrap();
    zip.write_all(content.unwrap_or_else(|| lines.join("\n")).as_bytes())
        .unwrap();
    Bytes::from(zip.finish().unwrap().into_inner())
}

/// A Flower FAB (zip) that is not a valid one is refused by `StartRun` with a line that
/// says why, before any run exists: nothing is stored, nothing written to the cache or
/// beside it.
#[tokio::test]
async fn an_invalid_flower_fab_is_refused_at_submit_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (service, _) = link(Isolation::Subprocess, &cache).await;
    let control = service.control();
    let pyproject = FLOWER_PYPROJECT.as_bytes();
    let server = b"app = None\n".as_slice();
    let zeros = vec![0u8; 65 << 20];
    let cases: Vec<(&str, Bytes, &str)> = vec![
        (
            "path traversal",
            flower_zip(
                &[("pyproject.toml", pyproject), ("../evil.py", server)],
                None,
            ),
            "\"../evil.py\" has an empty, `.` or `..` component",
        ),
        (
            "absolute path",
            flower_zip(
                &[("pyproject.toml", pyproject), ("/tmp/evil.py", server)],
                None,
            ),
            "is absolute",
        ),
        (
            "a file that differs from its CONTENT line",
            flower_zip(
                &[
                    ("pyproject.toml", pyproject),
                    ("pyapp/server_app.py", server),
                ],
                Some(format!("pyapp/server_app.py,{},88", sha256_hex(b"other"))),
            ),
            "pyapp/server_app.py does not match its .info/CONTENT line",
        ),
        (
            "no pyproject",
            flower_zip(&[("pyapp/server_app.py", server)], None),
            "it has no pyproject.toml",
        ),
        (
            "a zip bomb",
            flower_zip(
                &[("pyproject.toml", pyproject), ("data.json", &zeros)],
                None,
            ),
            "more than 64 MiB",
        ),
    ];
    for (case, fab, why) in cases {
        let err = control
            .start_run(fab_request(fab.clone()))
            .await
            .unwrap_err();
        let ControlError::Invalid(line) = &err else {
            panic!("{case}: {err:?}");
        };
        assert!(line.contains(why), "{case}: {line}");
        assert!(line.contains("flwr build"), "{case} names the fix: {line}");
        assert!(!line.contains('\n'), "{case}: one line");
        assert!(service.state().fab(&fab_hash(&fab)).is_none(), "{case}");
    }
    assert!(!cache.exists(), "nothing written to the FAB cache");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "nothing written beside it: {left:?}");
    assert!(service.state().runs().is_empty(), "no run was made");
    service.shutdown().await;
}

/// A valid Flower FAB is taken as it is, kept by its hash (the sha256 of the zip) for the
/// SuperNodes, and its ServerApp's process started from its unpacked files; without a way
/// to host Python (`AppLauncher::with_python`) the run fails and says so.
#[tokio::test]
async fn a_flower_fab_is_kept_by_hash_and_unpacked_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (service, _) = link(Isolation::Subprocess, &cache).await;
    let control = service.control();
    let fab = flower_zip(
        &[
            ("pyproject.toml", FLOWER_PYPROJECT.as_bytes()),
            ("pyapp/server_app.py", b"app = None\n"),
        ],
        None,
    );
    let hash = fab_hash(&fab);
    let run_id = control.start_run(fab_request(fab.clone())).await.unwrap();
    let (run, _) = follow_to_end(control.as_ref(), run_id).await;
    assert_eq!(run.status, RunStatus::Finished(SubStatus::Failed));
    assert!(
        run.reason
            .contains("cannot start the ServerApp of a Flower FAB"),
        "{}",
        run.reason
    );
    assert_eq!(service.fleet().get_fab(&hash).await.unwrap(), fab);
    let app = cache.join(&hash).join("app");
    assert_eq!(
        std::fs::read(app.join("pyapp/server_app.py")).unwrap(),
        b"app = None\n"
    );
    assert!(app.join("pyproject.toml").is_file());
    service.shutdown().await;
}

/// A SuperLink that starts no app processes (`--isolation process`) cannot host a Python
/// ServerApp: the Flower FAB is refused at submit, naming the flag that fixes it.
#[tokio::test]
async fn a_flower_fab_is_refused_by_a_superlink_that_starts_no_app_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = link(Isolation::Process, dir.path()).await;
    let fab = flower_zip(&[("pyproject.toml", FLOWER_PYPROJECT.as_bytes())], None);
    let err = service
        .control()
        .start_run(fab_request(fab))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--isolation subprocess"), "{err}");
    assert!(service.state().runs().is_empty());
    service.shutdown().await;
}

#[tokio::test]
async fn a_serverapp_process_that_ends_without_reporting_fails_its_run() {
    let dir = tempfile::tempdir().unwrap();
    let (service, _) = link(Isolation::Subprocess, dir.path()).await;
    let control = service.control();
    let fab = script_fab("exit 3", HOST_TARGET);
    let run_id = control.start_run(fab_request(fab.clone())).await.unwrap();
    let (run, _) = follow_to_end(control.as_ref(), run_id).await;
    assert_eq!(run.status, RunStatus::Finished(SubStatus::Failed));
    assert_eq!(run.reason, "ServerApp process exited with status 3");
    assert_eq!(run.app.fab_hash, fab_hash(&fab));
    let fleet = service.fleet();
    assert_eq!(fleet.get_fab(&fab_hash(&fab)).await.unwrap(), fab);
    service.shutdown().await;
}

#[tokio::test]
async fn a_stopped_run_kills_its_serverapp_process() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let (service, _) = link(Isolation::Subprocess, &dir.path().join("cache")).await;
    let control = service.control();
    let script = format!("echo $$ > '{}'\nexec sleep 600", pid_file.display());
    let run_id = control
        .start_run(fab_request(script_fab(&script, HOST_TARGET)))
        .await
        .unwrap();
    wait_until("the app process", LIMIT, || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    control.stop_run(run_id).await.unwrap();
    status_is(&service, run_id, RunStatus::Finished(SubStatus::Stopped)).await;
    wait_until("the app process to be killed", LIMIT, || !alive(pid)).await;
    service.shutdown().await;
}

#[tokio::test]
async fn with_process_isolation_a_run_waits_for_a_claim_and_ends_as_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (service, io) = link(Isolation::Process, dir.path()).await;
    let control = service.control();
    // A foreign target is fine: the SuperLink starts nothing.
    let fab = script_fab("exit 0", "riscv64gc-unknown-linux-gnu");

    let completes = control.start_run(fab_request(fab.clone())).await.unwrap();
    wait_until("a run waiting for a claim", LIMIT, || io.unclaimed() == 1).await;
    let token = io.claim().await.unwrap().expect("a run to claim");
    assert_eq!(io.claim().await.unwrap(), None, "claimed once");
    assert_eq!(io.context(&token).await.unwrap().run_id, completes);
    io.emit(&token, RunEvent::Log("hello from the app".into()))
        .await
        .unwrap();
    io.finish(&token, AppOutcome::Completed).await.unwrap();
    let (run, events) = follow_to_end(control.as_ref(), completes).await;
    assert_eq!(run.status, RunStatus::Finished(SubStatus::Completed));
    assert!(matches!(&events[0], RunEvent::Log(l) if l.contains("waiting for a ServerApp")));
    assert!(events.contains(&RunEvent::Log("hello from the app".into())));
    assert_eq!(io.context(&token).await, Err(AppIoError::BadToken));

    let fails = control.start_run(fab_request(fab.clone())).await.unwrap();
    wait_until("a run waiting for a claim", LIMIT, || io.unclaimed() == 1).await;
    let token = io.claim().await.unwrap().unwrap();
    io.finish(
        &token,
        AppOutcome::Failed("ServerApp panicked: boom".into()),
    )
    .await
    .unwrap();
    let (run, _) = follow_to_end(control.as_ref(), fails).await;
    assert_eq!(run.status, RunStatus::Finished(SubStatus::Failed));
    assert_eq!(run.reason, "ServerApp panicked: boom");

    let stopped = control.start_run(fab_request(fab)).await.unwrap();
    wait_until("a run waiting for a claim", LIMIT, || io.unclaimed() == 1).await;
    let token = io.claim().await.unwrap().unwrap();
    control.stop_run(stopped).await.unwrap();
    assert_eq!(io.context(&token).await, Err(AppIoError::BadToken));
    service.shutdown().await;
}

#[tokio::test]
async fn fabs_are_refused_by_a_superlink_without_fab_support() {
    let service = service(&TestCatalog::new()).await;
    let fab = script_fab("exit 0", HOST_TARGET);
    let e = service.control().start_run(fab_request(fab)).await;
    assert!(
        matches!(&e, Err(ControlError::Invalid(m)) if m.contains("built-in apps only")),
        "{e:?}"
    );
    let e = service.fleet().get_fab("00").await.unwrap_err();
    assert!(matches!(e, FleetError::Invalid(_)), "{e:?}");
    service.shutdown().await;
}

/// A SuperNode running FABs with `isolation`, caching under `dir`; the SuperLink side is
/// driven by the test through `LinkAppIo` (process isolation there).
struct Federation {
    service: SuperLinkService,
    link_io: Arc<LinkAppIo>,
    node_io: Arc<NodeAppIo>,
    stop: oneshot::Sender<()>,
    node: tokio::task::JoinHandle<Result<(), floret_actors::SuperNodeError>>,
}

impl Federation {
    async fn start(isolation: Isolation, dir: &Path) -> Federation {
        let (service, link_io) = link(Isolation::Process, &dir.join("link")).await;
        let node_io = Arc::new(NodeAppIo::new());
        let fabs = NodeFabs {
            io: node_io.clone(),
            launcher: AppLauncher::new(isolation, FabCache::new(dir.join("node")), "x:1".into()),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let node = tokio::spawn(SuperNode::run_with_fabs(
            node_config(0),
            service.fleet(),
            Arc::new(TestCatalog::new()),
            Some(fabs),
            async move {
                let _ = stopped.await;
            },
        ));
        let state = service.state();
        wait_until("the node", LIMIT, || state.node_ids().len() == 1).await;
        Federation {
            service,
            link_io,
            node_io,
            stop,
            node,
        }
    }

    /// Starts a run of `fab` and claims its ServerApp session.
    async fn run(&self, fab: Bytes) -> String {
        self.service
            .control()
            .start_run(fab_request(fab))
            .await
            .unwrap();
        let io = &self.link_io;
        wait_until("a run waiting for a claim", LIMIT, || io.unclaimed() == 1).await;
        io.claim().await.unwrap().unwrap()
    }

    /// Sends a `train` message to the node and waits for its reply.
    async fn train(&self, token: &str) -> Message {
        let node = self.service.state().node_ids()[0];
        let message = Message::new(RecordDict::new(), node, "train");
        let io = &self.link_io;
        let ids = io.send(token, vec![message]).await.unwrap();
        let mut replies = io.receive(token, LIMIT).await.unwrap();
        assert_eq!(replies.len(), 1, "{replies:?}");
        let reply = replies.remove(0);
        assert_eq!(reply.metadata.reply_to_message_id, ids[0]);
        reply
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.node.await.unwrap().unwrap();
        self.service.shutdown().await;
    }
}

fn error_of(reply: &Message) -> (i64, String) {
    let e = reply.error().expect("an error reply");
    (e.code, e.reason.clone())
}

#[tokio::test]
async fn a_crashing_clientapp_process_costs_its_message_an_error_and_is_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let federation = Federation::start(Isolation::Subprocess, dir.path()).await;
    let crash = format!("echo started >> '{}'\nexit 3", starts.display());
    let fab = script_fab(&crash, HOST_TARGET);
    let token = federation.run(fab.clone()).await;
    for _ in 0..2 {
        let reply = federation.train(&token).await;
        assert_eq!(
            error_of(&reply),
            (
                error_code::CLIENT_APP_RAISED_EXCEPTION,
                "ClientApp process exited with status 3".into()
            )
        );
    }
    let started = std::fs::read_to_string(&starts).unwrap();
    assert_eq!(started.lines().count(), 2, "a fresh process per message");
    let cached = dir
        .path()
        .join("node")
        .join(format!("{}.fab", fab_hash(&fab)));
    assert!(cached.is_file(), "the FAB is cached by hash");

    let foreign = "riscv64gc-unknown-linux-gnu";
    let token = federation.run(script_fab("exit 0", foreign)).await;
    let (code, reason) = error_of(&federation.train(&token).await);
    assert_eq!(code, error_code::LOAD_CLIENT_APP_EXCEPTION);
    assert!(
        reason.contains(foreign) && reason.contains(HOST_TARGET),
        "{reason}"
    );
    federation.shutdown().await;
}

#[tokio::test]
async fn with_process_isolation_a_claimed_session_answers_the_runs_messages() {
    let dir = tempfile::tempdir().unwrap();
    let federation = Federation::start(Isolation::Process, dir.path()).await;
    let token = federation.run(script_fab("exit 0", HOST_TARGET)).await;
    let node_io = federation.node_io.clone();
    // The test is the ClientApp process: it claims the run once its first message waits.
    let app = tokio::spawn(async move {
        wait_until("a ClientApp session", LIMIT, || node_io.unclaimed() == 1).await;
        let token = node_io.claim().await.unwrap().unwrap();
        let mut seen = Vec::new();
        for calls in 1..=2i64 {
            let task = node_io.next_task(&token, LIMIT).await.unwrap().unwrap();
            seen.push(task.context.state.metric_record("calls").is_ok());
            let mut context = task.context;
            let mut count = MetricRecord::new();
            count.insert("n", calls);
            context.state.insert("calls", count.clone());
            let content = RecordDict::new().with("metrics", count);
            let id = task.message.metadata.message_id;
            node_io
                .complete_task(&token, &id, Payload::Content(content), context)
                .await
                .unwrap();
        }
        seen
    });
    for calls in 1..=2 {
        let reply = federation.train(&token).await;
        let content = reply.content().expect("content");
        let n = content.metric_record("metrics").unwrap().get_f64("n");
        assert_eq!(n.unwrap(), calls as f64);
    }
    assert_eq!(
        app.await.unwrap(),
        vec![false, true],
        "the context the process returns is the one it gets next"
    );
    federation.shutdown().await;
}
