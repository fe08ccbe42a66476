//! The latency sketch of a history interval: counts per power-of-√2 bucket from 100 µs to
//! about 10 s, mergeable, with quantiles; a fixed 152 bytes instead of raw samples.

use std::time::Duration;

/// Lower edge of the first regular bucket, in µs: below it everything is "fast enough" for a
/// network round trip, as in the 1-2-5 histograms of DESIGN §6.
const SKETCH_MIN_US: f64 = 100.0;
/// Regular buckets: power-of-√2 edges from 100 µs; edge 34 is 100 µs · 2^17 ≈ 13.1 s, past
/// the 10 s where DESIGN §6's histograms end. A value is known to within a factor √2 (the
/// quantile is the bucket's geometric middle, so within ±19 %).
const SKETCH_REGULAR: usize = 34;
/// Buckets in a sketch: one below 100 µs, the regular ones, one overflow.
pub const SKETCH_BUCKETS: usize = SKETCH_REGULAR + 2;

/// A small latency histogram: counts per power-of-√2 bucket from 100 µs to about 10 s (plus
/// one bucket below and one above), and the exact maximum. Two sketches merge by adding
/// counts, so a 10 s interval is the exact merge of its seconds. 152 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sketch {
    counts: [u32; SKETCH_BUCKETS],
    count: u32,
    pub(super) max_us: u32,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            counts: [0; SKETCH_BUCKETS],
            count: 0,
            max_us: 0,
        }
    }
}

impl Sketch {
    /// Adds one value. Counts saturate at `u32::MAX`; values past 71 min are kept as 71 min.
    pub fn record(&mut self, d: Duration) {
        let us = u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        let b = bucket_of(us);
        self.counts[b] = self.counts[b].saturating_add(1);
        self.count = self.count.saturating_add(1);
        self.max_us = self.max_us.max(us);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Sketch) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a = a.saturating_add(b);
        }
        self.count = self.count.saturating_add(other.count);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        u64::from(self.count)
    }

    /// The largest value recorded (exact); `None` when empty.
    pub fn max(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_micros(u64::from(self.max_us)))
    }

    /// The `q`-quantile (0 ≤ q ≤ 1; 0.99 is p99): the geometric middle of the bucket that
    /// holds the value of rank ⌈q·n⌉, never above the maximum. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let b = self.quantile_bucket(q)?;
        Some(Duration::from_micros(u64::from(representative_us(
            b,
            self.max_us,
        ))))
    }

    /// The bucket of the `q`-quantile.
    pub(super) fn quantile_bucket(&self, q: f64) -> Option<usize> {
        if self.count == 0 {
            return None;
        }
        let total: u64 = self.counts.iter().map(|c| u64::from(*c)).sum();
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(i);
            }
        }
        Some(SKETCH_BUCKETS - 1)
    }
}

/// The bucket of a value in µs.
fn bucket_of(us: u32) -> usize {
    let v = f64::from(us);
    if v < SKETCH_MIN_US {
        return 0;
    }
    let k = (2.0 * (v / SKETCH_MIN_US).log2()).floor() as usize;
    (k + 1).min(SKETCH_BUCKETS - 1)
}

/// Lower edge of regular bucket `b` (1..=34) in µs.
fn lower_us(b: usize) -> f64 {
    SKETCH_MIN_US * 2f64.powf((b - 1) as f64 / 2.0)
}

/// The value a quantile in bucket `b` reports, capped at the exact maximum `max_us`.
pub(super) fn representative_us(b: usize, max_us: u32) -> u32 {
    let v = match b {
        0 => SKETCH_MIN_US,
        b if b == SKETCH_BUCKETS - 1 => f64::from(max_us),
        // Geometric middle of [√2^(b-1), √2^b) · 100 µs.
        b => lower_us(b) * 2f64.powf(0.25),
    };
    (v.round() as u32).min(max_us)
}
