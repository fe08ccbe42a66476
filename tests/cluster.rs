//! Cluster targets against a real Redis Cluster on loopback (DESIGN §12.2): six
//! `redis-server --cluster-enabled yes` nodes, three masters with a replica each, made by
//! `redis-cli --cluster create` (tests/support/cluster.rs). The `harness_*` tests prove the
//! fixture on its own (no canary); the others assert what the canary exports per shard
//! against what the cluster itself reports: `CLUSTER SHARDS`, the failover time measured
//! by polling it, `INFO commandstats` and the keys each master holds.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::cluster::{self, Cluster, SLOTS, call, info_field};
use support::names::{self, t};
use support::topology::SoakRun;
use support::{Canary, Scrape, http_get, wait_until};

const TARGET: &str = "sessions";

/// Keys of the canary's keyspace: key *i* is in slot `floor(i * 16384 / 100)`, so every
/// shard of a three-master cluster gets about 33 of them.
const KEYS: u32 = 100;

/// Metric names of cluster targets (DESIGN §12.2), as exported.
mod cnames {
    pub const SHARD_OPS: &str = "redis_canary_shard_operations_total";
    pub const SHARD_DISRUPTED: &str = "redis_canary_shard_disrupted";
    pub const SHARD_DISRUPTIONS: &str = "redis_canary_shard_disruptions_total";
    pub const SHARD_EPISODE_SUM: &str = "redis_canary_shard_disruption_duration_seconds_sum";
    pub const SHARD_EPISODE_COUNT: &str = "redis_canary_shard_disruption_duration_seconds_count";
    pub const SLOTS_COVERED: &str = "redis_canary_cluster_slots_covered";
    pub const NODES: &str = "redis_canary_cluster_nodes";
    pub const REFRESHES: &str = "redis_canary_cluster_refreshes_total";
}

/// The canary's configuration for one cluster target: 20 operations a second, short
/// timeouts (a dead master is refused at once on loopback anyway), `extra` target lines.
fn config(c: &Cluster, extra: &str) -> String {
    format!(
        "instance = \"test\"\n[defaults]\nrate = 20\nkeys = {KEYS}\nconnect_timeout = \"500ms\"\n\
         response_timeout = \"500ms\"\n\n{}",
        c.target_toml(TARGET, extra)
    )
}

// ------------------------------------------------------------------------------------
// Reading the canary's metrics
// ------------------------------------------------------------------------------------

/// The shard labels of `shard_operations_total`.
fn shard_labels(m: &Scrape) -> BTreeSet<String> {
    m.labels(cnames::SHARD_OPS, &[t(TARGET)])
        .into_iter()
        .filter_map(|l| l.get("shard").cloned())
        .collect()
}

fn shard_ops(m: &Scrape, shard: &str, outcome: &str) -> f64 {
    m.sum(
        cnames::SHARD_OPS,
        &[t(TARGET), ("shard", shard), ("outcome", outcome)],
    )
}

fn shard_metric(m: &Scrape, name: &str, shard: &str) -> f64 {
    m.sum(name, &[t(TARGET), ("shard", shard)])
}

/// Operations of the writer and the reader (the ones with retries) that ended in `outcome`.
fn outcome(m: &Scrape, outcome: &str) -> f64 {
    support::loop_ops(m, TARGET, outcome)
}

fn probe_failed(m: &Scrape) -> f64 {
    support::probe_failed(m, TARGET)
}

fn attempts(m: &Scrape, result: &str) -> f64 {
    m.sum(names::ATTEMPTS, &[t(TARGET), ("result", result)])
}

fn verdict(m: &Scrape, verdict: &str) -> f64 {
    m.sum(names::READS, &[t(TARGET), ("verdict", verdict)])
}

fn gauge(m: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want = vec![t(TARGET)];
    want.extend_from_slice(labels);
    m.sum(name, &want)
}

/// Waits until every shard of `labels` has at least `n` more operations that succeeded at
/// once than in `since` (and `labels` are exactly the shards the canary reports).
fn wait_shards_ok(scrape: &dyn Fn() -> Scrape, labels: &BTreeSet<String>, since: &Scrape, n: f64) {
    wait_until(
        &format!("{n} more ok operations on every shard of {labels:?}"),
        Duration::from_secs(30),
        || {
            let m = scrape();
            shard_labels(&m) == *labels
                && labels
                    .iter()
                    .all(|s| shard_ops(&m, s, "ok") >= shard_ops(since, s, "ok") + n)
        },
    );
}

/// Waits until `more` more reads were judged fresh.
fn wait_fresh(scrape: &dyn Fn() -> Scrape, more: f64) {
    let start = verdict(&scrape(), "fresh");
    wait_until(
        &format!("{more} more fresh reads"),
        Duration::from_secs(30),
        || verdict(&scrape(), "fresh") >= start + more,
    );
}

fn labels_of(c: &Cluster) -> BTreeSet<String> {
    c.shards().iter().map(cluster::Shard::label).collect()
}

/// `calls=` of one command in a node's `INFO commandstats` (0 when never called).
fn command_calls(port: u16, command: &str) -> u64 {
    let stats = call(port, &["INFO", "commandstats"]).unwrap_or_default();
    info_field(&stats, &format!("cmdstat_{command}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Keys the node on `port` holds in `slot` (`CLUSTER COUNTKEYSINSLOT`).
fn keys_in_slot(port: u16, slot: u16) -> usize {
    call(port, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Scrapes `/metrics` on `port` every 25 ms in a thread until dropped; keeps the lowest
/// `cluster_slots_covered` seen and when.
struct CoverageSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(Instant, f64)>>>,
}

impl CoverageSampler {
    fn start(port: u16) -> CoverageSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok((200, body)) = http_get(port, "/metrics", None) {
                    let m = Scrape::parse(&body);
                    if m.count(cnames::SLOTS_COVERED, &[t(TARGET)]) > 0 {
                        samples.push((Instant::now(), gauge(&m, cnames::SLOTS_COVERED, &[])));
                    }
                }
                std::thread::sleep(Duration::from_millis(25));
            }
            samples
        });
        CoverageSampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(Instant, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("the sampler thread")
    }
}

impl Drop for CoverageSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ------------------------------------------------------------------------------------
// The harness on its own
// ------------------------------------------------------------------------------------

#[test]
#[cfg_attr(not(have_redis_cli), ignore = "redis-cli not installed")]
fn harness_a_created_cluster_has_three_shards_over_every_slot_each_with_an_in_sync_replica() {
    let started = Instant::now();
    let c = Cluster::start();
    let created = started.elapsed();
    let shards = c.shards();
    eprintln!(
        "created and settled in {:.3} s: {shards:?}",
        created.as_secs_f64()
    );
    assert_eq!(shards.len(), 3, "{shards:?}");
    assert_eq!(shards.iter().map(|s| s.slot_count()).sum::<u32>(), SLOTS);
    assert_eq!(shards[0].first_slot(), 0);
    let mut ports = BTreeSet::new();
    for s in &shards {
        assert_eq!(s.master.health, "online");
        assert_eq!(s.replicas.len(), 1, "{s:?}");
        assert_eq!(s.replicas[0].health, "online");
        ports.insert(s.master.port);
        ports.insert(s.replicas[0].port);
        // The node's own word agrees with CLUSTER SHARDS.
        let m = &c.nodes[c.node_on(s.master.port)];
        assert_eq!(m.role().as_deref(), Some("master"));
        assert_eq!(m.id, s.master.id);
        let r = &c.nodes[c.node_on(s.replicas[0].port)];
        assert_eq!(r.role().as_deref(), Some("slave"));
        let info = r.call(&["INFO", "replication"]);
        assert_eq!(
            info_field(&info, "master_port").and_then(|p| p.parse().ok()),
            Some(s.master.port),
            "{info}"
        );
    }
    assert_eq!(ports.len(), 6, "six distinct nodes");
    // Every node describes the same shards (is_settled compares them) and says ok.
    assert!(c.is_settled());
    for n in &c.nodes {
        assert_eq!(n.state().as_deref(), Some("ok"));
        assert_eq!(n.shards().expect("CLUSTER SHARDS"), shards);
    }
    // The canary's key spreading reaches every shard.
    let per_shard = cluster::canary_keys_per_shard(&shards, KEYS);
    assert_eq!(per_shard.len(), 3, "{per_shard:?}");
    assert!(per_shard.values().all(|n| *n >= 30), "{per_shard:?}");
    // Keys written through MOVED land on every master and reach its replica.
    let held = cluster::populate(&c, 300);
    assert!(held.values().all(|n| *n >= 50), "{held:?}");
    for s in &shards {
        let want = held[&s.master.port].to_string();
        wait_until(
            "the replica to hold its master's keys",
            Duration::from_secs(10),
            || call(s.replicas[0].port, &["DBSIZE"]).is_ok_and(|d| d == want),
        );
    }
    assert!(
        created < Duration::from_secs(30),
        "creating took {created:?}"
    );
}

#[test]
#[cfg_attr(not(have_redis_cli), ignore = "redis-cli not installed")]
fn harness_a_killed_master_is_replaced_by_its_replica_and_rejoins_as_its_replica() {
    let mut c = Cluster::start();
    let before = c.shards();
    let victim = before[1].clone();
    let f = c.kill_master(victim.first_slot());
    eprintln!(
        "kill -> promotion seen in CLUSTER SHARDS: {:.3} s ({f:?})",
        f.duration().as_secs_f64()
    );
    assert_eq!(f.shard, victim.label());
    assert_eq!(f.old_port, victim.master.port);
    assert_eq!(
        f.new_port, victim.replicas[0].port,
        "its replica was promoted"
    );
    // node timeout 1 s, then an election: never instant, and bounded.
    let secs = f.duration().as_secs_f64();
    assert!(secs > 0.5 && secs < 30.0, "failover took {secs:.3} s");

    // Every running node agrees: same slots, the promoted replica as master; the other
    // shards untouched.
    // Gossip takes a moment to reach every node after the promotion: they agree within
    // seconds.
    let after = c.shards();
    wait_until(
        "every running node to say ok and agree on the shards",
        Duration::from_secs(10),
        || {
            c.running().all(|n| {
                n.state().as_deref() == Some("ok") && n.shards().ok().as_ref() == Some(&after)
            })
        },
    );
    assert_eq!(after.len(), 3);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.slots, b.slots);
        if b.label() == victim.label() {
            assert_eq!(a.master.port, f.new_port);
        } else {
            assert_eq!(a, b, "another shard changed");
        }
    }
    // The cluster's own record: the replica won an election.
    let won = c.nodes[c.node_on(f.new_port)].log();
    assert!(
        won.contains("Failover election won"),
        "no election in the promoted replica's log:\n{won}"
    );

    // Restarted with its nodes.conf, the old master becomes the new master's replica.
    let old = c.node_on(f.old_port);
    c.restart(old);
    assert_eq!(c.nodes[old].role().as_deref(), Some("slave"));
    let shard = c.shard_of(victim.first_slot());
    assert_eq!(shard.master.port, f.new_port);
    assert_eq!(
        shard.replicas.iter().map(|r| r.port).collect::<Vec<_>>(),
        vec![f.old_port]
    );
}

#[test]
#[cfg_attr(not(have_redis_cli), ignore = "redis-cli not installed")]
fn harness_a_manual_failover_swaps_roles_and_migrations_move_slots_with_ask_then_moved() {
    let c = Cluster::start();
    let shards = c.shards();
    // CLUSTER FAILOVER on the replica of the second shard.
    let s = &shards[1];
    let took = c.manual_failover(s.replicas[0].port);
    eprintln!("manual failover: {:.3} s", took.as_secs_f64());
    let now = c.shard_of(s.first_slot());
    assert_eq!(now.master.port, s.replicas[0].port);
    assert_eq!(now.replicas[0].port, s.master.port);
    assert_eq!(now.slots, s.slots);

    // A migration of slots 4000-5460 from the first shard to the second, with a key in it.
    let (from, to) = (shards[0].master.port, now.master.port);
    cluster::populate(&c, 600);
    let key = (0..)
        .map(|i| format!("probe:{i}"))
        .find(|k| {
            call(from, &["CLUSTER", "KEYSLOT", k])
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .is_some_and(|s| (4000..=5460).contains(&s))
        })
        .expect("a key in the range");
    call(from, &["SET", &key, "v"]).expect("SET on its owner");
    let in_range_before: usize = (4000..=5460).map(|s| keys_in_slot(from, s)).sum();
    assert!(in_range_before > 1, "keys to move: {in_range_before}");
    let m = c.begin_migration(4000, 5460, from, to);
    assert_eq!(m.moved, in_range_before, "MIGRATE moved every key");
    // While migrating: the source answers ASK for a key that moved; the target holds it.
    let ask = call(from, &["GET", &key]).expect_err("ASK from the source");
    assert!(ask.starts_with("ASK "), "{ask}");
    assert!(ask.ends_with(&format!("127.0.0.1:{to}")), "{ask}");
    m.finish(&c);
    // Afterwards: MOVED to the new owner, which serves the key; every node agrees.
    let moved = call(from, &["GET", &key]).expect_err("MOVED from the old owner");
    assert!(moved.starts_with("MOVED "), "{moved}");
    assert_eq!(call(to, &["GET", &key]).as_deref(), Ok("v"));
    let after = c.shards();
    assert_eq!(after[0].slots, vec![(0, 3999)]);
    let target = after.iter().find(|s| s.master.port == to).expect("target");
    assert!(target.owns(4000) && target.owns(5460), "{target:?}");
    assert_eq!(after.iter().map(|s| s.slot_count()).sum::<u32>(), SLOTS);

    // redis-cli --cluster reshard: the source's lowest slots.
    let out = c.reshard(from, to, 10);
    assert!(out.contains("Moving slot"), "{out}");
    let after = c.shards();
    let source = after
        .iter()
        .find(|s| s.master.port == from)
        .expect("source");
    assert_eq!(source.slots, vec![(10, 3999)]);
    assert_eq!(c.shard_of(0).master.port, to);
}

#[test]
#[cfg_attr(not(have_redis_cli), ignore = "redis-cli not installed")]
fn harness_a_lost_master_without_replica_is_clusterdown_everywhere_until_it_is_back() {
    let mut c = Cluster::start_without_replicas();
    let shards = c.shards();
    assert_eq!(shards.len(), 3);
    assert!(shards.iter().all(|s| s.replicas.is_empty()), "{shards:?}");
    let victim = c.node_on(shards[0].master.port);
    let other = shards[2].master.port;
    // A key of the last shard (not the lost one) is served before the loss.
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            call(other, &["CLUSTER", "KEYSLOT", k])
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .is_some_and(|s| shards[2].owns(s))
        })
        .expect("a key of the last shard");
    let slot: u16 = call(other, &["CLUSTER", "KEYSLOT", &key])
        .expect("KEYSLOT")
        .parse()
        .expect("a slot");
    let owner = c.shard_of(slot).master.port;
    call(owner, &["SET", &key, "v"]).expect("SET before the loss");

    let killed = Instant::now();
    c.kill(victim);
    c.wait_state("fail");
    let failed = killed.elapsed();
    // cluster-require-full-coverage yes: a shard that is fine refuses its own keys too.
    let err = call(owner, &["GET", &key]).expect_err("CLUSTERDOWN");
    assert!(err.starts_with("CLUSTERDOWN"), "{err}");
    let restarted = Instant::now();
    c.restart(victim);
    let back = restarted.elapsed();
    eprintln!(
        "kill -> cluster_state:fail everywhere {:.3} s; restart -> settled {:.3} s",
        failed.as_secs_f64(),
        back.as_secs_f64()
    );
    assert!(failed > Duration::from_millis(500), "{failed:?}");
    assert_eq!(call(owner, &["GET", &key]).as_deref(), Ok("v"));
    assert_eq!(c.shards().len(), 3);
    assert_eq!(
        c.shard_of(0).master.port,
        shards[0].master.port,
        "same node, same slots"
    );
}

// ------------------------------------------------------------------------------------
// The canary against the cluster
// ------------------------------------------------------------------------------------

#[test]
#[cfg_attr(not(have_redis_cli), ignore = "redis-cli not installed")]
fn a_healthy_cluster_is_three_shards_each_written_and_read_fresh_with_every_slot_covered() {
    let c = Cluster::start();
    let shards = c.shards();
    let labels = labels_of(&c);
    let before: BTreeMap<u16, (u64, u64)> = shards
        .iter()
        .map(|s| {
            let p = s.master.port;
            (p, (command_calls(p, "set"), command_calls(p, "get")))
        })
        .collect();
    let canary = Canary::start(&config(&c, "nodes = \"auto\""));
    let scrape = || canary.metrics();
    wait_shards_ok(&scrape, &labels, &Scrape::default(), 10.0);
    wait_fresh(&scrape, 30.0);
    let replicas: BTreeSet<String> = shards
        .iter()
        .map(|s| format!("127.0.0.1:{}", s.replicas[0].port))
        .collect();
    wait_until(
        "every replica followed and up, with replication delays",
        Duration::from_secs(20),
        || {
            let m = canary.metrics();
            replicas.iter().all(|r| {
                gauge(&m, names::NODE_UP, &[("node", r)]) == 1.0
                    && gauge(
                        &m,
                        "redis_canary_replication_delay_seconds_count",
                        &[("node", r)],
                    ) >= 2.0
            })
        },
    );
    let m = canary.metrics();
    assert_eq!(shard_labels(&m), labels, "{}", m.text);
    for s in &labels {
        assert!(shard_ops(&m, s, "ok") >= 10.0, "{s}");
        assert_eq!(shard_ops(&m, s, "failed"), 0.0, "{s}");
        assert_eq!(shard_metric(&m, cnames::SHARD_DISRUPTED, s), 0.0, "{s}");
        assert_eq!(shard_metric(&m, cnames::SHARD_DISRUPTIONS, s), 0.0, "{s}");
    }
    let fresh = verdict(&m, "fresh");
    assert!(fresh >= 30.0);
    assert_eq!(
        m.sum(names::READS, &[t(TARGET)]),
        fresh,
        "every read fresh:\n{}",
        m.text
    );
    assert_eq!(outcome(&m, "failed"), 0.0);
    assert_eq!(m.sum(names::DISRUPTIONS, &[t(TARGET)]), 0.0);
    assert_eq!(gauge(&m, cnames::SLOTS_COVERED, &[]), f64::from(SLOTS));
    assert_eq!(gauge(&m, cnames::NODES, &[("role", "master")]), 3.0);
    assert_eq!(gauge(&m, cnames::NODES, &[("role", "replica")]), 3.0);
    assert!(gauge(&m, cnames::REFRESHES, &[("reason", "start")]) >= 1.0);
    for r in ["moved", "ask", "clusterdown"] {
        assert_eq!(
            attempts(&m, r),
            0.0,
            "{r} counted on a stable cluster:\n{}",
            m.text
        );
    }
    // What the cluster itself saw: every master received the canary's writes and reads
    // and holds its keys; the canary served from every master.
    for s in &shards {
        let p = s.master.port;
        let (sets, gets) = before[&p];
        assert!(command_calls(p, "set") >= sets + 5, "SETs on :{p}");
        assert!(command_calls(p, "get") >= gets + 5, "GETs on :{p}");
        let addr = format!("127.0.0.1:{p}");
        assert!(
            m.count(
                names::BACKEND_INFO,
                &[t(TARGET), ("role", "master"), ("addr", &addr)]
            ) > 0,
            "backend_info has master {addr}:\n{}",
            m.text
        );
    }
    // Key i in slot floor(i * 16384 / keys), on the master that owns that slot: once every
    // key has been written, each of those slots holds exactly one key.
    let owners: Vec<(u16, u16)> = cluster::canary_slots(KEYS)
        .into_iter()
        .map(|slot| (slot, c.shard_of(slot).master.port))
        .collect();
    wait_until(
        "one key in each of the canary's slots",
        Duration::from_secs(30),
        || {
            owners
                .iter()
                .all(|(slot, owner)| keys_in_slot(*owner, *slot) == 1)
        },
    );
    let total: usize = shards
        .iter()
        .map(|s| {
            call(s.master.port, &["DBSIZE"])
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(total, KEYS as usize, "the canary's keys and nothing else");
}

#[test]
#[cfg_attr(not(have_redis_cli), ignore = "redis-cli not installed")]
fn a_killed_master_is_one_episode_of_its_shard_as_long_as_the_failover_and_the_other_shards_stay_green()
 {
    let mut c = Cluster::start();
    let labels = labels_of(&c);
    let victim = c.shards()[0].clone();
    let soak = SoakRun::start(&config(&c, ""), Duration::from_secs(40));
    let scrape = || soak.metrics();
    wait_shards_ok(&scrape, &labels, &Scrape::default(), 10.0);
    let m0 = soak.metrics();
    assert_eq!(m0.sum(names::DISRUPTIONS, &[t(TARGET)]), 0.0);
    assert_eq!(gauge(&m0, cnames::SLOTS_COVERED, &[]), f64::from(SLOTS));

    let sampler = CoverageSampler::start(soak.port);
    let f = c.kill_master(victim.first_slot());
    let failover = f.duration().as_secs_f64();
    let shard = victim.label();
    wait_until(
        "the shard's episode to end",
        Duration::from_secs(30),
        || {
            let m = soak.metrics();
            shard_metric(&m, cnames::SHARD_EPISODE_COUNT, &shard) >= 1.0
                && shard_metric(&m, cnames::SHARD_DISRUPTED, &shard) == 0.0
                && gauge(&m, cnames::SLOTS_COVERED, &[]) == f64::from(SLOTS)
        },
    );
    let covered = sampler.finish();
    wait_shards_ok(&scrape, &labels, &soak.metrics(), 10.0);
    let m = soak.metrics();
    let episode = shard_metric(&m, cnames::SHARD_EPISODE_SUM, &shard);
    let lowest = covered
        .iter()
        .map(|(_, v)| *v)
        .fold(f64::INFINITY, f64::min);
    let election = c.log_lines(&["Failover election won", "FAIL message received"]);
    eprintln!(
        "kill -> promotion in CLUSTER SHARDS {failover:.3} s; episode of shard {shard} \
         {episode:.3} s; slots covered lowest {lowest} in {} samples; failed {} (probes {}); \
         recovered {}; refreshes {:?}\ncluster log:\n{}",
        covered.len(),
        outcome(&m, "failed"),
        probe_failed(&m),
        outcome(&m, "recovered"),
        ["start", "moved", "unreachable", "clusterdown", "periodic"]
            .map(|r| (r, gauge(&m, cnames::REFRESHES, &[("reason", r)]))),
        election.join("\n")
    );
    // That shard: one episode of about the failover the cluster reported.
    assert_eq!(
        shard_metric(&m, cnames::SHARD_DISRUPTIONS, &shard),
        1.0,
        "{}",
        m.text
    );
    assert!(
        episode >= 0.3 * failover && episode <= 3.0 * failover + 2.0,
        "episode {episode:.3} s vs kill -> promotion {failover:.3} s"
    );
    // The other shards: nothing failed, no episode.
    for other in labels.iter().filter(|l| **l != shard) {
        assert_eq!(
            shard_ops(&m, other, "failed"),
            0.0,
            "shard {other}:\n{}",
            m.text
        );
        assert_eq!(
            shard_metric(&m, cnames::SHARD_DISRUPTIONS, other),
            0.0,
            "shard {other}"
        );
    }
    // The target is the union: exactly the shard's episode.
    assert_eq!(m.sum(names::DISRUPTIONS, &[t(TARGET)]), 1.0);
    // Slots covered dipped while the master was gone and recovered.
    assert!(
        lowest < f64::from(SLOTS),
        "cluster_slots_covered never dipped: {covered:?}"
    );
    assert!(
        lowest >= f64::from(SLOTS - victim.slot_count()),
        "more than the shard's slots uncovered: {lowest}"
    );
    assert_eq!(gauge(&m, cnames::SLOTS_COVERED, &[]), f64::from(SLOTS));
    // The promoted replica is a new master behind the shard.
    assert!(m.sum(names::SWITCHES, &[t(TARGET)]) >= 1.0, "{}", m.text);
    assert!(gauge(&m, cnames::REFRESHES, &[("reason", "unreachable")]) >= 1.0);
    assert_eq!(verdict(&m, "corrupt"), 0.0);
    assert_eq!(verdict(&m, "stale"), 0.0);

    // The status API and page say which shard hurt, with the same numbers.
    let (code, body) = http_get(soak.port, "/api/v1/status", None).expect("status API");
    assert_eq!(code, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let api_t = &api["targets"][0];
    assert_eq!(api_t["mode"], "cluster", "{api_t}");
    assert_eq!(api_t["slots_covered"], 16384, "{api_t}");
    let api_shards = api_t["shards"].as_array().expect("shards");
    assert_eq!(api_shards.len(), 3, "{api_t}");
    for row in api_shards {
        let hit = row["shard"] == shard.as_str();
        assert_eq!(row["disruptions"], u64::from(hit), "{row}");
        assert_eq!(row["state"], "ok", "{row}");
        assert_eq!(row["slots"].as_u64().map(|n| n > 5000), Some(true), "{row}");
    }
    let (_, page) = http_get(soak.port, "/", None).expect("status page");
    assert_eq!(page.matches("<tr class=\"shard\">").count(), 3, "{page}");
    assert!(page.contains(&format!("<code>{shard}</code>")), "{page}");

    // The soak report: a row per shard with the same numbers.
    let r = soak.finish(Duration::from_secs(30));
    let t = r.target(TARGET);
    let rows = t["shards"].as_array().expect("shards in the report");
    let by_label: BTreeMap<String, &serde_json::Value> = rows
        .iter()
        .map(|row| (row["shard"].as_str().unwrap_or_default().to_string(), row))
        .collect();
    assert_eq!(
        by_label.keys().cloned().collect::<BTreeSet<_>>(),
        labels,
        "{t}"
    );
    for (label, row) in &by_label {
        let ok = row["operations"]["ok"].as_f64().unwrap_or(0.0);
        assert!(ok >= 10.0, "{label}: {row}");
        if *label == shard {
            assert_eq!(row["disruptions"], 1, "{row}");
            let longest = row["longest_disruption_seconds"].as_f64().unwrap_or(0.0);
            assert!(
                longest >= 0.3 * failover && longest <= 3.0 * failover + 2.0,
                "{label}: longest {longest} vs failover {failover:.3}"
            );
        } else {
            assert_eq!(row["disruptions"], 0, "{row}");
            assert_eq!(row["operations"]["failed"], 0, "{row}");
        }
    }
}

#[test]
#[cfg_attr(not(have_redis_cli), ignore = "redis-cli not installed")]
fn a_manual_failover_is_followed_through_moved_with_no_failed_operation() {
    let c = Cluster::start();
    let labels = labels_of(&c);
    let s = c.shards()[2].clone();
    let canary = Canary::start(&config(&c, ""));
    let scrape = || canary.metrics();
    wait_shards_ok(&scrape, &labels, &Scrape::default(), 10.0);
    let took = c.manual_failover(s.replicas[0].port);
    let m0 = canary.metrics();
    // The canary follows the MOVED the demoted master answers with.
    wait_until("a moved attempt", Duration::from_secs(20), || {
        attempts(&canary.metrics(), "moved") > 0.0
    });
    wait_shards_ok(&scrape, &labels, &m0, 10.0);
    wait_fresh(&scrape, 20.0);
    let m = canary.metrics();
    eprintln!(
        "manual failover {:.3} s: moved {}, recovered {}, failed {} (probes {}), disruptions {}",
        took.as_secs_f64(),
        attempts(&m, "moved"),
        outcome(&m, "recovered"),
        outcome(&m, "failed"),
        probe_failed(&m),
        m.sum(names::DISRUPTIONS, &[t(TARGET)]),
    );
    assert!(attempts(&m, "moved") > 0.0);
    assert!(gauge(&m, cnames::REFRESHES, &[("reason", "moved")]) >= 1.0);
    assert_eq!(outcome(&m, "failed"), 0.0, "{}", m.text);
    for l in &labels {
        if *l != s.label() {
            assert_eq!(shard_ops(&m, l, "failed"), 0.0, "shard {l}");
        }
    }
    assert_eq!(shard_labels(&m), labels, "the shard keeps its label");
    assert_eq!(verdict(&m, "missing"), 0.0);
    assert_eq!(verdict(&m, "stale"), 0.0);
    assert_eq!(verdict(&m, "corrupt"), 0.0);
    assert_eq!(gauge(&m, cnames::SLOTS_COVERED, &[]), f64::from(SLOTS));
    let addr = format!("127.0.0.1:{}", s.replicas[0].port);
    assert!(
        m.count(
            names::BACKEND_INFO,
            &[t(TARGET), ("role", "master"), ("addr", &addr)]
        ) > 0,
        "the promoted replica serves as master:\n{}",
        m.text
    );
}

#[test]
#[cfg_attr(not(have_redis_cli), ignore = "redis-cli not installed")]
fn slots_migrated_under_load_are_followed_through_ask_and_moved_with_nothing_failed_or_missing() {
    let c = Cluster::start();
    let labels = labels_of(&c);
    let shards = c.shards();
    let (from, to) = (shards[0].master.port, shards[1].master.port);
    let canary = Canary::start(&config(&c, ""));
    let scrape = || canary.metrics();
    wait_shards_ok(&scrape, &labels, &Scrape::default(), 10.0);
    wait_fresh(&scrape, 20.0);
    // The canary's keys in 4000-5460 (slots 4096, 4259, ... 5406) are written by now.
    let slots: Vec<u16> = cluster::canary_slots(KEYS)
        .into_iter()
        .filter(|s| (4000..=5460).contains(s))
        .collect();
    wait_until(
        "the canary's keys in the range",
        Duration::from_secs(20),
        || slots.iter().all(|s| keys_in_slot(from, *s) == 1),
    );

    // Migrating: keep moving the keys the canary writes back to the source until it has
    // been sent an ASK (or at most 10 s), then finish.
    let mut m = c.begin_migration(4000, 5460, from, to);
    let deadline = Instant::now() + Duration::from_secs(10);
    while attempts(&canary.metrics(), "ask") == 0.0 && Instant::now() < deadline {
        m.move_keys();
        std::thread::sleep(Duration::from_millis(50));
    }
    let moved_keys = m.moved;
    m.finish(&c);
    let m0 = canary.metrics();
    wait_until(
        "the canary to follow the new owner",
        Duration::from_secs(20),
        || attempts(&canary.metrics(), "moved") > 0.0,
    );
    wait_fresh(&scrape, 40.0);
    let m = canary.metrics();
    eprintln!(
        "migrated {} slots ({moved_keys} keys moved): ask {}, moved {}, recovered {}, failed {} \
         (probes {}), missing {}, shards {:?}",
        5460 - 4000 + 1,
        attempts(&m, "ask"),
        attempts(&m, "moved"),
        outcome(&m, "recovered"),
        outcome(&m, "failed"),
        probe_failed(&m),
        verdict(&m, "missing"),
        shard_labels(&m),
    );
    assert!(attempts(&m, "ask") + attempts(&m, "moved") > 0.0);
    assert_eq!(outcome(&m, "failed"), 0.0, "{}", m.text);
    assert_eq!(verdict(&m, "missing"), 0.0);
    assert_eq!(verdict(&m, "stale"), 0.0);
    assert_eq!(verdict(&m, "corrupt"), 0.0);
    assert_eq!(
        m.sum(names::DISRUPTIONS, &[t(TARGET)]),
        0.0,
        "redirects are no episode"
    );
    // Both shards keep their names (and their series) although their first ranges moved.
    assert_eq!(shard_labels(&m), labels, "a migration renames no shard");
    assert_eq!(gauge(&m, cnames::SLOTS_COVERED, &[]), f64::from(SLOTS));
    // The keys live on the new owner now, and the canary goes on writing them there.
    for s in &slots {
        assert_eq!(keys_in_slot(to, *s), 1, "slot {s} on :{to}");
        assert_eq!(keys_in_slot(from, *s), 0, "slot {s} on :{from}");
    }
    let sets = command_calls(to, "set");
    wait_fresh(&scrape, 20.0);
    assert!(command_calls(to, "set") > sets);
    assert!(outcome(&m, "ok") >= outcome(&m0, "ok"));
}

#[test]
#[cfg_attr(not(have_redis_cli), ignore = "redis-cli not installed")]
fn a_master_without_replica_lost_is_clusterdown_on_every_shard_until_it_is_back() {
    let mut c = Cluster::start_without_replicas();
    let labels = labels_of(&c);
    let victim = c.shards()[0].clone();
    let canary = Canary::start(&config(&c, ""));
    let scrape = || canary.metrics();
    wait_shards_ok(&scrape, &labels, &Scrape::default(), 10.0);

    let i = c.node_on(victim.master.port);
    let killed = Instant::now();
    c.kill(i);
    // With cluster-require-full-coverage yes, the survivors stop serving every slot once
    // they agree the master failed.
    c.wait_state("fail");
    let failed_at = Instant::now();
    wait_until(
        "every shard disrupted, CLUSTERDOWN counted",
        Duration::from_secs(30),
        || {
            let m = canary.metrics();
            // A failed probe alone disrupts a shard: wait for an operation of each shard to
            // have run out of retries too, so that every shard's data path was hit.
            attempts(&m, "clusterdown") > 0.0
                && labels.iter().all(|l| {
                    shard_metric(&m, cnames::SHARD_DISRUPTED, l) == 1.0
                        && shard_ops(&m, l, "failed") > 0.0
                })
        },
    );
    let back_at = Instant::now();
    c.restart(i);
    let ok_at = Instant::now();
    wait_until(
        "every shard's episode to end",
        Duration::from_secs(30),
        || {
            let m = canary.metrics();
            labels
                .iter()
                .all(|l| shard_metric(&m, cnames::SHARD_DISRUPTED, l) == 0.0)
        },
    );
    let m0 = canary.metrics();
    wait_shards_ok(&scrape, &labels, &m0, 5.0);
    let m = canary.metrics();
    let down = ok_at.duration_since(failed_at).as_secs_f64();
    eprintln!(
        "kill -> cluster_state:fail {:.3} s; fail -> ok {down:.3} s (restart at {:.3} s); \
         clusterdown {}, refused {}, episodes {:?}, refreshes clusterdown {}",
        failed_at.duration_since(killed).as_secs_f64(),
        back_at.duration_since(killed).as_secs_f64(),
        attempts(&m, "clusterdown"),
        m.sum(names::CONNECTS, &[t(TARGET), ("result", "refused")]),
        labels
            .iter()
            .map(|l| (l.clone(), shard_metric(&m, cnames::SHARD_EPISODE_SUM, l)))
            .collect::<Vec<_>>(),
        gauge(&m, cnames::REFRESHES, &[("reason", "clusterdown")]),
    );
    assert!(attempts(&m, "clusterdown") > 0.0);
    assert!(gauge(&m, cnames::REFRESHES, &[("reason", "clusterdown")]) >= 1.0);
    // Every shard went through the outage the cluster declared: one episode each, as long
    // as the cluster was down at most (plus the time to notice), ended by the restart.
    let whole = ok_at.duration_since(killed).as_secs_f64();
    for l in &labels {
        assert_eq!(
            shard_metric(&m, cnames::SHARD_DISRUPTIONS, l),
            1.0,
            "shard {l}"
        );
        // Retries (5, backing off to 1.6 s) may outlast a 2-4 s outage: an operation of
        // the shard either failed or recovered, none went through untouched.
        assert!(
            shard_ops(&m, l, "failed") + shard_ops(&m, l, "recovered") > 0.0,
            "shard {l}: no operation was affected"
        );
        let episode = shard_metric(&m, cnames::SHARD_EPISODE_SUM, l);
        assert!(
            episode >= 0.3 * down && episode <= 3.0 * whole + 2.0,
            "shard {l}: episode {episode:.3} s, cluster down {down:.3} s"
        );
    }
    // The killed shard's master also refused connections (a connect failure counts in
    // connects_total, not attempts_total); the target is the union.
    assert!(
        m.sum(names::CONNECTS, &[t(TARGET), ("result", "refused")]) > 0.0,
        "{}",
        m.text
    );
    assert_eq!(m.sum(names::DISRUPTIONS, &[t(TARGET)]), 1.0, "{}", m.text);
    assert_eq!(gauge(&m, cnames::SLOTS_COVERED, &[]), f64::from(SLOTS));
}
