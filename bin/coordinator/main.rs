//! `coordinator`: the Parzen-window density sweep on a pool of worker processes.
//!
//! Thin on purpose: serve as a worker if this process is one, parse, set up logging,
//! dispatch to a mode, and map the outcome to a documented exit code:
//! 0 success, 1 a run that failed or had failed jobs, 2 bad input.
//! A closed stdout (`coordinator | head`) ends the run quietly with 0.

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod cli;
mod config;
mod demo;
mod error;
mod output;
mod run;
mod signals;
mod sysinfo;
mod tasks;
mod timeline;

use clap::Parser;
use cli::{Cli, Command, LogArgs};
use error::AppError;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    // Workers log only when asked (COORDINATOR_WORKER_LOG=<filter>), to their stderr,
    // which the pool forwards; this is the only code that runs before serving.
    if procpool::is_worker() {
        if let Ok(filter) = std::env::var("COORDINATOR_WORKER_LOG") {
            init_worker_tracing(&filter);
        }
    }
    // First thing: in a worker process this serves jobs and exits; code above it runs in
    // every worker too.
    procpool::serve_if_worker(tasks::registry());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    init_tracing(cli.log);
    // Under mpirun with the MPI backend, ranks 1..N serve here until rank 0 is done.
    #[cfg(feature = "mpi")]
    let _mpi = if wants_mpi(&cli) {
        match procpool::mpi::init() {
            Ok(mpi) => {
                let mpi = mpi.serve_if_worker(&tasks::registry());
                MPI_WORKERS.get_or_init(|| mpi.workers());
                Some(mpi)
            }
            Err(e) => {
                eprintln!("coordinator: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Outcome::Error(e)) => {
            eprintln!("coordinator: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(Outcome::BrokenPipe) => ExitCode::SUCCESS,
    }
}

/// Worker ranks of the MPI backend, once MPI is initialized.
#[cfg(feature = "mpi")]
static MPI_WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Whether `backend` is MPI (always false in a build without the `mpi` feature).
pub fn mpi_backend(backend: procpool::Backend) -> bool {
    #[cfg(feature = "mpi")]
    {
        backend == procpool::Backend::Mpi
    }
    #[cfg(not(feature = "mpi"))]
    {
        let _ = backend;
        false
    }
}

/// Worker ranks of the MPI backend, if MPI was initialized.
pub fn mpi_workers() -> Option<usize> {
    #[cfg(feature = "mpi")]
    {
        MPI_WORKERS.get().copied()
    }
    #[cfg(not(feature = "mpi"))]
    {
        None
    }
}

/// Whether this command line runs anything on the MPI backend.
#[cfg(feature = "mpi")]
fn wants_mpi(cli: &Cli) -> bool {
    match &cli.command {
        None => cli.run.backend == cli::BackendArg::Mpi,
        Some(Command::Bench(b)) => b
            .backends
            .as_deref()
            .is_some_and(|list| list.split(',').any(|x| x.trim() == "mpi")),
        Some(_) => false,
    }
}

/// How a mode can end besides success.
enum Outcome {
    Error(AppError),
    BrokenPipe,
}

impl From<AppError> for Outcome {
    fn from(e: AppError) -> Self {
        Outcome::Error(e)
    }
}

impl From<io::Error> for Outcome {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Outcome::BrokenPipe
        } else {
            Outcome::Error(AppError::failed(format!("could not write the output: {e}")))
        }
    }
}

fn dispatch(cli: Cli) -> Result<(), Outcome> {
    let mut out = io::stdout().lock();
    match cli.command {
        Some(Command::Sysinfo(args)) => sysinfo::SysInfo::collect().write(&mut out, args.format)?,
        Some(Command::Bench(args)) => {
            let interrupts = signals::Interrupts::install()
                .map_err(|e| AppError::failed(format!("could not install signal handlers: {e}")))?;
            bench::run(&args, &interrupts, &mut out)?;
        }
        Some(Command::Demo(args)) => demo::run(&args, &mut out)?,
        None => {
            // Caught from the start, so a signal while samples are drawn exits at once.
            let interrupts = signals::Interrupts::install()
                .map_err(|e| AppError::failed(format!("could not install signal handlers: {e}")))?;
            let cfg = config::RunConfig::from_args(&cli.run)?;
            let report = run::run(&cfg, &interrupts)?;
            output::write_report(&mut out, &report, cfg.format)?;
            out.flush()?;
            if let Some(signal) = interrupts.caught() {
                return Err(AppError::Interrupted {
                    signal,
                    message: format!(
                        "interrupted by {}: {} of {} widths finished, every worker stopped and reaped",
                        signals::name(signal),
                        report.results.len() - report.failed,
                        report.results.len()
                    ),
                }
                .into());
            }
            if report.failed > 0 {
                let which: Vec<String> = report
                    .results
                    .iter()
                    .filter(|r| r.error.is_some())
                    .map(|r| format!("pos {} (h = {})", r.pos, r.h))
                    .collect();
                return Err(AppError::failed(format!(
                    "{} of {} jobs failed: {}",
                    report.failed,
                    report.results.len(),
                    which.join(", ")
                ))
                .into());
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// clap's errors as one line and exit code 2; help and version print normally.
fn clap_exit(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("coordinator: {first} (see --help)");
            ExitCode::from(2)
        }
    }
}

fn init_worker_tracing(filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

fn init_tracing(log: LogArgs) {
    use tracing_subscriber::EnvFilter;
    let level = match (log.quiet, log.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,procpool=debug,coordinator=debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
