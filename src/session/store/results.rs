//! What every store backend answers: a load's result, and the error a caller acts on (fail
//! closed, log once per outage).

use crate::session::record::SessionRecord;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer in time or at all; the caller fails closed.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// As `Unavailable`, in a run of failures whose first was already reported.
    #[error("session store unavailable (again): {0}")]
    Repeated(String),
    /// The store answered with an error (not an outage: it is reachable).
    #[error("session store refused the command: {0}")]
    Refused(String),
    /// Known down: the command was not sent. Logged once when the store went down.
    #[error("session store down for {:.1} s, not asked; waiting for Redis to answer again", .0.as_secs_f64())]
    Down(Duration),
}

impl StoreError {
    /// Whether the caller should log this failure: repeats and commands not sent during a
    /// known outage were reported once already, and logging each would flood the log.
    pub fn is_news(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Refused(_))
    }
}

/// What a write of a session "if absent" found: nothing (so it wrote, or in a check would
/// write), a session of that id already, or the marker of an id that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfAbsent {
    Written,
    Present,
    Ended,
}

/// What the store holds for a session id.
// `Live` is what nearly every lookup returns: boxing it would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    Live(SessionRecord),
    /// Logged out during a migration: old stores must not bring it back.
    Ended,
    Missing,
}
