//! Command-line entry: wiring only.

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use unstick::config::{load_config, StoreUrl};
use unstick::demo::{run_demo, LegacyApp, LegacyAppConfig};
use unstick::server::connections::raise_open_file_limit;
use unstick::server::shutdown_signal;
use unstick::session::precopy::{self, Precopy, PrecopyCounts, PrecopyEnd, PrecopyOptions};
use unstick::session::{users, SessionHash, SessionStore};

/// `--version`: the version, then how this binary was built (set by build.rs).
const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit:  ",
    env!("UNSTICK_BUILD_COMMIT"),
    "\ntarget:  ",
    env!("UNSTICK_BUILD_TARGET"),
    "\nprofile: ",
    env!("UNSTICK_BUILD_PROFILE"),
    "\nrustc:   ",
    env!("UNSTICK_BUILD_RUSTC"),
);

#[derive(Parser)]
#[command(
    version,
    long_version = LONG_VERSION,
    about = "A reverse proxy that moves a legacy app's sessions into Redis without logging anyone out"
)]
struct Cli {
    /// The config file (TOML) of serve, check, sessions and migrate. Accepted before or after
    /// the subcommand.
    #[arg(
        long,
        short,
        global = true,
        value_name = "FILE",
        env = "UNSTICK_CONFIG"
    )]
    config: Option<PathBuf>,
    /// Log format on stderr: text (coloured only on a terminal) or json (one object per line,
    /// with the request id).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "UNSTICK_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum SessionsAction {
    /// A user's sessions as JSON (hashed ids, device, IP, created, last seen).
    List {
        /// The user id, as the identity header carries it (e.g. alice).
        #[arg(long, value_name = "USER")]
        user: String,
    },
    /// End one session, named by its id hash (as listed).
    Revoke {
        /// The session's id hash, the `id_hash` field of `sessions list` (22 characters; the
        /// 64 hex digits earlier versions listed are accepted too).
        #[arg(value_name = "ID_HASH")]
        id_hash: String,
    },
    /// End every session of a user ("log out everywhere").
    RevokeUser {
        /// The user id, as the identity header carries it (e.g. alice).
        #[arg(value_name = "USER")]
        user: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (reloads the config on SIGHUP and when the file changes).
    Serve,
    /// Preflight: validate the config, reach Redis, check eviction policy, persistence,
    /// lifetimes and identity header names. Exit 1 on an error (or, with --strict, a
    /// warning), 0 otherwise.
    Check {
        /// Exit 1 on warnings too, not only on errors (a deploy gate that accepts nothing).
        #[arg(long)]
        strict: bool,
    },
    /// List or revoke sessions in the store of a config (the admin API does the same over HTTP).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// Copy every live session of a route's old stores that can be listed into Redis, before
    /// the cutover. Never overwrites a session Redis holds, never revives a logout; rerun it
    /// to finish an interrupted run.
    Migrate {
        /// The route, by host and path prefix as metrics name it (e.g. `/`, `shop.example/`).
        #[arg(long, value_name = "ROUTE")]
        route: String,
        /// Count what would be copied; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Sessions read per second, so neither store is flooded (0: no limit).
        #[arg(long, value_name = "N", default_value_t = precopy::DEFAULT_RATE)]
        rate: u32,
    },
    /// Run the self-contained demo: a sticky legacy app on two instances behind unstick.
    Demo {
        /// Address the demo proxy listens on.
        #[arg(long, value_name = "ADDRESS", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address of the admin listener and its dashboard (default: beside --listen, on a
        /// port the system picks).
        #[arg(long, value_name = "ADDRESS")]
        admin: Option<SocketAddr>,
    },
    /// Run one instance of the bundled legacy app (for benchmarks and docker-compose).
    DemoApp {
        /// Address the app listens on.
        #[arg(long, value_name = "ADDRESS")]
        listen: SocketAddr,
        /// The instance's name, shown in its answers.
        #[arg(long, default_value = "a")]
        name: String,
        /// The name of the app's session cookie.
        #[arg(long, default_value = "demo.sid")]
        cookie: String,
        /// Sign cookies as express-session does, with this secret.
        #[arg(long, env = "DEMO_APP_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
}

/// The config path, which serve, check and sessions need: a usage error (exit 2) without it.
fn required_config(config: Option<PathBuf>) -> PathBuf {
    match config {
        Some(path) => path,
        None => Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "this command needs a config file: pass --config FILE or set UNSTICK_CONFIG",
            )
            .exit(),
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal: a log file or journald gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

// Every request allocates a few dozen small buffers across hyper, fred and the pipeline;
// mimalloc serves them with fewer instructions than glibc's malloc (about 13% fewer per
// request in total, measured with callgrind).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // Without the LIFO slot, a task woken by a request (fred's Redis writer, an upstream
    // connection) runs after the other ready requests instead of right away, so the Redis
    // commands of a burst of requests go out in one write instead of one write each.
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    runtime
        .build()
        .context("cannot start the async runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let Cli {
        config,
        log_format,
        command,
    } = Cli::parse();
    init_logging(log_format);
    unstick::install_crypto_provider();
    match command {
        Command::Serve => {
            let config_path = required_config(config);
            let config = load_config(&config_path)?;
            raise_open_file_limit_logged();
            let shutdown = shutdown_signal();
            let server = unstick::server::start(config, Some(&config_path)).await?;
            server.serve_until(shutdown).await;
        }
        Command::Check { strict } => {
            let report = unstick::check::check_file(&required_config(config)).await;
            for finding in &report.findings {
                println!("{finding}");
            }
            println!("{}", report.summary(strict));
            if !report.passed(strict) {
                std::process::exit(1);
            }
        }
        Command::Sessions { action } => manage_sessions(&required_config(config), action).await?,
        Command::Migrate {
            route,
            dry_run,
            rate,
        } => {
            let options = PrecopyOptions {
                dry_run,
                rate,
                ..PrecopyOptions::default()
            };
            migrate(&required_config(config), &route, options).await?
        }
        Command::Demo { listen, admin } => {
            raise_open_file_limit_logged();
            run_demo(listen, admin).await?
        }
        Command::DemoApp {
            listen,
            name,
            cookie,
            secret,
        } => {
            let shutdown = shutdown_signal();
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            let app = LegacyApp::start(
                listener,
                LegacyAppConfig {
                    cookie_name: cookie,
                    signing_secret: secret,
                    ..LegacyAppConfig::new(&name)
                },
            )
            .await?;
            tracing::info!(address = %app.address, %name, "legacy app listening");
            shutdown.await;
            app.stop().await;
        }
    }
    Ok(())
}

/// Raises the soft open-file limit to the hard one (the server sizes its connection cap by it).
fn raise_open_file_limit_logged() {
    match raise_open_file_limit() {
        Ok(limit) => tracing::info!(
            soft = limit.soft,
            hard = limit.hard,
            before = limit.before,
            "open file limit"
        ),
        // Without getrlimit, the server assumes the usual default.
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open file limit; assuming 1024")
        }
    }
}

async fn manage_sessions(path: &std::path::Path, action: SessionsAction) -> anyhow::Result<()> {
    let config = load_config(path)?;
    if config.store.url == StoreUrl::Memory {
        anyhow::bail!(
            "the memory:// store lives inside the running proxy; use its admin API instead"
        );
    }
    // A command's few lookups gain nothing from a near cache and its extra connection.
    let mut store_config = config.store.clone();
    store_config.near_cache.enabled = false;
    let store = SessionStore::connect(&store_config).await?;
    let remember = config.session.absolute_lifetime;
    match action {
        SessionsAction::List { user } => {
            let sessions = users::list(&store, &user).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({ "user": user, "sessions": sessions })
                )?
            );
        }
        SessionsAction::Revoke { id_hash } => {
            let hash = SessionHash::parse(&id_hash)
                .context("expected a session id hash as listed (22 characters, or the 64 hex digits earlier versions listed)")?;
            if !users::revoke(&store, &hash, remember).await? {
                anyhow::bail!("no live session {id_hash}");
            }
            println!("revoked 1 session");
        }
        SessionsAction::RevokeUser { user } => {
            let count = users::revoke_user(&store, &user, remember).await?;
            println!("revoked {count} session(s) of {user}");
        }
    }
    Ok(())
}

/// `unstick migrate`: the pre-copy with a progress bar on a terminal, then its summary on
/// stdout. Exit 130 when interrupted, 1 when a store failed.
async fn migrate(
    path: &std::path::Path,
    route: &str,
    options: PrecopyOptions,
) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let precopy = Precopy::open(&config, route).await?;
    for reason in &precopy.unlisted {
        tracing::info!("{reason}");
    }
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {elapsed_precise} {pos} sessions ({per_sec}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let progress = |counts: &PrecopyCounts| {
        bar.set_position(counts.listed);
        bar.set_message(format!(
            "{} copied, {} already present",
            counts.copied, counts.already_present
        ));
    };
    let summary = precopy.run(options, &progress, shutdown_signal()).await;
    bar.finish_and_clear();
    print!("{}", precopy.report(&summary.counts, options.dry_run));
    match summary.end {
        PrecopyEnd::Finished => Ok(()),
        PrecopyEnd::Interrupted => {
            eprintln!(
                "interrupted: what was copied is complete; run the same command again to finish"
            );
            std::process::exit(130);
        }
        PrecopyEnd::Failed(e) => Err(anyhow::Error::new(e)
            .context("pre-copy stopped; what was copied is complete, run it again to go on")),
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Every argument of every subcommand says what it is in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {}", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "unstick", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:?}");
    }
}
