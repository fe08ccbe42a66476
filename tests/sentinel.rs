//! Sentinel targets against a real Sentinel deployment on loopback (DESIGN §12.1): three
//! `redis-sentinel` processes, a master and two replicas (tests/support/sentinel.rs). Each
//! test asserts the classification the canary exports on `/metrics`.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::names::{self, t};
use support::sentinel::SentinelSet;
use support::{Canary, Scrape, wait_until};

const TARGET: &str = "cache";

/// A canary measuring the deployment at 10 operations a second, sentinels asked every
/// second (so `sentinel_up` and `sentinel_masters` follow within a second or two).
fn canary(set: &SentinelSet) -> Canary {
    Canary::start(&format!(
        "[defaults]\nrate = 10\n\n{}",
        set.target_toml(TARGET, "sentinel_refresh = \"1s\"")
    ))
}

/// Operations of the writer and the reader (the ones with retries) that ended in `outcome`.
/// The fresh-connection probe has no retries by design (DESIGN §2.8): its failures during a
/// failover are reported apart, by [`probe_failed`].
fn outcome(m: &Scrape, outcome: &str) -> f64 {
    support::loop_ops(m, TARGET, outcome)
}

fn probe_failed(m: &Scrape) -> f64 {
    support::probe_failed(m, TARGET)
}

fn verdict(m: &Scrape, verdict: &str) -> f64 {
    m.sum(names::READS, &[t(TARGET), ("verdict", verdict)])
}

fn gauge(m: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want = vec![t(TARGET)];
    want.extend_from_slice(labels);
    m.sum(&format!("redis_canary_{name}"), &want)
}

/// Waits until `more` more reads (of any verdict) were judged.
fn wait_reads(c: &Canary, more: f64) {
    let start = verdict(&c.metrics(), "fresh");
    wait_until(
        &format!("{more} more fresh reads"),
        Duration::from_secs(30),
        || verdict(&c.metrics(), "fresh") >= start + more,
    );
}

/// Whether `backend_info` shows the node on `port` as a master.
fn serves_as_master(m: &Scrape, port: u16) -> bool {
    let addr = format!("127.0.0.1:{port}");
    m.count(
        names::BACKEND_INFO,
        &[t(TARGET), ("role", "master"), ("addr", &addr)],
    ) > 0
}

fn wait_sentinels_up(c: &Canary, set: &SentinelSet, want: &[f64]) {
    wait_until(
        "sentinel_up of every sentinel",
        Duration::from_secs(15),
        || {
            let m = c.metrics();
            set.sentinels
                .iter()
                .zip(want)
                .all(|(s, w)| gauge(&m, "sentinel_up", &[("sentinel", &s.addr())]) == *w)
        },
    );
}

#[test]
#[cfg_attr(not(have_redis_sentinel), ignore = "redis-sentinel not installed")]
fn a_healthy_deployment_reads_fresh_with_every_sentinel_up_and_one_master_then_a_split_view_is_two_masters()
 {
    let set = SentinelSet::start(&[]);
    let c = canary(&set);
    c.wait_ok(TARGET, "read", 20.0);
    wait_sentinels_up(&c, &set, &[1.0, 1.0, 1.0]);
    wait_until("sentinel_masters 1", Duration::from_secs(10), || {
        gauge(&c.metrics(), "sentinel_masters", &[]) == 1.0
    });
    let m = c.metrics();
    assert_eq!(outcome(&m, "failed"), 0.0);
    let fresh = verdict(&m, "fresh");
    assert!(fresh >= 20.0, "{fresh}");
    assert_eq!(
        m.sum(names::READS, &[t(TARGET)]),
        fresh,
        "every read fresh:\n{}",
        m.text
    );
    assert_eq!(m.sum(names::DISRUPTIONS, &[t(TARGET)]), 0.0);
    assert_eq!(gauge(&m, "sentinel_master_switches_total", &[]), 0.0);
    assert!(
        serves_as_master(&m, set.master_port()),
        "backend_info shows the master:\n{}",
        m.text
    );
    assert!(
        m.sum(
            names::CONNECTS,
            &[t(TARGET), ("kind", "pool"), ("result", "ok")]
        ) >= 1.0
    );

    // Split view: one sentinel is told that "mymaster" is a replica.
    let replica = set.topology.nodes[1].port.to_string();
    let split = &set.sentinels[2];
    split.call(&["SENTINEL", "REMOVE", support::sentinel::MASTER_NAME]);
    split.call(&[
        "SENTINEL",
        "MONITOR",
        support::sentinel::MASTER_NAME,
        "127.0.0.1",
        &replica,
        "2",
    ]);
    wait_until("sentinel_masters 2", Duration::from_secs(15), || {
        gauge(&c.metrics(), "sentinel_masters", &[]) == 2.0
    });
    wait_reads(&c, 10.0);
    let m = c.metrics();
    assert_eq!(outcome(&m, "failed"), 0.0, "{}", m.text);
    assert_eq!(gauge(&m, "sentinel_master_switches_total", &[]), 0.0);
}

#[test]
#[cfg_attr(not(have_redis_sentinel), ignore = "redis-sentinel not installed")]
fn a_killed_master_is_one_episode_about_as_long_as_the_sentinels_take_to_switch() {
    let mut set = SentinelSet::start(&[]);
    let c = canary(&set);
    c.wait_ok(TARGET, "read", 20.0);
    assert_eq!(c.metrics().sum(names::DISRUPTIONS, &[t(TARGET)]), 0.0);

    let before = set.switch_lines();
    let old = set.master_port();
    let i = set.node_on(old);
    let killed = Instant::now();
    set.topology.nodes[i].kill();
    let switched = set.wait_switch(before, Duration::from_secs(30));
    let kill_to_switch = switched.duration_since(killed).as_secs_f64();
    // Under load the sentinels sometimes judge the master they just promoted down as well
    // and fail over a second time (see tests/support/sentinel.rs): what a client sees is
    // then two failovers, and the checks below say which ones hold for any number.
    let settled = set.settled(Duration::from_secs(40));
    let (new, failovers) = (settled.port, settled.failovers);
    assert_ne!(new, old);
    assert!(failovers >= 1, "{settled:?}");

    wait_until("the episode to end", Duration::from_secs(30), || {
        let m = c.metrics();
        m.sum(names::EPISODE_COUNT, &[t(TARGET)]) >= 1.0
            && m.sum(names::DISRUPTED, &[t(TARGET)]) == 0.0
    });
    wait_reads(&c, 20.0);
    let m = c.metrics();
    let episode = m.sum(names::EPISODE_SUM, &[t(TARGET)]);
    let switches = gauge(&m, "sentinel_master_switches_total", &[]);
    eprintln!(
        "kill -> +switch-master {kill_to_switch:.3} s; failovers {failovers}; switches followed {switches}; episode {episode:.3} s; failed {} (probes {}); recovered {}; missing {}",
        outcome(&m, "failed"),
        probe_failed(&m),
        outcome(&m, "recovered"),
        verdict(&m, "missing"),
    );
    if failovers == 1 {
        assert_eq!(m.sum(names::DISRUPTIONS, &[t(TARGET)]), 1.0, "{}", m.text);
        assert!(
            episode > kill_to_switch - 1.0 && episode < kill_to_switch + 3.0,
            "episode {episode:.3} s vs kill -> +switch-master {kill_to_switch:.3} s"
        );
        assert_eq!(switches, 1.0);
        assert_eq!(verdict(&m, "stale"), 0.0);
    } else {
        eprintln!(
            "the sentinels failed over {failovers} times after one kill: one episode per failover at most, a switch followed for each at most"
        );
        let episodes = m.sum(names::DISRUPTIONS, &[t(TARGET)]);
        assert!(
            episodes >= 1.0 && episodes <= failovers as f64,
            "{}",
            m.text
        );
        assert!(
            switches >= 1.0 && switches <= failovers as f64,
            "{}",
            m.text
        );
    }
    assert!(m.sum(names::SWITCHES, &[t(TARGET)]) >= 1.0);
    assert!(serves_as_master(&m, new), "{}", m.text);
    assert_eq!(verdict(&m, "corrupt"), 0.0);
    // Reads are fresh again afterwards.
    let fresh = verdict(&m, "fresh");
    wait_reads(&c, 10.0);
    let after = c.metrics();
    let bad: f64 = ["stale", "missing", "corrupt"]
        .iter()
        .map(|v| verdict(&after, v) - verdict(&m, v))
        .sum();
    assert_eq!(bad, 0.0, "bad reads after the failover");
    assert!(verdict(&after, "fresh") >= fresh + 10.0);
}

#[test]
#[cfg_attr(not(have_redis_sentinel), ignore = "redis-sentinel not installed")]
fn a_graceful_failover_is_absorbed_by_retries_with_no_failed_operation() {
    let set = SentinelSet::start(&[]);
    let c = canary(&set);
    c.wait_ok(TARGET, "read", 20.0);
    fail_over_via(&set, &c, 0);
    wait_reads(&c, 20.0);
    let m = c.metrics();
    eprintln!(
        "graceful failover: recovered {}, failed {} (probes {}), disruptions {}, episode {:.3} s, missing {}, lagging {}",
        outcome(&m, "recovered"),
        outcome(&m, "failed"),
        probe_failed(&m),
        m.sum(names::DISRUPTIONS, &[t(TARGET)]),
        m.sum(names::EPISODE_SUM, &[t(TARGET)]),
        verdict(&m, "missing"),
        verdict(&m, "lagging"),
    );
    assert_eq!(outcome(&m, "failed"), 0.0, "{}", m.text);
    assert_eq!(gauge(&m, "sentinel_master_switches_total", &[]), 1.0);
    assert_eq!(verdict(&m, "corrupt"), 0.0);
}

#[test]
#[cfg_attr(not(have_redis_sentinel), ignore = "redis-sentinel not installed")]
fn a_killed_sentinel_is_down_in_its_metric_and_invisible_to_clients_and_following_moves_on() {
    let mut set = SentinelSet::start(&[]);
    let c = canary(&set);
    c.wait_ok(TARGET, "read", 20.0);
    wait_sentinels_up(&c, &set, &[1.0, 1.0, 1.0]);
    // The canary subscribes to the first sentinel that accepts: the first one.
    wait_until("the subscription", Duration::from_secs(10), || {
        c.log().contains("following +switch-master")
    });
    set.sentinels[0].kill();
    wait_sentinels_up(&c, &set, &[0.0, 1.0, 1.0]);
    wait_until("the subscription to move", Duration::from_secs(10), || {
        c.log().matches("following +switch-master").count() >= 2
    });
    wait_reads(&c, 20.0);
    let m = c.metrics();
    assert_eq!(outcome(&m, "failed"), 0.0, "{}", m.text);
    assert_eq!(m.sum(names::DISRUPTIONS, &[t(TARGET)]), 0.0);
    assert_eq!(gauge(&m, "sentinel_masters", &[]), 1.0);
    // The status API and page show the dead sentinel down and the others up.
    let (_, body) = c.get("/api/v1/status");
    let api: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let target = &api["targets"][0];
    assert_eq!(target["mode"], "sentinel", "{target}");
    let shown: Vec<(String, bool)> = target["sentinels"]
        .as_array()
        .expect("sentinels")
        .iter()
        .map(|s| {
            (
                s["addr"].as_str().unwrap_or_default().to_string(),
                s["up"] == true,
            )
        })
        .collect();
    let want: Vec<(String, bool)> = set
        .sentinels
        .iter()
        .enumerate()
        .map(|(i, s)| (s.addr(), i != 0))
        .collect();
    assert_eq!(shown, want, "{target}");
    let (_, page) = c.get("/");
    assert_eq!(page.matches("<tr class=\"sentinel\">").count(), 3, "{page}");
    assert!(page.contains("DOWN"), "{page}");

    // The two sentinels left still fail over, and the canary follows.
    fail_over_via(&set, &c, 1);
    let m = c.metrics();
    assert_eq!(gauge(&m, "sentinel_master_switches_total", &[]), 1.0);
    assert_eq!(outcome(&m, "failed"), 0.0, "{}", m.text);
}

#[test]
#[cfg_attr(not(have_redis_sentinel), ignore = "redis-sentinel not installed")]
fn an_old_master_restarted_with_its_data_is_never_served_from_while_the_sentinels_name_another() {
    let mut set = SentinelSet::start(&["--appendonly", "yes"]);
    let c = canary(&set);
    c.wait_ok(TARGET, "read", 20.0);
    let before = set.switch_lines();
    let old = set.master_port();
    let i = set.node_on(old);
    set.topology.nodes[i].kill();
    set.wait_switch(before, Duration::from_secs(30));
    // Every failover done (there can be two under load) before the old master comes back.
    set.settled(Duration::from_secs(40));
    wait_until("the episode to end", Duration::from_secs(30), || {
        c.metrics().sum(names::DISRUPTED, &[t(TARGET)]) == 0.0
    });

    // Back as a master with its old data, until the sentinels make it a replica.
    set.topology.nodes[i].start();
    let restarted = set.topology.nodes[i].run_id();
    let m0 = c.metrics();
    wait_until(
        "the sentinels to make the old master a replica",
        Duration::from_secs(40),
        || {
            set.topology.nodes[i]
                .try_call(&["ROLE"])
                .is_ok_and(|r| r.starts_with("slave"))
        },
    );
    wait_reads(&c, 20.0);
    let m = c.metrics();
    eprintln!(
        "old master back: stale {}, missing {}, corrupt {}, failed {}",
        verdict(&m, "stale") - verdict(&m0, "stale"),
        verdict(&m, "missing") - verdict(&m0, "missing"),
        verdict(&m, "corrupt") - verdict(&m0, "corrupt"),
        outcome(&m, "failed") - outcome(&m0, "failed"),
    );
    // Nothing was read from it: the sentinels never named it, and ROLE would have refused it
    // once demoted.
    assert_eq!(
        m.count(names::BACKEND_INFO, &[t(TARGET), ("run_id", &restarted)]),
        0,
        "{}",
        m.text
    );
    // Its old data would read as stale (older values) or corrupt: none. `missing` is not
    // asserted: writes the old master acknowledged but never replicated before the kill
    // are lost with the failover, and a read of such a key on the new master can come at
    // any time after it (seen in a CI run: 3 after the restart) — the kill's loss, not the
    // restarted node's.
    for v in ["stale", "corrupt"] {
        assert_eq!(
            verdict(&m, v),
            verdict(&m0, v),
            "{v} reads after the restart"
        );
    }
    assert_eq!(outcome(&m, "failed"), outcome(&m0, "failed"));
}

/// The `node` labels of the nodes followed now (their `node_up` series).
fn followed(m: &Scrape) -> BTreeSet<String> {
    m.labels("redis_canary_node_up", &[t(TARGET)])
        .into_iter()
        .filter_map(|l| l.get("node").cloned())
        .collect()
}

fn node_up(m: &Scrape, node: &str) -> f64 {
    gauge(m, "node_up", &[("node", node)])
}

/// Replication delay observations of `node`: their count and sum (seconds).
fn delays(m: &Scrape, node: &str) -> (f64, f64) {
    let labels = [t(TARGET), ("node", node)];
    (
        m.sum("redis_canary_replication_delay_seconds_count", &labels),
        m.sum("redis_canary_replication_delay_seconds_sum", &labels),
    )
}

#[test]
#[cfg_attr(not(have_redis_sentinel), ignore = "redis-sentinel not installed")]
fn nodes_auto_follows_the_replicas_the_sentinels_list_through_a_failover() {
    let mut set = SentinelSet::start(&[]);
    let c = Canary::start(&format!(
        "[defaults]\nrate = 10\nbackend_ttl = \"3s\"\n\n{}",
        set.target_toml(TARGET, "sentinel_refresh = \"1s\"\nnodes = \"auto\"")
    ));
    let old = set.master_port();
    let i = set.node_on(old);
    let addr = |port: u16| format!("127.0.0.1:{port}");
    let replicas: BTreeSet<String> = set
        .topology
        .nodes
        .iter()
        .filter(|n| n.port != old)
        .map(|n| addr(n.port))
        .collect();
    wait_until(
        "both replicas followed, up, with replication delays observed",
        Duration::from_secs(20),
        || {
            let m = c.metrics();
            followed(&m) == replicas
                && replicas
                    .iter()
                    .all(|r| node_up(&m, r) == 1.0 && delays(&m, r).0 >= 3.0)
        },
    );
    let m = c.metrics();
    for r in &replicas {
        let (count, sum) = delays(&m, r);
        eprintln!("{r}: node_up 1, {count} delays, mean {:.6} s", sum / count);
        assert!(sum > 0.0, "{r}: delays {count}, sum {sum}");
    }
    assert!(
        !followed(&m).contains(&addr(old)),
        "the master is not a replica"
    );

    // Failover: the promoted replica leaves the followed set after backend_ttl; the other
    // one goes on converging; the old master is listed as a (down) replica, and once
    // restarted and reconfigured by the sentinels it converges too.
    let before = set.switch_lines();
    set.topology.nodes[i].kill();
    let switched = set.wait_switch(before, Duration::from_secs(30));
    let new = set.settled_master_port(Duration::from_secs(30));
    assert_ne!(new, old);
    let promoted = addr(new);
    let other = replicas
        .iter()
        .find(|r| **r != promoted)
        .expect("the replica not promoted")
        .clone();
    wait_until(
        "the promoted replica to leave the followed set",
        Duration::from_secs(20),
        || !followed(&c.metrics()).contains(&promoted),
    );
    let left_after = switched.elapsed().as_secs_f64();
    let m = c.metrics();
    eprintln!("promoted {promoted} unfollowed {left_after:.3} s after +switch-master");
    assert!(
        left_after > 1.5,
        "unfollowed after {left_after:.3} s: before backend_ttl (3 s)"
    );
    assert_eq!(
        m.count(
            "redis_canary_replication_delay_seconds_count",
            &[t(TARGET), ("node", &promoted)]
        ),
        0,
        "its series are removed:\n{}",
        m.text
    );
    let converged = delays(&m, &other).0;
    wait_until(
        "the other replica to converge from the new master",
        Duration::from_secs(20),
        || {
            let m = c.metrics();
            node_up(&m, &other) == 1.0 && delays(&m, &other).0 >= converged + 3.0
        },
    );
    wait_until(
        "the old master to be followed as a replica",
        Duration::from_secs(20),
        || followed(&c.metrics()).contains(&addr(old)),
    );
    assert_eq!(node_up(&c.metrics(), &addr(old)), 0.0, "still down");
    set.topology.nodes[i].start();
    wait_until(
        "the old master, reconfigured as a replica, to converge",
        Duration::from_secs(40),
        || {
            let m = c.metrics();
            node_up(&m, &addr(old)) == 1.0 && delays(&m, &addr(old)).0 >= 1.0
        },
    );
    let m = c.metrics();
    let want: BTreeSet<String> = [other.clone(), addr(old)].into_iter().collect();
    assert_eq!(followed(&m), want, "{}", m.text);
    for r in &want {
        let (count, sum) = delays(&m, r);
        eprintln!("after the failover {r}: {count} delays, sum {sum:.6} s");
    }
}

/// `SENTINEL FAILOVER` asked of sentinel `i`; returns once every sentinel has named the new
/// master for a while and the canary serves from it as `master`.
fn fail_over_via(set: &SentinelSet, c: &Canary, i: usize) {
    let before = set.switch_lines();
    let old = set.master_port();
    set.sentinels[i].call(&["SENTINEL", "FAILOVER", support::sentinel::MASTER_NAME]);
    set.wait_switch(before, Duration::from_secs(30));
    let new = set.settled_master_port(Duration::from_secs(30));
    assert_ne!(new, old);
    wait_until(
        "the new master in backend_info",
        Duration::from_secs(15),
        || serves_as_master(&c.metrics(), new),
    );
}
