//! Who may use the admin API: scripts send the token as a bearer token; people log in once with
//! it and get a cookie that is not the token (an HMAC of it under a key made at start, with its
//! issue time), and a form token derived from that cookie for every state-changing form.

use super::constant_time_eq;
use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;
use rand::RngCore;
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The dashboard's login cookie.
pub const COOKIE_NAME: &str = "unstick_admin";

/// A login lasts this long; logging in again is one form.
pub const LOGIN_LIFETIME: Duration = Duration::from_secs(8 * 3600);

pub struct Login {
    /// One SHA-256 block: HMAC's own key size, so no key length can be refused.
    key: [u8; 64],
}

/// A fresh key: logins from before a restart end with it.
impl Default for Login {
    fn default() -> Login {
        let mut key = [0u8; 64];
        rand::thread_rng().fill_bytes(&mut key);
        Login { key }
    }
}

impl Login {
    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new(&self.key.into());
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        crate::hex_string(&mac.finalize().into_bytes())
    }

    /// Whether the request carries `Authorization: Bearer <token>`.
    pub fn bearer_matches(&self, headers: &HeaderMap, token: &str) -> bool {
        let given = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    /// The login cookie's value for someone who gave `token` now: `<issued>.<mac>`.
    pub fn cookie_value(&self, token: &str) -> String {
        let issued = unix_secs().to_string();
        let mac = self.mac(&[b"login", token.as_bytes(), issued.as_bytes()]);
        format!("{issued}.{mac}")
    }

    /// The request's login cookie value, when it was issued for `token` and is still valid.
    pub fn logged_in(&self, headers: &HeaderMap, token: &str) -> Option<String> {
        let value = cookie(headers, COOKIE_NAME)?;
        let (issued, mac) = value.split_once('.')?;
        let age = unix_secs().checked_sub(issued.parse::<u64>().ok()?)?;
        if age > LOGIN_LIFETIME.as_secs() {
            return None;
        }
        let expected = self.mac(&[b"login", token.as_bytes(), issued.as_bytes()]);
        constant_time_eq(mac.as_bytes(), expected.as_bytes()).then(|| value.to_string())
    }

    /// The form token of a login: a page of another site cannot read it, so it cannot post
    /// a form that carries it (the cookie is `SameSite=Strict` besides).
    pub fn form_token(&self, login: &str) -> String {
        self.mac(&[b"form", login.as_bytes()])
    }

    pub fn form_token_matches(&self, login: &str, given: &str) -> bool {
        constant_time_eq(given.as_bytes(), self.form_token(login).as_bytes())
    }
}

/// `Set-Cookie` for a login (`value`), or clearing it (`None`). Scoped to the dashboard; not
/// readable by scripts; never sent with a request another site starts. (`Secure` is left out:
/// the admin listener speaks plain HTTP, on loopback by default.)
pub fn set_cookie(value: Option<&str>) -> String {
    let path = super::dashboard::PATH;
    match value {
        Some(value) => format!(
            "{COOKIE_NAME}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={}",
            LOGIN_LIFETIME.as_secs()
        ),
        None => format!("{COOKIE_NAME}=; Path={path}; HttpOnly; SameSite=Strict; Max-Age=0"),
    }
}

/// The value of the first cookie called `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(n, v)| (n == name).then_some(v))
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let cookie = format!("other=1; {COOKIE_NAME}={value}");
        headers.insert(COOKIE, HeaderValue::from_str(&cookie).unwrap());
        headers
    }

    #[test]
    fn the_cookie_is_not_the_token_and_is_bound_to_it_and_to_the_process() {
        let login = Login::default();
        let value = login.cookie_value("secret-token");
        assert!(!value.contains("secret-token"));
        let headers = with_cookie(&value);
        assert_eq!(
            login.logged_in(&headers, "secret-token"),
            Some(value.clone())
        );
        assert_eq!(login.logged_in(&headers, "rotated-token"), None);
        assert_eq!(Login::default().logged_in(&headers, "secret-token"), None);
        let forged = format!("{}.{}", unix_secs(), "0".repeat(64));
        assert_eq!(login.logged_in(&with_cookie(&forged), "secret-token"), None);
        let old = unix_secs() - LOGIN_LIFETIME.as_secs() - 1;
        let mac = login.mac(&[b"login", b"secret-token", old.to_string().as_bytes()]);
        let expired = format!("{old}.{mac}");
        assert_eq!(
            login.logged_in(&with_cookie(&expired), "secret-token"),
            None
        );
    }

    #[test]
    fn the_form_token_belongs_to_one_login() {
        let login = Login::default();
        let (a, b) = (login.cookie_value("t"), format!("1.{}", "f".repeat(64)));
        assert!(login.form_token_matches(&a, &login.form_token(&a)));
        assert!(!login.form_token_matches(&a, &login.form_token(&b)));
        assert!(!login.form_token_matches(&a, ""));
    }
}
