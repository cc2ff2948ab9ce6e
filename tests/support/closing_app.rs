//! An app instance that closes its keep-alive connections as app servers do (an idle timeout,
//! a restart of a worker), on raw sockets in threads of its own: it can close a connection
//! while the test's Tokio runtime is blocked, before unstick's side has noticed.
//!
//! Cookie `sid` (the user name). `POST /login?user=U`; `GET /whoami` (`{"user"}`);
//! `GET /echo` (`{"headers": {"x-auth-user": [..]}}`); `GET /healthz`. Every answer has a
//! `Content-Length` and no `Connection: close`: the connection looks reusable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// When the app closes a connection it has answered on.
#[derive(Debug, Clone, Copy)]
pub enum KeepAlive {
    /// Only when the test calls [`ClosingApp::close_idle_connections`].
    UntilClosed,
    /// After this long without a request (Node's `keepAliveTimeout`, gunicorn's `--keep-alive`).
    IdleTimeout(Duration),
}

pub struct ClosingApp {
    pub address: SocketAddr,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    open: Mutex<Vec<TcpStream>>,
    connections: AtomicUsize,
    stopped: AtomicBool,
}

impl ClosingApp {
    pub fn start(keep_alive: KeepAlive) -> ClosingApp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                if let Ok(copy) = stream.try_clone() {
                    shared.open.lock().unwrap().push(copy);
                }
                std::thread::spawn(move || serve(stream, keep_alive));
            }
        });
        ClosingApp { address, state }
    }

    /// Closes every connection (a FIN to unstick) and returns once the kernel has sent it. Call
    /// it between requests: the connections are idle in unstick's pool.
    pub fn close_idle_connections(&self) {
        for stream in self.state.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ClosingApp {
    fn drop(&mut self) {
        self.state.stopped.store(true, Ordering::SeqCst);
        self.close_idle_connections();
        // Wakes the accept loop so that it sees `stopped`.
        let _ = TcpStream::connect(self.address);
    }
}

/// Answers requests on one connection until the peer or the app closes it.
fn serve(stream: TcpStream, keep_alive: KeepAlive) {
    if let KeepAlive::IdleTimeout(idle) = keep_alive {
        let _ = stream.set_read_timeout(Some(idle));
    }
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    // A read timeout (idle) or EOF ends the connection.
    while let Some(request) = read_request(&mut reader) {
        let answer = answer(&request);
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

struct RawRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl RawRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<RawRequest> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let request = RawRequest {
        method,
        target,
        headers,
    };
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(request)
}

fn answer(request: &RawRequest) -> String {
    let (path, query) = request
        .target
        .split_once('?')
        .unwrap_or((&request.target, ""));
    let sid = request.header("cookie").and_then(|cookies| {
        cookies
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == "sid")
            .map(|(_, value)| value.to_string())
    });
    match (request.method.as_str(), path) {
        ("POST", "/login") => {
            let user = query.strip_prefix("user=").unwrap_or("nobody");
            let body = serde_json::json!({ "user": user }).to_string();
            response(
                "200 OK",
                &format!("Set-Cookie: sid={user}; Path=/\r\n"),
                &body,
            )
        }
        ("GET", "/whoami") => response(
            "200 OK",
            "",
            &serde_json::json!({ "user": sid }).to_string(),
        ),
        ("GET", "/echo") => {
            let user: Vec<&str> = request.header("x-auth-user").into_iter().collect();
            let body = serde_json::json!({ "headers": { "x-auth-user": user } });
            response("200 OK", "", &body.to_string())
        }
        ("GET", "/healthz") => response("200 OK", "", "ok"),
        _ => response("404 Not Found", "", "not found"),
    }
}

fn response(status: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}
