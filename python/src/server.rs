//! The ServerApp side: the user's ServerApp runs in one Python process whose Grid calls
//! arrive here as frames and are answered from the `Grid` Floret's engine gives the run
//! (the request table is in `floret_bridge/server.py`). Round progress the bridge reports
//! ('V') becomes the run's events, so `flwr run` prints and records the rounds of a
//! Python strategy as it does a Rust one's.

use crate::client::Worker;
use crate::frames::{
    pack_parts, read_frame, read_frame_async, read_u32, unpack_parts, write_frame,
    write_frame_async, write_segmented_frame_async,
};
use crate::process::{Kind, Process, ready, spawn};
use crate::wire::Replies;
use crate::{BridgeError, PythonSettings};
use async_trait::async_trait;
use bytes::Bytes;
use floret_core::{AppError, Context, Grid, GridError, Message, Payload, RunEvent, ServerApp};
use std::collections::HashSet;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{BufReader, BufWriter};
use tokio::process::{ChildStdin, ChildStdout};

/// What `send_and_receive` waits at most when the app gives no timeout (Flower: forever);
/// the run's own end or a stop comes first in practice.
const NO_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Distinct error reasons one run's log tells: enough for every kind of failure, bounded
/// for an app whose errors all differ (each names its node or its data).
const MAX_ERRORS_TOLD: usize = 16;

/// The user's ServerApp in Python.
pub(crate) struct PythonServerApp {
    settings: PythonSettings,
    /// The ClientApp workers' reply bytes, handed on without re-encoding.
    replies: Arc<Replies>,
    /// Started and loaded before the run, so that an app that cannot load is refused when
    /// the user starts it; a second run starts a process of its own.
    started: Mutex<Option<Process>>,
}

impl PythonServerApp {
    /// Starts the ServerApp's process; [`Spawned::wait_ready`] waits for it to load.
    pub(crate) fn start_spawned(settings: &PythonSettings) -> Result<Spawned, BridgeError> {
        Ok(Spawned(spawn(settings, Kind::Server)?))
    }

    /// Asks the ServerApp's process, loaded and waiting for its run, to fork `count`
    /// ClientApp workers (`floret_bridge/server.py: fork_workers`): they start from its
    /// imports (Flower and numpy, half a second of CPU a process) instead of their own.
    /// Returns those that connected; the pool spawns the rest as before, so an error
    /// here costs only time.
    pub(crate) fn fork_workers(&self, settings: &PythonSettings, count: usize) -> Vec<Worker> {
        if count == 0 {
            return Vec::new();
        }
        match self.try_fork_workers(settings, count) {
            Ok(workers) => workers,
            Err(e) => {
                tracing::debug!("no ClientApp workers forked from the ServerApp: {e}");
                Vec::new()
            }
        }
    }

    fn try_fork_workers(
        &self,
        settings: &PythonSettings,
        count: usize,
    ) -> std::io::Result<Vec<Worker>> {
        let mut started = self.started.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(process) = started.as_mut() else {
            return Ok(Vec::new());
        };
        static SOCKETS: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "floret-bridge-{}-{}.sock",
            std::process::id(),
            SOCKETS.fetch_add(1, Ordering::Relaxed)
        ));
        // A file left by a process that had this pid before.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let _remove = RemoveOnDrop(path.clone());
        let request = pack_parts([
            path.as_os_str().as_encoded_bytes(),
            count.to_string().as_bytes(),
            settings.clientapp.as_bytes(),
        ]);
        write_frame(&mut process.stdin, b'K', &request)?;
        let answer = read_frame(&mut process.stdout)?;
        let forked = match &answer {
            Some((b'k', body)) => std::str::from_utf8(body)
                .ok()
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(0),
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the ServerApp's process did not answer the fork request",
                ));
            }
        };
        // The process answers once every worker it counts has connected: they wait in
        // the listener's backlog, and accepting them does not block.
        let mut workers = Vec::with_capacity(forked);
        for _ in 0..forked {
            let (stream, _) = listener.accept()?;
            workers.push(Worker::forked(stream)?);
        }
        Ok(workers)
    }

    fn process(&self) -> Result<Process, BridgeError> {
        let started = self
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match started {
            Some(p) => Ok(p),
            None => {
                let mut p = spawn(&self.settings, Kind::Server)?;
                ready(&mut p, &self.settings)?;
                Ok(p)
            }
        }
    }
}

/// Removes the socket file when the forking is over, whatever its outcome.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A ServerApp process that is still importing.
pub(crate) struct Spawned(Process);

impl Spawned {
    /// Waits until the process has loaded the component.
    pub(crate) fn wait_ready(
        mut self,
        settings: &PythonSettings,
        replies: Arc<Replies>,
    ) -> Result<PythonServerApp, BridgeError> {
        ready(&mut self.0, settings)?;
        Ok(PythonServerApp {
            settings: settings.clone(),
            replies,
            started: Mutex::new(Some(self.0)),
        })
    }
}

#[async_trait]
impl ServerApp for PythonServerApp {
    async fn main(&self, grid: &dyn Grid, context: Context) -> Result<(), AppError> {
        let Process {
            child,
            stdin,
            stdout,
        } = self.process().map_err(|e| AppError::other(e.to_string()))?;
        let io = |e: std::io::Error| AppError::other(format!("the Python ServerApp's pipe: {e}"));
        if !stdout.buffer().is_empty() {
            return Err(AppError::other(
                "the Python ServerApp wrote to the bridge before its run began",
            ));
        }
        // Nothing was written yet, so the writer's buffer is empty. The pipes move to
        // tokio: serving the app's Grid calls holds no thread.
        let stdin = ChildStdin::from_std(stdin.into_parts().0).map_err(io)?;
        let stdout = ChildStdout::from_std(stdout.into_inner()).map_err(io)?;
        let mut session = Session {
            grid,
            replies: &self.replies,
            stdin: BufWriter::with_capacity(1 << 16, stdin),
            stdout: BufReader::with_capacity(1 << 16, stdout),
            errors_told: HashSet::new(),
        };
        session
            .write(b'S', &floret_transport::encode_context(&context))
            .await
            .map_err(io)?;
        let outcome = session.serve().await;
        drop(session);
        drop(child);
        outcome
    }
}

/// One run's conversation with the ServerApp's process.
struct Session<'g> {
    grid: &'g dyn Grid,
    replies: &'g Replies,
    stdin: BufWriter<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    /// Error replies' reasons already in the run's log. Flower's strategies count a failed
    /// reply and go on without saying why; the run's log (`flwr log`) says it once per
    /// reason, so that, e.g., a SuperNode whose Python has no `flwr` is named with the fix.
    errors_told: HashSet<String>,
}

impl Session<'_> {
    async fn write(&mut self, tag: u8, body: &[u8]) -> std::io::Result<()> {
        write_frame_async(&mut self.stdin, tag, body).await
    }

    /// Logs `reply`'s error to the run, the first time its reason is seen.
    fn tell_error(&mut self, reply: &Message) {
        if let Payload::Error(error) = &reply.payload
            && self.errors_told.len() < MAX_ERRORS_TOLD
            && self.errors_told.insert(error.reason.clone())
        {
            self.grid.emit(RunEvent::Log(format!(
                "node {} replied with an error: {}",
                reply.metadata.src_node_id, error.reason
            )));
        }
    }

    /// Answers the app's requests until it says it is done ('D') or failed ('X').
    async fn serve(&mut self) -> Result<(), AppError> {
        let io = |e: std::io::Error| AppError::other(format!("the Python ServerApp's pipe: {e}"));
        loop {
            let Some((tag, body)) = read_frame_async(&mut self.stdout).await.map_err(io)? else {
                return Err(AppError::other(
                    "the Python ServerApp's process exited before the run ended (its error is in the log above)",
                ));
            };
            let answer = match tag {
                b'D' => return Ok(()),
                b'X' => return Err(AppError::other(String::from_utf8_lossy(&body))),
                b'V' => {
                    match serde_json::from_slice::<RunEvent>(&body) {
                        Ok(event) => self.grid.emit(event),
                        Err(e) => tracing::debug!("a round event the bridge sent is not one: {e}"),
                    }
                    continue;
                }
                b'N' => self.node_ids().await,
                b'P' => self.push(&body).await,
                b'L' => self.pull(&body).await,
                b'W' => self.send_and_receive(&body).await,
                other => Err(Refused::Bridge(format!(
                    "unknown request {:?}",
                    char::from(other)
                ))),
            };
            match answer {
                Ok(()) => {}
                Err(Refused::Grid(GridError::Stopped)) => {
                    return Err(AppError::Grid(GridError::Stopped));
                }
                Err(Refused::Io(e)) => return Err(io(e)),
                Err(e) => self
                    .write(b'E', e.to_string().as_bytes())
                    .await
                    .map_err(io)?,
            }
        }
    }

    async fn node_ids(&mut self) -> Result<(), Refused> {
        let ids = self.grid.node_ids().await?;
        let body: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
        Ok(self.write(b'N', &body).await?)
    }

    async fn push(&mut self, body: &Bytes) -> Result<(), Refused> {
        let messages = decode_batch(&unpack_parts(body)?)?;
        let ids = self.grid.send(messages).await?;
        Ok(self
            .write(b'I', &pack_parts(ids.iter().map(String::as_bytes)))
            .await?)
    }

    async fn pull(&mut self, body: &Bytes) -> Result<(), Refused> {
        let ids = unpack_parts(body)?
            .iter()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect::<Vec<_>>();
        let replies = self.grid.pull(&ids).await?;
        for reply in &replies {
            self.tell_error(reply);
        }
        let body = pack_parts(
            replies
                .iter()
                .map(|reply| self.replies.wire(reply).segments().concat()),
        );
        Ok(self.write(b'L', &body).await?)
    }

    /// Sends, then hands each reply to the app as it arrives ('l') and ends with 'L': the
    /// replies leave this process as they come instead of piling up here.
    async fn send_and_receive(&mut self, body: &Bytes) -> Result<(), Refused> {
        let parts = unpack_parts(body)?;
        let Some((timeout, rest)) = parts.split_first() else {
            return Err(Refused::Bridge("send_and_receive without a timeout".into()));
        };
        let timeout = parse_timeout(timeout)?;
        let ids = self.grid.send(decode_batch(rest)?).await?;
        let mut waiting: HashSet<String> = ids.into_iter().collect();
        let deadline = tokio::time::Instant::now() + timeout;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let replies = self.grid.receive(left).await?;
            // One frame per reply: each leaves this process's memory as soon as it is
            // written, and the app decodes one while the next is on its way.
            for reply in replies {
                if waiting.remove(&reply.metadata.reply_to_message_id) {
                    self.tell_error(&reply);
                    let wire = self.replies.wire(&reply);
                    drop(reply);
                    write_segmented_frame_async(&mut self.stdin, b'l', &[&wire.segments()]).await?;
                }
            }
        }
        self.replies.forget(&waiting);
        Ok(self.write(b'L', &[]).await?)
    }
}

/// Why a request got no answer: told to the app ('E') unless the run is over or the pipe
/// is gone.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Grid(#[from] GridError),
    #[error("{0}")]
    Bridge(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Seconds as text, "" for none (Flower's `timeout=None`: wait for every reply).
fn parse_timeout(text: &[u8]) -> Result<Duration, Refused> {
    if text.is_empty() {
        return Ok(NO_TIMEOUT);
    }
    let secs: f64 = std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Refused::Bridge("the timeout is not a number".into()))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(Refused::Bridge(format!(
            "timeout {secs} is not a number of seconds >= 0"
        )));
    }
    Ok(Duration::from_secs_f64(secs.min(NO_TIMEOUT.as_secs_f64())))
}

/// Messages as the bridge packs them: the count of distinct contents, the contents, then
/// per message its metadata and the index of its content (shared, not copied).
fn decode_batch(parts: &[Bytes]) -> Result<Vec<Message>, Refused> {
    let bad = |what: String| Refused::Bridge(format!("a batch of messages: {what}"));
    let (count, rest) = parts
        .split_first()
        .ok_or_else(|| bad("no content count".into()))?;
    let count = read_u32(count, 0)? as usize;
    if rest.len() < count || !(rest.len() - count).is_multiple_of(2) {
        return Err(bad(format!("{} parts for {count} contents", rest.len())));
    }
    let (contents, messages) = rest.split_at(count);
    let contents = contents
        .iter()
        .map(|c| floret_transport::decode_record_dict_bytes(c.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    messages
        .chunks_exact(2)
        .map(|pair| {
            let metadata =
                floret_transport::decode_metadata(&pair[0]).map_err(|e| bad(e.to_string()))?;
            let index = read_u32(&pair[1], 0)? as usize;
            let content = contents
                .get(index)
                .ok_or_else(|| bad(format!("content {index} of {count}")))?;
            Ok(Message {
                metadata,
                payload: Payload::Content(content.clone()),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_seconds_or_none() {
        assert_eq!(parse_timeout(b"").unwrap(), NO_TIMEOUT);
        assert_eq!(parse_timeout(b"2.5").unwrap(), Duration::from_millis(2500));
        assert!(parse_timeout(b"-1").is_err());
        assert!(parse_timeout(b"soon").is_err());
    }
}
