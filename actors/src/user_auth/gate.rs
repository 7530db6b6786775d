//! The login gate: at most `max_concurrent` password checks at once, at most `max_queued`
//! waiting behind them, and every further login refused at once.
//!
//! An argon2 check holds 19 MiB while it runs; 512 concurrent wrong-password logins took a
//! SuperLink from 168 MB to 9.8 GB. Bounding how many run at once bounds that memory;
//! bounding the queue keeps a flood from piling up waiting requests.
//!
//! The checks run on `max_concurrent` threads of their own, not on tokio's blocking pool,
//! and each thread reuses one argon2 buffer (`secrets::verify_secret`): freed buffers stay
//! resident in the allocator's per-thread arenas, and 128 logins checked 4 at a time on the
//! blocking pool left 1 GB resident; now it is the threads' few buffers (docs/BENCHMARKS.md,
//! "Login flood"). A slow check never stalls the async workers that serve every other call.

use floret_core::UserAuthError;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, oneshot};

/// How many logins may be checked at once and wait for their turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateLimits {
    /// Password or token checks running at once (each holds 19 MiB while it runs).
    pub max_concurrent: usize,
    /// Logins waiting for a check slot; beyond this a login is refused at once.
    pub max_queued: usize,
}

impl Default for GateLimits {
    /// 4 checks at once (under 80 MiB), 64 waiting: a login takes tens of milliseconds, so
    /// a full queue clears within a second.
    fn default() -> Self {
        GateLimits {
            max_concurrent: 4,
            max_queued: 64,
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// See the module doc.
#[derive(Debug)]
pub struct LoginGate {
    /// One permit per login admitted (checking or waiting); `try_acquire`, never waited on.
    admitted: Arc<Semaphore>,
    /// The checking threads' queue; they end when the gate is dropped.
    jobs: mpsc::Sender<Job>,
}

impl LoginGate {
    /// A gate with these limits, and its `max_concurrent` threads (at least 1; the
    /// SuperLink's settings refuse 0).
    pub fn new(limits: GateLimits) -> LoginGate {
        let concurrent = limits.max_concurrent.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..concurrent {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("login-check-{i}"))
                .spawn(move || work(&queue));
            if let Err(e) = started {
                tracing::error!(error = %e, "cannot start a login check thread");
            }
        }
        LoginGate {
            admitted: Arc::new(Semaphore::new(concurrent.saturating_add(limits.max_queued))),
            jobs,
        }
    }

    /// Runs `check` on a checking thread once one is free.
    ///
    /// The admission permit moves into the job, so a check whose caller went away still
    /// counts until it has run: the queue never exceeds its bound.
    ///
    /// # Errors
    /// `TooManyLogins` when every slot and queue place is taken.
    pub async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, UserAuthError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| UserAuthError::TooManyLogins)?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _admitted = admitted;
            let _ = tx.send(check());
        });
        self.jobs
            .send(job)
            .map_err(|_| UserAuthError::TooManyLogins)?;
        rx.await.map_err(|_| {
            // argon2 does not panic on any input; if a check ever does, the login fails
            // like a wrong password and the SuperLink goes on.
            tracing::error!("a login check failed");
            UserAuthError::BadCredentials
        })
    }
}

/// A checking thread: runs jobs until the gate is dropped. A panicking job is contained,
/// so the thread keeps serving.
fn work(queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let next = queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .recv();
        let Ok(job) = next else { return };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};

    /// A check that counts how many run at once and waits until released.
    #[derive(Default)]
    struct Probe {
        running: AtomicUsize,
        most: AtomicUsize,
        released: Mutex<bool>,
        release: Condvar,
    }

    impl Probe {
        fn check(&self) {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let mut released = self.released.lock().unwrap();
            while !*released {
                released = self.release.wait(released).unwrap();
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
        }

        fn open(&self) {
            *self.released.lock().unwrap() = true;
            self.release.notify_all();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_runs_at_most_the_limit_and_refuses_beyond_the_queue() {
        let gate = Arc::new(LoginGate::new(GateLimits {
            max_concurrent: 2,
            max_queued: 3,
        }));
        let probe = Arc::new(Probe::default());
        let logins: Vec<_> = (0..20)
            .map(|_| {
                let (gate, probe) = (gate.clone(), probe.clone());
                tokio::spawn(async move { gate.run(move || probe.check()).await })
            })
            .collect();
        while probe.running.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        // Let the refused ones finish, then release the checks (before asserting, so a
        // failure cannot leave blocked threads behind and hang the test).
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let running = probe.running.load(Ordering::SeqCst);
        probe.open();
        assert_eq!(running, 2);
        let mut refused = 0;
        for login in logins {
            match login.await.unwrap() {
                Ok(()) => {}
                Err(UserAuthError::TooManyLogins) => refused += 1,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(refused, 15, "20 logins, 2 checking, 3 queued");
        assert_eq!(probe.most.load(Ordering::SeqCst), 2);
        // The slots are free again.
        assert_eq!(gate.run(|| 7).await, Ok(7));
    }
}
