//! Header hygiene on the way in and out: hop-by-hop removal (RFC 9110 section 7.6.1), the
//! identity headers unstick owns (a client can never send its own), and X-Forwarded-*.

use crate::config::values::normalize_header_name;
use crate::config::{IdentityHeaders, SignatureConfig};
use crate::session::Identity;
use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;
use std::net::IpAddr;

/// Headers meant for one connection or one hop, removed before forwarding whether or not
/// `Connection` lists them (RFC 9110 section 7.6.1). The one list: the proxy strips these and
/// `unstick check` refuses them as identity headers. A static, not a const: a const array is
/// built and dropped again at every use, which was once per header of every message.
pub static HOP_BY_HOP: [HeaderName; 9] = [
    // RFC 9110 section 7.6.1.
    header::CONNECTION,
    // Pre-standard `Connection` (RFC 9112 appendix C.2.2).
    HeaderName::from_static("proxy-connection"),
    // RFC 2068 section 19.7.1, named by RFC 9110 section 7.6.1.
    HeaderName::from_static("keep-alive"),
    // What the sender accepts from its next hop (RFC 9110 section 10.1.4), `TE: trailers`
    // included: that next hop is unstick, and unstick speaks for itself to the app.
    header::TE,
    // Announces trailer fields of this hop's chunked framing (RFC 9110 section 6.6.2).
    header::TRAILER,
    // This hop's framing (RFC 9112 section 6.1).
    header::TRANSFER_ENCODING,
    // RFC 9110 section 7.8; put back when an upgrade is requested (see strip_hop_by_hop).
    header::UPGRADE,
    // A challenge for the next outbound client only (RFC 9110 section 11.7.1).
    header::PROXY_AUTHENTICATE,
    // Credentials for the first proxy that expects them (RFC 9110 section 11.7.2): unstick is
    // a gateway, and a client's proxy credentials are none of the app's business.
    header::PROXY_AUTHORIZATION,
];

/// Whether `name` (lower case) is in [`HOP_BY_HOP`].
pub fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|hop| hop.as_str() == name)
}

/// Prefix of unstick's own headers (logout signals, the identity a login sends): none passes
/// from a client to the app, none from the app to a client.
const INTERNAL_PREFIX: &str = "x-unstick-";

/// Framing and forwarding headers whose `_` spelling is dropped (hop-by-hop ones too): an app
/// server that reads `Transfer_Encoding` or `X_Forwarded_For` as the real header would frame
/// the body or trust a client address differently from unstick.
const NO_UNDERSCORE_SPELLING: [&str; 7] = [
    "content-length",
    "host",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
];

/// Header names (normalized) that a client must never supply: the identity headers unstick
/// owns, unstick's internal headers, and forwarding headers it does not trust. A short list (a
/// handful of names): compared in place it costs less per request than hashing each request
/// header.
#[derive(Debug, Clone, Default)]
pub struct OwnedHeaders(Vec<String>);

impl OwnedHeaders {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a HeaderName>) -> OwnedHeaders {
        OwnedHeaders(
            names
                .into_iter()
                .map(|n| normalize_header_name(n.as_str()))
                .collect(),
        )
    }

    fn contains(&self, name: &HeaderName) -> bool {
        let name = name.as_str();
        if name.contains('_') {
            let normalized = normalize_header_name(name);
            return self.0.contains(&normalized)
                || normalized.starts_with(INTERNAL_PREFIX)
                || is_hop_by_hop(&normalized)
                || NO_UNDERSCORE_SPELLING.contains(&normalized.as_str());
        }
        name.starts_with(INTERNAL_PREFIX) || self.0.iter().any(|owned| owned == name)
    }
}

/// The protocol a request asks to switch to (`Connection: upgrade` + `Upgrade: websocket`), if
/// any. Only WebSocket is tunnelled: past a switch unstick sees no more requests, and another
/// protocol (`h2c`, say) would carry them to the app without header hygiene or identity.
/// Other upgrades are dropped, and the request goes on as plain HTTP/1.1 (RFC 9110 section
/// 7.8 lets a server ignore Upgrade).
pub fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    let websocket = |v: &&HeaderValue| v.as_bytes().eq_ignore_ascii_case(b"websocket");
    asks.then(|| headers.get(header::UPGRADE).filter(websocket).cloned())
        .flatten()
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers: the fixed set and every name listed in `Connection`. When
/// `upgrade` is set (a WebSocket handshake or a 101), `Connection: upgrade` and `Upgrade` are
/// put back so the next hop sees the handshake.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: Option<&HeaderValue>) {
    // A message framed by Transfer-Encoding takes its length from that framing; a
    // Content-Length beside it is stale or a smuggling attempt, and an intermediary must
    // remove it before forwarding (RFC 9112 section 6.3). Kept, it would outlive the
    // Transfer-Encoding removed below and make the next hop read a different body length
    // (hyper drops it from requests it parses, not from responses).
    if headers.contains_key(header::TRANSFER_ENCODING) {
        headers.remove(header::CONTENT_LENGTH);
    }
    // Most messages carry none of these: find the ones present in one pass over the names,
    // and only then remove (each removal is a hash lookup).
    let mut present: Vec<HeaderName> = headers
        .keys()
        .filter(|name| HOP_BY_HOP.contains(name))
        .cloned()
        .collect();
    present.extend(
        connection_tokens(headers).filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok()),
    );
    for name in present {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol.clone());
    }
}

/// Removes every copy of every header a client must not send (see [`OwnedHeaders`]), in any
/// case and with `_` for `-`.
pub fn strip_reserved_headers(headers: &mut HeaderMap, owned: &OwnedHeaders) {
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| owned.contains(n))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Removes unstick's internal headers from a response: the configured names and every
/// `X-Unstick-*` name.
pub fn strip_internal_headers(headers: &mut HeaderMap, internal: &[HeaderName]) {
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|name| internal.contains(name) || name.as_str().starts_with(INTERNAL_PREFIX))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

/// Adds the identity headers from a session record; `false` (and nothing added) when its user
/// cannot be a header value. Call after stripping, never before.
pub fn inject_identity(
    headers: &mut HeaderMap,
    names: &IdentityHeaders,
    identity: &Identity,
) -> bool {
    // A user that cannot be a header (control characters, as a hostile whoami answer might
    // carry) is no identity at all: roles without their user would be worse than nothing.
    let Ok(user) = HeaderValue::from_str(&identity.user) else {
        return false;
    };
    headers.insert(names.user.clone(), user);
    let mut set = |name: &HeaderName, value: &str| {
        // Any other value that cannot be a header is left out, not mangled.
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name.clone(), value);
        }
    };
    if !identity.roles.is_empty() {
        set(&names.roles, &identity.roles.join(","));
    }
    if let Some(email) = &identity.email {
        set(&names.email, email);
    }
    for (attribute, name) in &names.attributes {
        if let Some(value) = identity.attributes.get(attribute) {
            set(name, value);
        }
    }
    true
}

/// The text an identity signature covers: a version, the timestamp, then each identity
/// header's value (empty when absent), one per line, attributes in name order. The app
/// recomputes it from the headers it received (see the README).
pub fn signed_text(timestamp: u64, identity: &Identity, names: &IdentityHeaders) -> String {
    let mut text = format!(
        "v1\n{timestamp}\n{}\n{}\n{}",
        identity.user,
        identity.roles.join(","),
        identity.email.as_deref().unwrap_or("")
    );
    for attribute in names.attributes.keys() {
        text.push('\n');
        text.push_str(
            identity
                .attributes
                .get(attribute)
                .map_or("", String::as_str),
        );
    }
    text
}

/// Adds `<header>: t=<unix seconds>,v1=<hex HMAC-SHA256>` over [`signed_text`], so the app can
/// check the identity headers came from unstick and are fresh.
pub fn sign_identity(
    headers: &mut HeaderMap,
    names: &IdentityHeaders,
    identity: &Identity,
    signature: &SignatureConfig,
    timestamp: u64,
) {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(signature.secret.as_bytes()) else {
        return;
    };
    mac.update(signed_text(timestamp, identity, names).as_bytes());
    let value = format!(
        "t={timestamp},v1={}",
        crate::hex_string(&mac.finalize().into_bytes())
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(signature.header.clone(), value);
    }
}

/// A client's address, and its text as a header value: formatted once per connection rather
/// than on every request it sends.
#[derive(Debug, Clone)]
pub struct ClientAddress {
    pub ip: IpAddr,
    pub header_value: HeaderValue,
}

impl ClientAddress {
    pub fn new(ip: IpAddr) -> ClientAddress {
        ClientAddress {
            ip,
            // An IP address in text is always a valid header value.
            header_value: HeaderValue::from_str(&ip.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        }
    }
}

// Statics: `from_static` called in a function body validates the name again on every call.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets `X-Forwarded-For/Proto/Host`. Client-sent values are replaced unless the operator
/// trusts a proxy in front of unstick, in which case the client address is appended.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client: &ClientAddress,
    proto: &'static str,
    host: Option<&str>,
    trust_client: bool,
) {
    let (for_name, proto_name, host_name) =
        (&X_FORWARDED_FOR, &X_FORWARDED_PROTO, &X_FORWARDED_HOST);
    // The client's chain is looked up only when trusted: an untrusted one is replaced whole.
    let previous = match trust_client {
        true => headers.get(for_name).and_then(|v| v.to_str().ok()),
        false => None,
    };
    let chain = match previous {
        Some(previous) => HeaderValue::from_str(&format!("{previous}, {}", client.ip)).ok(),
        None => Some(client.header_value.clone()),
    };
    if let Some(value) = chain {
        headers.insert(for_name, value);
    }
    if !(trust_client && headers.contains_key(proto_name)) {
        headers.insert(proto_name, HeaderValue::from_static(proto));
    }
    if !(trust_client && headers.contains_key(host_name)) {
        match host.and_then(|h| HeaderValue::from_str(h).ok()) {
            Some(value) => {
                headers.insert(host_name, value);
            }
            None => {
                headers.remove(host_name);
            }
        }
    }
}

/// HTTP/2 clients may split cookies over several headers (RFC 9113 section 8.2.3); an
/// HTTP/1.1 app expects one.
pub fn merge_cookie_headers(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> IdentityHeaders {
        IdentityHeaders {
            user: HeaderName::from_static("x-auth-user"),
            roles: HeaderName::from_static("x-auth-roles"),
            email: HeaderName::from_static("x-auth-email"),
            attributes: [(
                "tenant".to_string(),
                HeaderName::from_static("x-auth-tenant"),
            )]
            .into(),
        }
    }

    #[test]
    fn strips_every_spelling_and_copy_of_owned_headers() {
        let owned = OwnedHeaders::new(names().owned());
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("X-Auth-User", "mallory"),
            ("x-auth-user", "mallory2"),
            ("X_Auth_User", "mallory3"),
            ("x_AUTH-roles", "admin"),
            ("X-Auth-Tenant", "other"),
            ("x-auth-username", "kept"),
            ("X-Unstick-Logout", "1"),
            ("x_unstick_identity", "{}"),
            ("Transfer_Encoding", "chunked"),
            ("X_Forwarded_For", "6.6.6.6"),
            ("x_custom", "kept"),
            ("accept", "*/*"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        strip_reserved_headers(&mut headers, &owned);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["accept", "x-auth-username", "x_custom"]);
    }

    #[test]
    fn connection_listed_names_go_but_cannot_remove_injected_identity() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-auth-user, X-Custom"),
        );
        headers.insert("x-custom", HeaderValue::from_static("1"));
        headers.insert("x-auth-user", HeaderValue::from_static("mallory"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        strip_hop_by_hop(&mut headers, None);
        strip_reserved_headers(&mut headers, &OwnedHeaders::new(names().owned()));
        let identity = Identity {
            user: "alice".into(),
            roles: vec!["admin".into(), "user".into()],
            email: None,
            attributes: [("tenant".to_string(), "acme".to_string())].into(),
        };
        inject_identity(&mut headers, &names(), &identity);
        assert!(headers.get("x-custom").is_none());
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert_eq!(headers["x-auth-user"], "alice");
        assert_eq!(headers["x-auth-roles"], "admin,user");
        assert_eq!(headers["x-auth-tenant"], "acme");
        assert!(headers.get("x-auth-email").is_none());
    }

    #[test]
    fn every_hop_by_hop_header_goes_whether_or_not_connection_names_it() {
        let mut headers = HeaderMap::new();
        for name in &HOP_BY_HOP {
            headers.insert(name, HeaderValue::from_static("x"));
        }
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut headers, None);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn a_clients_proxy_credentials_never_reach_the_app_in_any_spelling() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        headers.insert("proxy_authorization", HeaderValue::from_static("Basic x"));
        strip_hop_by_hop(&mut headers, None);
        strip_reserved_headers(&mut headers, &OwnedHeaders::default());
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn te_trailers_is_the_clients_word_to_unstick_not_to_the_app() {
        let mut headers = HeaderMap::new();
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("TE"));
        strip_hop_by_hop(&mut headers, None);
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn upgrade_without_connection_upgrade_is_no_handshake() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let upgrade = requested_upgrade(&headers);
        assert!(upgrade.is_none());
        strip_hop_by_hop(&mut headers, upgrade.as_ref());
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn only_websocket_is_an_upgrade() {
        for (protocol, tunnelled) in [
            ("websocket", true),
            ("WebSocket", true),
            ("h2c", false),
            ("TLS/1.2", false),
            ("websocket, h2c", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::UPGRADE, HeaderValue::from_str(protocol).unwrap());
            headers.insert(
                header::CONNECTION,
                HeaderValue::from_static("Upgrade, HTTP2-Settings"),
            );
            let upgrade = requested_upgrade(&headers);
            assert_eq!(upgrade.is_some(), tunnelled, "{protocol}");
            strip_hop_by_hop(&mut headers, upgrade.as_ref());
            assert_eq!(
                headers.contains_key(header::UPGRADE),
                tunnelled,
                "{protocol}"
            );
        }
    }

    #[test]
    fn a_user_that_cannot_be_a_header_means_no_identity_at_all() {
        let identity = Identity {
            user: "bob\r\nx-auth-roles: admin".into(),
            roles: vec!["admin".into()],
            email: Some("b@x".into()),
            attributes: Default::default(),
        };
        let mut headers = HeaderMap::new();
        assert!(!inject_identity(&mut headers, &names(), &identity));
        assert!(headers.is_empty(), "{headers:?}");
    }

    #[test]
    fn signature_covers_every_identity_header() {
        let names = names();
        let signature = SignatureConfig {
            secret: "0123456789abcdef".into(),
            header: HeaderName::from_static("x-auth-signature"),
        };
        let identity = Identity {
            user: "alice".into(),
            roles: vec!["admin".into()],
            email: Some("a@x".into()),
            attributes: [("tenant".to_string(), "acme".to_string())].into(),
        };
        assert_eq!(
            signed_text(1700000000, &identity, &names),
            "v1\n1700000000\nalice\nadmin\na@x\nacme"
        );
        let mut headers = HeaderMap::new();
        sign_identity(&mut headers, &names, &identity, &signature, 1700000000);
        let value = headers["x-auth-signature"].to_str().unwrap().to_string();
        assert!(value.starts_with("t=1700000000,v1="), "{value}");
        let other = Identity {
            user: "mallory".into(),
            ..identity
        };
        let mut forged = HeaderMap::new();
        sign_identity(&mut forged, &names, &other, &signature, 1700000000);
        assert_ne!(forged["x-auth-signature"], value.as_str());
    }

    #[test]
    fn content_length_beside_transfer_encoding_goes() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut headers, None);
        assert!(headers.is_empty(), "{headers:?}");
        let mut sized = HeaderMap::new();
        sized.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut sized, None);
        assert_eq!(sized[header::CONTENT_LENGTH], "3");
    }

    #[test]
    fn upgrade_handshake_survives_stripping() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let upgrade = requested_upgrade(&headers);
        assert_eq!(upgrade.as_ref().unwrap(), "websocket");
        strip_hop_by_hop(&mut headers, upgrade.as_ref());
        assert_eq!(headers[header::CONNECTION], "upgrade");
        assert_eq!(headers[header::UPGRADE], "websocket");
    }

    #[test]
    fn forwarded_headers_replace_client_values_unless_trusted() {
        let ip = ClientAddress::new("10.1.2.3".parse().unwrap());
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        set_forwarded(&mut headers, &ip, "http", Some("app.example"), false);
        assert_eq!(headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "app.example");
        let mut trusted = HeaderMap::new();
        trusted.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        set_forwarded(&mut trusted, &ip, "http", None, true);
        assert_eq!(trusted["x-forwarded-for"], "1.1.1.1, 10.1.2.3");
    }

    #[test]
    fn split_cookies_are_merged() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1"));
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        merge_cookie_headers(&mut headers);
        assert_eq!(headers.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(headers[header::COOKIE], "a=1; b=2");
    }
}
