//! The long-running processes: `flower-superlink` and `flower-supernode`.
//!
//! Each daemon reads its settings in layers (`settings`), validates them into a config
//! type (`SuperLinkConfig`, `SuperNodeConfig`) and only then starts anything, so a bad
//! setting is one line and exit 2 before a port is bound. Both stop on SIGINT or SIGTERM.

pub mod flags;
pub mod health;
pub mod metrics;
pub mod settings;
pub mod superlink;
pub mod supernode;

use crate::UserError;
use floret_actors::Isolation;
use floret_transport::auth::{NodeKeyPair, NodePublicKey};
use floret_transport::tls::{ClientTls, ServerTls};
use floret_transport::{ClientSecurity, ServerSecurity};
use std::future::Future;

pub use floret_app::process::{Observed, app_main_with_args, main_with_args};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The body of a daemon binary named `service`: parses `A` from the command line (usage
/// errors exit 2, `--help` exits 0), sets up logging (at `info` unless `--log-level` or
/// `RUST_LOG` says otherwise) and tracing, runs `body` on a small runtime and maps its
/// outcome to the exit-code contract.
pub fn main<A, F>(service: &str, worker_threads: usize, body: impl FnOnce(A) -> F) -> ExitCode
where
    A: clap::Parser + Observed,
    F: Future<Output = anyhow::Result<i32>>,
{
    floret_app::process::main_with_args(service, std::env::args_os(), worker_threads, body)
}

/// Resolves when the process receives SIGINT (Ctrl-C) or SIGTERM; returns its name.
///
/// The handlers are installed when this is called, not when the future is first polled:
/// a daemon calls it before it binds anything, so a SIGTERM that comes while it is still
/// starting (`docker stop` right after `docker run`, a test that stops a daemon as soon
/// as it listens) stops it cleanly instead of killing it by the signal's default action.
pub fn shutdown_signal() -> impl Future<Output = &'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let term = received(signal(SignalKind::terminate()).ok());
        let int = received(signal(SignalKind::interrupt()).ok());
        async move {
            tokio::select! {
                () = int => "SIGINT",
                () = term => "SIGTERM",
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// A daemon's own key pair from `--auth-<who>-private-key` and, optionally,
/// `--auth-<who>-public-key` (which must match; it is derived from the private key anyway).
/// Both empty: `None`. `example` names the file `flwr keygen` writes for it.
pub fn auth_key_pair(
    who: &str,
    private: &str,
    public: &str,
    example: &str,
) -> Result<Option<NodeKeyPair>, UserError> {
    if private.is_empty() {
        if !public.is_empty() {
            return Err(UserError::new(format!(
                "--auth-{who}-public-key without --auth-{who}-private-key: pass the private key (e.g. {example}); the public key is derived from it"
            )));
        }
        return Ok(None);
    }
    let pair = NodeKeyPair::load(Path::new(private)).map_err(|e| {
        UserError::new(format!(
            "--auth-{who}-private-key {e}: pass an unencrypted P-384 private key, e.g. {example} from `flwr keygen`"
        ))
    })?;
    if !public.is_empty() {
        let given = NodePublicKey::load(Path::new(public)).map_err(|e| {
            UserError::new(format!(
                "--auth-{who}-public-key {e}: pass the matching public key ({example}.pub), or leave it out"
            ))
        })?;
        if &given != pair.public_key() {
            return Err(UserError::new(format!(
                "--auth-{who}-public-key {public} does not match --auth-{who}-private-key {private}: pass the .pub file made with that private key, or leave it out"
            )));
        }
    }
    Ok(Some(pair))
}

/// The SuperLink's TLS from its flags: `--ssl-certfile` and `--ssl-keyfile` (with
/// `--ssl-ca-certfile` to check them against their CA), or `--insecure`. Neither, or both,
/// is an error that explains the two choices: there is no silent plaintext.
pub fn server_security(
    insecure: bool,
    ca: Option<&str>,
    cert: Option<&str>,
    key: Option<&str>,
) -> Result<ServerSecurity, UserError> {
    fn given(v: Option<&str>) -> Option<&str> {
        v.filter(|v| !v.is_empty())
    }
    let (ca, cert, key) = (given(ca), given(cert), given(key));
    match (insecure, cert, key) {
        (true, None, None) if ca.is_none() => Ok(ServerSecurity::Insecure),
        (true, ..) => Err(UserError::new(
            "--insecure and TLS certificates were both given: drop --insecure to serve TLS, or drop the --ssl-* flags to serve plaintext",
        )),
        (false, Some(cert), Some(key)) => {
            let tls = ServerTls::from_files(cert.as_ref(), key.as_ref(), ca.map(AsRef::as_ref))
                .map_err(|e| UserError::new(e.to_string()))?;
            Ok(ServerSecurity::Tls(tls))
        }
        (false, Some(_), None) => Err(UserError::new(
            "--ssl-certfile was given without --ssl-keyfile: pass the certificate's private key too",
        )),
        (false, None, Some(_)) => Err(UserError::new(
            "--ssl-keyfile was given without --ssl-certfile: pass the certificate too",
        )),
        (false, None, None) => Err(UserError::new(
            "no TLS certificates: pass --ssl-ca-certfile, --ssl-certfile and --ssl-keyfile to serve TLS (`flwr keygen` makes them), or --insecure to serve plaintext for testing",
        )),
    }
}

/// The SuperLink's flags that turn TLS on, as an authentication error names them.
pub const SERVER_TLS_FLAGS: &str = "--ssl-ca-certfile, --ssl-certfile and --ssl-keyfile";

/// The SuperNode's flag that turns TLS on, as an authentication error names it.
pub const CLIENT_TLS_FLAGS: &str = "--root-certificates";

/// The one rule for every authentication flag of both daemons: given with `--insecure`, it
/// is refused at start. Over plaintext what it relies on (passwords and tokens, signed
/// requests whose bodies the signature does not cover) crosses the network unprotected,
/// and the operator would believe a door closed that is open. `flag` is the authentication
/// flag, `exposed` what plaintext gives away, `tls` the flags that turn TLS on.
pub fn auth_needs_tls(
    insecure: bool,
    flag: &str,
    exposed: &str,
    tls: &str,
) -> Result<(), UserError> {
    if insecure {
        Err(UserError::new(format!(
            "{flag} needs TLS, but --insecure was given: {exposed}; pass {tls} instead of --insecure"
        )))
    } else {
        Ok(())
    }
}

/// A client's TLS from its flags: `--root-certificates` (the CA that signed the SuperLink's
/// certificate), `--insecure`, or neither: TLS trusting the platform's CA certificates (and
/// `SSL_CERT_FILE`), as Flower's SuperNode does. Both is an error.
pub fn client_security(
    insecure: bool,
    root_certificates: Option<&str>,
    client_cert: Option<(&str, &str)>,
) -> Result<ClientSecurity, UserError> {
    let mut tls = match (insecure, root_certificates.filter(|r| !r.is_empty())) {
        (true, None) => return Ok(ClientSecurity::Insecure),
        (true, Some(_)) => {
            return Err(UserError::new(
                "--insecure and --root-certificates were both given: drop --insecure to connect with TLS, or --root-certificates to connect in plaintext",
            ));
        }
        (false, Some(roots)) => ClientTls::from_root_certificates(roots.as_ref())
            .map_err(|e| UserError::new(format!("--root-certificates: {e}")))?,
        (false, None) => ClientTls::from_platform().map_err(|e| {
            UserError::new(format!(
                "without --root-certificates the SuperLink's certificate is checked against the platform's, but there are {e}; or pass --insecure to connect in plaintext for testing"
            ))
        })?,
    };
    if let Some((cert, key)) = client_cert {
        tls = tls
            .with_client_certificate(cert.as_ref(), key.as_ref())
            .map_err(|e| UserError::new(format!("--ssl-client-certfile: {e}")))?;
    }
    Ok(ClientSecurity::Tls(tls))
}

/// `--isolation`: how the apps that come as FABs run; built-in apps always run inside the
/// daemon.
pub fn parse_isolation(value: &str) -> Result<Isolation, UserError> {
    value
        .parse()
        .map_err(|e| UserError::new(format!("--isolation {e}")))
}

/// Where an AppIo API listens: `value` when given, else Flower's fixed port with
/// `--isolation process` (app processes started elsewhere must know where to connect),
/// and any free port on 127.0.0.1 with `subprocess`, where only the daemon's own children
/// connect (so that several SuperNodes can run on one machine without flags).
pub fn appio_listen_address(
    setting: &str,
    value: &str,
    isolation: Isolation,
    process_default: &str,
) -> Result<SocketAddr, UserError> {
    match (value, isolation) {
        ("", Isolation::Process) => listen_address(setting, process_default),
        ("", Isolation::Subprocess) => Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        (value, _) => listen_address(setting, value),
    }
}

/// The address an app process on this machine connects to, for an API bound to `bound`:
/// loopback when it listens on every interface.
pub fn connect_address(bound: SocketAddr) -> String {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port()).to_string()
}

/// `--fab-cache-dir`: `value` when given, else `$XDG_CACHE_HOME/floret/fabs`,
/// `$HOME/.cache/floret/fabs`, or `floret-fabs` in the system's temporary directory.
pub fn fab_cache_dir(value: &str, env: &[(String, String)]) -> PathBuf {
    if !value.is_empty() {
        return PathBuf::from(value);
    }
    let var = |name: &str| {
        env.iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v))
    };
    if let Some(cache) = var("XDG_CACHE_HOME") {
        cache.join("floret").join("fabs")
    } else if let Some(home) = var("HOME") {
        home.join(".cache").join("floret").join("fabs")
    } else {
        std::env::temp_dir().join("floret-fabs")
    }
}

/// `--python`: `value` when given (flag, `--config`'s `python`, `FLWR_PYTHON`), else
/// `FLORET_PYTHON` (what `flwr run --python` reads too), else `python3` on PATH.
pub fn python_path(value: &str, env: &[(String, String)]) -> PathBuf {
    if !value.is_empty() {
        return PathBuf::from(value);
    }
    env.iter()
        .find(|(k, v)| k == "FLORET_PYTHON" && !v.is_empty())
        .map_or_else(|| PathBuf::from("python3"), |(_, v)| PathBuf::from(v))
}

/// How the daemon starts the app processes of Flower FABs: its own executable, in the
/// hidden mode `floret_actors::apps::isolation::PYTHON_APP_MODE`, with `python`.
pub fn python_host(python: &Path) -> anyhow::Result<floret_actors::apps::isolation::PythonHost> {
    let program = std::env::current_exe().map_err(|e| {
        anyhow::anyhow!(
            "cannot find this daemon's own executable, which hosts Flower apps in Python: {e}"
        )
    })?;
    Ok(floret_actors::apps::isolation::PythonHost {
        program,
        python: python.to_owned(),
    })
}

/// A `HOST:PORT` to listen on; `setting` (e.g. `fleet-api-address`) names it in errors.
pub fn listen_address(setting: &str, value: &str) -> Result<SocketAddr, UserError> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    let bad = || {
        UserError::new(format!(
            "--{setting} `{value}` is not HOST:PORT: write e.g. 0.0.0.0:9092 or 127.0.0.1:9093"
        ))
    };
    let (host, port) = value.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| {
            UserError::new(format!(
                "--{setting} `{value}`: cannot resolve host `{host}`: use an IP address, e.g. 0.0.0.0"
            ))
        })
}

/// A failed bind as the user needs it: an address in use (or not ours to use) is theirs
/// to fix, exit 2; anything else is a plain failure.
pub fn bind_error(
    setting: &str,
    addr: SocketAddr,
    error: &(dyn std::error::Error + 'static),
) -> anyhow::Error {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            let problem = match io.kind() {
                std::io::ErrorKind::AddrInUse => Some("is already in use"),
                std::io::ErrorKind::AddrNotAvailable => Some("is not an address of this machine"),
                std::io::ErrorKind::PermissionDenied => Some("needs privileges to listen on"),
                _ => None,
            };
            if let Some(problem) = problem {
                return UserError::new(format!(
                    "--{setting} {addr} {problem}: stop the process that holds it or pass another address, e.g. --{setting} 0.0.0.0:0 for any free port"
                ))
                .into();
            }
        }
        source = e.source();
    }
    anyhow::anyhow!("cannot listen on {addr} (--{setting}): {error}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_are_host_and_port() {
        assert_eq!(
            listen_address("fleet-api-address", "0.0.0.0:9092").unwrap(),
            "0.0.0.0:9092".parse::<SocketAddr>().unwrap()
        );
        assert!(listen_address("x", "[::]:9093").is_ok());
        assert!(listen_address("x", "localhost:9093").is_ok());
        for bad in ["9092", "0.0.0.0", "0.0.0.0:port", ":9092", "0.0.0.0:70000"] {
            let e = listen_address("fleet-api-address", bad).unwrap_err();
            assert!(e.to_string().contains("--fleet-api-address"), "{e}");
        }
    }

    #[test]
    fn both_isolation_modes_run_and_others_are_refused() {
        assert_eq!(
            parse_isolation("subprocess").unwrap(),
            Isolation::Subprocess
        );
        assert_eq!(parse_isolation("process").unwrap(), Isolation::Process);
        let e = parse_isolation("docker").unwrap_err().to_string();
        assert!(e.starts_with("--isolation `docker`"), "{e}");
    }

    #[test]
    fn appio_addresses_default_by_isolation_and_connect_on_loopback() {
        let any = appio_listen_address("x", "", Isolation::Subprocess, "127.0.0.1:9094").unwrap();
        assert_eq!(any, "127.0.0.1:0".parse().unwrap());
        let fixed = appio_listen_address("x", "", Isolation::Process, "127.0.0.1:9094").unwrap();
        assert_eq!(fixed, "127.0.0.1:9094".parse().unwrap());
        let given = appio_listen_address("x", "0.0.0.0:7", Isolation::Subprocess, "127.0.0.1:9094");
        assert_eq!(given.unwrap(), "0.0.0.0:7".parse().unwrap());
        assert_eq!(connect_address("0.0.0.0:7".parse().unwrap()), "127.0.0.1:7");
        assert_eq!(connect_address("[::]:7".parse().unwrap()), "[::1]:7");
        assert_eq!(connect_address("10.0.0.4:7".parse().unwrap()), "10.0.0.4:7");
    }

    #[test]
    fn the_fab_cache_follows_xdg_then_home() {
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let both = env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/c")]);
        assert_eq!(fab_cache_dir("", &both), PathBuf::from("/c/floret/fabs"));
        let home = env(&[("HOME", "/home/u")]);
        assert_eq!(
            fab_cache_dir("", &home),
            PathBuf::from("/home/u/.cache/floret/fabs")
        );
        assert_eq!(fab_cache_dir("/x", &home), PathBuf::from("/x"));
        assert!(fab_cache_dir("", &[]).ends_with("floret-fabs"));
    }

    #[test]
    fn an_address_in_use_is_the_users_to_fix() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = std::net::TcpListener::bind(addr).unwrap_err();
        let e = bind_error("fleet-api-address", addr, &err);
        let user = e.downcast_ref::<UserError>().expect("a user error");
        assert!(user.to_string().contains("is already in use"), "{user}");
    }
}
