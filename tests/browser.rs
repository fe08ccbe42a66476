//! The pages people look at (DESIGN §13), opened in a real headless Chromium driven by
//! chromedriver over W3C WebDriver (JSON over HTTP on loopback, spoken by a small client
//! here), after a real outage: a `redis-server` killed and started again.
//!
//! - the HTML report of a `soak` (`--report-html`): the episode with its length, charts with
//!   data points, no console error, no request leaving localhost;
//! - the live `/` page of a daemon: an element of class `episode` per episode and an `<svg>`
//!   chart with data points, same checks.
//!
//! Every page is screenshotted to `<target>/browser-artifacts/`, and to `docs/` when
//! `REDIS_CANARY_UPDATE_SCREENSHOTS=1` (the README shows those). Chromium gets a proxy on a
//! dead loopback port: a request for anything not on loopback would fail and be logged as
//! a console error, which fails the test.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::names::{DISRUPTED, EPISODE_COUNT, OPS, t};
use support::{
    Canary, DeadAddr, RedisServer, Scrape, http_get, one_target_config, read, spawn_canary_in,
    wait_until,
};

/// How long chromedriver may take to start and a WebDriver command to answer (a first
/// navigation starts the browser; the machine is shared by several builders).
const WEBDRIVER_DEADLINE: Duration = Duration::from_secs(60);

/// Width of the window, as a laptop screen: the charts must be readable at 1280 px.
const WINDOW_WIDTH: u64 = 1280;

/// Tallest screenshot taken: a page longer than this is cut (and the PNG stays small).
const MAX_SCREENSHOT_HEIGHT: u64 = 4000;

/// A program found on PATH (or the override `var`), like build.rs does.
fn program(var: &str, names: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for n in names {
            let p = dir.join(n);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "{} not found on PATH; scripts/install-deps installs it",
        names[0]
    );
}

/// One HTTP/1.1 request to chromedriver on loopback; the JSON body of its answer.
fn webdriver_http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, WEBDRIVER_DEADLINE).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(WEBDRIVER_DEADLINE))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(WEBDRIVER_DEADLINE))
        .map_err(|e| e.to_string())?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open after its answer whatever `Connection` says:
    // read the head, then exactly Content-Length bytes of body.
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed before the answer's head".into());
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let length: usize = String::from_utf8_lossy(&raw[..head_end])
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .ok_or("no Content-Length")?;
    while raw.len() < head_end + length {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed in the answer's body".into());
        }
        raw.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&raw[..head_end + length]);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no header end")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let v: Value = serde_json::from_str(body).map_err(|e| format!("{e}: {body}"))?;
    if status != 200 {
        return Err(format!("{method} {path}: {status} {v}"));
    }
    Ok(v["value"].clone())
}

/// Standard base64 (what WebDriver screenshots are) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A headless Chromium under chromedriver, in a session of its own: fresh profile in a temp
/// dir, every network request outside loopback sent to a dead proxy. Drop ends the session
/// (Chromium exits) and kills chromedriver's whole process group.
struct Browser {
    port: u16,
    session: String,
    driver: Option<Child>,
    dir: tempfile::TempDir,
    /// Keeps the proxy port closed and unused for the session's life.
    _dead_proxy: DeadAddr,
}

impl Browser {
    fn start() -> Browser {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("chromedriver.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        // Port 0: chromedriver binds a free port and prints it.
        let mut driver = Command::new(program("CHROMEDRIVER_BIN", &["chromedriver"]))
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own process group: Drop kills Chromium with it if the session is stuck.
            .process_group(0)
            .spawn()
            .expect("starting chromedriver; scripts/install-deps installs chromium-driver");
        let deadline = Instant::now() + WEBDRIVER_DEADLINE;
        let port = loop {
            let text = read(&log);
            if let Some(port) = text
                .split("was started successfully on port ")
                .nth(1)
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|p| p.parse::<u16>().ok())
            {
                break port;
            }
            if let Ok(Some(status)) = driver.try_wait() {
                panic!("chromedriver exited with {status}:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver did not start in {WEBDRIVER_DEADLINE:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let dead_proxy = DeadAddr::new();
        let profile = dir.path().join("profile");
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={WINDOW_WIDTH},900"),
            format!("--user-data-dir={}", profile.display()),
            // Anything not on loopback goes to a closed port and fails loudly.
            format!("--proxy-server=http://127.0.0.1:{}", dead_proxy.port()),
        ];
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": program("CHROMIUM_BIN", &["chromium", "chromium-browser"]),
                    "args": args,
                },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let mut browser = Browser {
            port,
            session: String::new(),
            driver: Some(driver),
            dir,
            _dead_proxy: dead_proxy,
        };
        let created = webdriver_http(port, "POST", "/session", Some(&caps))
            .unwrap_or_else(|e| panic!("new session: {e}\n{}", read(&log)));
        browser.session = created["sessionId"]
            .as_str()
            .expect("a session id")
            .to_string();
        browser
    }

    /// A command of the session (`path` after `/session/{id}`).
    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let full = format!("/session/{}{path}", self.session);
        webdriver_http(self.port, method, &full, body)
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"))
    }

    /// Opens `url` and waits for the document to load.
    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Runs `script` (a function body; `return` gives the result) in the page.
    fn eval(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": [] })),
        )
    }

    /// Console messages of level SEVERE (errors, failed loads) since the last call.
    fn console_errors(&self) -> Vec<String> {
        let entries = self.cmd("POST", "/se/log", Some(&json!({ "type": "browser" })));
        entries
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// URLs of every resource the page loaded that is not on loopback, `file:` or `data:`.
    fn non_local_requests(&self) -> Vec<String> {
        let all = self.eval(
            "return [location.href].concat(performance.getEntriesByType('resource').map(e => e.name));",
        );
        all.as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|u| u.as_str().map(str::to_string))
            .filter(|u| {
                !(u.starts_with("file:")
                    || u.starts_with("data:")
                    || u.starts_with("http://127.0.0.1:")
                    || u.starts_with("http://localhost:"))
            })
            .collect()
    }

    /// A PNG of the whole page (up to [`MAX_SCREENSHOT_HEIGHT`]) in
    /// `<target>/browser-artifacts/<name>`, and in `docs/<name>` when
    /// `REDIS_CANARY_UPDATE_SCREENSHOTS=1`; returns the artifact's path.
    fn screenshot(&self, name: &str) -> PathBuf {
        let height = self
            .eval("return document.documentElement.scrollHeight;")
            .as_u64()
            .unwrap_or(900)
            .clamp(600, MAX_SCREENSHOT_HEIGHT);
        self.cmd(
            "POST",
            "/window/rect",
            Some(&json!({ "width": WINDOW_WIDTH, "height": height })),
        );
        let png = base64_decode(self.cmd("GET", "/screenshot", None).as_str().unwrap_or(""));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("the target dir")
            .join("browser-artifacts");
        std::fs::create_dir_all(&dir).expect("artifact dir");
        let path = dir.join(name);
        std::fs::write(&path, &png).expect("writing the screenshot");
        if std::env::var("REDIS_CANARY_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
            let docs = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("docs")
                .join(name);
            std::fs::write(&docs, &png).expect("writing the screenshot to docs/");
            println!("updated {}", docs.display());
        }
        println!("screenshot: {} ({} bytes)", path.display(), png.len());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let path = format!("/session/{}", self.session);
            let _ = webdriver_http(self.port, "DELETE", &path, None);
        }
        if let Some(mut d) = self.driver.take() {
            if std::thread::panicking() {
                eprintln!(
                    "--- chromedriver log ---\n{}",
                    support::tail(&self.dir.path().join("chromedriver.log"), 40)
                );
            }
            // The whole group: chromedriver and any Chromium left behind.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", d.id())])
                .status();
            let _ = d.wait();
        }
    }
}

/// Counts of what the charts of the page draw: polyline points, lone points, bar rects
/// (one `M` per rect in a layer path), shaded episodes, and SVG elements whose rendered box
/// is at least 300 px wide.
fn chart_counts(b: &Browser) -> Value {
    b.eval(
        "const q = s => Array.from(document.querySelectorAll(s));
         return {
           svgs: q('svg').length,
           wide_svgs: q('svg').filter(s => s.getBoundingClientRect().width >= 300).length,
           line_points: q('svg polyline').reduce((n, p) => n + p.points.numberOfItems, 0),
           circles: q('svg circle').length,
           bars: q('svg path.layer').reduce((n, p) => n + (p.getAttribute('d').match(/M/g) || []).length, 0),
           failed_bars: q('svg path.layer').filter(p => p.textContent === 'failed')
               .reduce((n, p) => n + (p.getAttribute('d').match(/M/g) || []).length, 0),
           shades: q('svg .episode-shade, svg .episode-mark')
               .filter(r => r.getBoundingClientRect().width > 0).length,
         };",
    )
}

/// Starts `redis-server`, waits for the canary to see it, kills it until `outage_seen`
/// says the canary noticed, then starts it again on the same port and waits until
/// `recovered` holds.
fn outage(server: &mut RedisServer, outage_seen: impl Fn() -> bool, recovered: impl Fn() -> bool) {
    server.kill();
    wait_until(
        "the canary to see the outage",
        Duration::from_secs(20),
        outage_seen,
    );
    server.start_again();
    wait_until("the canary to recover", Duration::from_secs(20), recovered);
}

fn scrape(port: u16) -> Scrape {
    let (status, body) = http_get(port, "/metrics", None).expect("scraping the canary");
    assert_eq!(status, 200);
    Scrape::parse(&body)
}

#[test]
#[cfg_attr(not(have_redis_server), ignore = "redis-server not installed")]
#[cfg_attr(not(have_chromium), ignore = "chromium not installed")]
#[cfg_attr(not(have_chromedriver), ignore = "chromedriver not installed")]
fn the_html_report_of_a_soak_with_an_outage_shows_the_episode_and_charts_in_a_browser() {
    let mut server = RedisServer::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let json_path = dir.path().join("report.json");
    let html_path = dir.path().join("report.html");
    // Long enough for the outage below on a loaded machine: the canary must still be up
    // while the test watches the recovery (12 s was not, once, in a full CI run).
    let soak_length = Duration::from_secs(25);
    let p = spawn_canary_in(
        dir,
        &["soak"],
        &one_target_config("cache", &server.url(), ""),
        &[
            "--duration",
            &format!("{}ms", soak_length.as_millis()),
            "--report",
            json_path.to_str().unwrap(),
            "--report-html",
            html_path.to_str().unwrap(),
        ],
        &[],
    );
    let (port, mut child, dir) = (p.addr.port(), p.child, p.dir);
    let ok = |m: &Scrape| m.sum(OPS, &[t("cache"), ("outcome", "ok")]);
    wait_until("20 ok operations", Duration::from_secs(10), || {
        ok(&scrape(port)) >= 20.0
    });
    let before_restart = std::cell::Cell::new(0.0);
    outage(
        &mut server,
        || {
            let m = scrape(port);
            before_restart.set(ok(&m));
            m.sum(DISRUPTED, &[t("cache")]) == 1.0
                && m.sum(OPS, &[t("cache"), ("outcome", "failed")]) >= 3.0
        },
        || {
            let m = scrape(port);
            m.sum(EPISODE_COUNT, &[t("cache")]) >= 1.0 && ok(&m) >= before_restart.get() + 10.0
        },
    );
    // The soak ends by itself; generous slack for a loaded machine.
    let deadline = Instant::now() + soak_length + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for the soak") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the soak did not end:\n{}",
                read(&dir.path().join("canary.log"))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // An outage fails max_disruption (0 by default): exit 1, and both reports written.
    assert_eq!(
        status.code(),
        Some(1),
        "{}",
        read(&dir.path().join("canary.log"))
    );
    let report: Value = serde_json::from_str(&read(&json_path)).expect("the JSON report");
    let episodes = report["targets"][0]["episodes"]
        .as_array()
        .expect("episodes");
    assert_eq!(episodes.len(), 1, "one outage, one episode: {episodes:?}");
    let length = episodes[0]["duration_seconds"].as_f64().expect("a length");
    let length_text = format!("{length:.3} s");

    let b = Browser::start();
    b.goto(&format!("file://{}", html_path.display()));
    let page = b.eval(
        "return {
           verdict: document.getElementById('verdict').textContent,
           episodes: Array.from(document.querySelectorAll('tr.episode'))
               .map(r => r.querySelector('.length').textContent),
           first_svg_top: document.querySelector('svg').getBoundingClientRect().top,
           slo_top: document.getElementById('slo').getBoundingClientRect().top,
           failed_slos: Array.from(document.querySelectorAll('tr.slo.violated')).map(r => r.cells[1].textContent),
         };",
    );
    let charts = chart_counts(&b);
    println!("outage episode {length_text}; page {page}; charts {charts}");
    assert_eq!(page["verdict"], "FAIL");
    assert_eq!(
        page["episodes"],
        json!([length_text]),
        "the episode row shows its length"
    );
    assert!(
        page["slo_top"].as_f64() < page["first_svg_top"].as_f64(),
        "SLOs before charts"
    );
    assert!(
        page["failed_slos"]
            .as_array()
            .unwrap()
            .contains(&json!("max_disruption"))
    );
    // Four charts, all drawn at a readable width, with data: a latency point (p50, p99,
    // max) per second with operations (the 12 s run has at least 4 such seconds however
    // long the outage took on a loaded machine), bars of ok and failed operations, and the
    // episode shaded on every chart.
    assert_eq!(charts["svgs"], 4);
    assert_eq!(charts["wide_svgs"], 4);
    let points = charts["line_points"].as_u64().unwrap() + charts["circles"].as_u64().unwrap();
    assert!(points >= 3 * 4, "{charts}");
    assert!(charts["bars"].as_u64().unwrap() >= 8, "{charts}");
    assert!(charts["failed_bars"].as_u64().unwrap() >= 1, "{charts}");
    assert_eq!(charts["shades"], 4, "{charts}");
    assert_eq!(b.console_errors(), Vec::<String>::new());
    assert_eq!(b.non_local_requests(), Vec::<String>::new());
    b.screenshot("soak-report.png");
}

#[test]
#[cfg_attr(not(have_redis_server), ignore = "redis-server not installed")]
#[cfg_attr(not(have_chromium), ignore = "chromium not installed")]
#[cfg_attr(not(have_chromedriver), ignore = "chromedriver not installed")]
fn the_live_page_after_an_outage_shows_the_episode_and_a_chart_in_a_browser() {
    let mut server = RedisServer::start(&[]);
    let canary = Canary::start(&one_target_config("cache", &server.url(), ""));
    canary.wait_ok("cache", "write", 20.0);
    outage(
        &mut server,
        || canary.metrics().sum(DISRUPTED, &[t("cache")]) == 1.0,
        || {
            let m = canary.metrics();
            m.sum(EPISODE_COUNT, &[t("cache")]) >= 1.0 && m.sum(DISRUPTED, &[t("cache")]) == 0.0
        },
    );
    // A few seconds of good operations after the outage, so the chart has them too.
    let writes = canary
        .metrics()
        .sum(OPS, &[t("cache"), ("op", "write"), ("outcome", "ok")]);
    canary.wait_ok("cache", "write", writes + 20.0);

    let b = Browser::start();
    b.goto(&format!("http://127.0.0.1:{}/", canary.port));
    let episodes =
        b.eval("return Array.from(document.querySelectorAll('tr.episode')).map(e => e.querySelector('.length').textContent);");
    let charts = chart_counts(&b);
    println!("episodes {episodes}; charts {charts}");
    let episodes = episodes.as_array().cloned().unwrap_or_default();
    assert_eq!(
        episodes.len(),
        1,
        "one element of class episode per episode"
    );
    // Its length is on it, as the API gives it ("53.3 ms", "2.1 s", ...).
    let text = episodes[0].as_str().unwrap_or_default();
    let (_, api) = canary.get("/api/v1/status");
    let api: Value = serde_json::from_str(&api).expect("JSON");
    let length = api["targets"][0]["episodes"][0]["length_seconds"]
        .as_f64()
        .expect("the episode's length in the API");
    let shown = text
        .split_whitespace()
        .zip(text.split_whitespace().skip(1))
        .find_map(|(n, unit)| {
            let n: f64 = n
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()?;
            let scale = match unit.trim_end_matches(|c: char| !c.is_alphabetic()) {
                u if u.starts_with("ms") => 1e-3,
                u if u.starts_with("min") => 60.0,
                u if u.starts_with('s') => 1.0,
                u if u.starts_with('h') => 3600.0,
                _ => return None,
            };
            Some(n * scale)
        })
        .unwrap_or_else(|| panic!("no length in {text:?}"));
    assert!(
        (shown - length).abs() <= 0.01 * length + 0.001,
        "shown {shown} s vs the API's {length} s in {text:?}"
    );
    assert!(charts["svgs"].as_u64().unwrap() >= 1, "{charts}");
    let points = charts["line_points"].as_u64().unwrap()
        + charts["circles"].as_u64().unwrap()
        + charts["bars"].as_u64().unwrap();
    assert!(points >= 5, "the chart has data points: {charts}");
    assert_eq!(b.console_errors(), Vec::<String>::new());
    assert_eq!(b.non_local_requests(), Vec::<String>::new());
    b.screenshot("status-page.png");
}
