//! User authentication for the Control API: the accounts file, argon2 checks of passwords
//! and API tokens, and the sessions that turn a login into short-lived access tokens.
//!
//! The decisions (`accounts`, `secrets`, `sessions`, `throttle`) are pure: no clock reads and no I/O,
//! the time comes in as a parameter, so tests can expire a token to the second.
//! `gate` bounds how many argon2 checks run and wait at once.
//! `AccountsAuthority` binds them to the SuperLink's clock and implements
//! `floret_core::UserAuthority` for the transport.

mod accounts;
mod authority;
mod gate;
mod secrets;
mod sessions;
mod throttle;

pub use accounts::{Account, Accounts, AccountsError, Role};
pub use authority::{AccountsAuthority, LoginLimits};
pub use gate::{GateLimits, LoginGate};
pub use secrets::{hash_secret, verify_secret};
pub use sessions::{Sessions, TokenLifetimes};
pub use throttle::{Attempt, LoginThrottle, ThrottlePolicy};
