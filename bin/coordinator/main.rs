//! `coordinator`: the Parzen-window density sweep on a pool of worker processes.
//!
//! Thin on purpose: serve as a worker if this process is one, parse, set up logging,
//! dispatch to a mode, and map the outcome to a documented exit code:
//! 0 success, 1 a run that failed or had failed jobs, 2 bad input.
//! A closed stdout (`coordinator | head`) ends the run quietly with 0.

#![warn(clippy::unwrap_used, clippy::expect_used)]

mod advice;
mod bench;
mod cli;
mod config;
mod demo;
mod error;
mod journal;
mod memory;
mod output;
mod run;
mod signals;
mod sweep_plot;
mod sysinfo;
mod tasks;
mod timeline;

use clap::Parser;
use cli::{Cli, Command, LogArgs};
use error::{AppError, Outcome};
use std::io::{self, Write};
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
    let json = cli.prints_json();
    // Buffered: a report is hundreds of small writes. Flushed when the report is complete,
    // and before anything else is printed or drawn (a result is never lost).
    let mut out = output::Tracked::new(io::BufWriter::new(io::stdout().lock()));
    // Under mpirun with the MPI backend, ranks 1..N serve here until rank 0 is done.
    #[cfg(feature = "mpi")]
    let _mpi = if wants_mpi(&cli) {
        match procpool::mpi::init() {
            Ok(mpi) => {
                let mpi = mpi.serve_if_worker(&tasks::registry());
                MPI_WORKERS.get_or_init(|| mpi.workers());
                Some(mpi)
            }
            Err(e) => return fail(&mut out, json, &AppError::failed(e.to_string())),
        }
    } else {
        None
    };
    match dispatch(cli, &mut out) {
        Ok(()) | Err(Outcome::BrokenPipe) => ExitCode::SUCCESS,
        Err(Outcome::Error(e)) => fail(&mut out, json, &e),
    }
}

/// Reports `e` on stderr and maps it to its exit code; under `--format json`, when nothing
/// was printed yet, stdout still gets a document (`coordinator.error/1`) saying what failed.
fn fail(out: &mut output::Tracked<impl Write>, json: bool, e: &AppError) -> ExitCode {
    if json && !out.written() {
        // A reader that went away is not worth a second message.
        let _ = output::write_error(out, e);
    }
    // Whatever stdout holds goes out before the message.
    let _ = out.flush();
    eprintln!("coordinator: {e}");
    ExitCode::from(e.exit_code())
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

fn dispatch(cli: Cli, out: &mut dyn Write) -> Result<(), Outcome> {
    match cli.command {
        Some(Command::Sysinfo(args)) => sysinfo::SysInfo::collect().write(out, args.format)?,
        Some(Command::Bench(args)) => {
            let interrupts = signals::Interrupts::install()
                .map_err(|e| AppError::failed(format!("could not install signal handlers: {e}")))?;
            bench::run(&args, !cli.log.quiet, &interrupts, out)?;
        }
        Some(Command::Demo(args)) => demo::run(&args, out)?,
        None => sweep(&cli.run, !cli.log.quiet, out)?,
    }
    out.flush()?;
    Ok(())
}

/// The default mode: validate, run, print the report (then, unless `-q`, a warning if its
/// densities are all degenerate), then draw the charts if asked.
fn sweep(args: &cli::RunArgs, warnings: bool, out: &mut dyn Write) -> Result<(), Outcome> {
    // Caught from the start, so a signal while samples are drawn exits at once.
    let interrupts = signals::Interrupts::install()
        .map_err(|e| AppError::failed(format!("could not install signal handlers: {e}")))?;
    let cfg = config::RunConfig::from_args(args)?;
    let (report, drawing) = run::run(&cfg, &interrupts)?;
    // The report first: a chart that cannot be drawn never costs the computed result.
    output::write_report(out, &report, cfg.format)?;
    out.flush()?;
    if warnings {
        if let Some(warning) = advice::degenerate_sweep(&report, &cfg.samples) {
            eprintln!("coordinator: {warning}");
        }
    }
    if let Some(path) = &cfg.plot {
        sweep_plot::draw(path, &report)?;
    }
    match (&cfg.timeline, &drawing) {
        (Some(path), Some(drawing)) => drawing.draw(path)?,
        (Some(path), None) => eprintln!(
            "coordinator: --timeline {}: not drawn: no worker started (every width came from \
             the journal)",
            path.display()
        ),
        (None, _) => {}
    }
    // Only a signal that cut the run short counts: one after the last result does not.
    if let Some(signal) = report.signal {
        return Err(AppError::Interrupted {
            signal,
            message: format!(
                "interrupted by {}: {} of {} widths finished, every worker stopped and reaped{}",
                signals::name(signal),
                report.results.len() - report.failed,
                report.results.len(),
                match &report.journal.path {
                    Some(path) if report.journal.error.is_none() => format!(
                        "; the finished widths are in the journal: continue with --resume {}",
                        path.display()
                    ),
                    _ => String::new(),
                }
            ),
        }
        .into());
    }
    let mut parts = Vec::new();
    if report.unsuccessful() > 0 {
        let name = |r: &run::Row| format!("pos {} (h = {})", r.pos, output::num(r.h));
        if report.failed > 0 {
            let which: Vec<String> = report
                .results
                .iter()
                .filter(|r| r.status == run::Status::Failed)
                .map(name)
                .collect();
            parts.push(format!(
                "{} of {} jobs failed: {}",
                report.failed,
                report.results.len(),
                which.join(", ")
            ));
        }
        if report.not_finite > 0 {
            let which: Vec<String> = report
                .results
                .iter()
                .filter(|r| r.status == run::Status::NotFinite)
                .map(|r| format!("{}: {}", name(r), r.note.as_deref().unwrap_or("not finite")))
                .collect();
            parts.push(format!(
                "{} of {} widths gave a value that is not finite (flagged, never chosen): {}",
                report.not_finite,
                report.results.len(),
                which.join("; ")
            ));
        }
    }
    if let Some(error) = &report.journal.error {
        // The error names the journal.
        parts.push(format!(
            "{error}; the report is complete, the journal is not"
        ));
    }
    if !parts.is_empty() {
        return Err(AppError::failed(parts.join("; ")).into());
    }
    Ok(())
}

/// clap's own message, in full (what was missing, the possible values, "did you mean"),
/// coloured as clap decides (never under NO_COLOR or off a terminal); exit code 2 for
/// errors, 0 for --help and --version.
fn clap_exit(e: &clap::Error) -> ExitCode {
    let plain = e.render().to_string();
    if e.use_stderr() && plain.lines().any(|l| l.len() > 2 * error::QUOTE_LIMIT) {
        // clap quotes the value it could not use whole: a long one is cut (uncoloured).
        let _ = io::stderr().write_all(error::shorten_quoted(&plain).as_bytes());
    } else {
        // A reader that went away (`coordinator --help | head -1`) is not an error.
        let _ = e.print();
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
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
        .with_ansi(colour_on_stderr())
        .with_target(false)
        .try_init();
}

/// Whether logs on stderr may be coloured: by the same rules as clap's messages (anstream):
/// never when NO_COLOR is set, always when CLICOLOR_FORCE is, otherwise on a terminal that
/// is not TERM=dumb.
fn colour_on_stderr() -> bool {
    anstream::AutoStream::choice(&io::stderr()) != anstream::ColorChoice::Never
}
