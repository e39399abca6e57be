//! `gantry dev`: a whole cluster in one process — a scheduler and K node daemons — like
//! `nomad agent -dev`. Its jobs are real processes under real supervisors; its state is a
//! real log on disk, so a restart on the same data directory keeps all history.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use gantry_noded::{InventoryArgs, InventoryError, NodeConfig, Shutdown, SupervisorCommand};
use gantry_schedd::{SchedConfig, Scheduler};
use tokio::sync::{oneshot, watch};

/// GPUs declared per node when none are found and `--gpus` is not given.
const FAKE_GPUS: u32 = 8;

#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Address the scheduler listens on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7420")]
    listen: SocketAddr,
    /// Where the scheduler's log and the nodes' job records live
    /// [default: $XDG_DATA_HOME/gantry/dev or ~/.local/share/gantry/dev].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// How many scheduler replicas to run, as one Raft group (1 to 7; 3 shows failover).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=7))]
    replicas: u16,
    /// How many node daemons to run (0: a scheduler alone, e.g. for `gantry bench`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=256))]
    nodes: u32,
    #[command(flatten)]
    inventory: InventoryArgs,
    /// Time between SIGTERM and SIGKILL when a job is stopped.
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    kill_grace: u64,
    /// Declare a silent node lost after this long.
    #[arg(long, default_value = "30s", value_parser = parse_interval)]
    heartbeat_timeout: u64,
}

fn parse_interval(text: &str) -> Result<u64, String> {
    gantry_model::units::parse_interval_ms(text).map_err(|e| e.to_string())
}

fn default_data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("gantry/dev"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_DATA_HOME nor HOME is set: give --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/gantry/dev"))
}

/// The GPUs NVML finds; or declared ones when `--gpus`/`--inventory` say so, or when
/// there is no GPU here. With whether they are NVML's.
fn inventory(args: &InventoryArgs) -> Result<(gantry_model::NodeInventory, bool)> {
    let explicit = args.gpus.is_some() || args.inventory.is_some();
    match gantry_noded::discover_inventory(args) {
        Ok(inv) if explicit => Ok((inv, false)),
        Ok(inv) if !inv.gpus.is_empty() => Ok((inv, true)),
        Ok(_) | Err(InventoryError::NoNvidiaDriver { .. }) if !explicit => {
            println!(
                "No NVIDIA GPU found: each node declares {FAKE_GPUS} fake GPUs (--gpus N to choose)."
            );
            let declared = InventoryArgs {
                gpus: Some(FAKE_GPUS),
                ..args.clone()
            };
            Ok((gantry_noded::discover_inventory(&declared)?, false))
        }
        Ok(inv) => Ok((inv, false)),
        Err(e) => Err(e.into()),
    }
}

/// A first job to try on this cluster: `nvidia-smi` only where there is a driver to ask.
fn first_job(url: &str, nvml: bool) -> String {
    let job = if nvml {
        "nvidia-smi -L"
    } else {
        "sh -c 'echo \"my GPUs: $CUDA_VISIBLE_DEVICES\"'"
    };
    format!("GANTRY_SERVER={url} gantry submit -G 1 -- {job}")
}

fn current_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

async fn stop_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

pub fn run(args: DevArgs) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    tokio::runtime::Runtime::new()?.block_on(serve(args))
}

/// Binds every replica's listener before any starts: each needs the whole peers list.
/// Replica N listens on the given port + N - 1 (or on any free port for port 0).
async fn bind_replicas(listen: SocketAddr, replicas: u16) -> Result<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::new();
    for offset in 0..replicas {
        let port = match listen.port() {
            0 => 0,
            port => port
                .checked_add(offset)
                .context("--listen's port plus --replicas runs past 65535")?,
        };
        let address = SocketAddr::new(listen.ip(), port);
        let listener = tokio::net::TcpListener::bind(address).await.with_context(|| {
            format!("cannot listen on {address} (is another gantry dev running? try --listen 127.0.0.1:0)")
        })?;
        listeners.push(listener);
    }
    Ok(listeners)
}

async fn serve(args: DevArgs) -> Result<()> {
    let data_dir = match args.data_dir.clone() {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&data_dir)?;
    let (inventory, nvml) = inventory(&args.inventory)?;
    let listeners = bind_replicas(args.listen, args.replicas).await?;
    let addresses = listeners
        .iter()
        .map(tokio::net::TcpListener::local_addr)
        .collect::<std::io::Result<Vec<_>>>()?;
    // One replica is a group of one; several are one Raft group on loopback.
    let peers: Vec<String> = match addresses.len() {
        1 => vec![],
        _ => (1..)
            .zip(&addresses)
            .map(|(id, a)| format!("{id}={a}"))
            .collect(),
    };
    let mut schedulers = tokio::task::JoinSet::new();
    let mut stop_schedulers = Vec::new();
    for ((id, listener), address) in (1u64..).zip(listeners).zip(&addresses) {
        let dir = match addresses.len() {
            1 => data_dir.join("schedd"),
            _ => data_dir.join(format!("schedd-{id}")),
        };
        let config = SchedConfig {
            id,
            peers: peers.clone(),
            listen: *address,
            data_dir: dir.clone(),
            admins: gantry_schedd::config::default_admins(current_user()),
            heartbeat_timeout_ms: args.heartbeat_timeout,
            ..SchedConfig::default()
        };
        config.validate()?;
        // What went wrong (another gantry dev holding it, data of another format) is in the
        // error itself.
        let scheduler =
            Scheduler::open(config).with_context(|| format!("cannot open {}", dir.display()))?;
        let (stop, stopped) = oneshot::channel::<()>();
        stop_schedulers.push(stop);
        schedulers.spawn(scheduler.serve(listener, async {
            let _ = stopped.await;
        }));
    }
    let url = addresses
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(",");

    let supervisor = SupervisorCommand::current_exe(&["supervise"])?;
    let (stop_nodes, shutdown) = watch::channel(None);
    let mut nodes = Vec::new();
    for i in 1..=args.nodes {
        let name = format!("dev-node-{i}");
        let config = NodeConfig {
            servers: vec![url.clone()],
            name: name.clone(),
            data_dir: data_dir.join("nodes").join(&name),
            pool: "default".into(),
            inventory: inventory.clone(),
            supervisor: supervisor.clone(),
            kill_grace_ms: args.kill_grace,
            // One machine: every node shares it, so a requeued job resumes on any of them.
            checkpoint_root: Some(data_dir.join("checkpoints")),
            checkpoint_sweep_every_ms: gantry_noded::DEFAULT_CHECKPOINT_SWEEP_MS,
            // Every dev node offers the same GPUs of this machine: NVML would report one
            // failure on all of them. Their fault files try GPU failures out.
            watch_nvml: false,
        };
        nodes.push((
            name,
            tokio::spawn(gantry_noded::run_node(config, shutdown.clone())),
        ));
    }
    let capacity = inventory.capacity();
    println!(
        "gantry dev: scheduler listening on {url}; {} replica(s), {} node(s) with {} GPU(s) ({}), {} CPUs and {} each",
        addresses.len(),
        args.nodes,
        capacity.gpus,
        inventory.gpu_model(),
        capacity.cpus,
        gantry_model::units::format_size_mib(capacity.mem_mib),
    );
    println!("gantry dev: data in {}", data_dir.display());
    println!(
        "gantry dev: try `{}`; Ctrl-C stops the cluster and its jobs.",
        first_job(&url, nvml)
    );

    let outcome = tokio::select! {
        signal = stop_signal() => signal,
        Some(served) = schedulers.join_next() => match served {
            Ok(Ok(())) => Err(anyhow::anyhow!("a scheduler replica stopped unexpectedly")),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(e.into()),
        },
    };
    println!("gantry dev: stopping the nodes and their jobs...");
    let _ = stop_nodes.send(Some(Shutdown::StopJobs));
    for (name, node) in nodes {
        match tokio::time::timeout(
            Duration::from_millis(args.kill_grace) + Duration::from_secs(30),
            node,
        )
        .await
        {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => eprintln!("gantry dev: node {name}: {e}"),
            Ok(Err(e)) => eprintln!("gantry dev: node {name}: {e}"),
            Err(_) => eprintln!("gantry dev: node {name} did not stop in time"),
        }
    }
    for stop in stop_schedulers {
        let _ = stop.send(());
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while schedulers.join_next().await.is_some() {}
    })
    .await;
    println!("gantry dev: stopped");
    outcome
}
