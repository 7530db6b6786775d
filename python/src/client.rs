//! The ClientApp side: a pool of long-lived Python workers, each holding the user's
//! ClientApp, and a Floret `ClientApp` whose one (fallback) handler hands a message and
//! the node's context to an idle worker and takes back the reply's content and the
//! context the app left.
//!
//! The workers are forked from the ServerApp's process once it has loaded (they start
//! with Flower imported; `server::PythonServerApp::fork_workers`) and reached over a
//! Unix socket; any that could not be forked, and every replacement, are spawned and
//! reached over their pipes. Both speak the same frames.
//!
//! The engine calls handlers on blocking threads, at most as many at once as it has
//! workers, and the pool has that many processes, so a call never waits for a worker in
//! practice. A worker that dies mid-call is replaced and the call is answered with an
//! error that says so; an app's exception is an error reply from a worker that goes on.

use crate::frames::{read_frame, unpack_parts, write_segmented_frame};
use crate::process::{Kind, Process, ready, spawn};
use crate::wire::{Replies, Sent, WireMessage};
use crate::{BridgeError, PythonSettings};
use bytes::Bytes;
use floret_core::{AppError, ClientApp, Context, Message, RecordDict};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// The worker processes and the settings to start replacements with.
pub(crate) struct Pool {
    settings: PythonSettings,
    idle: Mutex<Idle>,
    returned: Condvar,
    /// A round sends one model to every node: encoding it once instead of per call (a
    /// copy of every array) was a sixth of this process's CPU time at 1,000 nodes.
    sent: Sent,
    /// Where replies' bytes wait for the ServerApp, which gets them as they came; `None`
    /// on a SuperNode, whose ServerApp is elsewhere (nothing would ever take them).
    replies: Option<Arc<Replies>>,
}

/// One worker: a process `flwr` spawned (its pipes), or one the ServerApp's process
/// forked (a Unix socket; it ends when the socket closes or `flwr` exits).
pub(crate) enum Worker {
    Spawned(Process),
    Forked {
        stdin: BufWriter<UnixStream>,
        stdout: BufReader<UnixStream>,
    },
}

impl Worker {
    /// A forked worker on its end of `stream`.
    pub(crate) fn forked(stream: UnixStream) -> std::io::Result<Worker> {
        let reader = stream.try_clone()?;
        Ok(Worker::Forked {
            stdin: BufWriter::with_capacity(1 << 16, stream),
            stdout: BufReader::with_capacity(1 << 16, reader),
        })
    }

    fn io(&mut self) -> (&mut dyn Write, &mut dyn Read) {
        match self {
            Worker::Spawned(p) => (&mut p.stdin, &mut p.stdout),
            Worker::Forked { stdin, stdout } => (stdin, stdout),
        }
    }

    /// Waits for the worker's first frame: 'R' (it loaded the ClientApp) or 'F' with
    /// the line that says why not.
    fn ready(&mut self, settings: &PythonSettings) -> Result<(), BridgeError> {
        let stdout = match self {
            Worker::Spawned(p) => return ready(p, settings),
            Worker::Forked { stdout, .. } => stdout,
        };
        match read_frame(stdout) {
            Ok(Some((b'R', _))) => Ok(()),
            Ok(Some((b'F', line))) => Err(BridgeError::User(
                String::from_utf8_lossy(&line).into_owned(),
            )),
            Ok(Some((tag, _))) => Err(BridgeError::Io(format!(
                "a forked ClientApp worker began with frame {:?}, not ready",
                char::from(tag)
            ))),
            Ok(None) => Err(BridgeError::User(
                "a ClientApp worker stopped before loading the app (its error is above)".into(),
            )),
            Err(e) => Err(BridgeError::Io(format!(
                "reading from a ClientApp worker: {e}"
            ))),
        }
    }

    /// How the worker's process ended, as far as this process can tell.
    fn status(&mut self) -> String {
        match self {
            Worker::Spawned(p) => match p.child.0.try_wait() {
                Ok(Some(status)) => status.to_string(),
                _ => "still running".into(),
            },
            Worker::Forked { .. } => "forked from the ServerApp's process".into(),
        }
    }
}

struct Idle {
    workers: Vec<Worker>,
    /// Workers alive, idle or busy: a pool whose last worker could not be replaced
    /// answers at once instead of waiting for one.
    alive: usize,
}

impl Pool {
    /// Makes a pool of `size` workers: those `forked` already, and as many spawned as
    /// they fall short; waits until each has loaded the ClientApp.
    pub(crate) fn start(
        settings: &PythonSettings,
        size: usize,
        replies: Option<Arc<Replies>>,
        forked: Vec<Worker>,
    ) -> Result<Pool, BridgeError> {
        let mut workers = forked;
        // Started together, then awaited: the imports run in parallel.
        while workers.len() < size.max(1) {
            workers.push(Worker::Spawned(spawn(settings, Kind::Client)?));
        }
        for worker in &mut workers {
            worker.ready(settings)?;
        }
        Ok(Pool {
            settings: settings.clone(),
            idle: Mutex::new(Idle {
                alive: workers.len(),
                workers,
            }),
            returned: Condvar::new(),
            sent: Sent::default(),
            replies,
        })
    }

    /// The Floret ClientApp answering every message type through this pool.
    pub(crate) fn into_client_app(self) -> ClientApp {
        let pool = Arc::new(self);
        ClientApp::new().fallback(move |message, context| pool.call(message, context))
    }

    fn call(&self, message: &Message, context: &mut Context) -> Result<RecordDict, AppError> {
        let wire = self.sent.wire(message);
        let mut worker = self.take()?;
        match exchange(&mut worker, &wire, context) {
            Ok(outcome) => {
                self.give_back(worker);
                outcome.map(|(content, bytes)| {
                    if let Some(replies) = &self.replies {
                        replies.keep(&message.metadata.message_id, &content, bytes);
                    }
                    content
                })
            }
            Err(e) => {
                let status = worker.status();
                drop(worker);
                self.replace();
                Err(AppError::other(format!(
                    "the Python ClientApp worker stopped while handling this message ({e}; {status}); a new worker took its place"
                )))
            }
        }
    }

    fn take(&self) -> Result<Worker, AppError> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(worker) = idle.workers.pop() {
                return Ok(worker);
            }
            if idle.alive == 0 {
                return Err(AppError::other(
                    "no Python ClientApp worker is left: one died and its replacement could not start (see the log)",
                ));
            }
            idle = self
                .returned
                .wait(idle)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn give_back(&self, worker: Worker) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.workers.push(worker);
        self.returned.notify_one();
    }

    /// Starts a worker in place of one that died; the pool shrinks if it cannot.
    fn replace(&self) {
        let fresh = spawn(&self.settings, Kind::Client).and_then(|mut w| {
            ready(&mut w, &self.settings)?;
            Ok(Worker::Spawned(w))
        });
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        match fresh {
            Ok(worker) => idle.workers.push(worker),
            Err(e) => {
                idle.alive = idle.alive.saturating_sub(1);
                tracing::warn!("could not replace a Python ClientApp worker: {e}");
            }
        }
        self.returned.notify_all();
    }
}

/// One call on one worker. The outer error is the worker's (it is gone); the inner one is
/// the app's (an error reply). A reply's content comes with the bytes it was decoded
/// from (it shares them).
fn exchange(
    worker: &mut Worker,
    message: &WireMessage,
    context: &mut Context,
) -> std::io::Result<Result<(RecordDict, Bytes), AppError>> {
    let context_bytes = floret_transport::encode_context(context);
    let (mut stdin, mut stdout) = worker.io();
    write_segmented_frame(&mut stdin, b'C', &[&message.segments(), &[&context_bytes]])?;
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let (tag, body) = read_frame(&mut stdout)?
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
    if tag != b'C' {
        return Err(invalid(format!("unexpected frame {:?}", char::from(tag))));
    }
    let parts = unpack_parts(&body)?;
    let [kind, payload, new_context] = parts.as_slice() else {
        return Err(invalid(format!("{} parts in a reply, not 3", parts.len())));
    };
    Ok(match kind.as_ref() {
        b"c" => {
            let content = floret_transport::decode_record_dict_bytes(payload.clone())
                .map_err(|e| invalid(format!("the reply's content: {e}")))?;
            let updated = floret_transport::decode_context_bytes(new_context.clone())
                .map_err(|e| invalid(format!("the context: {e}")))?;
            context.state = updated.state;
            Ok((content, payload.clone()))
        }
        b"e" => Err(AppError::other(String::from_utf8_lossy(payload))),
        other => {
            return Err(invalid(format!(
                "reply kind {:?}",
                String::from_utf8_lossy(other)
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    /// A worker whose app left the node's state empty answers with an empty context
    /// part (`floret_bridge/worker.py`): it must decode as a context with no state.
    #[test]
    fn an_empty_context_part_is_an_empty_state() {
        let context = floret_transport::decode_context_bytes(bytes::Bytes::new()).unwrap();
        assert!(context.state.is_empty());
    }
}
