//! Unit tests of the history: sketch quantiles and merges, interval packing, rings,
//! episodes over 24 h, and the memory budget.

use super::*;

const S: u64 = 1_000_000;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn quantiles_are_within_the_bucket_error() {
    let mut s = Sketch::default();
    // 1..=1000 ms: p50 = 500 ms, p99 = 990 ms, max = 1 s.
    for i in 1..=1000 {
        s.record(ms(i));
    }
    let within = |got: Duration, want: f64| {
        let r = got.as_secs_f64() / want;
        assert!((0.84..=1.19).contains(&r), "{got:?} vs {want}");
    };
    within(s.quantile(0.5).unwrap(), 0.5);
    within(s.quantile(0.99).unwrap(), 0.99);
    assert_eq!(s.max(), Some(ms(1000)));
    assert!(s.quantile(1.0).unwrap() <= ms(1000));
    assert_eq!(s.count(), 1000);
    assert_eq!(Sketch::default().quantile(0.5), None);
}

#[test]
fn a_sketch_of_one_value_reports_about_that_value() {
    for v in [150u64, 1_000, 42_000, 2_500_000, 9_000_000] {
        let mut s = Sketch::default();
        s.record(Duration::from_micros(v));
        let q = s.quantile(0.5).unwrap().as_micros() as f64;
        assert!(q <= v as f64 && q >= v as f64 / 1.42, "{v}: {q}");
    }
    let mut tiny = Sketch::default();
    tiny.record(Duration::from_micros(20));
    assert_eq!(tiny.quantile(0.5), Some(Duration::from_micros(20)));
    let mut huge = Sketch::default();
    huge.record(Duration::from_secs(60));
    assert_eq!(huge.quantile(0.99), Some(Duration::from_secs(60)));
}

#[test]
fn merged_sketches_equal_one_sketch_of_everything() {
    let (mut a, mut b, mut all) = (Sketch::default(), Sketch::default(), Sketch::default());
    for i in 0..100 {
        let d = Duration::from_micros(50 + i * 997);
        if i % 3 == 0 { &mut a } else { &mut b }.record(d);
        all.record(d);
    }
    a.merge(&b);
    assert_eq!(a, all);
}

#[test]
fn p99_sees_the_slow_tail() {
    let mut i = Interval::default();
    for _ in 0..980 {
        i.operation(Outcome::Ok, ms(1));
    }
    for _ in 0..20 {
        i.operation(Outcome::Failed, ms(2000));
    }
    let p = i.point();
    assert!(p.p50().unwrap() < ms(2), "{:?}", p.p50());
    assert!(p.p99().unwrap() > ms(1500), "{:?}", p.p99());
    assert_eq!(p.max(), Some(ms(2000)));
    assert_eq!((p.ok(), p.failed(), p.scheduled()), (980, 20, 1000));
}

#[test]
fn large_counts_pack_with_one_scale_and_keep_their_ratio() {
    let i = Interval {
        ok: 1_000_000,
        failed: 10_000,
        bad: 1,
        ..Interval::default()
    };
    let p = i.point();
    assert!(!p.is_exact());
    let avail = p.good() as f64 / p.scheduled() as f64;
    assert!((avail - 1_000_000.0 / 1_010_000.0).abs() < 1e-4, "{avail}");
    assert_eq!(p.bad(), 1 << 4, "a non-zero count stays non-zero");
    let small = Interval {
        ok: 65_535,
        ..Interval::default()
    }
    .point();
    assert!(small.is_exact());
    assert_eq!(small.ok(), 65_535);
}

#[test]
fn the_fine_ring_wraps_and_keeps_the_last_three_minutes() {
    let mut h = History::new();
    for sec in 0..1000u64 {
        h.operation(sec * S + 1, Outcome::Ok, ms(sec % 7 + 1));
    }
    let now = 1000 * S;
    let fine = h.fine(now, 600 * S);
    // 180 closed seconds held, plus the open one.
    assert_eq!(fine.len(), FINE_SLOTS + 1);
    assert_eq!(fine[0].0, (1000 - FINE_SLOTS as u64) * S);
    assert!(fine.windows(2).all(|w| w[1].0 == w[0].0 + S));
    assert!(fine[..FINE_SLOTS].iter().all(|(_, p)| p.ok() == 1));
    assert_eq!(fine[FINE_SLOTS].1.ok(), 0, "the open second is empty");
}

#[test]
fn quiet_seconds_are_empty_points_not_missing_ones() {
    let mut h = History::new();
    h.operation(S, Outcome::Ok, ms(1));
    h.operation(5 * S, Outcome::Ok, ms(1));
    let fine = h.fine(5 * S, 10 * S);
    let counts: Vec<u64> = fine.iter().map(|(_, p)| p.ok()).collect();
    assert_eq!(counts, [0, 1, 0, 0, 0, 1]);
}

#[test]
fn coarse_intervals_aggregate_their_seconds() {
    let mut h = History::new();
    // Seconds 0..10: 100 ok ops of 1 ms; second 3 also one of 3 s, failed.
    for sec in 0..10 {
        for k in 0..10 {
            h.operation(sec * S + k * 1000, Outcome::Ok, ms(1));
        }
    }
    h.operation(3 * S + 500, Outcome::Failed, ms(3000));
    h.skipped(4 * S);
    h.verdict(5 * S, Verdict::Missing);
    h.verdict(5 * S, Verdict::Fresh);
    let coarse = h.coarse(25 * S, 3600 * S);
    assert_eq!(coarse.len(), 3, "two closed and the open one");
    let p = coarse[0].1;
    assert_eq!((p.ok(), p.failed(), p.skipped()), (100, 1, 1));
    assert_eq!((p.fresh(), p.bad()), (1, 1));
    assert_eq!(p.max(), Some(ms(3000)));
    assert!(p.p50().unwrap() <= ms(2));
    assert_eq!(coarse[1].1.scheduled(), 0);
    let a = h.availability(25 * S, 3600 * S).unwrap();
    assert!((a - 100.0 / 102.0).abs() < 1e-9, "{a}");
    // The coarse ring holds an hour.
    for k in 0..400u64 {
        h.operation(100 * S + k * 10 * S, Outcome::Ok, ms(1));
    }
    let now = 100 * S + 4000 * S;
    assert_eq!(h.coarse(now, 7200 * S).len(), COARSE_SLOTS + 1);
}

fn ended(start: u64, end: u64) -> Ended {
    let mut results = [0; RESULTS];
    results[2] = 7; // refused
    results[1] = 3; // timeout
    results[15] = 1; // error
    Ended {
        start_us: start,
        end_us: end,
        results,
    }
}

#[test]
fn an_episode_marks_its_intervals_disrupted_and_is_listed() {
    let mut h = History::new();
    for sec in 0..12 {
        h.operation(sec * S, Outcome::Ok, ms(1));
    }
    // Started at 12.5 s (seen at 13.2 s), ended at 15.1 s.
    h.failure(
        13 * S + 200_000,
        Some(12 * S + 500_000),
        ResultKind::Timeout,
    );
    assert!(h.episode_open());
    let open = h.episodes(14 * S);
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].end_us(), None);
    assert_eq!(
        open[0].results().collect::<Vec<_>>(),
        [(ResultKind::Timeout, 1)]
    );
    h.operation(15 * S, Outcome::Ok, ms(1));
    h.episode_ended(&ended(12 * S + 500_000, 15 * S + 100_000));
    assert!(!h.episode_open());
    h.operation(17 * S, Outcome::Ok, ms(1));
    let fine = h.fine(17 * S, 10 * S);
    let disrupted: Vec<u64> = fine
        .iter()
        .filter(|(_, p)| p.disrupted())
        .map(|(t, _)| t / S)
        .collect();
    assert_eq!(disrupted, [12, 13, 14, 15]);
    let eps = h.episodes(20 * S);
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].length_us(0), 2_600_000);
    assert_eq!(
        eps[0].results().collect::<Vec<_>>(),
        [
            (ResultKind::Refused, 7),
            (ResultKind::Timeout, 3),
            (ResultKind::Error, 1)
        ]
    );
    assert_eq!(eps[0].failures(), 11);
    assert_eq!(eps[0].other_failures(), 0);
    assert!(h.coarse(20 * S, 60 * S)[1].1.disrupted());
}

#[test]
fn episodes_are_capped_and_age_out_after_a_day() {
    let mut h = History::new();
    for k in 0..100u64 {
        h.episode_ended(&ended(k * 1000 * S, k * 1000 * S + S));
    }
    assert_eq!(h.episodes_dropped(), 100 - MAX_EPISODES as u64);
    let now = 99 * 1000 * S + 2 * S;
    let eps = h.episodes(now);
    assert_eq!(eps.len(), MAX_EPISODES);
    assert_eq!(eps[0].start_us(), 36 * 1000 * S, "the oldest went first");
    // 60,000 s later, only those that ended within the last 24 h are shown.
    let later = h.episodes(now + 60_000 * S);
    assert_eq!(later.len(), 27);
    assert!(
        later
            .iter()
            .all(|e| e.end_us().unwrap() + EPISODE_WINDOW_US >= now + 60_000 * S)
    );
}

#[test]
fn the_history_of_a_target_fits_in_16_kib() {
    let mut h = History::new();
    let before = h.memory_bytes();
    for k in 0..5000u64 {
        h.operation(k * 777_777, Outcome::Ok, ms(k % 50));
        h.episode_ended(&ended(k * S, k * S + 10));
    }
    assert_eq!(h.memory_bytes(), before, "allocated once");
    assert_eq!(std::mem::size_of::<Point>(), 24);
    assert_eq!(std::mem::size_of::<EpisodeMark>(), 40);
    assert_eq!(std::mem::size_of::<Sketch>(), 152);
    assert!(before <= BUDGET_BYTES, "{before} bytes");
    println!("history: {before} bytes per target");
}
