//! Settings tables: `[defaults]` and a target's own overrides (`rate`, `keys`, ... `retry`,
//! `tls`), `[slo]` and a target's `slo`, read key by key into layers that are then applied
//! over their base; the bounds that keep every accepted value one the daemon can honour;
//! the checks across keys of resolved settings, and the TLS files, read at load.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use figment::value::{Dict, Value};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::check::{Checker, child};
use super::discovery::{MIN_DISCOVERY_INTERVAL, parse_resolver};
use super::problems::{ConfigProblem, quote};
use super::values::{Bound, MAX_COUNT};
use super::{
    Protocol, RETRY_KEYS, Rate, RetryPolicy, SETTINGS_KEYS, SLO_KEYS, Settings, Slo, TLS_KEYS,
    TlsSettings,
};

/// Lowest fixed rate, per second: one operation every 100 s. Below that a loop sleeps for
/// ages between ticks and a tick period overflows `Duration` arithmetic (`rate = 1e-300`).
pub(super) const MIN_RATE: f64 = 0.01;
/// Highest fixed rate, per second: a canary beside production must stay a small load; use
/// `"max"` for load tests.
pub(super) const MAX_RATE: f64 = 100_000.0;
/// Largest keyspace per target: the ledger keeps a few dozen bytes per key, so 100,000 keys
/// stay a few MiB per target; a canary needs enough keys to spread over shards, not more.
pub(super) const MAX_KEYS: u64 = 100_000;
/// Largest value: one MiB is already far beyond what a canary needs, and bounds what the
/// connection buffers per reply (DESIGN §11).
pub(super) const MAX_VALUE_SIZE: u64 = 1 << 20;
/// Most attempts in flight per loop: each is a connection to the store.
pub(super) const MAX_CONNECTIONS: u64 = 1024;
/// Most retries per operation: more would hide any outage the canary exists to show.
pub(super) const MAX_RETRIES: u64 = 100;
/// Shortest `ttl`: `SET ... PX` of less than a second would expire keys before reads.
pub(super) const MIN_TTL: Duration = Duration::from_secs(1);
/// Shortest fresh-connection probe period other than `"0s"` (off): every probe is a new
/// connection, and a period of nanoseconds would burn a core on connects.
pub(super) const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Shortest `connect_timeout` and `response_timeout`: timers are millisecond-grained, so a
/// shorter deadline would only ever time out.
pub(super) const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Longest `connect_timeout` and `response_timeout`: an attempt that has not answered within
/// an hour is an outage, and the pending set must drain.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Shortest `retry.base`: below a millisecond, retries would spin against a down server.
pub(super) const MIN_RETRY_BASE: Duration = Duration::from_millis(1);
/// Largest TLS file read at load: CA bundles are a few hundred KiB at most.
const MAX_TLS_FILE_SIZE: u64 = 1 << 20;

/// Settings that one table (`[defaults]` or a target) sets; unset ones are inherited.
#[derive(Default)]
pub(super) struct SettingsLayer {
    rate: Option<Rate>,
    keys: Option<u32>,
    value_size: Option<usize>,
    ttl: Option<Duration>,
    connections: Option<usize>,
    connect_probe_interval: Option<Duration>,
    connect_timeout: Option<Duration>,
    response_timeout: Option<Duration>,
    stale_grace: Option<Duration>,
    replication_timeout: Option<Duration>,
    backend_ttl: Option<Duration>,
    protocol: Option<Protocol>,
    retry: RetryLayer,
    tls: Option<TlsLayer>,
    discovery_interval: Option<Duration>,
    /// `Some(None)`: set to `""`, the system resolver (unsets an inherited one).
    discovery_resolver: Option<Option<SocketAddr>>,
}

#[derive(Default)]
struct RetryLayer {
    max_retries: Option<u32>,
    base: Option<Duration>,
    max: Option<Duration>,
}

/// TLS keys one table sets; an empty string unsets an inherited path or name.
#[derive(Default)]
struct TlsLayer {
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    server_name: Option<String>,
    insecure: Option<bool>,
}

#[derive(Default)]
pub(super) struct SloLayer {
    min_availability: Option<f64>,
    max_failed_operations: Option<u64>,
    max_disruption: Option<Duration>,
    max_stale_reads: Option<u64>,
    max_missing_reads: Option<u64>,
    max_corrupt_reads: Option<u64>,
    p99_operation: Option<Duration>,
}

impl SettingsLayer {
    pub(super) fn over(&self, base: &Settings) -> Settings {
        Settings {
            rate: self.rate.unwrap_or(base.rate),
            keys: self.keys.unwrap_or(base.keys),
            value_size: self.value_size.unwrap_or(base.value_size),
            ttl: self.ttl.unwrap_or(base.ttl),
            connections: self.connections.unwrap_or(base.connections),
            connect_probe_interval: self
                .connect_probe_interval
                .unwrap_or(base.connect_probe_interval),
            connect_timeout: self.connect_timeout.unwrap_or(base.connect_timeout),
            response_timeout: self.response_timeout.unwrap_or(base.response_timeout),
            stale_grace: self.stale_grace.unwrap_or(base.stale_grace),
            replication_timeout: self.replication_timeout.unwrap_or(base.replication_timeout),
            backend_ttl: self.backend_ttl.unwrap_or(base.backend_ttl),
            protocol: self.protocol.unwrap_or(base.protocol),
            retry: RetryPolicy {
                max_retries: self.retry.max_retries.unwrap_or(base.retry.max_retries),
                base: self.retry.base.unwrap_or(base.retry.base),
                max: self.retry.max.unwrap_or(base.retry.max),
            },
            tls: match &self.tls {
                None => base.tls.clone(),
                Some(layer) => Some(layer.over(base.tls.clone().unwrap_or_default())),
            },
            discovery_interval: self.discovery_interval.unwrap_or(base.discovery_interval),
            discovery_resolver: self.discovery_resolver.unwrap_or(base.discovery_resolver),
        }
    }
}

impl TlsLayer {
    fn over(&self, base: TlsSettings) -> TlsSettings {
        fn pick<T: From<String>>(set: &Option<String>, inherited: Option<T>) -> Option<T> {
            match set {
                None => inherited,
                Some(text) if text.is_empty() => None,
                Some(text) => Some(T::from(text.clone())),
            }
        }
        TlsSettings {
            ca_file: pick(&self.ca_file, base.ca_file),
            cert_file: pick(&self.cert_file, base.cert_file),
            key_file: pick(&self.key_file, base.key_file),
            server_name: pick(&self.server_name, base.server_name),
            insecure: self.insecure.unwrap_or(base.insecure),
        }
    }
}

impl SloLayer {
    pub(super) fn over(&self, base: &Slo) -> Slo {
        Slo {
            min_availability: self.min_availability.unwrap_or(base.min_availability),
            max_failed_operations: self
                .max_failed_operations
                .unwrap_or(base.max_failed_operations),
            max_disruption: self.max_disruption.unwrap_or(base.max_disruption),
            max_stale_reads: self.max_stale_reads.unwrap_or(base.max_stale_reads),
            max_missing_reads: self.max_missing_reads.unwrap_or(base.max_missing_reads),
            max_corrupt_reads: self.max_corrupt_reads.unwrap_or(base.max_corrupt_reads),
            p99_operation: self.p99_operation.unwrap_or(base.p99_operation),
        }
    }
}

impl Checker<'_> {
    /// Checks across keys of resolved settings. A target is checked only for what it sets
    /// itself, so that a bad default is reported once, under `defaults`.
    pub(super) fn check_settings(
        &mut self,
        path: &str,
        settings: &Settings,
        layer: &SettingsLayer,
        own: bool,
    ) {
        let retry = &settings.retry;
        if (own || layer.retry.base.is_some() || layer.retry.max.is_some())
            && retry.max < retry.base
        {
            let (key, value, message) = if own || layer.retry.max.is_some() {
                (
                    "max",
                    retry.max,
                    format!(
                        "must be at least retry.base ({})",
                        humantime::format_duration(retry.base)
                    ),
                )
            } else {
                (
                    "base",
                    retry.base,
                    format!(
                        "must be at most retry.max ({})",
                        humantime::format_duration(retry.max)
                    ),
                )
            };
            self.problems.push(ConfigProblem::new(
                format!("{path}.retry.{key}"),
                quote(&humantime::format_duration(value).to_string()),
                message,
            ));
        }
        let touched_client_certificate = own
            || layer
                .tls
                .as_ref()
                .is_some_and(|tls| tls.cert_file.is_some() || tls.key_file.is_some());
        let half_a_certificate =
            settings
                .tls
                .as_ref()
                .and_then(|tls| match (&tls.cert_file, &tls.key_file) {
                    (Some(file), None) => Some(("cert_file", file)),
                    (None, Some(file)) => Some(("key_file", file)),
                    _ => None,
                });
        if touched_client_certificate && let Some((key, file)) = half_a_certificate {
            self.problems.push(ConfigProblem::new(
                format!("{path}.tls.{key}"),
                quote(&file.display().to_string()),
                "cert_file and key_file must be given together",
            ));
        }
        self.check_tls_files(path, settings, layer, own);
    }

    /// The CA bundle, client certificate and key must be readable PEM now: a missing CA
    /// would otherwise pass `check-config` and fail every connect. Checked where set.
    fn check_tls_files(
        &mut self,
        path: &str,
        settings: &Settings,
        layer: &SettingsLayer,
        own: bool,
    ) {
        let Some(tls) = &settings.tls else {
            return;
        };
        type Pick = fn(&TlsLayer) -> &Option<String>;
        let files: [(&str, &Option<std::path::PathBuf>, Pick, PemKind); 3] = [
            (
                "ca_file",
                &tls.ca_file,
                |t| &t.ca_file,
                PemKind::Certificates,
            ),
            (
                "cert_file",
                &tls.cert_file,
                |t| &t.cert_file,
                PemKind::Certificates,
            ),
            (
                "key_file",
                &tls.key_file,
                |t| &t.key_file,
                PemKind::PrivateKey,
            ),
        ];
        // Half a client certificate is reported as such already.
        let pair_complete = tls.cert_file.is_some() == tls.key_file.is_some();
        for (key, file, pick, kind) in files {
            if key != "ca_file" && !pair_complete {
                continue;
            }
            let set_here = own || layer.tls.as_ref().is_some_and(|t| pick(t).is_some());
            if let (true, Some(file)) = (set_here, file)
                && let Err(message) = check_pem_file(file, kind)
            {
                self.problems.push(ConfigProblem::new(
                    format!("{path}.tls.{key}"),
                    quote(&file.display().to_string()),
                    message,
                ));
            }
        }
    }

    /// `[defaults]`: settings keys only.
    pub(super) fn settings_table(&mut self, path: &str, dict: &Dict) -> SettingsLayer {
        let mut layer = SettingsLayer::default();
        for (key, value) in dict {
            if !self.settings_key(&mut layer, path, key, value) {
                self.unknown(&child(path, key), value, &[SETTINGS_KEYS]);
            }
        }
        layer
    }

    /// Reads one settings key into `layer`; false if `key` is not a settings key.
    pub(super) fn settings_key(
        &mut self,
        layer: &mut SettingsLayer,
        path: &str,
        key: &str,
        value: &Value,
    ) -> bool {
        let at = child(path, key);
        match key {
            "rate" => layer.rate = self.rate(&at, value),
            "keys" => layer.keys = self.integer(&at, value, 1, MAX_KEYS),
            "value_size" => layer.value_size = self.value_size(&at, value),
            "ttl" => layer.ttl = self.duration(&at, value, Bound::AtLeast(MIN_TTL)),
            "connections" => layer.connections = self.integer(&at, value, 1, MAX_CONNECTIONS),
            "connect_probe_interval" => {
                layer.connect_probe_interval =
                    self.duration(&at, value, Bound::OffOrAtLeast(MIN_PROBE_INTERVAL));
            }
            "connect_timeout" => layer.connect_timeout = self.timeout(&at, value),
            "response_timeout" => layer.response_timeout = self.timeout(&at, value),
            "stale_grace" => layer.stale_grace = self.duration(&at, value, Bound::Any),
            "replication_timeout" => {
                layer.replication_timeout = self.duration(&at, value, Bound::Positive);
            }
            "backend_ttl" => layer.backend_ttl = self.duration(&at, value, Bound::Positive),
            "protocol" => layer.protocol = self.protocol(&at, value),
            "retry" => {
                if let Some(dict) = self.table(&at, value) {
                    for (key, value) in dict {
                        let at = child(&at, key);
                        match key.as_str() {
                            "max_retries" => {
                                layer.retry.max_retries = self.integer(&at, value, 0, MAX_RETRIES);
                            }
                            "base" => {
                                layer.retry.base =
                                    self.duration(&at, value, Bound::AtLeast(MIN_RETRY_BASE));
                            }
                            "max" => layer.retry.max = self.duration(&at, value, Bound::Positive),
                            _ => self.unknown(&at, value, &[RETRY_KEYS]),
                        }
                    }
                }
            }
            "tls" => {
                if let Some(dict) = self.table(&at, value) {
                    let mut tls = TlsLayer::default();
                    for (key, value) in dict {
                        let at = child(&at, key);
                        let text = |this: &mut Self| this.text(&at, value).map(str::to_string);
                        match key.as_str() {
                            "ca_file" => tls.ca_file = text(self),
                            "cert_file" => tls.cert_file = text(self),
                            "key_file" => tls.key_file = text(self),
                            "server_name" => tls.server_name = text(self),
                            "insecure" => tls.insecure = self.boolean(&at, value),
                            _ => self.unknown(&at, value, &[TLS_KEYS]),
                        }
                    }
                    layer.tls = Some(tls);
                }
            }
            "discovery_interval" => {
                layer.discovery_interval =
                    self.duration(&at, value, Bound::AtLeast(MIN_DISCOVERY_INTERVAL));
            }
            "discovery_resolver" => {
                layer.discovery_resolver = match self.text(&at, value) {
                    Some("") => Some(None),
                    Some(text) => match parse_resolver(text) {
                        Ok(addr) => Some(Some(addr)),
                        Err(message) => {
                            self.report(&at, value, message);
                            None
                        }
                    },
                    None => None,
                };
            }
            _ => return false,
        }
        true
    }

    pub(super) fn slo_table(&mut self, path: &str, dict: &Dict) -> SloLayer {
        let mut slo = SloLayer::default();
        for (key, value) in dict {
            let at = child(path, key);
            match key.as_str() {
                "min_availability" => slo.min_availability = self.ratio(&at, value),
                "max_failed_operations" => {
                    slo.max_failed_operations = self.integer(&at, value, 0, MAX_COUNT);
                }
                "max_disruption" => slo.max_disruption = self.duration(&at, value, Bound::Any),
                "max_stale_reads" => slo.max_stale_reads = self.integer(&at, value, 0, MAX_COUNT),
                "max_missing_reads" => {
                    slo.max_missing_reads = self.integer(&at, value, 0, MAX_COUNT)
                }
                "max_corrupt_reads" => {
                    slo.max_corrupt_reads = self.integer(&at, value, 0, MAX_COUNT)
                }
                "p99_operation" => slo.p99_operation = self.duration(&at, value, Bound::Positive),
                _ => self.unknown(&at, value, &[SLO_KEYS]),
            }
        }
        slo
    }
}

/// What a TLS file must hold.
#[derive(Clone, Copy)]
enum PemKind {
    /// One or more `CERTIFICATE` sections (a CA bundle or a client chain).
    Certificates,
    /// A private key (PKCS#8, PKCS#1 or SEC1).
    PrivateKey,
}

/// Reads a TLS file (at most [`MAX_TLS_FILE_SIZE`] bytes) and checks that it holds what it
/// must. Messages never quote the content: a key file is a secret.
fn check_pem_file(path: &Path, kind: PemKind) -> Result<(), String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_TLS_FILE_SIZE + 1).read_to_end(&mut bytes))
        .map_err(|error| format!("cannot read the file: {error}"))?;
    if bytes.len() as u64 > MAX_TLS_FILE_SIZE {
        return Err(format!(
            "the file is larger than {MAX_TLS_FILE_SIZE} bytes: not a pem file"
        ));
    }
    match kind {
        PemKind::Certificates => {
            let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
            match certificates {
                Ok(list) if list.is_empty() => {
                    Err("not a pem certificate file: no -----BEGIN CERTIFICATE----- section".into())
                }
                Ok(_) => Ok(()),
                Err(error) => Err(format!("not a valid pem certificate file: {error}")),
            }
        }
        PemKind::PrivateKey => PrivateKeyDer::from_pem_slice(&bytes)
            .map(drop)
            .map_err(|_| {
                "not a pem private key file: no valid -----BEGIN ... PRIVATE KEY----- section"
                    .into()
            }),
    }
}
