//! PHP's default `files` session handler: `<save_path>/sess_<id>`, live while its mtime plus
//! `session.gc_maxlifetime` is in the future. Laravel's file driver is the same with no
//! prefix (`storage/framework/sessions/<id>`, one `serialize()`d array, `SESSION_LIFETIME`). The id comes from a cookie, so only ids PHP itself
//! would accept become a path; anything else is a miss without touching the disk.

use super::php_serialize;
use crate::config::IdentityMapping;
use crate::session::cookie::SessionId;
use crate::session::old_store::{found, unavailable, unreadable};
use crate::session::old_store::{LookupContext, OldSession, OldStore, OldStoreError};
use async_trait::async_trait;
use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Session files larger than this are not read (PHP sessions are usually under a few KiB).
const MAX_FILE_BYTES: u64 = 4 << 20;

pub struct PhpFilesStore {
    name: String,
    dir: PathBuf,
    /// Before the id in a file name: `sess_` for PHP, empty for Laravel.
    file_prefix: String,
    gc_maxlifetime: Duration,
    mapping: IdentityMapping,
}

/// PHP's own id alphabet (`session.sid_bits_per_character` 4, 5 or 6 gives `[0-9a-v]`,
/// `[0-9a-zA-Z,-]`). No `/`, `.` or NUL can reach a path.
fn valid_id(id: &str) -> bool {
    (1..=256).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b',' || b == b'-')
}

impl PhpFilesStore {
    pub fn new(
        name: &str,
        dir: PathBuf,
        file_prefix: &str,
        gc_maxlifetime: Duration,
        mapping: IdentityMapping,
    ) -> PhpFilesStore {
        PhpFilesStore {
            name: name.to_string(),
            dir,
            file_prefix: file_prefix.to_string(),
            gc_maxlifetime,
            mapping,
        }
    }

    fn path(&self, id: &SessionId) -> Option<PathBuf> {
        valid_id(id.id()).then(|| self.dir.join(format!("{}{}", self.file_prefix, id.id())))
    }
}

/// The file's bytes and its remaining lifetime; `None` when absent, not a plain file, or past
/// its lifetime. Blocking: run as one `spawn_blocking` hop; tokio::fs makes each of the four
/// calls its own hop (measured: 320 µs per lookup that way, 18 µs this way).
fn read_live(path: &Path, gc_maxlifetime: Duration) -> io::Result<Option<(Vec<u8>, Duration)>> {
    // PHP opens session files with O_NOFOLLOW: a symlink is not a session.
    let link = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !link.is_file() {
        return Ok(None);
    }
    let file = match File::open(path) {
        Ok(file) => file,
        // Removed by PHP's GC in between.
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    // Replaced (by a symlink, say) between the check and the open.
    if (meta.dev(), meta.ino()) != (link.dev(), link.ino()) {
        return Ok(None);
    }
    let Some(remaining) = meta
        .modified()?
        .checked_add(gc_maxlifetime)
        .and_then(|end| end.duration_since(SystemTime::now()).ok())
    else {
        return Ok(None);
    };
    let mut data = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut data)?;
    Ok(Some((data, remaining)))
}

#[async_trait]
impl OldStore for PhpFilesStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(
        &self,
        id: &SessionId,
        _context: &LookupContext<'_>,
    ) -> Result<Option<OldSession>, OldStoreError> {
        let Some(path) = self.path(id) else {
            return Ok(None);
        };
        let gc_maxlifetime = self.gc_maxlifetime;
        let read = tokio::task::spawn_blocking(move || read_live(&path, gc_maxlifetime))
            .await
            .map_err(|e| unavailable(&self.name, e))?;
        let Some((data, remaining)) = read.map_err(|e| unavailable(&self.name, e))? else {
            return Ok(None);
        };
        if data.len() as u64 > MAX_FILE_BYTES {
            unreadable(&self.name, id, "session file too large");
            return Ok(None);
        }
        match php_serialize::decode_session(&data) {
            Ok(doc) => Ok(found(&doc, &self.mapping, Some(remaining))),
            Err(e) => {
                unreadable(&self.name, id, e);
                Ok(None)
            }
        }
    }

    async fn delete(&self, id: &SessionId) -> Result<(), OldStoreError> {
        let Some(path) = self.path(id) else {
            return Ok(());
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(&self.name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_php_ids_become_paths() {
        for id in [
            "abc123",
            "a,b-c",
            &"x".repeat(256),
            "0123456789abcdefghijklmnopqrstuv",
        ] {
            assert!(valid_id(id), "{id}");
        }
        for id in [
            "",
            "../../etc/passwd",
            "..",
            "a/b",
            "a\\b",
            "a.b",
            "a\0b",
            "a b",
            "é",
            &"x".repeat(257),
        ] {
            assert!(!valid_id(id), "{id:?}");
        }
    }
}
