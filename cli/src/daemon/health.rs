//! `flower-superlink healthcheck` and `flower-supernode healthcheck`: the command a
//! container's `HEALTHCHECK` runs. The images are `FROM scratch` plus the binary (no shell,
//! no curl), so the check is part of the binary itself.
//!
//! Healthy means the daemon's own runtime answers: an HTTP `GET /metrics` on its
//! `--metrics-address` returns 200 within the timeout. A port that merely accepts would not
//! do — the kernel accepts connections into the backlog of a process whose runtime is
//! stuck — whereas the metrics page is served by a task on the daemon's tokio runtime. The
//! images set `FLWR_METRICS_ADDRESS`, which the daemon reads as `--metrics-address` and the
//! check reads as the address to ask.

use crate::UserError;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// The word that turns a daemon binary into its own health check.
pub const SUBCOMMAND: &str = "healthcheck";

/// How long the whole check may take per step (connect, write, read): Docker's own
/// `HEALTHCHECK --timeout` is the outer bound; this keeps a stuck daemon from holding the
/// check open until then.
const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// The address to ask: the argument after `healthcheck`, else `FLWR_METRICS_ADDRESS`.
/// A wildcard listen address (`0.0.0.0`, `[::]`) is asked on loopback.
///
/// # Errors
/// A [`UserError`] when neither is given or the address has no port.
pub fn health_address(arg: Option<&str>, env: Option<&str>) -> Result<String, UserError> {
    let given = arg
        .or(env)
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| {
            UserError::new(
                "healthcheck: no address to ask: give HOST:PORT (the daemon's --metrics-address) or set FLWR_METRICS_ADDRESS",
            )
        })?;
    let Some((host, port)) = given.rsplit_once(':') else {
        return Err(UserError::new(format!(
            "healthcheck {given}: give HOST:PORT, e.g. 127.0.0.1:9464"
        )));
    };
    let host = match host {
        "0.0.0.0" | "" => "127.0.0.1",
        "[::]" => "[::1]",
        other => other,
    };
    Ok(format!("{host}:{port}"))
}

/// Whether the first bytes of an HTTP response say 200.
pub fn is_ok_response(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|b| *b == b' ');
    matches!(words.next(), Some(v) if v.starts_with(b"HTTP/1."))
        && words.next() == Some(b"200".as_slice())
}

/// Asks `address` for `/metrics`; `Ok` when it answered 200.
fn probe(address: &str) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .collect();
    let mut last = format!("{address} resolves to no address");
    for addr in addrs {
        match ask(addr) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn ask(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect_timeout(&addr, STEP_TIMEOUT)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(STEP_TIMEOUT)))
        .map_err(|e| format!("{addr}: {e}"))?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{addr}: cannot send the request: {e}"))?;
    // The status line is all that is needed; it fits in the first read or two.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() && !head[..len].contains(&b'\n') {
        match stream.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(format!("{addr}: no answer: {e}")),
        }
    }
    if is_ok_response(&head[..len]) {
        Ok(())
    } else {
        Err(format!(
            "{addr} answered {:?}, not 200",
            String::from_utf8_lossy(&head[..len])
                .lines()
                .next()
                .unwrap_or_default()
        ))
    }
}

/// The `healthcheck` subcommand of `service`: exit 0 when healthy, 1 with one line on
/// stderr when not, 2 when the address is missing.
pub fn run(service: &str, args: &[String]) -> ExitCode {
    if args.len() > 1 {
        eprintln!("error: {service} healthcheck takes one argument, HOST:PORT");
        return ExitCode::from(crate::exit_code::USAGE as u8);
    }
    let env = std::env::var("FLWR_METRICS_ADDRESS").ok();
    let address = match health_address(args.first().map(String::as_str), env.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(crate::exit_code::USAGE as u8);
        }
    };
    match probe(&address) {
        Ok(()) => {
            println!("{service} healthy: {address}/metrics answered 200");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{service} unhealthy: {e}");
            ExitCode::from(crate::exit_code::RUN_FAILED as u8)
        }
    }
}

/// For a daemon's `main`: the arguments after `healthcheck` when that is the first one.
pub fn requested(args: &[String]) -> Option<&[String]> {
    match args {
        [_, first, rest @ ..] if first == SUBCOMMAND => Some(rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_wins_over_the_environment_and_wildcards_become_loopback() {
        assert_eq!(
            health_address(Some("10.0.0.2:1"), Some("127.0.0.1:9464")).unwrap(),
            "10.0.0.2:1"
        );
        assert_eq!(
            health_address(None, Some("0.0.0.0:9464")).unwrap(),
            "127.0.0.1:9464"
        );
        assert_eq!(health_address(None, Some("[::]:9")).unwrap(), "[::1]:9");
        assert_eq!(
            health_address(Some("localhost:9465"), None).unwrap(),
            "localhost:9465"
        );
    }

    #[test]
    fn no_address_or_no_port_is_an_error_naming_the_fix() {
        let e = health_address(None, Some(" ")).unwrap_err().to_string();
        assert!(e.contains("FLWR_METRICS_ADDRESS"), "{e}");
        let e = health_address(Some("localhost"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
    }

    #[test]
    fn only_a_200_status_line_is_healthy() {
        assert!(is_ok_response(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain"
        ));
        assert!(is_ok_response(b"HTTP/1.0 200 OK\r\n"));
        assert!(!is_ok_response(b"HTTP/1.1 404 Not Found\r\n"));
        assert!(!is_ok_response(b"HTTP/1.1 2000 OK\r\n"));
        assert!(!is_ok_response(b"SSH-2.0-OpenSSH\r\n"));
        assert!(!is_ok_response(b""));
    }

    #[test]
    fn only_a_leading_healthcheck_word_selects_the_check() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let args = v(&["flower-superlink", "healthcheck", "127.0.0.1:9464"]);
        assert_eq!(requested(&args), Some(&args[2..]));
        assert_eq!(requested(&v(&["x", "healthcheck"])), Some(&[][..]));
        assert_eq!(requested(&v(&["x", "--insecure", "healthcheck"])), None);
        assert_eq!(requested(&v(&["x"])), None);
    }

    #[test]
    fn a_served_metrics_page_is_healthy_and_a_closed_port_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap();
            assert!(buf[..n].starts_with(b"GET /metrics HTTP/1.1\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .unwrap();
        });
        assert_eq!(probe(&addr.to_string()), Ok(()));
        server.join().unwrap();
        // Nothing listens there any more.
        let e = probe(&addr.to_string()).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
    }
}
