//! `[listener]` (with `[listener.tls]`) and `[admin]`: addresses to bind and the limits of
//! client connections.

use super::super::defaults;
use super::super::error::{ConfigError, Problem};
use super::super::raw::{RawAdmin, RawListener, RawListenerRuntime};
use super::super::validated::{AdminConfig, ListenerConfig, ListenerRuntime, TlsListenerConfig};
use super::super::values::{HumanDuration, Text};
use super::Validator;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn address(
        &self,
        value: &Spanned<Text>,
        key: &str,
    ) -> Result<SocketAddr, ConfigError> {
        value
            .get_ref()
            .0
            .trim()
            .parse()
            .map_err(|_| self.err(value.span(), key, Problem::NotASocketAddress))
    }

    pub(super) fn admin(&self, raw: Option<RawAdmin>) -> Result<Option<AdminConfig>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        let address = match &raw.address {
            Some(address) => self.address(address, "admin.address")?,
            None => defaults::ADMIN_ADDRESS,
        };
        let token_env = raw
            .token_env
            .map_or_else(|| defaults::ADMIN_TOKEN_ENV.to_string(), |t| t.0);
        let token = std::env::var(&token_env).ok().filter(|t| !t.is_empty());
        Ok(Some(AdminConfig {
            address,
            token,
            token_env,
        }))
    }

    /// A timeout that, when given, is more than zero.
    pub(super) fn positive(
        &self,
        value: Option<Spanned<HumanDuration>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            Some(d) if d.get_ref().0.is_zero() => {
                Err(self.err(d.span(), key, Problem::NotPositive))
            }
            Some(d) => Ok(d.into_inner().0),
            None => Ok(default),
        }
    }

    pub(super) fn listener(&self, raw: RawListener) -> Result<ListenerConfig, ConfigError> {
        let address = self.address(&raw.address, "listener.address")?;
        let tls = match raw.tls {
            Some(tls) => Some(TlsListenerConfig {
                address: self.address(&tls.address, "listener.tls.address")?,
                cert: PathBuf::from(&tls.cert.get_ref().0),
                key: PathBuf::from(&tls.key.get_ref().0),
            }),
            None => None,
        };
        let max_connections = match raw.max_connections {
            Some(n) if *n.get_ref() == 0 => {
                let key = "listener.max_connections";
                return Err(self.err(n.span(), key, Problem::NoConnections));
            }
            Some(n) => Some(n.into_inner()),
            None => None,
        };
        Ok(ListenerConfig {
            address,
            shutdown_grace: raw.shutdown_grace.map_or(defaults::SHUTDOWN_GRACE, |d| d.0),
            trust_forwarded_headers: raw.trust_forwarded_headers,
            header_timeout: self.positive(
                raw.header_timeout,
                "listener.header_timeout",
                defaults::HEADER_TIMEOUT,
            )?,
            idle_timeout: self.positive(
                raw.idle_timeout,
                "listener.idle_timeout",
                defaults::IDLE_TIMEOUT,
            )?,
            body_timeout: self.positive(
                raw.body_timeout,
                "listener.body_timeout",
                defaults::BODY_TIMEOUT,
            )?,
            max_connections,
            runtime: match raw.runtime {
                None => defaults::LISTENER_RUNTIME,
                Some(RawListenerRuntime::MultiThread) => ListenerRuntime::MultiThread,
                Some(RawListenerRuntime::PerCore) => ListenerRuntime::PerCore,
            },
            tls,
        })
    }
}
