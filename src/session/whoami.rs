//! Asks the app who owns a session cookie: `GET <whoami path>` on a given instance with only
//! that cookie, its JSON answer or HTML page mapped to an [`Identity`]. Used when a login is
//! seen and, during a migration, as an old store. Needs no change to the app.

use super::mapping::{identity_from_html, identity_from_json};
use super::record::Identity;
use crate::body;
use crate::config::{IdentityMapping, WhoamiFormat};
use crate::upstream::{Instance, UpstreamPool};
use http::header::{ACCEPT, COOKIE, HOST, USER_AGENT};
use http::Request;
use http_body_util::{BodyExt, Limited};
use std::time::Duration;

/// The largest identity document (or page) read from the app.
const MAX_WHOAMI_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WhoamiError {
    #[error("whoami request to {instance} failed: {reason}")]
    Unreachable { instance: String, reason: String },
    #[error("whoami answer from {instance} is not usable: {reason}")]
    BadAnswer { instance: String, reason: String },
}

/// Where and how to ask.
pub struct WhoamiCall<'a> {
    pub path: &'a str,
    pub cookie_name: &'a str,
    /// The cookie value exactly as the browser will send it.
    pub cookie_value: &'a str,
    /// The Host of the user's request (virtual-hosted apps need it).
    pub host: Option<&'a str>,
    pub timeout: Duration,
    pub format: &'a WhoamiFormat,
    /// The JSON pointers, for [`WhoamiFormat::Json`].
    pub mapping: &'a IdentityMapping,
}

/// `Ok(None)`: the app answered that the cookie belongs to no user (or not 2xx).
pub async fn ask_whoami(
    pool: &UpstreamPool,
    instance: &Instance,
    call: &WhoamiCall<'_>,
) -> Result<Option<Identity>, WhoamiError> {
    let bad = |reason: String| WhoamiError::BadAnswer {
        instance: instance.name.clone(),
        reason,
    };
    let request = Request::get(call.path)
        .header(HOST, call.host.unwrap_or(&instance.authority))
        .header(
            COOKIE,
            format!("{}={}", call.cookie_name, call.cookie_value),
        )
        .header(
            ACCEPT,
            match call.format {
                WhoamiFormat::Json => "application/json",
                WhoamiFormat::Html(_) => "text/html",
            },
        )
        .header(USER_AGENT, "unstick-whoami")
        .body(body::empty())
        .map_err(|e| bad(e.to_string()))?;
    let response = pool
        .send_to(instance, request, call.timeout)
        .await
        .map_err(|e| WhoamiError::Unreachable {
            instance: instance.name.clone(),
            reason: e.to_string(),
        })?;
    if !response.status().is_success() {
        return Ok(None);
    }
    let bytes = tokio::time::timeout(
        call.timeout,
        Limited::new(response.into_body(), MAX_WHOAMI_BYTES).collect(),
    )
    .await
    .map_err(|_| bad("body not received in time".into()))?
    .map_err(|e| bad(e.to_string()))?
    .to_bytes();
    match call.format {
        WhoamiFormat::Json => {
            let doc: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
            Ok(identity_from_json(&doc, call.mapping))
        }
        WhoamiFormat::Html(html) => Ok(identity_from_html(&String::from_utf8_lossy(&bytes), html)),
    }
}
