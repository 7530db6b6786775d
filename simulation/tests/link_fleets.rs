//! The virtual fleets of a `flower-superlink --simulation`, through the real SuperLink
//! service: runs at once share one worker budget.

// Tests may unwrap (a failure is the test failing) and read real time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use async_trait::async_trait;
use floret_actors::{HeartbeatPolicy, MemoryLinkState, RunLimits, SuperLinkService};
use floret_core::{
    AppCatalog, AppError, AppRef, ClientApp, Context, Control, Grid, Message, RecordDict,
    RunStatus, ServerApp, StartRun, SubStatus, UserConfig, UserConfigValue,
};
use floret_simulation::LinkFleets;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Sends one train instruction to every node and waits for the replies.
struct OneRound;

#[async_trait]
impl ServerApp for OneRound {
    async fn main(&self, grid: &dyn Grid, _ctx: Context) -> Result<(), AppError> {
        let nodes = grid.node_ids().await.map_err(AppError::other)?;
        let messages = nodes
            .iter()
            .map(|&node| Message::new(RecordDict::new(), node, "train"))
            .collect();
        let replies = grid
            .send_and_receive(messages, Duration::from_secs(60))
            .await
            .map_err(AppError::other)?;
        if replies.len() != nodes.len() {
            return Err(AppError::other(format!("{} replies", replies.len())));
        }
        Ok(())
    }
}

/// ClientApp calls that last a while, counting how many run at once.
#[derive(Default)]
struct Calls {
    now: AtomicUsize,
    most: AtomicUsize,
}

struct Catalog(Arc<Calls>);

impl AppCatalog for Catalog {
    fn server_app(&self, _: &str) -> Option<Arc<dyn ServerApp>> {
        Some(Arc::new(OneRound))
    }

    fn client_app(&self, _: &str) -> Option<ClientApp> {
        let calls = self.0.clone();
        Some(ClientApp::new().train(move |_, _| {
            let now = calls.now.fetch_add(1, Ordering::SeqCst) + 1;
            calls.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(30));
            calls.now.fetch_sub(1, Ordering::SeqCst);
            Ok(RecordDict::new())
        }))
    }

    fn components(&self) -> Vec<(String, String)> {
        vec![("s".into(), "c".into())]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_simulation_runs_share_one_worker_budget() {
    let calls = Arc::new(Calls::default());
    let catalog = Arc::new(Catalog(calls.clone()));
    let service = SuperLinkService::start_with(
        Arc::new(MemoryLinkState::new()),
        catalog.clone(),
        HeartbeatPolicy::default(),
        None,
        RunLimits::default(),
        Some(Arc::new(LinkFleets::new(catalog, 1, 100))),
    )
    .await
    .unwrap();
    let control = service.control();
    let mut options = UserConfig::new();
    options.insert("num-supernodes".into(), UserConfigValue::Int(6));
    let mut runs = Vec::new();
    for _ in 0..3 {
        let request = StartRun {
            app: AppRef {
                name: "app".into(),
                serverapp: "s".into(),
                clientapp: "c".into(),
                fab_hash: String::new(),
            },
            federation_options: options.clone(),
            ..StartRun::default()
        };
        runs.push(control.start_run(request).await.unwrap());
    }
    let state = service.state();
    for run_id in runs {
        let mut status = state.run_status(run_id);
        for _ in 0..600 {
            if status.is_some_and(RunStatus::is_finished) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = state.run_status(run_id);
        }
        assert_eq!(
            status,
            Some(RunStatus::Finished(SubStatus::Completed)),
            "run {run_id}: {:?}",
            state.run(run_id)
        );
    }
    // Three runs of six nodes each, 18 calls in all, never more than the budget at once.
    assert_eq!(calls.most.load(Ordering::SeqCst), 1);
    service.shutdown().await;
}
