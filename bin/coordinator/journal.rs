//! `--journal FILE` and `--resume FILE`: the sweep's results journal (a
//! [`procpool::journal`] file), so that a run that dies — SIGKILL, the OOM killer, a
//! reboot, a batch system's time limit, a dead MPI rank — is resumed and pays only for the
//! widths that are missing.
//!
//! What is recorded: each width's [`Estimate`] (count, density, LSCV terms and score), by
//! position, as the ordered result stream delivers it — including estimates whose values
//! are not finite (a computed result, flagged the same way on resume). A job that failed
//! (its worker died past its retries, it timed out, the run was interrupted) is not
//! recorded: a resumed run computes it again.
//!
//! What identifies a run is the journal's header ([`header`]): everything that changes a
//! result, and nothing that does not (backend, workers, chunksize, output format), so a run
//! killed on one backend may be resumed on another.
//!
//! What a crash can cost: a killed coordinator loses nothing it recorded (each record is
//! written to the file before the next result is taken); a machine crash or power loss can
//! cost the results of the last second (records are `fdatasync`ed in the background at
//! least once a second, and at the end).

use crate::config::{RunConfig, Source};
use crate::error::AppError;
use crate::output::num;
use crate::tasks::{Estimate, ParzenJob};
use procpool::Task;
use procpool::journal::{Header, Journal, JournalError, JournalOptions, Recovered, TornTail};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

/// The layout of a record (an encoded [`Estimate`]); part of the header's `task` field, so
/// a change to what is recorded is refused by name instead of misread.
pub const RECORD_VERSION: u32 = 1;

/// What the sweep does with a journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `--journal FILE`: a new journal; `overwrite` (`--force`) replaces an existing file.
    Create {
        /// Whether an existing file may be replaced.
        overwrite: bool,
    },
    /// `--resume FILE`: continue the run an existing journal recorded.
    Resume,
}

/// A journal the sweep will write: where, and how it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The file.
    pub path: PathBuf,
    /// New, or resumed.
    pub mode: Mode,
}

impl Plan {
    /// The flag that named the file, for messages.
    pub fn flag(&self) -> &'static str {
        match self.mode {
            Mode::Create { .. } => "--journal",
            Mode::Resume => "--resume",
        }
    }
}

/// Checks the journal's path before any sample is drawn or worker started (exit code 2
/// when it cannot be used): a new journal must not exist (unless `--force`) and its
/// directory must take a file; a resumed one must exist and be a journal this build reads,
/// intact up to a possibly torn last record. Nothing is changed.
pub fn check_path(plan: &Plan) -> Result<(), AppError> {
    let path = &plan.path;
    let flag = plan.flag();
    let bad = |why: String| AppError::usage(format!("{flag} {}: {why}", path.display()));
    if path.is_dir() {
        return Err(bad("is a directory".into()));
    }
    let cannot = |e: io::Error| bad(format!("cannot be written: {e}"));
    match plan.mode {
        Mode::Create { overwrite } => {
            if path.exists() {
                if !overwrite {
                    return Err(bad(
                        "already exists; continue the run it recorded with --resume FILE, or \
                         replace it with --force (nothing was changed)"
                            .into(),
                    ));
                }
                OpenOptions::new().append(true).open(path).map_err(cannot)?;
                refuse_in_use(plan)?;
            } else {
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .map_err(cannot)?;
                // Only a probe: the journal is created when the run starts.
                let _ = std::fs::remove_file(path);
            }
        }
        Mode::Resume => {
            if !path.exists() {
                return Err(bad(
                    "does not exist; start a journal with --journal FILE".into()
                ));
            }
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(cannot)?;
            // Not a journal, another format version, damage before the last record: said
            // now, before any work. The header is compared once the samples exist.
            Journal::read(path).map_err(|e| refusal(flag, e))?;
            refuse_in_use(plan)?;
        }
    }
    Ok(())
}

/// Refuses (exit code 2) a journal that another run still has open: it holds the file's
/// lock, so resuming or replacing it would fail once the samples exist.
fn refuse_in_use(plan: &Plan) -> Result<(), AppError> {
    let flag = plan.flag();
    if Journal::in_use(&plan.path).map_err(|e| refusal(flag, e))? {
        return Err(refusal(
            flag,
            JournalError::InUse {
                path: plan.path.clone(),
            },
        ));
    }
    Ok(())
}

/// A journal error as the CLI reports it: bad input (exit 2), except a failed write or
/// sync, which is a failed run (exit 1).
fn refusal(flag: &str, e: JournalError) -> AppError {
    match e {
        JournalError::Io { ref source, .. }
            if source.kind() != io::ErrorKind::NotFound
                && source.kind() != io::ErrorKind::PermissionDenied =>
        {
            AppError::failed(format!("{flag}: {e}"))
        }
        JournalError::Broken { .. } => AppError::failed(format!("{flag}: {e}")),
        e => AppError::usage(format!("{flag}: {e}")),
    }
}

/// The header that identifies a sweep: every input that changes a result, in order.
///
/// `tool` (name and version), `task` (the job and its record layout), `source` (gaussian
/// or file), `samples`, `dims`, `seed`, `mean`, `cov` (`none` for a file), `data` (SHA-256
/// of the samples: their count, dimensions and every value's bits), `point`, `widths`
/// (count, first, last and a SHA-256 of every width's bits), `select`.
pub fn header(cfg: &RunConfig) -> Header {
    let list = |v: &[f64]| v.iter().map(|&x| num(x)).collect::<Vec<_>>().join(",");
    let none = "none (samples from a file)";
    let (source, seed, mean, cov) = match &cfg.source {
        Source::Gaussian { gaussian, seed } => (
            "gaussian",
            seed.to_string(),
            list(gaussian.mean()),
            list(gaussian.cov()),
        ),
        Source::File(_) => ("file", none.to_owned(), none.to_owned(), none.to_owned()),
    };
    Header::new()
        .text("tool", concat!("coordinator ", env!("CARGO_PKG_VERSION")))
        .text(
            "task",
            format!("{} (estimate record v{RECORD_VERSION})", ParzenJob::NAME),
        )
        .text("source", source)
        .text("samples", cfg.samples.len().to_string())
        .text("dims", cfg.samples.dims().to_string())
        .text("seed", seed)
        .text("mean", mean)
        .text("cov", cov)
        .bytes("data", data_hash(&cfg.samples).to_vec())
        .text("point", list(&cfg.point))
        .text("widths", widths_id(&cfg.widths))
        .text("select", crate::run::select_name(cfg.select))
}

/// SHA-256 of the samples: a tag, their count and dimensions, then every value's bits.
pub fn data_hash(samples: &parzen::Samples) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"coordinator samples v1\0");
    hasher.update((samples.len() as u64).to_le_bytes());
    hasher.update((samples.dims() as u64).to_le_bytes());
    hash_floats(&mut hasher, samples.as_slice());
    hasher.finalize().into()
}

/// Feeds `values`' little-endian bits to `hasher`, a block at a time.
fn hash_floats(hasher: &mut Sha256, values: &[f64]) {
    let mut buf = Vec::with_capacity(8 * 4096);
    for block in values.chunks(4096) {
        buf.clear();
        for x in block {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        hasher.update(&buf);
    }
}

/// The widths as the header names them: how many, the first and the last, and a hash of
/// them all (a list of millions would not fit a readable field).
fn widths_id(widths: &[f64]) -> String {
    let mut hasher = Sha256::new();
    hash_floats(&mut hasher, widths);
    let digest = hasher.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    match (widths.first(), widths.last()) {
        (Some(&first), Some(&last)) => format!(
            "{} widths, {} to {}, sha256 {hex}",
            widths.len(),
            num(first),
            num(last)
        ),
        _ => format!("no widths, sha256 {hex}"),
    }
}

/// A journal open for appending, and what it already held.
pub struct Opened {
    /// The journal: new records go at its end.
    pub journal: Journal,
    /// The estimates it held, by position (empty for a new journal).
    pub recovered: BTreeMap<u64, Estimate>,
    /// The torn last record that was dropped, if there was one.
    pub torn: Option<TornTail>,
}

/// Resumes the journal `plan` names for the run `cfg` describes: the header must match
/// (else exit 2 naming the first field that differs), every record must be intact but a
/// torn last one (dropped and reported), and every position must be one of the run's.
pub fn resume(plan: &Plan, cfg: &RunConfig) -> Result<Opened, AppError> {
    let flag = plan.flag();
    let (journal, recovered): (Journal, Recovered) =
        Journal::resume(&plan.path, &header(cfg)).map_err(|e| refusal(flag, e))?;
    let torn = recovered.torn_tail();
    let n = cfg.widths.len() as u64;
    if let Some(pos) = recovered.positions().find(|&p| p >= n) {
        return Err(AppError::usage(format!(
            "{flag}: journal {} records position {pos}, but this run has {n} widths (a journal \
             edited by hand?)",
            plan.path.display()
        )));
    }
    let recovered = recovered
        .decode_all::<Estimate>()
        .map_err(|e| refusal(flag, e))?;
    Ok(Opened {
        journal,
        recovered,
        torn,
    })
}

/// Creates the journal `plan` names, with the header of the run `cfg` describes (replacing
/// an existing file only with `--force`).
pub fn create(plan: &Plan, cfg: &RunConfig) -> Result<Opened, AppError> {
    let overwrite = matches!(plan.mode, Mode::Create { overwrite: true });
    let journal = JournalOptions::new()
        .overwrite(overwrite)
        .create(&plan.path, &header(cfg))
        .map_err(|e| refusal(plan.flag(), e))?;
    Ok(Opened {
        journal,
        recovered: BTreeMap::new(),
        torn: None,
    })
}

/// What the journal of a run reports at the end: how many widths it supplied, and the
/// error that stopped it, if one did (the run goes on without it).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The journal's file, when there was one.
    pub path: Option<PathBuf>,
    /// Whether the run continued an existing journal (`--resume`).
    pub resumed: bool,
    /// Widths whose results came from the journal instead of a worker.
    pub recovered: usize,
    /// A write or sync that failed: the report is complete, the journal is not.
    pub error: Option<String>,
}

/// Describes a torn tail for stderr.
pub fn torn_message(path: &Path, torn: TornTail) -> String {
    format!(
        "journal {}: dropped a torn last record ({} bytes at byte {}), cut short when the run \
         that wrote it died; the width it held, if any, is computed again",
        path.display(),
        torn.bytes,
        torn.offset
    )
}
