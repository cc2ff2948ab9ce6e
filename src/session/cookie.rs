//! The app's session cookie: finding it in a request, reading the session id out of its value
//! in the app's own format, and noticing when a response sets or clears it. The cookie itself
//! is never rewritten; unstick only reads it.

use crate::config::defaults::SESSION_LIFETIME_MAX;
use crate::config::{IdFormat, LaravelKey, SessionConfig};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::Duration;

/// More same-named cookies than this in one request are ignored (a browser sends one or two).
const MAX_CANDIDATES: usize = 4;

/// A session id read from the app's cookie. It is a bearer credential: `Debug` hides it and
/// nothing stores or logs it; [`SessionId::hash`] is the form that may be kept.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionId {
    id: String,
    route: Option<String>,
    cookie_value: String,
}

impl SessionId {
    /// An id as an old store keeps it (read from a listing, not a cookie): no route, no
    /// cookie value.
    pub fn stored(id: String) -> SessionId {
        SessionId {
            id,
            route: None,
            cookie_value: String::new(),
        }
    }

    /// The id's hash: the Redis key and the handle used in logs and the admin API.
    pub fn hash(&self) -> SessionHash {
        SessionHash::of_digest(Sha256::digest(self.id.as_bytes()).into())
    }

    /// The hashes of other spellings of this id that an app which decodes its cookie (Rack,
    /// PHP: `%XX` and `+` for a space) reads as one id: decoded, and escaped as Rack writes
    /// cookies. A client can send an ended id escaped differently from how the app wrote it
    /// (`%61bc` for `abc`, `a=` for `a%3D`); it is checked against these. None for ids of
    /// letters, digits, `-`, `_`, `.` and `*`, which most apps use.
    pub fn escaped_variants(&self) -> Vec<SessionHash> {
        let plus_as_space = self.id.replace('+', " ");
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(&plus_as_space).collect();
        let escaped: String = form_urlencoded::byte_serialize(&decoded).collect();
        let mut variants: Vec<&[u8]> = Vec::new();
        for variant in [decoded.as_slice(), escaped.as_bytes()] {
            if variant != self.id.as_bytes() && !variants.contains(&variant) {
                variants.push(variant);
            }
        }
        let hash = |bytes: &[u8]| SessionHash::of_digest(Sha256::digest(bytes).into());
        variants.into_iter().map(hash).collect()
    }

    /// The raw id, for building an old store's key or file name. Never log or store it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The instance route carried in the cookie (`<id>.<route>`), if the format has one.
    pub fn route(&self) -> Option<&str> {
        self.route.as_deref()
    }

    /// The cookie value exactly as the client sent it (to call the app on the user's behalf).
    pub fn cookie_value(&self) -> &str {
        &self.cookie_value
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionId({})", self.hash().short())
    }
}

/// A session id's SHA-256, its first 128 bits in base64url (22 characters). Safe to store and
/// log: it cannot be replayed as a cookie. Earlier versions used the whole digest in hex (64
/// characters); that form is still accepted, and a hash made from a cookie keeps the rest of
/// its digest so that sessions stored under that form can be found.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct SessionHash {
    id: String,
    /// The digest's last 128 bits, when known.
    rest: Option<[u8; 16]>,
}

/// Base64url without padding, strict on decode.
const HASH_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone),
);

impl SessionHash {
    fn of_digest(digest: [u8; 32]) -> SessionHash {
        let (head, rest) = digest.split_at(16);
        SessionHash {
            id: HASH_BASE64.encode(head),
            rest: rest.try_into().ok(),
        }
    }

    /// Accepts the 22-character form, or the 64-character hex form earlier versions listed
    /// (from an operator, the admin API or a stored record).
    pub fn parse(text: &str) -> Option<SessionHash> {
        match text.len() {
            22 => {
                let mut head = [0u8; 16];
                let decoded = HASH_BASE64.decode_slice(text, &mut head).ok()?;
                // Only the canonical encoding: one hash, one key.
                (decoded == 16 && HASH_BASE64.encode(head) == text).then(|| SessionHash {
                    id: text.to_string(),
                    rest: None,
                })
            }
            64 if text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(text, &mut digest).ok()?;
                Some(SessionHash::of_digest(digest))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The whole digest in hex, as earlier versions named keys by, when known.
    pub fn legacy_hex(&self) -> Option<String> {
        let mut digest = [0u8; 32];
        HASH_BASE64.decode_slice(&self.id, &mut digest[..16]).ok()?;
        digest[16..].copy_from_slice(&self.rest?);
        Some(crate::hex_string(&digest))
    }

    /// First 10 characters: enough to correlate log lines.
    pub fn short(&self) -> &str {
        &self.id[..10]
    }
}

impl PartialEq for SessionHash {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for SessionHash {}

impl std::hash::Hash for SessionHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl PartialOrd for SessionHash {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SessionHash {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id)
    }
}

impl From<SessionHash> for String {
    fn from(hash: SessionHash) -> String {
        hash.id
    }
}

impl TryFrom<String> for SessionHash {
    type Error = String;

    fn try_from(text: String) -> Result<SessionHash, String> {
        SessionHash::parse(&text).ok_or_else(|| format!("not a session id hash: {text:?}"))
    }
}

impl fmt::Display for SessionHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// The app's session cookies in a request, read in one pass over its `Cookie` headers.
#[derive(Debug, Default)]
pub struct SessionCookies {
    /// Every session id carried that parses in the configured format, in the order sent.
    /// Browsers can send two cookies of one name (host-only and domain, or two paths);
    /// callers try them in this order, so the choice is deterministic.
    pub ids: Vec<SessionId>,
    /// Cookies of that name with different values came: the app could pick another one than
    /// unstick.
    pub conflicting: bool,
}

/// Reads the session cookies of a request (see [`SessionCookies`]).
pub fn session_cookies(headers: &HeaderMap, session: &SessionConfig) -> SessionCookies {
    let name = session.cookie_name.as_bytes();
    let mut found = SessionCookies::default();
    let mut first: Option<&[u8]> = None;
    for (_, value) in cookie_pairs(headers).filter(|(n, _)| *n == name) {
        match first {
            None => first = Some(value),
            Some(first) => found.conflicting |= value != first,
        }
        if found.ids.len() == MAX_CANDIDATES {
            continue;
        }
        let id = cookie_text(value).and_then(|v| parse_session_cookie(v, &session.id_format));
        if let Some(id) = id.filter(|id| !found.ids.contains(id)) {
            found.ids.push(id);
        }
    }
    found
}

/// Every `name=value` pair of the request's `Cookie` headers, in the order sent, as bytes.
/// Read leniently, as RFC 6265 section 5.4 asks of user agents' cookies: a pair without `=`
/// is skipped, and bytes outside ASCII (which browsers do send) in one cookie never hide
/// another.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| {
            let at = pair.iter().position(|&b| b == b'=')?;
            Some((pair[..at].trim_ascii(), pair[at + 1..].trim_ascii()))
        })
}

/// Values of every request cookie named `name`, in the order sent, across all `Cookie`
/// headers, as [`cookie_text`] reads them.
pub fn cookie_values<'a>(
    headers: &'a HeaderMap,
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    cookie_pairs(headers)
        .filter(move |(n, _)| *n == name.as_bytes())
        .filter_map(|(_, value)| cookie_text(value))
}

/// A cookie value without the quotes around it (RFC 6265 section 4.1.1), if it is UTF-8
/// (no session id of ours is anything else).
fn cookie_text(value: &[u8]) -> Option<&str> {
    let value = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
        .unwrap_or(value);
    std::str::from_utf8(value).ok()
}

/// Leaves, of the cookies named `name`, only those whose value is `value` (the session
/// resolved), so that the app reads the same session as unstick.
pub fn keep_only_session_cookie(headers: &mut HeaderMap, name: &str, value: &str) {
    retain_session_cookies(headers, name, |v| v == value.as_bytes());
}

/// Removes the cookies named `name` whose value is `value` (a session that ended).
pub fn remove_session_cookie(headers: &mut HeaderMap, name: &str, value: &str) {
    retain_session_cookies(headers, name, |v| v != value.as_bytes());
}

/// Keeps the cookies named `name` whose (unquoted) value `keep` accepts. Other cookies are kept
/// byte for byte; the result is one `Cookie` header, or none when nothing is left.
fn retain_session_cookies(headers: &mut HeaderMap, name: &str, keep: impl Fn(&[u8]) -> bool) {
    let kept: Vec<&[u8]> = headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|header| header.as_bytes().split(|&b| b == b';'))
        .map(<[u8]>::trim_ascii)
        .filter(|pair| {
            let Some(at) = pair.iter().position(|&b| b == b'=') else {
                return true;
            };
            let (n, v) = (pair[..at].trim_ascii(), pair[at + 1..].trim_ascii());
            let v = v
                .strip_prefix(b"\"")
                .and_then(|v| v.strip_suffix(b"\""))
                .unwrap_or(v);
            n != name.as_bytes() || keep(v)
        })
        .filter(|pair| !pair.is_empty())
        .collect();
    if kept.is_empty() {
        headers.remove(COOKIE);
        return;
    }
    // The pairs came from valid header values, so their join is one too.
    if let Ok(joined) = HeaderValue::from_bytes(&kept.join(&b"; "[..])) {
        headers.insert(COOKIE, joined);
    }
}

/// Reads the session id from one cookie value; `None` when it is not a valid session cookie
/// in this format (including a signature that does not verify).
pub fn parse_session_cookie(value: &str, format: &IdFormat) -> Option<SessionId> {
    if value.is_empty() || value.len() > 4096 {
        return None;
    }
    let (id, route) = match format {
        IdFormat::Plain => (value.to_string(), None),
        IdFormat::JvmRoute => split_route(value),
        IdFormat::SpringBase64 => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .ok()?;
            split_route(std::str::from_utf8(&decoded).ok()?)
        }
        IdFormat::ExpressSigned { secrets } => (verify_express(value, secrets)?, None),
        IdFormat::Laravel { keys } => (decrypt_laravel(value, keys)?, None),
    };
    if id.is_empty() {
        return None;
    }
    Some(SessionId {
        id,
        route,
        cookie_value: value.to_string(),
    })
}

/// `<id>.<route>` as balancers read it: the route is what follows the first `.`.
fn split_route(value: &str) -> (String, Option<String>) {
    match value.split_once('.') {
        Some((id, route)) if !route.is_empty() => (id.to_string(), Some(route.to_string())),
        _ => (value.to_string(), None),
    }
}

type HmacSha256 = Hmac<Sha256>;

/// express-session / cookie-signature: the wire value is percent-encoded `s:<id>.<sig>`, `sig`
/// unpadded standard base64 of HMAC-SHA256(secret, id). `+` is not a space here.
fn verify_express(value: &str, secrets: &[String]) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()?;
    let signed = decoded.strip_prefix("s:")?;
    let (id, signature) = signed.rsplit_once('.')?;
    let signature = STANDARD_NO_PAD
        .decode(signature.trim_end_matches('='))
        .ok()?;
    secrets.iter().find_map(|secret| {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).ok()?;
        mac.update(id.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&signature).ok().map(|_| id.to_string())
    })
}

/// PHP's `base64_decode` takes values with or without padding.
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Laravel's encrypted cookie envelope (`Encrypter::encrypt`), before the MAC is checked.
#[derive(serde::Deserialize)]
struct LaravelEnvelope {
    iv: String,
    value: String,
    mac: String,
}

/// Laravel's `EncryptCookies` and `Encrypter::decrypt`: the percent-encoded value is base64 of
/// `{"iv","value","mac"}`; `mac` is hex HMAC-SHA256(key, iv . value) over the base64 texts,
/// checked (in constant time) before anything is decrypted; the plaintext must start with the
/// prefix that names this cookie, and what follows is the 40-character session id.
fn decrypt_laravel(value: &str, keys: &[LaravelKey]) -> Option<String> {
    use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .ok()?;
    let json = STANDARD_ANY_PAD.decode(decoded.as_bytes()).ok()?;
    let envelope: LaravelEnvelope = serde_json::from_slice(&json).ok()?;
    let iv = STANDARD_ANY_PAD.decode(&envelope.iv).ok()?;
    let ciphertext = STANDARD_ANY_PAD.decode(&envelope.value).ok()?;
    let mac = hex::decode(&envelope.mac).ok()?;
    if iv.len() != 16 {
        return None;
    }
    keys.iter().find_map(|key| {
        let mut check = HmacSha256::new_from_slice(&key.key).ok()?;
        check.update(envelope.iv.as_bytes());
        check.update(envelope.value.as_bytes());
        check.verify_slice(&mac).ok()?;
        let plain = match key.key.len() {
            32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(&key.key, &iv)
                .ok()?
                .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
                .ok()?,
            16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(&key.key, &iv)
                .ok()?
                .decrypt_padded_vec_mut::<Pkcs7>(&ciphertext)
                .ok()?,
            _ => return None,
        };
        let id = plain.strip_prefix(key.prefix.as_bytes())?;
        // Laravel's own rule for a session id (`Store::isValidId`).
        (id.len() == 40 && id.iter().all(u8::is_ascii_alphanumeric))
            .then(|| String::from_utf8_lossy(id).into_owned())
    })
}

/// Signs an id as express-session does (`s:<id>.<sig>`, not yet percent-encoded).
pub fn express_sign(id: &str, secret: &str) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    format!(
        "s:{id}.{}",
        STANDARD_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// What a response does to the app's session cookie.
#[derive(Clone, PartialEq, Eq)]
pub enum CookieChange {
    /// A value is set (a login, an id regeneration, or the same value re-sent).
    Set {
        value: String,
        /// Max-Age or Expires, when the app gave one (a persistent, "remember me" cookie).
        lifetime: Option<Duration>,
    },
    /// Emptied or expired: the app ended the session.
    Cleared,
}

impl fmt::Debug for CookieChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CookieChange::Set { lifetime, .. } => write!(f, "Set {{ lifetime: {lifetime:?} }}"),
            CookieChange::Cleared => f.write_str("Cleared"),
        }
    }
}

/// A `Set-Cookie` value, parsed, when it sets the cookie named `name`.
fn set_cookie_named<'a>(header: &'a HeaderValue, name: &str) -> Option<cookie::Cookie<'a>> {
    let parsed = cookie::Cookie::parse(header.to_str().ok()?).ok()?;
    (parsed.name() == name).then_some(parsed)
}

/// The last `Set-Cookie` for the app's cookie in a response, as a [`CookieChange`].
pub fn session_cookie_change(headers: &HeaderMap, cookie_name: &str) -> Option<CookieChange> {
    let mut change = None;
    for header in headers.get_all(SET_COOKIE) {
        let Some(parsed) = set_cookie_named(header, cookie_name) else {
            continue;
        };
        // The clock is read only for a cookie that has an `Expires`: most responses set none.
        let expires_in = parsed
            .expires_datetime()
            .map(|at| at - cookie::time::OffsetDateTime::now_utc());
        let lifetime = parsed.max_age().or(expires_in);
        change = Some(match lifetime {
            _ if parsed.value().is_empty() => CookieChange::Cleared,
            Some(left) if left <= cookie::time::Duration::ZERO => CookieChange::Cleared,
            _ => CookieChange::Set {
                value: parsed.value().to_string(),
                // A browser keeps it no longer, whatever the app asks (a Max-Age of 10^20).
                lifetime: lifetime
                    .and_then(|d| Duration::try_from(d).ok())
                    .map(|d| d.min(SESSION_LIFETIME_MAX)),
            },
        });
    }
    change
}

/// Removes every `Set-Cookie` of the app's cookie from a response; other cookies stay.
pub fn remove_session_set_cookies(headers: &mut HeaderMap, cookie_name: &str) {
    let kept: Vec<HeaderValue> = headers
        .get_all(SET_COOKIE)
        .iter()
        .filter(|header| set_cookie_named(header, cookie_name).is_none())
        .cloned()
        .collect();
    headers.remove(SET_COOKIE);
    for header in kept {
        headers.append(SET_COOKIE, header);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(format: IdFormat) -> SessionConfig {
        SessionConfig {
            cookie_name: "connect.sid".into(),
            id_format: format,
            idle_timeout: Duration::from_secs(60),
            absolute_lifetime: Duration::from_secs(600),
            max_sessions_per_user: 0,
            app_cookie_lifetime: None,
            duplicate_cookies: Default::default(),
        }
    }

    fn request(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for c in cookies {
            headers.append(COOKIE, HeaderValue::from_str(c).unwrap());
        }
        headers
    }

    const VECTOR_ID: &str = "kAuMTZsG0rGFHBzTdTRxWxg3XvRa4Rg_";
    const VECTOR_WIRE: &str =
        "s%3AkAuMTZsG0rGFHBzTdTRxWxg3XvRa4Rg_.EVZ80zzGIOx6wXZyoVdkFMPh7U%2F%2FjOF%2FRhgCOUTTWLA";

    #[test]
    fn express_test_vector_signs_and_verifies() {
        assert_eq!(
            express_sign(VECTOR_ID, "keyboard cat"),
            "s:kAuMTZsG0rGFHBzTdTRxWxg3XvRa4Rg_.EVZ80zzGIOx6wXZyoVdkFMPh7U//jOF/RhgCOUTTWLA"
        );
        let format = IdFormat::ExpressSigned {
            secrets: vec!["new secret".into(), "keyboard cat".into()],
        };
        let id = parse_session_cookie(VECTOR_WIRE, &format).expect("old secret verifies");
        assert_eq!(id.id, VECTOR_ID);
        assert_eq!(id.cookie_value(), VECTOR_WIRE);
    }

    #[test]
    fn express_rejects_tampering_and_unsigned_values() {
        let format = IdFormat::ExpressSigned {
            secrets: vec!["keyboard cat".into()],
        };
        let tampered = VECTOR_WIRE.replace("EVZ8", "EVZ9");
        assert!(parse_session_cookie(&tampered, &format).is_none());
        let other_id = VECTOR_WIRE.replace("kAuM", "kAuN");
        assert!(parse_session_cookie(&other_id, &format).is_none());
        assert!(
            parse_session_cookie(VECTOR_ID, &format).is_none(),
            "no s: prefix"
        );
        assert!(parse_session_cookie("s%3A", &format).is_none());
        assert!(parse_session_cookie("s:abc.%%%", &format).is_none());
        // `+` must not be read as a space: a signature with `+` still verifies exactly.
        let with_plus = express_sign("id+x", "k");
        let format = IdFormat::ExpressSigned {
            secrets: vec!["k".into()],
        };
        assert_eq!(
            parse_session_cookie(&with_plus, &format).unwrap().id,
            "id+x"
        );
    }

    #[test]
    fn jvm_route_splits_at_first_dot() {
        let id = parse_session_cookie(
            "0123456789ABCDEF0123456789ABCDEF.node1",
            &IdFormat::JvmRoute,
        )
        .unwrap();
        assert_eq!(id.id, "0123456789ABCDEF0123456789ABCDEF");
        assert_eq!(id.route(), Some("node1"));
        let same = parse_session_cookie(
            "0123456789ABCDEF0123456789ABCDEF.node2",
            &IdFormat::JvmRoute,
        )
        .unwrap();
        assert_eq!(
            id.hash(),
            same.hash(),
            "the route is not part of the session's identity"
        );
    }

    #[test]
    fn spring_session_base64_ids() {
        // Spring Session: SESSION = base64("<uuid>") or base64("<uuid>.<route>").
        let id = "0f2b6c5e-8d7a-4c1b-9e3f-2a1b0c9d8e7f";
        let value = base64::engine::general_purpose::STANDARD.encode(id);
        let parsed = parse_session_cookie(&value, &IdFormat::SpringBase64).unwrap();
        assert_eq!(parsed.id(), id);
        assert_eq!(parsed.route(), None);
        let routed = base64::engine::general_purpose::STANDARD.encode(format!("{id}.node2"));
        let parsed = parse_session_cookie(&routed, &IdFormat::SpringBase64).unwrap();
        assert_eq!((parsed.id(), parsed.route()), (id, Some("node2")));
        assert!(parse_session_cookie("not base64!", &IdFormat::SpringBase64).is_none());
        assert!(
            parse_session_cookie("//79", &IdFormat::SpringBase64).is_none(),
            "not UTF-8"
        );
    }

    /// Cookies encrypted by Laravel 8's own code (tests/data/make_laravel_cookies.php).
    #[test]
    fn laravel_cookies_decrypt_with_current_and_old_keys_only() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/laravel_cookies.json")).unwrap();
        let key = |which: &str| {
            LaravelKey::new(
                fixture["app_keys"][which].as_str().unwrap(),
                "laravel_session",
            )
            .unwrap()
        };
        let format = IdFormat::Laravel {
            keys: vec![key("current"), key("old")],
        };
        let mut same_id = Vec::new();
        for cookie in fixture["cookies"].as_array().unwrap() {
            let value = cookie["value"].as_str().unwrap();
            let parsed = parse_session_cookie(value, &format);
            let accepted = cookie["key"] != "other" && cookie["cookie_name"] == "laravel_session";
            assert_eq!(
                parsed.as_ref().map(SessionId::id),
                accepted.then(|| cookie["id"].as_str().unwrap()),
                "{}",
                cookie["name"]
            );
            if cookie["name"].as_str().unwrap().starts_with("the same id") {
                same_id.push(parsed.unwrap().hash());
            }
            // Tampering anywhere fails the MAC (or the envelope).
            let mut tampered = value.to_string();
            let at = tampered.len() / 2;
            let flipped = if &tampered[at..at + 1] == "A" {
                "B"
            } else {
                "A"
            };
            tampered.replace_range(at..at + 1, flipped);
            assert!(parse_session_cookie(&tampered, &format).is_none());
        }
        assert_eq!(same_id.len(), 2);
        assert_eq!(same_id[0], same_id[1], "re-encryption keeps the session");
        assert!(LaravelKey::new("base64:c2hvcnQ=", "laravel_session").is_none());
    }

    #[test]
    fn finds_cookie_among_others_and_across_headers_in_order() {
        let config = session(IdFormat::Plain);
        let headers = request(&[
            "a=1; connect.sid=first",
            "connect.sid=\"second\"; b=2",
            "connect.sid=first",
        ]);
        let found = session_cookies(&headers, &config);
        assert_eq!(
            found.ids.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["first", "second"]
        );
        assert!(found.conflicting);
    }

    #[test]
    fn odd_bytes_in_other_cookies_never_hide_the_session() {
        let config = session(IdFormat::Plain);
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_bytes(b"pref=caf\xc3\xa9; connect.sid=alice; x=\xff\xfe").unwrap(),
        );
        let found = session_cookies(&headers, &config);
        assert_eq!(
            found.ids.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["alice"]
        );
        assert!(!found.conflicting);
    }

    #[test]
    fn only_the_resolved_session_cookie_is_kept() {
        let config = session(IdFormat::Plain);
        let conflicting = |headers: &HeaderMap| session_cookies(headers, &config).conflicting;
        let mut headers = request(&[
            "a=1; connect.sid=alice; pref=caf\u{e9}",
            "connect.sid=\"bob\"; connect.sid=alice; b=2",
        ]);
        assert!(conflicting(&headers));
        keep_only_session_cookie(&mut headers, "connect.sid", "alice");
        let all: Vec<_> = headers.get_all(COOKIE).iter().collect();
        assert_eq!(
            all,
            ["a=1; connect.sid=alice; pref=caf\u{e9}; connect.sid=alice; b=2"]
        );
        assert!(!conflicting(&headers));
        assert!(!conflicting(&request(&[
            "connect.sid=a; connect.sid=a; x=1"
        ])));
    }

    #[test]
    fn malformed_cookie_headers_yield_nothing() {
        let config = session(IdFormat::Plain);
        for junk in [
            "",
            ";;;",
            "connect.sid",
            "connect.sid=",
            "=x",
            "connect.sid ; =;",
        ] {
            assert!(
                session_cookies(&request(&[junk]), &config).ids.is_empty(),
                "{junk:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.append(
            COOKIE,
            HeaderValue::from_bytes(b"connect.sid=\xff\xfe").unwrap(),
        );
        assert!(session_cookies(&headers, &config).ids.is_empty());
    }

    #[test]
    fn an_id_escaped_another_way_has_the_apps_spelling_among_its_variants() {
        let id = |v: &str| parse_session_cookie(v, &IdFormat::Plain).unwrap();
        assert!(id("t1xab12-_.*").escaped_variants().is_empty());
        assert!(id("%74%31xab")
            .escaped_variants()
            .contains(&id("t1xab").hash()));
        // Rack writes `=` and `/` escaped: any spelling of that cookie finds it.
        let rails = "ab%3D%3D--cd%2Fef";
        for spelling in ["ab==--cd/ef", "ab%3d%3d--cd%2fef", "%61b%3D%3D--cd%2Fef"] {
            let variants = id(spelling).escaped_variants();
            assert!(variants.contains(&id(rails).hash()), "{spelling}");
        }
        // `+` is a space to Rack and PHP, and what Rack writes for one.
        assert!(id("a%20b").escaped_variants().contains(&id("a+b").hash()));
    }

    #[test]
    fn debug_never_shows_the_raw_id() {
        let id = parse_session_cookie("supersecretvalue", &IdFormat::Plain).unwrap();
        assert!(!format!("{id:?}").contains("supersecret"));
        assert_eq!(SessionHash::parse(id.hash().as_str()), Some(id.hash()));
        assert_eq!(SessionHash::parse("xyz"), None);
    }

    #[test]
    fn session_hash_accepts_the_listed_form_and_the_earlier_hex_form() {
        let id = parse_session_cookie("supersecretvalue", &IdFormat::Plain).unwrap();
        let hash = id.hash();
        assert_eq!(hash.as_str().len(), 22);
        let hex = crate::hex_string(&Sha256::digest(b"supersecretvalue"));
        assert_eq!(hash.legacy_hex().as_deref(), Some(hex.as_str()));
        let from_hex = SessionHash::parse(&hex).unwrap();
        assert_eq!(from_hex, hash);
        assert_eq!(from_hex.as_str(), hash.as_str());
        // The listed form alone cannot name a key of the earlier layout.
        assert_eq!(
            SessionHash::parse(hash.as_str()).unwrap().legacy_hex(),
            None
        );
        // Stored records carry either form.
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{}\"", hash.as_str()));
        let old: SessionHash = serde_json::from_str(&format!("\"{hex}\"")).unwrap();
        assert_eq!(old, hash);
        // Non-canonical base64 (unused trailing bits) names no hash.
        let mut other = hash.as_str().to_string();
        let last = other.pop().unwrap();
        let alternative = if last == 'A' { 'B' } else { 'A' };
        other.push(alternative);
        assert!(SessionHash::parse(&other).is_none_or(|h| h.as_str() == other));
        assert_eq!(SessionHash::parse(&hex.to_uppercase()), None);
    }

    #[test]
    fn set_cookie_changes() {
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_static("other=1; Path=/"));
        assert_eq!(session_cookie_change(&headers, "connect.sid"), None);
        headers.append(
            SET_COOKIE,
            HeaderValue::from_static("connect.sid=abc; Path=/; HttpOnly"),
        );
        assert_eq!(
            session_cookie_change(&headers, "connect.sid"),
            Some(CookieChange::Set {
                value: "abc".into(),
                lifetime: None
            })
        );
        let persistent = HeaderMap::from_iter([(
            SET_COOKIE,
            HeaderValue::from_static("connect.sid=abc; Max-Age=2592000"),
        )]);
        assert_eq!(
            session_cookie_change(&persistent, "connect.sid"),
            Some(CookieChange::Set {
                value: "abc".into(),
                lifetime: Some(Duration::from_secs(2_592_000))
            })
        );
        // An app's lifetime beyond what browsers keep is read as their 400 days.
        for endless in [
            "connect.sid=abc; Max-Age=99999999999999999999",
            "connect.sid=abc; Expires=Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let headers = HeaderMap::from_iter([(SET_COOKIE, HeaderValue::from_static(endless))]);
            assert_eq!(
                session_cookie_change(&headers, "connect.sid"),
                Some(CookieChange::Set {
                    value: "abc".into(),
                    lifetime: Some(SESSION_LIFETIME_MAX)
                }),
                "{endless}"
            );
        }
        let mut response = HeaderMap::new();
        for header in [
            "connect.sid=; Path=/; Max-Age=0",
            "theme=dark; Path=/",
            "connect.sid=; Domain=example.test; Max-Age=0",
            "not a cookie",
        ] {
            response.append(SET_COOKIE, HeaderValue::from_static(header));
        }
        remove_session_set_cookies(&mut response, "connect.sid");
        let left: Vec<_> = response.get_all(SET_COOKIE).iter().collect();
        assert_eq!(left, ["theme=dark; Path=/", "not a cookie"]);
        for cleared in [
            "connect.sid=; Path=/",
            "connect.sid=abc; Max-Age=0",
            "connect.sid=abc; Expires=Thu, 01 Jan 1970 00:00:00 GMT",
        ] {
            let headers = HeaderMap::from_iter([(SET_COOKIE, HeaderValue::from_static(cleared))]);
            assert_eq!(
                session_cookie_change(&headers, "connect.sid"),
                Some(CookieChange::Cleared),
                "{cleared}"
            );
        }
    }
}
