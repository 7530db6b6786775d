//! Pure decisions with time in them: heartbeat liveness (`heartbeat`), reconnect and retry
//! backoff (`backoff`), and the one place that reads the clock (`clock`).
//!
//! `heartbeat` and `backoff` do no I/O and read no clock: callers pass the elapsed time
//! and the random draw, so the rules are tested on their own and the actors run them on
//! tokio's paused clock in tests. `clock` is the single reading of wall time, through
//! tokio, that both sides share.

pub mod backoff;
pub mod clock;
pub mod heartbeat;
