//! The legacy app's page: who you are and which instance answered and, in the demo, unstick's
//! side of the request: where the identity came from, where the session lives, and which
//! instance holds the login in its own memory. Styled inline: no CDN, nothing to fetch.

use crate::session::cookie::SessionHash;
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// One instance's logins: session id -> user (`None`: a session without a login). Shared with
/// the demo tour so each page can say which instance holds a login.
pub type SessionMemory = Arc<Mutex<HashMap<String, Option<String>>>>;

/// What the demo tells its page about the setup around the app.
#[derive(Debug, Default)]
pub struct DemoTour {
    /// unstick's address, as a browser opens it.
    pub proxy_url: String,
    /// Where unstick keeps sessions, in words.
    pub store: String,
    pub dashboard_url: Option<String>,
    pub instances: Vec<TourInstance>,
}

#[derive(Debug)]
pub struct TourInstance {
    pub name: String,
    /// The instance's own address, to open it without unstick.
    pub url: String,
    pub memory: SessionMemory,
}

/// How the answering instance knows the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownFrom {
    /// A session in its own memory: it took the login.
    OwnMemory,
    /// Its memory has nothing for the cookie; the identity header named the user.
    IdentityHeader,
    Nobody,
}

pub struct PageFacts<'a> {
    pub instance: &'a str,
    pub user: Option<&'a str>,
    pub known_from: KnownFrom,
    /// The request came through a proxy (it carries `X-Forwarded-For`).
    pub via_proxy: bool,
    pub identity_header: &'a str,
    /// What the identity header said, if the request carried it.
    pub header_user: Option<&'a str>,
    /// unstick's handle of the session: the SHA-256 of the cookie's id, never the id itself.
    pub session_hash: Option<SessionHash>,
    pub tour: Option<&'a DemoTour>,
    /// Of each instance of the tour: whether it holds this cookie's login in its memory.
    pub holders: Vec<(&'a TourInstance, Option<String>)>,
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif;background:#f3f4f8;color:#1d2330}\
header.top{background:#1d2330;color:#fff;padding:14px 28px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}\
header.top .brand{font-weight:800;font-size:22px;letter-spacing:.5px;color:#7dd3a8}\
header.top .what{opacity:.85}\
main{max-width:980px;margin:24px auto;padding:0 16px;display:grid;gap:16px;grid-template-columns:1fr 1fr}\
section{background:#fff;border-radius:10px;padding:18px 22px;box-shadow:0 1px 3px rgba(0,0,0,.08)}\
section.wide{grid-column:1/-1}\
h2{margin:0 0 10px;font-size:15px;text-transform:uppercase;letter-spacing:.6px;color:#5b6478}\
.served{display:flex;align-items:center;gap:18px}\
.badge{display:inline-block;min-width:54px;text-align:center;font-size:30px;font-weight:800;color:#fff;border-radius:10px;padding:4px 14px}\
.i0{background:#3b6fd8}.i1{background:#e0782b}.i2{background:#8a4fd0}.i3{background:#2a9d8f}\
.small{font-size:13px;color:#5b6478}\
.ok{color:#17803d;font-weight:600}.no{color:#b42318;font-weight:600}\
.note{border-left:4px solid #7dd3a8;background:#f0faf4;padding:8px 12px;border-radius:4px}\
.warn{border-left:4px solid #e0a82b;background:#fdf6e6;padding:8px 12px;border-radius:4px}\
code{background:#eef0f5;padding:1px 5px;border-radius:4px;font-size:14px}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:6px 14px;margin:0}dt{color:#5b6478}dd{margin:0}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:8px 6px;border-bottom:1px solid #e5e7ee;vertical-align:top}\
input[type=text]{font:inherit;padding:6px 10px;border:1px solid #c6cad6;border-radius:6px}\
button{font:inherit;background:#1d2330;color:#fff;border:0;border-radius:6px;padding:7px 16px;cursor:pointer}\
a{color:#3b6fd8}ol{margin:0;padding-left:20px}\
@media(max-width:720px){main{grid-template-columns:1fr}}";

/// The whole page.
pub fn render(facts: &PageFacts<'_>) -> String {
    let instance = escape(facts.instance);
    let mut html = String::with_capacity(8 * 1024);
    let _ = write!(
        html,
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content='width=device-width,initial-scale=1'>\
         <title>unstick demo: instance {instance}</title><style>{STYLE}</style>\
         <header class=top><span class=brand>unstick</span>\
         <span class=what>demo: a sticky legacy app on two instances, behind unstick</span></header><main>"
    );
    served(&mut html, facts);
    you(&mut html, facts);
    if facts.via_proxy {
        unstick_side(&mut html, facts);
    }
    if facts.tour.is_some() {
        holders(&mut html, facts);
        try_this(&mut html, facts);
    }
    html.push_str("</main></html>");
    html
}

/// The CSS class of an instance's colour: its place in the tour.
fn colour(facts: &PageFacts<'_>, name: &str) -> String {
    let index = facts
        .tour
        .and_then(|t| t.instances.iter().position(|i| i.name == name))
        .unwrap_or(0);
    format!("i{}", index % 4)
}

fn served(html: &mut String, facts: &PageFacts<'_>) {
    let instance = escape(facts.instance);
    let class = colour(facts, facts.instance);
    let how = if facts.via_proxy {
        "This request went through <b>unstick</b>, which balances round robin over the \
         instances: reload and the other instance may answer."
    } else {
        "You opened this instance <b>directly</b>, without unstick: only what this instance \
         holds in its own memory counts here."
    };
    let _ = write!(
        html,
        "<section class='wide served'><span class='badge {class}'>{instance}</span>\
         <div><div style='font-size:20px'>Served by instance <b>{instance}</b></div>\
         <div class=small>{how}</div></div></section>"
    );
}

fn you(html: &mut String, facts: &PageFacts<'_>) {
    let instance = escape(facts.instance);
    let header = escape(facts.identity_header);
    html.push_str("<section><h2>You</h2>");
    match facts.user {
        Some(user) => {
            let user = escape(user);
            let _ = write!(
                html,
                "<p style='font-size:20px'>Logged in as <b>{user}</b></p>"
            );
            let how = match facts.known_from {
                KnownFrom::OwnMemory => format!(
                    "<p class=note>Instance <b>{instance}</b> knew you itself: your session is \
                     in its own memory (the login happened on {instance}).</p>"
                ),
                _ => format!(
                    "<p class=note>Instance <b>{instance}</b> has no session for your cookie in \
                     its memory. It got your identity from unstick's <code>{header}</code> \
                     header: unstick found your session in its store and told the app who you are.</p>"
                ),
            };
            html.push_str(&how);
            html.push_str("<form method=post action=/logout><button>Log out</button></form>");
        }
        None => {
            let _ = write!(
                html,
                "<p style='font-size:20px'>Not logged in</p>\
                 <p class=small>Instance <b>{instance}</b> has no login for you in its memory{}.</p>\
                 <form method=post action=/login><input type=text name=user placeholder=name required> \
                 <label class=small><input type=checkbox name=remember> remember me</label> \
                 <button>Log in</button></form>",
                if facts.via_proxy {
                    ", and unstick sent no identity"
                } else {
                    ""
                }
            );
            if let (false, Some(holder), Some(tour)) = (facts.via_proxy, holder(facts), facts.tour)
            {
                let proxy = escape(&tour.proxy_url);
                let _ = write!(
                    html,
                    "<p class=warn>Your login is in instance <b>{holder}</b>'s memory, so                      {instance} alone does not know you. Through unstick at                      <a href='{proxy}/'>{proxy}</a> every instance knows you.</p>"
                );
            }
        }
    }
    html.push_str("</section>");
}

fn unstick_side(html: &mut String, facts: &PageFacts<'_>) {
    let header = escape(facts.identity_header);
    let instance = escape(facts.instance);
    html.push_str("<section><h2>unstick's side of this request</h2><dl>");
    let _ = write!(
        html,
        "<dt>Instance</dt><dd>{instance}, picked round robin</dd>"
    );
    let session = match &facts.session_hash {
        Some(hash) => format!(
            "<code>{}…</code><div class=small>a SHA-256 hash of your cookie: unstick stores, logs \
             and shows sessions only by this hash, never by the id itself</div>",
            hash.short()
        ),
        None => "none (no session cookie yet)".to_string(),
    };
    let _ = write!(html, "<dt>Session</dt><dd>{session}</dd>");
    let sent = match facts.header_user {
        Some(user) => format!("<code>{header}: {}</code>", escape(user)),
        None => "no identity: no session of yours in its store".to_string(),
    };
    let _ = write!(html, "<dt>Identity sent</dt><dd>{sent}</dd>");
    if let Some(tour) = facts.tour {
        let _ = write!(
            html,
            "<dt>Session lives in</dt><dd>unstick's store: <b>{}</b>. In production that is \
             <b>Redis</b>, shared by every unstick, so no instance restart or deploy logs \
             anyone out.</dd>",
            escape(&tour.store)
        );
        if let Some(dashboard) = &tour.dashboard_url {
            let dashboard = escape(dashboard);
            let _ = write!(
                html,
                "<dt>Dashboard</dt><dd><a href='{dashboard}'>{dashboard}</a>\
                 <div class=small>the token is printed in the terminal that runs the demo</div></dd>"
            );
        }
    }
    html.push_str("</dl></section>");
}

fn holders(html: &mut String, facts: &PageFacts<'_>) {
    let holder = holder(facts);
    html.push_str(
        "<section class=wide><h2>Which instance holds your login in its own memory</h2><table>\
         <tr><th>Instance</th><th>In its memory</th><th>Opened directly, without unstick</th></tr>",
    );
    for (instance, user) in &facts.holders {
        let name = escape(&instance.name);
        let url = escape(&instance.url);
        let class = colour(facts, &instance.name);
        let (memory, direct) = match (user, &holder) {
            (Some(user), _) => (
                format!("<span class=ok>your login ({})</span>", escape(user)),
                "logged in: it took your login".to_string(),
            ),
            (None, Some(holder)) => (
                "<span class=no>nothing</span>".to_string(),
                format!(
                    "<b>logged out</b>: {name} alone does not know you, {holder} holds your \
                     login. Through unstick both instances know you."
                ),
            ),
            (None, None) => (
                "<span class=no>nothing</span>".to_string(),
                if facts.user.is_some() {
                    "logged out: no instance holds your login any more, yet unstick still \
                     has your session"
                        .to_string()
                } else {
                    "logged out".to_string()
                },
            ),
        };
        let _ = write!(
            html,
            "<tr><td><span class='badge {class}' style='font-size:16px;min-width:30px'>{name}</span></td>\
             <td>{memory}</td><td><a href='{url}/'>open {name} directly</a>: {direct}</td></tr>"
        );
    }
    html.push_str("</table>");
    if facts.user.is_some() && holder.is_some() {
        html.push_str(
            "<p class=warn>Behind a sticky load balancer you would be pinned to the instance \
             that holds your login, and logged out when it restarts. unstick keeps the session \
             in its own store and tells every instance who you are.</p>",
        );
    }
    html.push_str("</section>");
}

/// The instance that holds the login in its memory, escaped.
fn holder(facts: &PageFacts<'_>) -> Option<String> {
    facts
        .holders
        .iter()
        .find(|(_, user)| user.is_some())
        .map(|(instance, _)| escape(&instance.name))
}

fn try_this(html: &mut String, facts: &PageFacts<'_>) {
    let Some(tour) = facts.tour else { return };
    let proxy = escape(&tour.proxy_url);
    let _ = write!(
        html,
        "<section class=wide><h2>Try this</h2><ol>\
         <li>Log in at <a href='{proxy}/'>{proxy}</a>, then reload a few times: instances a and \
         b take turns, and you stay logged in on both.</li>\
         <li>Look at “You”: the instance that took the login knew you itself; the other got \
         your identity from unstick's header.</li>\
         <li>Open each instance directly (table above): only the one that holds the login knows \
         you there.</li>\
         <li>Log out: you are logged out on every instance.</li></ol></section>"
    );
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
