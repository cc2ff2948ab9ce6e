//! Command-line entry: wiring only.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use unstick::admin::Admin;
use unstick::config::load_config;
use unstick::demo::{run_demo, LegacyApp, LegacyAppConfig};
use unstick::metrics::Metrics;
use unstick::proxy::Proxy;
use unstick::reload::Reloader;
use unstick::runtime::Runtime;
use unstick::server::{serve, shutdown_signal};
use unstick::session::SessionStore;

#[derive(Parser)]
#[command(
    version,
    about = "A reverse proxy that moves a legacy app's sessions into Redis without logging anyone out"
)]
struct Cli {
    /// Log format.
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
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit (0 = valid).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the self-contained demo: a sticky legacy app on two instances behind unstick.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Run one instance of the bundled legacy app (for benchmarks and docker-compose).
    DemoApp {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value = "a")]
        name: String,
        #[arg(long, default_value = "demo.sid")]
        cookie: String,
        /// Sign cookies as express-session does, with this secret.
        #[arg(long, env = "DEMO_APP_SECRET")]
        secret: Option<String>,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    unstick::install_crypto_provider();
    match cli.command {
        Command::Serve {
            config: config_path,
        } => {
            let config = load_config(&config_path)?;
            let address = config.listener.address;
            let grace = config.listener.shutdown_grace;
            let listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen on {address}"))?;
            let address = listener.local_addr().unwrap_or(address);
            let store = SessionStore::connect(&config.store).await?;
            let metrics = Arc::new(Metrics::new());
            let runtime = Runtime::build(config.clone(), store, metrics.clone()).await?;
            let proxy = Proxy::new(runtime);
            let reloader = Reloader::new(&config_path, proxy.clone(), metrics.clone());
            reloader.mark_active(&config);
            reloader.spawn_watchers();
            if let Some(admin) = &config.admin {
                let listener = tokio::net::TcpListener::bind(admin.address)
                    .await
                    .with_context(|| {
                        format!("cannot listen on {} (admin.address)", admin.address)
                    })?;
                let admin_address = listener.local_addr().unwrap_or(admin.address);
                let api = Admin::new(
                    proxy.clone(),
                    metrics.clone(),
                    admin.token.clone(),
                    admin.token_env.clone(),
                );
                tokio::spawn(api.serve(listener));
                tracing::info!(address = %admin_address, "admin listening");
            }
            tracing::info!(%address, "unstick listening");
            serve(listener, proxy, shutdown_signal(), grace).await;
        }
        Command::Check { config: path } => {
            let config = load_config(&path)?;
            println!(
                "{}: valid ({} upstream(s), {} route(s))",
                path.display(),
                config.upstreams.len(),
                config.routes.len()
            );
        }
        Command::Demo { listen } => run_demo(listen).await?,
        Command::DemoApp {
            listen,
            name,
            cookie,
            secret,
        } => {
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
            shutdown_signal().await;
            app.stop().await;
        }
    }
    Ok(())
}
