//! Unit tests of the metric families: closed series at zero, names, units and labels as
//! DESIGN §6 has them, the lean profile, removal, and the Prometheus text rewrite.

use super::*;

#[test]
fn every_closed_series_of_a_target_exists_at_zero() {
    let m = Metrics::new();
    let _t = m.target("a");
    let text = m.encode_openmetrics();
    for line in [
        r#"redis_canary_operations_total{target="a",op="write",outcome="recovered"} 0"#,
        r#"redis_canary_attempts_total{target="a",op="read",result="masterdown"} 0"#,
        r#"redis_canary_reads_total{target="a",op="probe",verdict="corrupt"} 0"#,
        r#"redis_canary_connects_total{target="a",kind="node",result="auth"} 0"#,
        r#"redis_canary_skipped_ticks_total{target="a",op="write"} 0"#,
        r#"redis_canary_disrupted{target="a"} 0"#,
        r#"redis_canary_operation_duration_seconds_bucket{le="0.05",target="a",op="read"} 0"#,
        r#"redis_canary_disruption_duration_seconds_bucket{le="3600.0",target="a"} 0"#,
        r#"redis_canary_build_info{version=""#,
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
    assert!(!text.contains(r#"op="write",verdict"#));
}

#[test]
fn the_sentinel_series_of_a_sentinel_target_exist_at_zero() {
    let m = Metrics::new();
    let s = m.sentinel("c", &["10.0.0.1:26379".into(), "10.0.0.2:26379".into()]);
    s.up[1].set(1);
    let text = m.encode_openmetrics();
    for line in [
        r#"redis_canary_sentinel_up{target="c",sentinel="10.0.0.1:26379"} 0"#,
        r#"redis_canary_sentinel_up{target="c",sentinel="10.0.0.2:26379"} 1"#,
        r#"redis_canary_sentinel_master_switches_total{target="c"} 0"#,
        r#"redis_canary_sentinel_masters{target="c"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line}\n{text}");
    }
}

#[test]
fn discovery_errors_exist_at_zero_and_count() {
    let m = Metrics::new();
    let errors = m.discovery("d");
    let line = |n: u64| format!(r#"redis_canary_discovery_errors_total{{target="d"}} {n}"#);
    assert!(m.encode_openmetrics().contains(&line(0)));
    errors.inc();
    assert!(m.encode_openmetrics().contains(&line(1)));
}

#[test]
fn handles_update_the_exported_series() {
    let m = Metrics::new();
    let t = m.target("a");
    t.op(Op::Read).outcome(Outcome::Recovered).inc();
    t.op(Op::Read).attempt(ResultKind::Timeout).inc_by(2);
    t.kind(Kind::Pool).connect(ResultKind::Refused).inc();
    let text = m.encode_openmetrics();
    assert!(
        text.contains(
            r#"redis_canary_operations_total{target="a",op="read",outcome="recovered"} 1"#
        )
    );
    assert!(
        text.contains(r#"redis_canary_attempts_total{target="a",op="read",result="timeout"} 2"#)
    );
    assert!(
        text.contains(r#"redis_canary_connects_total{target="a",kind="pool",result="refused"} 1"#)
    );
}

#[test]
fn prometheus_text_names_counters_with_total_and_drops_openmetrics_only_lines() {
    let m = Metrics::new();
    let _t = m.target("a");
    let text = to_prometheus_text(&m.encode_openmetrics());
    assert!(text.contains("# TYPE redis_canary_operations_total counter\n"));
    assert!(text.contains("# TYPE redis_canary_build_info gauge\n"));
    assert!(!text.contains("# EOF"));
    assert!(!text.contains("# UNIT"));
}

#[test]
fn removing_a_target_removes_every_one_of_its_series_and_no_other() {
    let m = Metrics::new();
    let a = m.target("a");
    let _b = m.target("b");
    let _s = m.sentinel("a", &["10.0.0.1:26379".into()]);
    a.node_up
        .get_or_create(&NodeLabels {
            target: "a".into(),
            node: "n:1".into(),
        })
        .set(1);
    let id = crate::backend::Identity {
        run_id: "r1".into(),
        role: "master".into(),
        version: "7.2.0".into(),
        addr: "h:1".into(),
    };
    a.backend_info
        .get_or_create(&BackendLabels::of("a", &id))
        .set(1);
    let before = m.encode_openmetrics();
    assert!(before.contains(r#"target="a""#));
    m.remove_target(
        "a",
        &OpenSeries {
            nodes: vec!["n:1".into()],
            backends: vec![id],
            sentinels: vec!["10.0.0.1:26379".into()],
        },
    );
    let after = m.encode_openmetrics();
    assert!(!after.contains(r#"target="a""#), "{after}");
    let b_lines = |text: &str| text.lines().filter(|l| l.contains(r#"target="b""#)).count();
    assert_eq!(b_lines(&after), b_lines(&before));
    assert!(b_lines(&after) > 100);
}

#[test]
fn buckets_are_increasing_and_include_the_default_slo() {
    for profile in [MetricsProfile::Full, MetricsProfile::Lean] {
        for set in [profile.latency_buckets(), profile.disruption_buckets()] {
            for w in set.windows(2) {
                assert!(w[0] < w[1], "{profile:?}");
            }
        }
        // The default p99_operation SLO and the replication-delay alert (stale_grace).
        assert!(profile.latency_buckets().contains(&0.05), "{profile:?}");
        assert!(profile.latency_buckets().contains(&1.0), "{profile:?}");
        assert!(profile.disruption_buckets().contains(&10.0), "{profile:?}");
    }
    // Lean edges are full edges: `le` selectors read the same under both profiles.
    for le in LEAN_LATENCY_BUCKETS {
        assert!(LATENCY_BUCKETS.contains(&le), "{le}");
    }
    for le in LEAN_DISRUPTION_BUCKETS {
        assert!(DISRUPTION_BUCKETS.contains(&le), "{le}");
    }
}

/// One target with a direct node and a sentinel, every kind of series touched once, the
/// exposition under `profile`.
/// The exposition of one standalone target "a" and, to cover every family the alerts
/// and the dashboard use, one cluster target "c".
fn exposition(profile: MetricsProfile) -> String {
    let m = Metrics::with_profile(profile);
    let t = m.target("a");
    let _cluster = m.cluster.target("c");
    let shards =
        crate::topology::cluster::book::ShardBook::new("c", &m.cluster, crate::clock::Clock::new());
    shards.label("0-16383");
    let node = NodeLabels {
        target: "a".into(),
        node: "10.0.0.9:6379".into(),
    };
    t.node_up.get_or_create(&node).set(1);
    t.replication_delay.get_or_create(&node).observe(0.01);
    t.replication_timeouts.get_or_create(&node).inc();
    t.backend_info
        .get_or_create(&BackendLabels {
            target: "a".into(),
            run_id: "0".repeat(40),
            role: "master".into(),
            version: "7.0.15".into(),
            addr: "10.0.0.9:6379".into(),
        })
        .set(1);
    t.disruption_duration.observe(3.0);
    t.op(Op::Read).attempt_duration.observe(0.001, None, None);
    t.kind(Kind::Pool).connect_duration.observe(0.001);
    let _s = m.sentinel("a", &["10.0.0.1:26379".into()]);
    m.encode_openmetrics()
}

/// Sample names (`name{...} value` or `name value`) of an exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// `redis_canary_*` names in a rules file or a dashboard.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("redis_canary_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// `le="..."` values a rules file or a dashboard selects.
fn le_values_in(text: &str) -> BTreeSet<String> {
    text.split("le=")
        .skip(1)
        .filter_map(|s| s.trim_start_matches('\\').strip_prefix('"'))
        .filter_map(|s| s.split(['"', '\\']).next())
        .map(str::to_string)
        .collect()
}

use std::collections::BTreeSet;

const RULES: &str = include_str!("../../alerts/redis-canary.rules.yml");
const DASHBOARD: &str = include_str!("../../grafana/redis-canary.json");

#[test]
fn the_lean_profile_exports_about_half_the_series_of_the_full_one() {
    let full = exposition(MetricsProfile::Full);
    let lean = exposition(MetricsProfile::Lean);
    // Per standalone target: the cluster target's lines, and every HELP/TYPE line, left out.
    let lines = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with('#') && !l.contains("target=\"c\""))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let (full, lean) = (lines(&full), lines(&lean));
    let series = |t: &str| t.lines().count();
    let (f, l) = (series(&full), series(&lean));
    assert!(l * 100 <= f * 60, "lean {l} series, full {f}");
    assert!(
        lean.len() * 100 <= full.len() * 60,
        "{} vs {} bytes",
        lean.len(),
        full.len()
    );
    // What lean drops: the attempt and connect latency histograms, nothing else.
    let dropped: BTreeSet<String> = sample_names(&full)
        .difference(&sample_names(&lean))
        .cloned()
        .collect();
    let expected: BTreeSet<String> = ["attempt", "connect"]
        .iter()
        .flat_map(|h| {
            ["bucket", "sum", "count"].map(|s| format!("redis_canary_{h}_duration_seconds_{s}"))
        })
        .collect();
    assert_eq!(dropped, expected);
    assert!(lean.contains(
        r#"redis_canary_operation_duration_seconds_bucket{le="0.05",target="a",op="write"} 0"#
    ));
    assert!(!lean.contains(r#"le="0.0001""#));
}

#[test]
fn the_lean_profile_exports_every_metric_and_bucket_the_shipped_alerts_use() {
    let used = names_in(RULES);
    assert!(used.len() >= 10, "the rules name metrics: {used:?}");
    for profile in [MetricsProfile::Full, MetricsProfile::Lean] {
        let text = exposition(profile);
        let exported = sample_names(&text);
        for name in &used {
            assert!(exported.contains(name), "{profile:?} lacks {name}");
        }
        let les = le_values_in(RULES);
        assert!(les.contains("10.0"), "{les:?}");
        for le in les {
            assert!(
                text.contains(&format!(r#"le="{le}""#)),
                "{profile:?} lacks le={le}"
            );
        }
    }
}

#[test]
fn under_lean_the_dashboard_loses_only_its_attempt_and_connect_latency_panels() {
    let lean = sample_names(&exposition(MetricsProfile::Lean));
    let missing: BTreeSet<String> = names_in(DASHBOARD)
        .into_iter()
        .filter(|n| !lean.contains(n) && !lean.iter().any(|e| e.starts_with(n.as_str())))
        .collect();
    assert_eq!(
        missing,
        BTreeSet::from([
            "redis_canary_attempt_duration_seconds_bucket".to_string(),
            "redis_canary_connect_duration_seconds_bucket".to_string(),
        ])
    );
    for le in le_values_in(DASHBOARD) {
        assert!(
            LEAN_LATENCY_BUCKETS
                .iter()
                .any(|b| format!("{b}") == le || format!("{b:?}") == le),
            "{le}"
        );
    }
}
