//! Finds the session a request belongs to, according to its route's migration mode.

use super::cookie::{SessionHash, SessionId};
use super::record::{now_ms, SessionRecord};
use super::store::{SessionStore, StoreError};
use crate::config::{Mode, SessionConfig};

/// A request's live session.
#[derive(Debug, Clone)]
pub struct ResolvedSession {
    pub id: SessionId,
    pub hash: SessionHash,
    pub record: SessionRecord,
}

/// The first of the request's session ids (in cookie order) that has a live session.
/// A store error is returned, never read as "no session": the caller fails closed.
pub async fn resolve_session(
    store: &SessionStore,
    session: &SessionConfig,
    mode: Mode,
    ids: &[SessionId],
) -> Result<Option<ResolvedSession>, StoreError> {
    match mode {
        Mode::Redis => {
            for id in ids {
                let hash = id.hash();
                if let Some(record) = store
                    .load(&hash, now_ms(), session.touch_interval())
                    .await?
                {
                    return Ok(Some(ResolvedSession {
                        id: id.clone(),
                        hash,
                        record,
                    }));
                }
            }
            Ok(None)
        }
    }
}
