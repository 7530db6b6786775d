//! What `flwr` prints for its reader (tables, run ids, reports, log lines) goes through
//! [`outln!`](crate::outln) and [`out!`](crate::out), never `println!`. Rust ignores SIGPIPE,
//! so when the reader has gone (`flwr ls | head` once `head` has its lines) a write fails
//! with `BrokenPipe`, and `println!` turns that into a panic and exit 101. Here it ends the
//! process quietly with [`exit_code::PIPE_CLOSED`], as other Unix tools end.

use crate::exit_code;
use std::fmt;
use std::io::{self, Write as _};

/// What to do when writing to stdout failed: the exit code, and the line for stderr (none
/// when the reader merely stopped reading).
pub fn on_write_error(e: &io::Error) -> (i32, Option<String>) {
    if e.kind() == io::ErrorKind::BrokenPipe {
        (exit_code::PIPE_CLOSED, None)
    } else {
        (
            exit_code::RUN_FAILED,
            Some(format!("error: cannot write to stdout: {e}")),
        )
    }
}

/// Writes `args` to stdout and flushes, so a closed pipe is met here rather than unseen at
/// exit; on failure ends the process as [`on_write_error`] says.
pub fn write(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        let (code, line) = on_write_error(&e);
        if let Some(line) = line {
            eprintln!("{line}");
        }
        std::process::exit(code);
    }
}

/// `print!` for `flwr`'s output; see the [module documentation](crate::stdout).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*))
    };
}

/// `println!` for `flwr`'s output; see the [module documentation](crate::stdout).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_exits_quietly_and_other_failures_say_why() {
        let closed = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(on_write_error(&closed), (141, None));
        let full = io::Error::from(io::ErrorKind::StorageFull);
        let (code, line) = on_write_error(&full);
        assert_eq!(code, exit_code::RUN_FAILED);
        assert!(line.is_some_and(|l| l.starts_with("error: cannot write to stdout")));
    }
}
