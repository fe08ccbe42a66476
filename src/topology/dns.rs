//! Node discovery by DNS (DESIGN §14): the direct nodes of a target are what a name lists,
//! as HAProxy's `server-template` finds the pods behind a headless Service.
//! `nodes = "dns://NAME:PORT"`: every A and AAAA address of NAME is a node on PORT, labelled
//! `ip:port`. `nodes = "dns+srv://_SERVICE._tcp.NAME"`: every SRV record is a node,
//! labelled with its target name and port (a StatefulSet's pod keeps its name when it gets
//! a new address, so its series carry on), connected at the target's address.
//!
//! One round asks the resolver (`discovery_resolver`, or the system's from
//! `/etc/resolv.conf`) under a deadline. A name that does not exist (NXDOMAIN) or has no
//! records of the type (NODATA) is an answer: no nodes, and the nodes listed before go
//! after `backend_ttl` like any node that disappears. A timeout, SERVFAIL, REFUSED or an
//! unreachable server is an error: the caller counts it and keeps the last good set.
//! Following the nodes found is [`crate::workload`]'s job.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfigGroup, ResolveHosts, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::{IntoName, Name, ResolveError, TokioResolver};
use prometheus_client::metrics::counter::Counter;

use crate::config::NodeDiscovery;
use crate::topology::sentinel::NodeEndpoint;

/// Most nodes one target follows from DNS: each is a follower task and a connection, and
/// a name that suddenly lists thousands of addresses must not open thousands of them.
pub const MAX_DISCOVERED_NODES: usize = 64;

/// Shortest deadline of one round (the resolve, SRV targets included): a loaded machine
/// or a busy cluster DNS answers within it even when `discovery_interval` is shorter.
const MIN_ROUND_DEADLINE: Duration = Duration::from_secs(1);

/// Longest wait for one DNS answer before the resolver asks again (its own default).
const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest wait for one DNS answer.
const MIN_QUERY_TIMEOUT: Duration = Duration::from_millis(200);

/// One node DNS lists.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    /// The `node` label: `ip:port` (A/AAAA) or `target:port` (SRV).
    pub label: String,
    /// The name the node was found under: the name TLS verifies.
    pub name: String,
    /// Where to connect.
    pub ip: IpAddr,
    pub port: u16,
}

/// What the node followers need to follow the nodes a name lists.
pub struct DnsNodes {
    pub discovery: Discovery,
    /// The endpoint of a node found under a name (the caller connects to its address).
    pub endpoint: NodeEndpoint,
    /// `discovery_errors_total{target}`.
    pub errors: Counter,
}

/// One target's DNS source: what to ask, whom, how often.
pub struct Discovery {
    source: NodeDiscovery,
    server: Option<SocketAddr>,
    pub interval: Duration,
    /// Built at the first round (the system configuration is read then), kept after.
    resolver: Option<TokioResolver>,
}

impl Discovery {
    pub fn new(source: NodeDiscovery, server: Option<SocketAddr>, interval: Duration) -> Self {
        Discovery {
            source,
            server,
            interval,
            resolver: None,
        }
    }

    /// The source as configured, for logs.
    pub fn source(&self) -> &NodeDiscovery {
        &self.source
    }

    /// One round: the nodes the name lists now, sorted, at most [`MAX_DISCOVERED_NODES`]
    /// (the second value says how many more there were); an error says why none could be
    /// learnt.
    pub async fn round(&mut self) -> Result<(Vec<Found>, usize), String> {
        let deadline = self.interval.max(MIN_ROUND_DEADLINE);
        if self.resolver.is_none() {
            self.resolver = Some(self.build()?);
        }
        let resolver = self.resolver.as_ref().expect("built above");
        match tokio::time::timeout(deadline, lookup(resolver, &self.source)).await {
            Ok(Ok(mut found)) => {
                found.sort();
                found.dedup_by(|a, b| a.label == b.label);
                let more = found.len().saturating_sub(MAX_DISCOVERED_NODES);
                found.truncate(MAX_DISCOVERED_NODES);
                Ok((found, more))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {deadline:?}")),
        }
    }

    /// The resolver: `discovery_resolver` alone (no hosts file, no search domains), or the
    /// system's configuration. Answers are cached at most one interval, so every round
    /// sees what the server says at most `discovery_interval` ago.
    fn build(&self) -> Result<TokioResolver, String> {
        let provider = TokioConnectionProvider::default();
        let mut builder = match self.server {
            Some(addr) => {
                let servers =
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                let mut b = TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), servers),
                    provider,
                );
                b.options_mut().use_hosts_file = ResolveHosts::Never;
                b
            }
            None => TokioResolver::builder(provider)
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?,
        };
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = (self.interval / 2).clamp(MIN_QUERY_TIMEOUT, MAX_QUERY_TIMEOUT);
        opts.attempts = 2;
        opts.positive_max_ttl = Some(self.interval);
        opts.negative_max_ttl = Some(self.interval);
        Ok(builder.build())
    }
}

/// Asks for the nodes `source` lists.
async fn lookup(resolver: &TokioResolver, source: &NodeDiscovery) -> Result<Vec<Found>, String> {
    match source {
        NodeDiscovery::Addresses { name, port } => {
            let ips = addresses(resolver, name.as_str()).await?;
            Ok(ips
                .into_iter()
                .take(MAX_DISCOVERED_NODES)
                .map(|ip| Found {
                    label: host_port(&ip.to_string(), *port),
                    name: name.trim_end_matches('.').to_string(),
                    ip,
                    port: *port,
                })
                .collect())
        }
        NodeDiscovery::Srv { name } => {
            let records = match resolver.srv_lookup(name.as_str()).await {
                Ok(records) => records,
                Err(e) if is_empty_answer(&e) => return Ok(Vec::new()),
                Err(e) => return Err(describe(name, &e)),
            };
            // A target of "." says the service is not available there (RFC 2782).
            let targets: BTreeSet<(Name, u16)> = records
                .iter()
                .filter(|srv| !srv.target().is_root())
                .map(|srv| (srv.target().to_lowercase(), srv.port()))
                .collect();
            let mut found = Vec::new();
            for (target, port) in targets.into_iter().take(MAX_DISCOVERED_NODES) {
                let text = target.to_utf8();
                let text = text.trim_end_matches('.');
                // A target without an address (a pod not yet in DNS) is not a node yet.
                if let Some(ip) = addresses(resolver, target.clone()).await?.first() {
                    found.push(Found {
                        label: host_port(text, port),
                        name: text.to_string(),
                        ip: *ip,
                        port,
                    });
                }
            }
            Ok(found)
        }
    }
}

/// Every address of `name`, sorted; none when the name does not exist or has none.
async fn addresses(
    resolver: &TokioResolver,
    name: impl IntoName + Clone,
) -> Result<Vec<IpAddr>, String> {
    let shown = name
        .clone()
        .into_name()
        .map(|n| n.to_utf8())
        .unwrap_or_default();
    match resolver.lookup_ip(name).await {
        Ok(found) => {
            let mut ips: Vec<IpAddr> = found.iter().collect();
            ips.sort();
            ips.dedup();
            Ok(ips)
        }
        Err(e) if is_empty_answer(&e) => Ok(Vec::new()),
        Err(e) => Err(describe(&shown, &e)),
    }
}

/// NXDOMAIN or NODATA: the server answered that there is nothing (an answer, not an error).
fn is_empty_answer(e: &ResolveError) -> bool {
    e.proto().is_some_and(|p| {
        matches!(
            p.kind(),
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NXDomain | ResponseCode::NoError,
                ..
            }
        )
    })
}

/// A failed lookup, for the log: the name and hickory's description (no secrets in either).
fn describe(name: &str, e: &ResolveError) -> String {
    format!("resolving {name}: {e}")
}

/// `host:port`, IPv6 addresses bracketed, as for static nodes.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_bracket_ipv6_like_static_nodes() {
        assert_eq!(host_port("10.0.0.1", 6379), "10.0.0.1:6379");
        assert_eq!(host_port("fd00::1", 6379), "[fd00::1]:6379");
        assert_eq!(
            host_port("keydb-0.keydb.ns.svc", 6379),
            "keydb-0.keydb.ns.svc:6379"
        );
    }
}
