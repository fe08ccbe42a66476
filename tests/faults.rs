//! The fault matrix (DESIGN §1, issue 3): real Redis topologies behind the project's
//! role-checking HAProxy, behind a LoadBalancer-like round robin, or behind a userspace
//! delaying/blackholing proxy; real faults (SIGKILL, SIGSTOP, restarts empty or from an old
//! snapshot, FLUSHALL, demotion, failover, password rotation, proxy restart, latency,
//! partition); judged only by what the real binary exports on `/metrics` and writes in its
//! soak report. Each test prints what it injected and what the canary measured
//! (`cargo nextest run --test faults --no-capture`); docs/faults.md collects the numbers.

mod support;

use std::time::{Duration, Instant};

use support::names::*;
use support::topology::*;
use support::*;

const RESULTS: [&str; 12] = [
    "ok",
    "timeout",
    "refused",
    "reset",
    "auth",
    "readonly",
    "loading",
    "busy",
    "oom",
    "masterdown",
    "tryagain",
    "error",
];
const VERDICTS: [&str; 5] = ["fresh", "lagging", "stale", "missing", "corrupt"];

/// A canary config: fast defaults (20 writes and 20 reads a second, 100 keys, short
/// timeouts, no probe unless a target asks for one), each `key = value` line of `defaults`
/// replacing or adding to them, then the targets.
fn config(defaults: &str, targets: &[String]) -> String {
    let mut lines: Vec<(String, String)> = [
        ("rate", "20"),
        ("keys", "100"),
        ("connect_timeout", "\"500ms\""),
        ("response_timeout", "\"300ms\""),
        ("connect_probe_interval", "\"0s\""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for line in defaults.lines().filter(|l| !l.trim().is_empty()) {
        let (k, v) = line.split_once('=').expect("key = value");
        let (k, v) = (k.trim().to_string(), v.trim().to_string());
        match lines.iter_mut().find(|(key, _)| *key == k) {
            Some(entry) => entry.1 = v,
            None => lines.push((k, v)),
        }
    }
    let defaults: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    format!(
        "instance = \"faults\"\n[defaults]\n{defaults}{}",
        targets.concat()
    )
}

/// One `[[targets]]` table reading the topology's password file; `extra` is appended.
fn target(name: &str, url: &str, topo: &Topology, extra: &str) -> String {
    format!(
        r#"
[[targets]]
name = "{name}"
url = "{url}"
password_file = {:?}
{extra}
"#,
        topo.password_file().display().to_string()
    )
}

/// The topology's node URLs as a TOML array, for a target's `nodes` key.
fn nodes_list(topo: &Topology) -> String {
    let nodes: Vec<String> = topo
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.url()))
        .collect();
    format!("[{}]", nodes.join(", "))
}

/// A canary with one target, `direct`, on node 0 (`extra` appended to its table), once it
/// has read 20 values fresh.
fn direct_to_node_0(topo: &Topology, extra: &str) -> Canary {
    let canary = Canary::start(&config(
        "",
        &[target("direct", &topo.nodes[0].url(), topo, extra)],
    ));
    wait_fresh(&canary, "direct", 20.0);
    canary
}

/// Anything whose `/metrics` can be scraped: the daemon or a running soak.
trait Scraper {
    fn scrape(&self) -> Scrape;
}

impl Scraper for Canary {
    fn scrape(&self) -> Scrape {
        self.metrics()
    }
}

impl Scraper for SoakRun {
    fn scrape(&self) -> Scrape {
        self.metrics()
    }
}

/// Waits until target `name` has at least `n` fresh reads (of any op).
fn wait_fresh(s: &impl Scraper, name: &str, n: f64) {
    wait_until(
        &format!("{n} fresh reads of {name}"),
        Duration::from_secs(20),
        || s.scrape().sum(READS, &[t(name), ("verdict", "fresh")]) >= n,
    );
}

/// Waits for `more` fresh reads of the target than it has now.
fn wait_more_fresh(s: &impl Scraper, name: &str, more: f64) {
    let now = s.scrape().sum(READS, &[t(name), ("verdict", "fresh")]);
    wait_fresh(s, name, now + more);
}

/// Waits until the target's episodes have all ended and there are `n` of them.
fn wait_episodes_ended(s: &impl Scraper, name: &str, n: f64, within: Duration) {
    wait_until(&format!("{n} ended episode(s) of {name}"), within, || {
        let m = s.scrape();
        m.sum(EPISODE_COUNT, &[t(name)]) >= n && m.sum(DISRUPTED, &[t(name)]) == 0.0
    });
}

/// Non-zero failed attempts and connects of a target, by result, for the record.
fn failures(m: &Scrape, name: &str) -> String {
    let mut out = Vec::new();
    for r in RESULTS.iter().filter(|r| **r != "ok") {
        let a = m.sum(ATTEMPTS, &[t(name), ("result", r)]);
        let c = m.sum(CONNECTS, &[t(name), ("result", r)]);
        if a > 0.0 || c > 0.0 {
            out.push(format!("{r}: {a} attempts + {c} connects"));
        }
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}

/// Outcomes and verdicts of a target, for the record.
fn summary(m: &Scrape, name: &str) -> String {
    let mut out = Vec::new();
    for op in ["write", "read", "probe"] {
        let o = |outcome| m.sum(OPS, &[t(name), ("op", op), ("outcome", outcome)]);
        out.push(format!(
            "{op} ok/recovered/failed/skipped {}/{}/{}/{}",
            o("ok"),
            o("recovered"),
            o("failed"),
            m.sum("redis_canary_skipped_ticks_total", &[t(name), ("op", op)])
        ));
    }
    let verdicts: Vec<String> = VERDICTS
        .iter()
        .map(|v| format!("{v}={}", m.sum(READS, &[t(name), ("verdict", v)])))
        .collect();
    format!("{}; reads {}", out.join(", "), verdicts.join(" "))
}

fn assert_no_bad_reads(m: &Scrape, name: &str, verdicts: &[&str]) {
    for v in verdicts {
        assert_eq!(
            m.sum(READS, &[t(name), ("verdict", v)]),
            0.0,
            "{v} reads of {name}: {}",
            summary(m, name)
        );
    }
}

/// `reads_by_backend` of a soak report: the verdict counts of `run_id`, and the sum of
/// `verdict` over every other backend.
fn by_backend(target: &serde_json::Value, run_id: &str, verdict: &str) -> (u64, u64) {
    let map = target["reads_by_backend"]
        .as_object()
        .expect("reads_by_backend");
    let mine = map
        .get(run_id)
        .and_then(|v| v[verdict].as_u64())
        .unwrap_or(0);
    let others = map
        .iter()
        .filter(|(k, _)| k.as_str() != run_id)
        .map(|(_, v)| v[verdict].as_u64().unwrap_or(0))
        .sum();
    (mine, others)
}

/// Restarts node 2 with `restart` while the master holds back the full sync for 5 s (as by
/// default), so the node serves what it restarted with meanwhile; returns its new run_id and
/// how long it was out of sync. Asserts the fault fitted inside the soak.
fn restart_node_2_unsynced(
    topo: &mut Topology,
    soak: &SoakRun,
    restart: impl FnOnce(&mut Node),
) -> (String, f64) {
    topo.nodes[0].call(&["CONFIG", "SET", "repl-diskless-sync-delay", "5"]);
    let restarted = Instant::now();
    restart(&mut topo.nodes[2]);
    let run_id = topo.nodes[2].run_id();
    wait_until("node 2 in sync", Duration::from_secs(15), || {
        topo.nodes[2].in_sync()
    });
    let window = secs(restarted.elapsed());
    topo.nodes[0].call(&["CONFIG", "SET", "repl-diskless-sync-delay", "0"]);
    assert!(
        soak.remaining() > Duration::from_secs(1),
        "the fault did not fit in the soak"
    );
    (run_id, window)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// --- the master --------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_haproxy)),
    ignore = "needs redis-server, haproxy (not installed: scripts/install-deps)"
)]
fn a_master_killed_behind_haproxy_is_one_episode_of_resets_and_loses_nothing_with_aof() {
    let mut topo = Topology::replicated(3, &["--appendonly", "yes", "--appendfsync", "always"]);
    let proxy = topo.haproxy("master");
    let canary = Canary::start(&config("", &[target("ha", &proxy.url(), &topo, "")]));
    wait_fresh(&canary, "ha", 20.0);
    let old_run_id = topo.nodes[0].run_id();

    let killed = Instant::now();
    topo.nodes[0].kill();
    wait_until("the canary to notice", Duration::from_secs(5), || {
        canary.metrics().sum(DISRUPTED, &[t("ha")]) == 1.0
    });
    // The fault: two seconds without a master.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(killed.elapsed()));
    topo.nodes[0].start();
    let outage = secs(killed.elapsed());
    proxy.wait_status(&["UP", "DOWN", "DOWN"], Duration::from_secs(10));
    // When HAProxy's next check took the node back (polled every 50 ms).
    let proxy_up = secs(killed.elapsed());
    wait_episodes_ended(&canary, "ha", 1.0, Duration::from_secs(15));
    wait_more_fresh(&canary, "ha", 40.0);

    let m = canary.metrics();
    let episode = m.sum(EPISODE_SUM, &[t("ha")]);
    eprintln!(
        "master killed behind haproxy: outage {outage:.3} s, back in haproxy after {proxy_up:.3} s, \
         episode {episode:.3} s; failures: {}; {}",
        failures(&m, "ha"),
        summary(&m, "ha")
    );
    assert_eq!(m.sum(DISRUPTIONS, &[t("ha")]), 1.0);
    // HAProxy takes the node back at its next check, up to `inter 1s` after the restart;
    // the canary sees it at the next retry of a pending operation (backoff steps of up to
    // 1.7 s: while every pending slot waits for a retry, new ticks are skipped).
    assert!(
        episode > outage - 0.3 && episode < proxy_up + 2.5,
        "episode {episode:.3} s for an outage of {outage:.3} s (proxy up after {proxy_up:.3} s)"
    );
    // Through HAProxy a dead backend is a connection accepted and then closed: reset, never
    // refused (the proxy's port is always open).
    let resets = m.sum(ATTEMPTS, &[t("ha"), ("result", "reset")])
        + m.sum(CONNECTS, &[t("ha"), ("result", "reset")]);
    assert!(resets > 0.0, "{}", failures(&m, "ha"));
    assert_eq!(m.sum(ATTEMPTS, &[t("ha"), ("result", "refused")]), 0.0);
    assert_eq!(m.sum(CONNECTS, &[t("ha"), ("result", "refused")]), 0.0);
    assert!(m.sum(OPS, &[t("ha"), ("outcome", "recovered")]) > 0.0);
    // The same address answered with a new run_id: one restart behind the proxy.
    assert_eq!(m.sum(RESTARTS, &[t("ha")]), 1.0);
    let new_run_id = topo.nodes[0].run_id();
    assert_ne!(new_run_id, old_run_id);
    let backends = m.labels(BACKEND_INFO, &[t("ha"), ("run_id", &new_run_id)]);
    assert_eq!(backends.len(), 1, "{backends:?}");
    assert_eq!(backends[0]["role"], "master");
    assert_eq!(backends[0]["addr"], topo.nodes[0].addr());
    // appendfsync always: every acknowledged write survived the kill.
    assert_no_bad_reads(&m, "ha", &["stale", "missing", "corrupt"]);
}

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_haproxy)),
    ignore = "needs redis-server, haproxy (not installed: scripts/install-deps)"
)]
fn a_master_stalled_for_3_s_is_one_episode_of_3_s_directly_and_a_little_more_through_haproxy() {
    let mut topo = Topology::replicated(3, &[]);
    let proxy = topo.haproxy("master");
    let canary = Canary::start(&config(
        "",
        &[
            target("direct", &topo.nodes[0].url(), &topo, ""),
            target("ha", &proxy.url(), &topo, ""),
        ],
    ));
    wait_fresh(&canary, "direct", 20.0);
    wait_fresh(&canary, "ha", 20.0);

    let stalled = Instant::now();
    topo.nodes[0].pause();
    // The fault: three seconds of SIGSTOP.
    std::thread::sleep(Duration::from_secs(3));
    topo.nodes[0].resume();
    let stall = secs(stalled.elapsed());
    proxy.wait_status(&["UP", "DOWN", "DOWN"], Duration::from_secs(10));
    wait_episodes_ended(&canary, "direct", 1.0, Duration::from_secs(15));
    wait_episodes_ended(&canary, "ha", 1.0, Duration::from_secs(15));

    let m = canary.metrics();
    let direct = m.sum(EPISODE_SUM, &[t("direct")]);
    let ha = m.sum(EPISODE_SUM, &[t("ha")]);
    eprintln!(
        "master stalled: stall {stall:.3} s; direct episode {direct:.3} s ({:+.1} %), failures: {}; \
         {}; haproxy episode {ha:.3} s ({:+.1} %), failures: {}; {}",
        (direct / stall - 1.0) * 100.0,
        failures(&m, "direct"),
        summary(&m, "direct"),
        (ha / stall - 1.0) * 100.0,
        failures(&m, "ha"),
        summary(&m, "ha"),
    );
    assert_eq!(m.sum(DISRUPTIONS, &[t("direct")]), 1.0);
    assert_eq!(m.sum(DISRUPTIONS, &[t("ha")]), 1.0);
    assert!(
        (direct - stall).abs() <= 0.2 * stall,
        "direct episode {direct:.3} s for a stall of {stall:.3} s"
    );
    // HAProxy marks the stalled node down after `timeout check` and up again at its next
    // check after SIGCONT (up to `inter 1s` later); the canary sees it at the next retry of
    // a pending operation (backoff steps up to 1.7 s while new ticks are skipped).
    assert!(
        ha > stall - 0.3 && ha < stall + 3.0,
        "haproxy episode {ha:.3} s for a stall of {stall:.3} s"
    );
    // A stalled server answers nothing: timeouts, never refused.
    assert!(m.sum(ATTEMPTS, &[t("direct"), ("result", "timeout")]) > 0.0);
    assert_eq!(m.sum(CONNECTS, &[t("direct"), ("result", "refused")]), 0.0);
    assert_eq!(m.sum(ATTEMPTS, &[t("direct"), ("result", "reset")]), 0.0);
    for name in ["direct", "ha"] {
        assert_no_bad_reads(&m, name, &["stale", "missing", "corrupt"]);
    }
}

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_haproxy)),
    ignore = "needs redis-server, haproxy (not installed: scripts/install-deps)"
)]
fn a_replica_killed_behind_a_master_only_haproxy_is_a_node_down_and_nothing_for_clients() {
    let mut topo = Topology::replicated(3, &[]);
    let proxy = topo.haproxy("master");
    let canary = Canary::start(&config(
        "",
        &[target(
            "ha",
            &proxy.url(),
            &topo,
            &format!(
                "connect_probe_interval = \"250ms\"\nnodes = {}",
                nodes_list(&topo)
            ),
        )],
    ));
    let addrs: Vec<String> = topo.nodes.iter().map(Node::addr).collect();
    let node = |i: usize| [t("ha"), ("node", addrs[i].as_str())];
    wait_until(
        "replication measured on every node",
        Duration::from_secs(20),
        || {
            let m = canary.metrics();
            (0..3).all(|i| {
                m.sum(NODE_UP, &node(i)) == 1.0
                    && m.sum("redis_canary_replication_delay_seconds_count", &node(i)) >= 2.0
            })
        },
    );

    let killed = Instant::now();
    topo.nodes[1].kill();
    wait_until("node 1 to be down", Duration::from_secs(10), || {
        canary.metrics().sum(NODE_UP, &node(1)) == 0.0
    });
    let noticed = secs(killed.elapsed());
    // The fault lasts four seconds: long enough for any client-visible effect to show.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(killed.elapsed()));
    let m = canary.metrics();
    eprintln!(
        "replica killed behind a master-only haproxy: node_up went to 0 after {noticed:.3} s; \
         disruptions {}; failures: {}; {}",
        m.sum(DISRUPTIONS, &[t("ha")]),
        failures(&m, "ha"),
        summary(&m, "ha")
    );
    assert_eq!(m.sum(NODE_UP, &node(0)), 1.0);
    assert_eq!(m.sum(NODE_UP, &node(2)), 1.0);
    // Nothing at all for clients: no episode, no retry, no failure, no bad read.
    assert_eq!(m.sum(DISRUPTIONS, &[t("ha")]), 0.0);
    assert_eq!(m.sum(RETRIES, &[t("ha")]), 0.0);
    assert_eq!(m.sum(OPS, &[t("ha"), ("outcome", "recovered")]), 0.0);
    assert_eq!(m.sum(OPS, &[t("ha"), ("outcome", "failed")]), 0.0);
    assert!(m.sum(OPS, &[t("ha"), ("op", "probe"), ("outcome", "ok")]) > 0.0);
    assert_no_bad_reads(&m, "ha", &["stale", "missing", "corrupt"]);

    // Back (empty; it resyncs from the master): the node is up again and converges.
    topo.nodes[1].restart_empty();
    let delays = m.sum("redis_canary_replication_delay_seconds_count", &node(1));
    wait_until("node 1 up and converging", Duration::from_secs(15), || {
        let m = canary.metrics();
        m.sum(NODE_UP, &node(1)) == 1.0
            && m.sum("redis_canary_replication_delay_seconds_count", &node(1)) > delays
    });
    assert_eq!(canary.metrics().sum(DISRUPTIONS, &[t("ha")]), 0.0);
}

// --- round robin without health checks (soak, for per-backend attribution) ---------------

/// A soak through a round robin over a master and two replicas, with a probe every 100 ms
/// (each third probe lands on node 2) and 40 keys (each rewritten every 2 s).
fn round_robin_soak(topo: &Topology, rr: &Haproxy, extra: &str, length: Duration) -> SoakRun {
    SoakRun::start(
        &config(
            &format!("keys = 40\nconnect_probe_interval = \"100ms\"\n{extra}"),
            &[target("lb", &rr.url(), topo, "")],
        ),
        length,
    )
}

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_haproxy)),
    ignore = "needs redis-server, haproxy (not installed: scripts/install-deps)"
)]
fn a_replica_restarted_empty_behind_round_robin_serves_missing_reads_attributed_to_it() {
    let mut topo = Topology::replicated(3, &[]);
    let rr = topo.round_robin();
    let soak = round_robin_soak(&topo, &rr, "", Duration::from_secs(16));
    // Every key written, and its write settled (older than stale_grace).
    wait_fresh(&soak, "lb", 40.0);
    wait_until("all keys settled", Duration::from_secs(10), || {
        soak.started.elapsed() >= Duration::from_secs(4)
    });

    let (run_id, window) = restart_node_2_unsynced(&mut topo, &soak, Node::restart_empty);
    let m = soak.metrics();
    let r = soak.finish(Duration::from_secs(10));
    let lb = r.target("lb");
    let (mine, others) = by_backend(lb, &run_id, "missing");
    eprintln!(
        "replica restarted empty behind round robin: unsynced for {window:.3} s; probe reads {}; \
         missing reads served by the restarted node {mine}, by the others {others}; \
         reads {}; reads_by_backend {}; exit {:?}",
        VERDICTS
            .iter()
            .map(|v| format!(
                "{v}={}",
                m.sum(READS, &[t("lb"), ("op", "probe"), ("verdict", v)])
            ))
            .collect::<Vec<_>>()
            .join(" "),
        lb["reads"],
        lb["reads_by_backend"],
        r.status.code()
    );
    assert!(m.sum(READS, &[t("lb"), ("op", "probe"), ("verdict", "missing")]) > 0.0);
    assert!(mine > 0, "no missing read attributed to {run_id}");
    assert_eq!(
        others, 0,
        "missing reads attributed to a node that lost nothing"
    );
    assert_eq!(lb["reads"]["corrupt"], 0);
    assert_eq!(lb["reads"]["stale"], 0);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        r.failed_slos("lb")
            .contains(&"max_missing_reads".to_string())
    );
}

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_haproxy)),
    ignore = "needs redis-server, haproxy (not installed: scripts/install-deps)"
)]
fn a_replica_restarted_from_an_old_snapshot_behind_round_robin_serves_stale_reads_attributed_to_it()
{
    // A small backlog and big values: the snapshot's replication offset is long gone when
    // the node comes back, so it needs a full sync (5 s away) instead of a partial one.
    let mut topo = Topology::replicated(3, &["--repl-backlog-size", "16kb"]);
    let rr = topo.round_robin();
    let soak = round_robin_soak(&topo, &rr, "value_size = 2048", Duration::from_secs(18));
    wait_fresh(&soak, "lb", 40.0);
    wait_until("all keys written", Duration::from_secs(10), || {
        soak.started.elapsed() >= Duration::from_secs(3)
    });
    let snapshot = topo.nodes[2].save_snapshot();
    // Every key is rewritten (2 s) and that write settles (1 s) after the snapshot.
    std::thread::sleep(Duration::from_secs(4));

    let age = secs(snapshot.taken.elapsed());
    let (run_id, window) = restart_node_2_unsynced(&mut topo, &soak, |n| n.restart_from(&snapshot));
    let m = soak.metrics();
    let r = soak.finish(Duration::from_secs(10));
    let lb = r.target("lb");
    let (mine, others) = by_backend(lb, &run_id, "stale");
    eprintln!(
        "replica restarted from a {age:.1} s old snapshot behind round robin: unsynced for \
         {window:.3} s; probe stale reads {}; stale reads served by the restarted node {mine}, \
         by the others {others}; reads {}; reads_by_backend {}; exit {:?}",
        m.sum(READS, &[t("lb"), ("op", "probe"), ("verdict", "stale")]),
        lb["reads"],
        lb["reads_by_backend"],
        r.status.code()
    );
    assert!(mine > 0, "no stale read attributed to {run_id}");
    assert_eq!(
        others, 0,
        "stale reads attributed to a node that had fresh data"
    );
    assert!(m.sum(READS, &[t("lb"), ("op", "probe"), ("verdict", "stale")]) > 0.0);
    // The snapshot held every key: old values, never nil, never foreign.
    assert_eq!(lb["reads"]["missing"], 0);
    assert_eq!(lb["reads"]["corrupt"], 0);
    assert_eq!(r.status.code(), Some(1));
    assert!(r.failed_slos("lb").contains(&"max_stale_reads".to_string()));
}

// --- data ------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_haproxy)),
    ignore = "needs redis-server, haproxy (not installed: scripts/install-deps)"
)]
fn acknowledged_data_lost_by_flushall_is_missing_reads_without_any_error() {
    let topo = Topology::replicated(3, &[]);
    let proxy = topo.haproxy("master");
    let canary = Canary::start(&config(
        "keys = 40",
        &[target("ha", &proxy.url(), &topo, "")],
    ));
    wait_fresh(&canary, "ha", 40.0);
    // Every key written and settled: 40 keys at 20/s, plus stale_grace.
    std::thread::sleep(Duration::from_secs(2));

    let flushed = Instant::now();
    topo.nodes[0].call(&["FLUSHALL"]);
    wait_until("missing reads", Duration::from_secs(5), || {
        canary
            .metrics()
            .sum(READS, &[t("ha"), ("verdict", "missing")])
            > 0.0
    });
    let first = secs(flushed.elapsed());
    // Every key is rewritten within 2 s; after that nothing can be missing any more.
    std::thread::sleep(Duration::from_secs(3));
    let m1 = canary.metrics();
    let reads = |m: &Scrape| m.sum(READS, &[t("ha")]);
    let missing = |m: &Scrape| m.sum(READS, &[t("ha"), ("verdict", "missing")]);
    wait_until("40 more reads", Duration::from_secs(10), || {
        reads(&canary.metrics()) >= reads(&m1) + 40.0
    });
    let m2 = canary.metrics();
    eprintln!(
        "FLUSHALL on the master: first missing read {first:.3} s after it; {} missing reads \
         ({} after the keys were rewritten); failures: {}; {}",
        missing(&m1),
        missing(&m2) - missing(&m1),
        failures(&m2, "ha"),
        summary(&m2, "ha")
    );
    assert!(missing(&m1) > 0.0);
    assert_eq!(
        missing(&m2),
        missing(&m1),
        "missing reads after every key was rewritten"
    );
    // Silent data loss: not one error, retry or episode.
    assert_eq!(m2.sum(DISRUPTIONS, &[t("ha")]), 0.0);
    assert_eq!(m2.sum(RETRIES, &[t("ha")]), 0.0);
    assert_eq!(m2.sum(OPS, &[t("ha"), ("outcome", "failed")]), 0.0);
    assert_no_bad_reads(&m2, "ha", &["stale", "corrupt"]);
}

// --- roles -----------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn writes_to_a_demoted_master_are_readonly_while_its_reads_keep_working() {
    let mut topo = Topology::replicated(3, &[]);
    // The fresh-connection probe, every 500 ms, is what sees node 0 a master again: a pooled
    // connection opened while it was a replica keeps the identity it had then.
    let canary = direct_to_node_0(&topo, "connect_probe_interval = \"500ms\"");
    let run_id = topo.nodes[0].run_id();

    // The fault: node 0 follows node 1 for four seconds (longer than the 3.1 s retry budget)
    // while the canary keeps writing to it, as a client of a stale endpoint would.
    let demoted = Instant::now();
    topo.promote(1);
    wait_until("readonly writes", Duration::from_secs(5), || {
        canary
            .metrics()
            .sum(ATTEMPTS, &[t("direct"), ("result", "readonly")])
            > 0.0
    });
    wait_until(
        "the demoted node identified as a replica",
        Duration::from_secs(5),
        || {
            canary.metrics().count(
                BACKEND_INFO,
                &[t("direct"), ("run_id", &run_id), ("role", "replica")],
            ) == 1
        },
    );
    std::thread::sleep(Duration::from_secs(4).saturating_sub(demoted.elapsed()));
    topo.promote(0);
    let held = secs(demoted.elapsed());
    wait_episodes_ended(&canary, "direct", 1.0, Duration::from_secs(15));

    let m = canary.metrics();
    let o = |op, outcome| m.sum(OPS, &[t("direct"), ("op", op), ("outcome", outcome)]);
    eprintln!(
        "master demoted for {held:.3} s under direct writes: episode {:.3} s; failures: {}; {}",
        m.sum(EPISODE_SUM, &[t("direct")]),
        failures(&m, "direct"),
        summary(&m, "direct")
    );
    assert_eq!(m.sum(DISRUPTIONS, &[t("direct")]), 1.0);
    let write_failures: f64 = RESULTS
        .iter()
        .filter(|r| **r != "ok")
        .map(|r| m.sum(ATTEMPTS, &[t("direct"), ("op", "write"), ("result", r)]))
        .sum();
    assert_eq!(
        write_failures,
        m.sum(
            ATTEMPTS,
            &[t("direct"), ("op", "write"), ("result", "readonly")]
        ),
        "every failed write attempt is readonly: {}",
        failures(&m, "direct")
    );
    assert!(o("write", "failed") > 0.0, "4 s outlast the retries");
    // Reads never noticed: a replica serves them.
    assert_eq!(
        m.sum(ATTEMPTS, &[t("direct"), ("op", "read"), ("result", "ok")]),
        m.sum(ATTEMPTS, &[t("direct"), ("op", "read")])
    );
    assert_eq!(o("read", "failed") + o("read", "recovered"), 0.0);
    assert_no_bad_reads(&m, "direct", &["stale", "missing", "corrupt"]);
    wait_until(
        "node 0 seen a master again",
        Duration::from_secs(10),
        || {
            canary.metrics().count(
                BACKEND_INFO,
                &[t("direct"), ("run_id", &run_id), ("role", "master")],
            ) == 1
        },
    );
}

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_haproxy)),
    ignore = "needs redis-server, haproxy (not installed: scripts/install-deps)"
)]
fn a_failover_behind_haproxy_switches_backend_counts_the_cost_and_reads_fresh_afterwards() {
    let mut topo = Topology::replicated(3, &[]);
    let proxy = topo.haproxy("master");
    let canary = Canary::start(&config(
        "keys = 40",
        &[target("ha", &proxy.url(), &topo, "")],
    ));
    wait_fresh(&canary, "ha", 20.0);
    let new_master = topo.nodes[1].run_id();

    let started = Instant::now();
    topo.promote(1);
    proxy.wait_status(&["DOWN", "UP", "DOWN"], Duration::from_secs(10));
    let proxy_followed = secs(started.elapsed());
    wait_until(
        "the switch to the new master",
        Duration::from_secs(15),
        || {
            let m = canary.metrics();
            m.sum(SWITCHES, &[t("ha")]) >= 1.0
                && m.sum(DISRUPTED, &[t("ha")]) == 0.0
                && m.count(
                    BACKEND_INFO,
                    &[t("ha"), ("run_id", &new_master), ("role", "master")],
                ) == 1
        },
    );
    let switched = secs(started.elapsed());
    topo.wait_in_sync();
    // Every key is rewritten on the new master (2 s) and settles (1 s).
    std::thread::sleep(Duration::from_secs(3));
    let m1 = canary.metrics();
    let reads = |m: &Scrape, v: Option<&str>| match v {
        Some(v) => m.sum(READS, &[t("ha"), ("verdict", v)]),
        None => m.sum(READS, &[t("ha")]),
    };
    wait_until("40 more reads", Duration::from_secs(10), || {
        reads(&canary.metrics(), None) >= reads(&m1, None) + 40.0
    });
    let m2 = canary.metrics();
    eprintln!(
        "failover behind haproxy: proxy followed after {proxy_followed:.3} s, canary on the new \
         master after {switched:.3} s; switches {}, episodes {} totalling {:.3} s; failures: {}; \
         {}; after it: {} of {} reads fresh",
        m2.sum(SWITCHES, &[t("ha")]),
        m2.sum(DISRUPTIONS, &[t("ha")]),
        m2.sum(EPISODE_SUM, &[t("ha")]),
        failures(&m2, "ha"),
        summary(&m2, "ha"),
        reads(&m2, Some("fresh")) - reads(&m1, Some("fresh")),
        reads(&m2, None) - reads(&m1, None),
    );
    assert!(m2.sum(SWITCHES, &[t("ha")]) >= 1.0);
    assert!(m2.sum(DISRUPTIONS, &[t("ha")]) >= 1.0);
    let felt = m2.sum(OPS, &[t("ha"), ("outcome", "recovered")])
        + m2.sum(OPS, &[t("ha"), ("outcome", "failed")]);
    assert!(
        felt > 0.0,
        "the failover cost nothing? {}",
        summary(&m2, "ha")
    );
    // The old master answered writes with READONLY until HAProxy took it out.
    assert!(
        m2.sum(
            ATTEMPTS,
            &[t("ha"), ("op", "write"), ("result", "readonly")]
        ) > 0.0
    );
    // Afterwards every read is fresh.
    assert_eq!(
        reads(&m2, Some("fresh")) - reads(&m1, Some("fresh")),
        reads(&m2, None) - reads(&m1, None)
    );
    assert_eq!(m2.sum(DISRUPTED, &[t("ha")]), 0.0);
}

// --- credentials --------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_rotated_password_is_auth_failures_until_the_file_follows_and_recovers_without_a_restart() {
    let mut topo = Topology::independent(1, &[]);
    let canary = direct_to_node_0(
        &topo,
        // A retry budget (~25 s) far beyond the rotation window even on a loaded CI
        // machine, where the window can stretch past the default ~3 s budget.
        "connect_probe_interval = \"200ms\"\nretry = { max_retries = 8 }",
    );
    let auth =
        |m: &Scrape, kind| m.sum(CONNECTS, &[t("direct"), ("kind", kind), ("result", "auth")]);
    let mut lengths = Vec::new();
    // Rotate, then restore: each time the servers change first and the secret file follows
    // 1.5 s later, and the canary's connections are cut so that they must reconnect.
    for (round, password) in [(1.0, "rotated-pw-1"), (2.0, PASSWORD)] {
        let before = canary.metrics();
        topo.set_server_password(password);
        topo.kill_client_connections(0);
        wait_until("auth failures", Duration::from_secs(5), || {
            auth(&canary.metrics(), "pool") > auth(&before, "pool")
        });
        std::thread::sleep(Duration::from_millis(1500));
        topo.write_password_file(password);
        wait_episodes_ended(&canary, "direct", round, Duration::from_secs(15));
        wait_more_fresh(&canary, "direct", 10.0);
        let m = canary.metrics();
        lengths.push(m.sum(EPISODE_SUM, &[t("direct")]) - before.sum(EPISODE_SUM, &[t("direct")]));
        assert!(auth(&m, "pool") > auth(&before, "pool"));
        assert!(auth(&m, "probe") > auth(&before, "probe"));
    }
    let m = canary.metrics();
    eprintln!(
        "password rotated and restored (file 1.5 s behind the servers): episodes {lengths:.3?} s; \
         auth failures pool {} probe {}; skipped ticks {}; failures: {}; {}",
        auth(&m, "pool"),
        auth(&m, "probe"),
        m.sum("redis_canary_skipped_ticks_total", &[t("direct")]),
        failures(&m, "direct"),
        summary(&m, "direct")
    );
    assert_eq!(m.sum(DISRUPTIONS, &[t("direct")]), 2.0);
    // The wrong-credentials window is inside the retry budget: rescued, not failed.
    assert!(m.sum(OPS, &[t("direct"), ("outcome", "recovered")]) > 0.0);
    assert_eq!(
        m.sum(OPS, &[t("direct"), ("op", "write"), ("outcome", "failed")])
            + m.sum(OPS, &[t("direct"), ("op", "read"), ("outcome", "failed")]),
        0.0
    );
    for l in &lengths {
        assert!(
            *l > 1.0 && *l < 4.0,
            "episode {l:.3} s for 1.5 s of wrong password"
        );
    }
    assert_no_bad_reads(&m, "direct", &["stale", "missing", "corrupt"]);
    let (_, page) = canary.get("/");
    for text in [&m.text, &page, &canary.log()] {
        assert!(!text.contains("rotated-pw"), "a password leaked");
        assert!(!text.contains(PASSWORD), "a password leaked");
    }
}

// --- the proxy and the network ------------------------------------------------------

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_haproxy)),
    ignore = "needs redis-server, haproxy (not installed: scripts/install-deps)"
)]
fn a_restarted_haproxy_drops_pooled_connections_and_retries_absorb_it() {
    let topo = Topology::replicated(3, &[]);
    let mut proxy = topo.haproxy("master");
    let canary = Canary::start(&config("", &[target("ha", &proxy.url(), &topo, "")]));
    wait_fresh(&canary, "ha", 20.0);
    let before = canary.metrics();

    let restarted = Instant::now();
    proxy.restart();
    proxy.wait_status(&["UP", "DOWN", "DOWN"], Duration::from_secs(10));
    let took = secs(restarted.elapsed());
    wait_until("the drops to show", Duration::from_secs(5), || {
        canary.metrics().sum(DROPS, &[t("ha"), ("kind", "pool")]) >= 1.0
    });
    let episodes = canary.metrics().sum(DISRUPTIONS, &[t("ha")]);
    wait_episodes_ended(&canary, "ha", episodes, Duration::from_secs(15));
    wait_more_fresh(&canary, "ha", 20.0);

    let m = canary.metrics();
    eprintln!(
        "haproxy restarted (back and checked after {took:.3} s): drops {}, episodes {} totalling \
         {:.3} s; failures: {}; {}",
        m.sum(DROPS, &[t("ha"), ("kind", "pool")]),
        m.sum(DISRUPTIONS, &[t("ha")]),
        m.sum(EPISODE_SUM, &[t("ha")]),
        failures(&m, "ha"),
        summary(&m, "ha")
    );
    assert_eq!(before.sum(DROPS, &[t("ha")]), 0.0);
    assert!(m.sum(DROPS, &[t("ha"), ("kind", "pool")]) >= 1.0);
    assert!(m.sum(DISRUPTIONS, &[t("ha")]) >= 1.0);
    assert!(m.sum(ATTEMPTS, &[t("ha"), ("result", "reset")]) >= 1.0);
    assert_eq!(m.sum(OPS, &[t("ha"), ("outcome", "failed")]), 0.0);
    assert!(m.sum(OPS, &[t("ha"), ("outcome", "recovered")]) >= 1.0);
    assert_no_bad_reads(&m, "ha", &["stale", "missing", "corrupt"]);
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn fifty_ms_of_injected_latency_is_an_attempt_p50_of_fifty_ms() {
    let topo = Topology::independent(1, &[]);
    let proxy = topo.delay_proxy(0);
    let soak_config = config(
        "",
        &[target(
            "slow",
            &proxy.url(),
            &topo,
            r#"slo = { p99_operation = "1s" }"#,
        )],
    );
    // The same path without delay first: what the proxy and the canary add themselves.
    let baseline =
        SoakRun::start(&soak_config, Duration::from_secs(2)).finish(Duration::from_secs(10));
    let base_p50 = baseline.target("slow")["latency_seconds"]["attempt"]["read"]["p50"]
        .as_f64()
        .expect("baseline p50");

    let injected = Duration::from_millis(50);
    proxy.set_delay(injected);
    let soak = SoakRun::start(&soak_config, Duration::from_secs(6));
    let labels = [t("slow"), ("op", "read")];
    wait_until("60 read attempts", Duration::from_secs(10), || {
        soak.metrics().sum(ATTEMPT_COUNT, &labels) >= 60.0
    });
    let m = soak.metrics();
    let r = soak.finish(Duration::from_secs(10));
    let slow = r.target("slow");
    let lat = &slow["latency_seconds"]["attempt"];
    let p50 = |op: &str| lat[op]["p50"].as_f64().expect("p50");
    let count = m.sum(ATTEMPT_COUNT, &labels);
    let le = |edge| m.sum(ATTEMPT_BUCKET, &[t("slow"), ("op", "read"), ("le", edge)]);
    eprintln!(
        "latency injected {:.1} ms: attempt p50 read {:.2} ms ({:+.1} %), write {:.2} ms ({:+.1} %); \
         read p50 without delay {:.2} ms, so {:.2} ms added; read p90 {:.2} ms, p99 {:.2} ms; \
         /metrics: {} read attempts, {} <= 50 ms, {} <= 100 ms; exit {:?}",
        secs(injected) * 1e3,
        p50("read") * 1e3,
        (p50("read") / secs(injected) - 1.0) * 100.0,
        p50("write") * 1e3,
        (p50("write") / secs(injected) - 1.0) * 100.0,
        base_p50 * 1e3,
        (p50("read") - base_p50) * 1e3,
        lat["read"]["p90"].as_f64().unwrap_or(f64::NAN) * 1e3,
        lat["read"]["p99"].as_f64().unwrap_or(f64::NAN) * 1e3,
        count,
        le("0.05"),
        le("0.1"),
        r.status.code()
    );
    for op in ["read", "write"] {
        assert!(
            (p50(op) - secs(injected)).abs() <= 0.2 * secs(injected),
            "{op} attempt p50 {:.2} ms for {} ms injected",
            p50(op) * 1e3,
            injected.as_millis()
        );
    }
    let added = p50("read") - base_p50;
    assert!(
        (added - secs(injected)).abs() <= 0.2 * secs(injected),
        "{:.2} ms added for {} ms injected",
        added * 1e3,
        injected.as_millis()
    );
    // Every attempt took at least the injected delay; nearly all less than twice it.
    assert_eq!(le("0.05"), 0.0);
    assert!(
        le("0.1") >= 0.95 * count,
        "{} of {count} below 100 ms",
        le("0.1")
    );
    // Slow is not broken: nothing failed, and the run passes its (relaxed) SLOs.
    assert_eq!(slow["episodes"].as_array().map(Vec::len), Some(0));
    assert_eq!(r.status.code(), Some(0), "{}", r.stdout);
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_partition_is_timeouts_in_one_episode_as_long_as_the_cut_then_a_clean_recovery() {
    let topo = Topology::independent(1, &[]);
    let proxy = topo.delay_proxy(0);
    let canary = Canary::start(&config("", &[target("cut", &proxy.url(), &topo, "")]));
    wait_fresh(&canary, "cut", 20.0);

    // The fault: three seconds of blackhole.
    let cut = secs(proxy.blackhole_for(Duration::from_secs(3)));
    wait_episodes_ended(&canary, "cut", 1.0, Duration::from_secs(15));
    wait_more_fresh(&canary, "cut", 20.0);

    let m = canary.metrics();
    let episode = m.sum(EPISODE_SUM, &[t("cut")]);
    eprintln!(
        "partition (blackhole) {cut:.3} s: episode {episode:.3} s ({:+.1} %); failures: {}; \
         skipped ticks {}; {}",
        (episode / cut - 1.0) * 100.0,
        failures(&m, "cut"),
        m.sum("redis_canary_skipped_ticks_total", &[t("cut")]),
        summary(&m, "cut")
    );
    assert_eq!(m.sum(DISRUPTIONS, &[t("cut")]), 1.0);
    assert!(
        (episode - cut).abs() <= 0.2 * cut,
        "episode {episode:.3} s for a partition of {cut:.3} s"
    );
    // A partition answers nothing: every failure is a timeout.
    assert!(m.sum(ATTEMPTS, &[t("cut"), ("result", "timeout")]) > 0.0);
    for r in RESULTS.iter().filter(|r| !["ok", "timeout"].contains(r)) {
        assert_eq!(m.sum(ATTEMPTS, &[t("cut"), ("result", r)]), 0.0, "{r}");
        assert_eq!(m.sum(CONNECTS, &[t("cut"), ("result", r)]), 0.0, "{r}");
    }
    assert_eq!(m.sum(DISRUPTED, &[t("cut")]), 0.0);
    assert_no_bad_reads(&m, "cut", &["stale", "missing", "corrupt"]);
}

// --- soak --------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_haproxy)),
    ignore = "needs redis-server, haproxy (not installed: scripts/install-deps)"
)]
fn a_healthy_soak_through_haproxy_passes_with_a_valid_report() {
    let topo = Topology::replicated(3, &[]);
    let proxy = topo.haproxy("master");
    let soak = SoakRun::start(
        &config(
            "",
            &[target(
                "ha",
                &proxy.url(),
                &topo,
                &format!(
                    "connect_probe_interval = \"500ms\"\nnodes = {}\nslo = {{ p99_operation = \"1s\" }}",
                    nodes_list(&topo)
                ),
            )],
        ),
        Duration::from_secs(5),
    );
    let r = soak.finish(Duration::from_secs(10));
    let ha = r.target("ha");
    eprintln!(
        "healthy soak through haproxy: exit {:?}; operations {}; reads {}; replication {}",
        r.status.code(),
        ha["operations"],
        ha["reads"],
        ha["replication"]
    );
    assert_eq!(r.status.code(), Some(0), "{}", r.stdout);
    assert_eq!(r.report["schema"], 1);
    assert_eq!(r.report["pass"], true);
    assert_eq!(r.report["interrupted"], false);
    assert_eq!(ha["pass"], true);
    assert_eq!(ha["availability"]["all"], 1.0);
    for op in ["write", "read", "probe"] {
        assert!(ha["operations"][op]["ok"].as_u64().unwrap() > 0, "{op}");
        assert_eq!(ha["operations"][op]["failed"], 0, "{op}");
        assert_eq!(ha["operations"][op]["skipped"], 0, "{op}");
    }
    assert!(ha["reads"]["fresh"].as_u64().unwrap() > 40);
    for v in ["stale", "missing", "corrupt"] {
        assert_eq!(ha["reads"][v], 0, "{v}");
    }
    assert_eq!(ha["episodes"].as_array().map(Vec::len), Some(0));
    // Through a master-only proxy every read was served by the master.
    let master = topo.nodes[0].run_id();
    let served: Vec<&String> = ha["reads_by_backend"].as_object().unwrap().keys().collect();
    assert_eq!(served, vec![&master]);
    let replication = ha["replication"].as_object().unwrap();
    assert_eq!(replication.len(), 3, "{replication:?}");
    for n in &topo.nodes {
        let node = &replication[&n.addr()];
        assert_eq!(node["timeouts"], 0);
        assert!(node["p99"].as_f64().unwrap() < 1.0, "{node}");
    }
    let backends = ha["backends"].as_array().unwrap();
    assert!(
        backends
            .iter()
            .any(|b| b["run_id"] == master.as_str() && b["role"] == "master"),
        "{backends:?}"
    );
    assert!(
        ha["slo"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["pass"] == true)
    );
    assert!(r.stdout.contains("verdict: PASS"), "{}", r.stdout);
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_soak_with_a_master_restarted_empty_exits_1_naming_the_broken_slos() {
    let mut topo = Topology::independent(1, &[]);
    let soak = SoakRun::start(
        &config(
            "keys = 40",
            &[target("direct", &topo.nodes[0].url(), &topo, "")],
        ),
        Duration::from_secs(8),
    );
    wait_fresh(&soak, "direct", 20.0);
    wait_until("every key settled", Duration::from_secs(10), || {
        soak.started.elapsed() >= Duration::from_secs(3)
    });
    // The fault: one second down, then back without its data.
    let killed = Instant::now();
    topo.nodes[0].kill();
    std::thread::sleep(Duration::from_secs(1));
    topo.nodes[0].restart_empty();
    let outage = secs(killed.elapsed());
    assert!(
        soak.remaining() > Duration::from_secs(2),
        "the fault did not fit in the soak"
    );
    let r = soak.finish(Duration::from_secs(10));
    let direct = r.target("direct");
    let failed = r.failed_slos("direct");
    eprintln!(
        "soak, master down {outage:.3} s and back empty: exit {:?}; failed SLOs {failed:?}; \
         episodes {}; reads {}",
        r.status.code(),
        direct["episodes"],
        direct["reads"]
    );
    assert_eq!(r.status.code(), Some(1), "{}", r.stdout);
    assert_eq!(r.report["pass"], false);
    assert!(
        failed.contains(&"max_missing_reads".to_string()),
        "{failed:?}"
    );
    assert!(failed.contains(&"max_disruption".to_string()), "{failed:?}");
    assert!(direct["reads"]["missing"].as_u64().unwrap() > 0);
    let episodes = direct["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 1, "{episodes:?}");
    let length = episodes[0]["duration_seconds"].as_f64().unwrap();
    assert!(
        length > outage - 0.3 && length < outage + 1.0,
        "episode {length:.3} s for {outage:.3} s down"
    );
    // Direct to a dead port: refused (nothing listening), not reset.
    assert!(episodes[0]["results"]["refused"].as_u64().unwrap_or(0) > 0);
    assert!(r.stdout.contains("verdict: FAIL"), "{}", r.stdout);
}
