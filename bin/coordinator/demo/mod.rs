//! `coordinator demo <name>`: runnable lessons in process isolation, one per step of the
//! seed article (see `docs/TUTORIAL.md`). Each demo lives in its own file, self-contained,
//! so that `examples/<name>.rs` can include the same file and `cargo run --example <name>`
//! runs the same code; this module only registers their tasks and picks one to run.

mod child;
mod cost;
mod crash;
mod generators;
mod isolation;
mod parzen;
mod pool;
mod queue;

use crate::error::AppError;
use clap::{Args, ValueEnum};
use procpool::{Backend, Registry};
use serde::Serialize;
use std::io::{self, Write};
use std::path::PathBuf;

/// The demos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoName {
    /// The seed's Process + Queue: completion order, then order restored by position.
    Queue,
    /// Pool.apply, map, apply_async, map_async on cube(1..=6), with the pid behind each.
    Pool,
    /// Globals changed by workers: the parent's copy under processes and under threads.
    Isolation,
    /// A job that segfaults: a process pool survives it, a thread-based program does not.
    Crash,
    /// The seed's yield half: an endless lazy source into imap, the ATM, the tree search.
    Generators,
    /// One job's life, phase by phase, timed: process against thread.
    Cost,
    /// The seed's width table on its own data, with the article's h vs h^d erratum.
    Parzen,
}

/// How a demo prints what it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DemoFormat {
    /// Prose and tables for people.
    #[default]
    Text,
    /// One JSON object (what the tests read).
    Json,
}

/// How the crash demo's bad job dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum FaultArg {
    /// Reads through a null pointer: SIGSEGV.
    #[default]
    Segv,
    /// Calls std::process::abort(): SIGABRT.
    Abort,
}

/// Where the pool demo runs its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DemoBackend {
    /// Worker processes.
    #[default]
    Process,
    /// OS threads of this process.
    Thread,
    /// Inline.
    Serial,
}

/// `coordinator demo` options.
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Which demo.
    #[arg(value_enum)]
    pub name: DemoName,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "text")]
    pub format: DemoFormat,
    /// Workers [default: 4 for pool and parzen, as in the seed; 2 for isolation, crash and
    /// generators]. queue always starts the seed's four processes; cost uses one worker.
    #[arg(short, long, value_name = "N")]
    pub workers: Option<usize>,
    /// pool: where the jobs run [default: process].
    #[arg(short, long, value_enum)]
    pub backend: Option<DemoBackend>,
    /// parzen: the seed's own samples, exported from numpy by scripts/seed_data.py
    /// (.npy, or CSV) [default: 10000 draws from N(0, I) with seed 123, made in Rust].
    #[arg(long, value_name = "FILE")]
    pub data: Option<PathBuf>,
    /// crash: how the bad job dies [default: segv].
    #[arg(long, value_enum)]
    pub fault: Option<FaultArg>,
    /// generators: results to take from the endless source [default: 10].
    #[arg(short = 'k', long, value_name = "K")]
    pub take: Option<usize>,
}

impl DemoArgs {
    /// Refuses settings the chosen demo does not use, naming them (exit code 2).
    fn check(&self) -> Result<(), AppError> {
        let name = self.name;
        let unused = [
            (
                "--workers",
                self.workers.is_some() && matches!(name, DemoName::Queue | DemoName::Cost),
            ),
            (
                "--backend",
                self.backend.is_some() && name != DemoName::Pool,
            ),
            ("--data", self.data.is_some() && name != DemoName::Parzen),
            ("--fault", self.fault.is_some() && name != DemoName::Crash),
            (
                "--take",
                self.take.is_some() && name != DemoName::Generators,
            ),
        ];
        if let Some((flag, _)) = unused.iter().find(|(_, unused)| *unused) {
            let demo = name
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned());
            return Err(AppError::usage(format!("demo {demo} does not take {flag}")));
        }
        if self.workers == Some(0) {
            return Err(AppError::usage("--workers must be at least 1, got 0"));
        }
        Ok(())
    }
}

/// Registers the demos' tasks and targets.
pub fn register(registry: Registry) -> Registry {
    let registry = queue::register(registry);
    let registry = pool::register(registry);
    let registry = isolation::register(registry);
    let registry = crash::register(registry);
    let registry = generators::register(registry);
    let registry = cost::register(registry);
    parzen::register(registry)
}

/// A demo's error, as every demo file returns it.
type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// Runs a demo and prints what it found.
pub fn run(args: &DemoArgs, out: &mut dyn Write) -> Result<(), AppError> {
    args.check()?;
    let workers = |default: usize| args.workers.unwrap_or(default);
    let result = match args.name {
        DemoName::Queue => show(queue::run(), queue::Report::write_text, args, out),
        DemoName::Pool => {
            let opts = pool::Options {
                workers: workers(4),
                backend: match args.backend.unwrap_or_default() {
                    DemoBackend::Process => Backend::Process,
                    DemoBackend::Thread => Backend::Thread,
                    DemoBackend::Serial => Backend::Serial,
                },
            };
            show(pool::run(&opts), pool::Report::write_text, args, out)
        }
        DemoName::Isolation => {
            let opts = isolation::Options {
                workers: workers(2),
            };
            show(
                isolation::run(&opts),
                isolation::Report::write_text,
                args,
                out,
            )
        }
        DemoName::Crash => {
            let opts = crash::Options {
                workers: workers(2),
                fault: match args.fault.unwrap_or_default() {
                    FaultArg::Segv => crash::Fault::Segv,
                    FaultArg::Abort => crash::Fault::Abort,
                },
            };
            show(crash::run(&opts), crash::Report::write_text, args, out)
        }
        DemoName::Generators => {
            let opts = generators::Options {
                workers: workers(2),
                take: args.take.unwrap_or(10),
                ..generators::Options::default()
            };
            show(
                generators::run(&opts),
                generators::Report::write_text,
                args,
                out,
            )
        }
        DemoName::Cost => show(
            cost::run(&cost::Options::default()),
            cost::Report::write_text,
            args,
            out,
        ),
        DemoName::Parzen => {
            let opts = parzen::Options {
                workers: workers(4),
                data: args.data.clone(),
            };
            show(parzen::run(&opts), parzen::Report::write_text, args, out)
        }
    };
    match result {
        Ok(()) => Ok(()),
        // A closed stdout (`demo ... | head`) ends the demo quietly, like the sweep.
        Err(e) if is_broken_pipe(&*e) => Ok(()),
        Err(e) => Err(classify(e)),
    }
}

/// Prints a demo's report as text or JSON.
fn show<R: Serialize>(
    report: Result<R, DemoError>,
    text: fn(&R, &mut dyn Write) -> io::Result<()>,
    args: &DemoArgs,
    out: &mut dyn Write,
) -> Result<(), DemoError> {
    let report = report?;
    match args.format {
        DemoFormat::Text => text(&report, out)?,
        DemoFormat::Json => {
            /// The report with its schema, `coordinator.demo.<name>/1`.
            #[derive(Serialize)]
            struct Document<'a, R> {
                schema: String,
                #[serde(flatten)]
                report: &'a R,
            }
            let name = args
                .name
                .to_possible_value()
                .map_or_else(String::new, |v| v.get_name().to_owned());
            let doc = Document {
                schema: crate::output::demo_schema(&name),
                report: &report,
            };
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn is_broken_pipe(e: &(dyn std::error::Error + 'static)) -> bool {
    let kind = e
        .downcast_ref::<io::Error>()
        .map(io::Error::kind)
        .or_else(|| {
            e.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
        });
    kind == Some(io::ErrorKind::BrokenPipe)
}

/// Bad input (a setting, a data file) is a usage error (exit 2); anything else is a failure
/// (exit 1).
fn classify(e: DemoError) -> AppError {
    let bad_input = e.downcast_ref::<::parzen::Error>().is_some()
        || matches!(
            e.downcast_ref::<procpool::Error>(),
            Some(procpool::Error::Config(_))
        );
    if bad_input {
        AppError::usage(e.to_string())
    } else {
        AppError::failed(format!("demo: {e}"))
    }
}
