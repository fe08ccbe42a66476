//! Node discovery by DNS (DESIGN §14), against a real `dnsmasq` and real `redis-server`
//! replicas on loopback. The target's `nodes` is a DNS name that dnsmasq serves
//! (`discovery_resolver` points at it); the test changes the records and reloads them, and
//! watches the canary follow: a node listed is followed (`node_up 1`, replication delays
//! observed), a node added is followed, a node removed is dropped with its series after
//! `backend_ttl` (not before), and while the DNS server is down every round is counted in
//! `discovery_errors_total` and the known nodes are still measured.
//!
//! `dns://NAME:PORT` lists addresses that share one port: the replicas bind 127.0.0.2,
//! 127.0.0.3... on one reserved port, as the pods behind a headless Service do. With
//! `dns+srv://`, nodes are labelled by their SRV target name, and a node whose name moves
//! to a new address (a rescheduled StatefulSet pod) is followed there under the same
//! label, its series carrying on.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::dnsmasq::{Dnsmasq, Srv};
use support::names::*;
use support::*;

const TARGET: &str = "dns";

/// Short enough that the test sees several rounds a second.
const INTERVAL: &str = "500ms";

/// How long a node no longer listed is still followed.
const BACKEND_TTL: Duration = Duration::from_secs(3);

/// Generous deadline for anything the canary does within a few rounds.
const WITHIN: Duration = Duration::from_secs(30);

const DELAY_COUNT: &str = "redis_canary_replication_delay_seconds_count";
const DISCOVERY_ERRORS: &str = "redis_canary_discovery_errors_total";

/// The `node` labels followed now (their `node_up` series).
fn followed(m: &Scrape) -> BTreeSet<String> {
    m.labels(NODE_UP, &[t(TARGET)])
        .into_iter()
        .filter_map(|l| l.get("node").cloned())
        .collect()
}

fn up(m: &Scrape, node: &str) -> f64 {
    m.sum(NODE_UP, &[t(TARGET), ("node", node)])
}

fn delays(m: &Scrape, node: &str) -> f64 {
    m.sum(DELAY_COUNT, &[t(TARGET), ("node", node)])
}

fn errors(m: &Scrape) -> f64 {
    m.sum(DISCOVERY_ERRORS, &[t(TARGET)])
}

/// Waits until every node in `nodes` is up and has at least `n` replication delays.
fn wait_measured(c: &Canary, nodes: &[&str], n: f64) {
    wait_until(
        &format!("{nodes:?} up with {n} replication delays each"),
        WITHIN,
        || {
            let m = c.metrics();
            nodes
                .iter()
                .all(|node| up(&m, node) == 1.0 && delays(&m, node) >= n)
        },
    );
}

/// A master on 127.0.0.1 that replicas sync from at once.
fn master() -> RedisServer {
    RedisServer::start(&["--repl-diskless-sync-delay", "0"])
}

/// A replica of `master` bound to `ip` on `port`.
fn replica(ip: &str, port: u16, master: &RedisServer) -> RedisServer {
    RedisServer::start_at(
        ip,
        port,
        &["--replicaof", "127.0.0.1", &master.port.to_string()],
    )
}

fn canary(master: &RedisServer, nodes: &str, dns: &Dnsmasq) -> Canary {
    Canary::start(&format!(
        r#"
[[targets]]
name = "{TARGET}"
url = "{url}"
keys = 100
nodes = "{nodes}"
discovery_resolver = "{resolver}"
discovery_interval = "{INTERVAL}"
backend_ttl = "{ttl}s"
"#,
        url = master.url(),
        resolver = dns.addr(),
        ttl = BACKEND_TTL.as_secs(),
    ))
}

/// While the DNS server is down: rounds are counted as errors, logged once, and the nodes
/// known stay followed and measured for longer than `backend_ttl`.
fn dns_down_keeps_the_known_nodes(c: &Canary, dns: &mut Dnsmasq, known: &[&str]) {
    let before = c.metrics();
    let errors_before = errors(&before);
    dns.stop();
    let stopped = Instant::now();
    wait_until("discovery errors while dnsmasq is down", WITHIN, || {
        errors(&c.metrics()) >= errors_before + 3.0
    });
    // Past backend_ttl with no answer: the nodes would be gone if failed rounds aged them.
    let counts: Vec<f64> = known.iter().map(|n| delays(&c.metrics(), n)).collect();
    wait_until(
        "the known nodes measured past backend_ttl without DNS",
        WITHIN,
        || {
            let m = c.metrics();
            stopped.elapsed() > BACKEND_TTL + Duration::from_secs(1)
                && known
                    .iter()
                    .zip(&counts)
                    .all(|(n, &before)| up(&m, n) == 1.0 && delays(&m, n) >= before + 2.0)
        },
    );
    let m = c.metrics();
    assert_eq!(
        followed(&m),
        known.iter().map(|n| n.to_string()).collect(),
        "the last good set is kept"
    );
    assert!(errors(&m) >= errors_before + 3.0);
    // Logged at most once a minute, however many rounds failed (a restart of dnsmasq
    // earlier in the test may have logged the first; the test runs under two minutes).
    let lines = c.log().matches("DNS discovery failed").count();
    eprintln!(
        "dns down for {:?}: {} discovery errors, {lines} log line(s), {known:?} still followed",
        stopped.elapsed(),
        errors(&m) - errors_before
    );
    assert!(
        (1..=2).contains(&lines) && (lines as f64) < errors(&m),
        "{lines} log lines for {} errors",
        errors(&m)
    );
}

#[test]
#[cfg_attr(not(have_redis_server), ignore = "redis-server not installed")]
#[cfg_attr(not(have_dnsmasq), ignore = "dnsmasq not installed")]
fn nodes_follow_the_a_records_of_a_name() {
    let m0 = master();
    let port = reserve_port();
    let p = port.port;
    let (a, b, x) = ("127.0.0.2", "127.0.0.3", "127.0.0.4");
    let _replicas: Vec<RedisServer> = [a, b, x].iter().map(|ip| replica(ip, p, &m0)).collect();
    let node = |ip: &str| format!("{ip}:{p}");
    let mut dns = Dnsmasq::start(
        &[(a, "nodes.test"), (b, "nodes.test"), (x, "other.test")],
        &[],
    );
    let c = canary(&m0, &format!("dns://nodes.test:{p}"), &dns);

    // Every address of the name is followed; nothing else.
    wait_measured(&c, &[&node(a), &node(b)], 2.0);
    let m = c.metrics();
    assert_eq!(followed(&m), [node(a), node(b)].into_iter().collect());
    assert_eq!(errors(&m), 0.0, "no discovery error while dnsmasq answers");

    // A node added to DNS is followed.
    dns.set_hosts(
        &[(a, "nodes.test"), (b, "nodes.test"), (x, "nodes.test")],
        "nodes.test",
    );
    wait_measured(&c, &[&node(x)], 2.0);

    // A node removed from DNS goes with its series after backend_ttl, not before.
    let removed = Instant::now();
    dns.set_hosts(&[(b, "nodes.test"), (x, "nodes.test")], "nodes.test");
    wait_until("the removed node to be dropped", WITHIN, || {
        !followed(&c.metrics()).contains(&node(a))
    });
    let took = removed.elapsed();
    eprintln!("removed from DNS, dropped after {took:?} (backend_ttl {BACKEND_TTL:?})");
    assert!(
        took >= BACKEND_TTL - Duration::from_secs(1),
        "dropped after {took:?}, before backend_ttl {BACKEND_TTL:?}"
    );
    let m = c.metrics();
    assert_eq!(m.count(DELAY_COUNT, &[t(TARGET), ("node", &node(a))]), 0);
    assert_eq!(followed(&m), [node(b), node(x)].into_iter().collect());

    dns_down_keeps_the_known_nodes(&c, &mut dns, &[&node(b), &node(x)]);
}

#[test]
#[cfg_attr(not(have_redis_server), ignore = "redis-server not installed")]
#[cfg_attr(not(have_dnsmasq), ignore = "dnsmasq not installed")]
fn nodes_follow_the_srv_records_of_a_service_by_name() {
    let m0 = master();
    let port = reserve_port();
    let p = port.port;
    let service = "_redis._tcp.nodes.test";
    let srv = |target: &str| Srv {
        name: service.into(),
        target: target.into(),
        port: p,
    };
    let node = |name: &str| format!("{name}:{p}");
    let (a_ip, b_ip, c_ip, b_moved_ip) = ("127.0.0.5", "127.0.0.6", "127.0.0.7", "127.0.0.8");
    let _a = replica(a_ip, p, &m0);
    let mut b = replica(b_ip, p, &m0);
    let _c = replica(c_ip, p, &m0);
    let _b_moved = replica(b_moved_ip, p, &m0);
    let mut hosts = vec![
        (a_ip, "node-a.test"),
        (b_ip, "node-b.test"),
        (c_ip, "node-c.test"),
    ];
    let mut dns = Dnsmasq::start(&hosts, &[srv("node-a.test"), srv("node-b.test")]);
    let c = canary(&m0, &format!("dns+srv://{service}"), &dns);

    // Every SRV target is followed, labelled by its name and port.
    let (a, b_node, c_node) = (
        node("node-a.test"),
        node("node-b.test"),
        node("node-c.test"),
    );
    wait_measured(&c, &[&a, &b_node], 2.0);
    let m = c.metrics();
    assert_eq!(
        followed(&m),
        [a.clone(), b_node.clone()].into_iter().collect()
    );
    assert_eq!(errors(&m), 0.0, "no discovery error while dnsmasq answers");

    // A record added (dnsmasq restarted: SRV records are read at start only).
    dns.set_srv(
        &[srv("node-a.test"), srv("node-b.test"), srv("node-c.test")],
        service,
    );
    wait_measured(&c, &[&c_node], 2.0);

    // A record removed: dropped after backend_ttl.
    let removed = Instant::now();
    dns.set_srv(&[srv("node-b.test"), srv("node-c.test")], service);
    wait_until("the removed node to be dropped", WITHIN, || {
        !followed(&c.metrics()).contains(&a)
    });
    let took = removed.elapsed();
    eprintln!("removed from DNS, dropped after {took:?} (backend_ttl {BACKEND_TTL:?})");
    assert!(
        took >= BACKEND_TTL - Duration::from_secs(1),
        "dropped after {took:?}, before backend_ttl {BACKEND_TTL:?}"
    );
    assert_eq!(
        followed(&c.metrics()),
        [b_node.clone(), c_node.clone()].into_iter().collect()
    );

    // node-b's pod is rescheduled: same name, new address, old one gone. It is followed at
    // the new address under the same label, and its series carry on (never reset).
    let before = delays(&c.metrics(), &b_node);
    hosts[1] = (b_moved_ip, "node-b.test");
    dns.set_hosts(&hosts, "node-b.test");
    b.kill();
    wait_until("node-b measured at its new address", WITHIN, || {
        let m = c.metrics();
        up(&m, &b_node) == 1.0 && delays(&m, &b_node) >= before + 3.0
    });
    assert!(
        c.log().contains("a node DNS lists has a new address"),
        "{}",
        c.log()
    );
    assert_eq!(
        followed(&c.metrics()),
        [b_node.clone(), c_node.clone()].into_iter().collect()
    );

    dns_down_keeps_the_known_nodes(&c, &mut dns, &[&b_node, &c_node]);
}
