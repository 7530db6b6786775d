//! The wrapper against a recording fake fleet, on paused time: each fault does what the
//! plan says, at the point it says (before or after the fleet acted).

use super::*;
use floret_core::{Array, ArrayRecord, Payload, RecordDict, Registration};
use std::sync::Mutex;
use tokio::time::Instant;

/// Records pushes, refuses a second reply to the same message (as the SuperLink's state
/// does), and hands out instruction streams the test feeds.
#[derive(Default)]
struct FakeFleet {
    applied: Mutex<Vec<Message>>,
    streams: Mutex<Vec<mpsc::Sender<Message>>>,
    queued: Mutex<Vec<Message>>,
}

impl FakeFleet {
    fn applied_ids(&self) -> Vec<String> {
        lock(&self.applied)
            .iter()
            .map(|m| m.metadata.reply_to_message_id.clone())
            .collect()
    }

    async fn send(&self, message: Message) {
        let tx = lock(&self.streams).last().cloned().expect("a subscription");
        tx.send(message).await.expect("the stream is open");
    }
}

#[async_trait]
impl Fleet for FakeFleet {
    async fn register_node(&self, _: RegisterNode) -> Result<Registration, FleetError> {
        Ok(Registration {
            node_id: 1,
            incarnation: 1,
        })
    }
    async fn deactivate_node(&self, _: u64) -> Result<(), FleetError> {
        Ok(())
    }
    async fn heartbeat(&self, _: u64, _: f64) -> Result<(), FleetError> {
        Ok(())
    }
    async fn pull_messages(&self, _: u64) -> Result<Vec<Message>, FleetError> {
        Ok(std::mem::take(&mut *lock(&self.queued)))
    }
    async fn push_messages(&self, _: u64, messages: Vec<Message>) -> Result<(), FleetError> {
        let mut applied = lock(&self.applied);
        for m in messages {
            let id = &m.metadata.reply_to_message_id;
            if applied
                .iter()
                .any(|a| &a.metadata.reply_to_message_id == id)
            {
                return Err(FleetError::Invalid(format!("{id} was already answered")));
            }
            applied.push(m);
        }
        Ok(())
    }
    async fn get_run(&self, run_id: u64) -> Result<RunInfo, FleetError> {
        Err(FleetError::UnknownRun(run_id))
    }
    async fn subscribe(&self, _: u64) -> Result<mpsc::Receiver<Message>, FleetError> {
        let (tx, rx) = mpsc::channel(16);
        lock(&self.streams).push(tx);
        Ok(rx)
    }
}

fn instruction(id: &str, group: &str) -> Message {
    let mut m = Message::new(RecordDict::new(), 1, "train").with_group_id(group.to_string());
    m.metadata.message_id = id.into();
    m
}

fn reply(to: &str) -> Message {
    instruction(to, "1").reply(Payload::Content(RecordDict::new()))
}

fn wrap(plan: FaultPlan) -> (Arc<FakeFleet>, FaultyFleet) {
    let fake = Arc::new(FakeFleet::default());
    let faulty = FaultyFleet::new(fake.clone(), plan, 0).expect("a valid plan");
    (fake, faulty)
}

/// A push that the plan drops at `point` (every push is dropped there).
fn dropping(point: DropPoint) -> FaultPlan {
    let rate = |p| if p == point { 1.0 } else { 0.0 };
    FaultPlan {
        drops: Drops {
            request: rate(DropPoint::Request),
            response: rate(DropPoint::Response),
            calls: vec![Call::Push],
        },
        ..FaultPlan::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_lost_request_is_not_applied_and_a_lost_response_is() {
    let (fake, lost_request) = wrap(dropping(DropPoint::Request));
    let err = lost_request.push_messages(1, vec![reply("a")]).await;
    assert!(matches!(err, Err(FleetError::Unavailable(_))), "{err:?}");
    assert!(fake.applied_ids().is_empty());
    assert_eq!(lost_request.counts().dropped_requests, 1);

    let (fake, lost_response) = wrap(dropping(DropPoint::Response));
    let err = lost_response.push_messages(1, vec![reply("a")]).await;
    assert!(matches!(err, Err(FleetError::Unavailable(_))), "{err:?}");
    assert_eq!(fake.applied_ids(), ["a"]);
    // The node's retry is refused: the reply is already in.
    let _ = lost_response.push_messages(1, vec![reply("a")]).await;
    assert_eq!(fake.applied_ids(), ["a"]);
    let counts = lost_response.counts();
    assert_eq!((counts.dropped_responses, counts.pushes_refused), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_duplicated_push_reaches_the_fleet_twice_and_the_refusal_is_counted() {
    let (fake, faulty) = wrap(FaultPlan {
        duplicate_push: 1.0,
        ..FaultPlan::default()
    });
    faulty.push_messages(1, vec![reply("a")]).await.unwrap();
    assert_eq!(fake.applied_ids(), ["a"]);
    let counts = faulty.counts();
    assert_eq!(
        (
            counts.duplicated_pushes,
            counts.duplicates_refused,
            counts.duplicates_accepted
        ),
        (1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_held_push_is_applied_after_the_next_one_or_after_its_hold() {
    let mut plan = FaultPlan {
        reorder: Reorder {
            rate: 1.0,
            hold: Duration::from_secs(5),
        },
        ..FaultPlan::default()
    };
    let (fake, faulty) = wrap(plan.clone());
    faulty.push_messages(1, vec![reply("a")]).await.unwrap();
    assert!(fake.applied_ids().is_empty(), "held");
    tokio::time::sleep(Duration::from_secs(5)).await;
    tokio::task::yield_now().await;
    assert_eq!(fake.applied_ids(), ["a"], "released at the end of its hold");

    // With every other push held, "b" is held and "c" goes through and releases it.
    plan.reorder.rate = 0.5;
    plan.seed = (0..1_000)
        .find(|&seed| {
            let mut d = Decider::new(
                FaultPlan {
                    seed,
                    ..plan.clone()
                },
                0,
            );
            d.call(Call::Push).hold.is_some() && d.call(Call::Push).hold.is_none()
        })
        .expect("some seed holds the first push only");
    let (fake, faulty) = wrap(plan);
    faulty.push_messages(1, vec![reply("b")]).await.unwrap();
    faulty.push_messages(1, vec![reply("c")]).await.unwrap();
    assert_eq!(fake.applied_ids(), ["c", "b"]);
    assert_eq!(faulty.counts().held_pushes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_disconnect_fails_calls_and_ends_the_stream_until_it_is_over() {
    let (fake, faulty) = wrap(FaultPlan::default());
    let mut stream = faulty.subscribe(1).await.unwrap();
    faulty.disconnect_for(Duration::from_secs(3));
    assert_eq!(stream.recv().await, None, "the stream ends");
    assert!(faulty.heartbeat(1, 10.0).await.is_err());
    assert!(faulty.subscribe(1).await.is_err());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!faulty.is_down());
    let mut stream = faulty.subscribe(1).await.unwrap();
    fake.send(instruction("x", "1")).await;
    assert_eq!(stream.recv().await.unwrap().metadata.message_id, "x");
    let counts = faulty.counts();
    assert_eq!(
        (
            counts.disconnects,
            counts.streams_cut,
            counts.refused_while_down
        ),
        (1, 1, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_outage_cuts_the_stream_when_it_begins() {
    let (_fake, faulty) = wrap(FaultPlan {
        outages: vec![Outage {
            after: Duration::from_secs(10),
            length: Duration::from_secs(1),
        }],
        ..FaultPlan::default()
    });
    let mut stream = faulty.subscribe(1).await.unwrap();
    let start = Instant::now();
    assert_eq!(stream.recv().await, None);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(faulty.is_down());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(faulty.heartbeat(1, 10.0).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn deliveries_are_lost_or_repeated_as_the_plan_says() {
    let (fake, lossy) = wrap(FaultPlan {
        stream: StreamFaults {
            drop: 1.0,
            ..StreamFaults::default()
        },
        ..FaultPlan::default()
    });
    let mut stream = lossy.subscribe(1).await.unwrap();
    fake.send(instruction("x", "1")).await;
    fake.send(instruction("y", "1")).await;
    // The fleet ends its side: both deliveries were lost before that.
    lock(&fake.streams).clear();
    assert_eq!(stream.recv().await, None);
    assert_eq!(lossy.counts().deliveries_lost, 2);

    let (fake, doubling) = wrap(FaultPlan {
        stream: StreamFaults {
            duplicate: 1.0,
            ..StreamFaults::default()
        },
        ..FaultPlan::default()
    });
    let mut stream = doubling.subscribe(1).await.unwrap();
    fake.send(instruction("x", "1")).await;
    for _ in 0..2 {
        assert_eq!(stream.recv().await.unwrap().metadata.message_id, "x");
    }
    assert_eq!(doubling.counts().deliveries_duplicated, 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropout_takes_the_link_down_once_per_step_on_the_stream_and_on_pull() {
    let plan = FaultPlan {
        dropout: Some(Dropout {
            rate: 1.0,
            length: Duration::from_secs(2),
            groups: vec!["2".into()],
        }),
        ..FaultPlan::default()
    };
    let (fake, faulty) = wrap(plan);
    let mut stream = faulty.subscribe(1).await.unwrap();
    fake.send(instruction("r1", "1")).await;
    assert_eq!(stream.recv().await.unwrap().metadata.message_id, "r1");
    fake.send(instruction("r2", "2")).await;
    assert_eq!(stream.recv().await, None, "round 2 took the link down");
    assert!(faulty.is_down());
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Redelivered after the outage: the step is decided, the node keeps it this time.
    lock(&fake.queued).push(instruction("r2", "2"));
    let pulled = faulty.pull_messages(1).await.unwrap();
    assert_eq!(pulled.len(), 1);
    let step = Step {
        group_id: "2".into(),
        message_type: "train".into(),
    };
    assert_eq!(faulty.dropped_out(), [step]);
}

#[tokio::test(start_paused = true)]
async fn payloads_wait_for_the_bandwidth_cap() {
    let (fake, faulty) = wrap(FaultPlan {
        bandwidth: Some(1_000),
        ..FaultPlan::default()
    });
    let mut arrays = ArrayRecord::new();
    arrays.insert("w", Array::from_vec(vec![500], vec![0f32; 500]));
    let content = RecordDict::new().with("arrays", arrays);
    let big = instruction("a", "1").reply(Payload::Content(content));
    assert_eq!(payload_bytes(std::slice::from_ref(&big)), 2_000);
    let start = Instant::now();
    faulty.push_messages(1, vec![big]).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(fake.applied_ids(), ["a"]);
    assert_eq!(faulty.counts().payload_bytes, 2_000);
}
