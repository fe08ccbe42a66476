//! Configuration files and layering, through the public API: every file in
//! `tests/config/valid` loads, every file in `tests/config/invalid` fails with the messages
//! its leading `# expect: <substring>` lines name, and the environment and flags layer over
//! the file as DESIGN §4 says.

use redis_canary as canary;

use std::path::{Path, PathBuf};
use std::time::Duration;

use canary::cli::CommonArgs;
use canary::config::{self, Config, ConfigErrors, LogFormat, PasswordSource, Rate};

fn config_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config")
        .join(kind)
}

fn toml_files(kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(config_dir(kind))
        .expect("the config test folder exists")
        .map(|entry| entry.expect("readable folder entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no files in tests/config/{kind}");
    files
}

fn args_for(path: &Path) -> CommonArgs {
    CommonArgs {
        config: Some(path.to_path_buf()),
        ..CommonArgs::default()
    }
}

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

fn load(args: &CommonArgs, vars: &[(&str, &str)]) -> Config {
    config::load_from(args, &env(vars)).unwrap_or_else(|errors| panic!("should load:\n{errors}"))
}

fn reject(args: &CommonArgs, vars: &[(&str, &str)]) -> ConfigErrors {
    match config::load_from(args, &env(vars)) {
        Ok(config) => panic!("should be rejected, loaded {config:?}"),
        Err(errors) => errors,
    }
}

fn valid(name: &str) -> PathBuf {
    config_dir("valid").join(name)
}

/// A file in a temporary directory, for tests that need their own.
fn temp_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("canary.toml");
    std::fs::write(&path, text).expect("write config");
    (dir, path)
}

#[test]
fn every_valid_file_loads() {
    for path in toml_files("valid") {
        if let Err(errors) = config::load_from(&args_for(&path), &[]) {
            panic!("{} should load:\n{errors}", path.display());
        }
    }
}

#[test]
fn every_invalid_file_fails_with_the_messages_it_expects() {
    for path in toml_files("invalid") {
        let text = std::fs::read_to_string(&path).expect("readable");
        let expected: Vec<&str> = text
            .lines()
            .map_while(|line| line.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} must start with a `# expect: <substring>` line",
            path.display()
        );
        let errors = match config::load_from(&args_for(&path), &[]) {
            Ok(_) => panic!("{} should be rejected", path.display()),
            Err(errors) => errors.to_string(),
        };
        for substring in expected {
            assert!(
                errors.contains(substring),
                "{}: expected {substring:?} in:\n{errors}",
                path.display()
            );
        }
    }
}

#[test]
fn a_file_with_three_problems_reports_all_three_at_once() {
    let errors = reject(
        &args_for(&config_dir("invalid").join("three_problems.toml")),
        &[],
    );
    let keys: Vec<&str> = errors
        .0
        .iter()
        .map(|problem| problem.key.as_str())
        .collect();
    assert_eq!(keys.len(), 3, "{errors}");
    for key in ["defaults.rate", "targets[0].keys", "slo.max_disruptions"] {
        assert!(keys.contains(&key), "{key} missing from:\n{errors}");
    }
    assert_eq!(errors.to_string().lines().count(), 3);
    assert!(
        errors
            .to_string()
            .lines()
            .all(|line| line.starts_with("invalid configuration: "))
    );
}

#[test]
fn the_full_example_sets_every_key() {
    let config = load(&args_for(&valid("full.toml")), &[]);
    assert_eq!(config.listen, "127.0.0.1:19736".parse().unwrap());
    assert_eq!(config.instance, "canary-0");
    assert_eq!(config.log_format, LogFormat::Json);
    assert!(config.cleanup);
    assert_eq!(
        config.telemetry.otlp_endpoint.as_deref(),
        Some("http://otel-collector:4318")
    );
    assert_eq!(config.telemetry.sample_ratio, 0.05);
    assert_eq!(config.targets.len(), 3);

    let haproxy = &config.targets[0];
    assert_eq!(
        haproxy.key_prefix,
        "redis-canary:canary-0:keydb-via-haproxy:"
    );
    assert_eq!(haproxy.username.as_deref(), Some("canary"));
    assert_eq!(
        haproxy.password,
        PasswordSource::File("/run/secrets/redis-password".into())
    );
    let nodes: Vec<String> = haproxy.nodes.iter().map(|node| node.host_port()).collect();
    assert_eq!(
        nodes,
        ["keydb-0.keydb-headless:6379", "keydb-1.keydb-headless:6379"]
    );
    assert_eq!(haproxy.settings.rate, Rate::PerSecond(20.0));
    assert_eq!(haproxy.settings.value_size, 128);
    assert_eq!(haproxy.settings.retry.max_retries, 3);
    assert_eq!(haproxy.slo.max_disruption, Duration::from_secs(2));

    let lb = &config.targets[1];
    assert!(lb.url.tls);
    assert_eq!(lb.url.db, 2);
    assert_eq!(lb.password, PasswordSource::Env("REDIS_PASSWORD".into()));
    assert_eq!(lb.settings.rate, Rate::PerSecond(0.5));
    assert_eq!(lb.settings.connect_probe_interval, Duration::ZERO);
    let tls = lb.settings.tls.as_ref().expect("tls");
    assert!(tls.insecure);
    assert_eq!(tls.server_name.as_deref(), Some("keydb-lb"));
    // Inherited key by key from [defaults].tls.
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(Path::new("tests/config/tls/ca.pem"))
    );
    assert_eq!(lb.slo.min_availability, 0.9);

    let direct = &config.targets[2];
    assert_eq!(direct.url.host_port(), "[fd00::10]:6379");
    assert_eq!(direct.key_prefix, "canary/redis-direct/");
}

#[test]
fn a_minimal_file_gets_every_default() {
    let config = load(&args_for(&valid("minimal.toml")), &[]);
    assert_eq!(config.listen, "0.0.0.0:9736".parse().unwrap());
    assert_eq!(config.log_format, LogFormat::Text);
    assert!(!config.cleanup);
    assert_eq!(config.telemetry.otlp_endpoint, None);
    assert_eq!(config.telemetry.sample_ratio, 0.01);
    assert!(!config.instance.is_empty());
    let target = &config.targets[0];
    assert_eq!(target.url.port, 6379);
    assert_eq!(target.password, PasswordSource::None);
    assert_eq!(target.settings, config::Settings::default());
    assert_eq!(target.slo, config::Slo::default());
    assert_eq!(
        target.key_prefix,
        format!("redis-canary:{}:local:", config.instance)
    );
}

#[test]
fn targets_override_defaults_key_by_key() {
    let config = load(&args_for(&valid("per_target_overrides.toml")), &[]);
    let (inherits, overrides) = (&config.targets[0], &config.targets[1]);
    assert_eq!(inherits.settings.rate, Rate::PerSecond(5.0));
    assert_eq!(overrides.settings.rate, Rate::PerSecond(50.0));
    assert_eq!(inherits.settings.retry.max, Duration::from_secs(10));
    assert_eq!(overrides.settings.retry.max, Duration::from_secs(2));
    assert_eq!(overrides.settings.retry.max_retries, 2);
    assert_eq!(overrides.settings.retry.base, Duration::from_millis(200));
    assert_eq!(inherits.slo.max_disruption, Duration::from_secs(1));
    assert_eq!(overrides.slo.max_disruption, Duration::from_secs(5));
    assert_eq!(overrides.slo.p99_operation, Duration::from_millis(20));
}

#[test]
fn rate_max_means_closed_loop() {
    let config = load(&args_for(&valid("rate_max.toml")), &[]);
    assert_eq!(config.targets[0].settings.rate, Rate::Max);
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let (_dir, path) = temp_file(
        "listen = \"127.0.0.1:1000\"\n[defaults]\nrate = 5\n[[targets]]\nname = \"a\"\nurl = \"redis://h\"\n",
    );
    let vars = [
        ("REDIS_CANARY_DEFAULTS__RATE", "20"),
        ("REDIS_CANARY_LISTEN", "127.0.0.1:2000"),
    ];
    let from_env = load(&args_for(&path), &vars);
    assert_eq!(from_env.targets[0].settings.rate, Rate::PerSecond(20.0));
    assert_eq!(from_env.listen, "127.0.0.1:2000".parse().unwrap());

    let with_flag = CommonArgs {
        listen: Some("127.0.0.1:0".into()),
        log_format: Some("json".into()),
        ..args_for(&path)
    };
    let from_flags = load(&with_flag, &vars);
    assert_eq!(from_flags.listen, "127.0.0.1:0".parse().unwrap());
    assert_eq!(from_flags.log_format, LogFormat::Json);
    assert_eq!(from_flags.targets[0].settings.rate, Rate::PerSecond(20.0));
}

#[test]
fn targets_can_come_from_the_environment_alone() {
    let config = load(
        &CommonArgs::default(),
        &[(
            "REDIS_CANARY_TARGETS",
            "[{name=\"a\", url=\"redis://h:6379\"}, {name=\"b\", url=\"redis://h:6380\", rate=2}]",
        )],
    );
    let names: Vec<&str> = config.targets.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(config.targets[1].settings.rate, Rate::PerSecond(2.0));
}

#[test]
fn a_target_flag_replaces_the_url_of_a_file_target_and_keeps_its_other_keys() {
    let (_dir, path) = temp_file(
        "[[targets]]\nname = \"a\"\nurl = \"redis://old:6379\"\nrate = 3\npassword_env = \"PW\"\n",
    );
    let args = CommonArgs {
        targets: vec!["a=redis://new:7000/1".into(), "b=rediss://other".into()],
        ..args_for(&path)
    };
    let config = load(&args, &[]);
    assert_eq!(config.targets.len(), 2);
    let a = &config.targets[0];
    assert_eq!(a.url.host_port(), "new:7000");
    assert_eq!(a.url.db, 1);
    assert_eq!(a.settings.rate, Rate::PerSecond(3.0));
    assert_eq!(a.password, PasswordSource::Env("PW".into()));
    let b = &config.targets[1];
    assert_eq!(b.name, "b");
    assert!(b.url.tls);
    assert_eq!(b.settings, config::Settings::default());
}

#[test]
fn target_flags_alone_are_enough_and_a_repeated_name_replaces_the_url() {
    let args = CommonArgs {
        targets: vec!["a=redis://x:1".into(), "a=redis://y:2".into()],
        ..CommonArgs::default()
    };
    let config = load(&args, &[]);
    assert_eq!(config.targets.len(), 1);
    assert_eq!(config.targets[0].url.host_port(), "y:2");
}

#[test]
fn bad_flags_are_reported_under_their_flag_with_passwords_masked() {
    let args = CommonArgs {
        listen: Some("nowhere".into()),
        targets: vec![
            "no-equals-sign".into(),
            "Bad=redis://h".into(),
            "a=http://user:hunter2@h".into(),
        ],
        ..CommonArgs::default()
    };
    let errors = reject(&args, &[]);
    let text = errors.to_string();
    let keys: Vec<&str> = errors
        .0
        .iter()
        .map(|problem| problem.key.as_str())
        .collect();
    assert_eq!(
        keys,
        ["--target", "--target", "--target", "listen"],
        "{text}"
    );
    assert!(text.contains("listen = \"nowhere\""), "{text}");
    assert!(text.contains("(from --listen)"), "{text}");
    assert!(text.contains("\"a=http://user:****@h\""), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    // The bad flags already explain why there is no target.
    assert!(!text.contains("at least one target"), "{text}");
}

#[test]
fn unknown_redis_canary_variables_are_ignored_and_listed() {
    let config = load(
        &args_for(&valid("minimal.toml")),
        &[
            ("REDIS_CANARY_PORT", "tcp://10.0.0.1:9736"),
            ("REDIS_CANARY_SERVICE_HOST", "10.0.0.1"),
            ("REDIS_CANARY_PORT_9736_TCP_ADDR", "10.0.0.1"),
            ("UNRELATED", "x"),
        ],
    );
    assert_eq!(
        config.ignored_env,
        [
            "REDIS_CANARY_PORT",
            "REDIS_CANARY_PORT_9736_TCP_ADDR",
            "REDIS_CANARY_SERVICE_HOST"
        ]
    );
}

#[test]
fn an_unknown_key_under_a_known_variable_is_an_error_naming_the_variable() {
    let errors = reject(
        &args_for(&valid("minimal.toml")),
        &[("REDIS_CANARY_DEFAULTS__RATEX", "5")],
    );
    assert_eq!(
        errors.to_string(),
        "invalid configuration: defaults.ratex = \"5\": unknown key (did you mean \"rate\"?) \
         (from environment variable REDIS_CANARY_DEFAULTS__RATEX)"
    );
}

#[test]
fn the_otlp_endpoint_falls_back_to_the_standard_variable() {
    let config = load(
        &args_for(&valid("minimal.toml")),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")],
    );
    assert_eq!(
        config.telemetry.otlp_endpoint.as_deref(),
        Some("http://collector:4318")
    );
}

#[test]
fn a_missing_config_file_is_one_problem_naming_the_path() {
    let errors = reject(&args_for(Path::new("/nonexistent/canary.toml")), &[]);
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].key, "--config");
    assert!(errors.to_string().contains("/nonexistent/canary.toml"));
}

#[test]
fn masked_toml_never_contains_a_password_and_parses_back() {
    let (_dir, path) = temp_file(
        "[[targets]]\nname = \"a\"\nurl = \"redis://canary:url-secret@h:6379\"\n\
         [[targets]]\nname = \"b\"\nurl = \"redis://h2\"\npassword = \"file-secret\"\n",
    );
    let config = load(&args_for(&path), &[("REDIS_CANARY_PORT", "tcp://x")]);
    let text = config.to_masked_toml();
    assert!(!text.contains("url-secret"), "{text}");
    assert!(!text.contains("file-secret"), "{text}");
    assert!(text.contains("redis://canary:****@h:6379/0"), "{text}");
    assert!(text.contains("password = \"****\""), "{text}");
    assert!(text.contains("REDIS_CANARY_PORT"), "{text}");
    let parsed: toml::Table = text.parse().expect("masked output is toml");
    assert!(parsed.contains_key("targets"));
}

#[test]
fn masked_toml_of_the_full_example_loads_back_as_the_same_configuration() {
    for name in ["full.toml", "per_target_overrides.toml", "rate_max.toml"] {
        let config = load(&args_for(&valid(name)), &[]);
        let text = config.to_masked_toml();
        let (_dir, path) = temp_file(&text);
        let reloaded = load(&args_for(&path), &[]);
        if name == "full.toml" {
            // Only the inline password differs: it was masked.
            let mut expected = config.clone();
            expected.targets[2].password =
                PasswordSource::Inline(canary::secret::Secret::new("****"));
            assert_eq!(reloaded, expected, "{text}");
            assert!(!text.contains("inline-secret-in-file"));
            assert!(text.contains("password_file = \"/run/secrets/redis-password\""));
            assert!(text.contains("password_env = \"REDIS_PASSWORD\""));
        } else {
            assert_eq!(reloaded, config, "{name}:\n{text}");
        }
    }
}

#[test]
fn every_out_of_bounds_value_is_reported_at_once() {
    let errors = reject(
        &args_for(&config_dir("invalid").join("every_bound_at_once.toml")),
        &[],
    );
    let keys: Vec<&str> = errors.0.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "defaults.connect_probe_interval",
            "defaults.connect_timeout",
            "defaults.connections",
            "defaults.keys",
            "defaults.rate",
            "defaults.response_timeout",
            "defaults.retry.base",
            "defaults.retry.max_retries",
            "defaults.value_size",
        ],
        "{errors}"
    );
}

#[test]
fn values_at_the_edges_of_their_bounds_are_accepted() {
    let config = load(&args_for(&valid("bounds_at_the_edges.toml")), &[]);
    let target = &config.targets[0];
    assert_eq!(target.url.db, 4000);
    assert_eq!(target.settings.protocol, config::Protocol::Resp2);
    assert_eq!(target.settings.keys, 1);
    assert_eq!(target.settings.rate, Rate::PerSecond(100_000.0));
    assert_eq!(target.settings.connect_probe_interval, Duration::ZERO);
    assert_eq!(target.settings.connect_timeout, Duration::from_millis(1));
    assert_eq!(target.settings.response_timeout, Duration::from_secs(3600));
    assert_eq!(target.settings.retry.max_retries, 100);
}

#[test]
fn protocol_is_printed_and_loads_back() {
    let config = load(&args_for(&valid("bounds_at_the_edges.toml")), &[]);
    let (_dir, path) = temp_file(
        &config
            .to_masked_toml()
            .replace("protocol = 2", "protocol = 3"),
    );
    assert!(config.to_masked_toml().contains("protocol = 2"));
    let reloaded = load(&args_for(&path), &[]);
    assert_eq!(
        reloaded.targets[0].settings.protocol,
        config::Protocol::Resp3
    );
}

#[test]
fn a_config_file_larger_than_1_mib_is_refused_naming_the_file() {
    let (_dir, path) = temp_file(&format!(
        "# {}\n[[targets]]\nname = \"a\"\nurl = \"redis://h\"\n",
        "x".repeat(config::MAX_CONFIG_FILE_SIZE as usize)
    ));
    let errors = reject(&args_for(&path), &[]);
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].key, "--config");
    let text = errors.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("larger than 1048576 bytes"), "{text}");
}

#[test]
fn dev_zero_as_config_file_fails_at_once() {
    let started = std::time::Instant::now();
    let errors = reject(&args_for(Path::new("/dev/zero")), &[]);
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = errors.to_string();
    assert!(text.contains("--config = \"/dev/zero\""), "{text}");
    assert!(text.contains("larger than"), "{text}");
}

#[test]
fn malformed_environment_values_never_show_a_password() {
    for (name, value) in [
        (
            "REDIS_CANARY_TARGETS",
            r#"[{name="a", url="redis://x", password="hunter2"]"#,
        ),
        (
            "REDIS_CANARY_TARGETS",
            r#"[{name="a", url="redis://user:hunter2@x"]"#,
        ),
        (
            "REDIS_CANARY_DEFAULTS",
            r#"{rate=5, tls={ca_file="x"}, password = "hunter2""#,
        ),
        (
            "REDIS_CANARY_TARGETS",
            r#"[{name="a", url="redis://x", sentinel_password="hunter2", rate=}]"#,
        ),
    ] {
        let errors = reject(&CommonArgs::default(), &[(name, value)]);
        let text = errors.to_string();
        assert!(!text.contains("hunter2"), "{name}={value}:\n{text}");
        assert!(
            text.contains(name),
            "the problem names the variable:\n{text}"
        );
    }
}

#[test]
fn a_tls_file_given_in_defaults_is_checked_once_under_defaults() {
    let (_dir, path) = temp_file(
        "[defaults]\ntls = { ca_file = \"/nonexistent/ca.pem\" }\n\
         [[targets]]\nname = \"a\"\nurl = \"rediss://h\"\n\
         [[targets]]\nname = \"b\"\nurl = \"rediss://h2\"\n",
    );
    let errors = reject(&args_for(&path), &[]);
    let lines: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 1, "{errors}");
    assert!(
        lines[0].starts_with(
            "invalid configuration: defaults.tls.ca_file = \"/nonexistent/ca.pem\": cannot read the file"
        ),
        "{errors}"
    );
}

#[test]
fn a_value_with_control_characters_cannot_forge_a_log_line() {
    let errors = reject(
        &args_for(&valid("minimal.toml")),
        &[(
            "REDIS_CANARY_INSTANCE",
            "x\ninvalid configuration: everything is fine\u{1b}[2K",
        )],
    );
    let text = errors.to_string();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(!text.contains('\u{1b}'), "{text}");
    assert!(text.contains("instance = \"x\\ninvalid"), "{text}");
}
