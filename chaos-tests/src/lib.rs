//! floret-chaos-tests: fault injection and the suites in `tests/` that use it.
//!
//! Faults wrap the edges — a ClientApp's handlers here; the transport and processes as the
//! deployment runtime grows — never the logic under test. Choices are seeded, so a failing
//! suite replays exactly. Depends on floret-core only; the suites pull in the rest.

pub mod client_faults;
