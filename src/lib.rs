//! unstick: a reverse proxy that moves a legacy web app's sessions into Redis without changing
//! the app and without logging anyone out.
//!
//! Map of the crate (a request flows top to bottom):
//! - [`config`]: TOML file -> validated [`config::Config`]; `${VAR}` interpolation; errors name key and line.
//! - [`server`]: listener, accept loop, graceful shutdown; hands each request to the proxy.
//!   [`server::tls`]: the HTTPS listener (rustls, ALPN h2/http1.1), certificate reloaded on change.
//!   [`server::connections`]: header and idle timeouts, the connection cap, the open-file limit.
//!   `server::idle`: idle HTTP/1.1 keep-alive connections parked as a bare socket, outside hyper.
//!   `server::per_core`: `listener.runtime = "per-core"`, a runtime and listener per core.
//! - [`reload`]: SIGHUP and file-change reload: validate, build, swap; a bad file changes nothing.
//! - [`live`]: one config made live (routes, pools, store); swapped whole on reload.
//! - [`proxy`]: the request pipeline as named phases over one request context, read top to
//!   bottom in `proxy/mod.rs` ([`proxy::Proxy::handle`]); one module per phase.
//! - [`migration`]: the migration modes and every rule that differs between them.
//! - [`upstream`]: pools of app instances, health, balancing, pooled keep-alive connections.
//! - [`session`]: a layer below the proxy: the app's cookie formats, the
//!   [`session::SessionRecord`], stores (Redis with its near cache, memory), old stores,
//!   resolution, capture of logins and logouts, bulk pre-copy (`unstick migrate`).
//! - [`admin`]: health, readiness, `/metrics`, the sessions API and the migration dashboard, behind a token.
//! - [`metrics`]: Prometheus counters and histograms, exported by the admin listener.
//! - [`activity`]: per-route, per-minute resolution counts and readiness sample for the dashboard.
//! - [`demo`]: the bundled sticky legacy app and the one-command demo.
//! - [`check`]: `unstick check`, the preflight: config, Redis reach and eviction policy, lifetimes, header names.

pub mod activity;
pub mod admin;
pub mod body;
pub mod check;
pub mod config;
pub mod demo;
pub mod live;
pub mod metrics;
pub mod migration;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod session;
pub mod upstream;

/// Lower-case hex of `bytes` in one step (`hex::encode` builds its string char by char, a
/// measurable share of a request that hashes a session id).
pub fn hex_string(bytes: &[u8]) -> String {
    let mut text = vec![0u8; bytes.len() * 2];
    // The buffer has exactly the room needed, and hex digits are ASCII.
    let _ = hex::encode_to_slice(bytes, &mut text);
    String::from_utf8(text).unwrap_or_default()
}

/// Installs the process-wide rustls crypto provider. Call once at start, before any TLS is used:
/// with more than one provider compiled in, rustls refuses to pick one and panics at first use.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
