//! The SuperLink's notion of "now" in Unix seconds.
//!
//! Timestamps users read (`created_at`, `status_changed_at`) and deadlines the SuperLink
//! checks (heartbeat leases, message TTLs) must come from one clock, and that clock must
//! follow tokio's so a test that calls `tokio::time::pause()` can skip an hour of heartbeats
//! in a millisecond. So the wall clock is read once per process and advanced with tokio's
//! monotonic clock from then on: no jumps when the system clock is adjusted, and virtual time
//! in paused tests.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The wall-clock reading and the monotonic instant it was taken at.
static ANCHOR: OnceLock<(f64, Instant)> = OnceLock::new();

/// Unix seconds now, advanced by tokio's clock (see the module doc).
// The one reading of the system clocks the crate's lint allows: everything else reads
// time through this function or tokio.
#[allow(clippy::disallowed_methods)]
pub fn unix_now() -> f64 {
    let (unix, at) = *ANCHOR.get_or_init(|| {
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        (unix, Instant::now())
    });
    // A runtime paused before the anchor was taken reads slightly earlier instants: count
    // backwards rather than saturate, so time never stands still.
    let now = tokio::time::Instant::now().into_std();
    match now.checked_duration_since(at) {
        Some(ahead) => unix + ahead.as_secs_f64(),
        None => unix - at.duration_since(now).as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::unix_now;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_tokio_time() {
        let before = unix_now();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let after = unix_now();
        assert!((after - before - 3600.0).abs() < 0.5, "{before} -> {after}");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the wall clock is what this test compares with
    fn is_close_to_the_wall_clock() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!((unix_now() - wall).abs() < 5.0);
    }
}
