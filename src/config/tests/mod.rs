//! Unit tests of the configuration: URL parsing, masking, layering and checking through
//! `load_layers` with an explicit environment.

use std::path::Path;
use std::time::Duration;

use super::layers::load_layers;
use super::problems::{mask_secrets_in_text, mask_url_text, suggestion};
use super::values::parse_duration;
use super::*;
use crate::cli::CommonArgs;

fn url(text: &str) -> RedisUrl {
    text.parse()
        .unwrap_or_else(|e| panic!("{text} should parse: {e}"))
}

fn url_error(text: &str) -> String {
    match text.parse::<RedisUrl>() {
        Ok(url) => panic!("{text} should not parse, got {url:?}"),
        Err(error) => error.to_string(),
    }
}

fn load_toml(toml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect();
    load_layers(
        Some((Path::new("test.toml"), toml)),
        &CommonArgs::default(),
        &env,
    )
}

fn problems(toml: &str) -> Vec<ConfigProblem> {
    match load_toml(toml, &[]) {
        Ok(config) => panic!("should be rejected: {config:?}"),
        Err(errors) => errors.0,
    }
}

/// Asserts that `problems` name every key of `keys`, never show `password` and that one
/// of them says `says`.
fn assert_reported(problems: &[ConfigProblem], keys: &[&str], password: &str, says: &str) {
    let reported: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    for key in keys {
        assert!(reported.contains(key), "{key} missing from {problems:#?}");
    }
    let text: String = problems.iter().map(|p| format!("{p}\n")).collect();
    assert!(!text.contains(password), "a password leaked: {text}");
    assert!(text.contains(says), "{text}");
}

/// The configuration as `check-config` prints it, once every line of `lines` is found in
/// it, and the configuration loaded back from that text.
fn printed_and_loaded_back(config: &Config, lines: &[&str]) -> (String, Config) {
    let printed = config.to_masked_toml();
    for line in lines {
        assert!(printed.contains(line), "{line} missing:\n{printed}");
    }
    let again = load_toml(&printed, &[]).expect("the printed configuration loads back");
    (printed, again)
}

const ONE_TARGET: &str = "[[targets]]\nname = \"a\"\nurl = \"redis://h:6379\"\n";

#[test]
fn a_url_without_port_uses_6379_and_db_0() {
    let parsed = url("redis://cache.svc");
    assert_eq!(
        parsed,
        RedisUrl {
            tls: false,
            host: "cache.svc".into(),
            port: 6379,
            username: None,
            password: None,
            db: 0,
        }
    );
    assert_eq!(parsed.host_port(), "cache.svc:6379");
}

#[test]
fn rediss_means_tls_and_the_path_is_the_database() {
    let parsed = url("rediss://10.0.0.1:6380/15");
    assert!(parsed.tls);
    assert_eq!(parsed.host, "10.0.0.1");
    assert_eq!(parsed.port, 6380);
    assert_eq!(parsed.db, 15);
}

#[test]
fn ipv6_hosts_are_bracketed_in_urls_and_stored_without_brackets() {
    let parsed = url("redis://[::1]:7000/2");
    assert_eq!(parsed.host, "::1");
    assert_eq!(parsed.port, 7000);
    assert_eq!(parsed.host_port(), "[::1]:7000");
    assert_eq!(parsed.to_string(), "redis://[::1]:7000/2");
    assert_eq!(url("redis://[fe80::1]").port, 6379);
    assert!(url_error("redis://::1:6379").contains("brackets"));
    assert!(url_error("redis://[::1:6379").contains("]"));
    assert!(url_error("redis://[zz::1]:6379").contains("ipv6"));
}

#[test]
fn credentials_are_percent_decoded() {
    let parsed = url("redis://can%40ary:p%40ss%3Aw%2Frd@h:1");
    assert_eq!(parsed.username.as_deref(), Some("can@ary"));
    assert_eq!(
        parsed.password.as_ref().map(Secret::expose),
        Some("p@ss:w/rd")
    );
    let only_password = url("redis://:s3cret@h");
    assert_eq!(only_password.username, None);
    assert_eq!(
        only_password.password.as_ref().map(Secret::expose),
        Some("s3cret")
    );
    let unencoded = url("redis://u:a@b/c@h:1/3");
    assert_eq!(
        unencoded.password.as_ref().map(Secret::expose),
        Some("a@b/c")
    );
    assert_eq!(unencoded.db, 3);
    assert!(url_error("redis://u:bad%zzsecret@h").contains("percent"));
    assert!(!url_error("redis://u:bad%zzsecret@h").contains("secret"));
}

#[test]
fn bad_schemes_ports_hosts_and_databases_are_rejected() {
    assert!(url_error("http://h:6379").contains("unsupported scheme \"http\""));
    assert!(url_error("h:6379").contains("redis://"));
    assert!(url_error("redis://h:0").contains("invalid port \"0\""));
    assert!(url_error("redis://h:65536").contains("invalid port \"65536\""));
    assert!(url_error("redis://h:").contains("invalid port \"\""));
    assert!(url_error("redis://h:x1").contains("invalid port"));
    assert_eq!(
        url("redis://h:1/16").db,
        16,
        "the server decides how many databases it has"
    );
    assert_eq!(url("redis://h:1/4000").db, 4000);
    assert!(url_error("redis://h:1/a").contains("invalid database \"a\""));
    assert!(url_error("redis://h:1/-1").contains("invalid database \"-1\""));
    assert!(url_error("redis://:1").contains("missing host"));
    assert!(url_error("redis://300.1.1.1").contains("invalid ipv4"));
    assert!(url_error("redis://bad host").contains("invalid host"));
    assert!(url_error("redis://h:1?protocol=resp3").contains("query"));
}

#[test]
fn display_and_debug_of_a_url_never_contain_the_password() {
    let parsed = url("redis://canary:hunter2@h:6379/1");
    assert_eq!(parsed.to_string(), "redis://canary:****@h:6379/1");
    assert!(!format!("{parsed:?}").contains("hunter2"));
    assert_eq!(
        url("redis://:hunter2@h").to_string(),
        "redis://:****@h:6379/0"
    );
    assert_eq!(url("redis://u%3Ax@h").to_string(), "redis://u%3Ax@h:6379/0");
    let target_debug = format!("{:?}", PasswordSource::Inline(Secret::new("hunter2")));
    assert!(!target_debug.contains("hunter2"));
}

#[test]
fn url_like_text_in_problems_is_masked_even_when_it_does_not_parse() {
    assert_eq!(mask_url_text("http://u:hunter2@h"), "http://u:****@h");
    assert_eq!(
        mask_url_text("a=redis://u:hunter2@h:x"),
        "a=redis://u:****@h:x"
    );
    assert_eq!(mask_url_text("a=u:hunter2@h"), "a=u:****@h");
    assert_eq!(mask_url_text("redis://h:6379"), "redis://h:6379");
    assert_eq!(mask_url_text("redis://user@h"), "redis://user@h");
}

#[test]
fn durations_parse_with_humantime() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    assert!(parse_duration("fast").is_err());
    assert!(parse_duration("10").is_err());
}

#[test]
fn a_number_where_a_duration_belongs_is_rejected_with_a_hint() {
    let problems = problems(&format!("[defaults]\nresponse_timeout = 500\n{ONE_TARGET}"));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].key, "defaults.response_timeout");
    assert_eq!(problems[0].value, "500");
    assert!(
        problems[0].message.contains("\"500ms\""),
        "{}",
        problems[0].message
    );
}

#[test]
fn duration_bounds_are_enforced() {
    let problems = problems(&format!(
        "[defaults]\nttl = \"500ms\"\nconnect_timeout = \"0s\"\nstale_grace = \"0s\"\nbackend_ttl = \"400days\"\n{ONE_TARGET}"
    ));
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "defaults.backend_ttl",
            "defaults.connect_timeout",
            "defaults.ttl"
        ]
    );
    assert!(problems[2].message.contains("at least 1s"));
}

#[test]
fn secret_values_are_masked_in_problems() {
    let problems = problems(
        "[[targets]]\nname = \"a\"\nurl = \"redis://u:hunter2@h:99999\"\npassword = 42\npasword = \"hunter3\"\n",
    );
    let text = ConfigErrors(problems.clone()).to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("hunter3"),
        "{text}"
    );
    assert!(text.contains("targets[0].password = \"****\""), "{text}");
    assert!(text.contains("did you mean \"password\"?"), "{text}");
    assert!(text.contains("redis://u:****@h:99999"), "{text}");
}

#[test]
fn environment_text_is_read_as_the_type_the_key_needs() {
    let config = load_toml(
        ONE_TARGET,
        &[
            ("REDIS_CANARY_INSTANCE", "007"),
            ("REDIS_CANARY_CLEANUP", "true"),
            ("REDIS_CANARY_DEFAULTS__KEYS", "50"),
            ("REDIS_CANARY_SLO__MIN_AVAILABILITY", "0.99"),
            ("REDIS_CANARY_DEFAULTS__RATE", "max"),
        ],
    )
    .expect("valid");
    assert_eq!(config.instance, "007");
    assert!(config.cleanup);
    assert_eq!(config.targets[0].settings.keys, 50);
    assert_eq!(config.targets[0].settings.rate, Rate::Max);
    assert_eq!(config.targets[0].slo.min_availability, 0.99);
}

#[test]
fn a_bad_environment_value_names_its_variable() {
    let errors =
        load_toml(ONE_TARGET, &[("REDIS_CANARY_DEFAULTS__RATE", "fast")]).expect_err("rejected");
    assert_eq!(
        errors.to_string(),
        "invalid configuration: defaults.rate = \"fast\": expected a number > 0 or \"max\" \
         (from environment variable REDIS_CANARY_DEFAULTS__RATE)"
    );
}

#[test]
fn a_file_that_is_not_toml_is_one_problem_with_line_and_column() {
    let problems = problems("listen = \"x\"\nrate = [1,\n");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].key, "--config");
    assert_eq!(problems[0].value, "\"test.toml\"");
    assert!(
        problems[0].message.contains("line 2, column 11"),
        "{}",
        problems[0].message
    );
    assert!(!problems[0].message.contains('\n'));
}

#[test]
fn retry_max_below_base_and_half_a_client_certificate_are_rejected() {
    let problems = problems(&format!(
        "[defaults]\nretry = {{ base = \"2s\", max = \"1s\" }}\n{ONE_TARGET}tls = {{ cert_file = \"/c.pem\" }}\n"
    ));
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["defaults.retry.max", "targets[0].tls.cert_file"]);
}

#[test]
fn target_overrides_merge_key_by_key_into_the_defaults() {
    let config = load_toml(
        &format!(
            "[defaults]\nretry = {{ max_retries = 2, base = \"50ms\" }}\ntls = {{ ca_file = \"tests/config/tls/ca.pem\" }}\n\
             [slo]\nmax_stale_reads = 3\n{ONE_TARGET}retry = {{ max = \"1s\" }}\ntls = {{ server_name = \"s\" }}\nslo = {{ p99_operation = \"10ms\" }}\n"
        ),
        &[],
    )
    .expect("valid");
    let target = &config.targets[0];
    assert_eq!(
        target.settings.retry,
        RetryPolicy {
            max_retries: 2,
            base: Duration::from_millis(50),
            max: Duration::from_secs(1)
        }
    );
    let tls = target.settings.tls.as_ref().expect("tls configured");
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(Path::new("tests/config/tls/ca.pem"))
    );
    assert_eq!(tls.server_name.as_deref(), Some("s"));
    assert_eq!(target.slo.max_stale_reads, 3);
    assert_eq!(target.slo.p99_operation, Duration::from_millis(10));
}

#[test]
fn nodes_inherit_the_targets_database_and_may_not_carry_credentials() {
    let config = load_toml(
        "[[targets]]\nname = \"a\"\nurl = \"redis://h/3\"\nnodes = [\"redis://n1\", \"redis://n2:7000/3\"]\n",
        &[],
    )
    .expect("valid");
    let dbs: Vec<u32> = config.targets[0].nodes.iter().map(|n| n.db).collect();
    assert_eq!(dbs, [3, 3]);
    let problems = problems(
        "[[targets]]\nname = \"a\"\nurl = \"redis://h/3\"\nnodes = [\"redis://u:pw@n1\", \"redis://n2/4\"]\n",
    );
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["targets[0].nodes[0]", "targets[0].nodes[1]"]);
}

#[test]
fn password_sources_resolve_at_call_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("password");
    std::fs::write(&file, "from-file\n").expect("write");
    let source = PasswordSource::File(file.clone());
    assert_eq!(
        source
            .resolve()
            .expect("readable")
            .map(|s| s.expose().to_string())
            .as_deref(),
        Some("from-file")
    );
    std::fs::write(&file, "rotated\r\n\n").expect("write");
    assert_eq!(
        source
            .resolve()
            .expect("readable")
            .map(|s| s.expose().to_string())
            .as_deref(),
        Some("rotated\r\n")
    );
    std::fs::remove_file(&file).expect("remove");
    assert!(source.resolve().is_err());
    assert_eq!(PasswordSource::None.resolve().expect("none"), None);
    let missing = PasswordSource::Env("REDIS_CANARY_TEST_SURELY_UNSET_VARIABLE".into());
    assert_eq!(
        missing.resolve().expect_err("unset").kind(),
        std::io::ErrorKind::NotFound
    );
}

#[test]
fn unknown_variables_are_collected_by_name_and_take_no_part() {
    // main logs them once, by name, after logging is set up (tests/cli.rs checks that).
    let config = load_toml(
        ONE_TARGET,
        &[
            ("REDIS_CANARY_PORT", "tcp://10.9.8.7:9736"),
            ("REDIS_CANARY_SERVICE_HOST", "10.9.8.7"),
            ("REDIS_CANARY_LISTEN", "127.0.0.1:0"),
        ],
    )
    .expect("valid");
    assert_eq!(
        config.ignored_env,
        ["REDIS_CANARY_PORT", "REDIS_CANARY_SERVICE_HOST"]
    );
    assert_eq!(config.listen.to_string(), "127.0.0.1:0");
}

#[test]
fn suggestions_pick_the_closest_known_key() {
    let known: &[&[&str]] = &[SETTINGS_KEYS, TARGET_KEYS];
    assert_eq!(suggestion("rat", known), Some("rate"));
    assert_eq!(suggestion("pasword", known), Some("password"));
    assert_eq!(
        suggestion("connect_probe_intervall", known),
        Some("connect_probe_interval")
    );
    assert_eq!(suggestion("colour", known), None);
}

#[test]
fn secrets_in_free_text_are_masked() {
    for (text, expected) in [
        (
            r#"[{name="a", url="redis://x", password="hunter2"]"#,
            r#"[{name="a", url="redis://x", password="****"]"#,
        ),
        ("password = 'hunter2' x", "password = '****' x"),
        ("sentinel_password=hunter2, b", "sentinel_password=****, b"),
        (
            r#"{\"password\":\"hunter2\"}"#,
            r#"{\"password\":\"****\"}"#,
        ),
        (r#"password="hunter2"#, r#"password="****"#),
        (r#"password="hun\"ter2" rest"#, r#"password="****" rest"#),
        ("password_file = \"/run/pw\"", "password_file = \"/run/pw\""),
        (
            "url=redis://u:hunter2@h:1/0 next",
            "url=redis://u:****@h:1/0 next",
        ),
        ("a redis://u:hun/ter2@h b", "a redis://u:****@h b"),
        (
            "password: invalid percent-encoding",
            "password: invalid percent-encoding",
        ),
        (
            "more than one password source (url, password)",
            "more than one password source (url, password)",
        ),
    ] {
        assert_eq!(mask_secrets_in_text(text), expected, "{text}");
    }
}

#[test]
fn a_problem_line_escapes_control_characters_and_masks_what_slipped_through() {
    let problem = ConfigProblem::new(
        "targets[0].name",
        "\"a\nb\"",
        "bad\ninvalid configuration: forged \u{1b}[31m password=\"hunter2\"",
    );
    let line = problem.to_string();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(!line.contains('\u{1b}'), "{line}");
    assert!(line.contains("\\n"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}

#[test]
fn a_malformed_targets_variable_never_shows_its_password() {
    for (name, value) in [
        (
            "REDIS_CANARY_TARGETS",
            r#"[{name="a", url="redis://x", password="hunter2"]"#,
        ),
        (
            "REDIS_CANARY_TARGETS",
            r#"[{name="a", url="redis://u:hunter2@x"]"#,
        ),
        (
            "REDIS_CANARY_DEFAULTS",
            r#"{rate=5, tls={password="hunter2"}"#,
        ),
        (
            "REDIS_CANARY_TARGETS",
            "[{name=\"a\", sentinel_password='hunter2'",
        ),
    ] {
        let errors = load_toml("", &[(name, value)]).expect_err("rejected");
        let text = errors.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains(name), "{text}");
    }
}

#[test]
fn protocol_is_2_or_3() {
    let config = load_toml(
        &format!("[defaults]\nprotocol = 3\n{ONE_TARGET}protocol = 2\n[[targets]]\nname = \"b\"\nurl = \"redis://b\"\n"),
        &[],
    )
    .expect("valid");
    assert_eq!(config.targets[0].settings.protocol, Protocol::Resp2);
    assert_eq!(config.targets[1].settings.protocol, Protocol::Resp3);
    assert_eq!(Settings::default().protocol, Protocol::Resp2);
    let from_env =
        load_toml(ONE_TARGET, &[("REDIS_CANARY_DEFAULTS__PROTOCOL", "3")]).expect("valid");
    assert_eq!(from_env.targets[0].settings.protocol, Protocol::Resp3);
    let problems = problems(&format!(
        "[defaults]\nprotocol = 4\n{ONE_TARGET}protocol = \"resp3\"\n"
    ));
    let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(
        lines,
        [
            "invalid configuration: defaults.protocol = 4: expected 2 (RESP2) or 3 (RESP3)",
            "invalid configuration: targets[0].protocol = \"resp3\": expected 2 (RESP2) or 3 (RESP3)",
        ]
    );
}

#[test]
fn the_redis_crate_default_port_is_ours() {
    assert_eq!(url("redis://h").port, DEFAULT_REDIS_PORT);
}

#[tokio::test]
async fn password_files_resolve_asynchronously_like_the_sync_way() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("password");
    std::fs::write(&file, "from-file\r\n").expect("write");
    let source = PasswordSource::File(file.clone());
    let resolved = source.resolve_async().await.expect("readable");
    assert_eq!(resolved.as_ref().map(Secret::expose), Some("from-file"));
    assert_eq!(resolved, source.resolve().expect("readable"));
    assert_eq!(
        PasswordSource::Inline(Secret::new("x"))
            .resolve_async()
            .await
            .expect("inline")
            .map(|s| s.expose().to_string())
            .as_deref(),
        Some("x")
    );

    std::fs::write(&file, vec![b'x'; MAX_PASSWORD_FILE_SIZE as usize + 1]).expect("write");
    let too_big = source.resolve_async().await.expect_err("too big");
    assert_eq!(too_big.kind(), std::io::ErrorKind::InvalidData);
    assert!(too_big.to_string().contains("larger than"), "{too_big}");
    assert_eq!(
        source.resolve().expect_err("too big").kind(),
        std::io::ErrorKind::InvalidData
    );

    std::fs::remove_file(&file).expect("remove");
    let missing = source.resolve_async().await.expect_err("missing");
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound);
    assert!(missing.to_string().contains("password_file"), "{missing}");
}

mod topologies;
