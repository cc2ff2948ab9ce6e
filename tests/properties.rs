//! Property tests for every parser that reads bytes a client, an app or an old store controls:
//! generated inputs never panic, and the promises hold for all of them (the session cookie is
//! found among any other cookies; every spelling of an owned header is stripped).
//!
//! 10,000 cases per property by default; a long run:
//! `PROPTEST_CASES=1000000 cargo test --release --test properties`.

use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::LazyLock;
use unstick::config::{parse_config, Config, IdFormat, LaravelKey, SessionConfig};
use unstick::proxy::headers::{strip_reserved_headers, OwnedHeaders};
use unstick::session::cookie::{
    keep_only_session_cookie, parse_session_cookie, session_cookie_change, session_cookies,
};
use unstick::session::old_stores::django::{DjangoSigner, SESSION_SALT};
use unstick::session::old_stores::php_serialize::{decode_session, unserialize};

fn cases() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    ProptestConfig {
        // A failing input is printed, minimal, in the test output; nothing is written to disk.
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// [`MINIMAL_CONFIG`], parsed once.
static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    parse_config(MINIMAL_CONFIG, Path::new("properties.toml")).expect("the minimal config is valid")
});

fn session(format: IdFormat) -> SessionConfig {
    let mut config = CONFIG.session.clone();
    config.id_format = format;
    config
}

const MINIMAL_CONFIG: &str = r#"
[listener]
address = "127.0.0.1:0"

[redis]
url = "memory://"

[session]
cookie = "sid"
id_format = "plain"
idle_timeout = "30m"
absolute_lifetime = "12h"

[[upstreams]]
name = "app"
instances = [{ name = "a", url = "http://127.0.0.1:9" }]

[[routes]]
upstream = "app"
mode = "redis"
logout_paths = ["/logout"]
"#;

fn formats() -> impl Strategy<Value = IdFormat> {
    prop_oneof![
        Just(IdFormat::Plain),
        Just(IdFormat::JvmRoute),
        Just(IdFormat::SpringBase64),
        Just(IdFormat::ExpressSigned {
            secrets: vec!["keyboard cat".into()]
        }),
        Just(IdFormat::Laravel {
            keys: vec![LaravelKey::new(
                "base64:SO2XluO/WspNOBB7lxTNUUet6ro/M4UvgXo/7eFtbh8=",
                "sid"
            )
            .expect("a 32-byte key")]
        }),
    ]
}

/// A header value of any bytes a header may hold (no CR, LF or NUL).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff];
    proptest::collection::vec(byte, 0..200)
}

/// A cookie pair that is not the session cookie: any name but `sid`, any value bytes
/// without `;`.
fn other_cookie() -> impl Strategy<Value = Vec<u8>> {
    (
        "[a-zA-Z0-9_.-]{1,12}".prop_filter("not the session cookie", |n| n != "sid"),
        proptest::collection::vec(
            prop_oneof![Just(b'\t'), 0x20u8..b';', (b';' + 1)..0x7f, 0x80u8..=0xff],
            0..30,
        ),
    )
        .prop_map(|(name, value)| {
            let mut pair = name.into_bytes();
            pair.push(b'=');
            pair.extend(value);
            pair
        })
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn any_cookie_header_parses_without_panic(bytes in header_bytes(), format in formats()) {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_bytes(&bytes).unwrap());
        let config = session(format);
        let found = session_cookies(&headers, &config);
        prop_assert!(found.ids.len() <= 4);
        if found.conflicting {
            keep_only_session_cookie(&mut headers, "sid", "x");
            prop_assert!(!session_cookies(&headers, &config).conflicting);
        }
    }

    #[test]
    fn any_cookie_value_parses_without_panic(value in ".{0,300}", format in formats()) {
        if let Some(id) = parse_session_cookie(&value, &format) {
            prop_assert!(!id.id().is_empty());
            prop_assert_eq!(id.cookie_value(), value.as_str());
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_any_other_cookies(
        before in proptest::collection::vec(other_cookie(), 0..5),
        after in proptest::collection::vec(other_cookie(), 0..5),
        id in "[A-Za-z0-9_-]{1,64}",
    ) {
        let mut pairs = before;
        pairs.push(format!("sid={id}").into_bytes());
        pairs.extend(after);
        let header = pairs.join(&b"; "[..]);
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_bytes(&header).unwrap());
        let ids = session_cookies(&headers, &session(IdFormat::Plain)).ids;
        prop_assert_eq!(ids.len(), 1);
        prop_assert_eq!(ids[0].id(), id.as_str());
    }

    #[test]
    fn any_set_cookie_parses_without_panic(bytes in header_bytes()) {
        let mut headers = HeaderMap::new();
        headers.append(SET_COOKIE, HeaderValue::from_bytes(&bytes).unwrap());
        let _ = session_cookie_change(&headers, "sid");
    }

    #[test]
    fn every_spelling_of_an_owned_header_is_stripped(
        name in prop_oneof![Just("x-auth-user"), Just("x-auth-roles"), Just("x-unstick-logout")],
        flips in proptest::collection::vec(any::<(bool, bool)>(), 16),
        others in proptest::collection::vec("[a-z][a-z0-9-]{0,15}", 0..6),
    ) {
        // Any mix of upper and lower case, and of `_` for `-`.
        let spelled: String = name
            .chars()
            .zip(flips.iter().cycle())
            .map(|(c, (upper, underscore))| match c {
                '-' if *underscore => '_',
                c if *upper => c.to_ascii_uppercase(),
                c => c,
            })
            .collect();
        let owned = OwnedHeaders::new(CONFIG.identity.headers.owned());
        let mut headers = HeaderMap::new();
        headers.append(HeaderName::from_bytes(spelled.as_bytes()).unwrap(), HeaderValue::from_static("mallory"));
        let mut kept = Vec::new();
        for other in &others {
            if other.starts_with("x-auth-") || other.starts_with("x-unstick-") {
                continue;
            }
            headers.append(HeaderName::from_bytes(other.as_bytes()).unwrap(), HeaderValue::from_static("1"));
            kept.push(other.clone());
        }
        strip_reserved_headers(&mut headers, &owned);
        let left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        prop_assert!(!left.iter().any(|n| n.replace('_', "-") == name), "{} survived", spelled);
        for other in &kept {
            prop_assert!(left.contains(&other.as_str()), "{} was stripped", other);
        }
    }

    #[test]
    fn any_php_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = unserialize(&bytes);
        let _ = decode_session(&bytes);
    }

    #[test]
    fn php_payloads_cut_or_changed_decode_without_panic(
        payload in php_payloads(),
        cut in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let _ = decode_session(&payload[..cut.index(payload.len() + 1)]);
        let mut changed = payload.clone();
        if !changed.is_empty() {
            let i = at.index(changed.len());
            changed[i] = byte;
        }
        let _ = decode_session(&changed);
    }

    #[test]
    fn any_signed_django_value_decodes_without_panic(
        payload in prop_oneof![".{0,200}", "\\.[A-Za-z0-9_-]{0,200}", "eyJ[A-Za-z0-9_-]{0,200}"],
        timestamp in "-?[0-9a-zA-Z]{0,12}",
    ) {
        // Signed with the real key, so the decoder goes past the signature into the payload.
        let secret = "unstick-test-secret-key-0123456789";
        let value = format!("{payload}:{timestamp}");
        let signed = format!("{value}:{}", django_signature(secret, &value));
        let _ = DjangoSigner::for_sessions(&[secret.to_string()]).decode(&signed);
        let _ = DjangoSigner::for_sessions(&[secret.to_string()]).decode(&payload);
    }

    #[test]
    fn a_config_with_any_edit_is_accepted_or_refused_without_panic(
        at in any::<prop::sample::Index>(),
        remove in 0usize..20,
        insert in "[ -~\n]{0,20}",
    ) {
        let mut text = MINIMAL_CONFIG.to_string();
        let mut start = at.index(text.len() + 1);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (start + remove).min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.replace_range(start..end, &insert);
        if let Err(error) = parse_config(&text, Path::new("edited.toml")) {
            prop_assert!(error.to_string().contains("edited.toml"), "{}", error);
        }
    }
}

/// Real PHP session payloads (tests/data/php_sessions.json, written by PHP itself).
fn php_payloads() -> impl Strategy<Value = Vec<u8>> {
    let fixtures: serde_json::Value =
        serde_json::from_str(include_str!("data/php_sessions.json")).expect("fixture is JSON");
    let payloads: Vec<Vec<u8>> = fixtures["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter_map(|s| s["data_base64"].as_str())
        .filter_map(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .collect();
    prop::sample::select(payloads)
}

/// `django.core.signing`'s signature of `value` for sessions: b64url(HMAC-SHA256(
/// SHA256(salt + "signer" + secret), value)) without padding.
fn django_signature(secret: &str, value: &str) -> String {
    let key = Sha256::digest(format!("{SESSION_SALT}signer{secret}").as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(value.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}
