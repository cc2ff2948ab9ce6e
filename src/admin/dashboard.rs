//! The migration dashboard (`/dashboard`): per route its mode, the last hour of how requests
//! with a session were resolved, and whether it is ready to switch to redis; a search of a
//! user's sessions with revoke. Plain server-rendered HTML, refreshed by a meta refresh.

use super::auth::set_cookie;
use super::chart::{line_chart, Series};
use super::{query_of, text, Admin};
use crate::activity::{MinuteCounts, Readiness};
use crate::body::{self, Body};
use crate::live::Route;
use crate::migration::Mode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::collections::HashMap;
use std::fmt::Write;
use std::time::{Duration, Instant, UNIX_EPOCH};

pub const PATH: &str = "/dashboard";
pub const PREFIX: &str = "/dashboard/";
const LOGIN: &str = "/dashboard/login";
const SESSIONS: &str = "/dashboard/sessions";

/// At or above this share of active sessions in Redis, a route is called safe to switch.
const SAFE_SHARE: f64 = 99.0;
/// How often the overview reloads itself, seconds.
const REFRESH_SECS: u64 = 10;
/// Form bodies are a token or an id hash: small, and read with a deadline.
const MAX_FORM_BYTES: usize = 8 * 1024;
const FORM_TIMEOUT: Duration = Duration::from_secs(10);
/// Counting sessions in Redis: at most this many keys per count, at most once per interval.
const COUNT_CAP: usize = 100_000;
const COUNT_INTERVAL: Duration = Duration::from_secs(30);
const COUNT_TIMEOUT: Duration = Duration::from_secs(5);

/// A count of sessions in the store (and whether it stopped at the cap), or why it failed.
type Counted = Result<(usize, bool), String>;

/// The last count of sessions in the store, and when it was made.
#[derive(Default)]
pub struct SessionCount(tokio::sync::Mutex<Option<(Instant, Counted)>>);

/// Who is asking: a script with the bearer token, or a person logged in through the form
/// (with the login cookie's value, from which the form token derives).
enum Caller {
    Script,
    Person(String),
}

impl Admin {
    /// Every `/dashboard` request, once a token is configured.
    pub(super) async fn dashboard(
        &self,
        request: Request<Incoming>,
        token: &str,
    ) -> Response<Body> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        if path == LOGIN {
            return match method {
                Method::POST => self.log_in(request, token).await,
                _ => login_page(StatusCode::OK, ""),
            };
        }
        let caller = if self.login.bearer_matches(request.headers(), token) {
            Caller::Script
        } else if let Some(login) = self.login.logged_in(request.headers(), token) {
            Caller::Person(login)
        } else if method == Method::GET {
            return redirect(LOGIN);
        } else {
            return text(StatusCode::UNAUTHORIZED, "log in first\n");
        };
        let form_token = match &caller {
            Caller::Person(login) => self.login.form_token(login),
            Caller::Script => String::new(),
        };
        if method == Method::GET {
            let query = query_of(&request);
            return match path.as_str() {
                PATH => self.overview(&form_token).await,
                SESSIONS => self.sessions_page(&query, &form_token).await,
                _ => text(StatusCode::NOT_FOUND, "not found\n"),
            };
        }
        if method != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET or POST\n");
        }
        let Some(form) = read_form(request).await else {
            return text(StatusCode::BAD_REQUEST, "unreadable form\n");
        };
        if let Caller::Person(login) = &caller {
            let given = form.get("form_token").map_or("", String::as_str);
            if !self.login.form_token_matches(login, given) {
                return text(StatusCode::FORBIDDEN, "form expired: reload the page\n");
            }
        }
        let user = form.get("user").map_or("", String::as_str);
        match path.as_str() {
            "/dashboard/logout" => {
                let mut response = redirect(LOGIN);
                set_cookie_header(&mut response, &set_cookie(None));
                response
            }
            "/dashboard/revoke" => {
                let Some(hash) = form
                    .get("id_hash")
                    .and_then(|h| crate::session::SessionHash::parse(h))
                else {
                    return text(StatusCode::BAD_REQUEST, "expected a session id hash\n");
                };
                match self.revoke_session(&hash).await {
                    Ok(revoked) => redirect(&sessions_url(user, usize::from(revoked))),
                    Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                }
            }
            "/dashboard/revoke-user" if !user.is_empty() => {
                match self.revoke_user_sessions(user).await {
                    Ok(count) => redirect(&sessions_url(user, count)),
                    Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
                }
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn log_in(&self, request: Request<Incoming>, token: &str) -> Response<Body> {
        let given = read_form(request)
            .await
            .and_then(|mut form| form.remove("token"))
            .unwrap_or_default();
        if !super::constant_time_eq(given.as_bytes(), token.as_bytes()) {
            tracing::warn!("dashboard login refused: wrong token");
            return login_page(StatusCode::UNAUTHORIZED, "That is not the admin token.");
        }
        let mut response = redirect(PATH);
        let cookie = set_cookie(Some(&self.login.cookie_value(token)));
        set_cookie_header(&mut response, &cookie);
        response
    }

    async fn overview(&self, form_token: &str) -> Response<Body> {
        let live = self.proxy.live();
        let window = live.config.session.idle_timeout;
        let mut html = String::new();
        let store = match live.sessions.store.down_for() {
            Some(down) => format!(
                r#"<span class="bad">down for {:.0} s: requests with a session get 503</span>"#,
                down.as_secs_f64()
            ),
            None => r#"<span class="good">up</span>"#.to_string(),
        };
        let _ = write!(
            html,
            r#"<p class="summary">Session store: {store}. Sessions in Redis: <strong id="sessions-in-redis">{}</strong>. This page reloads every {REFRESH_SECS} s.</p>"#,
            self.sessions_in_store().await
        );
        for (index, route) in live.routes.iter().enumerate() {
            route_section(&mut html, index, route, window);
        }
        page(
            "Migration",
            &html,
            form_token,
            Some(REFRESH_SECS),
            StatusCode::OK,
        )
    }

    /// The cached count of sessions in the store, refreshed when older than the interval.
    async fn sessions_in_store(&self) -> String {
        let mut cached = self.session_count.0.lock().await;
        let fresh = matches!(&*cached, Some((at, _)) if at.elapsed() < COUNT_INTERVAL);
        if !fresh {
            let store = &self.proxy.live().sessions.store;
            let counted =
                match tokio::time::timeout(COUNT_TIMEOUT, store.count_sessions(COUNT_CAP)).await {
                    Ok(Ok(count)) => Ok(count),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer in time".to_string()),
                };
            *cached = Some((Instant::now(), counted));
        }
        match &*cached {
            Some((_, Ok((count, false)))) => count.to_string(),
            Some((_, Ok((count, true)))) => format!("over {count} (counting stops there)"),
            Some((_, Err(e))) => format!("unknown ({})", escape(e)),
            None => "unknown".to_string(),
        }
    }

    async fn sessions_page(
        &self,
        query: &HashMap<String, String>,
        form_token: &str,
    ) -> Response<Body> {
        let user = query.get("user").map_or("", String::as_str);
        let mut html = String::new();
        let _ = write!(
            html,
            r#"<form method="get" action="{SESSIONS}" class="search"><label>User <input name="user" value="{}" autofocus></label> <button type="submit">Search</button></form>"#,
            escape(user)
        );
        if let Some(revoked) = query.get("revoked").and_then(|n| n.parse::<usize>().ok()) {
            let _ = write!(
                html,
                r#"<p class="notice" id="revoked">Revoked {revoked} session(s).</p>"#
            );
        }
        if user.is_empty() {
            return page("Sessions", &html, form_token, None, StatusCode::OK);
        }
        let sessions = match self.sessions_of(user).await {
            Ok(sessions) => sessions,
            Err(e) => {
                let _ = write!(html, r#"<p class="bad">{}</p>"#, escape(&e.to_string()));
                return page(
                    "Sessions",
                    &html,
                    form_token,
                    None,
                    StatusCode::SERVICE_UNAVAILABLE,
                );
            }
        };
        let _ = write!(
            html,
            "<h2>{} session(s) of {}</h2>",
            sessions.len(),
            escape(user)
        );
        if sessions.is_empty() {
            return page("Sessions", &html, form_token, None, StatusCode::OK);
        }
        html.push_str("<table class=\"sessions\"><tr><th>Session (hash)</th><th>User</th><th>Device</th><th>IP</th><th>Instance</th><th>Started</th><th>Last seen</th><th>Ends</th><th></th></tr>");
        for session in &sessions {
            let _ = write!(
                html,
                r#"<tr><td><code title="{hash}">{short}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><form method="post" action="/dashboard/revoke"><input type="hidden" name="form_token" value="{form_token}"><input type="hidden" name="user" value="{user}"><input type="hidden" name="id_hash" value="{hash}"><button type="submit" class="revoke">Revoke</button></form></td></tr>"#,
                escape(&session.user),
                escape(session.device.as_deref().unwrap_or("")),
                escape(session.client_ip.as_deref().unwrap_or("")),
                escape(session.origin.as_deref().unwrap_or("")),
                time(session.created_ms),
                time(session.last_seen_ms),
                time(session.expires_ms),
                hash = escape(&session.id_hash),
                short = escape(session.id_hash.get(..12).unwrap_or("")),
                user = escape(user),
            );
        }
        let _ = write!(
            html,
            r#"</table><form method="post" action="/dashboard/revoke-user"><input type="hidden" name="form_token" value="{form_token}"><input type="hidden" name="user" value="{}"><button type="submit" class="revoke-all">Log {} out everywhere</button></form>"#,
            escape(user),
            escape(user)
        );
        page("Sessions", &html, form_token, None, StatusCode::OK)
    }
}

/// One route: mode, readiness, and the charts of its last hour.
fn route_section(html: &mut String, index: usize, route: &Route, window: Duration) {
    let mode = route.config().mode;
    let readiness = route.sessions.activity.readiness(window);
    let hour = route.sessions.activity.last_hour();
    let (class, sentence) = readiness_sentence(mode, readiness, window);
    let _ = write!(
        html,
        r#"<section class="route" id="route-{index}"><h2>Route {} <span class="mode">mode: {}</span></h2><p class="readiness {class}">{}</p>"#,
        escape(&route.label),
        mode.as_str(),
        escape(&sentence)
    );
    let series = |name, color, value: fn(&MinuteCounts) -> f64| Series {
        name,
        color,
        values: hour.iter().map(value).collect(),
    };
    let resolutions = [
        series("Redis hit", "#2a7", |m| m.redis as f64),
        series("old store, copied forward", "#27c", |m| {
            m.copied_forward as f64
        }),
        series("anonymous (no session found)", "#999", |m| {
            m.anonymous as f64
        }),
        series("store unavailable", "#d33", |m| m.unavailable as f64),
    ];
    html.push_str("<div class=\"chart-box\"><h3>Requests with a session cookie, per minute</h3>");
    html.push_str(&line_chart(
        "resolutions",
        "Requests with a session cookie, per minute",
        "requests",
        &resolutions,
    ));
    legend(html, &resolutions);
    html.push_str("</div>");
    let copies = [series("copied forward", "#27c", |m| {
        m.copied_forward as f64
    })];
    html.push_str("<div class=\"chart-box\"><h3>Copy-forwards per minute</h3>");
    html.push_str(&line_chart(
        "copy-forwards",
        "Copy-forwards per minute",
        "sessions",
        &copies,
    ));
    legend(html, &copies);
    html.push_str("</div>");
    if route.sessions.old_stores.is_empty() {
        html.push_str("<p class=\"note\">No old store is configured for this route.</p>");
    } else {
        let latency = [series("mean lookup latency", "#a5c", |m| {
            (m.old_store_micros as f64 / 1000.0 / m.old_store_lookups.max(1) as f64 * 10.0).round()
                / 10.0
        })];
        let errors = [
            series("lookups", "#888", |m| m.old_store_lookups as f64),
            series("errors", "#d33", |m| m.old_store_errors as f64),
        ];
        html.push_str("<div class=\"chart-box\"><h3>Old store: mean lookup latency, ms</h3>");
        html.push_str(&line_chart(
            "old-store-latency",
            "Old store latency",
            "ms",
            &latency,
        ));
        html.push_str(
            "</div><div class=\"chart-box\"><h3>Old store: lookups and errors per minute</h3>",
        );
        html.push_str(&line_chart(
            "old-store-errors",
            "Old store lookups and errors",
            "lookups",
            &errors,
        ));
        legend(html, &errors);
        html.push_str("</div>");
    }
    html.push_str("</section>");
}

/// The legend, with each line's total over the hour.
fn legend(html: &mut String, series: &[Series]) {
    html.push_str("<ul class=\"legend\">");
    for line in series {
        let total: f64 = line.values.iter().sum();
        let _ = write!(
            html,
            r#"<li><span class="swatch" style="background:{}"></span>{}: {total:.0} in the hour</li>"#,
            line.color,
            escape(line.name)
        );
    }
    html.push_str("</ul>");
}

/// Whether the route can be switched to redis, in a sentence, and its CSS class.
fn readiness_sentence(
    mode: Mode,
    readiness: Readiness,
    window: Duration,
) -> (&'static str, String) {
    let window = minutes(window);
    if mode.is_cut_over() {
        return (
            "done",
            "on redis: sessions are served from Redis only (a session Redis does not hold is anonymous)."
                .to_string(),
        );
    }
    if readiness.active == 0 {
        return (
            "wait",
            format!("no evidence yet: no session was active in the last {window}; wait for traffic before switching to redis."),
        );
    }
    let share = readiness.in_redis as f64 * 100.0 / readiness.active as f64;
    let missing = readiness.active - readiness.in_redis;
    let estimate = if readiness.scale > 1 { "about " } else { "" };
    let verb = if missing == 1 { "is" } else { "are" };
    if share >= SAFE_SHARE {
        let mut sentence = format!(
            "safe to switch to redis: {share:.1}% of sessions active in the last {window} are in Redis"
        );
        if missing > 0 {
            let _ = write!(
                sentence,
                " ({estimate}{missing} not yet: their users would log in again)"
            );
        }
        return ("ok", sentence);
    }
    let advice = if mode.asks_old_stores_on_miss() {
        "keep this mode: each is copied forward on its next request, or ends idle"
    } else {
        "switch to overlap first (or set warm = true), so that they are copied forward"
    };
    (
        "wait",
        format!(
            "not yet: {share:.1}% of sessions active in the last {window} are in Redis; {estimate}{missing} {verb} not, and switching to redis now would log them out. To get there, {advice}."
        ),
    )
}

/// "30 min", "2 h", "45 s": a window as the sentence says it.
fn minutes(window: Duration) -> String {
    let secs = window.as_secs();
    match secs {
        s if s % 3600 == 0 && s > 0 => format!("{} h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(ms: u64) -> String {
    // RFC 3339 ends with the year 9999; a record from the store may say later.
    const LAST_RFC3339_MS: u64 = 253_402_300_799_000;
    let at = UNIX_EPOCH + Duration::from_millis(ms.min(LAST_RFC3339_MS));
    humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn sessions_url(user: &str, revoked: usize) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("user", user)
        .append_pair("revoked", &revoked.to_string())
        .finish();
    format!("{SESSIONS}?{query}")
}

/// A form body, bounded in size and time; `None` when too large, slow or not a form.
async fn read_form(request: Request<Incoming>) -> Option<HashMap<String, String>> {
    let body = Limited::new(request.into_body(), MAX_FORM_BYTES);
    let bytes = tokio::time::timeout(FORM_TIMEOUT, body.collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    Some(form_urlencoded::parse(&bytes).into_owned().collect())
}

fn redirect(to: &str) -> Response<Body> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

fn set_cookie_header(response: &mut Response<Body>, cookie: &str) {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(SET_COOKIE, value);
    }
}

fn login_page(status: StatusCode, problem: &str) -> Response<Body> {
    let problem = if problem.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="bad" id="problem">{}</p>"#, escape(problem))
    };
    let html = format!(
        r#"{problem}<form method="post" action="{LOGIN}" class="login"><label>Admin token <input type="password" name="token" autocomplete="current-password" autofocus></label> <button type="submit">Log in</button></form><p class="note">The token is the value of the admin token variable ([admin] token_env). The login lasts 8 hours or until unstick restarts; the cookie it sets is not the token.</p>"#
    );
    page("Log in", &html, "", None, status)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:1400px;padding:0 1.5rem 2rem;color:#222}\
header{display:flex;gap:1.5rem;align-items:center;border-bottom:1px solid #ddd;padding:.6rem 0;margin-bottom:1rem}\
header h1{font-size:1.2rem;margin:0}header nav{display:flex;gap:1rem;align-items:center;margin-left:auto}\
.route{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem 1rem;margin-bottom:1.2rem}\
.route h2{font-size:1.1rem}.mode{font-weight:normal;color:#555;margin-left:.6rem;font-size:.95rem}\
.readiness{padding:.5rem .8rem;border-radius:4px}.readiness.ok{background:#e4f6ea}.readiness.wait{background:#fff4dc}.readiness.done{background:#e6eefb}\
.chart-box{display:inline-block;vertical-align:top;width:640px;max-width:100%;margin:0 1rem 1rem 0}.chart-box h3{font-size:.9rem;margin:.4rem 0}\
.chart{width:100%;height:auto;background:#fafafa}.legend{list-style:none;padding:0;margin:.3rem 0;font-size:.85rem}\
.legend li{display:inline-block;margin-right:1rem}.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}\
.good{color:#1a7f37}.bad{color:#c62828}.note{color:#666;font-size:.9rem}.notice{background:#e4f6ea;padding:.4rem .8rem}\
table{border-collapse:collapse;font-size:.9rem}td,th{border-bottom:1px solid #eee;padding:.3rem .6rem;text-align:left}";

/// A whole page: header with navigation (and the logout form for a person), then `main`.
fn page(
    title: &str,
    main: &str,
    form_token: &str,
    refresh: Option<u64>,
    status: StatusCode,
) -> Response<Body> {
    let refresh = refresh
        .map(|secs| format!(r#"<meta http-equiv="refresh" content="{secs}">"#))
        .unwrap_or_default();
    let nav = if title == "Log in" {
        String::new()
    } else {
        let logout = if form_token.is_empty() {
            String::new()
        } else {
            format!(
                r#"<form method="post" action="/dashboard/logout"><input type="hidden" name="form_token" value="{form_token}"><button type="submit">Log out</button></form>"#
            )
        };
        format!(
            r#"<nav><a href="{PATH}">Routes</a><a href="{SESSIONS}">Sessions</a>{logout}</nav>"#
        )
    };
    let html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">{refresh}<title>unstick · {title}</title><style>{STYLE}</style></head><body><header><h1>unstick · {title}</h1>{nav}</header><main>{main}</main></body></html>"#
    );
    let mut response = Response::new(body::full(html));
    *response.status_mut() = status;
    html_headers(response.headers_mut());
    response
}

fn html_headers(headers: &mut HeaderMap) {
    let fixed = [
        (CONTENT_TYPE, "text/html; charset=utf-8"),
        (CACHE_CONTROL, "no-store"),
        (
            http::header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (http::header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_stored_time_is_shown_without_failing() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(u64::MAX), "9999-12-31 23:59:59 UTC");
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert("x")</script>&'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;"
        );
    }

    #[test]
    fn readiness_is_said_plainly() {
        let window = Duration::from_secs(1800);
        let ready = Readiness {
            active: 1000,
            in_redis: 997,
            scale: 1,
        };
        let (class, sentence) = readiness_sentence(Mode::Overlap, ready, window);
        assert_eq!(class, "ok");
        assert!(sentence.starts_with(
            "safe to switch to redis: 99.7% of sessions active in the last 30 min are in Redis"
        ));
        let half = Readiness {
            active: 10,
            in_redis: 5,
            scale: 1,
        };
        let (class, sentence) = readiness_sentence(Mode::Legacy, half, window);
        assert_eq!(class, "wait");
        assert!(sentence.contains("; 5 are not"), "{sentence}");
        assert!(sentence.contains("switch to overlap first"), "{sentence}");
        let none = Readiness {
            active: 0,
            in_redis: 0,
            scale: 1,
        };
        assert!(readiness_sentence(Mode::Overlap, none, window)
            .1
            .starts_with("no evidence yet"));
        assert_eq!(readiness_sentence(Mode::Redis, half, window).0, "done");
    }
}
