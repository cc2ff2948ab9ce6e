//! `[identity]`: the headers that carry the identity to the app, how it is captured at login,
//! the app's logout signals, and the optional signature.

use super::super::defaults;
use super::super::error::{ConfigError, Problem};
use super::super::raw::{RawCapture, RawCaptureSource, RawIdentity, RawSignature};
use super::super::validated::{
    CaptureSource, IdentityConfig, IdentityHeaders, IdentityMapping, SignatureConfig,
};
use super::super::values::Text;
use super::whoami::FormatKeys;
use super::{pointer, Validator};
use http::HeaderName;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::Spanned;

/// Where one identity header was configured: `None` for a default.
type Origin = Option<(Range<usize>, String)>;

impl Validator<'_> {
    /// A configured header name, or `default`.
    fn header_or(
        &self,
        value: &Option<Spanned<Text>>,
        key: &str,
        default: &'static str,
    ) -> Result<HeaderName, ConfigError> {
        match value {
            Some(v) => self.header_name(v, key),
            None => Ok(HeaderName::from_static(default)),
        }
    }

    /// The owned headers and the JSON pointers of the identity, attributes included.
    fn identity_headers(
        &self,
        raw: &RawIdentity,
    ) -> Result<(IdentityHeaders, IdentityMapping, Vec<Origin>), ConfigError> {
        let origin = |value: &Option<Spanned<Text>>, key: &str| {
            value.as_ref().map(|v| (v.span(), key.to_string()))
        };
        let mut origins = vec![
            origin(&raw.user_header, "identity.user_header"),
            origin(&raw.roles_header, "identity.roles_header"),
            origin(&raw.email_header, "identity.email_header"),
        ];
        let mut headers = IdentityHeaders {
            user: self.header_or(
                &raw.user_header,
                "identity.user_header",
                defaults::USER_HEADER,
            )?,
            roles: self.header_or(
                &raw.roles_header,
                "identity.roles_header",
                defaults::ROLES_HEADER,
            )?,
            email: self.header_or(
                &raw.email_header,
                "identity.email_header",
                defaults::EMAIL_HEADER,
            )?,
            attributes: BTreeMap::new(),
        };
        let capture = &raw.capture;
        let mut mapping = IdentityMapping {
            user: pointer(capture.user.as_ref(), defaults::USER_POINTER),
            roles: pointer(capture.roles.as_ref(), defaults::ROLES_POINTER),
            email: pointer(capture.email.as_ref(), defaults::EMAIL_POINTER),
            attributes: BTreeMap::new(),
        };
        for (name, attribute) in &raw.attributes {
            let key = format!("identity.attributes.{name}");
            let value = attribute.get_ref();
            let header = HeaderName::from_bytes(value.header.0.as_bytes())
                .map_err(|_| self.err(attribute.span(), &key, Problem::BadAttributeHeader))?;
            if !value.pointer.0.is_empty() && !value.pointer.0.starts_with('/') {
                return Err(self.err(attribute.span(), &key, Problem::BadAttributePointer));
            }
            headers.attributes.insert(name.clone(), header);
            let pointer = value.pointer.0.clone();
            mapping.attributes.insert(name.clone(), pointer);
            origins.push(Some((attribute.span(), key)));
        }
        Ok((headers, mapping, origins))
    }

    /// No header is owned twice (names compared as proxies compare them). The error points at
    /// the one written in the file: of two configured ones, the later.
    fn headers_distinct(
        &self,
        headers: &IdentityHeaders,
        origins: &[Origin],
    ) -> Result<(), ConfigError> {
        let mut seen: Vec<(String, &Origin)> = Vec::new();
        for (name, origin) in headers.owned().zip(origins) {
            let normalized = crate::config::values::normalize_header_name(name.as_str());
            let Some((_, first)) = seen.iter().find(|(n, _)| *n == normalized) else {
                seen.push((normalized, origin));
                continue;
            };
            let problem = Problem::HeaderConfiguredTwice(name.to_string());
            return Err(match origin.as_ref().or(first.as_ref()) {
                Some((span, key)) => self.err(span.clone(), key, problem),
                // Two defaults never collide; kept for safety without a line.
                None => ConfigError::Parse {
                    path: self.path.to_path_buf(),
                    message: problem.to_string(),
                },
            });
        }
        Ok(())
    }

    fn capture(&self, raw: &RawCapture) -> Result<CaptureSource, ConfigError> {
        Ok(match raw.source {
            RawCaptureSource::Whoami => {
                let path = match &raw.whoami_path {
                    Some(p) if !p.get_ref().0.starts_with('/') => {
                        let key = "identity.capture.whoami_path";
                        return Err(self.err(p.span(), key, Problem::NoLeadingSlash));
                    }
                    Some(p) => p.get_ref().0.clone(),
                    None => defaults::WHOAMI_PATH.to_string(),
                };
                let keys = FormatKeys {
                    format: "identity.capture.whoami_format",
                    needs: "whoami_format = \"html\"",
                    table: "identity.capture",
                };
                CaptureSource::Whoami {
                    path,
                    timeout: raw.whoami_timeout.map_or(defaults::WHOAMI_TIMEOUT, |d| d.0),
                    format: self.whoami_format(&raw.whoami_format, raw.html_picks(), &keys)?,
                }
            }
            RawCaptureSource::ResponseHeader => CaptureSource::ResponseHeader {
                header: self.header_or(
                    &raw.response_header,
                    "identity.capture.response_header",
                    defaults::IDENTITY_RESPONSE_HEADER,
                )?,
            },
        })
    }

    fn signature(
        &self,
        raw: &Option<RawSignature>,
    ) -> Result<Option<SignatureConfig>, ConfigError> {
        let Some(signature) = raw else {
            return Ok(None);
        };
        let secret = signature.secret.get_ref().0.clone();
        if secret.len() < defaults::SIGNATURE_SECRET_MIN_LEN {
            let problem = Problem::WeakSecret {
                min: defaults::SIGNATURE_SECRET_MIN_LEN,
            };
            let key = "identity.signature.secret";
            return Err(self.err(signature.secret.span(), key, problem));
        }
        let header = self.header_or(
            &signature.header,
            "identity.signature.header",
            defaults::SIGNATURE_HEADER,
        )?;
        Ok(Some(SignatureConfig { secret, header }))
    }

    pub(super) fn identity(&self, raw: RawIdentity) -> Result<IdentityConfig, ConfigError> {
        let (headers, mapping, origins) = self.identity_headers(&raw)?;
        self.headers_distinct(&headers, &origins)?;
        Ok(IdentityConfig {
            capture: self.capture(&raw.capture)?,
            logout_all_header: self.header_or(
                &raw.logout_all_header,
                "identity.logout_all_header",
                defaults::LOGOUT_ALL_HEADER,
            )?,
            logout_header: self.header_or(
                &raw.logout_header,
                "identity.logout_header",
                defaults::LOGOUT_HEADER,
            )?,
            signature: self.signature(&raw.signature)?,
            headers,
            mapping,
        })
    }
}
