//! `redis://[user:password@]host[:port][/db]` and `rediss://` (TLS) URLs. The `redis` crate
//! parses them (host, port, database, percent-decoded user and password); this module only
//! restricts them to what the canary supports, explains in words what the parser would just
//! refuse, and never repeats a password in a message or in `Display`.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use redis::{ConnectionAddr, IntoConnectionInfo};

use super::RedisUrl;
use super::problems::quote;
use crate::secret::{MASK, Secret};

/// A URL that is not a valid `redis://` or `rediss://` URL; the message never contains its
/// password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidUrl(String);

/// A parsed URL, and what the checks of nodes need to know about how it was written.
pub(super) struct ParsedUrl {
    pub(super) url: RedisUrl,
    /// Whether the URL named its database (nodes must then name the target's).
    pub(super) db_given: bool,
}

impl FromStr for RedisUrl {
    type Err = InvalidUrl;

    /// Parses `redis://[user:password@]host[:port][/db]` or `rediss://...`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_url(text).map(|parsed| parsed.url)
    }
}

pub(super) fn parse_url(text: &str) -> Result<ParsedUrl, InvalidUrl> {
    let fail = |message: String| Err(InvalidUrl(message));
    let Some((scheme, rest)) = text.split_once("://") else {
        return fail("expected redis://host:port or rediss://host:port".into());
    };
    let tls = if scheme.eq_ignore_ascii_case("redis") {
        false
    } else if scheme.eq_ignore_ascii_case("rediss") {
        true
    } else {
        return fail(format!(
            "unsupported scheme {}: expected redis or rediss (tls)",
            quote(scheme)
        ));
    };

    // The last '@' ends the credentials, so that an unencoded '@' or '/' in a password
    // still reads as the user meant.
    let (userinfo, location) = match rest.rfind('@') {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    if location.contains(['?', '#']) {
        return fail("query parameters and fragments are not supported".into());
    }
    if let Some(userinfo) = userinfo {
        check_escapes(userinfo)?;
    }
    let authority = location.split('/').next().unwrap_or_default();
    explain_authority(authority)?;
    let db_text = location
        .split_once('/')
        .map_or("", |(_, path)| path.trim_matches('/'));
    let db_given = !db_text.is_empty();
    if db_given && db_text.parse::<u32>().is_err() {
        return fail(format!(
            "invalid database {}: expected an integer >= 0 (the server decides how many it has)",
            quote(db_text)
        ));
    }

    // The crate reads `redis://`; TLS is the canary's business, it opens the socket.
    let escaped = match userinfo {
        Some(userinfo) => format!("redis://{}@{location}", escape_userinfo(userinfo)),
        None => format!("redis://{location}"),
    };
    let Some(parsed) = redis::parse_redis_url(&escaped) else {
        return fail("not a valid url".into());
    };
    let info = parsed.into_connection_info().map_err(|error| {
        // The crate's messages name what is wrong, never the password.
        let text = error.to_string();
        let what = text.split(" - ").next().unwrap_or(&text).to_lowercase();
        InvalidUrl(what)
    })?;
    let (host, port) = match info.addr() {
        ConnectionAddr::Tcp(host, port) => (host.clone(), *port),
        _ => return fail("expected a tcp address host:port".into()),
    };
    let redis = info.redis_settings();
    let db = u32::try_from(redis.db()).map_err(|_| {
        InvalidUrl(format!(
            "invalid database {}: expected an integer >= 0",
            quote(db_text)
        ))
    })?;

    Ok(ParsedUrl {
        url: RedisUrl {
            tls,
            host,
            port,
            username: redis
                .username()
                .filter(|u| !u.is_empty())
                .map(str::to_string),
            password: redis.password().filter(|p| !p.is_empty()).map(Secret::new),
            db,
        },
        db_given,
    })
}

/// Every `%` of the credentials starts a `%XX` escape: a stray one is refused rather than
/// guessed at (the message never repeats the text: it may be a password).
fn check_escapes(userinfo: &str) -> Result<(), InvalidUrl> {
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let valid = |text: &str| {
        text.match_indices('%').all(|(at, _)| {
            text.get(at + 1..at + 3)
                .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
        })
    };
    if !valid(user) {
        return Err(InvalidUrl(
            "user: invalid percent-encoding (expected %XX)".into(),
        ));
    }
    if password.is_some_and(|password| !valid(password)) {
        return Err(InvalidUrl(
            "password: invalid percent-encoding (expected %XX)".into(),
        ));
    }
    Ok(())
}

/// Percent-encodes what would end the credentials early in the URL parser ('@', '/', '?',
/// '#', spaces...), keeping existing `%XX` escapes and the first ':' (user:password).
fn escape_userinfo(userinfo: &str) -> String {
    let mut escaped = String::with_capacity(userinfo.len());
    let mut seen_colon = false;
    for byte in userinfo.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(
                byte,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
            || (byte == b':' && !seen_colon);
        seen_colon |= byte == b':';
        if keep {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// Says in words what is wrong with `host[:port]` or `[ipv6][:port]`, where the URL parser
/// would only refuse it.
fn explain_authority(authority: &str) -> Result<(), InvalidUrl> {
    let fail = |message: String| Err(InvalidUrl(message));
    let port = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((address, after)) = bracketed.split_once(']') else {
            return fail("missing ] after the ipv6 address".into());
        };
        if address.parse::<Ipv6Addr>().is_err() {
            return fail(format!("invalid ipv6 address {}", quote(address)));
        }
        match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return fail("expected :port after the ipv6 address".into()),
            },
        }
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.contains(':') {
            return fail("an ipv6 address must be in brackets, e.g. redis://[::1]:6379".into());
        }
        check_host(host).map_err(InvalidUrl)?;
        port
    };
    match port.map(|port| (port, port.parse::<u16>())) {
        None | Some((_, Ok(1..))) => Ok(()),
        Some((port, _)) => fail(format!("invalid port {}: expected 1 to 65535", quote(port))),
    }
}

/// A DNS name or an IPv4 address.
fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("missing host".into());
    }
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return host
            .parse::<Ipv4Addr>()
            .map(drop)
            .map_err(|_| format!("invalid ipv4 address {}", quote(host)));
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid = name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid {
        Ok(())
    } else {
        Err(format!("invalid host {}", quote(host)))
    }
}

/// Escapes what would otherwise end the user part of a URL.
fn percent_encode_user(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl RedisUrl {
    /// `host:port`, with brackets around an IPv6 address (`[::1]:6379`): for connecting and
    /// for the `node` label, never carrying credentials.
    pub fn host_port(&self) -> String {
        if self.host.parse::<Ipv6Addr>().is_ok() {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for RedisUrl {
    /// `redis://user:****@host:port/db`: the password is always masked.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        if let Some(user) = &self.username {
            f.write_str(&percent_encode_user(user))?;
        }
        if self.password.is_some() {
            write!(f, ":{MASK}")?;
        }
        if self.username.is_some() || self.password.is_some() {
            f.write_str("@")?;
        }
        write!(f, "{}/{}", self.host_port(), self.db)
    }
}
