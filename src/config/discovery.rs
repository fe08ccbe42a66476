//! Nodes found by DNS (DESIGN §14): the text of `nodes = "dns://NAME:PORT"` (every A/AAAA
//! address of NAME is a node on PORT) and `nodes = "dns+srv://_SERVICE._tcp.NAME"` (every
//! SRV record of the name is a node), and the `discovery_resolver` address, parsed and
//! checked without a network. `discovery_interval` is read like every other duration.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Default `discovery_interval`: how often the name is resolved again. Ten seconds follows
/// a rescheduled pod well within a typical `backend_ttl` and asks the cluster DNS once per
/// ten seconds per target.
pub const DEFAULT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(10);

/// Shortest `discovery_interval`: each round is a few DNS queries, and a period of
/// nanoseconds would turn the canary into a load test of the cluster DNS.
pub(super) const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_millis(100);

/// Port of a `discovery_resolver` given as an address alone: the DNS port.
const DNS_PORT: u16 = 53;

/// Longest DNS name (RFC 1035: 255 bytes on the wire, 253 characters as text).
const MAX_NAME: usize = 253;

/// Longest label of a DNS name (RFC 1035).
const MAX_LABEL: usize = 63;

/// Where a target's direct nodes come from when DNS lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeDiscovery {
    /// `dns://NAME:PORT`: every A and AAAA address of `name` is a node on `port`.
    Addresses { name: String, port: u16 },
    /// `dns+srv://NAME`: every SRV record of `name` (`_SERVICE._tcp.DOMAIN`) is a node at
    /// its target and port.
    Srv { name: String },
}

impl fmt::Display for NodeDiscovery {
    /// As written in the configuration (it holds no secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addresses { name, port } => write!(f, "dns://{name}:{port}"),
            Self::Srv { name } => write!(f, "dns+srv://{name}"),
        }
    }
}

/// Whether `nodes = TEXT` asks for DNS discovery (so that a bad one is reported as such).
pub(super) fn is_dns_text(text: &str) -> bool {
    let lower = text.trim().to_ascii_lowercase();
    lower.starts_with("dns://") || lower.starts_with("dns+")
}

/// Parses `dns://NAME:PORT` or `dns+srv://_SERVICE._tcp.NAME`; the error says what was
/// expected.
pub(super) fn parse_node_discovery(text: &str) -> Result<NodeDiscovery, String> {
    const EXPECTED: &str =
        "expected \"dns://NAME:PORT\" (A/AAAA records) or \"dns+srv://_SERVICE._tcp.NAME\"";
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("{EXPECTED}: no ://"))?;
    if rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{EXPECTED}: no user, path or query (nodes inherit the target's credentials)"
        ));
    }
    match scheme.to_ascii_lowercase().as_str() {
        "dns" => {
            let Some((name, port)) = rest.rsplit_once(':') else {
                return Err(
                    "missing port: expected \"dns://NAME:PORT\" (every address of NAME is a node on PORT)"
                        .into(),
                );
            };
            let port = match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("bad port {port:?}: expected 1 to 65535")),
            };
            check_name(name)?;
            Ok(NodeDiscovery::Addresses {
                name: name.to_ascii_lowercase(),
                port,
            })
        }
        "dns+srv" => {
            if rest.contains(':') {
                return Err(
                    "an SRV record names the port: expected \"dns+srv://_SERVICE._tcp.NAME\" without :PORT"
                        .into(),
                );
            }
            check_name(rest)?;
            let mut labels = rest.split('.');
            let service = labels.next().unwrap_or_default();
            let protocol = labels.next().unwrap_or_default();
            let domain_labels = labels.filter(|l| !l.is_empty()).count();
            if !service.starts_with('_')
                || service.len() < 2
                || !protocol.eq_ignore_ascii_case("_tcp")
                || domain_labels == 0
            {
                return Err(
                    "expected an SRV name \"_SERVICE._tcp.NAME\" such as _redis._tcp.keydb-headless.ns.svc.cluster.local"
                        .into(),
                );
            }
            Ok(NodeDiscovery::Srv {
                name: rest.to_ascii_lowercase(),
            })
        }
        _ => Err(format!(
            "unknown scheme {:?}: {EXPECTED}",
            scheme.escape_debug().to_string()
        )),
    }
}

/// A DNS name as text: dot-separated labels of letters, digits, `-` and `_` (SRV names),
/// at most 63 characters each and 253 in all, an optional trailing dot. An IP address is
/// not a name to discover: such a node is listed in `nodes = [...]`.
fn check_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("missing name".into());
    }
    if bare
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
    {
        return Err(
            "an address, not a name: list a fixed node in nodes = [\"redis://HOST:PORT\"]".into(),
        );
    }
    let label_ok = |l: &str| {
        (1..=MAX_LABEL).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if bare.len() > MAX_NAME || !bare.split('.').all(label_ok) {
        return Err(format!(
            "bad DNS name {:?}: expected labels of letters, digits, - and _ (at most {MAX_LABEL} each, {MAX_NAME} in all)",
            name.escape_debug().to_string()
        ));
    }
    Ok(())
}

/// `discovery_resolver`: `IP:PORT`, `[IPv6]:PORT`, or an address alone (port 53).
pub(super) fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .map_err(|_| {
            "expected the address of a DNS server, IP:PORT such as 127.0.0.1:5353 (a name could not be resolved without a resolver)"
                .into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_urls_parse_into_a_name_and_a_port_or_an_srv_name() {
        assert_eq!(
            parse_node_discovery("dns://keydb-headless.ns.svc.cluster.local:6379"),
            Ok(NodeDiscovery::Addresses {
                name: "keydb-headless.ns.svc.cluster.local".into(),
                port: 6379
            })
        );
        assert_eq!(
            parse_node_discovery("dns+srv://_redis._tcp.keydb-headless.ns.svc"),
            Ok(NodeDiscovery::Srv {
                name: "_redis._tcp.keydb-headless.ns.svc".into()
            })
        );
        let d = parse_node_discovery("DNS://Nodes.Test.:7000").expect("valid");
        assert_eq!(d.to_string(), "dns://nodes.test.:7000");
    }

    #[test]
    fn bad_dns_urls_say_what_is_wrong() {
        for (text, says) in [
            ("dns://nodes.test", "missing port"),
            ("dns://nodes.test:0", "bad port"),
            ("dns://nodes.test:http", "bad port"),
            ("dns://:6379", "missing name"),
            ("dns://10.0.0.1:6379", "an address, not a name"),
            ("dns://bad name:6379", "bad DNS name"),
            ("dns://a..b:6379", "bad DNS name"),
            ("dns://u:p@nodes.test:6379", "no user, path or query"),
            ("dns://nodes.test:6379/2", "no user, path or query"),
            ("dns+srv://_redis._tcp.nodes.test:6379", "names the port"),
            ("dns+srv://nodes.test", "_SERVICE._tcp.NAME"),
            ("dns+srv://_redis._udp.nodes.test", "_SERVICE._tcp.NAME"),
            ("dns+srv://_redis._tcp", "_SERVICE._tcp.NAME"),
            ("dns+txt://nodes.test", "unknown scheme"),
        ] {
            let error = parse_node_discovery(text).expect_err(text);
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn a_resolver_is_an_address_with_or_without_port() {
        assert_eq!(
            parse_resolver("127.0.0.1:5353"),
            Ok("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_resolver("10.96.0.10"),
            Ok("10.96.0.10:53".parse().unwrap())
        );
        assert_eq!(parse_resolver("[::1]:53"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(parse_resolver("::1"), Ok("[::1]:53".parse().unwrap()));
        assert!(parse_resolver("kube-dns:53").is_err());
    }
}
