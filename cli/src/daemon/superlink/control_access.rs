//! Who may reach the Control API, decided once: where it listens when the operator did not
//! say, and the line the SuperLink logs about it at start.
//!
//! Without user authentication, whoever reaches the Control API can register SuperNode
//! keys (defeating node authentication) and submit FABs whose binaries the SuperLink runs.
//! So a TLS SuperLink without `--user-auth-config` listens on loopback only unless the
//! operator gives an address on purpose (flag, `--config` key or `FLWR_*` variable: any
//! layer above the defaults). `--insecure` keeps Flower's open `0.0.0.0:9093` for tests and
//! demos, with a warning; with user authentication every call needs a login, so the
//! Control API listens on every interface as in Flower.
//!
//! Pure: no I/O, no logging; `config` resolves, `serve` logs what `announcement` says.

use std::net::SocketAddr;

/// The Control API's address when user authentication (or `--insecure`) lets it be open.
pub(crate) const OPEN_DEFAULT: &str = "0.0.0.0:9093";
/// The Control API's address when nothing would stop a stranger using it.
pub(crate) const LOOPBACK_DEFAULT: &str = "127.0.0.1:9093";

/// Why the Control API listens where it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAccess {
    /// `--user-auth-config`: every call carries a login.
    UserAuth,
    /// `--insecure`, without user authentication (which needs TLS): open to whoever
    /// reaches the address.
    Insecure,
    /// TLS without user authentication, at the address the operator gave.
    Given,
    /// TLS without user authentication and no address given: loopback only.
    LoopbackByDefault,
}

/// The Control API's address (as text, for `listen_address` to parse and name in its
/// error) and why: `given` is the merged setting, empty when no layer set it.
pub(crate) fn control_api_address(
    given: &str,
    insecure: bool,
    user_auth: bool,
) -> (&str, ControlAccess) {
    match (given.is_empty(), insecure, user_auth) {
        (_, _, true) => (or(given, OPEN_DEFAULT), ControlAccess::UserAuth),
        (_, true, false) => (or(given, OPEN_DEFAULT), ControlAccess::Insecure),
        (false, false, false) => (given, ControlAccess::Given),
        (true, false, false) => (LOOPBACK_DEFAULT, ControlAccess::LoopbackByDefault),
    }
}

fn or<'a>(given: &'a str, default: &'a str) -> &'a str {
    if given.is_empty() { default } else { given }
}

/// How loud a start-up line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    /// A fact the operator should know.
    Info,
    /// Anyone who reaches the address can run code on this machine.
    Warn,
}

/// The line the SuperLink logs once the Control API is bound at `bound`; `None` when user
/// authentication guards it (that has a line of its own).
pub(crate) fn announcement(access: ControlAccess, bound: SocketAddr) -> Option<(Level, String)> {
    let open_to = if bound.ip().is_loopback() {
        "anyone on this machine"
    } else {
        "anyone who reaches it"
    };
    match access {
        ControlAccess::UserAuth => None,
        ControlAccess::Insecure => Some((
            Level::Warn,
            format!(
                "Control API on {bound} without TLS or user authentication (--insecure): \
                 {open_to} can register SuperNode keys and submit apps whose binaries this \
                 SuperLink runs; for anything but a test, serve TLS with --user-auth-config"
            ),
        )),
        ControlAccess::Given | ControlAccess::LoopbackByDefault if bound.ip().is_loopback() => {
            let why = if access == ControlAccess::LoopbackByDefault {
                "by default, as there is no --user-auth-config"
            } else {
                "as --control-api-address says"
            };
            Some((
                Level::Info,
                format!(
                    "Control API on loopback only ({bound}), {why}: only this machine can \
                     submit runs and register SuperNode keys; to let other machines in, set \
                     --control-api-address {OPEN_DEFAULT} (or control-api-address in --config, \
                     FLWR_CONTROL_API_ADDRESS), with --user-auth-config so that they must log in"
                ),
            ))
        }
        ControlAccess::Given | ControlAccess::LoopbackByDefault => Some((
            Level::Warn,
            format!(
                "Control API on {bound} without user authentication, as \
                 --control-api-address says: {open_to} can register SuperNode keys and submit \
                 apps whose binaries this SuperLink runs; add --user-auth-config to require a \
                 login"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_user_auth_a_tls_superlink_listens_on_loopback_unless_told() {
        assert_eq!(
            control_api_address("", false, false),
            ("127.0.0.1:9093", ControlAccess::LoopbackByDefault)
        );
        assert_eq!(
            control_api_address("0.0.0.0:9093", false, false),
            ("0.0.0.0:9093", ControlAccess::Given)
        );
        assert_eq!(
            control_api_address("", false, true),
            ("0.0.0.0:9093", ControlAccess::UserAuth)
        );
        assert_eq!(
            control_api_address("10.0.0.1:1", false, true),
            ("10.0.0.1:1", ControlAccess::UserAuth)
        );
    }

    #[test]
    fn insecure_stays_open_as_in_flower() {
        assert_eq!(
            control_api_address("", true, false),
            ("0.0.0.0:9093", ControlAccess::Insecure)
        );
        assert_eq!(
            control_api_address("127.0.0.1:0", true, false),
            ("127.0.0.1:0", ControlAccess::Insecure)
        );
    }

    #[test]
    fn the_start_line_says_who_can_get_in_and_how_to_change_it() {
        let local: SocketAddr = "127.0.0.1:9093".parse().unwrap();
        let open: SocketAddr = "0.0.0.0:9093".parse().unwrap();
        assert_eq!(announcement(ControlAccess::UserAuth, open), None);

        let (level, line) = announcement(ControlAccess::LoopbackByDefault, local).unwrap();
        assert_eq!(level, Level::Info);
        assert!(
            line.starts_with("Control API on loopback only (127.0.0.1:9093), by default")
                && line.contains("--control-api-address 0.0.0.0:9093")
                && line.contains("FLWR_CONTROL_API_ADDRESS")
                && line.contains("--user-auth-config"),
            "{line}"
        );
        let (level, line) = announcement(ControlAccess::Given, local).unwrap();
        assert_eq!(level, Level::Info);
        assert!(line.contains("as --control-api-address says"), "{line}");

        let (level, line) = announcement(ControlAccess::Given, open).unwrap();
        assert_eq!(level, Level::Warn);
        assert!(
            line.contains("anyone who reaches it can register SuperNode keys"),
            "{line}"
        );

        for bound in [local, open] {
            let (level, line) = announcement(ControlAccess::Insecure, bound).unwrap();
            assert_eq!(level, Level::Warn);
            assert!(
                line.contains("without TLS or user authentication (--insecure)")
                    && line.contains("submit apps whose binaries this SuperLink runs"),
                "{line}"
            );
        }
    }
}
