//! `gantry`: the command-line client of the Gantry GPU batch scheduler.

mod client;
mod dev;
mod directives;
#[cfg(test)]
mod fake_scheduler;
mod jobs;
mod nodes;
mod output;
mod submit;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Scheduler;

#[derive(Parser, Debug)]
#[command(
    name = "gantry",
    version,
    about = "Gantry: a GPU batch scheduler. Submit and watch jobs, manage nodes.",
    after_help = "Exit status: 0 on success, 1 on an error, 2 on a usage error \
                  (`gantry wait --help` adds its own)."
)]
struct Cli {
    /// Scheduler address(es): host:port or http://host:port; a comma-separated list names
    /// several replicas, tried in order [default: http://127.0.0.1:7420]
    #[arg(long, global = true, env = "GANTRY_SERVER", value_name = "ADDRS")]
    server: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a batch script or a command (like sbatch)
    Submit(Box<submit::SubmitArgs>),
    /// List pending and running jobs (like squeue)
    Queue(jobs::QueueArgs),
    /// Show every field of one job (like scontrol show job)
    Show(jobs::ShowArgs),
    /// Cancel jobs (like scancel)
    Cancel(jobs::CancelArgs),
    /// Wait until jobs end; exit 0 only if every one COMPLETED
    Wait(jobs::WaitArgs),
    /// List nodes and what is allocated on them (like sinfo -N)
    Nodes(nodes::NodesArgs),
    /// Stop scheduling new jobs on nodes (like scontrol update state=drain)
    Drain(nodes::DrainArgs),
    /// Return drained nodes to service
    Resume(nodes::ResumeArgs),
    /// Run a scheduler and node daemons in one process, for trying Gantry out
    Dev(dev::DevArgs),
    /// The per-job supervisor the node daemon starts (internal)
    #[command(hide = true)]
    Supervise {
        #[arg(long, value_name = "DIR")]
        job_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // Parse errors and --help exit through clap (2 for usage errors, 0 for help).
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        // Both run their own runtimes (or none), so they are dispatched before ours exists.
        Command::Dev(args) => dev::run(args).map(|()| 0),
        // The node daemon starts one per job; it must run before any thread exists.
        Command::Supervise { job_dir } => {
            let code = gantry_noded::supervise_main(&job_dir);
            Ok(u8::try_from(code).unwrap_or(1))
        }
        command => {
            init_logging();
            let mut scheduler = Scheduler::new(client::parse_addresses(
                cli.server.as_deref().unwrap_or(client::DEFAULT_SERVER),
            )?);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(client_command(command, &mut scheduler))
        }
    }
}

async fn client_command(command: Command, scheduler: &mut Scheduler) -> anyhow::Result<u8> {
    match command {
        Command::Submit(args) => submit::run(*args, scheduler).await.map(|()| 0),
        Command::Queue(args) => jobs::queue(args, scheduler).await.map(|()| 0),
        Command::Show(args) => jobs::show(args, scheduler).await.map(|()| 0),
        Command::Cancel(args) => jobs::cancel(args, scheduler).await,
        Command::Wait(args) => jobs::wait(args, scheduler).await,
        Command::Nodes(args) => nodes::nodes(args, scheduler).await.map(|()| 0),
        Command::Drain(args) => nodes::drain(args, scheduler).await.map(|()| 0),
        Command::Resume(args) => nodes::resume(args, scheduler).await.map(|()| 0),
        Command::Dev(_) | Command::Supervise { .. } => {
            anyhow::bail!("internal: this command does not talk to a scheduler")
        }
    }
}

/// Logs go to stderr, quiet unless GANTRY_LOG (or RUST_LOG) asks, e.g. GANTRY_LOG=debug.
fn init_logging() {
    let filter = std::env::var("GANTRY_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
}

/// `gantry queue | head` closes the pipe early; that is the reader's choice, not an error.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        // clap checks conflicting names, positional order and the like only at run time.
        Cli::command().debug_assert();
    }

    #[test]
    fn usage_errors_come_from_clap() {
        for argv in [
            &["gantry", "submit", "-N"][..],
            &["gantry", "show", "abc"],
            &["gantry", "cancel"],
            &["gantry", "drain", "node-1"],
            &["gantry", "queue", "-o", "yaml"],
        ] {
            assert!(Cli::try_parse_from(argv).is_err(), "{argv:?} parsed");
        }
    }

    #[test]
    fn the_server_flag_is_global() {
        let cli = Cli::try_parse_from(["gantry", "queue", "--server", "a:1,b:2"]).unwrap();
        assert_eq!(cli.server.as_deref(), Some("a:1,b:2"));
        let cli = Cli::try_parse_from(["gantry", "nodes", "--server=c:3"]).unwrap();
        assert_eq!(cli.server.as_deref(), Some("c:3"));
    }
}
