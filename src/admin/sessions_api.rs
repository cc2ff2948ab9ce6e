//! Operators' actions on sessions, shared by the JSON API and the dashboard's forms:
//!
//! - `GET /sessions?user=U`: the user's sessions (hashed ids, device, IP, times).
//! - `DELETE /sessions/<id-hash>`: end one session.
//! - `DELETE /sessions?user=U`: end every session of the user ("log out everywhere").

use super::{json, text, Admin};
use crate::body::Body;
use crate::session::users::{self, SessionSummary};
use crate::session::{SessionHash, StoreError};
use http::{Response, StatusCode};

impl Admin {
    /// The user's live sessions, oldest first.
    pub(super) async fn sessions_of(&self, user: &str) -> Result<Vec<SessionSummary>, StoreError> {
        users::list(&self.proxy.live().sessions.store, user).await
    }

    /// Ends one session (with every id the app gave it); `false` when it was not live.
    pub(super) async fn revoke_session(&self, hash: &SessionHash) -> Result<bool, StoreError> {
        let live = self.proxy.live();
        let remember = live.config.session.absolute_lifetime;
        let revoked = users::revoke(&live.sessions.store, hash, remember).await?;
        if revoked {
            self.metrics.sessions_revoked.inc();
        }
        Ok(revoked)
    }

    /// Ends every session of the user; returns how many were live.
    pub(super) async fn revoke_user_sessions(&self, user: &str) -> Result<usize, StoreError> {
        let live = self.proxy.live();
        let remember = live.config.session.absolute_lifetime;
        let count = users::revoke_user(&live.sessions.store, user, remember).await?;
        self.metrics.sessions_revoked.inc_by(count as u64);
        Ok(count)
    }

    pub(super) async fn list_json(&self, user: Option<&String>) -> Response<Body> {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return text(StatusCode::BAD_REQUEST, "give ?user=<user id>\n");
        };
        match self.sessions_of(user).await {
            Ok(sessions) => json(
                StatusCode::OK,
                &serde_json::json!({ "user": user, "sessions": sessions }),
            ),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        }
    }

    pub(super) async fn revoke_json(&self, id_hash: &str) -> Response<Body> {
        let Some(hash) = SessionHash::parse(id_hash) else {
            return text(
                StatusCode::BAD_REQUEST,
                "expected a 64-character session id hash\n",
            );
        };
        match self.revoke_session(&hash).await {
            Ok(true) => json(StatusCode::OK, &serde_json::json!({ "revoked": 1 })),
            Ok(false) => json(StatusCode::NOT_FOUND, &serde_json::json!({ "revoked": 0 })),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        }
    }

    pub(super) async fn revoke_user_json(&self, user: Option<&String>) -> Response<Body> {
        let Some(user) = user.filter(|u| !u.is_empty()) else {
            return text(StatusCode::BAD_REQUEST, "give ?user=<user id>\n");
        };
        match self.revoke_user_sessions(user).await {
            Ok(count) => json(StatusCode::OK, &serde_json::json!({ "revoked": count })),
            Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        }
    }
}
