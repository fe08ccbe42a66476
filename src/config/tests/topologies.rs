//! Unit tests of the configuration of the topologies: sentinel and cluster targets, nodes
//! found by DNS, the metrics profile and the soak's key prefixes.

use super::*;

// --- mode = "sentinel" (DESIGN §12.1) ---------------------------------------------------

const SENTINEL_TARGET: &str = r#"
[[targets]]
name = "cache"
mode = "sentinel"
sentinels = ["redis://s0:26380", "redis://s1"]
master_name = "mymaster"
password = "data-pw"
sentinel_password_env = "SENTINEL_PW"
sentinel_refresh = "2s"
nodes = ["redis://r1:6379"]
"#;

#[test]
fn a_sentinel_target_loads_with_its_sentinels_and_defaults_port_26379() {
    let config = load_toml(SENTINEL_TARGET, &[]).expect("valid");
    let t = &config.targets[0];
    let Mode::Sentinel(s) = &t.mode else {
        panic!("sentinel mode expected: {:?}", t.mode)
    };
    assert_eq!(s.master_name, "mymaster");
    let ports: Vec<u16> = s.sentinels.iter().map(|u| u.port).collect();
    assert_eq!(ports, [26380, DEFAULT_SENTINEL_PORT]);
    assert_eq!(s.password, PasswordSource::Env("SENTINEL_PW".into()));
    assert_eq!(s.refresh, Duration::from_secs(2));
    assert!(!s.nodes_auto);
    assert_eq!(t.nodes.len(), 1);
    assert_eq!(t.password, PasswordSource::Inline(Secret::new("data-pw")));
    assert!(!t.url.tls);
}

#[test]
fn nodes_auto_is_accepted_on_a_sentinel_target_and_printed() {
    let toml = SENTINEL_TARGET.replace("nodes = [\"redis://r1:6379\"]", "nodes = \"auto\"");
    let config = load_toml(&toml, &[]).expect("valid");
    let t = &config.targets[0];
    let Mode::Sentinel(s) = &t.mode else {
        panic!("sentinel mode expected: {:?}", t.mode)
    };
    assert!(s.nodes_auto);
    assert!(t.nodes.is_empty());
    let (_, again) = printed_and_loaded_back(&config, &["nodes = \"auto\""]);
    assert_eq!(again.targets[0].mode, t.mode);
}

#[test]
fn a_standalone_target_is_unchanged_and_says_so() {
    let config = load_toml(ONE_TARGET, &[]).expect("valid");
    assert_eq!(config.targets[0].mode, Mode::Standalone);
    assert!(config.to_masked_toml().contains("mode = \"standalone\""));
}

#[test]
fn every_problem_of_a_sentinel_target_is_reported_at_once_naming_its_key() {
    let problems = problems(
        r#"
[[targets]]
name = "a"
mode = "sentinel"
url = "redis://h:6379"
sentinel_password = "x"
sentinels = ["redis://:other@s0:26379"]

[[targets]]
name = "b"
mode = "sentinel"
sentinels = ["redis://alice@s0:26379"]
master_name = "m"
sentinel_username = "bob"

[[targets]]
name = "c"
url = "redis://h:6379"
master_name = "m"
nodes = "auto"

[[targets]]
name = "d"
mode = "cluster"
url = "redis://h:6379/3"
master_name = "m"
"#,
    );
    assert_reported(
        &problems,
        &[
            "targets[0].url",
            "targets[0].master_name",
            "targets[0].sentinel_password",
            "targets[1].sentinel_username",
            "targets[2].master_name",
            "targets[2].nodes",
            "targets[3].url",
            "targets[3].master_name",
        ],
        "other",
        "only database 0",
    );
}

#[test]
fn a_sentinel_target_prints_masked_and_loads_back() {
    let toml = SENTINEL_TARGET.replace(
        "sentinel_password_env = \"SENTINEL_PW\"",
        "sentinel_password = \"s3cret\"",
    );
    let config = load_toml(&toml, &[]).expect("valid");
    let (printed, again) = printed_and_loaded_back(
        &config,
        &[
            "mode = \"sentinel\"",
            "master_name = \"mymaster\"",
            "sentinel_password = \"****\"",
            "sentinel_refresh = \"2s\"",
        ],
    );
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(!printed.contains("url ="), "{printed}");
    assert_eq!(again.targets[0].mode.clone(), {
        let mut mode = config.targets[0].mode.clone();
        if let Mode::Sentinel(s) = &mut mode {
            s.password = PasswordSource::Inline(Secret::new("****"));
        }
        mode
    });
}

#[test]
fn dns_nodes_load_with_their_settings_and_print_back() {
    let toml = r#"
[defaults]
discovery_interval = "500ms"
discovery_resolver = "127.0.0.1:5353"

[[targets]]
name = "a"
url = "redis://h:6379/2"
nodes = "dns://nodes.test:7000"

[[targets]]
name = "b"
url = "rediss://h:6379"
nodes = "dns+srv://_redis._tcp.keydb-headless.ns.svc.cluster.local"
discovery_resolver = ""
discovery_interval = "30s"
"#;
    let config = load_toml(toml, &[]).expect("valid");
    let (a, b) = (&config.targets[0], &config.targets[1]);
    assert_eq!(
        a.discovery,
        Some(NodeDiscovery::Addresses {
            name: "nodes.test".into(),
            port: 7000
        })
    );
    assert!(a.nodes.is_empty());
    assert_eq!(a.settings.discovery_interval, Duration::from_millis(500));
    assert_eq!(
        a.settings.discovery_resolver,
        Some("127.0.0.1:5353".parse().unwrap())
    );
    assert_eq!(
        b.discovery,
        Some(NodeDiscovery::Srv {
            name: "_redis._tcp.keydb-headless.ns.svc.cluster.local".into()
        })
    );
    // "" sets the system resolver back.
    assert_eq!(b.settings.discovery_resolver, None);
    assert_eq!(b.settings.discovery_interval, Duration::from_secs(30));
    let (_, again) = printed_and_loaded_back(
        &config,
        &[
            "nodes = \"dns://nodes.test:7000\"",
            "nodes = \"dns+srv://_redis._tcp.keydb-headless.ns.svc.cluster.local\"",
            "discovery_resolver = \"127.0.0.1:5353\"",
            "discovery_interval = \"500ms\"",
        ],
    );
    assert_eq!(again.targets, config.targets);
}

#[test]
fn the_default_discovery_interval_is_ten_seconds_and_the_system_resolver() {
    let config = load_toml(ONE_TARGET, &[]).expect("valid");
    let s = &config.targets[0].settings;
    assert_eq!(s.discovery_interval, Duration::from_secs(10));
    assert_eq!(s.discovery_resolver, None);
    assert_eq!(config.targets[0].discovery, None);
}

#[test]
fn bad_dns_nodes_and_resolvers_are_reported_naming_key_and_value() {
    let toml = r#"
[defaults]
discovery_resolver = "kube-dns.kube-system:53"
discovery_interval = "1ms"

[[targets]]
name = "a"
url = "redis://h"
nodes = "dns://nodes.test"

[[targets]]
name = "b"
url = "redis://h"
nodes = "dns+srv://nodes.test"

[[targets]]
name = "c"
url = "redis://h"
nodes = "dnss://nodes.test:6379"

[[targets]]
name = "d"
url = "redis://h"
nodes = "dns+txt://_redis._tcp.nodes.test"

[[targets]]
name = "e"
url = "redis://h"
nodes = "dns://u:pw@nodes.test:6379"
"#;
    let found = problems(toml);
    let expect = [
        (
            "defaults.discovery_resolver",
            "kube-dns.kube-system:53",
            "IP:PORT",
        ),
        ("defaults.discovery_interval", "1ms", "at least"),
        ("targets[0].nodes", "dns://nodes.test", "missing port"),
        (
            "targets[1].nodes",
            "dns+srv://nodes.test",
            "_SERVICE._tcp.NAME",
        ),
        (
            "targets[2].nodes",
            "dnss://nodes.test:6379",
            "\"dns://NAME:PORT\"",
        ),
        ("targets[3].nodes", "dns+txt://", "unknown scheme"),
        ("targets[4].nodes", "", "no user, path or query"),
    ];
    for (key, value, says) in expect {
        let p = found
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("{key} missing from {found:#?}"));
        assert!(p.value.contains(value), "{key}: value {:?}", p.value);
        assert!(p.message.contains(says), "{key}: {}", p.message);
    }
    let text: String = found.iter().map(|p| format!("{p}\n")).collect();
    assert!(!text.contains("pw@"), "a password leaked: {text}");
}

#[test]
fn a_cluster_target_loads_from_one_seed_or_several_and_prints_back() {
    let config = load_toml(
        r#"
[[targets]]
name = "sessions"
mode = "cluster"
url = "redis://:pw@10.0.0.1:7000"
nodes = "auto"
cluster_refresh = "2s"

[[targets]]
name = "carts"
mode = "cluster"
seeds = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]
"#,
        &[],
    )
    .expect("valid");
    let Mode::Cluster(c) = &config.targets[0].mode else {
        panic!("{:?}", config.targets[0].mode)
    };
    assert_eq!(c.seeds.len(), 1);
    assert_eq!(c.refresh, Duration::from_secs(2));
    assert!(c.nodes_auto);
    let Mode::Cluster(c) = &config.targets[1].mode else {
        panic!("{:?}", config.targets[1].mode)
    };
    assert_eq!(c.seeds.len(), 2);
    assert_eq!(c.refresh, DEFAULT_CLUSTER_REFRESH);
    assert_eq!(config.targets[1].url.host, "10.0.0.1");
    let (printed, again) = printed_and_loaded_back(
        &config,
        &[
            "mode = \"cluster\"",
            "cluster_refresh = \"2s\"",
            "seeds = [",
            "nodes = \"auto\"",
        ],
    );
    assert!(!printed.contains(":pw@"), "{printed}");
    assert_eq!(again.targets[1].mode, config.targets[1].mode);
}

#[test]
fn every_problem_of_a_cluster_target_is_reported_naming_its_key() {
    let problems = problems(
        r#"
[[targets]]
name = "a"
mode = "cluster"

[[targets]]
name = "b"
mode = "cluster"
url = "redis://h:7000"
seeds = ["redis://h:7001"]
cluster_refresh = "1ms"

[[targets]]
name = "c"
mode = "cluster"
seeds = ["redis://h:7000", "redis://u:other@h:7001", "rediss://h:7002"]
key_prefix = "canary:{tag}:"

[[targets]]
name = "d"
url = "redis://h:7000"
seeds = ["redis://h:7001"]
"#,
    );
    assert_reported(
        &problems,
        &[
            "targets[0].url",
            "targets[1].url",
            "targets[1].cluster_refresh",
            "targets[2].seeds[1]",
            "targets[2].seeds[2]",
            "targets[2].key_prefix",
            "targets[3].seeds",
        ],
        "other",
        "only for mode = \"cluster\"",
    );
}

#[test]
fn the_metrics_profile_is_full_by_default_lean_on_request_and_checked() {
    use crate::metrics::MetricsProfile;
    let config = load_toml(ONE_TARGET, &[]).unwrap();
    assert_eq!(config.metrics_profile, MetricsProfile::Full);
    assert!(
        config
            .to_masked_toml()
            .contains("metrics_profile = \"full\"\n")
    );
    let config = load_toml(&format!("metrics_profile = \"lean\"\n{ONE_TARGET}"), &[]).unwrap();
    assert_eq!(config.metrics_profile, MetricsProfile::Lean);
    let printed = config.to_masked_toml();
    assert!(
        printed.contains("metrics_profile = \"lean\"\n"),
        "{printed}"
    );
    // What check-config prints loads back as the same profile.
    let again = load_toml(&printed, &[]).unwrap();
    assert_eq!(again.metrics_profile, MetricsProfile::Lean);
    let config = load_toml(ONE_TARGET, &[("REDIS_CANARY_METRICS_PROFILE", "lean")]).unwrap();
    assert_eq!(config.metrics_profile, MetricsProfile::Lean);

    let bad = problems(&format!("metrics_profile = \"tiny\"\n{ONE_TARGET}"));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].key, "metrics_profile");
    assert_eq!(bad[0].value, "\"tiny\"");
    assert!(bad[0].message.contains("\"lean\""), "{}", bad[0].message);
    let bad = problems(&format!("metrics_profile = 1\n{ONE_TARGET}"));
    assert_eq!(bad[0].key, "metrics_profile");
}

#[test]
fn a_soak_moves_default_key_prefixes_apart_from_a_daemon_and_keeps_explicit_ones() {
    let mut config = load_toml(
        r#"instance = "host-1"
[[targets]]
name = "a"
url = "redis://127.0.0.1:6379"
[[targets]]
name = "b"
url = "redis://127.0.0.1:6379"
key_prefix = "mine:{target}:"
[[targets]]
name = "c"
url = "redis://127.0.0.1:6379"
[[targets]]
name = "d"
url = "redis://127.0.0.1:6379"
key_prefix = "redis-canary:host-1:soak:c:x:"
"#,
        &[],
    )
    .expect("valid");
    config.use_soak_key_prefixes();
    let prefixes: Vec<&str> = config
        .targets
        .iter()
        .map(|t| t.key_prefix.as_str())
        .collect();
    assert_eq!(
        prefixes,
        [
            "redis-canary:host-1:soak:a:",
            "mine:b:",
            // Its soak prefix would be started by d's: it keeps the daemon's default.
            "redis-canary:host-1:c:",
            "redis-canary:host-1:soak:c:x:",
        ]
    );
}
