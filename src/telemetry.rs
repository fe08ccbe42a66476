//! Telemetry set-up: logging with `tracing` to stderr (text or JSON lines, filtered by
//! `RUST_LOG`, default `info`), and OpenTelemetry spans per operation over OTLP/HTTP.

use std::time::SystemTime;

use opentelemetry::trace::{Span, SpanKind, Status, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::runtime;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_subscriber::EnvFilter;

use crate::classify::ResultKind;
use crate::config::LogFormat;
use crate::op::{Op, Outcome};

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder.with_ansi(false).try_init(),
    };
}

/// OpenTelemetry export of operation spans over OTLP/HTTP (DESIGN §8). Spans are built when
/// an operation ends, from its recorded times: nothing is done per attempt while tracing is
/// off, and only the chosen operations pay for spans while it is on.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Share of operations that succeeded on the first try to trace; failed and retried
    /// operations are always traced.
    pub sample_ratio: f64,
}

/// One try of an operation, as a child span: a connect or an attempt.
#[derive(Clone, Debug)]
pub struct TryRecord {
    pub start: SystemTime,
    pub end: SystemTime,
    pub result: ResultKind,
    /// A failed connect rather than a command.
    pub connect: bool,
}

/// An ended operation, as a span.
pub struct OperationSpan<'a> {
    /// Span name: the command (`SET`, `GET`) or `PROBE`.
    pub name: &'static str,
    pub target: &'a str,
    pub op: Op,
    pub outcome: Outcome,
    pub start: SystemTime,
    pub end: SystemTime,
    pub server_address: &'a str,
    pub server_port: u16,
    pub db: u32,
    pub tries: &'a [TryRecord],
}

/// Why tracing could not start (reported as a configuration error).
#[derive(Debug, thiserror::Error)]
#[error("telemetry.otlp_endpoint: {0}")]
pub struct TracingError(String);

impl Tracing {
    /// Starts the exporter when an endpoint is configured; `Ok(None)` when tracing is off.
    /// Must be called inside the Tokio runtime: the batch processor runs on it.
    pub fn start(
        endpoint: Option<&str>,
        sample_ratio: f64,
    ) -> Result<Option<Tracing>, TracingError> {
        let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        // The configured endpoint is the base URL, like OTEL_EXPORTER_OTLP_ENDPOINT.
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| TracingError(e.to_string()))?;
        // The thread-based batch processor panics without a reactor (DESIGN §9): use the
        // one that runs on the Tokio runtime.
        let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(
                Resource::builder()
                    .with_service_name("redis-canary")
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("redis-canary");
        tracing::info!(endpoint = %endpoint, sample_ratio, "exporting operation spans over OTLP/HTTP");
        Ok(Some(Tracing {
            provider,
            tracer,
            sample_ratio,
        }))
    }

    /// Whether an operation that ended with `outcome` after `tries` tries is traced.
    pub fn wants(&self, outcome: Outcome, tries: usize) -> bool {
        outcome != Outcome::Ok || tries > 1 || rand::random::<f64>() < self.sample_ratio
    }

    /// Emits the span of one operation with its tries as children; returns the trace id
    /// (hex), for exemplars.
    pub fn record(&self, s: &OperationSpan<'_>) -> String {
        let mut attributes = vec![
            KeyValue::new("db.system.name", "redis"),
            KeyValue::new("db.operation.name", s.name),
            KeyValue::new("db.namespace", s.db.to_string()),
            KeyValue::new("server.address", s.server_address.to_string()),
            KeyValue::new("server.port", i64::from(s.server_port)),
            KeyValue::new("redis_canary.target", s.target.to_string()),
            KeyValue::new("redis_canary.op", s.op.as_str()),
            KeyValue::new("redis_canary.outcome", s.outcome.as_str()),
            KeyValue::new("redis_canary.tries", s.tries.len() as i64),
        ];
        let last_error = s.tries.iter().rev().find(|t| t.result != ResultKind::Ok);
        if s.outcome == Outcome::Failed
            && let Some(t) = last_error
        {
            attributes.push(KeyValue::new("error.type", t.result.as_str()));
        }
        let mut span = self
            .tracer
            .span_builder(s.name)
            .with_kind(SpanKind::Client)
            .with_start_time(s.start)
            .with_attributes(attributes)
            .start(&self.tracer);
        if s.outcome == Outcome::Failed {
            span.set_status(Status::error("retries exhausted or final error"));
        }
        let trace_id = span.span_context().trace_id().to_string();
        let cx = Context::new().with_span(span);
        for (i, t) in s.tries.iter().enumerate() {
            let name = if t.connect { "connect" } else { s.name };
            let mut attributes = vec![
                KeyValue::new("redis_canary.try", i as i64),
                KeyValue::new("redis_canary.result", t.result.as_str()),
                KeyValue::new("server.address", s.server_address.to_string()),
                KeyValue::new("server.port", i64::from(s.server_port)),
            ];
            if t.result != ResultKind::Ok {
                attributes.push(KeyValue::new("error.type", t.result.as_str()));
            }
            let mut child = self
                .tracer
                .span_builder(name)
                .with_kind(SpanKind::Client)
                .with_start_time(t.start)
                .with_attributes(attributes)
                .start_with_context(&self.tracer, &cx);
            if t.result != ResultKind::Ok {
                child.set_status(Status::error(t.result.as_str()));
            }
            child.end_with_timestamp(t.end);
        }
        cx.span().end_with_timestamp(s.end);
        trace_id
    }

    /// Flushes and stops the exporter, waiting at most `timeout`.
    pub async fn shutdown(&self, timeout: std::time::Duration) {
        let provider = self.provider.clone();
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "flushing spans at shutdown failed");
        }
    }
}
