//! Capped exponential backoff with jitter (DESIGN §2.3): the delay before retry `n`
//! (0-based) is `min(max, base × (2^n + U[0,1)))`, the policy of the seed experiment.

use std::time::Duration;

use crate::config::RetryPolicy;

/// The delay before retry `n`, given a jitter sample `u` in `[0, 1)`.
pub fn backoff(policy: &RetryPolicy, n: u32, u: f64) -> Duration {
    // 2^n overflows nothing in f64 for any n we accept; min() caps it at `max` anyway.
    let factor = 2f64.powi(n.min(1023) as i32) + u.clamp(0.0, 1.0);
    let secs = policy.base.as_secs_f64() * factor;
    if !secs.is_finite() || secs >= policy.max.as_secs_f64() {
        policy.max
    } else {
        Duration::from_secs_f64(secs)
    }
}

/// A jitter sample from the thread-local generator.
pub fn jitter() -> f64 {
    rand::random::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }

    #[test]
    fn delays_double_within_their_jitter_band() {
        let p = policy();
        for n in 0..5u32 {
            let low = backoff(&p, n, 0.0);
            let high = backoff(&p, n, 0.999_999);
            let expected_low = Duration::from_millis(100 * (1 << n));
            assert_eq!(low, expected_low, "retry {n}");
            assert!(high > low && high < expected_low + Duration::from_millis(100));
        }
    }

    #[test]
    fn delays_are_capped_at_max_even_for_huge_retry_counts() {
        let p = policy();
        assert_eq!(backoff(&p, 7, 0.5), Duration::from_secs(10));
        assert_eq!(backoff(&p, u32::MAX, 0.5), Duration::from_secs(10));
    }

    #[test]
    fn the_default_policy_waits_about_three_seconds_over_five_retries() {
        let p = policy();
        let total: Duration = (0..5).map(|n| backoff(&p, n, 0.0)).sum();
        assert_eq!(total, Duration::from_millis(3100));
        let worst: Duration = (0..5).map(|n| backoff(&p, n, 0.999_999)).sum();
        assert!(worst < Duration::from_millis(3600));
    }

    #[test]
    fn jitter_is_in_the_unit_interval() {
        for _ in 0..1000 {
            let u = jitter();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
