//! The remote path of `flwr`: a federation with an `address` names a SuperLink's Control
//! API. This module checks such a federation, connects to it, and turns Control errors into
//! the CLI's exit-code contract (the user's mistakes exit 2, an unreachable SuperLink 1).

use crate::UserError;
use crate::credentials::{self, UserSession};
use crate::project::Project;
use floret_core::{Control, ControlError, Federation};
use floret_transport::grpc::{ClientOptions, ControlClient};
use floret_transport::tls::ClientTls;
use floret_transport::{ClientSecurity, TransportError, TransportKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long `flwr` waits for the SuperLink to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A SuperLink to talk to, taken from a federation of the app's `pyproject.toml`.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The federation's name, for messages.
    pub federation: String,
    /// Its Control API address, `HOST:PORT`.
    pub address: String,
    /// `transport = "grpc" | "quic"` (default gRPC).
    pub transport: TransportKind,
    /// `root-certificates = ...` (TLS) or `insecure = true`.
    pub security: ClientSecurity,
    /// `enable-user-auth = true`: calls carry the token stored by `flwr login`.
    pub user_auth: bool,
}

impl Remote {
    /// The SuperLink of `federation` in the app at `app_dir`: its `pyproject.toml` loaded
    /// and checked as [`Remote::from_project`] does, `command` naming both errors' hints.
    ///
    /// # Errors
    /// As [`Project::load`] and [`Remote::from_project`].
    pub fn load(app_dir: &Path, federation: Option<&str>, command: &str) -> anyhow::Result<Remote> {
        let project = Project::load(app_dir, command)?;
        Ok(Remote::from_project(&project, federation, command)?)
    }

    /// The SuperLink of `federation` (or the default one). A federation without an address
    /// is a local simulation, which keeps no runs to list, follow or stop: `command` (e.g.
    /// "flwr ls") shapes that error's hint.
    pub fn from_project(
        project: &Project,
        federation: Option<&str>,
        command: &str,
    ) -> Result<Remote, UserError> {
        let chosen = project
            .manifest
            .federation(federation)
            .map_err(|e| UserError::new(e.to_string()))?;
        if chosen.address.is_none() {
            let remotes: Vec<&str> = project
                .manifest
                .federations
                .values()
                .filter(|f| f.address.is_some())
                .map(|f| f.name.as_str())
                .collect();
            let hint = match remotes.first() {
                Some(name) => format!("such as `{name}`"),
                None => "add one with address = \"127.0.0.1:9093\" and insecure = true".to_owned(),
            };
            return Err(UserError::new(format!(
                "federation `{}` is a local simulation, which keeps no runs: `{command}` needs a federation with an address (a SuperLink), {hint}",
                chosen.name
            )));
        }
        Remote::from_federation(chosen, project.dir())
    }

    /// Checks a federation that has an address: its port, its transport, and its TLS —
    /// `root-certificates` (a path relative to `app_dir`, where pyproject.toml is),
    /// `insecure = true`, or neither: TLS trusting the platform's CA certificates (and
    /// `SSL_CERT_FILE`), as Flower does for a SuperLink with a publicly trusted certificate.
    pub fn from_federation(federation: &Federation, app_dir: &Path) -> Result<Remote, UserError> {
        let address = federation.address.clone().unwrap_or_default();
        let table = format!("[tool.flwr.federations.{}]", federation.name);
        let transport = match &federation.transport {
            None => TransportKind::Grpc,
            Some(t) => t
                .parse()
                .map_err(|e| UserError::new(format!("transport in {table}: {e}")))?,
        };
        let security = match (
            federation.insecure == Some(true),
            &federation.root_certificates,
        ) {
            (true, Some(_)) => {
                return Err(UserError::new(format!(
                    "{table} has both insecure = true and root-certificates: remove insecure to connect with TLS, or root-certificates to connect in plaintext"
                )));
            }
            (true, None) => ClientSecurity::Insecure,
            (false, Some(path)) => {
                let path = app_dir.join(path);
                ClientSecurity::Tls(
                    ClientTls::from_root_certificates(&path).map_err(|e| {
                        UserError::new(format!("root-certificates in {table}: {e}"))
                    })?,
                )
            }
            (false, None) => ClientSecurity::Tls(ClientTls::from_platform().map_err(|e| {
                UserError::new(format!(
                    "{table} has no root-certificates, so the SuperLink's certificate is checked against the platform's, but there are {e}; or set root-certificates = \"certificates/ca.crt\" (the CA that signed it, relative to pyproject.toml), or insecure = true for a SuperLink started with --insecure"
                ))
            })?),
        };
        if !has_port(&address) {
            return Err(UserError::new(format!(
                "address = \"{address}\" in {table} has no port: write HOST:PORT, e.g. \"{address}:9093\""
            )));
        }
        Ok(Remote {
            federation: federation.name.clone(),
            address,
            transport,
            security,
            user_auth: federation.enable_user_auth,
        })
    }

    /// Where `flwr login` keeps this SuperLink's tokens.
    ///
    /// # Errors
    /// Neither `FLWR_HOME` nor `HOME` is set.
    pub fn credentials_path(&self) -> Result<PathBuf, UserError> {
        Ok(credentials::credentials_path(
            &credentials::flwr_home()?,
            &self.address,
        ))
    }

    /// The line that tells the user to log in.
    fn login_hint(&self) -> String {
        format!(
            "not logged in to {0}: run 'flwr login . {0}'",
            self.federation
        )
    }

    /// Connects to the SuperLink's Control API. Failing to reach it is not the user's input
    /// being wrong (exit 1), but the message says what to check.
    ///
    /// With user authentication, the login stored by `flwr login` is loaded first: without
    /// one the command fails before connecting, with the line that says how to log in.
    pub async fn connect(&self) -> anyhow::Result<Arc<dyn Control>> {
        if !self.user_auth {
            return Ok(Arc::new(self.connect_client().await?));
        }
        Ok(Arc::new(self.logged_in().await?))
    }

    /// The stored login's session with the SuperLink, for the calls that only exist with
    /// user authentication (`flwr session`).
    ///
    /// # Errors
    /// A `UserError` when the federation does not use user authentication or no login is
    /// stored; as [`Remote::connect_client`].
    pub async fn connect_user_session(&self, command: &str) -> anyhow::Result<UserSession> {
        if !self.user_auth {
            return Err(UserError::new(format!(
                "{command}: federation `{0}` does not use user authentication, so its SuperLink keeps no sessions: add enable-user-auth = true to [tool.flwr.federations.{0}] if it runs with --user-auth-config",
                self.federation
            ))
            .into());
        }
        self.logged_in().await
    }

    /// The session of the login `flwr login` stored, over a fresh connection: loaded before
    /// connecting, so a missing login fails with the line that says how to log in, not
    /// with a connection error.
    async fn logged_in(&self) -> anyhow::Result<UserSession> {
        let path = self.credentials_path()?;
        let login = credentials::load(&path)?.ok_or_else(|| UserError::new(self.login_hint()))?;
        let client = self.connect_client().await?;
        UserSession::new(client, login, path).map_err(|e| self.error(e))
    }

    /// The plain connection to the Control API, without a login.
    pub async fn connect_client(&self) -> anyhow::Result<ControlClient> {
        let options = ClientOptions {
            connect_timeout: CONNECT_TIMEOUT,
            transport: self.transport,
            security: self.security.clone(),
            ..ClientOptions::default()
        };
        match floret_transport::grpc::control_client_with(&self.address, options).await {
            Ok(client) => Ok(client),
            Err(TransportError::Connect { reason, .. }) if reason.starts_with("TLS") => {
                Err(anyhow::anyhow!(
                    "cannot connect to the SuperLink at {} (federation `{}`) over {}: {reason}",
                    self.address,
                    self.federation,
                    self.transport
                ))
            }
            Err(TransportError::Connect { reason, .. }) => Err(anyhow::anyhow!(
                "cannot reach the SuperLink at {} (federation `{}`) over {}: {reason}: is flower-superlink running, and is this its Control API address (port 9093 by default)?",
                self.address,
                self.federation,
                self.transport
            )),
            Err(e @ TransportError::InvalidAddress { .. }) => Err(UserError::new(format!(
                "address of [tool.flwr.federations.{}]: {e}",
                self.federation
            ))
            .into()),
            Err(e) => Err(anyhow::Error::from(e)),
        }
    }

    /// A Control error as the CLI reports it: unknown runs and refused requests are the
    /// user's to fix (exit 2); a lost connection is not (exit 1).
    pub fn error(&self, e: ControlError) -> anyhow::Error {
        match e {
            ControlError::UnknownRun(_)
            | ControlError::Finished(_)
            | ControlError::Invalid(_)
            | ControlError::Forbidden(_) => UserError::new(e.to_string()).into(),
            ControlError::Unavailable(reason) => anyhow::anyhow!(
                "lost the connection to the SuperLink at {}: {reason}",
                self.address
            ),
            // The token was refused, or expired and could not be refreshed.
            ControlError::Unauthenticated(_) | ControlError::TokenExpired if self.user_auth => {
                UserError::new(format!(
                    "the login to {0} is no longer valid: run 'flwr login . {0}' again",
                    self.federation
                ))
                .into()
            }
            ControlError::Unauthenticated(_) | ControlError::TokenExpired => {
                UserError::new(format!(
                    "the SuperLink of {0} requires a login: set enable-user-auth = true in [tool.flwr.federations.{0}] and run 'flwr login . {0}'",
                    self.federation
                ))
                .into()
            }
        }
    }

    /// A refused `flwr login`: wrong credentials are the user's to fix (exit 2).
    pub fn login_error(&self, e: ControlError) -> anyhow::Error {
        match e {
            ControlError::Unauthenticated(reason) => {
                UserError::new(format!("cannot log in to {}: {reason}", self.federation)).into()
            }
            ControlError::Invalid(reason) => {
                UserError::new(format!("cannot log in to {}: {reason}", self.federation)).into()
            }
            e => self.error(e),
        }
    }
}

/// `HOST:PORT` with a numeric port (`[::1]:9093` too).
pub(crate) fn has_port(address: &str) -> bool {
    address
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use floret_core::FederationOptions;

    fn federation(address: &str, insecure: Option<bool>) -> Federation {
        Federation {
            name: "remote".into(),
            address: Some(address.into()),
            insecure,
            root_certificates: None,
            enable_user_auth: false,
            transport: None,
            options: FederationOptions::default(),
        }
    }

    fn here() -> &'static Path {
        Path::new(".")
    }

    #[test]
    fn an_insecure_federation_with_a_port_is_a_remote() {
        let r = Remote::from_federation(&federation("127.0.0.1:9093", Some(true)), here()).unwrap();
        assert_eq!(r.address, "127.0.0.1:9093");
        assert_eq!(r.federation, "remote");
        assert_eq!(r.transport, TransportKind::Grpc);
        assert!(matches!(r.security, ClientSecurity::Insecure));
    }

    #[test]
    fn without_root_certificates_or_insecure_tls_trusts_the_platform() {
        for insecure in [None, Some(false)] {
            // A machine without any CA bundle gets the error that says how to give one.
            match Remote::from_federation(&federation("h:9093", insecure), here()) {
                Ok(r) => match r.security {
                    ClientSecurity::Tls(tls) => {
                        assert_eq!(tls.trusted(), "the platform's trust store");
                    }
                    ClientSecurity::Insecure => panic!("no silent plaintext"),
                },
                Err(e) => assert!(
                    e.to_string().contains("SSL_CERT_FILE")
                        && e.to_string().contains("insecure = true"),
                    "{e}"
                ),
            }
        }
        let mut f = federation("h:9093", None);
        f.root_certificates = Some("certificates/ca.crt".into());
        let e = Remote::from_federation(&f, Path::new("/nonexistent/app")).unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent/app/certificates/ca.crt"),
            "relative to the app directory: {e}"
        );
        f.insecure = Some(true);
        let e = Remote::from_federation(&f, here()).unwrap_err();
        assert!(e.to_string().contains("both"), "{e}");
    }

    #[test]
    fn a_federation_picks_its_transport() {
        let mut f = federation("h:9093", Some(true));
        f.transport = Some("quic".into());
        let r = Remote::from_federation(&f, here()).unwrap();
        assert_eq!(r.transport, TransportKind::Quic);
        f.transport = Some("tcp".into());
        let e = Remote::from_federation(&f, here()).unwrap_err();
        assert!(e.to_string().contains("\"grpc\" or \"quic\""), "{e}");
    }

    #[test]
    fn an_address_needs_a_port() {
        let e = Remote::from_federation(&federation("superlink.example", Some(true)), here())
            .unwrap_err();
        assert!(e.to_string().contains("superlink.example:9093"), "{e}");
        assert!(has_port("[::1]:9093"));
        assert!(!has_port(":9093"));
        assert!(!has_port("h:port"));
    }
}
