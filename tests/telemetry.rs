//! OpenTelemetry export end to end: the real binary sends operation spans over OTLP/HTTP to a
//! receiver in this test, and the duration histograms carry the trace ids as exemplars.

mod support;

use std::time::Duration;

use support::*;

/// An OTLP/HTTP receiver: the shared recording server; spans are the bodies of the POSTs
/// to `/v1/traces`.
struct Receiver {
    port: u16,
    server: HttpRecorder,
}

impl Receiver {
    fn start() -> Receiver {
        let server = HttpRecorder::start();
        Receiver {
            port: server.port,
            server,
        }
    }

    /// The bodies of the trace exports received so far.
    fn bodies(&self) -> Vec<Vec<u8>> {
        self.server
            .requests_to("POST", "/v1/traces")
            .into_iter()
            .map(|r| r.body)
            .collect()
    }

    /// Everything received so far, as lossy text (protobuf keeps strings as UTF-8 bytes).
    fn text(&self) -> String {
        self.bodies()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn config(url: &str, receiver: &Receiver, ratio: f64) -> String {
    format!(
        "{}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{}\"\nsample_ratio = {ratio}\n",
        one_target_config("a", url, ""),
        receiver.port,
    )
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn sampled_operations_arrive_as_client_spans_with_database_attributes() {
    let redis = RedisServer::start(&[]);
    let receiver = Receiver::start();
    let _canary = Canary::start(&config(&redis.url(), &receiver, 1.0));
    wait_until("spans of writes and reads", Duration::from_secs(20), || {
        let text = receiver.text();
        text.contains("SET") && text.contains("GET")
    });
    let text = receiver.text();
    for needle in [
        "redis-canary",
        "db.system.name",
        "redis",
        "db.operation.name",
        "server.address",
        "127.0.0.1",
        "server.port",
        "redis_canary.target",
        "redis_canary.outcome",
    ] {
        assert!(
            text.contains(needle),
            "{needle:?} not in the exported spans"
        );
    }
    assert!(
        !text.contains("error.type"),
        "healthy operations carry no error"
    );
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn failed_operations_are_always_traced_and_their_trace_ids_become_exemplars() {
    let mut redis = RedisServer::start(&[]);
    let receiver = Receiver::start();
    // A ratio of 0: only failed and retried operations are traced.
    let canary = Canary::start(&config(&redis.url(), &receiver, 0.0));
    wait_until("some successful writes", Duration::from_secs(10), || {
        canary
            .metrics()
            .sum("redis_canary_operations_total", &[("outcome", "ok")])
            >= 10.0
    });
    assert!(
        receiver.text().is_empty(),
        "nothing failed, nothing sampled"
    );
    redis.kill();
    wait_until(
        "spans of failed operations",
        Duration::from_secs(30),
        || {
            let text = receiver.text();
            text.contains("error.type") && text.contains("refused") && text.contains("connect")
        },
    );
    let m = canary.metrics();
    let exemplar = m
        .text
        .lines()
        .find(|l| {
            l.starts_with("redis_canary_operation_duration_seconds_bucket")
                && l.contains(" # {trace_id=\"")
        })
        .unwrap_or_else(|| panic!("no exemplar in:\n{}", m.text));
    let trace_id = exemplar
        .split("trace_id=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(trace_id.len(), 32, "{exemplar}");
    assert!(
        trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{exemplar}"
    );
}

#[test]
#[cfg_attr(
    not(all(have_redis_server, have_prometheus)),
    ignore = "needs redis-server, prometheus (not installed: scripts/install-deps)"
)]
fn prometheus_with_exemplar_storage_returns_the_trace_ids_of_failed_operations() {
    let mut redis = RedisServer::start(&[]);
    let receiver = Receiver::start();
    let canary = Canary::start(&config(&redis.url(), &receiver, 0.0));
    let prometheus = Prometheus::start_with_flags(
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: redis-canary\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            canary.port
        ),
        &["--enable-feature=exemplar-storage"],
    );
    redis.kill();
    wait_until("failed operations", Duration::from_secs(30), || {
        canary
            .metrics()
            .sum("redis_canary_operations_total", &[("outcome", "failed")])
            >= 1.0
    });
    let mut exemplars = Vec::new();
    wait_until("exemplars in Prometheus", Duration::from_secs(60), || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let data = prometheus.api(&format!(
            "/api/v1/query_exemplars?query={}&start={:.3}&end={:.3}",
            url_encode("redis_canary_operation_duration_seconds_bucket"),
            now - 300.0,
            now + 1.0
        ));
        exemplars = data.as_array().cloned().unwrap_or_default();
        !exemplars.is_empty()
    });
    let trace_id = exemplars[0]["exemplars"][0]["labels"]["trace_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(trace_id.len(), 32, "{exemplars:?}");
    // ...and that trace was exported: its id is in the spans the receiver got (as bytes).
    let id_bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    wait_until(
        "the exemplar's trace among the exported spans",
        Duration::from_secs(20),
        || {
            receiver
                .bodies()
                .iter()
                .any(|b| b.windows(16).any(|w| w == id_bytes.as_slice()))
        },
    );
}
