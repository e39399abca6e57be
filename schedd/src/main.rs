//! `gantry-schedd`: the scheduler daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use std::io::IsTerminal;
use std::process::ExitCode;

use gantry_schedd::{SchedConfig, Scheduler};

#[derive(Parser, Debug)]
#[command(name = "gantry-schedd", version, about = "Gantry's scheduler daemon")]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long, env = "GANTRY_SCHEDD_CONFIG")]
    config: Option<PathBuf>,
    /// This replica's id in the Raft group (1 and up) [default: 1].
    #[arg(long)]
    id: Option<u64>,
    /// The replicas as ID=ADDR, comma-separated (e.g.
    /// 1=10.0.0.1:7420,2=10.0.0.2:7420,3=10.0.0.3:7420): for a new group every replica, this
    /// one included; to join a running group the others only (it waits to be added with
    /// `gantry admin replica add`). Without it, a group of one.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// Address for the client API, node sessions and Raft traffic (`host:port`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory holding the command log and snapshots.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A user allowed to drain and resume nodes and cancel any job (repeatable); replaces
    /// the config file's `admins`. Without either: root and the user running the daemon.
    #[arg(long = "admin")]
    admins: Vec<String>,
    /// Declare a silent node lost after this long (e.g. 30s; the unit is required).
    #[arg(long, value_parser = parse_interval)]
    heartbeat_timeout: Option<u64>,
    /// How often node daemons send a heartbeat (e.g. 2s); shorter than the timeout.
    #[arg(long, value_parser = parse_interval)]
    heartbeat_interval: Option<u64>,
    /// Snapshot the state and compact the log every N entries [default: 10000].
    #[arg(long, value_name = "N")]
    snapshot_every: Option<u64>,
    /// The fabric topology file: switches and the nodes under them (docs/admin.md).
    #[arg(long, value_name = "FILE")]
    topology: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn parse_interval(text: &str) -> Result<u64, String> {
    gantry_model::units::parse_interval_ms(text).map_err(|e| e.to_string())
}

fn current_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn load_config(args: &Args) -> Result<SchedConfig> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the config file {}", path.display()))?;
            toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?
        }
        None => SchedConfig {
            admins: ["root".to_string()]
                .into_iter()
                .chain(current_user())
                .collect(),
            ..SchedConfig::default()
        },
    };
    if let Some(id) = args.id {
        config.id = id;
    }
    if !args.peers.is_empty() {
        config.peers = args.peers.clone();
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(dir) = &args.data_dir {
        config.data_dir = dir.clone();
    }
    if !args.admins.is_empty() {
        config.admins = args.admins.clone();
    }
    if let Some(ms) = args.heartbeat_timeout {
        config.heartbeat_timeout_ms = ms;
    }
    if let Some(ms) = args.heartbeat_interval {
        config.heartbeat_interval_ms = ms;
    }
    if let Some(n) = args.snapshot_every {
        config.snapshot_every = n;
    }
    if let Some(path) = &args.topology {
        config.topology = Some(path.clone());
    }
    config.validate()?;
    config.load_topology()?;
    Ok(config)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gantry-schedd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<()> {
    let mut config = load_config(&args)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    config.listen = listener.local_addr()?;
    let scheduler = Scheduler::open(config)?;
    // Printed once the state is recovered and the socket bound: scripts and tests wait for
    // it and read the address (the port may have been 0).
    println!("gantry-schedd listening on {}", listener.local_addr()?);
    scheduler.serve(listener, shutdown_signal()).await?;
    Ok(())
}
