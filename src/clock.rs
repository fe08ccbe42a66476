//! One clock per process: monotonic microseconds for measuring, and the wall-clock time of
//! process start for turning them into timestamps. Measuring on the monotonic clock keeps an
//! NTP step from turning into a negative latency or a phantom outage.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Monotonic time since process start, with the wall-clock anchor.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    start_unix_us: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// Starts the clock now.
    pub fn new() -> Clock {
        let start = Instant::now();
        let start_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Clock {
            start,
            start_unix_us,
        }
    }

    /// Microseconds since start.
    pub fn now_us(&self) -> u64 {
        self.us_of(Instant::now())
    }

    /// Microseconds since start of `t` (0 for instants before start).
    pub fn us_of(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_micros() as u64
    }

    /// The instant `us` microseconds after start.
    pub fn instant_of(&self, us: u64) -> Instant {
        self.start + std::time::Duration::from_micros(us)
    }

    /// Process start in µs since the Unix epoch: the epoch written into every value.
    pub fn epoch_us(&self) -> u64 {
        self.start_unix_us
    }

    /// Unix time in seconds of a monotonic reading.
    pub fn unix_secs(&self, us: u64) -> f64 {
        (self.start_unix_us + us) as f64 / 1e6
    }

    /// Wall-clock time of a monotonic reading.
    pub fn system_time(&self, us: u64) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_micros(self.unix_us(us))
    }

    /// Unix time in µs of a monotonic reading.
    pub fn unix_us(&self, us: u64) -> u64 {
        self.start_unix_us + us
    }
}
