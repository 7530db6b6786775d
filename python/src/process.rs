//! Starting the user's Python with the bridge, and its first word: ready, or why not.

use crate::frames::read_frame;
use crate::{BridgeError, PythonSettings};
use std::io::{BufReader, BufWriter};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// One bridge process: the user's ServerApp or a ClientApp worker.
pub(crate) struct Process {
    pub(crate) child: ChildGuard,
    pub(crate) stdin: BufWriter<ChildStdin>,
    pub(crate) stdout: BufReader<ChildStdout>,
}

/// Kills and reaps its process when dropped: no Python outlives the run.
pub(crate) struct ChildGuard(pub(crate) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Which component a process loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `serverapp`: the run's ServerApp.
    Server,
    /// `clientapp`: one worker of the ClientApp pool.
    Client,
}

impl Kind {
    fn word(self) -> &'static str {
        match self {
            Kind::Server => "serverapp",
            Kind::Client => "clientapp",
        }
    }
}

/// Starts `python -m floret_bridge KIND APP_DIR COMPONENT`; the caller reads its first
/// frame with [`ready`].
pub(crate) fn spawn(settings: &PythonSettings, kind: Kind) -> Result<Process, BridgeError> {
    let component = match kind {
        Kind::Server => &settings.serverapp,
        Kind::Client => &settings.clientapp,
    };
    let mut path = std::ffi::OsString::from(&settings.bridge_dir);
    if let Some(existing) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
        path.push(":");
        path.push(existing);
    }
    let mut command = Command::new(&settings.python);
    command
        .arg("-m")
        .arg("floret_bridge")
        .arg(kind.word())
        .arg(&settings.app_dir)
        .arg(component)
        .env("PYTHONPATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = command.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            BridgeError::User(format!(
                "no Python at {}: install Python 3 with Flower (`python3 -m pip install flwr==1.42.0`) and pass --python PATH (or set FLORET_PYTHON) if it is not `python3` on PATH",
                settings.python.display()
            ))
        } else {
            BridgeError::Io(format!("cannot start {}: {e}", settings.python.display()))
        }
    })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        return Err(BridgeError::Io("the Python process has no pipes".into()));
    };
    Ok(Process {
        child: ChildGuard(child),
        stdin: BufWriter::with_capacity(1 << 16, stdin),
        stdout: BufReader::with_capacity(1 << 16, stdout),
    })
}

/// Waits for the process's first frame: 'R' (the component loaded) or 'F' with the one
/// line that says what is wrong and how to fix it.
pub(crate) fn ready(process: &mut Process, settings: &PythonSettings) -> Result<(), BridgeError> {
    let first = read_frame(&mut process.stdout)
        .map_err(|e| BridgeError::Io(format!("reading from the Python process: {e}")))?;
    match first {
        Some((b'R', _)) => Ok(()),
        Some((b'F', line)) => Err(BridgeError::User(
            String::from_utf8_lossy(&line).into_owned(),
        )),
        Some((tag, _)) => Err(BridgeError::Io(format!(
            "the Python process began with frame {:?}, not ready",
            char::from(tag)
        ))),
        None => {
            let status = process
                .child
                .0
                .wait()
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            Err(BridgeError::User(format!(
                "{} stopped before loading the app ({status}; its error is above): it needs Python 3.10+ with flwr (`{} -m pip install flwr==1.42.0`), or pass --python PATH",
                settings.python.display(),
                settings.python.display()
            )))
        }
    }
}
