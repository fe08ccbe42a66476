//! The closed error taxonomy: every attempt and every connect ends in exactly one
//! [`ResultKind`], decided by one function per source of failure. Metric labels, retry
//! decisions and episode bookkeeping all read this enum, never error text.

use std::io;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// How one attempt (or one connect) ended. The variant order is the label order in `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResultKind {
    Ok,
    Timeout,
    Refused,
    Reset,
    Auth,
    Readonly,
    Loading,
    Busy,
    Oom,
    Masterdown,
    Tryagain,
    Moved,
    Ask,
    Clusterdown,
    Dns,
    Error,
}

impl ResultKind {
    /// Every variant, for pre-creating series at 0 and for reports.
    pub const ALL: [ResultKind; 16] = [
        ResultKind::Ok,
        ResultKind::Timeout,
        ResultKind::Refused,
        ResultKind::Reset,
        ResultKind::Auth,
        ResultKind::Readonly,
        ResultKind::Loading,
        ResultKind::Busy,
        ResultKind::Oom,
        ResultKind::Masterdown,
        ResultKind::Tryagain,
        ResultKind::Moved,
        ResultKind::Ask,
        ResultKind::Clusterdown,
        ResultKind::Dns,
        ResultKind::Error,
    ];

    /// The label value, as in DESIGN §6.
    pub fn as_str(self) -> &'static str {
        match self {
            ResultKind::Ok => "ok",
            ResultKind::Timeout => "timeout",
            ResultKind::Refused => "refused",
            ResultKind::Reset => "reset",
            ResultKind::Auth => "auth",
            ResultKind::Readonly => "readonly",
            ResultKind::Loading => "loading",
            ResultKind::Busy => "busy",
            ResultKind::Oom => "oom",
            ResultKind::Masterdown => "masterdown",
            ResultKind::Tryagain => "tryagain",
            ResultKind::Moved => "moved",
            ResultKind::Ask => "ask",
            ResultKind::Clusterdown => "clusterdown",
            ResultKind::Dns => "dns",
            ResultKind::Error => "error",
        }
    }

    /// Whether a careful client tries again (DESIGN §2.3). `oom` and `error` are the server's
    /// final word; retrying them only adds load to a store that is already in trouble.
    pub fn is_retryable(self) -> bool {
        !matches!(self, ResultKind::Ok | ResultKind::Oom | ResultKind::Error)
    }

    /// Whether the connection that produced this result must be dropped and reopened before
    /// the next attempt: after a timeout a late reply would be read as the answer to the next
    /// command; after READONLY or an auth failure only a new connection can land elsewhere or
    /// pick up rotated credentials.
    pub fn drops_connection(self) -> bool {
        matches!(
            self,
            ResultKind::Timeout
                | ResultKind::Refused
                | ResultKind::Reset
                | ResultKind::Auth
                | ResultKind::Readonly
        )
    }
}

impl std::fmt::Display for ResultKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for ResultKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Classifies an I/O error from connecting, reading or writing.
///
/// Walks the `source()` chain so that an error wrapped by TLS or by our own layers is still
/// recognised. Through HAProxy a dead backend shows up as an accepted connection that is then
/// closed, so EOF and broken pipe are `reset`, not `refused`.
pub fn classify_io(err: &io::Error) -> ResultKind {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused => return ResultKind::Refused,
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => return ResultKind::Timeout,
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::NotConnected => return ResultKind::Reset,
                _ => {}
            }
            if let Some(code) = io.raw_os_error() {
                // EHOSTUNREACH / ENETUNREACH: nobody answered, as good as refused.
                if code == 113 || code == 101 {
                    return ResultKind::Refused;
                }
            }
            // `io::Error::source()` skips the wrapped error itself; look at it directly.
            if let Some(inner) = io.get_ref() {
                current = Some(inner as &(dyn std::error::Error + 'static));
                continue;
            }
        }
        current = e.source();
    }
    ResultKind::Error
}

/// Classifies any error of the `redis` crate: an error reply by its code (the crate parses
/// it), anything else by the I/O error underneath, and a reply that does not parse (or a
/// reply that outgrew its byte budget) as `error`.
pub fn classify_redis(err: &redis::RedisError) -> ResultKind {
    match err.code() {
        Some(code) => classify_code(code, err.detail().unwrap_or("")),
        None if err.kind() == redis::ErrorKind::AuthenticationFailed => ResultKind::Auth,
        None => match find_io(err) {
            Some(io) => classify_io(io),
            None => ResultKind::Error,
        },
    }
}

/// The first `io::Error` in `err`'s chain of sources.
fn find_io<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io);
        }
        // The crate keeps the error it wraps behind an `Arc`, which hides its type.
        if let Some(inner) = e.downcast_ref::<std::sync::Arc<dyn std::error::Error + Send + Sync>>()
        {
            current = Some(&**inner);
            continue;
        }
        current = e.source();
    }
    None
}

/// Classifies a server error by its code (the first word of `-CODE detail`).
///
/// NOAUTH/WRONGPASS/NOPERM all mean "these credentials do not let us do this": re-reading
/// the credentials and reconnecting is the only remedy, so they share `auth`. Anything
/// unknown is `error`.
pub fn classify_code(code: &str, detail: &str) -> ResultKind {
    match code {
        "NOAUTH" | "WRONGPASS" | "NOPERM" => ResultKind::Auth,
        "READONLY" => ResultKind::Readonly,
        "LOADING" => ResultKind::Loading,
        "BUSY" => ResultKind::Busy,
        "OOM" => ResultKind::Oom,
        "MASTERDOWN" => ResultKind::Masterdown,
        "TRYAGAIN" => ResultKind::Tryagain,
        "MOVED" => ResultKind::Moved,
        "ASK" => ResultKind::Ask,
        "CLUSTERDOWN" => ResultKind::Clusterdown,
        // Old servers answer a bad AUTH with a plain ERR.
        "ERR" if detail.contains("invalid password") || detail.contains("AUTH") => ResultKind::Auth,
        _ => ResultKind::Error,
    }
}

/// A failure of the canary itself, not of the target: counted in `internal_errors_total`,
/// never in the target's attempts, operations or episodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InternalCause {
    /// Out of file descriptors (EMFILE, ENFILE).
    FdExhausted,
    /// Out of memory or socket buffers (ENOMEM, ENOBUFS).
    Memory,
    /// No local address or port to connect from (EADDRNOTAVAIL, EADDRINUSE).
    LocalBind,
}

impl InternalCause {
    /// Every variant, for pre-creating series at 0.
    pub const ALL: [InternalCause; 3] = [
        InternalCause::FdExhausted,
        InternalCause::Memory,
        InternalCause::LocalBind,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            InternalCause::FdExhausted => "fd_exhausted",
            InternalCause::Memory => "memory",
            InternalCause::LocalBind => "local_bind",
        }
    }

    /// The canary-side cause of `err`, if it is one.
    pub fn of(err: &io::Error) -> Option<InternalCause> {
        // Linux errno values: EMFILE 24, ENFILE 23, ENOMEM 12, ENOBUFS 105,
        // EADDRNOTAVAIL 99, EADDRINUSE 98.
        match err.raw_os_error()? {
            23 | 24 => Some(InternalCause::FdExhausted),
            12 | 105 => Some(InternalCause::Memory),
            98 | 99 => Some(InternalCause::LocalBind),
            _ => None,
        }
    }
}

impl std::fmt::Display for InternalCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for InternalCause {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_server_error_code_maps_to_its_result() {
        let cases = [
            ("NOAUTH Authentication required.", ResultKind::Auth),
            (
                "WRONGPASS invalid username-password pair or user is disabled.",
                ResultKind::Auth,
            ),
            ("NOPERM this user has no permissions", ResultKind::Auth),
            (
                "READONLY You can't write against a read only replica.",
                ResultKind::Readonly,
            ),
            (
                "LOADING Redis is loading the dataset in memory",
                ResultKind::Loading,
            ),
            ("BUSY Redis is busy running a script.", ResultKind::Busy),
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                ResultKind::Oom,
            ),
            (
                "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
                ResultKind::Masterdown,
            ),
            (
                "TRYAGAIN Multiple keys request during rehashing of slot",
                ResultKind::Tryagain,
            ),
            ("MOVED 3999 127.0.0.1:6381", ResultKind::Moved),
            ("ASK 3999 127.0.0.1:6381", ResultKind::Ask),
            ("CLUSTERDOWN The cluster is down", ResultKind::Clusterdown),
            ("ERR unknown command 'FOO'", ResultKind::Error),
            ("ERR invalid password", ResultKind::Auth),
            ("WEIRD", ResultKind::Error),
        ];
        for (message, expected) in cases {
            let value = redis::parse_redis_value(format!("-{message}\r\n").as_bytes())
                .expect("an error reply parses");
            let redis::Value::ServerError(e) = value else {
                panic!("not an error reply: {message}");
            };
            let e = redis::RedisError::from(e);
            assert_eq!(classify_redis(&e), expected, "{message}");
        }
    }

    #[test]
    fn io_errors_map_to_refused_timeout_and_reset() {
        let cases = [
            (io::ErrorKind::ConnectionRefused, ResultKind::Refused),
            (io::ErrorKind::TimedOut, ResultKind::Timeout),
            (io::ErrorKind::ConnectionReset, ResultKind::Reset),
            (io::ErrorKind::BrokenPipe, ResultKind::Reset),
            (io::ErrorKind::UnexpectedEof, ResultKind::Reset),
            (io::ErrorKind::PermissionDenied, ResultKind::Error),
        ];
        for (kind, expected) in cases {
            assert_eq!(classify_io(&io::Error::from(kind)), expected, "{kind:?}");
        }
        assert_eq!(
            classify_io(&io::Error::from_raw_os_error(113)),
            ResultKind::Refused
        );
    }

    #[test]
    fn wrapped_io_errors_are_classified_by_their_source() {
        let inner = io::Error::from(io::ErrorKind::ConnectionReset);
        let outer = io::Error::other(inner);
        assert_eq!(classify_io(&outer), ResultKind::Reset);
    }

    #[test]
    fn io_errors_under_the_crate_are_classified_by_their_kind() {
        let e = redis::RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(classify_redis(&e), ResultKind::Reset);
        let e = redis::RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(classify_redis(&e), ResultKind::Refused);
    }

    #[test]
    fn canary_side_failures_are_internal_and_target_failures_are_not() {
        assert_eq!(
            InternalCause::of(&io::Error::from_raw_os_error(24)),
            Some(InternalCause::FdExhausted)
        );
        assert_eq!(
            InternalCause::of(&io::Error::from_raw_os_error(99)),
            Some(InternalCause::LocalBind)
        );
        assert_eq!(
            InternalCause::of(&io::Error::from(io::ErrorKind::ConnectionRefused)),
            None
        );
    }

    #[test]
    fn oom_and_error_are_final_and_the_rest_are_retried() {
        for r in ResultKind::ALL {
            let expected = !matches!(r, ResultKind::Ok | ResultKind::Oom | ResultKind::Error);
            assert_eq!(r.is_retryable(), expected, "{r}");
        }
    }

    #[test]
    fn label_values_are_the_lowercase_contract_names() {
        let names: Vec<_> = ResultKind::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "ok",
                "timeout",
                "refused",
                "reset",
                "auth",
                "readonly",
                "loading",
                "busy",
                "oom",
                "masterdown",
                "tryagain",
                "moved",
                "ask",
                "clusterdown",
                "dns",
                "error"
            ]
        );
    }
}
