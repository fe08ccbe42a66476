//! The command line as a user meets it: exit codes, error messages that name the key and
//! value, `check-config`, flag and environment layering, and `soak` verdicts and reports.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::*;

fn canary(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(canary_bin())
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG", "info")
        .output()
        .expect("running redis-canary")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn write_config(dir: &tempfile::TempDir, toml: &str) -> String {
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, toml).unwrap();
    path.display().to_string()
}

#[test]
fn invalid_configuration_exits_2_naming_every_bad_key_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
[defaults]
rate = "fast"
value_size = 8
colour = "blue"
[[targets]]
name = "a"
url = "http://x:1"
"#,
    );
    for mode in ["run", "check-config", "soak"] {
        let mut args = vec![mode, "--config", &path];
        if mode == "soak" {
            args.extend(["--duration", "1s"]);
        }
        let o = canary(&args, &[]);
        assert_eq!(o.status.code(), Some(2), "{mode}: {}", stderr(&o));
        let err = stderr(&o);
        for needle in [
            "defaults.rate",
            "fast",
            "defaults.value_size",
            "defaults.colour",
            "targets[0].url",
            "http://x:1",
        ] {
            assert!(
                err.contains(needle),
                "{mode}: {needle:?} missing from:\n{err}"
            );
        }
    }
}

#[test]
fn a_listen_address_that_cannot_be_bound_exits_2_naming_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = canary(
        &["--listen", &addr, "--target", "a=redis://127.0.0.1:1"],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("listen") && err.contains(&addr), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(canary(&["--no-such-flag"], &[]).status.code(), Some(2));
    assert_eq!(
        canary(&["soak", "--target", "a=redis://h:1"], &[])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        canary(
            &["soak", "--duration", "0s", "--target", "a=redis://h:1"],
            &[]
        )
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn check_config_prints_the_layered_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        r#"
listen = "127.0.0.1:1111"
[defaults]
rate = 5
[[targets]]
name = "a"
url = "redis://:pw-in-url-123@old-host:6379"
[[targets]]
name = "b"
url = "redis://b:6379"
password = "inline-pw-456"
keys = 7
"#,
    );
    let o = canary(
        &[
            "check-config",
            "--config",
            &path,
            "--target",
            "a=redis://new-host:6380",
            "--listen",
            "127.0.0.1:2222",
        ],
        &[
            ("REDIS_CANARY_DEFAULTS__RATE", "20"),
            ("REDIS_CANARY_LISTEN", "127.0.0.1:3333"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let parsed: toml::Value = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    // Flag beats environment beats file.
    assert_eq!(parsed["listen"].as_str(), Some("127.0.0.1:2222"), "{out}");
    assert!(
        out.contains("new-host") && !out.contains("old-host"),
        "{out}"
    );
    // Environment beats file; the per-target override stays.
    assert!(out.contains("rate = 20"), "{out}");
    assert!(out.contains("keys = 7"), "{out}");
    assert!(
        !out.contains("pw-in-url-123") && !out.contains("inline-pw-456"),
        "{out}"
    );
    assert!(out.contains("****"), "{out}");
}

#[test]
fn malformed_environment_values_exit_2_without_showing_the_password() {
    for (name, value) in [
        (
            "REDIS_CANARY_TARGETS",
            r#"[{name="a", url="redis://x", password="hunter2"]"#,
        ),
        (
            "REDIS_CANARY_TARGETS",
            r#"[{name="a", url="redis://canary:hunter2@x", rate=}]"#,
        ),
        (
            "REDIS_CANARY_DEFAULTS",
            r#"{rate=5, sentinel_password='hunter2'"#,
        ),
    ] {
        for mode in ["check-config", "run"] {
            let o = canary(&[mode], &[(name, value)]);
            let err = stderr(&o);
            assert_eq!(o.status.code(), Some(2), "{mode} {name}: {err}");
            assert!(err.contains(name), "{mode}: the variable is named: {err}");
            assert!(!err.contains("hunter2"), "{mode} {name}: {err}");
            assert!(!stdout(&o).contains("hunter2"), "{mode} {name}");
        }
    }
}

#[test]
fn a_config_file_that_never_ends_exits_2_at_once_naming_it() {
    let started = std::time::Instant::now();
    let o = canary(&["check-config", "--config", "/dev/zero"], &[]);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("--config = \"/dev/zero\""), "{err}");
    assert!(err.contains("larger than"), "{err}");
}

#[test]
fn misspelt_keys_and_flags_get_a_did_you_mean_hint() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[defaults]\nrat = 5\n[[targets]]\nname = \"a\"\nurl = \"redis://h\"\n",
    );
    let o = canary(&["check-config", "--config", &path], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("defaults.rat = 5: unknown key (did you mean \"rate\"?)"),
        "{}",
        stderr(&o)
    );
    let o = canary(&["check-config", "--targt", "a=redis://h"], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--target"), "{}", stderr(&o));
}

#[test]
fn check_config_prints_the_protocol_and_tls_files_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[defaults]\nprotocol = 3\n[[targets]]\nname = \"a\"\nurl = \"rediss://h\"\n",
    );
    let o = canary(&["check-config", "--config", &path], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("protocol = 3"), "{}", stdout(&o));

    let missing = dir.path().join("missing-ca.pem");
    let path = write_config(
        &dir,
        &format!(
            "[[targets]]\nname = \"a\"\nurl = \"rediss://h\"\ntls = {{ ca_file = {:?} }}\n",
            missing.display().to_string()
        ),
    );
    let o = canary(&["check-config", "--config", &path], &[]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.contains("targets[0].tls.ca_file"), "{err}");
    assert!(err.contains("missing-ca.pem"), "{err}");
}

#[test]
fn unknown_redis_canary_variables_from_kubernetes_are_ignored_with_a_warning() {
    let redis = RedisServer::start(&[]);
    let canary = Canary::start_with(
        &one_target_config("a", &redis.url(), ""),
        &[],
        &[
            ("REDIS_CANARY_PORT", "tcp://10.0.0.1:9736"),
            ("REDIS_CANARY_SERVICE_HOST", "10.0.0.1"),
        ],
    );
    wait_until(
        "a warning naming the variables",
        Duration::from_secs(5),
        || {
            let log = canary.log();
            log.contains("REDIS_CANARY_PORT") && log.contains("REDIS_CANARY_SERVICE_HOST")
        },
    );
    let log = canary.log();
    assert_eq!(log.matches("ignoring unknown").count(), 1, "{log}");
    assert!(
        !log.contains("10.0.0.1"),
        "values must not be logged: {log}"
    );
}

#[test]
fn a_healthy_soak_passes_and_writes_a_valid_report() {
    let redis = RedisServer::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let path = write_config(
        &dir,
        &one_target_config("a", &redis.url(), r#"slo = { p99_operation = "1s" }"#),
    );
    let port = free_port().to_string();
    let o = canary(
        &[
            "soak",
            "--config",
            &path,
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--duration",
            "3s",
            "--report",
        ]
        .into_iter()
        .chain([report.to_str().unwrap()])
        .collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&read(&report)).unwrap();
    assert_eq!(r["schema"], 1);
    assert_eq!(r["pass"], true);
    assert_eq!(r["interrupted"], false);
    let d = r["duration_seconds"].as_f64().unwrap();
    assert!((2.5..6.0).contains(&d), "{d}");
    let a = &r["targets"][0];
    assert_eq!(a["name"], "a");
    let writes = a["operations"]["write"]["ok"].as_u64().unwrap();
    assert!(
        (40..=80).contains(&writes),
        "{writes} writes in 3 s at 20/s"
    );
    assert_eq!(a["availability"]["all"], 1.0);
    assert!(a["reads"]["fresh"].as_u64().unwrap() > 20);
    assert!(
        a["latency_seconds"]["operation"]["read"]["p99"]
            .as_f64()
            .unwrap()
            < 1.0
    );
    assert_eq!(a["episodes"].as_array().unwrap().len(), 0);
    assert_eq!(a["backends"].as_array().unwrap().len(), 1);
    assert!(
        a["slo"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["pass"] == true)
    );
    assert!(stdout(&o).contains("verdict: PASS"), "{}", stdout(&o));
}

#[test]
#[cfg_attr(not(have_redis_server), ignore = "redis-server not installed")]
fn a_soak_beside_a_daemon_with_the_same_instance_and_target_shares_no_key_with_it() {
    let redis = RedisServer::start(&[]);
    let toml = one_target_config("a", &redis.url(), "");
    let daemon = Canary::start(&toml);
    daemon.wait_ok("a", "read", 20.0);
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, &toml);
    let o = canary(
        &[
            "soak",
            "--config",
            &path,
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "3s",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", stdout(&o), stderr(&o));
    // Both wrote: the daemon under the default prefix, the soak under its own.
    let mut c = Client::connect(redis.port).expect("a client");
    let daemon_keys = c.call(&["KEYS", "redis-canary:test:a:*"]).unwrap();
    let soak_keys = c.call(&["KEYS", "redis-canary:test:soak:a:*"]).unwrap();
    assert!(!daemon_keys.is_empty() && !soak_keys.is_empty());
    assert!(daemon_keys.lines().all(|k| !k.contains(":soak:")));
    // Same keys, the daemon would have judged the soak's values corrupt (an epoch newer
    // than its own).
    daemon.wait_ok("a", "read", 20.0);
    let m = daemon.metrics();
    for v in ["corrupt", "stale", "missing"] {
        assert_eq!(
            m.sum(names::READS, &[names::t("a"), ("verdict", v)]),
            0.0,
            "{v}: {}",
            m.text
        );
    }
}

#[test]
fn a_soak_against_a_dead_target_fails_naming_the_broken_slos() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let dead = format!("redis://127.0.0.1:{}", free_port());
    let path = write_config(&dir, &one_target_config("dead", &dead, ""));
    let listen = format!("127.0.0.1:{}", free_port());
    let o = canary(
        &[
            "soak",
            "--config",
            &path,
            "--listen",
            &listen,
            "--duration",
            "2s",
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(&read(&report)).unwrap();
    assert_eq!(r["pass"], false);
    let t = &r["targets"][0];
    let failed: Vec<&str> = t["slo"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["pass"] == false)
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(failed.contains(&"min_availability"), "{failed:?}");
    assert!(failed.contains(&"max_disruption"), "{failed:?}");
    // The outage lasted the whole run and is reported as one episode ending with it.
    let episodes = t["episodes"].as_array().unwrap();
    assert_eq!(episodes.len(), 1);
    assert!(episodes[0]["results"]["refused"].as_u64().unwrap() > 0);
    // Connect failures are counted where they happen: no connection, no attempt.
    assert!(t["connects"]["pool"]["refused"].as_u64().unwrap() > 0);
    assert_eq!(t["attempts"]["write"]["refused"], 0);
    assert!(stdout(&o).contains("verdict: FAIL"));
}

#[test]
fn the_metrics_profile_is_printed_by_check_config_and_a_bad_one_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let one = "[[targets]]\nname = \"a\"\nurl = \"redis://h\"\n";
    let path = write_config(&dir, &format!("metrics_profile = \"lean\"\n{one}"));
    let o = canary(&["check-config", "--config", &path], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("metrics_profile = \"lean\"\n"),
        "{}",
        stdout(&o)
    );
    let path = write_config(&dir, &format!("metrics_profile = \"tiny\"\n{one}"));
    for mode in ["check-config", "run"] {
        let o = canary(&[mode, "--config", &path], &[]);
        assert_eq!(o.status.code(), Some(2), "{mode}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("metrics_profile = \"tiny\": expected \"full\" or \"lean\""),
            "{mode}: {}",
            stderr(&o)
        );
    }
}
