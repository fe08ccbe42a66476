//! A minimal RESP2 codec: encodes commands as arrays of bulk strings and parses replies
//! incrementally from a byte buffer. The canary owns its connections (DESIGN §9), down to the
//! wire: this is all the protocol it needs, and owning it keeps every deadline exact.

/// One parsed reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR ...`: a server error, classified by its first word.
    Error(String),
    /// `:42`
    Int(i64),
    /// `$n ...` or the nil bulk `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*n ...` or the nil array `*-1`.
    Array(Option<Vec<Reply>>),
}

/// The reply could not be parsed: the stream is out of step and the connection must go.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("protocol error: {0}")]
pub struct ProtocolError(pub &'static str);

/// Largest bulk reply accepted. Canary values are small; a huge length means the stream is
/// corrupt or we are not talking to Redis, and we must not allocate what it claims.
const MAX_BULK: usize = 512 * 1024 * 1024;
/// Deepest array nesting accepted, so hostile input cannot recurse us off the stack.
const MAX_DEPTH: usize = 8;

/// Appends `args` to `out` as one RESP command.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    push_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(out, arg.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Parses one reply from the front of `buf`. `Ok(None)` means more bytes are needed;
/// `Ok(Some((reply, used)))` gives the reply and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    parse_at(buf, 0, 0)
}

fn parse_at(
    buf: &[u8],
    start: usize,
    depth: usize,
) -> Result<Option<(Reply, usize)>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("arrays nested too deep"));
    }
    let Some((line, after)) = read_line(buf, start) else {
        return Ok(None);
    };
    let (&tag, body) = line
        .split_first()
        .ok_or(ProtocolError("empty reply line"))?;
    match tag {
        b'+' => Ok(Some((Reply::Status(lossy(body)), after))),
        b'-' => Ok(Some((Reply::Error(lossy(body)), after))),
        b':' => Ok(Some((Reply::Int(parse_int(body)?), after))),
        b'$' => {
            let len = parse_int(body)?;
            if len < 0 {
                return Ok(Some((Reply::Bulk(None), after)));
            }
            let len = usize::try_from(len).map_err(|_| ProtocolError("bad bulk length"))?;
            if len > MAX_BULK {
                return Err(ProtocolError("bulk reply too large"));
            }
            let end = after + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk reply not terminated"));
            }
            Ok(Some((Reply::Bulk(Some(buf[after..end].to_vec())), end + 2)))
        }
        b'*' => {
            let len = parse_int(body)?;
            if len < 0 {
                return Ok(Some((Reply::Array(None), after)));
            }
            let len = usize::try_from(len).map_err(|_| ProtocolError("bad array length"))?;
            let mut items = Vec::with_capacity(len.min(64));
            let mut pos = after;
            for _ in 0..len {
                match parse_at(buf, pos, depth + 1)? {
                    Some((item, next)) => {
                        items.push(item);
                        pos = next;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(Some(items)), pos)))
        }
        _ => Err(ProtocolError("unknown reply type")),
    }
}

/// Finds the CRLF-terminated line starting at `start`; returns it and the offset after CRLF.
fn read_line(buf: &[u8], start: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(start..)?;
    let nl = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..nl], start + nl + 2))
}

fn parse_int(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError("bad integer"))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"k", b"", b"PX", b"3600000"]);
        assert_eq!(
            out,
            b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\nPX\r\n$7\r\n3600000\r\n"
        );
    }

    #[test]
    fn every_reply_type_parses_and_reports_its_length() {
        let cases: Vec<(&[u8], Reply)> = vec![
            (b"+OK\r\n", Reply::Status("OK".into())),
            (b"-ERR no\r\n", Reply::Error("ERR no".into())),
            (b":-12\r\n", Reply::Int(-12)),
            (b"$3\r\na\r\n\r\n", Reply::Bulk(Some(b"a\r\n".to_vec()))),
            (b"$-1\r\n", Reply::Bulk(None)),
            (b"*-1\r\n", Reply::Array(None)),
            (
                b"*2\r\n:1\r\n$1\r\nx\r\n",
                Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(Some(b"x".to_vec()))])),
            ),
        ];
        for (wire, expected) in cases {
            let mut buf = wire.to_vec();
            buf.extend_from_slice(b"+NEXT\r\n");
            let (reply, used) = parse(&buf).unwrap().unwrap();
            assert_eq!(reply, expected);
            assert_eq!(used, wire.len());
        }
    }

    #[test]
    fn every_strict_prefix_of_a_reply_asks_for_more_bytes() {
        let wire = b"*2\r\n$5\r\nhello\r\n*1\r\n+OK\r\n";
        for cut in 0..wire.len() {
            assert_eq!(parse(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(wire).unwrap().is_some());
    }

    #[test]
    fn garbage_is_a_protocol_error_not_a_panic() {
        for wire in [
            &b"?x\r\n"[..],
            b":abc\r\n",
            b"$3\r\nabcXY",
            b"$99999999999\r\n",
            b"\r\n",
        ] {
            assert!(parse(wire).is_err(), "{wire:?}");
        }
        let deep = b"*1\r\n".repeat(20);
        assert!(parse(&deep).is_err());
    }
}
