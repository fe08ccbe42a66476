//! Reloads without restart (DESIGN §14), end to end: the real binary against a real
//! `redis-server`, its configuration file rewritten and reloaded by `POST /-/reload` and by
//! SIGHUP, judged by `/metrics`, `/healthz`, the HTTP answers and the log.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::names::*;
use support::*;

const RELOAD_OK: &str = "redis_canary_config_last_reload_successful";
const RELOAD_AT: &str = "redis_canary_config_last_reload_success_timestamp_seconds";

/// A config with `targets` (name, extra TOML lines), all on `url`, and `head` lines at the
/// top.
fn config(head: &str, url: &str, targets: &[(&str, &str)]) -> String {
    let mut text = format!(
        r#"{head}
[defaults]
rate = 20
keys = 100
connect_timeout = "500ms"
response_timeout = "300ms"
connect_probe_interval = "0s"
"#
    );
    for (name, extra) in targets {
        text.push_str(&format!(
            "\n[[targets]]\nname = \"{name}\"\nurl = \"{url}\"\n{extra}\n"
        ));
    }
    text
}

/// Every `operations_total` series of `target`, by (op, outcome).
fn operations(m: &Scrape, target: &str) -> BTreeMap<(String, String), f64> {
    m.series
        .iter()
        .filter(|(n, l, _)| n == OPS && l.get("target").map(String::as_str) == Some(target))
        .map(|(_, l, v)| ((l["op"].clone(), l["outcome"].clone()), *v))
        .collect()
}

/// Whether any series of the scrape carries `target="NAME"`.
fn has_series(m: &Scrape, target: &str) -> bool {
    m.series
        .iter()
        .any(|(_, l, _)| l.get("target").map(String::as_str) == Some(target))
}

fn post_reload(canary: &Canary) -> (u16, String) {
    http_request(canary.port, "POST", "/-/reload")
        .unwrap_or_else(|e| panic!("POST /-/reload failed: {e}\n{}", canary.log()))
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_reload_keeps_unchanged_counters_starts_added_restarts_changed_and_removes_gone_targets() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let canary = Canary::start(&config(
        "instance = \"test\"",
        &url,
        &[("keep", ""), ("edit", ""), ("gone", "")],
    ));
    for name in ["keep", "edit", "gone"] {
        canary.wait_ok(name, "write", 20.0);
    }
    let started = canary.metrics();
    assert_eq!(started.sum(RELOAD_OK, &[]), 1.0);
    assert_eq!(started.sum("redis_canary_shard_targets", &[]), 3.0);
    let first_load = started.sum(RELOAD_AT, &[]);
    assert!(first_load > 1.0e9, "{first_load}");
    let before = operations(&started, "keep");
    assert!(before.values().sum::<f64>() >= 40.0, "{before:?}");

    let mut c = redis.client();
    assert_eq!(
        c.call(&["EXISTS", "redis-canary:test:gone:0"]).unwrap(),
        "1"
    );

    // `keep` as it was, `edit` at another rate, `gone` gone (its keys deleted: cleanup),
    // `new` new, and an instance change that only a restart applies (it must not count as
    // a change of every target).
    std::fs::write(
        canary.path("canary.toml"),
        config(
            "instance = \"renamed\"\ncleanup = true",
            &url,
            &[("keep", ""), ("edit", "rate = 10"), ("new", "")],
        ),
    )
    .unwrap();
    let (status, body) = post_reload(&canary);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("added 1 (new), removed 1 (gone), changed 1 (edit), unchanged 1"),
        "{body}"
    );
    assert!(
        body.contains("needs a restart to apply: instance"),
        "{body}"
    );
    assert!(
        canary
            .log()
            .contains("these keys changed and need a restart"),
        "{}",
        canary.log()
    );

    canary.wait_ok("new", "write", 5.0);
    canary.wait_ok("new", "read", 5.0);
    // The changed target runs again, under its new settings.
    canary.wait_ok("edit", "write", 3.0);
    let after = canary.metrics();
    assert!(
        !has_series(&after, "gone"),
        "series of a removed target remain"
    );
    // Never lower: the unchanged target kept its counters (a restart would reset them).
    let kept = operations(&after, "keep");
    assert_eq!(
        kept.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    for (series, was) in &before {
        assert!(
            kept[series] >= *was,
            "{series:?} went from {was} to {}",
            kept[series]
        );
    }
    // And it kept measuring through the reload, without a gap or a failure.
    canary.wait_ok(
        "keep",
        "write",
        before[&("write".to_string(), "ok".to_string())] + 10.0,
    );
    let m = canary.metrics();
    assert_eq!(m.sum("redis_canary_skipped_ticks_total", &[t("keep")]), 0.0);
    assert_eq!(m.sum(OPS, &[t("keep"), ("outcome", "failed")]), 0.0);
    assert_eq!(m.sum(DISRUPTIONS, &[t("keep")]), 0.0);
    assert_eq!(after.sum(RELOAD_OK, &[]), 1.0);
    assert!(after.sum(RELOAD_AT, &[]) > first_load);
    assert_eq!(after.sum("redis_canary_shard_targets", &[]), 3.0);
    assert_eq!(
        c.call(&["EXISTS", "redis-canary:test:gone:0"]).unwrap(),
        "0"
    );
    // The keys of the new target use the running instance, not the renamed one.
    wait_until("a key of the new target", Duration::from_secs(10), || {
        c.call(&["EXISTS", "redis-canary:test:new:0"]).as_deref() == Ok("1")
    });
    assert_eq!(
        c.call(&["EXISTS", "redis-canary:renamed:new:0"]).unwrap(),
        "0"
    );

    // /healthz counts the loops of the running targets: 3 targets × (write, read).
    let (status, health) = canary.get("/healthz");
    assert_eq!(status, 200, "{health}");
    // The status page lists exactly the running targets.
    let (_, page) = canary.get("/");
    assert!(page.contains(">new<") && page.contains(">keep<") && !page.contains(">gone<"));

    // Nothing changed: a second reload is a no-op.
    let (status, body) = post_reload(&canary);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("added 0, removed 0, changed 0, unchanged 3"),
        "{body}"
    );

    // Only POST reloads.
    let (status, _) = canary.get("/-/reload");
    assert_eq!(status, 405);
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_broken_configuration_is_rejected_whole_and_the_old_one_keeps_measuring() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let mut canary = Canary::start(&config("instance = \"test\"", &url, &[("a", "")]));
    canary.wait_ok("a", "write", 10.0);

    // Four problems, two of them about passwords that must never be shown.
    let broken = config(
        "instance = \"test\"",
        &url,
        &[
            ("a", "rate = \"fast\""),
            (
                "b",
                "password = \"swordfish\"\npassword_env = \"PW\"\nkeyz = 5",
            ),
        ],
    ) + "\n[[targets]]\nname = \"c\"\nurl = \"redis://:hunter2@h:99999\"\n";
    std::fs::write(canary.path("canary.toml"), &broken).unwrap();
    send_signal(canary.pid(), "HUP");
    wait_until(
        "config_last_reload_successful 0",
        Duration::from_secs(10),
        || canary.metrics().sum(RELOAD_OK, &[]) == 0.0,
    );
    let log = canary.log();
    let line = log
        .lines()
        .find(|l| l.contains("configuration reload rejected"))
        .unwrap_or_else(|| panic!("no rejection line:\n{log}"));
    assert!(line.contains("targets[0].rate"), "{line}");
    assert!(line.contains("targets[1].keyz"), "{line}");
    assert!(line.contains("targets[1].password"), "{line}");
    assert!(
        line.contains(r#"targets[2].url = "redis://:****@h:99999""#),
        "{line}"
    );
    assert!(
        !log.contains("hunter2") && !log.contains("swordfish"),
        "{log}"
    );
    assert!(canary.is_running());
    // Still measuring the old configuration, and only it.
    let m = canary.metrics();
    let ok = m.sum(OPS, &[t("a"), ("op", "write"), ("outcome", "ok")]);
    canary.wait_ok("a", "write", ok + 10.0);
    assert!(!has_series(&canary.metrics(), "b"));

    let (status, body) = post_reload(&canary);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("targets[0].rate"), "{body}");
    assert!(body.contains("targets[1].keyz"), "{body}");
    assert!(body.contains("more than one password source"), "{body}");
    assert!(
        body.contains(r#"targets[2].url = "redis://:****@h:99999""#),
        "{body}"
    );
    assert!(
        !body.contains("hunter2") && !body.contains("swordfish"),
        "{body}"
    );
    assert_eq!(canary.metrics().sum(RELOAD_OK, &[]), 0.0);

    // Fixed: applied, by SIGHUP again.
    std::fs::write(
        canary.path("canary.toml"),
        config("instance = \"test\"", &url, &[("a", ""), ("b", "")]),
    )
    .unwrap();
    send_signal(canary.pid(), "HUP");
    wait_until(
        "config_last_reload_successful 1",
        Duration::from_secs(10),
        || canary.metrics().sum(RELOAD_OK, &[]) == 1.0,
    );
    canary.wait_ok("b", "write", 5.0);
    let m = canary.metrics();
    assert!(m.sum(OPS, &[t("a"), ("op", "write"), ("outcome", "ok")]) >= ok + 10.0);
    assert_eq!(m.sum(DISRUPTIONS, &[t("a")]), 0.0);
    let (status, _) = canary.get("/healthz");
    assert_eq!(status, 200);

    let (status, took) = canary.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_soak_does_not_reload_and_says_so() {
    /// The soak process, killed and reaped however the test ends.
    struct Soak(CanaryProcess);
    impl Drop for Soak {
        fn drop(&mut self) {
            let _ = self.0.child.kill();
            let _ = self.0.child.wait();
        }
    }
    let dead = DeadAddr::new();
    let toml = one_target_config("a", &dead.url(), "");
    let mut soak = Soak(spawn_canary(
        &["soak", "--duration", "60s"],
        &toml,
        &[],
        &[],
    ));
    let (status, body) = http_request(soak.0.addr.port(), "POST", "/-/reload").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not available"), "{body}");
    send_signal(soak.0.child.id(), "HUP");
    let log = soak.0.dir.path().join("canary.log");
    wait_until("the SIGHUP log line", Duration::from_secs(5), || {
        read(&log).contains("SIGHUP received and ignored")
    });
    assert!(
        soak.0.child.try_wait().unwrap().is_none(),
        "SIGHUP ended the soak"
    );
}
