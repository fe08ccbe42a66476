//! The recorder: one place that fans a try, a connect, an operation or a verdict out to
//! the metrics, the episodes, the soak statistics, the spans, the last error and the log.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::attempt::Tries;
use crate::backend::Identity;
use crate::classify::{InternalCause, ResultKind};
use crate::conn::{Conn, ConnError};
use crate::ledger::Verdict;
use crate::metrics::{BackendLabels, TraceLabels};
use crate::op::{Kind, Op, Outcome};
use crate::target::{LastError, TargetState};
use crate::telemetry::{OperationSpan, TryRecord};

/// Most bytes of a server's error text kept for the status page.
const MAX_ERROR_TEXT: usize = 200;

impl TargetState {
    /// A try of `op` (an attempt, or the connect before it) failed.
    pub(crate) fn try_failed(
        &self,
        op: Op,
        sent_us: u64,
        observed_us: u64,
        result: ResultKind,
        err: &ConnError,
        shard: Option<&Arc<str>>,
    ) {
        let lane = match (shard, &self.cluster) {
            (Some(shard), Some(c)) => {
                c.book.failure(shard, op, sent_us, observed_us, result);
                c.book.lane(shard)
            }
            _ => 0,
        };
        let started = {
            let mut ep = self.episodes.lock().unwrap_or_else(|p| p.into_inner());
            let started = ep.failure_in(lane, op, sent_us, observed_us, result);
            self.episode_open.store(ep.is_open(), Ordering::Relaxed);
            started
        };
        self.with_history(|h| h.failure(observed_us, started.map(|s| s.start_us), result));
        if let Some(s) = started {
            self.metrics.disruptions.inc();
            self.metrics.disrupted.set(1);
            self.metrics
                .disruption_start
                .set(self.clock.unix_secs(s.start_us));
            tracing::warn!(
                target_name = %self.name,
                op = %s.op,
                result = %s.result,
                error = %self.scrub(err),
                "disruption started"
            );
        }
        let message = self.scrub(err);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(LastError {
            at_unix: self.clock.unix_secs(observed_us),
            op,
            result,
            message,
        });
    }

    /// An attempt of `op` succeeded.
    pub(crate) fn try_succeeded(
        &self,
        op: Op,
        sent_us: u64,
        observed_us: u64,
        shard: Option<&Arc<str>>,
    ) {
        self.metrics
            .op(op)
            .last_success
            .set(self.clock.unix_secs(observed_us));
        // No shard is in an episode while the target is not (the target's is their union).
        if !self.episode_open.load(Ordering::Relaxed) {
            return;
        }
        let lane = match (shard, &self.cluster) {
            (Some(shard), Some(c)) => {
                c.book.success(shard, op, sent_us, observed_us);
                c.book.lane(shard)
            }
            _ => 0,
        };
        let ended = {
            let mut ep = self.episodes.lock().unwrap_or_else(|p| p.into_inner());
            let ended = ep.success_in(lane, op, sent_us, observed_us);
            self.episode_open.store(ep.is_open(), Ordering::Relaxed);
            ended
        };
        if let Some(e) = ended {
            self.with_history(|h| h.episode_ended(&e));
            let secs = e.duration_secs();
            self.metrics.disrupted.set(0);
            self.metrics.disruption_duration.observe(secs);
            let results: Vec<String> = e
                .nonzero_results()
                .map(|(r, n)| format!("{r}={n}"))
                .collect();
            tracing::warn!(
                target_name = %self.name,
                duration_seconds = format_args!("{secs:.3}"),
                results = %results.join(","),
                "disruption ended"
            );
            let clock = self.clock;
            self.with_stats(|s| s.episode(&clock, &e));
        }
    }

    /// Ends an episode still open at the end of a soak, so the report includes it.
    pub fn close_open_episode(&self) {
        let now = self.clock.now_us();
        if let Some(c) = &self.cluster {
            c.book.close_open(now);
        }
        let ended = {
            let mut ep = self.episodes.lock().unwrap_or_else(|p| p.into_inner());
            ep.close_at(now)
        };
        if let Some(e) = ended {
            self.with_history(|h| h.episode_ended(&e));
            tracing::warn!(
                target_name = %self.name,
                duration_seconds = format_args!("{:.3}", e.duration_secs()),
                "disruption still open at the end of the run"
            );
            let clock = self.clock;
            self.with_stats(|s| s.episode(&clock, &e));
        }
    }

    /// A failure of the canary itself: counted apart, logged at most once a second.
    pub(crate) fn internal_failure(&self, cause: InternalCause, err: &ConnError) {
        self.metrics.internal(cause).inc();
        let now = self.clock.now_us();
        let last = self.last_internal_log_us.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000_000
            && self
                .last_internal_log_us
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::error!(
                target_name = %self.name,
                cause = %cause,
                error = %self.scrub(err),
                "the canary itself cannot connect (not counted against the target)"
            );
        }
    }

    /// Notes a failed connect among an operation's tries (for its span).
    pub(crate) fn connect_failed(
        &self,
        tries: &mut Tries,
        sent_us: u64,
        observed_us: u64,
        result: ResultKind,
    ) {
        if let Some(tries) = tries {
            tries.push(TryRecord {
                start: self.clock.system_time(sent_us),
                end: self.clock.system_time(observed_us),
                result,
                connect: true,
            });
        }
    }

    /// Records the end of an operation scheduled at `scheduled`: outcome, duration, and, while
    /// tracing, its span and the attempt durations with the trace id as exemplar.
    pub(crate) fn finish(
        &self,
        op: Op,
        scheduled: Instant,
        outcome: Outcome,
        tries: Tries,
        name: &'static str,
        shard: Option<&Arc<str>>,
    ) {
        let m = self.metrics.op(op);
        m.outcome(outcome).inc();
        if let (Some(shard), Some(c)) = (shard, &self.cluster) {
            c.book.outcome(shard, outcome);
        }
        let end = Instant::now();
        let took = end.saturating_duration_since(scheduled);
        let mut exemplar = None;
        if let (Some(tracing), Some(tries)) = (&self.tracing, tries) {
            if tracing.wants(outcome, tries.len()) {
                let trace_id = tracing.record(&OperationSpan {
                    name,
                    target: &self.name,
                    op,
                    outcome,
                    start: self.clock.system_time(self.clock.us_of(scheduled)),
                    end: self.clock.system_time(self.clock.us_of(end)),
                    server_address: &self.endpoint.host,
                    server_port: self.endpoint.port,
                    db: u32::try_from(self.endpoint.db).unwrap_or(0),
                    tries: &tries,
                });
                exemplar = Some(TraceLabels { trace_id });
            }
            for t in tries.iter().filter(|t| !t.connect) {
                let secs = t
                    .end
                    .duration_since(t.start)
                    .unwrap_or_default()
                    .as_secs_f64();
                m.attempt_duration.observe(secs, exemplar.clone(), None);
            }
        }
        m.operation_duration
            .observe(took.as_secs_f64(), exemplar, None);
        self.with_stats(|s| s.operation(op, outcome, took));
        self.with_history(|h| h.operation(self.clock.us_of(end), outcome, took));
    }

    pub(crate) fn record_verdict(
        &self,
        op: Op,
        key: u32,
        verdict: Verdict,
        backend: Option<&Identity>,
    ) {
        self.metrics.op(op).read(verdict).inc();
        self.with_stats(|s| s.verdict(verdict, backend));
        self.with_history(|h| h.verdict(self.clock.now_us(), verdict));
        if matches!(verdict, Verdict::Fresh | Verdict::Lagging) {
            return;
        }
        // At most one line a second per target: an incident must not flood the logs.
        let now = self.clock.now_us();
        let last = self.last_bad_read_log_us.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1_000_000
            && self
                .last_bad_read_log_us
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let unknown = Identity::default();
            let b = backend.unwrap_or(&unknown);
            tracing::warn!(
                target_name = %self.name,
                op = %op,
                key_index = key,
                verdict = verdict.as_str(),
                backend_run_id = %b.run_id,
                backend_addr = %b.addr,
                "bad read"
            );
        }
    }

    /// A connect of `kind` ended after `took`: counted and timed, and who answered is
    /// recorded; a failure of the canary itself is counted apart, never as a connect result.
    pub(crate) fn record_connect(
        &self,
        kind: Kind,
        took: Duration,
        result: &Result<Conn, ConnError>,
    ) {
        if let Err(e) = result
            && let Some(cause) = e.internal_cause()
        {
            self.internal_failure(cause, e);
            return;
        }
        let km = self.metrics.kind(kind);
        km.connect_duration.observe(took.as_secs_f64());
        let class = result
            .as_ref()
            .map_or_else(ConnError::result, |_| ResultKind::Ok);
        km.connect(class).inc();
        self.with_stats(|s| s.connect(kind, class));
        match result {
            Ok(conn) => self.backend_seen(&conn.backend),
            Err(e) => {
                tracing::debug!(target_name = %self.name, kind = %kind, error = %self.scrub(e), "connect failed");
            }
        }
    }

    /// A connection reached `id`: `backend_info` and `backend_restarts_total` follow.
    pub(crate) fn backend_seen(&self, id: &Identity) {
        let now = self.clock.now_us();
        let changes = self
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe(id, now);
        if changes.restart {
            self.metrics.backend_restarts.inc();
        }
        if let Some(old) = changes.unexport {
            self.metrics
                .backend_info
                .remove(&BackendLabels::of(&self.name, &old));
        }
        if let Some(new) = changes.export {
            self.metrics
                .backend_info
                .get_or_create(&BackendLabels::of(&self.name, &new))
                .set(1);
        }
    }

    /// Removes the `backend_info` series of backends not seen within `backend_ttl`.
    pub fn expire_backends(&self) {
        let now = self.clock.now_us();
        let ttl = self.settings.backend_ttl.as_micros() as u64;
        if let Some(c) = &self.cluster {
            c.book.expire(now, ttl);
        }
        let gone = self
            .backends
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expire(now, ttl);
        for id in gone {
            self.metrics
                .backend_info
                .remove(&BackendLabels::of(&self.name, &id));
        }
    }

    /// The error text for humans, with anything that looks like our password removed: a
    /// server or proxy may echo arguments back.
    pub(crate) fn scrub(&self, err: &ConnError) -> String {
        let mut text = err.to_string();
        if let ConnError::Redis(e) = err
            && e.code().is_some()
        {
            if let Some(pw) = &self.endpoint.url_password {
                text = text.replace(pw.expose(), "****");
            }
            if let Ok(Some(pw)) = self.endpoint.password.resolve()
                && !pw.expose().is_empty()
            {
                text = text.replace(pw.expose(), "****");
            }
        }
        if text.len() > MAX_ERROR_TEXT {
            let mut cut = MAX_ERROR_TEXT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        // Server text is untrusted: a newline would forge a log line, an escape sequence
        // would reach the operator's terminal.
        if text.chars().any(char::is_control) {
            text = text
                .chars()
                .flat_map(|c| {
                    let escaped: Vec<char> = if c.is_control() {
                        c.escape_default().collect()
                    } else {
                        vec![c]
                    };
                    escaped
                })
                .collect();
        }
        text
    }
}
