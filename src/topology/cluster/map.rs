//! The slot map of a cluster as the canary last learned it: shards (each named by its first
//! slot range), their master and replicas, and which shard owns each slot. Parsed from
//! `CLUSTER SHARDS` (Redis 7+) or `CLUSTER SLOTS` (older servers, KeyDB). Server replies are
//! untrusted: anything malformed is skipped, never trusted into a panic or a huge label.

use std::collections::{BTreeMap, BTreeSet};

use redis::Value;

use super::tags::SLOTS;

/// Longest host name accepted from a server (it becomes part of a label and a log line).
const MAX_HOST: usize = 255;
/// Most shards accepted from one reply: a cluster has at most 16,384 (one slot each).
const MAX_SHARDS: usize = SLOTS as usize;

/// A node's address as the cluster announces it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl Addr {
    /// Parses `host:port` (a MOVED/ASK target; IPv6 hosts carry colons, the port is last).
    pub fn parse(text: &str) -> Option<Addr> {
        let (host, port) = text.rsplit_once(':')?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = port.parse().ok().filter(|p| *p != 0)?;
        valid_host(host).then(|| Addr {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_' | b'%'))
}

/// Slot ranges, inclusive.
pub type Ranges = Vec<(u16, u16)>;

/// One shard: a master and its replicas, and the slot ranges they serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The `shard` label: the first slot range (`"0-5460"`) when the canary first saw the
    /// shard, kept while the shard keeps a node ([`carry_labels`]).
    pub label: String,
    pub ranges: Vec<(u16, u16)>,
    /// `None` while the shard has no master the cluster calls healthy.
    pub master: Option<Addr>,
    pub replicas: Vec<Addr>,
}

/// The whole map.
#[derive(Clone, Debug, Default)]
pub struct Map {
    pub shards: Vec<Shard>,
    /// Index into `shards` of the owner of each slot; `u16::MAX` for a slot nobody serves.
    owner: Vec<u16>,
}

impl Map {
    /// A map of `shards` (ranges clipped to the slot space; a slot claimed twice goes to the
    /// first claimant).
    pub fn new(mut shards: Vec<Shard>) -> Map {
        shards.truncate(MAX_SHARDS);
        shards.sort_by_key(|s| s.ranges.first().map_or(u16::MAX, |r| r.0));
        let mut owner = vec![u16::MAX; usize::from(SLOTS)];
        for (i, shard) in shards.iter().enumerate() {
            for &(a, b) in &shard.ranges {
                for slot in a..=b.min(SLOTS - 1) {
                    let o = &mut owner[usize::from(slot)];
                    if *o == u16::MAX {
                        *o = i as u16;
                    }
                }
            }
        }
        Map { shards, owner }
    }

    /// Whether the map knows any slot at all.
    pub fn is_empty(&self) -> bool {
        self.owner.iter().all(|&o| o == u16::MAX)
    }

    /// The shard that owns `slot`.
    pub fn shard_of(&self, slot: u16) -> Option<&Shard> {
        let o = *self.owner.get(usize::from(slot))?;
        self.shards.get(usize::from(o))
    }

    /// Slots whose shard has a master that is not in `down`.
    pub fn covered(&self, down: impl Fn(&Addr) -> bool) -> u32 {
        self.shards
            .iter()
            .filter(|s| s.master.as_ref().is_some_and(|m| !down(m)))
            .flat_map(|s| s.ranges.iter())
            .map(|&(a, b)| u32::from(b.min(SLOTS - 1)) + 1 - u32::from(a))
            .sum()
    }

    /// Every node of the map, masters first.
    pub fn nodes(&self) -> impl Iterator<Item = &Addr> {
        self.shards
            .iter()
            .filter_map(|s| s.master.as_ref())
            .chain(self.shards.iter().flat_map(|s| s.replicas.iter()))
    }
}

/// Parses a `CLUSTER SHARDS` reply (RESP2 arrays of key/value pairs, or RESP3 maps). `tls`
/// picks `tls-port` over `port`.
pub fn parse_shards(reply: &Value, tls: bool) -> Option<Vec<Shard>> {
    let Value::Array(items) = reply else {
        return None;
    };
    let mut shards = Vec::new();
    for item in items.iter().take(MAX_SHARDS) {
        let fields = pairs(item)?;
        let mut ranges = Vec::new();
        let mut master = None;
        let mut replicas = Vec::new();
        for (key, value) in fields {
            match key.as_str() {
                "slots" => {
                    let Value::Array(bounds) = value else {
                        return None;
                    };
                    for pair in bounds.chunks(2) {
                        if let [a, b] = pair
                            && let (Some(a), Some(b)) = (slot(a), slot(b))
                            && a <= b
                        {
                            ranges.push((a, b));
                        }
                    }
                }
                "nodes" => {
                    let Value::Array(nodes) = value else {
                        return None;
                    };
                    for node in nodes.iter().take(64) {
                        let Some(fields) = pairs(node) else { continue };
                        let get =
                            |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
                        let host = get("endpoint")
                            .and_then(text)
                            .filter(|h| h != "?" && !h.is_empty())
                            .or_else(|| get("ip").and_then(text));
                        let port = if tls { get("tls-port") } else { get("port") }
                            .and_then(int)
                            .and_then(|p| u16::try_from(p).ok())
                            .filter(|p| *p != 0);
                        let (Some(host), Some(port)) = (host, port) else {
                            continue;
                        };
                        if !valid_host(&host) {
                            continue;
                        }
                        let addr = Addr { host, port };
                        let role = get("role").and_then(text).unwrap_or_default();
                        let health = get("health").and_then(text).unwrap_or_default();
                        match role.as_str() {
                            "master" if health != "fail" && health != "failed" => {
                                master = Some(addr)
                            }
                            "master" => {}
                            _ => replicas.push(addr),
                        }
                    }
                }
                _ => {}
            }
        }
        // A shard without slots (a replica set being built, a drained master) serves no key.
        if ranges.is_empty() {
            continue;
        }
        ranges.sort_unstable();
        shards.push(Shard {
            label: format!("{}-{}", ranges[0].0, ranges[0].1),
            ranges,
            master,
            replicas,
        });
    }
    Some(shards)
}

/// Parses a `CLUSTER SLOTS` reply: one entry per range, `[start, end, master, replicas...]`,
/// grouped into shards by master.
pub fn parse_slots(reply: &Value) -> Option<Vec<Shard>> {
    let Value::Array(items) = reply else {
        return None;
    };
    let mut by_master: BTreeMap<Addr, (Ranges, Vec<Addr>)> = BTreeMap::new();
    for item in items.iter().take(usize::from(SLOTS)) {
        let Value::Array(parts) = item else { continue };
        let (Some(a), Some(b)) = (parts.first().and_then(slot), parts.get(1).and_then(slot)) else {
            continue;
        };
        let mut nodes = parts.iter().skip(2).filter_map(|n| {
            let Value::Array(f) = n else { return None };
            let host = f.first().and_then(text)?;
            let port = f.get(1).and_then(int).and_then(|p| u16::try_from(p).ok())?;
            (valid_host(&host) && port != 0).then_some(Addr { host, port })
        });
        let Some(master) = nodes.next() else { continue };
        let entry = by_master.entry(master).or_default();
        if a <= b {
            entry.0.push((a, b));
        }
        for r in nodes.take(64) {
            if !entry.1.contains(&r) {
                entry.1.push(r);
            }
        }
    }
    Some(
        by_master
            .into_iter()
            .filter(|(_, (ranges, _))| !ranges.is_empty())
            .map(|(master, (mut ranges, replicas))| {
                ranges.sort_unstable();
                Shard {
                    label: format!("{}-{}", ranges[0].0, ranges[0].1),
                    ranges,
                    master: Some(master),
                    replicas,
                }
            })
            .collect(),
    )
}

/// Gives each shard of a new map the label of the old map's shard it shares a node with
/// (its master or a replica), so a shard keeps its name through a failover and while slots
/// migrate to or from it. Named by its first range, a shard was renamed at every migrated
/// slot that changed that range: a live resharding made a new label (and a new set of
/// series) per step. A shard with no node in an old one is named by its first range, with
/// `#2`, `#3`, ... added should another shard hold that name.
pub fn carry_labels(new: &mut [Shard], old: &[Shard]) {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut fresh = Vec::new();
    for (i, s) in new.iter_mut().enumerate() {
        match old
            .iter()
            .find(|o| !taken.contains(&o.label) && shares_node(s, o))
        {
            Some(o) => {
                s.label.clone_from(&o.label);
                taken.insert(o.label.clone());
            }
            None => fresh.push(i),
        }
    }
    for i in fresh {
        let s = &mut new[i];
        let base = s.label.clone();
        let mut n = 1;
        while taken.contains(&s.label) {
            n += 1;
            s.label = format!("{base}#{n}");
        }
        taken.insert(s.label.clone());
    }
}

/// Whether shards `a` and `b` have a node in common.
fn shares_node(a: &Shard, b: &Shard) -> bool {
    let in_b = |n: &Addr| b.master.as_ref() == Some(n) || b.replicas.contains(n);
    a.master.iter().chain(&a.replicas).any(in_b)
}

/// The key/value pairs of a RESP2 flat array or a RESP3 map, keys as text.
fn pairs(v: &Value) -> Option<Vec<(String, &Value)>> {
    match v {
        Value::Array(items) => Some(
            items
                .chunks(2)
                .filter_map(|kv| match kv {
                    [k, v] => Some((text(k)?, v)),
                    _ => None,
                })
                .collect(),
        ),
        Value::Map(items) => Some(
            items
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, v)))
                .collect(),
        ),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) if b.len() <= MAX_HOST => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) if s.len() <= MAX_HOST => Some(s.clone()),
        Value::VerbatimString { text, .. } if text.len() <= MAX_HOST => Some(text.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

fn slot(v: &Value) -> Option<u16> {
    int(v)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&s| s < SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn node(ip: &str, port: i64, role: &str, health: &str) -> Value {
        Value::Array(vec![
            bulk("id"),
            bulk("abc"),
            bulk("port"),
            Value::Int(port),
            bulk("ip"),
            bulk(ip),
            bulk("endpoint"),
            bulk(ip),
            bulk("role"),
            bulk(role),
            bulk("health"),
            bulk(health),
        ])
    }

    fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
        Value::Array(vec![
            bulk("slots"),
            Value::Array(slots.iter().map(|&s| Value::Int(s)).collect()),
            bulk("nodes"),
            Value::Array(nodes),
        ])
    }

    #[test]
    fn cluster_shards_make_three_shards_named_by_their_first_range() {
        let reply = Value::Array(vec![
            shard(
                &[5461, 10922],
                vec![
                    node("127.0.0.1", 7001, "master", "online"),
                    node("127.0.0.1", 7004, "replica", "online"),
                ],
            ),
            shard(
                &[0, 5460],
                vec![node("127.0.0.1", 7000, "master", "online")],
            ),
            shard(
                &[10923, 16383],
                vec![
                    node("127.0.0.1", 7002, "master", "fail"),
                    node("127.0.0.1", 7005, "replica", "online"),
                ],
            ),
            shard(&[], vec![node("127.0.0.1", 7009, "master", "online")]),
        ]);
        let map = Map::new(parse_shards(&reply, false).unwrap());
        let labels: Vec<&str> = map.shards.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["0-5460", "5461-10922", "10923-16383"]);
        assert_eq!(
            map.shard_of(6000).unwrap().master.as_ref().unwrap().port,
            7001
        );
        assert_eq!(map.shard_of(6000).unwrap().replicas.len(), 1);
        // The failed master serves nothing: its slots are not covered.
        assert!(map.shard_of(16383).unwrap().master.is_none());
        assert_eq!(map.covered(|_| false), 10923);
        assert_eq!(
            map.covered(|a| a.port == 7000),
            10923 - 5461,
            "a master the canary cannot reach"
        );
        assert_eq!(map.nodes().count(), 4);
    }

    #[test]
    fn cluster_slots_group_ranges_by_master() {
        let range = |a: i64, b: i64, ports: &[i64]| {
            let mut v = vec![Value::Int(a), Value::Int(b)];
            for p in ports {
                v.push(Value::Array(vec![
                    bulk("127.0.0.1"),
                    Value::Int(*p),
                    bulk("id"),
                ]));
            }
            Value::Array(v)
        };
        let reply = Value::Array(vec![
            range(100, 5460, &[7000, 7003]),
            range(0, 99, &[7000, 7003]),
            range(5461, 16383, &[7001]),
        ]);
        let map = Map::new(parse_slots(&reply).unwrap());
        let labels: Vec<&str> = map.shards.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(labels, ["0-99", "5461-16383"]);
        assert_eq!(map.covered(|_| false), 16384);
        assert_eq!(map.shards[0].replicas.len(), 1);
    }

    #[test]
    fn hostile_replies_are_skipped_not_trusted() {
        assert!(parse_shards(&Value::Int(3), false).is_none());
        let reply = Value::Array(vec![
            shard(
                &[0, 99999],
                vec![node("127.0.0.1", 7000, "master", "online")],
            ),
            shard(&[20, 10], vec![node("127.0.0.1", 7000, "master", "online")]),
            shard(&[0, 10], vec![node("bad host\n", 7000, "master", "online")]),
            shard(&[0, 10], vec![node("127.0.0.1", 70000, "master", "online")]),
        ]);
        let shards = parse_shards(&reply, false).unwrap();
        assert_eq!(shards.len(), 2);
        assert!(shards.iter().all(|s| s.master.is_none()));
        assert_eq!(Addr::parse("::1:7000").unwrap().to_string(), "[::1]:7000");
        assert_eq!(Addr::parse("127.0.0.1:7000").unwrap().port, 7000);
        assert!(Addr::parse("127.0.0.1").is_none());
        assert!(Addr::parse("a b:1").is_none());
    }

    fn addr(port: u16) -> Addr {
        Addr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn with(ranges: &[(u16, u16)], master: Option<u16>, replicas: &[u16]) -> Shard {
        Shard {
            label: format!("{}-{}", ranges[0].0, ranges[0].1),
            ranges: ranges.to_vec(),
            master: master.map(addr),
            replicas: replicas.iter().map(|&p| addr(p)).collect(),
        }
    }

    fn labels_of(shards: &[Shard]) -> Vec<&str> {
        shards.iter().map(|s| s.label.as_str()).collect()
    }

    #[test]
    fn a_shard_keeps_its_label_through_a_failover_and_a_migration() {
        let old = vec![
            with(&[(0, 5460)], Some(1), &[4]),
            with(&[(5461, 10922)], Some(2), &[5]),
            with(&[(10923, 16383)], Some(3), &[6]),
        ];
        // 4000-5460 migrated from the first shard to the second; the third failed over.
        let mut new = vec![
            with(&[(0, 3999)], Some(1), &[4]),
            with(&[(4000, 10922)], Some(2), &[5]),
            with(&[(10923, 16383)], Some(6), &[]),
        ];
        carry_labels(&mut new, &old);
        assert_eq!(labels_of(&new), ["0-5460", "5461-10922", "10923-16383"]);
        // Map after map: the labels stay.
        let mut next = new.clone();
        next[0].ranges = vec![(0, 99)];
        next[0].label = "0-99".into();
        carry_labels(&mut next, &new);
        assert_eq!(labels_of(&next), ["0-5460", "5461-10922", "10923-16383"]);
    }

    #[test]
    fn a_new_shard_is_named_by_its_first_range_and_never_takes_a_name_in_use() {
        let old = vec![
            with(&[(0, 5460)], Some(1), &[]),
            with(&[(5461, 16383)], Some(2), &[]),
        ];
        let mut new = vec![
            // The first shard moved all of 0-5460 away and serves 5461-6000 now...
            with(&[(5461, 6000)], Some(1), &[]),
            with(&[(6001, 16383)], Some(2), &[]),
            // ...a new node got 0-5460, and one more node claims a name the second holds.
            with(&[(0, 5460)], Some(7), &[]),
            with(&[(5461, 16383)], Some(8), &[]),
        ];
        carry_labels(&mut new, &old);
        assert_eq!(
            labels_of(&new),
            ["0-5460", "5461-16383", "0-5460#2", "5461-16383#2"]
        );
        // No node in common with the old map at all: first ranges.
        let mut replaced = vec![with(&[(0, 16383)], Some(9), &[10])];
        carry_labels(&mut replaced, &old);
        assert_eq!(labels_of(&replaced), ["0-16383"]);
    }
}
