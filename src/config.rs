//! TEMPORARY STUB (replaced by the real configuration module).
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::CommonArgs;
use crate::secret::Secret;

pub const VALUE_HEADER_SIZE: usize = 48;

#[derive(Debug, Clone)]
pub struct Config { pub listen: SocketAddr, pub instance: String, pub log_format: LogFormat, pub cleanup: bool,
                    pub telemetry: Telemetry, pub targets: Vec<Target>, pub ignored_env: Vec<String> }
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat { Text, Json }
#[derive(Debug, Clone)]
pub struct Telemetry { pub otlp_endpoint: Option<String>, pub sample_ratio: f64 }
#[derive(Debug, Clone)]
pub struct Target { pub name: String, pub url: RedisUrl, pub username: Option<String>, pub password: PasswordSource,
                    pub nodes: Vec<RedisUrl>, pub key_prefix: String, pub settings: Settings, pub slo: Slo }
#[derive(Debug, Clone)]
pub struct RedisUrl { pub tls: bool, pub host: String, pub port: u16, pub username: Option<String>, pub password: Option<Secret>, pub db: u32 }
impl std::fmt::Display for RedisUrl { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "redis://{}:{}", self.host, self.port) } }
#[derive(Debug, Clone)]
pub enum PasswordSource { None, Inline(Secret), File(PathBuf), Env(String) }
impl PasswordSource { pub fn resolve(&self) -> Result<Option<Secret>, std::io::Error> { Ok(None) } }
#[derive(Debug, Clone, Copy)]
pub enum Rate { PerSecond(f64), Max }
#[derive(Debug, Clone)]
pub struct Settings { pub rate: Rate, pub keys: u32, pub value_size: usize, pub ttl: Duration, pub connections: usize,
    pub connect_probe_interval: Duration, pub connect_timeout: Duration, pub response_timeout: Duration, pub stale_grace: Duration,
    pub replication_timeout: Duration, pub backend_ttl: Duration, pub retry: RetryPolicy, pub tls: Option<TlsSettings> }
#[derive(Debug, Clone)]
pub struct RetryPolicy { pub max_retries: u32, pub base: Duration, pub max: Duration }
#[derive(Debug, Clone)]
pub struct TlsSettings { pub ca_file: Option<PathBuf>, pub cert_file: Option<PathBuf>, pub key_file: Option<PathBuf>, pub server_name: Option<String>, pub insecure: bool }
#[derive(Debug, Clone)]
pub struct Slo { pub min_availability: f64, pub max_failed_operations: u64, pub max_disruption: Duration, pub max_stale_reads: u64,
    pub max_missing_reads: u64, pub max_corrupt_reads: u64, pub p99_operation: Duration }
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);
impl std::fmt::Display for ConfigErrors { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "{:?}", self.0) } }
pub fn load(_args: &CommonArgs) -> Result<Config, ConfigErrors> { unimplemented!() }
impl Config { pub fn to_masked_toml(&self) -> String { String::new() } }
