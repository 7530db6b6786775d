//! Protocol errors <-> gRPC status, both ways.
//!
//! | core error | status | marker (`floret-error` metadata) |
//! |---|---|---|
//! | `FleetError::UnknownNode(id)` | NOT_FOUND | `unknown-node` (+ `floret-id`) |
//! | `FleetError::UnknownRun(id)`, `ControlError::UnknownRun(id)` | NOT_FOUND | `unknown-run` (+ `floret-id`) |
//! | `ControlError::Finished(id)` | FAILED_PRECONDITION | `finished` (+ `floret-id`) |
//! | chunk not held for this node | NOT_FOUND | `unknown-object` |
//! | `AppIoError::BadToken` | UNAUTHENTICATED | `bad-token` |
//! | `FleetError::Unauthenticated`, a failed node signature | UNAUTHENTICATED | `unauthenticated` |
//! | `AppIoError::Stopped` | FAILED_PRECONDITION | `stopped` |
//! | `ControlError::Unauthenticated`, no or unknown access token | UNAUTHENTICATED | `not-logged-in` |
//! | `ControlError::TokenExpired` | UNAUTHENTICATED | `token-expired` |
//! | `ControlError::Forbidden`, a role the caller lacks | PERMISSION_DENIED | `forbidden` |
//! | `Invalid`, undecodable body | INVALID_ARGUMENT | |
//! | `Unavailable` | UNAVAILABLE | |
//!
//! On the client, a status that tonic made up locally (it carries a source error: the
//! connection was refused, reset, timed out) is a transport failure and becomes
//! `Unavailable` with the address and a readable reason; so do UNAVAILABLE, CANCELLED,
//! DEADLINE_EXCEEDED, ABORTED, UNKNOWN and INTERNAL from the wire (transient or broken
//! link). UNAUTHENTICATED is `AppIoError::BadToken` (AppIo) or `FleetError::Unauthenticated`
//! (Fleet) even without its marker. Other codes are
//! `Invalid`.

use crate::error::DecodeError;
use crate::transport_error::Api;
use crate::transport_error::io_reason;
use floret_core::{AppIoError, ControlError, FleetError};
use std::error::Error as _;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

const MARKER: &str = "floret-error";
const ID: &str = "floret-id";
const UNKNOWN_NODE: &str = "unknown-node";
const UNKNOWN_RUN: &str = "unknown-run";
const FINISHED: &str = "finished";
const UNKNOWN_OBJECT: &str = "unknown-object";
const BAD_TOKEN: &str = "bad-token";
const STOPPED: &str = "stopped";
const NOT_LOGGED_IN: &str = "not-logged-in";
const TOKEN_EXPIRED: &str = "token-expired";
const UNAUTHENTICATED: &str = "unauthenticated";
const FORBIDDEN: &str = "forbidden";

fn marked(code: Code, message: String, marker: &'static str, id: Option<u64>) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(MARKER, MetadataValue::from_static(marker));
    if let Some(id) = id {
        metadata.insert(ID, id.into());
    }
    Status::with_metadata(code, message, metadata)
}

pub(crate) fn from_fleet_error(e: FleetError) -> Status {
    match e {
        FleetError::UnknownNode(id) => {
            marked(Code::NotFound, e.to_string(), UNKNOWN_NODE, Some(id))
        }
        FleetError::UnknownRun(id) => marked(Code::NotFound, e.to_string(), UNKNOWN_RUN, Some(id)),
        FleetError::Invalid(m) => Status::invalid_argument(m),
        FleetError::Unavailable(m) => Status::unavailable(m),
        FleetError::Unauthenticated(m) => unauthenticated(m),
    }
}

/// A Fleet request that node authentication refused; `message` names the cause.
pub(crate) fn unauthenticated(message: String) -> Status {
    marked(Code::Unauthenticated, message, UNAUTHENTICATED, None)
}

pub(crate) fn from_control_error(e: ControlError) -> Status {
    match e {
        ControlError::UnknownRun(id) => {
            marked(Code::NotFound, e.to_string(), UNKNOWN_RUN, Some(id))
        }
        ControlError::Finished(id) => {
            marked(Code::FailedPrecondition, e.to_string(), FINISHED, Some(id))
        }
        ControlError::Invalid(m) => Status::invalid_argument(m),
        ControlError::Unavailable(m) => Status::unavailable(m),
        ControlError::Unauthenticated(m) => marked(Code::Unauthenticated, m, NOT_LOGGED_IN, None),
        ControlError::TokenExpired => {
            marked(Code::Unauthenticated, e.to_string(), TOKEN_EXPIRED, None)
        }
        ControlError::Forbidden(m) => marked(Code::PermissionDenied, m, FORBIDDEN, None),
    }
}

pub(crate) fn from_appio_error(e: AppIoError) -> Status {
    match e {
        AppIoError::BadToken => marked(Code::Unauthenticated, e.to_string(), BAD_TOKEN, None),
        AppIoError::Stopped => marked(Code::FailedPrecondition, e.to_string(), STOPPED, None),
        AppIoError::Invalid(m) => Status::invalid_argument(m),
        AppIoError::Unavailable(m) => Status::unavailable(m),
    }
}

/// A request the server could not decode; `what` locates it (`PushMessagesRequest.envelopes[2]`).
pub(crate) fn from_decode_error(what: &str, e: &DecodeError) -> Status {
    Status::invalid_argument(format!("{what}: {e}"))
}

/// `holder` is whom the chunk would have been delivered to ("node 3", "this token").
pub(crate) fn unknown_object(id: impl std::fmt::Display, holder: &str) -> Status {
    marked(
        Code::NotFound,
        format!("chunk {id} is not held for {holder} (never sent to it, confirmed, or expired)"),
        UNKNOWN_OBJECT,
        None,
    )
}

/// What a status means to a client.
pub(crate) enum Failure {
    /// Could not talk to the peer; worth retrying. The text says why.
    Transport(String),
    UnknownNode(Option<u64>),
    UnknownRun(Option<u64>),
    Finished(Option<u64>),
    UnknownObject,
    BadToken,
    Stopped,
    /// A Control call without a valid login; the message says how to log in.
    NotLoggedIn,
    /// A Control call whose access token expired.
    TokenExpired,
    /// A Control call by a user without the role it needs; the message names the role.
    Forbidden(String),
    /// Node authentication refused the request.
    Unauthenticated(String),
    /// The peer refused the request, or sent something we refuse.
    Invalid(String),
}

pub(crate) fn classify(status: &Status) -> Failure {
    if status.source().is_some() {
        return Failure::Transport(transport_reason(status));
    }
    let id = status
        .metadata()
        .get(ID)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    match status.metadata().get(MARKER).and_then(|v| v.to_str().ok()) {
        Some(UNKNOWN_NODE) => return Failure::UnknownNode(id),
        Some(UNKNOWN_RUN) => return Failure::UnknownRun(id),
        Some(FINISHED) => return Failure::Finished(id),
        Some(UNKNOWN_OBJECT) => return Failure::UnknownObject,
        Some(BAD_TOKEN) => return Failure::BadToken,
        Some(STOPPED) => return Failure::Stopped,
        Some(NOT_LOGGED_IN) => return Failure::NotLoggedIn,
        Some(TOKEN_EXPIRED) => return Failure::TokenExpired,
        Some(UNAUTHENTICATED) => return Failure::Unauthenticated(status.message().to_string()),
        Some(FORBIDDEN) => return Failure::Forbidden(status.message().to_string()),
        _ => {}
    }
    match status.code() {
        Code::Unauthenticated => Failure::BadToken,
        Code::PermissionDenied => Failure::Forbidden(status.message().to_string()),
        Code::Unavailable
        | Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Unknown
        | Code::Internal => Failure::Transport(transport_reason(status)),
        // Refused logins (too many in progress, locked out): the message says what to do.
        Code::InvalidArgument | Code::ResourceExhausted => {
            Failure::Invalid(status.message().to_string())
        }
        code => Failure::Invalid(format!("{}: {}", code.description(), status.message())),
    }
}

/// The most telling cause of a transport failure: the I/O error deep in the chain when
/// there is one ("connection refused"), else the innermost message.
fn transport_reason(status: &Status) -> String {
    let mut innermost: Option<String> = None;
    let mut source: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(e) = source {
        // An I/O error wrapping another (rustls' alerts) is read through to that one.
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.get_ref().is_none()
        {
            return io_reason(io);
        }
        innermost = Some(e.to_string());
        source = e.source();
    }
    match innermost {
        Some(m) if !m.is_empty() => explain_tls(&m).unwrap_or(m),
        _ if status.message().is_empty() => status.code().description().to_string(),
        _ => status.message().to_string(),
    }
}

pub(crate) fn to_fleet_error(status: &Status, address: &str, asked: u64) -> FleetError {
    match classify(status) {
        Failure::Transport(reason) => {
            FleetError::Unavailable(format!("cannot reach the SuperLink at {address}: {reason}"))
        }
        Failure::UnknownNode(id) => FleetError::UnknownNode(id.unwrap_or(asked)),
        Failure::UnknownRun(id) => FleetError::UnknownRun(id.unwrap_or(asked)),
        Failure::Unauthenticated(m) => FleetError::Unauthenticated(m),
        Failure::BadToken => FleetError::Unauthenticated(status.message().to_string()),
        Failure::Finished(_)
        | Failure::UnknownObject
        | Failure::Stopped
        | Failure::NotLoggedIn
        | Failure::TokenExpired
        | Failure::Forbidden(_) => FleetError::Invalid(status.message().to_string()),
        Failure::Invalid(m) => FleetError::Invalid(m),
    }
}

pub(crate) fn to_control_error(status: &Status, address: &str, asked: u64) -> ControlError {
    match classify(status) {
        Failure::Transport(reason) => {
            ControlError::Unavailable(format!("cannot reach the SuperLink at {address}: {reason}"))
        }
        Failure::UnknownRun(id) => ControlError::UnknownRun(id.unwrap_or(asked)),
        Failure::Finished(id) => ControlError::Finished(id.unwrap_or(asked)),
        Failure::BadToken | Failure::NotLoggedIn | Failure::Unauthenticated(_) => {
            ControlError::Unauthenticated(status.message().to_string())
        }
        Failure::TokenExpired => ControlError::TokenExpired,
        Failure::Forbidden(m) => ControlError::Forbidden(m),
        Failure::UnknownNode(_) | Failure::UnknownObject | Failure::Stopped => {
            ControlError::Invalid(status.message().to_string())
        }
        Failure::Invalid(m) => ControlError::Invalid(m),
    }
}

pub(crate) fn to_appio_error(status: &Status, api: Api, address: &str) -> AppIoError {
    match classify(status) {
        Failure::Transport(reason) => AppIoError::Unavailable(format!(
            "cannot reach {} at {address}: {reason}",
            api.name()
        )),
        Failure::BadToken | Failure::NotLoggedIn | Failure::TokenExpired => AppIoError::BadToken,
        Failure::Stopped => AppIoError::Stopped,
        Failure::Unauthenticated(_) => AppIoError::BadToken,
        Failure::UnknownNode(_)
        | Failure::UnknownRun(_)
        | Failure::Finished(_)
        | Failure::UnknownObject
        | Failure::Forbidden(_) => AppIoError::Invalid(status.message().to_string()),
        Failure::Invalid(m) => AppIoError::Invalid(m),
    }
}

/// Whether the call failed because nothing listens at the address: the request never left,
/// so it is safe to send again once the peer is up.
pub(crate) fn refused(status: &Status) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = status.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = e.source();
    }
    false
}

/// "connection refused", "no answer within 3s", a TLS problem explained, or the innermost
/// error's text: why a connection could not be opened.
pub(crate) fn error_reason(
    e: &(dyn std::error::Error + 'static),
    timeout: std::time::Duration,
) -> String {
    let mut innermost = e.to_string();
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.get_ref().is_none()
        {
            return io_reason(io);
        }
        innermost = s.to_string();
        source = s.source();
    }
    if let Some(tls) = explain_tls(&innermost) {
        tls
    } else if innermost.contains("timed out") || innermost.contains("timeout") {
        format!("no answer within {timeout:?}")
    } else {
        innermost
    }
}

/// Turns rustls' terse certificate errors into what to do about them; `None` when `text`
/// is not a TLS problem.
pub(crate) fn explain_tls(text: &str) -> Option<String> {
    // BadSignature: a CA of the same name (two runs of a key generator) signed it.
    let hint = if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        "TLS: the server's certificate is not signed by the CA in the root certificates \
         (--root-certificates, or root-certificates in pyproject.toml; without them, the \
         platform's trust store or SSL_CERT_FILE); pass the CA that signed the \
         SuperLink's certificate"
    } else if text.contains("NotValidForName") {
        "TLS: the server's certificate does not name the address connected to; connect by \
         a name or IP it lists, or issue a certificate with it (flwr keygen --san NAME)"
    } else if text.contains("Expired") {
        "TLS: the server's certificate has expired; issue a new one (flwr keygen)"
    } else if text.contains("NotValidYet") {
        "TLS: the server's certificate is not valid yet: check the clocks"
    } else if text.contains("CertificateRequired")
        || text.contains("certificate required")
        || text.contains("peer sent no certificates")
    {
        "TLS: the server requires a client certificate (mutual TLS); pass \
         --ssl-client-certfile and --ssl-client-keyfile"
    } else if text.contains("InvalidContentType")
        || text.contains("corrupt message")
        || text.contains("InvalidMessage")
    {
        "TLS: the server did not answer with TLS; it may be running with --insecure \
         (then connect with --insecure too, or start it with certificates)"
    } else if text.contains("peer is incompatible") || text.contains("no application protocol") {
        "TLS: the server does not speak Floret's QUIC protocol on this port"
    } else {
        return None;
    };
    Some(format!("{hint} ({text})"))
}

#[cfg(test)]
mod unauthenticated_tests {
    use super::*;

    #[test]
    fn unauthenticated_maps_both_ways() {
        let status = from_fleet_error(FleetError::Unauthenticated("key not allowed".into()));
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(
            to_fleet_error(&status, "a:1", 0),
            FleetError::Unauthenticated("key not allowed".into())
        );
        // Without the marker (another server), the code alone decides.
        assert_eq!(
            to_fleet_error(&Status::unauthenticated("no"), "a:1", 0),
            FleetError::Unauthenticated("no".into())
        );
    }

    /// A logged-in user without the admin role hears that, not "log in again".
    #[test]
    fn forbidden_maps_both_ways_and_is_not_a_login_problem() {
        let e = ControlError::Forbidden("listing SuperNodes requires the admin role".into());
        let status = from_control_error(e.clone());
        assert_eq!(status.code(), Code::PermissionDenied);
        assert_eq!(to_control_error(&status, "a:1", 0), e);
        assert_eq!(
            to_control_error(&Status::permission_denied("no"), "a:1", 0),
            ControlError::Forbidden("no".into())
        );
    }
}
