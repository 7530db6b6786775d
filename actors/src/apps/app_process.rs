//! App processes a daemon starts (`--isolation subprocess`): a FAB's binary run as
//! `<binary> serverapp|clientapp --...appio-api-address ADDR --token T`.
//!
//! Each process is watched by a small task that owns its `Child`: the task records how the
//! process ended, and kills it when its `AppProcess` handle is dropped (a stopped run, a
//! host that ends) or when the daemon calls `AppProcesses::kill_all` (shutdown). The app's
//! stdout and stderr are the daemon's, so its log lines appear in the daemon's log.
//!
//! A daemon killed with SIGKILL cannot kill its children; they exit on their own once
//! their AppIo API stops answering (see `floret_app::host`).

use std::fmt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::Command;
use tokio::sync::{oneshot, watch};

/// How often a spawn is retried when the binary was written a moment ago and another
/// thread's fork still holds it open for writing (ETXTBSY).
const BUSY_RETRIES: u32 = 20;
const BUSY_WAIT: Duration = Duration::from_millis(50);

/// How an app process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub ExitStatus);

impl fmt::Display for Exit {
    /// "exited with status 101", "was killed by signal 6 (SIGABRT)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(code) = self.0.code() {
            return write!(f, "exited with status {code}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            if let Some(signal) = self.0.signal() {
                return match signal_name(signal) {
                    Some(name) => write!(f, "was killed by signal {signal} ({name})"),
                    None => write!(f, "was killed by signal {signal}"),
                };
            }
        }
        write!(f, "ended ({})", self.0)
    }
}

#[cfg(unix)]
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// The processes one daemon started, so that shutdown can end them all at once.
#[derive(Debug, Clone)]
pub struct AppProcesses {
    /// Set to `true` at shutdown; every watcher task kills its process then.
    kill_all: watch::Sender<bool>,
}

impl Default for AppProcesses {
    fn default() -> Self {
        AppProcesses {
            kill_all: watch::Sender::new(false),
        }
    }
}

impl AppProcesses {
    /// Starts `program args...` with the daemon's stdout and stderr, no stdin, and the
    /// daemon's environment plus `envs`.
    pub async fn spawn(
        &self,
        program: &Path,
        args: &[&str],
        envs: &[(&str, String)],
    ) -> std::io::Result<AppProcess> {
        let mut retries = 0;
        let mut child = loop {
            let spawned = Command::new(program)
                .args(args)
                .envs(envs.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .spawn();
            match spawned {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    retries += 1;
                    if retries > BUSY_RETRIES {
                        return Err(e);
                    }
                    tokio::time::sleep(BUSY_WAIT).await;
                }
                other => break other?,
            }
        };
        let pid = child.id().unwrap_or(0);
        let (exit_tx, exit_rx) = watch::channel(None);
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        let mut kill_all = self.kill_all.subscribe();
        let running = metrics::gauge!(crate::meter::APP_PROCESSES);
        running.increment(1.0);
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                // The handle was dropped (the sender with it), or shutdown.
                _ = kill_rx => kill(&mut child).await,
                () = async { let _ = kill_all.wait_for(|k| *k).await; } => kill(&mut child).await,
            };
            running.decrement(1.0);
            match status {
                Ok(status) => {
                    let _ = exit_tx.send(Some(Exit(status)));
                }
                Err(e) => tracing::warn!(pid, "could not wait for an app process: {e}"),
            }
        });
        Ok(AppProcess {
            pid,
            exit: exit_rx,
            _kill: kill_tx,
        })
    }

    /// Kills every process started through `self` (daemon shutdown).
    pub fn kill_all(&self) {
        self.kill_all.send_replace(true);
    }
}

async fn kill(child: &mut tokio::process::Child) -> std::io::Result<ExitStatus> {
    let _ = child.start_kill();
    child.wait().await
}

/// A running app process; killed when dropped.
#[derive(Debug)]
pub struct AppProcess {
    pid: u32,
    /// `Some` once the process has ended.
    exit: watch::Receiver<Option<Exit>>,
    /// Dropping it tells the watcher task to kill the process.
    _kill: oneshot::Sender<()>,
}

impl AppProcess {
    /// The OS process id, for logs; it may already be reused once the process has ended.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// How the process ended, if it has.
    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// Waits until the process has ended. If its watcher is gone without a word (it could
    /// not wait on the child), waits forever rather than invent a status.
    pub async fn exited(&self) -> Exit {
        let mut rx = self.exit.clone();
        let exit = rx.wait_for(Option::is_some).await.ok().and_then(|e| *e);
        match exit {
            Some(exit) => exit,
            None => std::future::pending().await,
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_exit_is_reported_with_its_status() {
        let processes = AppProcesses::default();
        let p = processes
            .spawn(Path::new("/bin/sh"), &["-c", "exit 101"], &[])
            .await
            .unwrap();
        assert_eq!(p.exited().await.to_string(), "exited with status 101");
        assert!(p.exit().is_some());
    }

    #[tokio::test]
    async fn dropping_the_handle_or_kill_all_ends_the_process() {
        let processes = AppProcesses::default();
        let long = processes
            .spawn(Path::new("/bin/sh"), &["-c", "sleep 600"], &[])
            .await
            .unwrap();
        let pid = long.pid();
        drop(long);
        wait_gone(pid).await;

        let other = processes
            .spawn(Path::new("/bin/sh"), &["-c", "sleep 600"], &[])
            .await
            .unwrap();
        processes.kill_all();
        assert_eq!(
            other.exited().await.to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    async fn wait_gone(pid: u32) {
        let proc_dir = format!("/proc/{pid}");
        for _ in 0..500 {
            // Reaped by the watcher task: the pid is gone.
            if !Path::new(&proc_dir).exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("process {pid} still there");
    }
}
