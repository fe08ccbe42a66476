//! Many targets, many replicas, no restarts (DESIGN §14), as pure logic: which replica owns
//! a target ([`Shard`], rendezvous hashing of its name), and what a reload changes
//! ([`Plan`]: targets added, removed, changed, unchanged; [`needs_restart`]: global keys
//! that only a restart applies). The daemon does the starting and stopping.

use std::collections::BTreeMap;
use std::fmt;

use crate::config::{Config, Target};

/// Most replicas a shard may name: ownership costs one hash per replica and target, and
/// no fleet needs more canaries than this.
pub const MAX_SHARD_COUNT: u32 = 1024;

/// `shard = "INDEX/COUNT"`: this replica is `index` of `count`, and runs only the targets
/// that rendezvous hashing gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// 0-based, below `count`.
    pub index: u32,
    /// At least 1.
    pub count: u32,
    /// `INDEX` was `ordinal`: read from the hostname's trailing `-N`.
    pub from_ordinal: bool,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Parses `INDEX/COUNT`; `INDEX` may be `ordinal`, the trailing `-N` of `hostname`
    /// (asked only then). The error says what is wrong, for a message naming the key.
    pub fn parse(text: &str, hostname: impl FnOnce() -> String) -> Result<Shard, String> {
        let Some((index, count)) = text.trim().split_once('/') else {
            return Err(
                "expected INDEX/COUNT such as \"0/3\" or \"ordinal/3\" (INDEX below COUNT)".into(),
            );
        };
        let count: u32 = match count.trim().parse() {
            Ok(n) if (1..=MAX_SHARD_COUNT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "COUNT must be a whole number from 1 to {MAX_SHARD_COUNT}"
                ));
            }
        };
        let index = index.trim();
        let (value, from_ordinal) = if index == "ordinal" {
            let host = hostname();
            match ordinal_of(&host) {
                Some(n) => (n, true),
                None => {
                    return Err(format!(
                        "INDEX \"ordinal\" needs a hostname ending in -N (as a StatefulSet names its pods), and the hostname is {:?}",
                        host
                    ));
                }
            }
        } else {
            match index.parse::<u32>() {
                Ok(n) => (n, false),
                Err(_) => {
                    return Err(
                        "INDEX must be a whole number or \"ordinal\" (the hostname's trailing -N)"
                            .into(),
                    );
                }
            }
        };
        if value >= count {
            let what = if from_ordinal {
                format!("the hostname's ordinal {value}")
            } else {
                format!("INDEX {value}")
            };
            return Err(format!(
                "{what} is not below COUNT {count} (replicas are numbered from 0)"
            ));
        }
        Ok(Shard {
            index: value,
            count,
            from_ordinal,
        })
    }

    /// Whether this replica owns the target named `name`.
    pub fn owns(&self, name: &str) -> bool {
        owner(name, self.count) == self.index
    }
}

/// The trailing `-N` of a hostname (`redis-canary-2` → 2), as a StatefulSet names its pods.
pub fn ordinal_of(hostname: &str) -> Option<u32> {
    let (_, digits) = hostname.trim().rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The replica (of `count`) that owns the target named `name`: the one with the highest
/// weight (rendezvous hashing). Changing `count` moves only the targets whose highest
/// weight is on a replica added or removed, about 1/`count` of them.
pub fn owner(name: &str, count: u32) -> u32 {
    (0..count.max(1))
        .max_by_key(|&replica| (weight(name, replica), std::cmp::Reverse(replica)))
        .unwrap_or(0)
}

/// FNV-1a 64 offset basis and prime: a hash fixed by its definition, unlike std's
/// `DefaultHasher`, so every version and platform assigns targets to the same replicas.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The weight of `replica` for the target named `name`: FNV-1a over the name, a separator
/// and the replica number, then the SplitMix64 finaliser, which spreads the small
/// differences between replica numbers over all 64 bits.
pub fn weight(name: &str, replica: u32) -> u64 {
    let mut h = FNV_OFFSET;
    for b in name
        .bytes()
        .chain(std::iter::once(0xff))
        .chain(replica.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The targets of `config` this replica runs: all of them without `shard`, in configuration
/// order.
pub fn owned(config: &Config) -> Vec<&Target> {
    owned_with_index(config)
        .into_iter()
        .map(|(_, t)| t)
        .collect()
}

/// Like [`owned`], each with its index in `config.targets` (for messages naming
/// `targets[i]`).
pub fn owned_with_index(config: &Config) -> Vec<(usize, &Target)> {
    config
        .targets
        .iter()
        .enumerate()
        .filter(|(_, t)| config.shard.is_none_or(|s| s.owns(&t.name)))
        .collect()
}

/// `check-config`'s account of ownership, as TOML comments: which targets this replica
/// runs.
pub fn ownership_summary(config: &Config) -> String {
    let owned: Vec<&str> = owned(config).iter().map(|t| t.name.as_str()).collect();
    let shard = match config.shard {
        Some(s) if s.from_ordinal => format!("shard {s} (ordinal from the hostname)"),
        Some(s) => format!("shard {s}"),
        None => "no shard".to_string(),
    };
    let mut text = format!(
        "# {shard}: this replica runs {} of {} targets\n",
        owned.len(),
        config.targets.len()
    );
    for name in owned {
        text.push_str("#   ");
        text.push_str(name);
        text.push('\n');
    }
    text
}

/// Most target names a reload summary lists per kind (added, removed, changed).
pub const SUMMARY_NAMES: usize = 10;

/// What a reload does to the running targets, by name: the new configuration's targets
/// are `added` or `changed` (to start), the old ones `removed` or `changed` (to stop).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: Vec<String>,
}

impl Plan {
    /// Compares the targets running (`old`) with the ones to run (`new`): a target whose
    /// whole resolved configuration is equal is unchanged and keeps running.
    pub fn between(old: &[&Target], new: &[&Target]) -> Plan {
        let old_by_name: BTreeMap<&str, &Target> =
            old.iter().map(|t| (t.name.as_str(), *t)).collect();
        let new_by_name: BTreeMap<&str, &Target> =
            new.iter().map(|t| (t.name.as_str(), *t)).collect();
        let mut plan = Plan::default();
        for t in new {
            match old_by_name.get(t.name.as_str()) {
                None => plan.added.push(t.name.clone()),
                Some(o) if *o == *t => plan.unchanged.push(t.name.clone()),
                Some(_) => plan.changed.push(t.name.clone()),
            }
        }
        for t in old {
            if !new_by_name.contains_key(t.name.as_str()) {
                plan.removed.push(t.name.clone());
            }
        }
        plan
    }

    /// `added 1 (new), removed 2 (a, b), changed 0, unchanged 27`: the names of at most
    /// [`SUMMARY_NAMES`] targets per kind, so that a reload of thousands stays one line.
    pub fn summary(&self) -> String {
        let part = |what: &str, names: &[String]| {
            if names.is_empty() || what == "unchanged" {
                return format!("{what} {}", names.len());
            }
            let shown = names[..names.len().min(SUMMARY_NAMES)].join(", ");
            let more = names.len().saturating_sub(SUMMARY_NAMES);
            if more > 0 {
                format!("{what} {} ({shown} and {more} more)", names.len())
            } else {
                format!("{what} {} ({shown})", names.len())
            }
        };
        [
            part("added", &self.added),
            part("removed", &self.removed),
            part("changed", &self.changed),
            part("unchanged", &self.unchanged),
        ]
        .join(", ")
    }
}

/// Global keys whose new value only a restart applies (the process keeps the old one):
/// the listening socket, the instance hashed into every value, logging and span export,
/// which are set up once.
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.listen != new.listen {
        keys.push("listen");
    }
    if old.instance != new.instance {
        keys.push("instance");
    }
    if old.log_format != new.log_format {
        keys.push("log_format");
    }
    if old.telemetry != new.telemetry {
        keys.push("telemetry");
    }
    if old.metrics_profile != new.metrics_profile {
        keys.push("metrics_profile");
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("target-{i}")).collect()
    }

    #[test]
    fn owners_are_fixed_across_versions_and_platforms() {
        // If this fails, the hash changed and every fleet would reshuffle its targets on
        // upgrade: do not update the numbers, restore the hash. (Computed by an independent
        // implementation of the same definition, in Python.)
        assert_eq!(weight("a", 0), 0x1e59_43dd_c963_dc1f);
        let got: Vec<u32> = ["a", "b", "keydb-via-haproxy", "redis-0", "redis-1", "x"]
            .iter()
            .map(|n| owner(n, 3))
            .collect();
        assert_eq!(got, [1, 1, 2, 1, 2, 1]);
    }

    #[test]
    fn every_target_is_owned_by_exactly_one_replica() {
        for count in [1, 2, 3, 7] {
            let mut per_replica = vec![0usize; count as usize];
            for name in names(1000) {
                let owners: Vec<u32> = (0..count)
                    .filter(|&index| {
                        Shard {
                            index,
                            count,
                            from_ordinal: false,
                        }
                        .owns(&name)
                    })
                    .collect();
                assert_eq!(owners.len(), 1, "{name} over {count}: {owners:?}");
                per_replica[owners[0] as usize] += 1;
            }
            // Balanced: every replica within 30 % of its fair share of 1,000.
            let fair = 1000.0 / f64::from(count);
            for n in &per_replica {
                assert!((*n as f64 - fair).abs() <= 0.3 * fair, "{per_replica:?}");
            }
        }
    }

    #[test]
    fn going_from_three_to_four_replicas_moves_about_a_quarter_and_only_to_the_new_one() {
        let mut moved = 0;
        for name in names(1000) {
            let (before, after) = (owner(&name, 3), owner(&name, 4));
            if before != after {
                moved += 1;
                assert_eq!(after, 3, "{name} moved between old replicas");
            }
        }
        // Expected 250; a modulo hash would move about 750.
        assert!((180..=320).contains(&moved), "{moved} of 1000 moved");
    }

    #[test]
    fn shards_parse_with_a_number_or_the_hostname_ordinal() {
        let host = || "redis-canary-2".to_string();
        let s = Shard::parse("1/3", host).unwrap();
        assert_eq!((s.index, s.count, s.from_ordinal), (1, 3, false));
        let s = Shard::parse(" ordinal / 3 ", host).unwrap();
        assert_eq!((s.index, s.count, s.from_ordinal), (2, 3, true));
        assert_eq!(s.to_string(), "2/3");
        assert_eq!(Shard::parse("0/1", host).unwrap().count, 1);
        for (bad, says) in [
            ("3", "INDEX/COUNT"),
            ("3/3", "not below COUNT 3"),
            ("0/0", "COUNT must be"),
            ("-1/3", "INDEX must be"),
            ("a/3", "INDEX must be"),
            ("0/x", "COUNT must be"),
            ("0/5000", "COUNT must be"),
            ("ordinal/2", "ordinal 2 is not below COUNT 2"),
        ] {
            let e = Shard::parse(bad, host).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = Shard::parse("ordinal/3", || "laptop".to_string()).unwrap_err();
        assert!(e.contains("\"laptop\""), "{e}");
    }

    fn target(name: &str, url: &str) -> Target {
        let args = crate::cli::CommonArgs {
            targets: vec![format!("{name}={url}")],
            ..Default::default()
        };
        crate::config::load_from(&args, &[("REDIS_CANARY_INSTANCE".into(), "i".into())])
            .expect("valid")
            .targets
            .remove(0)
    }

    #[test]
    fn a_plan_compares_whole_targets_by_name() {
        let (a, b, c) = (
            target("a", "redis://h:1"),
            target("b", "redis://h:2"),
            target("c", "redis://h:3"),
        );
        let b2 = target("b", "redis://h:22");
        let d = target("d", "redis://h:4");
        let plan = Plan::between(&[&a, &b, &c], &[&a, &b2, &d]);
        assert_eq!(plan.added, ["d"]);
        assert_eq!(plan.removed, ["c"]);
        assert_eq!(plan.changed, ["b"]);
        assert_eq!(plan.unchanged, ["a"]);
        assert_eq!(
            plan.summary(),
            "added 1 (d), removed 1 (c), changed 1 (b), unchanged 1"
        );
        let many: Vec<Target> = (0..12)
            .map(|i| target(&format!("n{i:02}"), "redis://h:1"))
            .collect();
        let plan = Plan::between(&[], &many.iter().collect::<Vec<_>>());
        assert_eq!(
            plan.summary(),
            "added 12 (n00, n01, n02, n03, n04, n05, n06, n07, n08, n09 and 2 more), removed 0, changed 0, unchanged 0"
        );
    }

    #[test]
    fn only_keys_set_up_once_need_a_restart() {
        let load = |env: &[(&str, &str)]| {
            let args = crate::cli::CommonArgs {
                targets: vec!["a=redis://h:1".into()],
                ..Default::default()
            };
            let env: Vec<(String, String)> = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            crate::config::load_from(&args, &env).expect("valid")
        };
        let old = load(&[("REDIS_CANARY_INSTANCE", "i")]);
        let same = load(&[
            ("REDIS_CANARY_INSTANCE", "i"),
            ("REDIS_CANARY_CLEANUP", "true"),
            ("REDIS_CANARY_SHARD", "0/2"),
        ]);
        assert!(needs_restart(&old, &same).is_empty());
        let new = load(&[
            ("REDIS_CANARY_INSTANCE", "j"),
            ("REDIS_CANARY_LISTEN", "127.0.0.1:1"),
            ("REDIS_CANARY_LOG_FORMAT", "json"),
            ("REDIS_CANARY_TELEMETRY__SAMPLE_RATIO", "0.5"),
        ]);
        assert_eq!(
            needs_restart(&old, &new),
            ["listen", "instance", "log_format", "telemetry"]
        );
    }

    #[test]
    fn the_ordinal_is_the_trailing_number_after_a_dash() {
        assert_eq!(ordinal_of("redis-canary-0"), Some(0));
        assert_eq!(ordinal_of("web-12"), Some(12));
        assert_eq!(ordinal_of("redis-canary"), None);
        assert_eq!(ordinal_of("canary-"), None);
        assert_eq!(ordinal_of("canary-1a"), None);
        assert_eq!(ordinal_of("7"), None);
    }
}
