//! `[session]`: the app's cookie, how the session id is written in it, and the lifetimes of
//! sessions in Redis.

use super::super::defaults;
use super::super::error::{ConfigError, Problem};
use super::super::raw::{RawDuplicateCookies, RawIdFormat, RawSession};
use super::super::validated::{DuplicateCookies, IdFormat, LaravelKey, SessionConfig};
use super::super::values::Text;
use super::Validator;
use toml::Spanned;

impl Validator<'_> {
    fn cookie_name(&self, raw: &Spanned<Text>) -> Result<String, ConfigError> {
        let name = raw.get_ref().0.clone();
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || "=;,\"".contains(c)) {
            return Err(self.err(raw.span(), "session.cookie", Problem::BadCookieName));
        }
        Ok(name)
    }

    fn id_format(
        &self,
        raw: &Spanned<RawIdFormat>,
        secrets: Vec<Text>,
        cookie_name: &str,
    ) -> Result<IdFormat, ConfigError> {
        let refused = |problem| self.err(raw.span(), "session.secrets", problem);
        Ok(match raw.get_ref() {
            RawIdFormat::Plain => IdFormat::Plain,
            RawIdFormat::JvmRoute => IdFormat::JvmRoute,
            RawIdFormat::SpringBase64 => IdFormat::SpringBase64,
            RawIdFormat::ExpressSigned => {
                let secrets: Vec<String> = secrets.into_iter().map(|s| s.0).collect();
                if secrets.is_empty() || secrets.iter().any(String::is_empty) {
                    return Err(refused(Problem::NoExpressSecrets));
                }
                IdFormat::ExpressSigned { secrets }
            }
            RawIdFormat::Laravel => {
                if secrets.is_empty() {
                    return Err(refused(Problem::BadLaravelKeys));
                }
                let mut keys = Vec::new();
                for secret in &secrets {
                    let key = LaravelKey::new(&secret.0, cookie_name)
                        .ok_or_else(|| refused(Problem::BadLaravelKeys))?;
                    keys.push(key);
                }
                IdFormat::Laravel { keys }
            }
        })
    }

    pub(super) fn session(&self, raw: RawSession) -> Result<SessionConfig, ConfigError> {
        let cookie_name = self.cookie_name(&raw.cookie)?;
        let id_format = self.id_format(&raw.id_format, raw.secrets, &cookie_name)?;
        let idle_timeout = raw.idle_timeout.get_ref().0;
        let absolute_lifetime = raw.absolute_lifetime.get_ref().0;
        if idle_timeout < defaults::IDLE_TIMEOUT_MIN {
            let problem = Problem::TooShort {
                min: defaults::IDLE_TIMEOUT_MIN,
            };
            return Err(self.err(raw.idle_timeout.span(), "session.idle_timeout", problem));
        }
        if absolute_lifetime > defaults::SESSION_LIFETIME_MAX {
            let problem = Problem::TooLong {
                max: defaults::SESSION_LIFETIME_MAX,
            };
            return Err(self.err(
                raw.absolute_lifetime.span(),
                "session.absolute_lifetime",
                problem,
            ));
        }
        if absolute_lifetime < idle_timeout {
            return Err(self.err(
                raw.absolute_lifetime.span(),
                "session.absolute_lifetime",
                Problem::LifetimeBelowIdleTimeout,
            ));
        }
        Ok(SessionConfig {
            cookie_name,
            id_format,
            idle_timeout,
            absolute_lifetime,
            max_sessions_per_user: raw.max_sessions_per_user,
            app_cookie_lifetime: raw.app_cookie_lifetime.map(|d| d.0),
            duplicate_cookies: match raw.duplicate_cookies {
                None | Some(RawDuplicateCookies::KeepResolved) => DuplicateCookies::KeepResolved,
                Some(RawDuplicateCookies::Refuse) => DuplicateCookies::Refuse,
            },
        })
    }
}
