//! A PostgreSQL database of one test's own on the local server (127.0.0.1:5432, user
//! `postgres`), created and dropped with `psql`.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A database of its own for one test on the local server, dropped when the test ends
/// (passed or panicked). `psql` is used so the fixture does not depend on the code under test.
pub struct PgDatabase {
    name: String,
}

static DATABASES: AtomicUsize = AtomicUsize::new(0);

pub fn psql(database: &str, sql: &str) {
    let output = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            "-X",
            "-q",
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql])
        .output()
        .expect("psql must be installed");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        let name = format!(
            "unstick_test_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
        psql("postgres", &format!("CREATE DATABASE {name}"));
        PgDatabase { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }

    pub fn exec(&self, sql: &str) {
        psql(&self.name, sql);
    }

    pub fn count(&self, sql: &str) -> i64 {
        let output = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-X", "-At"])
            .args(["-d", &self.name, "-c", sql])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{sql}: {text} {}", String::from_utf8_lossy(&output.stderr)))
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // FORCE: the store under test may still hold a connection.
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-X",
                "-q",
                "-d",
                "postgres",
            ])
            .args([
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}
