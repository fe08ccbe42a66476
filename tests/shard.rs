//! Sharding over replicas (DESIGN §14), end to end: several real canary processes with
//! `shard = "INDEX/COUNT"` over one configuration, all targets on one real `redis-server`;
//! each target must be measured by exactly one of them. Also `check-config`'s account of
//! ownership, bad shard values (exit 2), and a reload that changes COUNT.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use support::names::*;
use support::*;

const SHARD_TARGETS: &str = "redis_canary_shard_targets";

/// `n` targets named `t00`..., all on `url`, at a low rate; `head` lines at the top.
fn fleet_config(head: &str, url: &str, n: usize) -> String {
    let mut text = format!(
        "{head}\ninstance = \"test\"\n[defaults]\nrate = 4\nkeys = 20\nconnect_probe_interval = \"0s\"\n"
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[[targets]]\nname = \"t{i:02}\"\nurl = \"{url}\"\n"
        ));
    }
    text
}

/// Targets with any `operations_total` series, and those with successful writes.
fn measured(canary: &Canary) -> (BTreeSet<String>, BTreeSet<String>) {
    let m = canary.metrics();
    let mut any = BTreeSet::new();
    let mut ok = BTreeSet::new();
    for (name, labels, value) in &m.series {
        if name != OPS {
            continue;
        }
        let target = labels["target"].clone();
        if labels["op"] == "write" && labels["outcome"] == "ok" && *value > 0.0 {
            ok.insert(target.clone());
        }
        any.insert(target);
    }
    (any, ok)
}

/// The target names `check-config` lists as owned (the `#   NAME` lines).
fn owned_by_check_config(args: &[&str], env: &[(&str, &str)]) -> BTreeSet<String> {
    let o = Command::new(canary_bin())
        .arg("check-config")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("running redis-canary");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out.lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .map(str::to_string)
        .collect()
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn three_replicas_measure_every_one_of_thirty_targets_exactly_once() {
    let redis = RedisServer::start(&[]);
    let toml = fleet_config("", &redis.url(), 30);
    // Replicas 0 and 1 by flag, replica 2 by environment variable.
    let replicas = [
        Canary::start_with(&toml, &["--shard", "0/3"], &[]),
        Canary::start_with(&toml, &["--shard", "1/3"], &[]),
        Canary::start_with(&toml, &[], &[("REDIS_CANARY_SHARD", "2/3")]),
    ];
    let mut sets = Vec::new();
    for (i, canary) in replicas.iter().enumerate() {
        let shard = format!("{i}/3");
        let config = canary.path("canary.toml").display().to_string();
        let expected = owned_by_check_config(&["--config", &config, "--shard", &shard], &[]);
        // Every owned target operates; no other target has a series.
        wait_until(
            &format!("every target of replica {i} writing"),
            Duration::from_secs(20),
            || {
                let (any, ok) = measured(canary);
                any == expected && ok == expected
            },
        );
        assert_eq!(
            canary.metrics().sum(SHARD_TARGETS, &[]),
            expected.len() as f64
        );
        assert!(
            canary.log().contains(&format!("shard={i}/3")),
            "{}",
            canary.log()
        );
        sets.push(expected);
    }
    let mut union = BTreeSet::new();
    let mut total = 0;
    for set in &sets {
        // A fair split of 30 over 3 is 10 each; none is empty.
        assert!(!set.is_empty(), "{sets:?}");
        total += set.len();
        union.extend(set.iter().cloned());
    }
    let all: BTreeSet<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    assert_eq!(union, all, "{sets:?}");
    assert_eq!(total, 30, "a target is measured twice: {sets:?}");
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_reload_that_changes_the_shard_count_reevaluates_ownership() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let canary = Canary::start(&fleet_config("shard = \"0/1\"", &url, 12));
    wait_until("all 12 targets writing", Duration::from_secs(20), || {
        measured(&canary).1.len() == 12
    });
    assert_eq!(canary.metrics().sum(SHARD_TARGETS, &[]), 12.0);

    std::fs::write(
        canary.path("canary.toml"),
        fleet_config("shard = \"0/3\"", &url, 12),
    )
    .unwrap();
    let config = canary.path("canary.toml").display().to_string();
    let expected = owned_by_check_config(&["--config", &config], &[]);
    assert!(expected.len() < 12, "{expected:?}");
    let (status, body) = http_request(canary.port, "POST", "/-/reload").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(&format!("removed {}", 12 - expected.len())),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "shard 0/3: this replica runs {} of 12",
            expected.len()
        )),
        "{body}"
    );
    let (any, _) = measured(&canary);
    assert_eq!(any, expected);
    assert_eq!(
        canary.metrics().sum(SHARD_TARGETS, &[]),
        expected.len() as f64
    );
}

#[test]
fn check_config_prints_ownership_and_bad_shards_exit_2_naming_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, fleet_config("", "redis://127.0.0.1:1", 30)).unwrap();
    let config = path.display().to_string();
    let mut union = BTreeSet::new();
    let mut total = 0;
    for i in 0..3 {
        let owned =
            owned_by_check_config(&["--config", &config, "--shard", &format!("{i}/3")], &[]);
        total += owned.len();
        union.extend(owned);
    }
    assert_eq!((union.len(), total), (30, 30));
    // Without a shard, every target.
    assert_eq!(owned_by_check_config(&["--config", &config], &[]).len(), 30);

    for (args, env, says) in [
        (vec!["--shard", "3/3"], vec![], "shard = \"3/3\""),
        (vec!["--shard", "0/0"], vec![], "COUNT must be"),
        (
            vec![],
            vec![("REDIS_CANARY_SHARD", "one/3")],
            "REDIS_CANARY_SHARD",
        ),
    ] {
        let o = Command::new(canary_bin())
            .args(["check-config", "--config", &config])
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}: {err}");
        assert!(err.contains("invalid configuration: shard"), "{err}");
        assert!(err.contains(says), "{says}: {err}");
    }
}
