//! A server is untrusted input (DESIGN §11): the real canary against a small hostile server
//! written here, on loopback. The server passes the handshake like a Redis 7.0.15 master,
//! answers `SET` and `GET` from a tiny store, and on cue misbehaves in one way per test: an
//! endless line, a bulk length of 500 000 000, a huge or an endlessly nested array, garbage,
//! a reply of the wrong type, one reply more than asked. A last test writes a real 100 MB
//! value over a canary key in a real `redis-server`.
//!
//! Each test watches the process while the abuse goes on: resident memory sampled every
//! 50 ms stays under [`RSS_BOUND`], a fresh `/metrics` scrape answers within a second, the
//! attempts are classified, `/healthz` stays 200; then the canary recovers once the server
//! behaves, and exits 0 within 5 s of SIGTERM.

mod support;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::hostile::{Peak, Watched, mib};
use support::names::*;
use support::*;

/// Resident memory the canary (a debug build, one target) may reach while a server abuses
/// it. It idles at about 10-20 MiB; one unbounded reply would be hundreds.
const RSS_BOUND: u64 = 64 * 1024 * 1024;

/// How long each abuse lasts while the process is watched.
const ABUSE_FOR: Duration = Duration::from_secs(6);

/// How long a fresh scrape may take during the abuse.
const SCRAPE_BOUND: Duration = Duration::from_secs(1);

/// How long the canary may take to exit after SIGTERM (DESIGN §3).
const EXIT_BOUND: Duration = Duration::from_secs(5);

/// The longest a connection of the hostile server lives, so that nothing outlives a test
/// even if the canary never closes it.
const CONN_LIFETIME: Duration = Duration::from_secs(60);

/// How a [`HostileServer`] answers `SET` and `GET` once abusing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Abuse {
    /// `+` and then bytes without a CRLF, forever.
    EndlessLine,
    /// `$500000000\r\n` and then bytes, forever.
    HugeBulk,
    /// `*100000000\r\n` and then `:1\r\n`, forever.
    HugeArray,
    /// `*2\r\n` forever: an array nested without end.
    DeepArrays,
    /// Pseudo-random bytes, forever.
    Garbage,
    /// An integer to `SET`, an array to `GET`; the connection otherwise stays in step.
    WrongType,
    /// Every [`EXTRA_EVERY`]th reply on a connection is followed by one `+OK` more than
    /// asked: in the same write, or in a write of its own 20 ms later.
    ExtraReply { same_write: bool },
}

/// How often (in data replies per connection) [`Abuse::ExtraReply`] adds a reply.
const EXTRA_EVERY: u64 = 4;

/// How long [`Abuse::ExtraReply`] holds every `SET` reply: a canary that took an extra
/// reply as the answer to its next `SET` would see that answer at once, faster than this.
const SET_DELAY: Duration = Duration::from_millis(30);

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    abusing: AtomicBool,
    /// Extra replies sent ([`Abuse::ExtraReply`]).
    extras: AtomicU64,
    /// Connections accepted.
    accepted: AtomicU64,
    /// Replies that began a misbehaviour.
    abuses: AtomicU64,
    store: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
}

/// A Redis-looking server on `127.0.0.1:0`, a thread per connection; stops (and joins every
/// thread) when dropped.
struct HostileServer {
    port: u16,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl HostileServer {
    fn start(abuse: Abuse) -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("bound").port();
        let shared = Arc::new(Shared::default());
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (sh, cs) = (shared.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            while !sh.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        sh.accepted.fetch_add(1, Ordering::Relaxed);
                        let sh = sh.clone();
                        let t = std::thread::spawn(move || serve(stream, port, abuse, &sh));
                        let mut cs = cs.lock().expect("conns");
                        cs.retain(|t: &JoinHandle<()>| !t.is_finished());
                        cs.push(t);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("hostile server: accept failed: {e}"),
                }
            }
        });
        HostileServer {
            port,
            shared,
            accept: Some(accept),
            conns,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn abuse(&self, on: bool) {
        self.shared.abusing.store(on, Ordering::Relaxed);
    }

    fn count(&self, c: impl Fn(&Shared) -> &AtomicU64) -> u64 {
        c(&self.shared).load(Ordering::Relaxed)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        // Every connection thread polls `stop` at least every 100 ms.
        for t in self.conns.lock().expect("conns").drain(..) {
            let _ = t.join();
        }
    }
}

/// One command off the front of `buf` (a RESP array of bulk strings, as clients send):
/// its arguments and the bytes it took; `None` while incomplete.
fn parse_command(buf: &[u8]) -> Option<(Vec<Vec<u8>>, usize)> {
    fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        Some((&buf[at..end], end + 2))
    }
    let (head, mut at) = line(buf, 0)?;
    let n: usize = std::str::from_utf8(head.strip_prefix(b"*")?)
        .ok()?
        .parse()
        .ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, next) = line(buf, at)?;
        let len: usize = std::str::from_utf8(len.strip_prefix(b"$")?)
            .ok()?
            .parse()
            .ok()?;
        if buf.len() < next + len + 2 {
            return None;
        }
        args.push(buf[next..next + len].to_vec());
        at = next + len + 2;
    }
    Some((args, at))
}

fn bulk(b: &[u8]) -> Vec<u8> {
    let mut out = format!("${}\r\n", b.len()).into_bytes();
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
    out
}

/// Whether an I/O error only means "not now" (a read or write timeout).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Writes `head` and then `chunk()` over and over until the peer goes, the server stops,
/// or the connection's lifetime ends.
fn stream_forever(
    s: &mut TcpStream,
    head: &[u8],
    mut chunk: impl FnMut() -> Vec<u8>,
    sh: &Shared,
    deadline: Instant,
) {
    if s.write_all(head).is_err() {
        return;
    }
    while !sh.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        match s.write(&chunk()) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// Serves one connection (see [`HostileServer`]).
fn serve(mut s: TcpStream, port: u16, abuse: Abuse, sh: &Shared) {
    let deadline = Instant::now() + CONN_LIFETIME;
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
    let peer = s.peer_addr().map(|a| a.port()).unwrap_or(0);
    let run_id = format!("{:040x}", 0xc0ffee_u64 * u64::from(port));
    let mut buf = Vec::new();
    let mut data_replies = 0u64;
    let mut rng = u64::from(peer) | 1;
    let mut tmp = vec![0u8; 64 * 1024];
    while !sh.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        while let Some((args, used)) = parse_command(&buf) {
            buf.drain(..used);
            let name = args
                .first()
                .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
                .unwrap_or_default();
            let sub = args
                .get(1)
                .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
                .unwrap_or_default();
            let data = name == "SET" || name == "GET";
            let abusing = data && sh.abusing.load(Ordering::Relaxed);
            if abusing && abuse != Abuse::WrongType && !matches!(abuse, Abuse::ExtraReply { .. }) {
                sh.abuses.fetch_add(1, Ordering::Relaxed);
                let filler = |b: u8| move || vec![b; 16 * 1024];
                match abuse {
                    Abuse::EndlessLine => stream_forever(&mut s, b"+", filler(b'a'), sh, deadline),
                    Abuse::HugeBulk => {
                        stream_forever(&mut s, b"$500000000\r\n", filler(b'b'), sh, deadline)
                    }
                    Abuse::HugeArray => stream_forever(
                        &mut s,
                        b"*100000000\r\n",
                        || b":1\r\n".repeat(4096),
                        sh,
                        deadline,
                    ),
                    Abuse::DeepArrays => {
                        stream_forever(&mut s, b"*2\r\n", || b"*2\r\n".repeat(4096), sh, deadline)
                    }
                    Abuse::Garbage => stream_forever(
                        &mut s,
                        b"",
                        || {
                            (0..16 * 1024)
                                .map(|_| {
                                    rng ^= rng << 13;
                                    rng ^= rng >> 7;
                                    rng ^= rng << 17;
                                    rng as u8
                                })
                                .collect()
                        },
                        sh,
                        deadline,
                    ),
                    _ => unreachable!(),
                }
                let _ = s.shutdown(Shutdown::Both);
                return;
            }
            let reply: Vec<u8> = match (name.as_str(), sub.as_str()) {
                ("SET", _) if abusing && abuse == Abuse::WrongType => b":1\r\n".to_vec(),
                ("GET", _) if abusing && abuse == Abuse::WrongType => {
                    b"*2\r\n:1\r\n$2\r\nno\r\n".to_vec()
                }
                ("SET", _) if args.len() >= 3 => {
                    sh.store
                        .lock()
                        .expect("store")
                        .insert(args[1].clone(), args[2].clone());
                    if matches!(abuse, Abuse::ExtraReply { .. }) {
                        std::thread::sleep(SET_DELAY);
                    }
                    b"+OK\r\n".to_vec()
                }
                ("GET", _) if args.len() == 2 => {
                    match sh.store.lock().expect("store").get(&args[1]) {
                        Some(v) => bulk(v),
                        None => b"$-1\r\n".to_vec(),
                    }
                }
                ("INFO", "SERVER") => bulk(
                    format!(
                        "# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n\
                         run_id:{run_id}\r\ntcp_port:{port}\r\n"
                    )
                    .as_bytes(),
                ),
                ("INFO", "REPLICATION") => {
                    bulk(b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n")
                }
                ("CLIENT", "INFO") => bulk(
                    format!("id=7 addr=127.0.0.1:{peer} laddr=127.0.0.1:{port} fd=8 name= db=0\n")
                        .as_bytes(),
                ),
                ("PING", _) => b"+PONG\r\n".to_vec(),
                ("AUTH" | "SELECT" | "CLIENT" | "HELLO", _) => b"+OK\r\n".to_vec(),
                _ => format!("-ERR unknown command '{name}'\r\n").into_bytes(),
            };
            let mut reply = reply;
            let mut later = false;
            if data {
                data_replies += 1;
            }
            if let (true, Abuse::ExtraReply { same_write }) = (abusing, abuse)
                && data_replies % EXTRA_EVERY == 0
            {
                sh.extras.fetch_add(1, Ordering::Relaxed);
                if same_write {
                    reply.extend_from_slice(b"+OK\r\n");
                } else {
                    later = true;
                }
            }
            if s.write_all(&reply).is_err() {
                return;
            }
            if later {
                std::thread::sleep(Duration::from_millis(20));
                if s.write_all(b"+OK\r\n").is_err() {
                    return;
                }
            }
        }
        match s.read(&mut tmp) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
        if buf.len() > 1 << 20 {
            return; // no client of ours sends that much without a complete command
        }
    }
}

/// One target named `h` at `url`, fast loops, no fresh-connection probe.
fn config(url: &str, extra_defaults: &str) -> String {
    format!(
        r#"instance = "test"
[defaults]
rate = 20
keys = 100
connect_timeout = "500ms"
response_timeout = "300ms"
connect_probe_interval = "0s"
{extra_defaults}

[[targets]]
name = "h"
url = "{url}"
"#
    )
}

/// What watching the canary for a while saw.
struct Watch {
    peak: Peak,
    worst_scrape: Duration,
    scrapes: u32,
    last: Scrape,
}

/// Samples the canary's memory every 50 ms for `how_long`, scraping `/metrics` (timed) every
/// 500 ms and checking `/healthz`; panics as soon as a bound is broken.
fn watch(canary: &mut Watched, how_long: Duration, what: &str) -> Watch {
    let started = Instant::now();
    let mut peak = Peak::default();
    let mut worst_scrape = Duration::ZERO;
    let mut scrapes = 0;
    let mut last = Scrape::default();
    let mut next_scrape = started;
    while started.elapsed() < how_long {
        let s = canary.sample();
        peak.add(s);
        assert!(
            s.rss < RSS_BOUND,
            "{what}: RSS {:.1} MiB after {:?} (bound {:.0} MiB)",
            mib(s.rss),
            started.elapsed(),
            mib(RSS_BOUND)
        );
        if Instant::now() >= next_scrape {
            let (m, took) = canary.scrape();
            assert!(
                took < SCRAPE_BOUND,
                "{what}: a scrape took {took:?} during the abuse"
            );
            worst_scrape = worst_scrape.max(took);
            scrapes += 1;
            last = m;
            let (status, _, _) = canary.get_timed("/healthz");
            assert_eq!(status, 200, "{what}: /healthz during the abuse");
            next_scrape += Duration::from_millis(500);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Watch {
        peak,
        worst_scrape,
        scrapes,
        last,
    }
}

fn errors(m: &Scrape) -> f64 {
    m.sum(ATTEMPTS, &[t("h"), ("result", "error")])
}

fn fresh(m: &Scrape) -> f64 {
    m.sum(READS, &[t("h"), ("verdict", "fresh")])
}

/// Sends SIGTERM; asserts exit 0 within [`EXIT_BOUND`]; returns how long it took.
fn terminate(canary: &mut Watched, what: &str) -> Duration {
    assert!(canary.alive(), "{what}: the canary died");
    let (status, took) = canary.terminate(EXIT_BOUND + Duration::from_secs(2));
    assert!(status.success(), "{what}: exit status {status}");
    assert!(
        took < EXIT_BOUND,
        "{what}: exit took {took:?} after SIGTERM"
    );
    took
}

/// The common scenario for a server that stops answering sensibly: healthy first, then
/// abused for [`ABUSE_FOR`] under watch, then healthy again, then SIGTERM.
fn survives(abuse: Abuse) {
    let what = format!("{abuse:?}");
    let server = HostileServer::start(abuse);
    let mut canary = Watched::start(&config(&server.url(), ""));
    // The handshake passes and the store answers: fresh reads before any abuse.
    wait_until(
        "fresh reads while the server behaves",
        Duration::from_secs(15),
        || fresh(&canary.metrics()) >= 5.0,
    );
    let idle = canary.sample();
    let before = canary.metrics();
    server.abuse(true);
    let w = watch(&mut canary, ABUSE_FOR, &what);
    let m = &w.last;
    let new_errors = errors(m) - errors(&before);
    let abuses = server.count(|s| &s.abuses);
    eprintln!(
        "{what}: idle RSS {:.1} MiB, peak RSS {:.1} MiB over {} samples, threads <= {}, \
         fds <= {}, worst scrape {:?} of {}, {new_errors} error attempts, {abuses} abusive \
         replies, {} connections accepted",
        mib(idle.rss),
        mib(w.peak.rss),
        w.peak.samples,
        w.peak.threads,
        w.peak.fds,
        w.worst_scrape,
        w.scrapes,
        server.count(|s| &s.accepted),
    );
    // Classified: the attempts on the abusive replies are `error`, the target is failing.
    assert!(
        new_errors >= 10.0,
        "{what}: {new_errors} error attempts in {ABUSE_FOR:?}:\n{}",
        m.text
    );
    assert_eq!(m.sum(DISRUPTED, &[t("h")]), 1.0, "{what}: not disrupted");
    assert!(
        m.sum(OPS, &[t("h"), ("outcome", "failed")])
            > before.sum(OPS, &[t("h"), ("outcome", "failed")]),
        "{what}: no failed operations"
    );
    // Nothing was retried as if the server might yet answer: `error` is final.
    assert_eq!(
        m.sum(ATTEMPTS, &[t("h"), ("result", "timeout")]),
        before.sum(ATTEMPTS, &[t("h"), ("result", "timeout")]),
        "{what}: abusive replies counted as timeouts"
    );
    // The server behaves again: so does the target.
    server.abuse(false);
    let recovered_from = fresh(&canary.metrics());
    wait_until(
        "fresh reads again once the server behaves",
        Duration::from_secs(15),
        || {
            let m = canary.metrics();
            fresh(&m) >= recovered_from + 5.0 && m.sum(DISRUPTED, &[t("h")]) == 0.0
        },
    );
    let end = canary.sample();
    assert!(end.rss < RSS_BOUND, "{what}: RSS {:.1} MiB", mib(end.rss));
    let took = terminate(&mut canary, &what);
    eprintln!(
        "{what}: RSS after recovery {:.1} MiB; exit {took:?} after SIGTERM",
        mib(end.rss)
    );
}

#[test]
fn an_endless_line_is_an_error_with_bounded_memory() {
    survives(Abuse::EndlessLine);
}

#[test]
fn a_bulk_length_of_500_000_000_is_an_error_with_bounded_memory() {
    survives(Abuse::HugeBulk);
}

#[test]
fn an_array_of_100_000_000_integers_is_an_error_with_bounded_memory() {
    survives(Abuse::HugeArray);
}

#[test]
fn arrays_nested_without_end_are_an_error_with_bounded_memory() {
    survives(Abuse::DeepArrays);
}

#[test]
fn garbage_is_an_error_with_bounded_memory() {
    survives(Abuse::Garbage);
}

#[test]
fn a_reply_of_a_type_the_command_cannot_return_is_an_error() {
    survives(Abuse::WrongType);
}

/// One reply more than asked, now and then: the canary must never stay one reply behind.
/// Off by one on the read connections, a `GET` would get the previous `GET`'s value (another
/// key: `corrupt`) or the `+OK` (`error`); on the write connections, a `SET` would be
/// answered at once by the reply already waiting instead of after the server's
/// [`SET_DELAY`].
fn stays_in_step(same_write: bool, strict: bool) {
    let abuse = Abuse::ExtraReply { same_write };
    let what = format!("{abuse:?}");
    let server = HostileServer::start(abuse);
    let mut canary = Watched::start(&config(&server.url(), ""));
    wait_until(
        "fresh reads while the server behaves",
        Duration::from_secs(15),
        || fresh(&canary.metrics()) >= 5.0,
    );
    let before = canary.metrics();
    let fast_writes =
        |m: &Scrape| m.sum(ATTEMPT_BUCKET, &[t("h"), ("op", "write"), ("le", "0.02")]);
    assert!(
        m_has_bucket(&before),
        "no attempt bucket le=0.02 for writes:\n{}",
        before.text
    );
    let accepted_before = server.count(|s| &s.accepted);
    server.abuse(true);
    let w = watch(&mut canary, ABUSE_FOR, &what);
    server.abuse(false);
    let m = canary.metrics();
    let extras = server.count(|s| &s.extras);
    let reconnects = server.count(|s| &s.accepted) - accepted_before;
    let new_errors = errors(&m) - errors(&before);
    let new_fresh = fresh(&m) - fresh(&before);
    let new_fast = fast_writes(&m) - fast_writes(&before);
    let writes = m.sum(ATTEMPT_COUNT, &[t("h"), ("op", "write")])
        - before.sum(ATTEMPT_COUNT, &[t("h"), ("op", "write")]);
    eprintln!(
        "{what}: {extras} extra replies, {new_errors} error attempts, {new_fresh} fresh \
         reads, {new_fast} of {writes} write attempts under 20 ms, {} connections; peak RSS \
         {:.1} MiB, worst scrape {:?}",
        server.count(|s| &s.accepted),
        mib(w.peak.rss),
        w.worst_scrape,
    );
    assert!(
        extras >= 10,
        "{what}: only {extras} extra replies were sent"
    );
    // At most one failed attempt per extra reply (it may cost the connection), not every op.
    assert!(
        new_errors <= extras as f64,
        "{what}: {new_errors} error attempts for {extras} extra replies"
    );
    // Reads keep coming back fresh: about 20 a second.
    assert!(
        new_fresh >= 60.0,
        "{what}: {new_fresh} fresh reads in {ABUSE_FOR:?}"
    );
    for verdict in ["corrupt", "stale", "missing"] {
        assert_eq!(
            m.sum(READS, &[t("h"), ("verdict", verdict)]),
            0.0,
            "{what}: {verdict} reads"
        );
    }
    assert!(writes >= 60.0, "{what}: {writes} write attempts");
    // Never *stays* behind: at most one early answer per extra reply, never every write.
    assert!(
        new_fast <= extras as f64 && new_fast < writes / 2.0,
        "{what}: {new_fast} of {writes} writes were answered faster than the server answers \
         them, for {extras} extra replies: the canary stayed one reply behind"
    );
    if strict {
        // An extra reply that arrives just after the next SET went out is taken as its
        // answer (nothing in RESP tells them apart); the real answer then arrives unasked.
        // That must be noticed: the connection is replaced before it is lent out again,
        // so there is a new connection for every early answer.
        assert!(
            new_fast > 0.0 && reconnects as f64 >= new_fast,
            "{what}: {new_fast} writes were acknowledged by an extra reply that was not \
             theirs ({extras} extras sent) and only {reconnects} connections replaced them"
        );
    }
    assert_eq!(canary.get_timed("/healthz").0, 200);
    terminate(&mut canary, &what);
}

fn m_has_bucket(m: &Scrape) -> bool {
    m.count(ATTEMPT_BUCKET, &[t("h"), ("op", "write"), ("le", "0.02")]) == 1
}

#[test]
fn an_extra_reply_in_the_same_write_never_puts_the_canary_one_reply_behind() {
    stays_in_step(true, false);
}

#[test]
fn an_extra_reply_in_a_later_write_never_puts_the_canary_one_reply_behind() {
    stays_in_step(false, false);
}

/// The stricter half: an extra reply taken as the answer to the next command is noticed
/// when that command's own answer arrives unasked: the connection is dropped before it is
/// lent out again.
#[test]
fn an_extra_reply_taken_as_the_next_answer_is_noticed_when_the_real_answer_arrives() {
    stays_in_step(false, true);
}

/// A real 100 MB value over the one key the canary reads, set again and again for a while.
#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn a_real_100_mb_value_over_a_canary_key_is_an_error_with_bounded_memory() {
    let redis = RedisServer::start(&[]);
    // One key, so that every read is of the key the big value lands on; a slow rate, so
    // that the canary's own writes leave the big value in place most of the time.
    let toml = config(&redis.url(), "").replace("rate = 20\nkeys = 100", "rate = 5\nkeys = 1");
    let mut canary = Watched::start(&toml);
    wait_until(
        "fresh reads before the big value",
        Duration::from_secs(15),
        || fresh(&canary.metrics()) >= 3.0,
    );
    let before = canary.metrics();
    let stop = Arc::new(AtomicBool::new(false));
    let sets = Arc::new(AtomicU64::new(0));
    let port = redis.port;
    let setter = {
        let (stop, sets) = (stop.clone(), sets.clone());
        std::thread::spawn(move || {
            const KEY: &str = "redis-canary:test:h:0";
            const SIZE: usize = 100 * 1024 * 1024;
            let mut value =
                format!("*3\r\n$3\r\nSET\r\n${}\r\n{KEY}\r\n${SIZE}\r\n", KEY.len()).into_bytes();
            value.resize(value.len() + SIZE, b'x');
            value.extend_from_slice(b"\r\n");
            let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connecting to redis");
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reply = [0u8; 5];
            while !stop.load(Ordering::Relaxed) {
                c.write_all(&value).expect("SET of 100 MB");
                c.read_exact(&mut reply).expect("reply to the SET");
                assert_eq!(&reply, b"+OK\r\n");
                // Set again at once: the canary's own writes (5 a second) replace the big
                // value, and the reads must find it in place often enough to hit it.
                sets.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let w = watch(&mut canary, ABUSE_FOR, "100 MB value");
    stop.store(true, Ordering::Relaxed);
    setter.join().expect("the setter thread");
    let m = &w.last;
    let new_errors = errors(m) - errors(&before);
    eprintln!(
        "100 MB value: {} SETs, peak RSS {:.1} MiB over {} samples, worst scrape {:?}, \
         {new_errors} error attempts",
        sets.load(Ordering::Relaxed),
        mib(w.peak.rss),
        w.peak.samples,
        w.worst_scrape,
    );
    assert!(sets.load(Ordering::Relaxed) >= 3);
    assert!(
        new_errors >= 1.0,
        "no read of the big value failed:\n{}",
        m.text
    );
    // The canary's next write replaces the big value: reads come back fresh, memory is back.
    let from = fresh(&canary.metrics());
    wait_until(
        "fresh reads after the big value",
        Duration::from_secs(15),
        || fresh(&canary.metrics()) >= from + 3.0,
    );
    let end = canary.sample();
    assert!(
        end.rss < RSS_BOUND,
        "RSS {:.1} MiB at the end",
        mib(end.rss)
    );
    let took = terminate(&mut canary, "100 MB value");
    eprintln!(
        "100 MB value: RSS after {:.1} MiB; exit {took:?} after SIGTERM",
        mib(end.rss)
    );
}
