//! `[[upstreams]]`: the app's instances, their health check, and how the old balancer's
//! cookie and route suffixes name them.

use super::super::defaults;
use super::super::error::{ConfigError, Problem};
use super::super::raw::{RawHealthCheck, RawInstance, RawLbCookie, RawUpstream};
use super::super::validated::{HealthCheckConfig, InstanceConfig, LbCookieConfig, UpstreamConfig};
use super::Validator;
use std::collections::BTreeMap;
use toml::Spanned;

impl Validator<'_> {
    pub(super) fn upstreams(
        &self,
        raw: Vec<RawUpstream>,
    ) -> Result<Vec<UpstreamConfig>, ConfigError> {
        let mut upstreams: Vec<UpstreamConfig> = Vec::new();
        for upstream in raw {
            if upstreams.iter().any(|u| u.name == *upstream.name.get_ref()) {
                let problem = Problem::NameTaken("upstreams");
                return Err(self.err(upstream.name.span(), "upstreams.name", problem));
            }
            upstreams.push(self.upstream(upstream)?);
        }
        Ok(upstreams)
    }

    /// One instance: a name unique in its upstream and a plain `http://host:port`.
    fn instance(
        &self,
        raw: RawInstance,
        upstream: &str,
        instances: &[InstanceConfig],
    ) -> Result<InstanceConfig, ConfigError> {
        let key = format!("upstreams.{upstream}.instances.url");
        let span = raw.url.span();
        let url = &raw.url.get_ref().0;
        let uri: http::Uri = url
            .parse()
            .map_err(|_| self.err(span.clone(), &key, Problem::NotAUrl(url.clone())))?;
        if uri.scheme_str() != Some("http") || uri.port_u16().is_none() {
            return Err(self.err(span, &key, Problem::NotHttpWithPort));
        }
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(self.err(span, &key, Problem::UrlWithPath));
        }
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        if instances.iter().any(|i| i.name == *raw.name.get_ref()) {
            return Err(self.err(
                raw.name.span(),
                format!("upstreams.{upstream}.instances.name"),
                Problem::NameTaken("instances"),
            ));
        }
        Ok(InstanceConfig {
            name: raw.name.into_inner(),
            authority,
        })
    }

    fn health_check(
        &self,
        raw: Option<RawHealthCheck>,
        upstream: &str,
    ) -> Result<Option<HealthCheckConfig>, ConfigError> {
        let Some(check) = raw else { return Ok(None) };
        if !check.path.get_ref().0.starts_with('/') {
            return Err(self.err(
                check.path.span(),
                format!("upstreams.{upstream}.health_check.path"),
                Problem::NoLeadingSlash,
            ));
        }
        Ok(Some(HealthCheckConfig {
            path: check.path.into_inner().0,
            interval: check
                .interval
                .map_or(defaults::HEALTH_CHECK_INTERVAL, |d| d.0),
            timeout: check
                .timeout
                .map_or(defaults::HEALTH_CHECK_TIMEOUT, |d| d.0),
        }))
    }

    /// An instance name used by `jvm_routes` or `lb_cookie`, which must be in the upstream.
    fn known_instance(
        &self,
        value: &Spanned<String>,
        upstream: &str,
        instances: &[InstanceConfig],
        key: &str,
    ) -> Result<String, ConfigError> {
        if instances.iter().any(|i| i.name == *value.get_ref()) {
            return Ok(value.get_ref().clone());
        }
        Err(self.err(
            value.span(),
            format!("upstreams.{upstream}.{key}"),
            Problem::UnknownInstance(value.get_ref().clone()),
        ))
    }

    fn lb_cookie(
        &self,
        raw: Option<Spanned<RawLbCookie>>,
        upstream: &str,
        instances: &[InstanceConfig],
    ) -> Result<Option<LbCookieConfig>, ConfigError> {
        let Some(cookie) = raw else { return Ok(None) };
        let span = cookie.span();
        let cookie = cookie.into_inner();
        let mut values = BTreeMap::new();
        for (value, instance) in cookie.values {
            let spanned = Spanned::new(span.clone(), instance);
            let instance =
                self.known_instance(&spanned, upstream, instances, "lb_cookie.values")?;
            values.insert(value, instance);
        }
        Ok(Some(LbCookieConfig {
            name: cookie.name,
            values,
        }))
    }

    fn upstream(&self, raw: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
        let name = raw.name.get_ref().clone();
        if raw.instances.get_ref().is_empty() {
            return Err(self.err(
                raw.instances.span(),
                format!("upstreams.{name}.instances"),
                Problem::NoInstances,
            ));
        }
        let mut instances: Vec<InstanceConfig> = Vec::new();
        for instance in raw.instances.into_inner() {
            let instance = self.instance(instance, &name, &instances)?;
            instances.push(instance);
        }
        let health_check = self.health_check(raw.health_check, &name)?;
        let mut jvm_routes = BTreeMap::new();
        for (route, instance) in &raw.jvm_routes {
            let instance = self.known_instance(instance, &name, &instances, "jvm_routes")?;
            jvm_routes.insert(route.clone(), instance);
        }
        let lb_cookie = self.lb_cookie(raw.lb_cookie, &name, &instances)?;
        Ok(UpstreamConfig {
            jvm_routes,
            lb_cookie,
            name,
            instances,
            connect_timeout: raw
                .connect_timeout
                .map_or(defaults::UPSTREAM_CONNECT_TIMEOUT, |d| d.0),
            response_timeout: raw
                .response_timeout
                .map_or(defaults::RESPONSE_TIMEOUT, |d| d.0),
            max_idle_per_instance: raw
                .max_idle_per_instance
                .unwrap_or(defaults::MAX_IDLE_PER_INSTANCE),
            health_check,
        })
    }
}
