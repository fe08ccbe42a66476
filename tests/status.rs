//! The status page `/` and `/api/v1/status` (DESIGN §13) after real faults: a redis-server
//! killed and restarted under a running canary shows as one episode of about the outage's
//! length, in the JSON and on the page (latency chart with data points, episode table), and
//! a server's error text with markup in it comes out escaped.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn status(canary: &Canary) -> Value {
    let (code, body) = canary.get("/api/v1/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn target<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["targets"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no target {name} in {doc:#}"))
}

#[test]
#[cfg_attr(
    not(have_redis_server),
    ignore = "needs redis-server (not installed: scripts/install-deps)"
)]
fn an_outage_shows_as_one_episode_of_its_length_in_the_api_and_on_the_page() {
    let mut redis = RedisServer::start(&[]);
    let canary = Canary::start(&one_target_config("a", &redis.url(), ""));
    canary.wait_ok("a", "write", 20.0);

    let healthy = status(&canary);
    assert_eq!(healthy["schema"], 1);
    let a = target(&healthy, "a");
    assert_eq!(a["state"], "ok");
    assert_eq!(a["mode"], "standalone");
    assert_eq!(a["episodes"].as_array().unwrap().len(), 0);

    // The outage: from the kill until the restarted server answers again.
    let killed = Instant::now();
    redis.kill();
    wait_until(
        "an open episode of at least 2 s",
        Duration::from_secs(15),
        || {
            let doc = status(&canary);
            let eps = &target(&doc, "a")["episodes"];
            eps.as_array().is_some_and(|e| {
                e.len() == 1 && e[0]["open"] == true && e[0]["length_seconds"].as_f64() >= Some(2.0)
            })
        },
    );
    let disrupted = status(&canary);
    assert_eq!(target(&disrupted, "a")["state"], "disrupted");
    let restart_began = Instant::now();
    redis.start_again();
    let restarted = Instant::now();
    let ok_before = target(&disrupted, "a")["operations"]["write"]["ok"]
        .as_u64()
        .unwrap();
    wait_until(
        "the episode ended and writes succeed again",
        Duration::from_secs(15),
        || {
            let doc = status(&canary);
            let a = target(&doc, "a");
            a["state"] == "ok"
                && a["episodes"][0]["open"] == false
                && a["operations"]["write"]["ok"].as_u64() > Some(ok_before + 5)
        },
    );

    let doc = status(&canary);
    let a = target(&doc, "a");
    let eps = a["episodes"].as_array().unwrap();
    assert_eq!(eps.len(), 1, "{eps:#?}");
    let length = eps[0]["length_seconds"].as_f64().unwrap();
    let shortest = restart_began.duration_since(killed).as_secs_f64();
    let longest = restarted.duration_since(killed).as_secs_f64();
    assert!(
        length >= shortest - 0.5 && length <= longest + 3.0,
        "episode of {length:.3} s for an outage of {shortest:.3}..{longest:.3} s"
    );
    assert!(eps[0]["failures"].as_u64() > Some(0), "{:#}", eps[0]);
    assert!(
        eps[0]["results"].as_object().is_some_and(|r| !r.is_empty()),
        "{:#}",
        eps[0]
    );
    let end = eps[0]["end_unix"].as_f64().unwrap();
    let start = eps[0]["start_unix"].as_f64().unwrap();
    assert!((end - start - length).abs() < 0.01);

    // Availability over 5 min counts the failed operations; the last hour too.
    let five = a["availability"]["5m"].as_f64().unwrap();
    assert!(five > 0.0 && five < 1.0, "availability 5 min {five}");
    assert!(a["availability"]["1h"].as_f64().unwrap() < 1.0);

    // Latency points with quantiles, some marked disrupted, 10 s apart.
    let points = a["latency"]["points"].as_array().unwrap();
    let with_latency = points.iter().filter(|p| p["p99_ms"].is_number()).count();
    assert!(with_latency >= 1, "{points:#?}");
    assert!(points.iter().any(|p| p["disrupted"] == true), "{points:#?}");
    let not_ok: u64 = points
        .iter()
        .map(|p| {
            ["recovered", "failed", "skipped"]
                .iter()
                .map(|k| p[k].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert!(not_ok > 0, "{points:#?}");
    let ts: Vec<f64> = points.iter().map(|p| p["t"].as_f64().unwrap()).collect();
    assert!(
        ts.windows(2).all(|w| (w[1] - w[0] - 10.0).abs() < 1e-6),
        "{ts:?}"
    );
    let recent = a["recent"]["points"].as_array().unwrap();
    let recent_disrupted = recent.iter().filter(|p| p["disrupted"] == true).count() as f64;
    assert!(
        recent_disrupted >= shortest.floor() && recent_disrupted <= longest + 4.0,
        "{recent_disrupted} disrupted seconds for an outage of {shortest:.1}..{longest:.1} s"
    );
    assert_eq!(
        a["backends"].as_array().map(Vec::len),
        Some(2),
        "{:#}",
        a["backends"]
    );

    // The page: the episode in its table, charts with data, nothing fetched from elsewhere.
    let (code, page) = canary.get("/");
    assert_eq!(code, 200);
    assert_eq!(page.matches("<tr class=\"episode\">").count(), 1, "{page}");
    assert!(page.contains("<svg"), "{page}");
    assert!(page.contains("<polyline class=\"series\"") || page.contains("class=\"point\""));
    assert!(
        page.contains("class=\"episode-shade\""),
        "episode shaded on the chart"
    );
    assert!(
        page.contains("class=\"episode-mark\""),
        "episode on the timeline"
    );
    assert!(page.contains("availability 5 min"));
    let outside: Vec<&str> = page
        .match_indices("http")
        .map(|(i, _)| &page[i..(i + 40).min(page.len())])
        .filter(|s| s.starts_with("http://") || s.starts_with("https://"))
        .filter(|s| !s.starts_with("http://www.w3.org/2000/svg\""))
        .filter(|s| !s.starts_with("http://127.0.0.1") && !s.starts_with("http://localhost"))
        .collect();
    assert!(outside.is_empty(), "external references: {outside:?}");
    for asset in ["<link", " src=", "@import", "url("] {
        assert!(!page.contains(asset), "{asset} in the page");
    }
}

/// A server that answers every request with an error carrying markup.
struct MarkupServer {
    port: u16,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

const MARKUP: &str = "<script>alert(1)</script>";

/// The password in the target's URL, which the canary sends in its AUTH.
const SECRET: &str = "hunter2-status-secret";

impl MarkupServer {
    fn start() -> MarkupServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("bound").port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let accept = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let s = s.clone();
                        conns.push(std::thread::spawn(move || {
                            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                            let mut buf = [0u8; 4096];
                            let reply = format!("-ERR {MARKUP}\r\n");
                            while !s.load(Ordering::Relaxed) {
                                match stream.read(&mut buf) {
                                    Ok(0) => return,
                                    Ok(n) => {
                                        // One error per command (arrays start a line).
                                        let commands = (0..n)
                                            .filter(|&i| {
                                                buf[i] == b'*' && (i == 0 || buf[i - 1] == b'\n')
                                            })
                                            .count()
                                            .max(1);
                                        if stream
                                            .write_all(reply.repeat(commands).as_bytes())
                                            .is_err()
                                        {
                                            return;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            ErrorKind::WouldBlock | ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => return,
                                }
                            }
                        }));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => return,
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        MarkupServer {
            port,
            stop,
            accept: Some(accept),
        }
    }
}

impl Drop for MarkupServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
    }
}

#[test]
fn a_server_error_with_markup_is_shown_escaped_and_the_password_masked() {
    let server = MarkupServer::start();
    let canary = Canary::start(&one_target_config(
        "hostile",
        &format!("redis://:{SECRET}@127.0.0.1:{}", server.port),
        "",
    ));
    wait_until(
        "the markup error in the API",
        Duration::from_secs(15),
        || {
            let doc = status(&canary);
            target(&doc, "hostile")["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(MARKUP))
        },
    );
    let (code, page) = canary.get("/");
    assert_eq!(code, 200);
    assert!(!page.contains(MARKUP), "unescaped server text on the page");
    assert!(
        page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{page}"
    );
    // The page's own script is the refresh, nothing else.
    assert_eq!(page.matches("<script>").count(), 1);
    // The password sent to the server is masked everywhere.
    let (_, api) = canary.get("/api/v1/status");
    for text in [&page, &api] {
        assert!(!text.contains(SECRET), "{text}");
    }
    assert!(api.contains("redis://:****@127.0.0.1"), "{api}");
}
