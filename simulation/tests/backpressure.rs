//! The virtual fleet's backpressure: replies the ServerApp has not taken are bounded by the
//! worker count, not by the number of nodes, and the fleet goes on once they are taken.

// Tests may unwrap (a failure is the test failing).
#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use floret_actors::state::SimulationStore;
use floret_actors::{MemoryLinkState, RunStatus, SubStatus};
use floret_core::{
    AppError, AppRef, Array, ArrayRecord, ClientApp, ConfigRecord, Context, Grid, Message,
    RecordDict, ServerApp, message_type,
};
use floret_simulation::{ChaosOptions, SimulationOptions, SimulationRun};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NODES: u64 = 64;
const WORKERS: usize = 2;
/// Float32 values per reply: 1 MiB, so the 64 replies (64 MiB) are far over the bound.
const VALUES: usize = 1 << 18;

/// Sends one message to every node, lets the fleet run while it takes nothing, notes how
/// many replies waited, then takes them all.
struct Idle {
    state: Arc<MemoryLinkState>,
    seen: Arc<Mutex<(usize, usize)>>,
}

#[async_trait]
impl ServerApp for Idle {
    async fn main(&self, grid: &dyn Grid, _ctx: Context) -> Result<(), AppError> {
        let nodes = grid.node_ids().await.map_err(AppError::other)?;
        let messages = nodes
            .iter()
            .map(|&n| {
                let content = RecordDict::new().with("config", ConfigRecord::new());
                Message::new(content, n, message_type::QUERY)
            })
            .collect();
        grid.send(messages).await.map_err(AppError::other)?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting = self.state.replies_waiting().bytes;
        let mut replies = 0;
        while replies < nodes.len() {
            replies += grid
                .receive(Duration::from_secs(10))
                .await
                .map_err(AppError::other)?
                .len();
        }
        *self.seen.lock().unwrap() = (waiting, replies);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_pause_while_replies_wait_and_resume_once_taken() {
    let state = Arc::new(MemoryLinkState::for_simulation());
    let seen = Arc::new(Mutex::new((0, 0)));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = SimulationOptions {
        num_supernodes: NODES,
        num_cpus: cores as f64 / WORKERS as f64,
        num_gpus: 0.0,
    };
    let store: Arc<dyn SimulationStore> = state.clone();
    let outcome = floret_simulation::run_with(
        &options,
        &ChaosOptions::default(),
        store,
        SimulationRun {
            app: AppRef {
                name: "idle".into(),
                ..AppRef::default()
            },
            federation: "backpressure".into(),
            run_config: Default::default(),
            server_app: Arc::new(Idle {
                state: state.clone(),
                seen: seen.clone(),
            }),
            client_app: ClientApp::new().query(|_, _| {
                let mut arrays = ArrayRecord::new();
                arrays.insert(
                    "w",
                    Array::from_vec(vec![VALUES as i32], vec![1.0f32; VALUES]),
                );
                Ok(RecordDict::new().with("arrays", arrays))
            }),
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(
        outcome.status,
        RunStatus::Finished(SubStatus::Completed),
        "{}",
        outcome.reason
    );
    let (waiting, replies) = *seen.lock().unwrap();
    // Each worker may finish the call it had begun when the bound was reached.
    let bound = floret_simulation::pace::WAITING_BYTES_PER_WORKER * WORKERS + WORKERS * VALUES * 4;
    assert!(
        waiting > 0 && waiting <= bound,
        "{waiting} bytes of replies waited; at most {bound} may"
    );
    assert_eq!(replies, NODES as usize, "every node answered in the end");
}
