//! The bundled "legacy" app: keeps logins in its own process memory, exactly the kind of app
//! unstick is for. It trusts the identity header only when its own session is empty, which is
//! how an app is configured for header auth during a migration.
//!
//! `POST /login` (form `user`, optional `remember`), `POST /logout`, `GET /me` (JSON
//! `{"user", "instance"}`), `GET /` (the page, see [`super::page`]), `GET /healthz`.

use super::page::{self, DemoTour, KnownFrom, PageFacts, SessionMemory};
use crate::body::{self, Body};
use crate::config::IdFormat;
use crate::session::cookie::parse_session_cookie;
use http::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::HeaderValue;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::distributions::{Alphanumeric, DistString};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// What `encodeURIComponent` leaves alone (express-session encodes cookie values with it).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// "Remember me" cookies last this long.
const REMEMBER_SECONDS: u64 = 30 * 24 * 3600;

#[derive(Debug, Clone)]
pub struct LegacyAppConfig {
    /// Shown as `instance` in answers.
    pub name: String,
    pub cookie_name: String,
    /// Sign cookies as express-session does (`s:<id>.<sig>`), with this secret.
    pub signing_secret: Option<String>,
    /// The header it trusts for identity when it has no session of its own.
    pub identity_header: String,
    /// What it does with a session cookie it does not hold (after a restart, or one set by
    /// another instance).
    pub unknown_session: UnknownSession,
    /// In the demo: the setup the page explains, this instance's memory among the others.
    pub tour: Option<Arc<DemoTour>>,
}

/// How an app treats a session cookie whose id it does not hold: frameworks' housekeeping,
/// which must not log anyone out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownSession {
    /// Leave the cookie alone.
    #[default]
    Ignore,
    /// Delete it, as Django's `SessionMiddleware` does (`Max-Age=0`).
    Clear,
    /// Start a new empty session and send its id, as Rails does.
    Reissue,
}

impl LegacyAppConfig {
    pub fn new(name: &str) -> LegacyAppConfig {
        LegacyAppConfig {
            name: name.to_string(),
            cookie_name: "demo.sid".to_string(),
            signing_secret: None,
            identity_header: crate::config::defaults::USER_HEADER.to_string(),
            unknown_session: UnknownSession::Ignore,
            tour: None,
        }
    }
}

struct AppState {
    config: LegacyAppConfig,
    /// Session id -> user (`None`: a session without a login): lost when the process (or this
    /// instance) stops.
    sessions: SessionMemory,
}

/// A running instance. Dropping it (or [`LegacyApp::stop`]) closes the listener and every open
/// connection, like a process exit: its sessions are gone.
pub struct LegacyApp {
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl LegacyApp {
    pub async fn start(
        listener: TcpListener,
        config: LegacyAppConfig,
    ) -> std::io::Result<LegacyApp> {
        let address = listener.local_addr()?;
        // In the demo the tour holds every instance's memory, so each page can show them all.
        let sessions = config
            .tour
            .as_ref()
            .and_then(|tour| tour.instances.iter().find(|i| i.name == config.name))
            .map_or_else(SessionMemory::default, |i| i.memory.clone());
        let state = Arc::new(AppState { config, sessions });
        let task = tokio::spawn(accept_loop(listener, state));
        Ok(LegacyApp { address, task })
    }

    pub async fn stop(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for LegacyApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<AppState>) {
    // Connections live in this set so that aborting the app closes them too.
    let mut connections = JoinSet::new();
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
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

async fn handle(state: &AppState, request: Request<Incoming>) -> Response<Body> {
    let carried_unknown_session = state.carries_unknown_session(request.headers());
    let mut response = route(state, request).await;
    if carried_unknown_session && !response.headers().contains_key(SET_COOKIE) {
        let name = &state.config.cookie_name;
        let cookie = match state.config.unknown_session {
            UnknownSession::Ignore => None,
            UnknownSession::Clear => Some(format!(
                "{name}=\"\"; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0; Path=/; SameSite=Lax"
            )),
            UnknownSession::Reissue => {
                let id = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
                state.sessions_lock().insert(id.clone(), None);
                state
                    .cookie_value(&id)
                    .map(|value| format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax"))
            }
        };
        if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(SET_COOKIE, value);
        }
    }
    response
}

async fn route(state: &AppState, request: Request<Incoming>) -> Response<Body> {
    let wants_html = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/me") => {
            let user = state.current_user(request.headers());
            state.me(user.as_deref())
        }
        (&Method::GET, "/") => state.page(request.headers()),
        (&Method::POST, "/login") => {
            let form = match read_form(request).await {
                Ok(form) => form,
                Err(status) => return text(status, "bad form\n"),
            };
            let Some(user) = form.get("user").map(|u| u.trim()).filter(|u| !u.is_empty()) else {
                return text(StatusCode::BAD_REQUEST, "form field `user` is required\n");
            };
            let id = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
            state
                .sessions_lock()
                .insert(id.clone(), Some(user.to_string()));
            let Some(value) = state.cookie_value(&id) else {
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot sign the cookie\n",
                );
            };
            let mut cookie = format!(
                "{}={value}; Path=/; HttpOnly; SameSite=Lax",
                state.config.cookie_name
            );
            if form.contains_key("remember") {
                cookie.push_str(&format!("; Max-Age={REMEMBER_SECONDS}"));
            }
            state.after_form(wants_html, Some(user), cookie)
        }
        (&Method::POST, "/logout") => {
            if let Some(id) = state.own_session_id(request.headers()) {
                state.sessions_lock().remove(&id);
            }
            let cookie = format!("{}=; Path=/; Max-Age=0", state.config.cookie_name);
            state.after_form(wants_html, None, cookie)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

impl AppState {
    fn sessions_lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cookie value for a session id: the id, or signed as express-session does.
    fn cookie_value(&self, id: &str) -> Option<String> {
        match &self.config.signing_secret {
            Some(secret) => {
                let signed = express_cookie::sign(id, secret)?;
                Some(utf8_percent_encode(&signed, URI_COMPONENT).to_string())
            }
            None => Some(id.to_string()),
        }
    }

    /// The session id a cookie value carries: itself, or the id signed with this app's secret.
    fn session_id_in(&self, value: &str) -> Option<String> {
        if value.is_empty() || value.len() > 4096 {
            return None;
        }
        match &self.config.signing_secret {
            Some(secret) => express_cookie::verify(value, secret),
            None => Some(value.to_string()),
        }
    }

    /// The session id in the request's cookie that this instance knows.
    fn own_session_id(&self, headers: &HeaderMap) -> Option<String> {
        let sessions = self.sessions_lock();
        request_cookies(headers, &self.config.cookie_name)
            .filter_map(|value| self.session_id_in(value))
            .find(|id| sessions.contains_key(id))
    }

    /// Whether the request carries the session cookie, but with no id this instance holds.
    fn carries_unknown_session(&self, headers: &HeaderMap) -> bool {
        request_cookies(headers, &self.config.cookie_name)
            .next()
            .is_some()
            && self.own_session_id(headers).is_none()
    }

    /// Its own login first; only without one does it trust the identity header.
    fn current_user(&self, headers: &HeaderMap) -> Option<String> {
        let own = self
            .own_session_id(headers)
            .and_then(|id| self.sessions_lock().get(&id).cloned().flatten());
        if own.is_some() {
            return own;
        }
        headers
            .get(self.config.identity_header.as_str())
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    }

    fn me(&self, user: Option<&str>) -> Response<Body> {
        let doc = serde_json::json!({ "user": user, "instance": self.config.name });
        let mut response = Response::new(body::full(doc.to_string()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }

    fn after_form(&self, wants_html: bool, user: Option<&str>, cookie: String) -> Response<Body> {
        let mut response = if wants_html {
            let mut redirect = Response::new(body::empty());
            *redirect.status_mut() = StatusCode::SEE_OTHER;
            redirect
                .headers_mut()
                .insert(LOCATION, HeaderValue::from_static("/"));
            redirect
        } else {
            self.me(user)
        };
        if let Ok(value) = cookie.parse() {
            response.headers_mut().insert(SET_COOKIE, value);
        }
        response
    }

    fn page(&self, headers: &HeaderMap) -> Response<Body> {
        let own = self
            .own_session_id(headers)
            .and_then(|id| self.sessions_lock().get(&id).cloned().flatten());
        let header_user = headers
            .get(self.config.identity_header.as_str())
            .and_then(|v| v.to_str().ok());
        let known_from = match (&own, header_user) {
            (Some(_), _) => KnownFrom::OwnMemory,
            (None, Some(_)) => KnownFrom::IdentityHeader,
            (None, None) => KnownFrom::Nobody,
        };
        let user = own.as_deref().or(header_user);
        let tour = self.config.tour.as_deref();
        // The page shows only unstick's hash of the id, never the id; a signed cookie's id
        // is hashed after unstick verifies it, which this page does not repeat.
        let cookie = request_cookies(headers, &self.config.cookie_name).next();
        let session_hash = cookie
            .filter(|_| self.config.signing_secret.is_none())
            .and_then(|value| parse_session_cookie(value, &IdFormat::Plain))
            .map(|id| id.hash());
        let id = cookie.and_then(|value| self.session_id_in(value));
        let holders = tour.map_or_else(Vec::new, |tour| {
            tour.instances
                .iter()
                .map(|instance| {
                    let memory = instance.memory.lock().unwrap_or_else(|p| p.into_inner());
                    let user = id.as_ref().and_then(|id| memory.get(id).cloned().flatten());
                    (instance, user)
                })
                .collect()
        });
        let html = page::render(&PageFacts {
            instance: &self.config.name,
            user,
            known_from,
            via_proxy: headers.contains_key("x-forwarded-for"),
            identity_header: &self.config.identity_header,
            header_user,
            session_hash,
            tour,
            holders,
        });
        let mut response = Response::new(body::full(html));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
    }
}

/// Values of the request's cookies named `name`, in the order sent (RFC 6265 section 5.4),
/// quotes removed. The app's own reading, apart from unstick's: a bug in one shows up as a
/// disagreement in the end-to-end tests instead of being mirrored.
fn request_cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .filter_map(move |pair| {
            let pair = std::str::from_utf8(pair.trim_ascii()).ok()?;
            let (n, value) = pair.split_once('=')?;
            (n.trim() == name).then_some(value.trim())
        })
        .map(|value| {
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
}

/// express-session's signed cookie (cookie-signature): `s:<id>.<sig>`, `sig` the unpadded
/// base64 of HMAC-SHA256(secret, id), percent-encoded on the wire.
mod express_cookie {
    use base64::engine::general_purpose::STANDARD_NO_PAD;
    use base64::Engine;
    use hmac::{Hmac, Mac};

    type HmacSha256 = Hmac<sha2::Sha256>;

    /// `None` only if HMAC refused the key, which it does for no length.
    pub fn sign(id: &str, secret: &str) -> Option<String> {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).ok()?;
        mac.update(id.as_bytes());
        let signature = STANDARD_NO_PAD.encode(mac.finalize().into_bytes());
        Some(format!("s:{id}.{signature}"))
    }

    pub fn verify(value: &str, secret: &str) -> Option<String> {
        let decoded = percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()?;
        let (id, signature) = decoded.strip_prefix("s:")?.rsplit_once('.')?;
        let signature = STANDARD_NO_PAD
            .decode(signature.trim_end_matches('='))
            .ok()?;
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).ok()?;
        mac.update(id.as_bytes());
        // Constant time, as express compares.
        mac.verify_slice(&signature).ok()?;
        (!id.is_empty()).then(|| id.to_string())
    }
}

async fn read_form(request: Request<Incoming>) -> Result<HashMap<String, String>, StatusCode> {
    let bytes = Limited::new(request.into_body(), 16 * 1024)
        .collect()
        .await
        .map_err(|_| StatusCode::PAYLOAD_TOO_LARGE)?
        .to_bytes();
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut response = Response::new(body::full(message));
    *response.status_mut() = status;
    response
}
