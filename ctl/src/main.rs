//! `gantry`: the command-line client of the Gantry GPU batch scheduler.

mod accounting;
mod accounts;
mod admin;
mod bench;
mod bench_schedule;
mod checkpoint;
mod client;
mod dev;
mod directives;
#[cfg(test)]
mod fake_scheduler;
mod hostlist;
mod jobs;
mod nodes;
mod output;
mod reservations;
mod submit;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gantry_proto as pb;

use crate::client::{Scheduler, ServerArgs};

#[derive(Parser, Debug)]
#[command(
    name = "gantry",
    version,
    about = "Gantry: a GPU batch scheduler. Submit and watch jobs, manage nodes.",
    after_help = "Exit status: 0 on success, 1 on an error, 2 on a usage error \
                  (`gantry wait --help` adds its own)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// A command that talks to the scheduler: its own arguments, then `--server`. Only these
// take `--server` (`gantry dev` is a scheduler itself).
#[derive(clap::Args, Debug)]
struct Client<T: clap::Args> {
    #[command(flatten)]
    args: T,
    #[command(flatten)]
    server: ServerArgs,
}

impl<T: clap::Args> Client<T> {
    /// Runs `command` against the scheduler(s) named by `--server`, on a runtime of its own.
    fn run(
        self,
        command: impl AsyncFnOnce(T, &mut Scheduler) -> anyhow::Result<u8>,
    ) -> anyhow::Result<u8> {
        init_logging();
        let mut scheduler = Scheduler::new(self.server.addresses()?);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(command(self.args, &mut scheduler))
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a batch script or a command (like sbatch)
    Submit(Box<Client<submit::SubmitArgs>>),
    /// List pending and running jobs (like squeue)
    Queue(Client<jobs::QueueArgs>),
    /// Show every field of one job (like scontrol show job)
    Show(Client<jobs::ShowArgs>),
    /// Cancel jobs (like scancel)
    Cancel(Client<jobs::CancelArgs>),
    /// Wait until jobs end; exit 0 only if every one COMPLETED
    Wait(Client<jobs::WaitArgs>),
    /// Keep pending jobs from being scheduled (like scontrol hold)
    Hold(Client<jobs::CancelArgs>),
    /// Let held jobs be scheduled again (like scontrol release)
    Release(Client<jobs::CancelArgs>),
    /// Stop running jobs and queue them again as their next run (like scontrol requeue);
    /// jobs with a checkpoint contract are warned first
    Requeue(Client<jobs::CancelArgs>),
    /// Preempt running jobs (admins): as requeue, recorded as a preemption
    Preempt(Client<jobs::CancelArgs>),
    /// From inside a job: report a completed checkpoint
    Checkpoint(Client<CheckpointArgs>),
    /// List nodes and what is allocated on them (like sinfo -N)
    Nodes(Client<nodes::NodesArgs>),
    /// Stop scheduling new jobs on nodes (like scontrol update state=drain)
    Drain(Client<nodes::DrainArgs>),
    /// Return drained nodes to service
    Resume(Client<nodes::ResumeArgs>),
    /// The account tree: shares, guarantees, GPU limits, users (like sacctmgr)
    Account(Client<AccountArgs>),
    /// Advance reservations: nodes held over a window (like scontrol create reservation)
    Reservation(Client<ReservationArgs>),
    /// GPU- and CPU-seconds of ended runs per account, user or pool (like sreport)
    Usage(Client<accounting::UsageArgs>),
    /// Ended runs' use per job (like sacct)
    History(Client<accounting::Window>),
    /// The scheduler's own machinery: replicas and scheduling settings
    Admin(Client<AdminArgs>),
    /// Load generators for benchmarks (docs/benchmarks.md)
    Bench(Client<BenchArgs>),
    /// Run a scheduler and node daemons in one process, for trying Gantry out
    Dev(dev::DevArgs),
    /// The per-job supervisor the node daemon starts (internal)
    #[command(hide = true)]
    Supervise {
        #[arg(long, value_name = "DIR")]
        job_dir: PathBuf,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct CheckpointArgs {
    #[command(subcommand)]
    command: checkpoint::CheckpointCommand,
}

#[derive(clap::Args, Debug, Clone)]
struct BenchArgs {
    #[command(subcommand)]
    command: bench::BenchCommand,
}

#[derive(clap::Args, Debug, Clone)]
struct AccountArgs {
    #[command(subcommand)]
    command: accounts::AccountCommand,
}

#[derive(clap::Args, Debug, Clone)]
struct ReservationArgs {
    #[command(subcommand)]
    command: reservations::ReservationCommand,
}

#[derive(clap::Args, Debug, Clone)]
struct AdminArgs {
    #[command(subcommand)]
    command: admin::AdminCommand,
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
    let done = |()| 0;
    match cli.command {
        // Runs its own runtime.
        Command::Dev(args) => dev::run(args).map(done),
        // The node daemon starts one per job; it must run before any thread exists.
        Command::Supervise { job_dir } => {
            let code = gantry_noded::supervise_main(&job_dir);
            Ok(u8::try_from(code).unwrap_or(1))
        }
        Command::Submit(c) => c.run(async |args, s| submit::run(args, s).await.map(done)),
        Command::Queue(c) => c.run(async |args, s| jobs::queue(args, s).await.map(done)),
        Command::Show(c) => c.run(async |args, s| jobs::show(args, s).await.map(done)),
        Command::Cancel(c) => c.run(jobs::cancel),
        Command::Wait(c) => c.run(jobs::wait),
        Command::Hold(c) => c.run(async |a, s| jobs::control(a, s, pb::ControlAction::Hold).await),
        Command::Release(c) => {
            c.run(async |a, s| jobs::control(a, s, pb::ControlAction::Release).await)
        }
        Command::Requeue(c) => {
            c.run(async |a, s| jobs::control(a, s, pb::ControlAction::Requeue).await)
        }
        Command::Preempt(c) => {
            c.run(async |a, s| jobs::control(a, s, pb::ControlAction::Preempt).await)
        }
        Command::Checkpoint(c) => {
            c.run(async |args, s| checkpoint::run(args.command, s).await.map(done))
        }
        Command::Nodes(c) => c.run(async |args, s| nodes::nodes(args, s).await.map(done)),
        Command::Drain(c) => c.run(async |args, s| nodes::drain(args, s).await.map(done)),
        Command::Resume(c) => c.run(async |args, s| nodes::resume(args, s).await.map(done)),
        Command::Bench(c) => {
            init_logging();
            match c.args.command {
                // The policy code runs here: no scheduler, so `--server` is not even read.
                bench::BenchCommand::Schedule(args) => bench_schedule::run(&args).map(done),
                // Many concurrent clients: a runtime with a thread per core.
                bench::BenchCommand::Submit(args) => {
                    let addresses = c.server.addresses()?;
                    let runtime = tokio::runtime::Runtime::new()?;
                    runtime.block_on(bench::submit(args, addresses)).map(done)
                }
            }
        }
        Command::Admin(c) => c.run(async |args, s| admin::run(args.command, s).await.map(done)),
        Command::Account(c) => {
            c.run(async |args, s| accounts::run(args.command, s).await.map(done))
        }
        Command::Reservation(c) => {
            c.run(async |args, s| reservations::run(args.command, s).await.map(done))
        }
        Command::Usage(c) => c.run(async |args, s| accounting::usage(args, s).await.map(done)),
        Command::History(c) => c.run(async |args, s| accounting::history(args, s).await.map(done)),
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
        // Colour codes only for a person at a terminal, not in files or pipes.
        .with_ansi(std::io::stderr().is_terminal())
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

    fn server_of(argv: &[&str]) -> String {
        let server = match Cli::try_parse_from(argv).unwrap().command {
            Command::Submit(c) => c.server,
            Command::Queue(c) => c.server,
            Command::Show(c) => c.server,
            Command::Cancel(c) => c.server,
            Command::Wait(c) => c.server,
            Command::Nodes(c) => c.server,
            Command::Drain(c) => c.server,
            Command::Resume(c) => c.server,
            other => panic!("{argv:?} is not a client command: {other:?}"),
        };
        server.server
    }

    #[test]
    fn every_client_command_takes_the_server_flag() {
        let commands: [&[&str]; 8] = [
            &["submit", "--", "true"],
            &["queue"],
            &["show", "1"],
            &["cancel", "1"],
            &["wait", "1"],
            &["nodes"],
            &["drain", "n1", "--reason", "x"],
            &["resume", "n1"],
        ];
        for command in commands {
            let (name, rest) = command.split_first().unwrap();
            let argv: Vec<&str> = ["gantry", name, "--server", "a:1,b:2"]
                .into_iter()
                .chain(rest.iter().copied())
                .collect();
            assert_eq!(server_of(&argv), "a:1,b:2", "{argv:?}");
        }
        assert_eq!(server_of(&["gantry", "nodes", "--server=c:3"]), "c:3");
    }

    #[test]
    fn every_client_command_reads_gantry_server_then_the_default() {
        let cli = Cli::command();
        for sub in cli.get_subcommands() {
            let server = sub.get_arguments().find(|a| a.get_id() == "server");
            match sub.get_name() {
                "dev" | "supervise" => assert!(server.is_none(), "{}", sub.get_name()),
                name => {
                    let server = server.unwrap_or_else(|| panic!("{name} has no --server"));
                    assert_eq!(
                        server.get_env(),
                        Some(std::ffi::OsStr::new("GANTRY_SERVER"))
                    );
                }
            }
        }
        // The default, with the variable lookup pointed somewhere unset so that the caller's
        // GANTRY_SERVER does not matter (the integration tests run every command through it).
        let matches = Cli::command()
            .mut_subcommand("queue", |q| {
                q.mut_arg("server", |a| a.env("GANTRY_TEST_VARIABLE_NOBODY_SETS"))
            })
            .try_get_matches_from(["gantry", "queue"])
            .unwrap();
        let server = matches
            .subcommand_matches("queue")
            .and_then(|q| q.get_one::<String>("server"));
        assert_eq!(server.map(String::as_str), Some(client::DEFAULT_SERVER));
    }

    #[test]
    fn dev_has_no_server_flag() {
        assert!(Cli::try_parse_from(["gantry", "dev", "--server", "a:1"]).is_err());
        let mut cli = Cli::command();
        let dev = cli.find_subcommand_mut("dev").unwrap();
        assert!(
            !dev.render_long_help().to_string().contains("--server"),
            "gantry dev --help mentions --server"
        );
        let queue = cli.find_subcommand_mut("queue").unwrap();
        assert!(
            queue
                .render_long_help()
                .to_string()
                .contains("GANTRY_SERVER")
        );
    }
}
