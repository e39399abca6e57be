//! `gantry-noded`: the node daemon binary. Also the per-job supervisor, through the hidden
//! `supervise` subcommand.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use gantry_model::units::parse_interval_ms;
use gantry_noded::{
    DEFAULT_CHECKPOINT_SWEEP_MS, DEFAULT_KILL_GRACE_MS, InventoryArgs, NodeConfig, Shutdown,
    SupervisorCommand, default_data_dir, discover_inventory, hostname, run_node, server_urls,
    supervise_main,
};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "gantry-noded",
    version,
    about = "Gantry's node daemon: runs the jobs the scheduler assigns to this machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Scheduler address(es): host:port, http://host:port or a bare host (port 7420),
    /// comma-separated for several replicas.
    #[arg(
        long,
        env = "GANTRY_SERVER",
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ','
    )]
    server: Vec<String>,
    /// Node name [default: the host name].
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Where job records live [default: /var/lib/gantry/noded as root, else ~/.local/share/gantry/noded].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Pool (partition) of this node.
    #[arg(long, value_name = "POOL", default_value = "default")]
    pool: String,
    /// A label jobs may require of this node (`gantry submit -C LABEL`), e.g. ib, nvme;
    /// repeat the flag or separate with commas.
    #[arg(long = "label", value_name = "LABEL", value_delimiter = ',')]
    labels: Vec<String>,
    /// Time between SIGTERM and SIGKILL when a job is stopped, e.g. 10s, 500ms, 2m (a unit is
    /// required: a bare number would be minutes in Slurm's notation) [default: 10s].
    #[arg(long, value_name = "DUR", value_parser = parse_interval_ms)]
    kill_grace: Option<u64>,
    /// Where checkpointing jobs get `GANTRY_CHECKPOINT_DIR` (`DIR/<job id>`; default
    /// `<data-dir>/checkpoints`): shared storage lets a requeued job resume on another node
    #[arg(long, value_name = "DIR")]
    checkpoint_root: Option<PathBuf>,
    /// How often to remove the checkpoint dirs of jobs that ended longer ago than the
    /// scheduler's checkpoint.keep, e.g. 1h, 10m [default: 1h].
    #[arg(long, value_name = "DUR", value_parser = parse_interval_ms)]
    checkpoint_sweep_every: Option<u64>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    inventory: InventoryArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Supervise one job (started by the daemon itself).
    #[command(hide = true)]
    Supervise {
        #[arg(long, value_name = "DIR")]
        job_dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or the journal.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn config(cli: Cli) -> anyhow::Result<NodeConfig> {
    // First: a bad address is refused before GPU discovery, which may fail for its own reasons.
    let servers = server_urls(&cli.server)?;
    let name = match cli.name {
        Some(name) if !name.trim().is_empty() => name.trim().to_string(),
        Some(_) => bail!("--name must not be empty"),
        None => hostname().context("cannot read the host name; give --name NAME")?,
    };
    let data_dir = match cli.data_dir {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    let mut inventory = discover_inventory(&cli.inventory)?;
    for name in std::iter::once(&cli.pool).chain(&cli.labels) {
        anyhow::ensure!(
            gantry_model::names::is_plain_name(name),
            "{name:?} is not a pool or label name: 1 to 64 letters, digits, '-', '_' or '.'"
        );
    }
    inventory.labels = cli.labels.clone();
    let supervisor = SupervisorCommand::current_exe(&["supervise"])
        .context("cannot find the gantry-noded executable")?;
    Ok(NodeConfig {
        servers,
        name,
        data_dir,
        pool: cli.pool,
        inventory,
        supervisor,
        kill_grace_ms: cli.kill_grace.unwrap_or(DEFAULT_KILL_GRACE_MS),
        checkpoint_root: cli.checkpoint_root.clone(),
        checkpoint_sweep_every_ms: cli
            .checkpoint_sweep_every
            .unwrap_or(DEFAULT_CHECKPOINT_SWEEP_MS),
        // Declared GPUs (flags or a file) are not NVML's to watch.
        watch_nvml: cli.inventory.gpus.is_none() && cli.inventory.inventory.is_none(),
    })
}

async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let (stop, shutdown) = tokio::sync::watch::channel(None);
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let daemon = run_node(config, shutdown);
    tokio::pin!(daemon);
    tokio::select! {
        result = &mut daemon => return Ok(result?),
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    // Upgrade-safe: the daemon goes, its jobs stay with their supervisors.
    let _ = stop.send(Some(Shutdown::LeaveJobs));
    Ok(daemon.await?)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Supervise { job_dir }) = &cli.command {
        // First and synchronous: no runtime, no threads (see `supervise_main`).
        return ExitCode::from(u8::try_from(supervise_main(job_dir)).unwrap_or(1));
    }
    init_logging(cli.log_format);
    let result = config(cli).and_then(|config| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        runtime.block_on(run(config))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gantry-noded: {e:#}");
            ExitCode::FAILURE
        }
    }
}
