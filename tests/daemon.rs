//! The daemon end to end: the real binary against real `redis-server` processes, with faults
//! injected for real (SIGKILL, SIGSTOP, wrong passwords, replicas, OOM), judged only by what
//! `/metrics`, the status page and the logs say.

mod support;

use std::time::{Duration, Instant};

use support::names::*;
use support::*;

/// Asserts that target `name` has no read with any of `verdicts`.
fn assert_no_reads(m: &Scrape, name: &str, verdicts: &[&str]) {
    for verdict in verdicts {
        assert_eq!(
            m.sum(READS, &[t(name), ("verdict", verdict)]),
            0.0,
            "{verdict} reads of {name}"
        );
    }
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_healthy_target_reads_all_fresh_and_retries_nothing() {
    let redis = RedisServer::start(&[]);
    let canary = Canary::start(&one_target_config("a", &redis.url(), ""));
    wait_until("60 fresh reads", Duration::from_secs(20), || {
        canary.metrics().sum(READS, &[t("a"), ("verdict", "fresh")]) >= 60.0
    });
    let m = canary.metrics();
    assert!(m.sum(OPS, &[t("a"), ("op", "write"), ("outcome", "ok")]) >= 60.0);
    assert_eq!(m.sum(OPS, &[t("a"), ("outcome", "recovered")]), 0.0);
    assert_eq!(m.sum(OPS, &[t("a"), ("outcome", "failed")]), 0.0);
    assert_eq!(m.sum("redis_canary_retries_total", &[t("a")]), 0.0);
    assert_no_reads(&m, "a", &["lagging", "stale", "missing", "corrupt"]);
    assert_eq!(
        m.sum(ATTEMPTS, &[t("a")]),
        m.sum(ATTEMPTS, &[t("a"), ("result", "ok")])
    );
    assert_eq!(m.sum(DISRUPTIONS, &[t("a")]), 0.0);
    assert_eq!(m.sum(DISRUPTED, &[t("a")]), 0.0);
    // Two loops of two connections each: at most four connects, all successful.
    let connects = m.sum(CONNECTS, &[t("a"), ("kind", "pool")]);
    assert!((1.0..=4.0).contains(&connects), "{connects} connects");
    assert_eq!(connects, m.sum(CONNECTS, &[t("a"), ("result", "ok")]));
    // Who answered: the validated identity of this very server.
    let run_id = redis.client().call(&["INFO", "server"]).unwrap();
    let run_id = run_id
        .lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap()
        .trim()
        .to_string();
    let backends = m.labels("redis_canary_backend_info", &[t("a")]);
    assert_eq!(backends.len(), 1, "{backends:?}");
    assert_eq!(backends[0]["run_id"], run_id);
    assert_eq!(backends[0]["role"], "master");
    assert_eq!(backends[0]["addr"], format!("127.0.0.1:{}", redis.port));
    // The values really are in Redis, under the target's prefix, with a TTL.
    let mut c = redis.client();
    let ttl: i64 = c
        .call(&["PTTL", "redis-canary:test:a:0"])
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "PTTL {ttl}");
    let name = c.call(&["CLIENT", "LIST"]).unwrap();
    assert!(name.contains("name=redis-canary/test/a"), "{name}");
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_killed_and_restarted_server_is_exactly_one_episode_as_long_as_the_outage() {
    let mut redis = RedisServer::start(&[]);
    // With the default probe: a failing probe must not hold the episode open for a whole
    // probe interval after the server is back.
    let canary = Canary::start(&one_target_config(
        "a",
        &redis.url(),
        r#"connect_probe_interval = "1s""#,
    ));
    canary.wait_ok("a", "write", 10.0);
    let killed = Instant::now();
    redis.kill();
    wait_until("the canary to notice", Duration::from_secs(5), || {
        canary.metrics().sum(DISRUPTED, &[t("a")]) == 1.0
    });
    // The outage itself: two seconds with the port closed.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(killed.elapsed()));
    redis.restart();
    let outage = killed.elapsed().as_secs_f64();
    wait_until("the episode to end", Duration::from_secs(10), || {
        canary.metrics().sum(EPISODE_COUNT, &[t("a")]) == 1.0
    });
    let m = canary.metrics();
    assert_eq!(m.sum(DISRUPTIONS, &[t("a")]), 1.0);
    assert_eq!(m.sum(DISRUPTED, &[t("a")]), 0.0);
    let measured = m.sum(EPISODE_SUM, &[t("a")]);
    eprintln!("outage {outage:.3} s, episode {measured:.3} s");
    // The pending set fills within a second; a sentinel attempt on each skipped tick sees
    // the recovery within a tick instead of at the next backoff step.
    assert!(
        measured > outage - 0.5 && measured < outage + 0.3,
        "episode {measured:.3} s for an outage of {outage:.3} s"
    );
    let rescued_or_lost = m.sum(OPS, &[t("a"), ("outcome", "recovered")])
        + m.sum(OPS, &[t("a"), ("outcome", "failed")]);
    assert!(rescued_or_lost > 0.0);
    assert!(m.sum(CONNECTS, &[t("a"), ("result", "refused")]) > 0.0);
    // The server restarted empty: reads of keys written before are data loss.
    wait_until("missing reads to show", Duration::from_secs(10), || {
        canary
            .metrics()
            .sum(READS, &[t("a"), ("verdict", "missing")])
            > 0.0
    });
    assert!(
        canary
            .metrics()
            .sum("redis_canary_backend_restarts_total", &[t("a")])
            >= 1.0
    );
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_stalled_server_times_out_and_makes_one_episode_of_about_the_stall() {
    let mut redis = RedisServer::start(&[]);
    let canary = Canary::start(&one_target_config("a", &redis.url(), ""));
    canary.wait_ok("a", "read", 10.0);
    let stalled = Instant::now();
    redis.pause();
    // The fault: three seconds of SIGSTOP.
    std::thread::sleep(Duration::from_secs(3));
    redis.resume();
    let stall = stalled.elapsed().as_secs_f64();
    wait_until("the episode to end", Duration::from_secs(15), || {
        canary.metrics().sum(EPISODE_COUNT, &[t("a")]) == 1.0
    });
    let m = canary.metrics();
    assert_eq!(m.sum(DISRUPTIONS, &[t("a")]), 1.0);
    assert!(m.sum(ATTEMPTS, &[t("a"), ("result", "timeout")]) > 0.0);
    let measured = m.sum(EPISODE_SUM, &[t("a")]);
    eprintln!("stall {stall:.3} s, episode {measured:.3} s");
    assert!(
        measured > stall - 0.6 && measured < stall + 0.5,
        "episode {measured:.3} s for a stall of {stall:.3} s"
    );
    // Queued writes executed after SIGCONT are fine: nothing stale or corrupt.
    assert_eq!(m.sum(READS, &[t("a"), ("verdict", "corrupt")]), 0.0);
    assert_eq!(m.sum(READS, &[t("a"), ("verdict", "stale")]), 0.0);
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_wrong_password_is_an_auth_failure_until_the_file_is_fixed_without_a_restart() {
    let redis = RedisServer::start(&["--requirepass", "s3cret-right"]);
    let dir = tempfile::tempdir().unwrap();
    let pw_file = dir.path().join("password");
    std::fs::write(&pw_file, "s3cret-wrong\n").unwrap();
    let canary = Canary::start(&one_target_config(
        "a",
        &redis.url(),
        &format!("password_file = {:?}", pw_file.display().to_string()),
    ));
    wait_until("auth failures", Duration::from_secs(10), || {
        let m = canary.metrics();
        m.sum(CONNECTS, &[t("a"), ("result", "auth")]) > 0.0 && m.sum(DISRUPTED, &[t("a")]) == 1.0
    });
    std::fs::write(&pw_file, "s3cret-right\n").unwrap();
    wait_until(
        "recovery with the fixed password",
        Duration::from_secs(15),
        || {
            let m = canary.metrics();
            m.sum(DISRUPTED, &[t("a")]) == 0.0
                && m.sum(READS, &[t("a"), ("verdict", "fresh")]) > 5.0
        },
    );
    let m = canary.metrics();
    assert_eq!(m.sum(DISRUPTIONS, &[t("a")]), 1.0);
    assert!(m.sum(OPS, &[t("a"), ("op", "write"), ("outcome", "ok")]) > 0.0);
    let (_, page) = canary.get("/");
    for text in [&m.text, &page, &canary.log()] {
        assert!(!text.contains("s3cret"), "a password leaked:\n{text}");
    }
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn writes_to_a_replica_are_readonly_while_its_reads_succeed() {
    let master = RedisServer::start(&[]);
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    let canary = Canary::start(&one_target_config(
        "replica",
        &replica.url(),
        r#"retry = { max_retries = 1, base = "10ms", max = "50ms" }"#,
    ));
    wait_until(
        "failed writes and good reads",
        Duration::from_secs(15),
        || {
            let m = canary.metrics();
            m.sum(OPS, &[t("replica"), ("op", "write"), ("outcome", "failed")]) >= 3.0
                && m.sum(OPS, &[t("replica"), ("op", "read"), ("outcome", "ok")]) >= 10.0
        },
    );
    let m = canary.metrics();
    let write_attempts = m.sum(ATTEMPTS, &[t("replica"), ("op", "write")]);
    assert_eq!(
        write_attempts,
        m.sum(
            ATTEMPTS,
            &[t("replica"), ("op", "write"), ("result", "readonly")]
        )
    );
    assert_eq!(
        m.sum(OPS, &[t("replica"), ("op", "write"), ("outcome", "ok")]),
        0.0
    );
    assert_eq!(
        m.sum(OPS, &[t("replica"), ("op", "read"), ("outcome", "failed")]),
        0.0
    );
    // READONLY drops the connection, so retries reconnect: more connects than slots.
    assert!(m.sum(CONNECTS, &[t("replica"), ("result", "ok")]) > 4.0);
    let roles = m.labels("redis_canary_backend_info", &[t("replica")]);
    assert!(roles.iter().any(|l| l["role"] == "replica"), "{roles:?}");
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn out_of_memory_is_final_and_never_retried() {
    let redis = RedisServer::start(&["--maxmemory-policy", "noeviction"]);
    let canary = Canary::start(&one_target_config("a", &redis.url(), ""));
    canary.wait_ok("a", "write", 5.0);
    redis
        .client()
        .call(&["CONFIG", "SET", "maxmemory", "1"])
        .unwrap();
    wait_until("OOM failures", Duration::from_secs(10), || {
        canary
            .metrics()
            .sum(OPS, &[t("a"), ("op", "write"), ("outcome", "failed")])
            >= 5.0
    });
    let m = canary.metrics();
    let failed = m.sum(OPS, &[t("a"), ("op", "write"), ("outcome", "failed")]);
    let oom = m.sum(ATTEMPTS, &[t("a"), ("op", "write"), ("result", "oom")]);
    // One attempt per failed operation: oom is the server's final word.
    assert!(
        oom >= failed && oom <= failed + 2.0,
        "oom {oom} failed {failed}"
    );
    assert_eq!(
        m.sum("redis_canary_retries_total", &[t("a"), ("op", "write")]),
        0.0
    );
    // Reads are not writes: they keep working against a full server.
    assert_eq!(
        m.sum(OPS, &[t("a"), ("op", "read"), ("outcome", "failed")]),
        0.0
    );
}

#[test]
fn a_target_down_at_start_is_disrupted_and_the_daemon_keeps_serving() {
    // Bound, never listening: connects are refused and nothing else can take the port.
    let dead = DeadAddr::new();
    let mut canary = Canary::start(&one_target_config("down", &dead.url(), ""));
    wait_until("the episode to show", Duration::from_secs(5), || {
        canary.metrics().sum(DISRUPTED, &[t("down")]) == 1.0
    });
    let m = canary.metrics();
    assert_eq!(m.sum(DISRUPTIONS, &[t("down")]), 1.0);
    assert!(m.sum(CONNECTS, &[t("down"), ("result", "refused")]) > 0.0);
    // No attempt was made on an open connection: connect failures count in connects only.
    assert_eq!(m.sum(ATTEMPTS, &[t("down")]), 0.0);
    assert_eq!(canary.get("/healthz").0, 200);
    let (status, page) = canary.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains("DISRUPTED") && page.contains("refused"),
        "{page}"
    );
    let (status, _) = canary.terminate(Duration::from_secs(6));
    assert!(status.success());
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn protocol_3_authenticates_with_hello_identifies_the_backend_and_reads_fresh() {
    let redis = RedisServer::start(&["--requirepass", "resp3-pw"]);
    let canary = Canary::start(&one_target_config(
        "r3",
        &redis.url(),
        "password = \"resp3-pw\"\nprotocol = 3\nconnect_probe_interval = \"200ms\"",
    ));
    canary.wait_ok("r3", "read", 20.0);
    let m = canary.metrics();
    assert!(m.sum(READS, &[t("r3"), ("verdict", "fresh")]) >= 20.0);
    assert_no_reads(&m, "r3", &["stale", "missing", "corrupt"]);
    assert_eq!(m.sum(ATTEMPTS, &[t("r3"), ("result", "error")]), 0.0);
    // INFO and CLIENT INFO arrive as RESP3 verbatim strings: the backend is still known.
    assert_eq!(m.sum(BACKEND_INFO, &[t("r3"), ("role", "master")]), 1.0);
    assert_eq!(m.sum(BACKEND_INFO, &[t("r3"), ("version", "unknown")]), 0.0);
    assert_eq!(m.sum(BACKEND_INFO, &[t("r3"), ("run_id", "unknown")]), 0.0);
}

#[test]
fn connects_to_a_target_that_refuses_are_paced_not_hammered() {
    let dead = DeadAddr::new();
    let canary = Canary::start(&one_target_config("down", &dead.url(), ""));
    wait_until("the episode to show", Duration::from_secs(5), || {
        canary.metrics().sum(DISRUPTED, &[t("down")]) == 1.0
    });
    let before = canary.metrics().sum(CONNECTS, &[t("down")]);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3)); // a measuring window, not synchronisation
    let after = canary.metrics().sum(CONNECTS, &[t("down")]);
    let per_second = (after - before) / started.elapsed().as_secs_f64();
    // Unpaced, the write and read pools and the probe reconnected about 65 times a second;
    // paced, each pool connects at most 5 times a second and the failing probe 10.
    assert!(per_second <= 25.0, "{per_second:.1} connects/s");
    assert!(
        per_second >= 5.0,
        "still trying: {per_second:.1} connects/s"
    );
}

#[test]
fn sighup_reloads_with_a_log_line_and_the_daemon_keeps_running() {
    let dead = DeadAddr::new();
    let mut canary = Canary::start(&one_target_config("a", &dead.url(), ""));
    let pid = canary.pid().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    // A reload (tests/reload.rs has the details), never the end of the daemon.
    wait_until("the reload log line", Duration::from_secs(5), || {
        canary.log().contains("configuration reloaded")
    });
    assert!(canary.is_running(), "SIGHUP ended the daemon");
    assert_eq!(canary.get("/healthz").0, 200);
    let (status, _) = canary.terminate(Duration::from_secs(6));
    assert!(status.success());
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn metrics_answer_and_sigterm_exits_quickly_while_the_target_hangs() {
    let mut redis = RedisServer::start(&[]);
    let mut canary = Canary::start(&one_target_config("a", &redis.url(), ""));
    canary.wait_ok("a", "write", 5.0);
    redis.pause();
    wait_until("timeouts while hanging", Duration::from_secs(5), || {
        canary
            .metrics()
            .sum(ATTEMPTS, &[t("a"), ("result", "timeout")])
            > 0.0
    });
    let scraped = Instant::now();
    let m = canary.metrics();
    assert!(scraped.elapsed() < Duration::from_secs(2));
    assert_eq!(m.sum(DISRUPTED, &[t("a")]), 1.0);
    let (status, took) = canary.terminate(Duration::from_secs(6));
    assert!(status.success(), "exit status {status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    redis.resume();
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn http_serves_both_exposition_formats_health_and_404() {
    let redis = RedisServer::start(&[]);
    let canary = Canary::start(&one_target_config("a", &redis.url(), ""));
    let (status, om) = http_get(canary.port, "/metrics", None).unwrap();
    assert_eq!(status, 200);
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE redis_canary_operations counter"));
    let (_, prom) = http_get(canary.port, "/metrics", Some("text/plain")).unwrap();
    assert!(prom.contains("# TYPE redis_canary_operations_total counter"));
    assert!(!prom.contains("# EOF"));
    assert_eq!(canary.get("/healthz").0, 200);
    assert_eq!(canary.get("/readyz").0, 200);
    let (status, _) = canary.get("/metrics/../secret");
    assert_eq!(status, 404);
    assert_eq!(canary.get("/nope").0, 404);
    // A 404 path never becomes a label.
    assert!(!canary.metrics().text.contains("nope"));
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn passwords_never_appear_in_logs_metrics_status_or_check_config() {
    let redis = RedisServer::start(&["--requirepass", "hunter2-url-pw"]);
    let url = format!("redis://:hunter2-url-pw@127.0.0.1:{}", redis.port);
    let config = one_target_config("a", &url, "");
    let canary = Canary::start(&config);
    wait_until(
        "fresh reads with the URL password",
        Duration::from_secs(10),
        || canary.metrics().sum(READS, &[t("a"), ("verdict", "fresh")]) >= 5.0,
    );
    let (_, page) = canary.get("/");
    let m = canary.metrics();
    let check = std::process::Command::new(canary_bin())
        .args(["check-config", "--config"])
        .arg(canary.path("canary.toml"))
        .output()
        .unwrap();
    assert!(check.status.success());
    let check = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.contains("****"), "{check}");
    for text in [&m.text, &page, &canary.log(), &check] {
        assert!(!text.contains("hunter2"), "a password leaked:\n{text}");
    }
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_server_loading_its_dataset_answers_loading_and_the_canary_retries_through_it() {
    let redis = RedisServer::start(&["--enable-debug-command", "yes"]);
    let mut c = redis.client();
    // A dataset that takes a while to load: 50k keys at 20 µs each, a few seconds of LOADING.
    c.call(&["DEBUG", "POPULATE", "50000", "filler", "32"])
        .unwrap();
    c.call(&["CONFIG", "SET", "key-load-delay", "20"]).unwrap();
    // Answer other clients (with -LOADING) every few keys, not every 2 MB.
    c.call(&[
        "CONFIG",
        "SET",
        "loading-process-events-interval-bytes",
        "1024",
    ])
    .unwrap();
    let canary = Canary::start(&one_target_config("a", &redis.url(), ""));
    canary.wait_ok("a", "write", 5.0);
    // DEBUG RELOAD saves, then loads the snapshot again; its own client waits meanwhile.
    let reload = std::thread::spawn(move || c.call(&["DEBUG", "RELOAD"]));
    wait_until("LOADING replies", Duration::from_secs(10), || {
        canary
            .metrics()
            .sum(ATTEMPTS, &[t("a"), ("result", "loading")])
            > 0.0
    });
    // Its reply may outlast the helper client's read timeout; the metrics tell the rest.
    let _ = reload.join();
    wait_until("the episode to end", Duration::from_secs(15), || {
        let m = canary.metrics();
        m.sum(EPISODE_COUNT, &[t("a")]) == 1.0 && m.sum(DISRUPTED, &[t("a")]) == 0.0
    });
    let m = canary.metrics();
    assert_eq!(m.sum(DISRUPTIONS, &[t("a")]), 1.0);
    // Operations caught by the load were retried: rescued, or failed if it outlasted the
    // retries (its length varies with the machine).
    let affected = m.sum(OPS, &[t("a"), ("outcome", "recovered")])
        + m.sum(OPS, &[t("a"), ("outcome", "failed")]);
    assert!(affected > 0.0);
    assert!(m.sum("redis_canary_retries_total", &[t("a")]) > 0.0);
    // The snapshot held every acknowledged write: nothing lost, nothing stale.
    assert_no_reads(&m, "a", &["stale", "missing", "corrupt"]);
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn episodes_are_logged_once_when_they_start_and_once_when_they_end_as_json() {
    let mut redis = RedisServer::start(&[]);
    let canary = Canary::start_with(
        &one_target_config("a", &redis.url(), ""),
        &["--log-format", "json"],
        &[],
    );
    canary.wait_ok("a", "write", 5.0);
    redis.pause();
    // The fault: one second of SIGSTOP.
    std::thread::sleep(Duration::from_secs(1));
    redis.resume();
    wait_until("the episode to end", Duration::from_secs(10), || {
        canary.metrics().sum(EPISODE_COUNT, &[t("a")]) == 1.0
    });
    let log = canary.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let with_message = |m: &str| {
        lines
            .iter()
            .filter(|l| l["message"] == m)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(with_message("disruption started").len(), 1, "{log}");
    let ended = with_message("disruption ended");
    assert_eq!(ended.len(), 1, "{log}");
    assert_eq!(ended[0]["target_name"], "a");
    let secs: f64 = ended[0]["duration_seconds"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 0.5 && secs < 3.0, "{secs}");
    assert!(ended[0]["results"].as_str().unwrap().contains("timeout="));
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn the_fresh_connection_probe_connects_identifies_and_verifies_a_settled_key() {
    let redis = RedisServer::start(&[]);
    let canary = Canary::start(&one_target_config(
        "a",
        &redis.url(),
        r#"connect_probe_interval = "100ms""#,
    ));
    wait_until("verified probe reads", Duration::from_secs(15), || {
        canary
            .metrics()
            .sum(READS, &[t("a"), ("op", "probe"), ("verdict", "fresh")])
            >= 5.0
    });
    let m = canary.metrics();
    let probes = m.sum(OPS, &[t("a"), ("op", "probe")]);
    assert_eq!(
        probes,
        m.sum(OPS, &[t("a"), ("op", "probe"), ("outcome", "ok")])
    );
    // One new connection per probe: the pool's connections are not reused for it.
    let connects = m.sum(CONNECTS, &[t("a"), ("kind", "probe"), ("result", "ok")]);
    assert!(
        connects >= probes && connects <= probes + 2.0,
        "{connects} connects, {probes} probes"
    );
    assert_eq!(
        m.sum("redis_canary_retries_total", &[t("a"), ("op", "probe")]),
        0.0
    );
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn replication_to_a_direct_node_is_measured_and_a_dead_node_is_down() {
    let master = RedisServer::start(&[]);
    let mut replica = RedisServer::start(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
    replica.wait_in_sync();
    let node = format!("127.0.0.1:{}", replica.port);
    let canary = Canary::start(&one_target_config(
        "a",
        &master.url(),
        &format!(r#"nodes = ["{}"]"#, replica.url()),
    ));
    let node_labels = [t("a"), ("node", node.as_str())];
    // The node's series exist from startup, before anything happened.
    let first = canary.metrics();
    assert_eq!(
        first.count("redis_canary_replication_timeouts_total", &node_labels),
        1
    );
    assert_eq!(first.count("redis_canary_node_up", &node_labels), 1);
    wait_until("replication delays", Duration::from_secs(20), || {
        canary
            .metrics()
            .sum("redis_canary_replication_delay_seconds_count", &node_labels)
            >= 3.0
    });
    let m = canary.metrics();
    assert_eq!(m.sum("redis_canary_node_up", &node_labels), 1.0);
    assert_eq!(
        m.sum("redis_canary_replication_timeouts_total", &node_labels),
        0.0
    );
    // The first rounds may wait for the replica's initial sync; after that, loopback
    // replication is sub-millisecond, far below 50 ms.
    wait_until("fast replication samples", Duration::from_secs(20), || {
        let m = canary.metrics();
        let fast = m.sum(
            "redis_canary_replication_delay_seconds_bucket",
            &[t("a"), ("node", node.as_str()), ("le", "0.05")],
        );
        fast >= 3.0
    });
    replica.kill();
    wait_until("the node to be down", Duration::from_secs(10), || {
        canary.metrics().sum("redis_canary_node_up", &node_labels) == 0.0
    });
    // A replica going away is not a client-visible disruption of the master target.
    assert_eq!(canary.metrics().sum(DISRUPTIONS, &[t("a")]), 0.0);
}

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_openssl)),
    ignore = "needs redis-server, openssl (not installed: scripts/install-deps)"
)]
fn tls_targets_verify_the_server_against_the_configured_ca() {
    let (redis, ca) = RedisServer::start_tls();
    let url = format!("rediss://localhost:{}", redis.port);
    let config = format!(
        r#"{}
tls = {{ ca_file = {:?} }}

[[targets]]
name = "unverified"
url = "{url}"
"#,
        one_target_config("verified", &url, ""),
        ca.display().to_string()
    );
    let canary = Canary::start(&config);
    wait_until("fresh reads over TLS", Duration::from_secs(15), || {
        let m = canary.metrics();
        m.sum(READS, &[t("verified"), ("verdict", "fresh")]) >= 5.0
            && m.sum(CONNECTS, &[t("unverified"), ("result", "error")]) >= 1.0
    });
    let m = canary.metrics();
    assert_eq!(m.sum(OPS, &[t("verified"), ("outcome", "failed")]), 0.0);
    // Without the CA the certificate is not trusted: no connection, no data.
    assert_eq!(m.sum(CONNECTS, &[t("unverified"), ("result", "ok")]), 0.0);
    assert_eq!(m.sum(DISRUPTED, &[t("unverified")]), 1.0);
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn cleanup_deletes_the_canarys_own_keys_on_sigterm_and_nothing_else() {
    let redis = RedisServer::start(&[]);
    let mut c = redis.client();
    c.call(&["SET", "someone-elses-key", "precious"]).unwrap();
    let config = format!(
        "cleanup = true\n{}",
        one_target_config("a", &redis.url(), "")
    );
    let mut canary = Canary::start(&config);
    wait_until("some keys written", Duration::from_secs(10), || {
        canary
            .metrics()
            .sum(OPS, &[t("a"), ("op", "write"), ("outcome", "ok")])
            >= 20.0
    });
    let (status, _) = canary.terminate(Duration::from_secs(6));
    assert!(status.success());
    assert_eq!(
        c.call(&["DBSIZE"]).unwrap(),
        "1",
        "only the foreign key remains"
    );
    assert_eq!(c.call(&["GET", "someone-elses-key"]).unwrap(), "precious");
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn ticks_are_skipped_and_counted_only_when_the_pending_set_is_full() {
    let mut redis = RedisServer::start(&[]);
    // One connection and no retries: the pending set holds a single operation.
    let canary = Canary::start(&one_target_config(
        "a",
        &redis.url(),
        "connections = 1\nretry = { max_retries = 0 }",
    ));
    canary.wait_ok("a", "write", 10.0);
    assert_eq!(
        canary
            .metrics()
            .sum("redis_canary_skipped_ticks_total", &[t("a")]),
        0.0
    );
    redis.pause();
    // Each attempt now waits out the 300 ms response timeout while ticks come every 50 ms.
    wait_until(
        "skipped ticks and a timed-out write",
        Duration::from_secs(10),
        || {
            let m = canary.metrics();
            m.sum(
                "redis_canary_skipped_ticks_total",
                &[t("a"), ("op", "write")],
            ) >= 5.0
                && m.sum(OPS, &[t("a"), ("op", "write"), ("outcome", "failed")]) >= 1.0
        },
    );
    redis.resume();
    let m = canary.metrics();
    // The one pending write timed out once and was not retried.
    assert_eq!(m.sum("redis_canary_retries_total", &[t("a")]), 0.0);
    assert!(m.sum(ATTEMPTS, &[t("a"), ("op", "write"), ("result", "timeout")]) >= 1.0);
}
