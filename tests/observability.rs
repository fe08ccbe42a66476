//! The observability kit, proven with the real tools: the alert rules pass `promtool`
//! (syntax and unit tests for every alert); a real Prometheus scraping a real canary that
//! watches a real Redis fires the right alerts at a real Alertmanager, whose webhook
//! receives them, and resolves them after recovery; every query of the Grafana dashboard
//! returns data from that Prometheus, except the Sentinel and Cluster ones, which stay
//! empty for that standalone target and show a Sentinel or Cluster target's series under
//! promtool; the Kubernetes manifests (base, keydb-haproxy, redis-sentinel, redis-cluster
//! and sharded overlays) build with `kubectl
//! kustomize` and validate against the Kubernetes schemas; and the copies that
//! `deploy/kubernetes/sync.sh` makes are identical to their sources.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::*;

/// Row titles of the dashboard, in the order the issue asks for: is it healthy now, what
/// clients went through, latency, disruptions, data integrity, replication, backends,
/// Sentinel (DESIGN §12.1), Cluster (§12.2), connections.
const DASHBOARD_ROWS: [&str; 10] = [
    "Healthy now",
    "What clients went through",
    "Latency",
    "Disruptions",
    "Data integrity",
    "Replication",
    "Backends",
    "Sentinel",
    "Cluster",
    "Connections",
];

/// The series that only Sentinel targets (`mode = "sentinel"`) export. A dashboard query
/// that reads one of them shows Sentinel targets only: no data on a standalone-only
/// installation (the live test's), data for a Sentinel target (the promtool test).
const SENTINEL_SERIES: &str = "redis_canary_sentinel_";

/// The series that only Cluster targets (`mode = "cluster"`) export (DESIGN §12.2): like
/// [`SENTINEL_SERIES`], a query that reads one shows Cluster targets only.
const CLUSTER_SERIES: [&str; 2] = ["redis_canary_cluster_", "redis_canary_shard_"];

/// Whether a dashboard query reads a Cluster-only series.
fn reads_cluster_series(expr: &str) -> bool {
    CLUSTER_SERIES.iter().any(|s| expr.contains(s))
}

/// Dashboard queries that may legitimately return no data in the live test, with why.
/// Empty: after an outage and a recovery every panel of the dashboard has data, except
/// the Sentinel and Cluster queries (those reading `SENTINEL_SERIES` or
/// `CLUSTER_SERIES`), which must be empty there.
const PANELS_THAT_MAY_BE_EMPTY: &[(&str, &str)] = &[];

/// Where the runbook lives, as the alerts' runbook_url spell it.
const RUNBOOK_URL: &str = "https://example.invalid/redis-canary/blob/main/docs/runbook.md";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo_file(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Runs a command to completion; returns (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("running {cmd:?}: {e} (scripts/install-deps installs the tools)")
    });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first `name` on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The alerts of the rules file: (name, its text up to the next alert).
fn alert_blocks(rules: &str) -> Vec<(String, String)> {
    rules
        .split("- alert: ")
        .skip(1)
        .map(|block| {
            let name = block.lines().next().unwrap_or_default().trim().to_string();
            (name, block.to_string())
        })
        .collect()
}

// ------------------------------------------------------------------------------------
// Alert rules
// ------------------------------------------------------------------------------------

#[test]
#[cfg_attr(
    not(have_promtool),
    ignore = "needs promtool (not installed: scripts/install-deps)"
)]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let alerts = alert_blocks(&repo_file("alerts/redis-canary.rules.yml"));
    let (ok, out, err) = run(Command::new("promtool")
        .args(["check", "rules", "alerts/redis-canary.rules.yml"])
        .current_dir(repo()));
    assert!(ok, "promtool check rules failed:\n{out}{err}");
    let found = format!("SUCCESS: {} rules found", alerts.len());
    assert!(
        out.contains(&found),
        "expected {found:?}, promtool said:\n{out}{err}"
    );

    let (ok, out, err) = run(Command::new("promtool")
        .args(["test", "rules", "alerts/redis-canary.test.yml"])
        .current_dir(repo()));
    assert!(ok, "promtool test rules failed:\n{out}{err}");
    assert!(out.contains("SUCCESS"), "{out}{err}");
}

#[test]
fn every_alert_has_a_severity_a_runbook_section_and_tests_that_fire_and_stay_quiet() {
    let rules = repo_file("alerts/redis-canary.rules.yml");
    let tests = repo_file("alerts/redis-canary.test.yml");
    let runbook = repo_file("docs/runbook.md");
    let alerts = alert_blocks(&rules);
    let expected = [
        "RedisCanaryTargetDown",
        "RedisCanaryOperationsFailed",
        "RedisCanaryDataLoss",
        "RedisCanaryDisruption",
        "RedisCanaryStaleReads",
        "RedisCanaryLatencyHigh",
        "RedisCanaryReplicationDelay",
        "RedisCanaryReplicationTimeouts",
        "RedisCanaryNodeDown",
        "RedisCanaryBackendFlapping",
        "RedisCanarySentinelSplitView",
        "RedisCanarySentinelDown",
        "RedisCanarySentinelFailoverSlow",
        "RedisCanaryShardDisrupted",
        "RedisCanaryClusterSlotsNotCovered",
        "RedisCanaryRedirectStorm",
        "RedisCanaryNotScraped",
        "RedisCanaryAbsent",
    ];
    let names: Vec<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, expected, "the alerts of the rules file");

    for (name, block) in &alerts {
        assert!(
            block.contains("severity: critical") || block.contains("severity: warning"),
            "{name}: no severity label"
        );
        assert!(
            block.contains("\n        for: "),
            "{name}: no explicit `for:`"
        );
        for key in ["summary:", "description:"] {
            assert!(block.contains(key), "{name}: no {key} annotation");
        }
        let anchor = name.to_lowercase();
        let url = format!("runbook_url: {RUNBOOK_URL}#{anchor}");
        assert!(block.contains(&url), "{name}: expected `{url}`");
        // GitHub's anchor for the heading `## RedisCanaryX` is `rediscanaryx`.
        assert!(
            runbook
                .lines()
                .any(|l| l.trim_end() == format!("## {name}")),
            "docs/runbook.md has no `## {name}` section"
        );
        let fires = format!("alertname: {name}\n        exp_alerts:\n          - exp_labels:");
        assert!(
            tests.contains(&fires),
            "{name}: no promtool test where it fires"
        );
        let quiet = format!("alertname: {name}\n        exp_alerts: []");
        assert!(
            tests.contains(&quiet),
            "{name}: no promtool test where it stays quiet"
        );
    }
}

// ------------------------------------------------------------------------------------
// Dashboard (static)
// ------------------------------------------------------------------------------------

fn dashboard() -> Value {
    serde_json::from_str(&repo_file("grafana/redis-canary.json")).expect("dashboard JSON")
}

/// Every panel, rows included, with the panels of collapsed rows.
fn all_panels(d: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p.clone());
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner.iter().cloned());
        }
    }
    out
}

/// A query of the dashboard: where it is, its expression, whether it is instant.
struct DashboardQuery {
    place: String,
    expr: String,
    instant: bool,
}

fn dashboard_queries(d: &Value) -> Vec<DashboardQuery> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(DashboardQuery {
                place: format!("panel {:?} query {}", p["title"], t["refId"]),
                expr: t["expr"].as_str().unwrap_or_default().to_string(),
                instant: t["instant"] == true,
            });
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = a["expr"].as_str() {
            out.push(DashboardQuery {
                place: format!("annotation {:?}", a["name"]),
                expr: expr.to_string(),
                instant: false,
            });
        }
    }
    out
}

#[test]
fn the_dashboard_has_its_rows_in_order_and_every_panel_a_unit_a_description_and_queries() {
    let d = dashboard();
    assert_eq!(d["uid"], "redis-canary", "a stable uid keeps links working");

    let vars: Vec<&Value> = d["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .collect();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["target", "node"] {
        assert_eq!(var(name)["type"], "query");
        assert_eq!(var(name)["datasource"]["uid"], "${datasource}");
        assert_eq!(var(name)["multi"], true);
        assert_eq!(var(name)["includeAll"], true);
    }

    let panels = all_panels(&d);
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(rows, DASHBOARD_ROWS);

    let visible: Vec<&Value> = panels.iter().filter(|p| p["type"] != "row").collect();
    assert!(visible.len() >= 25, "only {} panels", visible.len());
    for p in &visible {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        let desc = p["description"].as_str().unwrap_or_default();
        assert!(desc.len() > 30, "panel {title:?}: no real description");
        let unit = p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert!(!unit.is_empty(), "panel {title:?}: no unit");
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title:?}: datasource"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?}: no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("target=~\"$target\""),
                "panel {title:?}: query ignores $target: {expr}"
            );
        }
    }

    // Every query of the Sentinel row reads a Sentinel series (at least to select the
    // Sentinel targets), and every query of the Cluster row a Cluster series, so the rows
    // stay empty rather than wrong for other targets.
    let mut row = "";
    for p in &panels {
        if p["type"] == "row" {
            row = p["title"].as_str().unwrap_or_default();
            continue;
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            match row {
                "Sentinel" => assert!(
                    expr.contains(SENTINEL_SERIES),
                    "Sentinel row, panel {:?}: query reads no Sentinel series: {expr}",
                    p["title"]
                ),
                "Cluster" => assert!(
                    reads_cluster_series(expr),
                    "Cluster row, panel {:?}: query reads no Cluster series: {expr}",
                    p["title"]
                ),
                _ => {}
            }
        }
    }

    // No two panels overlap on the 24-column grid.
    let boxes: Vec<(&str, [i64; 4])> = panels
        .iter()
        .map(|p| {
            let g = &p["gridPos"];
            let n = |k: &str| g[k].as_i64().unwrap_or_else(|| panic!("gridPos.{k}: {p}"));
            (
                p["title"].as_str().unwrap_or_default(),
                [n("x"), n("y"), n("w"), n("h")],
            )
        })
        .collect();
    for (i, (a, [ax, ay, aw, ah])) in boxes.iter().enumerate() {
        assert!(ax + aw <= 24, "panel {a:?} is wider than the grid");
        for (b, [bx, by, bw, bh]) in &boxes[i + 1..] {
            let overlap = ax < &(bx + bw) && bx < &(ax + aw) && ay < &(by + bh) && by < &(ay + ah);
            assert!(!overlap, "panels {a:?} and {b:?} overlap");
        }
    }
}

/// Series of a Sentinel target `cache` and a standalone target `plain`, sampled every
/// second for 5 minutes (the live test's scrape interval, which `substitute` assumes):
/// three sentinels, one lost at 200 s; the sentinels disagree from 240 s; a failover, an
/// episode from 271 s to 281 s with +switch-master at 281 s, the pool following it. The
/// standalone target goes through the same episode and has no Sentinel series.
fn sentinel_dashboard_series() -> String {
    let mut out = String::new();
    let mut series = |name: &str, values: &str| {
        out.push_str(&format!(
            "      - series: '{name}'\n        values: '{values}'\n"
        ));
    };
    for i in 0..3 {
        let values = if i == 2 { "1x200 0x100" } else { "1x300" };
        series(
            &format!(
                "redis_canary_sentinel_up{{target=\"cache\",sentinel=\"redis-sentinel-{i}.redis-sentinel-headless:26379\"}}"
            ),
            values,
        );
    }
    series(
        "redis_canary_sentinel_masters{target=\"cache\"}",
        "1x240 2x60",
    );
    series(
        "redis_canary_sentinel_master_switches_total{target=\"cache\"}",
        "0x280 1x20",
    );
    for target in ["cache", "plain"] {
        let t = format!("{{target=\"{target}\"}}");
        series(&format!("redis_canary_disrupted{t}"), "0x270 1x10 0x20");
        series(
            &format!("redis_canary_disruption_duration_seconds_sum{t}"),
            "0x281 10.5x19",
        );
        series(
            &format!("redis_canary_disruption_duration_seconds_count{t}"),
            "0x281 1x19",
        );
        series(
            &format!("redis_canary_backend_switches_total{t}"),
            "0x281 4x19",
        );
    }
    out
}

#[test]
#[cfg_attr(
    not(have_promtool),
    ignore = "needs promtool (not installed: scripts/install-deps)"
)]
fn the_sentinel_panels_show_a_sentinel_target_and_stay_empty_for_a_standalone_one() {
    // The live test watches a standalone Redis, where the Sentinel queries must be empty;
    // here promtool evaluates each of them on the series of a Sentinel target and of a
    // standalone one (see `check_topology_queries`).
    // Three stats, two timelines, switches, episodes, lengths; two annotations.
    check_topology_queries(
        "Sentinel",
        |expr| expr.contains(SENTINEL_SERIES),
        &sentinel_dashboard_series(),
        "cache",
        10,
    );
}

/// Series of a Cluster target `sessions` (three shards) and a standalone target `plain`,
/// sampled every second for 5 minutes: shard 0-5460 fails over from 200 s to 203 s (its
/// slots uncovered meanwhile, a map refresh on `unreachable`, MOVED answers after it);
/// both targets go through the same target-level episode, and only `sessions` has
/// Cluster series.
fn cluster_dashboard_series() -> String {
    let mut out = String::new();
    let mut series = |name: &str, values: &str| {
        out.push_str(&format!(
            "      - series: '{name}'\n        values: '{values}'\n"
        ));
    };
    let c = "target=\"sessions\"";
    series(
        &format!("redis_canary_cluster_slots_covered{{{c}}}"),
        "16384x200 10923x3 16384x96",
    );
    for role in ["master", "replica"] {
        series(
            &format!("redis_canary_cluster_nodes{{{c},role=\"{role}\"}}"),
            "3x300",
        );
    }
    for (reason, values) in [
        ("start", "1x300"),
        ("unreachable", "0x200 1x100"),
        ("periodic", "0+0.1x300"),
    ] {
        series(
            &format!("redis_canary_cluster_refreshes_total{{{c},reason=\"{reason}\"}}"),
            values,
        );
    }
    for shard in ["0-5460", "5461-10922", "10923-16383"] {
        let s = format!("{c},shard=\"{shard}\"");
        let (disrupted, episodes, sum) = if shard == "0-5460" {
            ("0x200 1x3 0x96", "0x200 1x100", "0x203 2.7x96")
        } else {
            ("0x300", "0x300", "0x300")
        };
        series(&format!("redis_canary_shard_disrupted{{{s}}}"), disrupted);
        series(
            &format!("redis_canary_shard_disruptions_total{{{s}}}"),
            episodes,
        );
        let count = if sum == "0x300" {
            "0x300"
        } else {
            "0x203 1x96"
        };
        series(
            &format!("redis_canary_shard_disruption_duration_seconds_sum{{{s}}}"),
            sum,
        );
        series(
            &format!("redis_canary_shard_disruption_duration_seconds_count{{{s}}}"),
            count,
        );
        for (outcome, values) in [
            ("ok", "0+7x300"),
            ("recovered", "0x203 3x96"),
            ("failed", "0x300"),
        ] {
            series(
                &format!("redis_canary_shard_operations_total{{{s},outcome=\"{outcome}\"}}"),
                values,
            );
        }
    }
    for target in ["sessions", "plain"] {
        let t = format!("target=\"{target}\"");
        for (result, values) in [
            ("ok", "0+20x300"),
            ("moved", "0x203 4x96"),
            ("ask", "0x300"),
            ("clusterdown", "0x300"),
        ] {
            series(
                &format!("redis_canary_attempts_total{{{t},op=\"write\",result=\"{result}\"}}"),
                values,
            );
        }
        series(&format!("redis_canary_disrupted{{{t}}}"), "0x200 1x3 0x96");
        series(
            &format!("redis_canary_backend_switches_total{{{t}}}"),
            "0x203 2x96",
        );
    }
    out
}

#[test]
#[cfg_attr(
    not(have_promtool),
    ignore = "needs promtool (not installed: scripts/install-deps)"
)]
fn the_cluster_panels_show_a_cluster_target_and_stay_empty_for_a_standalone_one() {
    // Four stats, the per-shard timeline, six time series; one annotation.
    check_topology_queries(
        "Cluster",
        reads_cluster_series,
        &cluster_dashboard_series(),
        "sessions",
        12,
    );
}

/// The queries of the dashboard that `selects` (those of one topology) must show data for
/// `topo_target` and nothing for the standalone target `plain`: promtool evaluates each,
/// with the variables substituted as Grafana would, on `series` (5 minutes at 1 s), as an
/// alert that fires when the query, evaluated every second over the 5 minutes as
/// Grafana's range query would be, returned anything. It must fire for the first and
/// stay quiet for the second.
fn check_topology_queries(
    topology: &str,
    selects: fn(&str) -> bool,
    series: &str,
    topo_target: &str,
    at_least: usize,
) {
    let queries: Vec<DashboardQuery> = dashboard_queries(&dashboard())
        .into_iter()
        .filter(|q| selects(&q.expr))
        .collect();
    assert!(
        queries.len() >= at_least,
        "only {} {topology} queries",
        queries.len()
    );

    let mut rules = String::from("groups:\n  - name: topology-dashboard\n    rules:\n");
    let mut checks = String::new();
    for (i, q) in queries.iter().enumerate() {
        for target in [topo_target, "plain"] {
            let name = format!("Query{i}{target}");
            let expr = substitute(&q.expr, target, ".*", 300);
            rules.push_str(&format!(
                "      # {}\n      - alert: {name}\n        expr: |\n          count(count_over_time(({expr})[5m:1s])) > 0\n",
                q.place
            ));
            let expected = if target == topo_target {
                "\n          - exp_labels: {}\n"
            } else {
                " []\n"
            };
            checks.push_str(&format!(
                "      - eval_time: 5m\n        alertname: {name}\n        exp_alerts:{expected}"
            ));
        }
    }
    let tests = format!(
        "rule_files:\n  - rules.yml\nevaluation_interval: 1s\ntests:\n  - interval: 1s\n    input_series:\n{series}    alert_rule_test:\n{checks}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("rules.yml"), &rules).expect("writing rules");
    std::fs::write(dir.path().join("test.yml"), &tests).expect("writing tests");
    let (ok, out, err) = run(Command::new("promtool")
        .args(["test", "rules", "test.yml"])
        .current_dir(dir.path()));
    assert!(
        ok,
        "a {topology} query is empty for the {topology} target, or shows the standalone one \
         (QueryN is the Nth of these):\n{}\n{out}{err}",
        queries
            .iter()
            .enumerate()
            .map(|(i, q)| format!("Query{i}: {}: {}", q.place, q.expr))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ------------------------------------------------------------------------------------
// Live: Prometheus + Alertmanager + canary + Redis
// ------------------------------------------------------------------------------------

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Replaces the Grafana variables the way Grafana would for one selected target and
/// node, with Prometheus scraping every second.
fn substitute(expr: &str, target: &str, node: &str, range_s: u64) -> String {
    let out = expr
        // max($__interval + scrape interval, 4 x scrape interval) with a 1 s scrape.
        .replace("$__rate_interval", "4s")
        .replace("$__interval", "1s")
        .replace("$__range", &format!("{range_s}s"))
        .replace("${target}", target)
        .replace("$target", target)
        .replace("${node}", node)
        .replace("$node", node);
    assert!(!out.contains('$'), "unknown variable left in {out}");
    out
}

/// Whether a query result (vector or matrix) holds at least one finite value.
fn has_finite_value(result: &[Value]) -> bool {
    let finite = |pair: &Value| {
        pair[1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    result.iter().any(|series| {
        series["values"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(finite))
            || (series["value"].is_array() && finite(&series["value"]))
    })
}

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_prometheus, have_alertmanager)),
    ignore = "needs redis-server, prometheus, prometheus-alertmanager (not installed: scripts/install-deps)"
)]
fn a_redis_outage_fires_the_right_alerts_at_the_webhook_they_resolve_and_every_panel_has_data() {
    let started = Instant::now();
    let mut redis = RedisServer::start(&[]);
    let master_port = redis.port.to_string();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &master_port]);
    // A fast probe, and the master and a real replica as replication nodes, so that the
    // probe, node and replication panels have data too.
    let nodes = [redis.url(), replica.url()];
    let canary = Canary::start(&one_target_config(
        "direct",
        &redis.url(),
        &format!("connect_probe_interval = \"500ms\"\nnodes = {nodes:?}"),
    ));
    // What Grafana substitutes for $node with both nodes selected.
    let node_regex = format!("(127.0.0.1:{}|127.0.0.1:{})", redis.port, replica.port);
    let webhook = Webhook::start();
    let alertmanager = Alertmanager::start(&format!(
        r#"global:
  resolve_timeout: 5s
route:
  receiver: webhook
  group_by: [alertname, target]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: http://127.0.0.1:{}/
        send_resolved: true
# The inhibit rule docs/runbook.md recommends.
inhibit_rules:
  - source_matchers: ['alertname=~"RedisCanaryOperationsFailed|RedisCanaryTargetDown"']
    target_matchers: ['alertname="RedisCanaryDisruption"']
    equal: [namespace, job, target]
"#,
        webhook.port
    ));
    let rules = repo().join("alerts/redis-canary.rules.yml");
    let prometheus = Prometheus::start(&format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - {}
alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:{}"]
scrape_configs:
  - job_name: redis-canary
    static_configs:
      - targets: ["127.0.0.1:{}"]
"#,
        rules.display(),
        alertmanager.port,
        canary.port
    ));
    let range_start = unix_now();
    let target = [("target", "direct")];

    // Healthy: scraped, every rule loaded and evaluated, nothing pending or firing.
    let rule_count = alert_blocks(&repo_file("alerts/redis-canary.rules.yml")).len();
    wait_until(
        "prometheus to evaluate every rule",
        Duration::from_secs(60),
        || {
            let groups = prometheus.api("/api/v1/rules")["groups"].clone();
            let rules: Vec<Value> = groups
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            rules.len() == rule_count
                && rules.iter().all(|r| {
                    r["health"] == "ok"
                        && !r["lastEvaluation"]
                            .as_str()
                            .unwrap_or("0")
                            .starts_with("0001")
                })
        },
    );
    wait_until(
        "a few scrapes with successful writes",
        Duration::from_secs(60),
        || {
            !prometheus
                .query(
                    r#"increase(redis_canary_operations_total{op="write",outcome="ok"}[5s]) > 0"#,
                )
                .is_empty()
        },
    );
    // Nothing fires. Only the latency rule may be pending: on a loaded test machine a
    // debug build can have a few operations above 50 ms, and the rule's `for: 5m` is
    // there for exactly that kind of noise.
    let alerts: Vec<Value> = prometheus
        .alerts()
        .into_iter()
        .filter(|a| {
            !(a["state"] == "pending" && a["labels"]["alertname"] == "RedisCanaryLatencyHigh")
        })
        .collect();
    assert!(alerts.is_empty(), "alerts while healthy: {alerts:#?}");

    // A replica that stops replicating (detached, still answering): writes no longer
    // reach it and time out there. Reattached, it resyncs.
    replica
        .client()
        .call(&["REPLICAOF", "NO", "ONE"])
        .expect("REPLICAOF NO ONE");
    let detached = Instant::now();
    let replica_node = format!("127.0.0.1:{}", replica.port);
    let timeouts_at = webhook.wait_for(
        "RedisCanaryReplicationTimeouts",
        &[
            ("target", "direct"),
            ("node", &replica_node),
            ("severity", "warning"),
        ],
        "firing",
        Duration::from_secs(60),
    );
    eprintln!(
        "replica detached -> RedisCanaryReplicationTimeouts firing at the webhook: {:.1} s \
         (replication_timeout is 5 s)",
        timeouts_at.duration_since(detached).as_secs_f64()
    );
    replica
        .client()
        .call(&["REPLICAOF", "127.0.0.1", &master_port])
        .expect("REPLICAOF");

    // Outage: the page-worthy alerts fire and reach the webhook.
    redis.kill();
    let outage = Instant::now();
    let failed_at = webhook.wait_for(
        "RedisCanaryOperationsFailed",
        &[
            ("target", "direct"),
            ("severity", "critical"),
            ("job", "redis-canary"),
        ],
        "firing",
        Duration::from_secs(60),
    );
    let down_at = webhook.wait_for(
        "RedisCanaryTargetDown",
        &[("target", "direct"), ("severity", "critical")],
        "firing",
        Duration::from_secs(60),
    );
    eprintln!(
        "outage -> RedisCanaryOperationsFailed firing at the webhook: {:.1} s",
        failed_at.duration_since(outage).as_secs_f64()
    );
    eprintln!(
        "outage -> RedisCanaryTargetDown firing at the webhook: {:.1} s",
        down_at.duration_since(outage).as_secs_f64()
    );

    // Recovery: Redis comes back empty (no persistence), so acknowledged writes are gone.
    redis.restart();
    let back = Instant::now();
    let resolved_at = webhook.wait_for(
        "RedisCanaryTargetDown",
        &target,
        "resolved",
        Duration::from_secs(60),
    );
    let loss_at = webhook.wait_for(
        "RedisCanaryDataLoss",
        &[("target", "direct"), ("severity", "critical")],
        "firing",
        Duration::from_secs(60),
    );
    eprintln!(
        "recovery -> RedisCanaryTargetDown resolved at the webhook: {:.1} s",
        resolved_at.duration_since(back).as_secs_f64()
    );
    eprintln!(
        "recovery -> RedisCanaryDataLoss (Redis restarted empty) firing at the webhook: {:.1} s",
        loss_at.duration_since(back).as_secs_f64()
    );
    // The failures happened: the event alert keeps paging for its 2m window.
    let firing: Vec<String> = prometheus
        .alerts()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            a["labels"]["alertname"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(
        firing.iter().any(|a| a == "RedisCanaryOperationsFailed"),
        "{firing:?}"
    );
    assert!(
        !firing.iter().any(|a| a == "RedisCanaryTargetDown"),
        "{firing:?}"
    );

    // Every dashboard query returns data once the episode has ended and been scraped.
    wait_until(
        "the ended disruption to be scraped",
        Duration::from_secs(60),
        || {
            !prometheus
                .query(r#"redis_canary_disruption_duration_seconds_count{target="direct"} > 0"#)
                .is_empty()
        },
    );
    wait_until(
        "the backend restart to be scraped",
        Duration::from_secs(60),
        || {
            !prometheus
                .query(r#"redis_canary_backend_restarts_total{target="direct"} > 0"#)
                .is_empty()
        },
    );
    let end = unix_now();
    let range_s = (end - range_start).ceil() as u64;
    let mut empty = Vec::new();
    let mut sentinel_with_data = Vec::new();
    let mut cluster_with_data = Vec::new();
    let queries = dashboard_queries(&dashboard());
    for q in &queries {
        let expr = substitute(&q.expr, "direct", &node_regex, range_s);
        // A query Prometheus rejects fails here, empty or not.
        let result = if q.instant {
            prometheus.query(&expr)
        } else {
            prometheus.query_range(&expr, range_start, end, "1s")
        };
        if q.expr.contains(SENTINEL_SERIES) {
            // This canary has no Sentinel target: the Sentinel panels stay empty (they
            // must not show the standalone target's episodes as failovers).
            if !result.is_empty() {
                sentinel_with_data.push(format!("{}: {expr}", q.place));
            }
        } else if reads_cluster_series(&q.expr) {
            // Nor a Cluster target: the Cluster panels stay empty too.
            if !result.is_empty() {
                cluster_with_data.push(format!("{}: {expr}", q.place));
            }
        } else if !has_finite_value(&result) {
            empty.push(format!("{}: {expr}", q.place));
        }
    }
    assert!(
        sentinel_with_data.is_empty(),
        "Sentinel queries returned data for a standalone target:\n{}",
        sentinel_with_data.join("\n")
    );
    assert!(
        cluster_with_data.is_empty(),
        "Cluster queries returned data for a standalone target:\n{}",
        cluster_with_data.join("\n")
    );
    let unexpected: Vec<&String> = empty
        .iter()
        .filter(|e| {
            !PANELS_THAT_MAY_BE_EMPTY
                .iter()
                .any(|(p, _)| e.starts_with(p))
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "{} of {} dashboard queries returned no data:\n{}",
        unexpected.len(),
        queries.len(),
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "{} dashboard queries returned data; live test took {:.1} s",
        queries.len(),
        started.elapsed().as_secs_f64()
    );
}

// ------------------------------------------------------------------------------------
// Kubernetes manifests
// ------------------------------------------------------------------------------------

/// The `kubernetes-validate` that scripts/install-deps installs (in its own virtualenv),
/// or `KUBERNETES_VALIDATE`, or one on PATH.
fn kubernetes_validate() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBERNETES_VALIDATE") {
        return PathBuf::from(p);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")));
    let venv = data.map(|d| d.join("redis-canary/venv/bin/kubernetes-validate"));
    venv.filter(|p| p.is_file())
        .or_else(|| which("kubernetes-validate"))
        .unwrap_or_else(|| {
            panic!("kubernetes-validate not found: run scripts/install-deps (or set KUBERNETES_VALIDATE)")
        })
}

/// Parses a multi-document YAML stream into JSON values with the Python (and PyYAML)
/// that kubernetes-validate runs on.
fn yaml_to_json(validator: &Path, yaml: &str) -> Vec<Value> {
    let python = validator
        .parent()
        .map(|d| d.join("python3"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"));
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, yaml).expect("writing yaml");
    let (ok, out, err) = run(Command::new(python).arg("-c").arg(
        "import json, sys, yaml\n\
         json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None], sys.stdout)",
    )
    .arg(&file));
    assert!(ok, "yaml to json failed: {err}");
    serde_json::from_str::<Vec<Value>>(&out).expect("json from python")
}

fn kustomize(kubectl: &Path, dir: &str) -> String {
    let (ok, out, err) = run(Command::new(kubectl)
        .args(["kustomize", dir])
        .current_dir(repo()));
    assert!(ok, "kubectl kustomize {dir} failed:\n{err}");
    out
}

fn validate(validator: &Path, yaml: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("objects.yaml");
    std::fs::write(&file, yaml).expect("writing objects");
    // The schemas of an old and of the newest Kubernetes the package knows.
    for version in [Some("1.27"), None] {
        let mut cmd = Command::new(validator);
        cmd.args(["--strict", "--quiet"]);
        if let Some(v) = version {
            cmd.args(["-k", v]);
        }
        let (ok, out, err) = run(cmd.arg(&file));
        assert!(
            ok,
            "kubernetes-validate {version:?} rejected the objects:\n{out}{err}"
        );
        // It only warns for the CRDs, which are checked structurally below.
        for line in out.lines().chain(err.lines()) {
            if line.contains("Couldn't find schema") {
                assert!(
                    line.contains("ServiceMonitor") || line.contains("PrometheusRule"),
                    "no schema for a non-CRD kind: {line}"
                );
            }
        }
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .unwrap_or_else(|| panic!("no {kind} {name_prefix}*"))
}

/// Whether every label of `selector` is in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let sel = selector.as_object().expect("selector labels");
    !sel.is_empty() && sel.iter().all(|(k, v)| labels[k] == *v)
}

/// `kubectl kustomize dir`, validated against the Kubernetes schemas, as JSON objects.
fn build_overlay(kubectl: &Path, validator: &Path, dir: &str) -> Vec<Value> {
    let yaml = kustomize(kubectl, dir);
    validate(validator, &yaml);
    yaml_to_json(validator, &yaml)
}

/// An overlay of the base: every object in `namespace`, the canary Deployment and the
/// base's objects as [`check_canary_deployment`] and [`check_base_objects`] want them.
fn check_base_in_namespace(overlay: &[Value], namespace: &str) {
    for o in overlay {
        assert_eq!(
            o["metadata"]["namespace"], namespace,
            "{} not in {namespace}",
            o["metadata"]["name"]
        );
    }
    let pod_labels = check_canary_deployment(overlay);
    check_base_objects(overlay, &pod_labels);
}

/// The `canary.toml` of the canary's ConfigMap in `objects`.
fn canary_toml(objects: &[Value]) -> &str {
    find(objects, "ConfigMap", "redis-canary-config")["data"]["canary.toml"]
        .as_str()
        .expect("canary.toml")
}

/// Runs `redis-canary check-config` on a configuration (with `REDIS_CANARY_SHARD` set to
/// `shard` if given); asserts it is accepted and returns what it printed.
fn run_check_config(toml_text: &str, shard: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("canary.toml");
    std::fs::write(&file, toml_text).expect("writing config");
    let mut cmd = Command::new(canary_bin());
    cmd.args(["check-config", "--config"]).arg(&file);
    if let Some(shard) = shard {
        cmd.env("REDIS_CANARY_SHARD", shard);
    }
    let (ok, out, err) = run(&mut cmd);
    assert!(
        ok,
        "check-config (shard {shard:?}) rejected the ConfigMap's canary.toml:\n{out}{err}"
    );
    out
}

/// Runs `redis-canary check-config` on a configuration; returns its targets.
fn check_canary_config(toml_text: &str) -> Vec<toml::Table> {
    run_check_config(toml_text, None);
    let table: toml::Table = toml_text.parse().expect("canary.toml parses");
    table["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t.as_table().expect("target table").clone())
        .collect()
}

/// The canary Deployment of `objects`: hardened, probed, resourced, wired to its
/// configuration and password; returns its pod labels.
fn check_canary_deployment(objects: &[Value]) -> Value {
    let deploy = find(objects, "Deployment", "redis-canary");
    let pod = &deploy["spec"]["template"]["spec"];
    let labels = deploy["spec"]["template"]["metadata"]["labels"].clone();
    assert!(selects(&deploy["spec"]["selector"]["matchLabels"], &labels));
    assert_eq!(pod["enableServiceLinks"], false);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    for kind in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(c["resources"][kind][res].is_string(), "no {kind}.{res}");
        }
    }
    assert!(
        c["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["name"] == "metrics" && p["containerPort"] == 9736)
    );
    // The volumes name the generated ConfigMap (with its hash) and the Secret.
    let config = find(objects, "ConfigMap", "redis-canary-config");
    let volumes = pod["volumes"].as_array().expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == config["metadata"]["name"])
    );
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "redis-password")
    );
    labels
}

/// Service, ServiceMonitor, PrometheusRule, dashboard ConfigMap and NetworkPolicy of a
/// build that contains the base.
fn check_base_objects(objects: &[Value], pod_labels: &Value) {
    let service = find(objects, "Service", "redis-canary");
    assert!(selects(&service["spec"]["selector"], pod_labels));
    assert_eq!(
        service["spec"]["ports"],
        serde_json::json!([{"name": "metrics", "port": 9736, "targetPort": "metrics", "protocol": "TCP"}])
    );

    let sm = find(objects, "ServiceMonitor", "redis-canary");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(selects(
        &sm["spec"]["selector"]["matchLabels"],
        &service["metadata"]["labels"]
    ));
    let endpoints = sm["spec"]["endpoints"].as_array().expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    assert_eq!(endpoints[0]["port"], "metrics");
    assert_eq!(endpoints[0]["interval"], "10s");
    assert_eq!(endpoints[0]["path"], "/metrics");

    let rule = find(objects, "PrometheusRule", "redis-canary");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let rules_file = yaml_to_json(
        &kubernetes_validate(),
        &repo_file("alerts/redis-canary.rules.yml"),
    );
    assert_eq!(
        rule["spec"], rules_file[0],
        "PrometheusRule spec != alerts/redis-canary.rules.yml"
    );

    let dash = find(objects, "ConfigMap", "redis-canary-dashboard");
    assert_eq!(dash["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dash["data"]["redis-canary.json"].as_str(),
        Some(repo_file("grafana/redis-canary.json").as_str())
    );

    let np = find(objects, "NetworkPolicy", "redis-canary");
    assert!(selects(
        &np["spec"]["podSelector"]["matchLabels"],
        pod_labels
    ));
    let ingress_ports = &np["spec"]["ingress"][0]["ports"];
    assert_eq!(
        ingress_ports,
        &serde_json::json!([{"port": "metrics", "protocol": "TCP"}])
    );
}

#[test]
#[cfg_attr(
    not(all(have_haproxy, have_kubectl, have_kubernetes_validate)),
    ignore = "needs haproxy, kubectl, kubernetes-validate (not installed: scripts/install-deps)"
)]
fn kustomize_base_and_keydb_haproxy_overlay_build_and_validate_against_kubernetes_schemas() {
    // Skipped (see the attribute) when a tool is missing, never passed without testing.
    let kubectl = which("kubectl").expect("kubectl on PATH (build.rs found it there)");
    let validator = kubernetes_validate();

    // Base.
    let base = build_overlay(&kubectl, &validator, "deploy/kubernetes/base");
    let mut kinds: Vec<&str> = base
        .iter()
        .map(|o| o["kind"].as_str().unwrap_or_default())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor"
        ]
    );
    let pod_labels = check_canary_deployment(&base);
    check_base_objects(&base, &pod_labels);
    let targets = check_canary_config(canary_toml(&base));
    assert_eq!(targets.len(), 1);

    // Overlay: the base in namespace keydb, HAProxy, and the canary watching every path.
    let overlay = build_overlay(
        &kubectl,
        &validator,
        "deploy/kubernetes/overlays/keydb-haproxy",
    );
    check_base_in_namespace(&overlay, "keydb");

    let targets = check_canary_config(canary_toml(&overlay));
    let urls: Vec<&str> = targets
        .iter()
        .map(|t| t["url"].as_str().expect("url"))
        .collect();
    assert_eq!(
        urls,
        [
            "redis://haproxy:6379",
            "redis://keydb-lb:6379",
            "redis://keydb-0.keydb-headless:6379",
            "redis://keydb-1.keydb-headless:6379",
            "redis://keydb-2.keydb-headless:6379",
        ]
    );
    for t in &targets {
        assert_eq!(
            t["password_file"].as_str(),
            Some("/run/secrets/redis/password")
        );
    }
    assert_eq!(
        targets[0]["nodes"].as_array().map(Vec::len),
        Some(3),
        "nodes of the HAProxy target"
    );

    let haproxy_cfg = find(&overlay, "ConfigMap", "haproxy-config");
    assert_eq!(
        haproxy_cfg["data"]["haproxy.cfg"].as_str(),
        Some(repo_file("deploy/haproxy/haproxy.cfg").as_str()),
        "the HAProxy ConfigMap is not deploy/haproxy/haproxy.cfg"
    );
    let haproxy = find(&overlay, "Deployment", "haproxy");
    let pod = &haproxy["spec"]["template"]["spec"];
    assert_eq!(pod["enableServiceLinks"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert!(
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["configMap"]["name"] == haproxy_cfg["metadata"]["name"])
    );
    let env = pod["containers"][0]["env"].as_array().expect("env");
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("HAProxy env has no {name}"))
    };
    assert_eq!(value("REDIS_ROLE")["value"], "active-replica");
    for i in 0..3 {
        assert_eq!(
            value(&format!("REDIS_NODE_{i}"))["value"],
            format!("keydb-{i}.keydb-headless:6379")
        );
    }
    assert!(
        value("REDIS_PASSWORD")["value"].is_null(),
        "password in plain text"
    );
    assert_eq!(
        value("REDIS_PASSWORD")["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "redis-password", "key": "password"})
    );
    let service = find(&overlay, "Service", "haproxy");
    assert!(selects(
        &service["spec"]["selector"],
        &haproxy["spec"]["template"]["metadata"]["labels"]
    ));

    // The configuration HAProxy gets is complete: `haproxy -c` accepts it with exactly
    // the environment of the Deployment (the password replaced by a dummy).
    let mut cmd = Command::new("haproxy");
    cmd.arg("-c")
        .arg("-f")
        .arg(repo().join("deploy/kubernetes/overlays/keydb-haproxy/haproxy.cfg"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for e in env {
        let v = e["value"].as_str().unwrap_or("dummy-password");
        cmd.env(e["name"].as_str().expect("env name"), v);
    }
    let (ok, out, err) = run(&mut cmd);
    assert!(
        ok,
        "haproxy -c rejected the overlay's configuration and environment:\n{out}{err}"
    );
}

#[test]
#[cfg_attr(
    not(all(have_kubectl, have_kubernetes_validate)),
    ignore = "needs kubectl, kubernetes-validate (not installed: scripts/install-deps)"
)]
fn kustomize_redis_sentinel_overlay_builds_validates_and_watches_three_sentinels() {
    let kubectl = which("kubectl").expect("kubectl on PATH (build.rs found it there)");
    let validator = kubernetes_validate();
    let overlay = build_overlay(
        &kubectl,
        &validator,
        "deploy/kubernetes/overlays/redis-sentinel",
    );
    check_base_in_namespace(&overlay, "redis");

    // One Sentinel target: the three sentinels, the master set, both passwords as files;
    // the canary accepts the configuration.
    let targets = check_canary_config(canary_toml(&overlay));
    assert_eq!(targets.len(), 1);
    let t = &targets[0];
    assert_eq!(t["mode"].as_str(), Some("sentinel"));
    assert!(!t.contains_key("url"), "a Sentinel target has no url");
    assert_eq!(t["master_name"].as_str(), Some("mymaster"));
    let sentinels: Vec<&str> = t["sentinels"]
        .as_array()
        .expect("sentinels")
        .iter()
        .map(|s| s.as_str().expect("sentinel url"))
        .collect();
    assert_eq!(
        sentinels,
        (0..3)
            .map(|i| format!("redis://redis-sentinel-{i}.redis-sentinel-headless:26379"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        t["password_file"].as_str(),
        Some("/run/secrets/redis/password")
    );
    assert_eq!(
        t["sentinel_password_file"].as_str(),
        Some("/run/secrets/sentinel/password")
    );

    // The sentinels' password is mounted where sentinel_password_file points, from its
    // own Secret; the data nodes' one stays as the base has it.
    let deploy = find(&overlay, "Deployment", "redis-canary");
    let pod = &deploy["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"] == "redis-sentinel-password")
        .expect("a volume of the Secret redis-sentinel-password");
    assert_eq!(
        volume["secret"]["items"],
        serde_json::json!([{"key": "password", "path": "password"}])
    );
    let mounts = pod["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts");
    assert!(mounts.iter().any(|m| m["name"] == volume["name"]
        && m["mountPath"] == "/run/secrets/sentinel"
        && m["readOnly"] == true));

    // The NetworkPolicy lets the canary reach the sentinels and still the data nodes.
    let np = find(&overlay, "NetworkPolicy", "redis-canary");
    let egress_ports: Vec<&Value> = np["spec"]["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .flat_map(|rule| rule["ports"].as_array().into_iter().flatten())
        .collect();
    for port in [6379, 26379] {
        assert!(
            egress_ports
                .iter()
                .any(|p| p["port"] == port && p["protocol"] == "TCP"),
            "no egress to {port}: {egress_ports:?}"
        );
    }
}

#[test]
#[cfg_attr(
    not(all(have_kubectl, have_kubernetes_validate)),
    ignore = "needs kubectl, kubernetes-validate (not installed: scripts/install-deps)"
)]
fn kustomize_redis_cluster_overlay_builds_validates_and_watches_the_cluster_from_a_seed() {
    let kubectl = which("kubectl").expect("kubectl on PATH (build.rs found it there)");
    let validator = kubernetes_validate();
    let overlay = build_overlay(
        &kubectl,
        &validator,
        "deploy/kubernetes/overlays/redis-cluster",
    );
    check_base_in_namespace(&overlay, "redis");

    // One Cluster target: a seed, every replica followed, the nodes' password as a file;
    // the canary accepts the configuration (mode = "cluster", DESIGN §12.2).
    let targets = check_canary_config(canary_toml(&overlay));
    assert_eq!(targets.len(), 1);
    let t = &targets[0];
    assert_eq!(t["mode"].as_str(), Some("cluster"));
    assert_eq!(t["url"].as_str(), Some("redis://redis-cluster:6379"));
    assert_eq!(t["nodes"].as_str(), Some("auto"));
    assert_eq!(
        t["password_file"].as_str(),
        Some("/run/secrets/redis/password")
    );

    // The NetworkPolicy lets the canary reach the data port of any node the cluster names
    // (no destination restriction on that rule).
    let np = find(&overlay, "NetworkPolicy", "redis-canary");
    let data_rule = np["spec"]["egress"]
        .as_array()
        .expect("egress")
        .iter()
        .find(|rule| {
            rule["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|p| p["port"] == 6379 && p["protocol"] == "TCP")
        })
        .expect("an egress rule for 6379");
    assert!(data_rule["to"].is_null(), "6379 restricted: {data_rule}");
}

#[test]
#[cfg_attr(
    not(all(have_kubectl, have_kubernetes_validate)),
    ignore = "needs kubectl, kubernetes-validate (not installed: scripts/install-deps)"
)]
fn kustomize_sharded_overlay_runs_a_statefulset_whose_pods_share_every_target_once() {
    let kubectl = which("kubectl").expect("kubectl on PATH (build.rs found it there)");
    let validator = kubernetes_validate();
    let overlay = build_overlay(&kubectl, &validator, "deploy/kubernetes/overlays/sharded");
    assert!(!overlay.iter().any(|o| o["kind"] == "Deployment"));
    let sts = find(&overlay, "StatefulSet", "redis-canary");
    // The base's checks hold for the StatefulSet's pod template as for the Deployment's
    // (the headless Service last, so that the base's Service is the one they find: the
    // order of objects differs between kustomize versions).
    let mut as_deployment: Vec<Value> = overlay
        .iter()
        .map(|o| {
            let mut o = o.clone();
            if o["kind"] == "StatefulSet" {
                o["kind"] = "Deployment".into();
            }
            o
        })
        .collect();
    as_deployment.sort_by_key(|o| o["metadata"]["name"] == "redis-canary-headless");
    let pod_labels = check_canary_deployment(&as_deployment);
    check_base_objects(&as_deployment, &pod_labels);

    // N replicas named by a headless Service, each told its share by its ordinal.
    let replicas = sts["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "{replicas}");
    let headless = find(&overlay, "Service", "redis-canary-headless");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert!(selects(&headless["spec"]["selector"], &pod_labels));
    assert_eq!(sts["spec"]["serviceName"], headless["metadata"]["name"]);
    let env = sts["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env");
    let shard = env
        .iter()
        .find(|e| e["name"] == "REDIS_CANARY_SHARD")
        .expect("REDIS_CANARY_SHARD");
    assert_eq!(shard["value"], format!("ordinal/{replicas}"));

    // Every pod scraped once: the ServiceMonitor selects one Service only, not the
    // headless one (which would scrape every pod a second time).
    let sm = find(&overlay, "ServiceMonitor", "redis-canary");
    let selected: Vec<&Value> = overlay
        .iter()
        .filter(|o| o["kind"] == "Service")
        .filter(|o| {
            selects(
                &sm["spec"]["selector"]["matchLabels"],
                &o["metadata"]["labels"],
            )
        })
        .collect();
    assert_eq!(selected.len(), 1, "{selected:?}");
    assert!(selects(&selected[0]["spec"]["selector"], &pod_labels));

    // The pods' shares cover every target exactly once, none empty.
    let toml_text = canary_toml(&overlay);
    let targets = check_canary_config(toml_text);
    let mut owned = Vec::new();
    for ordinal in 0..replicas {
        let out = run_check_config(toml_text, Some(&format!("{ordinal}/{replicas}")));
        let share: Vec<String> = out
            .lines()
            .filter_map(|l| l.strip_prefix("#   "))
            .map(str::to_string)
            .collect();
        assert!(!share.is_empty(), "pod {ordinal} would run no target");
        owned.extend(share);
    }
    owned.sort();
    let mut names: Vec<String> = targets
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect();
    names.sort();
    assert_eq!(owned, names);

    // Nothing doubles with several replicas: every alert on the canary's per-target
    // series aggregates by target (and namespace, job), never per pod.
    let rules = yaml_to_json(&validator, &repo_file("alerts/redis-canary.rules.yml"));
    let mut checked = 0;
    for group in rules[0]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().unwrap_or_default();
            if expr.contains("redis_canary_") {
                checked += 1;
                assert!(
                    expr.contains("by (namespace, job, target"),
                    "{}: {expr}",
                    rule["alert"]
                );
            }
        }
    }
    assert!(checked >= 10, "only {checked} rules on canary series");
}

// ------------------------------------------------------------------------------------
// Copies in the kustomize trees
// ------------------------------------------------------------------------------------

#[test]
fn the_copies_in_the_kustomize_trees_are_identical_to_their_sources() {
    let k = "deploy/kubernetes";
    for (copy, source) in [
        (
            "base/dashboard/redis-canary.json",
            "grafana/redis-canary.json",
        ),
        (
            "overlays/keydb-haproxy/haproxy.cfg",
            "deploy/haproxy/haproxy.cfg",
        ),
    ] {
        let copy = format!("{k}/{copy}");
        assert!(
            std::fs::read(repo().join(&copy)).expect(&copy)
                == std::fs::read(repo().join(source)).expect(source),
            "{copy} differs from {source}: run deploy/kubernetes/sync.sh"
        );
    }

    // The PrometheusRule's spec is the rules file, line for line, indented by two.
    let rule = repo_file(&format!("{k}/base/prometheusrule.yaml"));
    let (_, spec) = rule.split_once("\nspec:\n").expect("a `spec:` line");
    let embedded: String = spec
        .split_inclusive('\n')
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect();
    assert!(
        embedded == repo_file("alerts/redis-canary.rules.yml"),
        "{k}/base/prometheusrule.yaml differs from alerts/redis-canary.rules.yml: run deploy/kubernetes/sync.sh"
    );

    let (ok, out, err) = run(Command::new(repo().join(format!("{k}/sync.sh"))).arg("--check"));
    assert!(ok, "sync.sh --check: {out}{err}");
}
