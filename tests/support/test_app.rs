//! An app instance for the tests that need more than the legacy app: it echoes the headers it
//! receives, streams large bodies both ways, speaks WebSocket, answers slowly on demand and can
//! send its login identity in a response header.
//!
//! Cookie `sid`. `POST /login?user=U` sets it (and `X-Unstick-Identity`); `GET /whoami`;
//! `GET /account` (an HTML page, "Logged in as …" with roles and email, as PHP apps have);
//! `GET /echo`; `POST /upload` -> `{"bytes": n}`; `POST /answer-early` answers at once and reads
//! the body after (as Node does when a handler ends before the body); `GET /download?bytes=N`; `GET /ws` (echo;
//! the 101 carries the `X-Auth-User` it received as `X-Echo-User`);
//! `GET /slow?ms=N`; paths are routed leniently (`/logout;jsessionid=x`, `//logout/` are
//! `/logout`); `POST /password-changed` answers with `X-Unstick-Logout-All`;
//! `POST /login-keep?user=U` logs in under the request's own id, setting no cookie;
//! `POST /logout`; `POST /signout` (a logout announced with `X-Unstick-Logout`);
//! `POST /elevate` gives the session the `admin` role under a new id, as apps rotate their
//! session id on a privilege change (session-fixation protection); `GET /page` sends the
//! request's `sid` back in a new `Set-Cookie` (a new anonymous id without one), as apps with
//! rolling or re-encrypted cookies do on every response. With `?hold=1`, `POST /elevate` waits
//! before it does anything, and `GET /whoami` once it has read the session, until the test
//! lets the request go ([`TestApp::release_held`]): a request under way.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

type Body = BoxBody<Bytes, Infallible>;

pub struct TestApp {
    pub address: SocketAddr,
    task: JoinHandle<()>,
    state: Arc<State>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct State {
    sessions: Mutex<HashMap<String, String>>,
    /// Sessions with the `admin` role.
    elevated: Mutex<std::collections::HashSet<String>>,
    counter: Mutex<u64>,
    whoami_calls: std::sync::atomic::AtomicU64,
    account_calls: std::sync::atomic::AtomicU64,
    /// Requests that arrived with `?hold=1`, and what lets each one go on.
    held: std::sync::atomic::AtomicU64,
    release_held: tokio::sync::Notify,
}

impl TestApp {
    pub async fn start() -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        TestApp {
            address,
            task,
            state: shared,
        }
    }

    /// How many `GET /account` pages this instance has served.
    pub fn account_calls(&self) -> u64 {
        self.state
            .account_calls
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `count` requests with `?hold=1` have been held in all.
    pub async fn until_held(&self, count: u64) {
        for _ in 0..500 {
            if self.state.held.load(std::sync::atomic::Ordering::SeqCst) >= count {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{count} requests with ?hold=1 did not reach the app within 10 s");
    }

    /// Lets the request held longest go on.
    pub fn release_held(&self) {
        self.state.release_held.notify_one();
    }

    /// Lets the request held last go on.
    pub fn release_newest_held(&self) {
        self.state.release_held.notify_last();
    }

    /// How many `GET /whoami` requests this instance has answered.
    pub fn whoami_calls(&self) -> u64 {
        self.state
            .whoami_calls
            .load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response
}

fn json(value: serde_json::Value) -> Response<Body> {
    let mut response = full(StatusCode::OK, value.to_string());
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn query(request: &Request<Incoming>) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn session_id(request: &Request<Incoming>) -> Option<String> {
    let cookies = request.headers().get("cookie")?.to_str().ok()?;
    let id = cookies
        .split(';')
        .filter_map(|p| p.trim().split_once('='))
        .find(|(n, _)| *n == "sid")?
        .1;
    Some(id.to_string())
}

fn session_user(state: &State, request: &Request<Incoming>) -> Option<String> {
    state
        .sessions
        .lock()
        .unwrap()
        .get(&session_id(request)?)
        .cloned()
}

fn session_is_elevated(state: &State, request: &Request<Incoming>) -> bool {
    session_id(request).is_some_and(|id| state.elevated.lock().unwrap().contains(&id))
}

fn new_session_id(state: &State) -> String {
    let mut counter = state.counter.lock().unwrap();
    *counter += 1;
    format!("t{}x{:016x}", *counter, rand_u64())
}

/// The path as a lenient app server routes it: Tomcat cuts `;jsessionid=...`, and many merge
/// `//`, drop a trailing `/` and decode `%6C`.
fn routed(path: &str) -> String {
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let segments: Vec<&str> = decoded
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or_default())
        .filter(|segment| !segment.is_empty())
        .collect();
    format!("/{}", segments.join("/"))
}

/// With `?hold=1`, waits for the test to let the request go.
async fn hold_if_asked(state: &State, query: &HashMap<String, String>) {
    if !query.contains_key("hold") {
        return;
    }
    let released = state.release_held.notified();
    tokio::pin!(released);
    // Waiting before it counts: a release right after the count is never lost.
    released.as_mut().enable();
    state.held.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    released.await;
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Body> {
    let query = query(&request);
    let path = routed(request.uri().path());
    match (request.method().as_str(), path.as_str()) {
        ("GET", "/echo") => {
            let mut headers: HashMap<String, Vec<String>> = HashMap::new();
            for (name, value) in request.headers() {
                headers
                    .entry(name.as_str().to_string())
                    .or_default()
                    .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
            }
            json(serde_json::json!({ "headers": headers, "path": request.uri().path() }))
        }
        ("POST", "/login") => {
            let user = query.get("user").cloned().unwrap_or_default();
            let id = new_session_id(state);
            state
                .sessions
                .lock()
                .unwrap()
                .insert(id.clone(), user.clone());
            let mut response = json(serde_json::json!({ "user": user }));
            let mut cookie = format!("sid={id}; Path=/; HttpOnly");
            if let Some(max_age) = query.get("max_age") {
                cookie.push_str(&format!("; Max-Age={max_age}"));
            }
            response
                .headers_mut()
                .insert("set-cookie", cookie.parse().unwrap());
            let identity = serde_json::json!({ "user": user, "roles": ["member"], "email": format!("{user}@example.test") });
            response
                .headers_mut()
                .insert("x-unstick-identity", identity.to_string().parse().unwrap());
            response
        }
        ("POST", "/password-changed") => {
            // The app asks unstick to end every session of this user.
            let mut response = json(serde_json::json!({ "changed": true }));
            response
                .headers_mut()
                .insert("x-unstick-logout-all", "1".parse().unwrap());
            response
        }
        ("POST", "/logout") => {
            if let Some(id) = session_id(&request) {
                state.sessions.lock().unwrap().remove(&id);
            }
            let mut response = json(serde_json::json!({ "user": null }));
            response
                .headers_mut()
                .insert("set-cookie", "sid=; Path=/; Max-Age=0".parse().unwrap());
            response
        }
        ("POST", "/signout") => {
            // A logout on a path unstick does not know, announced with the logout header.
            if let Some(id) = session_id(&request) {
                state.sessions.lock().unwrap().remove(&id);
            }
            let mut response = json(serde_json::json!({ "user": null }));
            response
                .headers_mut()
                .insert("x-unstick-logout", "1".parse().unwrap());
            response
        }
        ("POST", "/elevate") => {
            hold_if_asked(state, &query).await;
            let Some(old) = session_id(&request) else {
                return full(StatusCode::UNAUTHORIZED, "no session");
            };
            let Some(user) = state.sessions.lock().unwrap().remove(&old) else {
                return full(StatusCode::UNAUTHORIZED, "no session");
            };
            let id = new_session_id(state);
            state.sessions.lock().unwrap().insert(id.clone(), user);
            state.elevated.lock().unwrap().insert(id.clone());
            let mut response = json(serde_json::json!({ "elevated": true }));
            response
                .headers_mut()
                .insert("set-cookie", format!("sid={id}; Path=/").parse().unwrap());
            response
        }
        ("POST", "/login-keep") => {
            // A login that keeps the visitor's session id and sends no cookie (PHP without
            // session_regenerate_id).
            let Some(id) = session_id(&request) else {
                return full(StatusCode::BAD_REQUEST, "no session");
            };
            let user = query.get("user").cloned().unwrap_or_default();
            state.sessions.lock().unwrap().insert(id, user.clone());
            json(serde_json::json!({ "user": user }))
        }
        ("GET", "/page") => {
            let id = session_id(&request).unwrap_or_else(|| new_session_id(state));
            let mut response = json(serde_json::json!({ "page": true }));
            response.headers_mut().insert(
                "set-cookie",
                format!("sid={id}; Path=/; Max-Age=3600").parse().unwrap(),
            );
            response
        }
        ("GET", "/whoami") => {
            state
                .whoami_calls
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let user = session_user(state, &request);
            hold_if_asked(state, &query).await;
            let roles = if session_is_elevated(state, &request) {
                vec!["member", "admin"]
            } else {
                vec!["member"]
            };
            json(
                serde_json::json!({ "user": user, "roles": roles, "email": user.as_ref().map(|u| format!("{u}@example.test")) }),
            )
        }
        ("GET", "/account") => {
            state
                .account_calls
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = match session_user(state, &request) {
                Some(user) => {
                    let roles = if session_is_elevated(state, &request) {
                        "<li>member</li><li>admin</li>"
                    } else {
                        "<li>member</li>"
                    };
                    format!(
                        "<header>Logged in as <b id=user>\n  {user}\n</b>\
                         <ul class=roles>{roles}</ul>\
                         <a class=email href='mailto:{user}@example.test'>{user}@example.test</a></header>"
                    )
                }
                None => "<header>Not logged in. <span id=user></span>\
                         <a href=/login>Log in</a></header>"
                    .to_string(),
            };
            let mut response = full(
                StatusCode::OK,
                format!("<!doctype html><title>Account</title><body>{body}</body>"),
            );
            response
                .headers_mut()
                .insert("content-type", "text/html; charset=utf-8".parse().unwrap());
            response
        }
        ("POST", "/upload") => {
            let mut body = request.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => bytes += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return full(StatusCode::BAD_REQUEST, "broken upload"),
                }
            }
            json(serde_json::json!({ "bytes": bytes }))
        }
        ("POST", "/answer-early") => {
            let mut body = request.into_body();
            tokio::spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
            json(serde_json::json!({ "early": true }))
        }
        ("GET", "/download") => {
            let total: u64 = query.get("bytes").and_then(|b| b.parse().ok()).unwrap_or(0);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::unfold(total, move |left| {
                let chunk = chunk.clone();
                async move {
                    if left == 0 {
                        return None;
                    }
                    let n = left.min(chunk.len() as u64);
                    Some((
                        Ok::<_, Infallible>(Frame::data(chunk.slice(..n as usize))),
                        left - n,
                    ))
                }
            });
            Response::new(BodyExt::boxed(StreamBody::new(stream)))
        }
        ("GET", "/slow") => {
            let ms: u64 = query.get("ms").and_then(|b| b.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            full(StatusCode::OK, "slow answer")
        }
        ("GET", "/ws") => websocket_echo(request),
        _ => full(StatusCode::NOT_FOUND, "not found"),
    }
}

fn websocket_echo(mut request: Request<Incoming>) -> Response<Body> {
    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return full(StatusCode::BAD_REQUEST, "not a websocket handshake");
    };
    let user = request.headers().get("x-auth-user").cloned();
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(message)) = socket.next().await {
            if message.is_close() {
                break;
            }
            if socket.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut response = full(StatusCode::SWITCHING_PROTOCOLS, "");
    let headers = response.headers_mut();
    headers.insert("upgrade", "websocket".parse().unwrap());
    headers.insert("connection", "Upgrade".parse().unwrap());
    headers.insert(
        "sec-websocket-accept",
        derive_accept_key(key.as_bytes()).parse().unwrap(),
    );
    // Tells the client which identity header the handshake arrived with.
    if let Some(user) = user {
        headers.insert("x-echo-user", user);
    }
    response
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}
