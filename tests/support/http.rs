//! The one HTTP helper of the tests: a plain HTTP/1.1 GET client with a deadline
//! ([`http_get`]), and a recording HTTP server ([`HttpRecorder`]) that answers 200 to
//! everything and keeps every request (the OTLP receiver, the Alertmanager webhook).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any request may take before it fails the test instead of hanging it.
pub const HTTP_DEADLINE: Duration = Duration::from_secs(5);

/// A plain HTTP/1.1 GET of `path` on `127.0.0.1:port` with a 5 s deadline (connect, write
/// and every read); returns status and body (de-chunked).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> Result<(u16, String), String> {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{accept}Connection: close\r\n\r\n"),
        HTTP_DEADLINE,
    )
}

/// A plain HTTP/1.1 request of `method` (no body) to `path` on `127.0.0.1:port`, with
/// the deadline of [`http_get`] (reads may take 20 s: a reload may stop targets for a few
/// seconds before it answers); returns status and body.
pub fn http_request(port: u16, method: &str, path: &str) -> Result<(u16, String), String> {
    exchange(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        4 * HTTP_DEADLINE,
    )
}

/// Sends `request` to `127.0.0.1:port` and reads the answer to its end; status and body
/// (de-chunked).
fn exchange(port: u16, request: &str, read_timeout: Duration) -> Result<(u16, String), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, HTTP_DEADLINE).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(read_timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(HTTP_DEADLINE))
        .map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).map_err(|e| e.to_string())?;
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One request an [`HttpRecorder`] received.
#[derive(Clone, Debug)]
pub struct Request {
    /// When its body had been read.
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

impl Request {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// An HTTP/1.1 server on a loopback port from port 0: answers every request with an empty
/// 200 (keep-alive supported, Content-Length bodies) and records it. Stops accepting when
/// dropped.
pub struct HttpRecorder {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpRecorder {
    pub fn start() -> HttpRecorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("bound address").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, st) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let sink = sink.clone();
                        std::thread::spawn(move || serve(stream, sink));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => {
                        eprintln!("http recorder: accept failed, it stops: {e}");
                        break;
                    }
                }
            }
        });
        HttpRecorder {
            port,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().expect("recorder lock").clone()
    }

    /// The requests with this method and path.
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }
}

impl Drop for HttpRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one connection until the client closes it or is idle for 30 s.
fn serve(stream: TcpStream, sink: Arc<Mutex<Vec<Request>>>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("connection") {
                    close = v.trim().eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        sink.lock().expect("recorder lock").push(Request {
            at: Instant::now(),
            method,
            path,
            body,
        });
        let answer: &[u8] = if close {
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        };
        if reader.get_mut().write_all(answer).is_err() || close {
            return;
        }
    }
}
