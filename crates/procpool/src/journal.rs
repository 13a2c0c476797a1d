//! A results journal: an append-only file of finished results, one checksummed record
//! per position, so that a run that dies — SIGKILL, the OOM killer, a reboot, a batch
//! system's time limit — can be resumed and pay only for the positions that are missing.
//!
//! The program writes a [`Header`] that identifies the run exactly (tool version, task,
//! a hash of the data, parameters, seed: the caller chooses the fields), then appends each
//! output as it arrives. On restart, [`Journal::resume`] checks the header against the run
//! asked for, verifies every record, drops a torn last record, and hands back what was
//! recorded; the program runs only the positions [`Recovered::missing`] names, appending
//! to the same file.
//!
//! ```
//! use procpool::journal::{Header, Journal};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("procpool-journal-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! let path = dir.join("squares.journal");
//! let header = Header::new().text("tool", "squares 1.0").text("n", "10");
//! let mut journal = Journal::create(&path, &header)?;
//! for pos in 0..4u64 {
//!     journal.append(pos, &(pos * pos))?;
//! }
//! drop(journal); // as if the run had been killed here
//!
//! let (mut journal, recovered) = Journal::resume(&path, &header)?;
//! let mut squares = recovered.decode_all::<u64>()?;
//! let todo: Vec<u64> = recovered.missing(10).collect();
//! assert_eq!(todo, [4, 5, 6, 7, 8, 9]);
//! for pos in todo {
//!     journal.append(pos, &(pos * pos))?;
//!     squares.insert(pos, pos * pos);
//! }
//! journal.finish()?;
//! assert_eq!(squares.into_values().collect::<Vec<_>>(), [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! With a pool, [`Journal::record`] appends each finished output of an ordered stream as
//! it passes by; pair the outputs with their positions yourself, because a resumed run
//! submits only the missing ones:
//!
//! ```no_run
//! # use procpool::journal::{Header, Journal};
//! # use procpool::{Pool, Registry, Task};
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # struct Cube(u64);
//! # impl Task for Cube {
//! #     const NAME: &'static str = "cube";
//! #     type Context = ();
//! #     type Output = u64;
//! #     fn run(self, _: &()) -> u64 { self.0.pow(3) }
//! # }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # procpool::serve_if_worker(Registry::new().task::<Cube>());
//! # let (n, header) = (100, Header::new().text("task", "cube"));
//! # let pool = Pool::<Cube>::builder().build()?;
//! let (mut journal, recovered) = Journal::resume("cubes.journal", &header)?;
//! let mut cubes = recovered.decode_all::<u64>()?;
//! let todo: Vec<u64> = recovered.missing(n).collect();
//! let outputs = pool.imap(todo.iter().map(|&pos| Cube(pos)));
//! for item in journal.record(todo.iter().copied().zip(outputs)) {
//!     let (pos, result) = item?; // the outer error is the journal's, the inner the job's
//!     cubes.insert(pos, result?);
//! }
//! journal.finish()?;
//! // With imap_unordered: .map(|t| (todo[t.pos as usize], t.result)) before record().
//! # Ok(())
//! # }
//! ```
//!
//! # Durability: what a crash can cost
//!
//! Every [`Journal::append`] hands its whole record to the operating system (one
//! `pwrite`) before it returns. A process that is killed therefore loses nothing it
//! appended; at worst the record being written when it died is cut short, and `resume`
//! drops that torn record and reports it ([`Recovered::torn_tail`]).
//!
//! Surviving a machine crash or power loss takes `fdatasync`, which a background thread
//! issues in batches: one [sync interval](JournalOptions::sync_interval) (1 s by default)
//! after the first record that is not yet synced, and again after every further interval
//! while records keep coming, so `append` never waits for the disk. [`Journal::sync`],
//! [`Journal::finish`] and dropping the journal sync too. A machine crash can thus cost
//! the records appended during the last sync interval (plus the time one `fdatasync`
//! takes), and nothing older: those positions are simply missing, or their last one torn,
//! and a resumed run computes them again. On a file system that can write later blocks to
//! disk before earlier ones, a power loss may damage more than the last record; `resume`
//! then reports corruption rather than guess.
//!
//! Errors from the background sync are reported by the next `append`, `sync` or `finish`;
//! after any write or sync error the journal takes no more records
//! ([`JournalError::Broken`]). Dropping a journal cannot report a failed final sync (it is
//! logged): call [`Journal::finish`] to know.
//!
//! # One writer at a time
//!
//! An open [`Journal`] holds an exclusive lock on its file (`flock`) until it is dropped
//! or its process dies, SIGKILL included: the kernel releases the lock with the file.
//! While one run holds it, [`Journal::resume`] and an overwriting
//! [`JournalOptions::create`] of the same file refuse with [`JournalError::InUse`] and
//! change nothing, so two runs never interleave records or truncate each other's work.
//! [`Journal::read`] takes no lock: reading while a run appends sees the records written
//! so far, and at most a torn last one. The lock is advisory, between programs that use
//! it; on a file system without `flock` support the journal works unlocked (logged at
//! debug level).
//!
//! # Duplicates
//!
//! A position is recorded once. Appending a position that is already in the journal
//! (appended earlier, or recovered) with a byte-identical output does nothing and returns
//! `Ok(false)`: results are deterministic, so it is the same result. With a different
//! output it is [`JournalError::Conflict`] and nothing is written. To know, an open
//! journal keeps each recorded position's record checksum in memory (a `u64` and a `u32`
//! per position, plus the map's overhead).
//!
//! # File format (version 1)
//!
//! All integers little-endian; `crc32` is CRC-32 (IEEE), as `crc32fast` computes it.
//!
//! ```text
//! file     := preamble header record*
//! preamble := "PROCPOOL-JOURNAL\n" (17 bytes) | version: u32 | header_len: u32
//! header   := header_len bytes (the Header in the codec's encoding)
//!           | crc32(version, header_len, header bytes): u32
//! record   := len: u32 | pos: u64 | crc32(len, pos): u32
//!           | payload: len bytes (the output in the codec's encoding)
//!           | crc32(everything before it in the record): u32
//! ```
//!
//! The header checksum of each record makes its length trustworthy: a record whose
//! header is intact but which runs past the end of the file was cut short by a crash (a
//! torn tail); a damaged record header is a torn tail only when no intact record follows
//! it. Any other damage is corruption, reported with its byte offset.

use crate::wire::codec::{self, CodecError};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// The first bytes of every journal (`head -1` prints `PROCPOOL-JOURNAL`).
pub const MAGIC: [u8; 17] = *b"PROCPOOL-JOURNAL\n";
/// The file format this library writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The largest encoded output one record may hold (the codec's decode limit).
pub const MAX_RECORD_BYTES: usize = codec::DECODE_LIMIT;
/// The largest encoded [`Header`] a journal may have.
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// How long a record may wait for its `fdatasync`, unless told otherwise.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes before a record's payload: length, position, header checksum.
const RECORD_HEAD: usize = 16;
/// Bytes of a record besides its payload.
const RECORD_OVERHEAD: usize = RECORD_HEAD + 4;
/// Bytes of the preamble: magic, version, header length.
const PREAMBLE: usize = MAGIC.len() + 8;
/// How many bytes of a value an error message quotes.
const QUOTE_LIMIT: usize = 200;
/// Read size when scanning and when checking a record in place.
const CHUNK: usize = 1 << 16;

// ----- errors ----------------------------------------------------------------------------

/// Everything creating, resuming, reading or appending to a journal can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// An operating-system call on the journal failed.
    #[error("journal {}: could not {action}: {source}", path.display())]
    Io {
        /// The journal.
        path: PathBuf,
        /// What we were doing, e.g. "create the file".
        action: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// `create` found a file already there (it never overwrites one unless told to).
    #[error(
        "journal {} already exists: resume it, or overwrite it on purpose (nothing was written)",
        path.display()
    )]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// Another open journal holds the file's lock: a run that is still going, in this
    /// process or another.
    #[error(
        "journal {} is in use by another run (an open journal holds its lock); wait for that \
         run to end, or use another file (nothing was changed)",
        path.display()
    )]
    InUse {
        /// The journal.
        path: PathBuf,
    },
    /// The file does not start with [`MAGIC`].
    #[error("{} is not a procpool journal: it does not start with \"PROCPOOL-JOURNAL\"", path.display())]
    NotAJournal {
        /// The file.
        path: PathBuf,
    },
    /// The file is a journal in another format version.
    #[error(
        "journal {} has format version {found}; this library reads version {supported} only",
        path.display()
    )]
    Version {
        /// The journal.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this library reads ([`FORMAT_VERSION`]).
        supported: u32,
    },
    /// The journal's header is incomplete or damaged, or this run's cannot be written.
    #[error("journal {}: bad header: {reason}", path.display())]
    BadHeader {
        /// The journal.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The journal was written for a different run: the first header field that differs.
    #[error(
        "journal {} was written for a different run: header field {field}: the journal has \
         {journal}, this run has {expected}",
        path.display()
    )]
    Mismatch {
        /// The journal.
        path: PathBuf,
        /// The field's name, quoted.
        field: String,
        /// The journal's value (quoted, at most about 200 bytes), or why it has none.
        journal: String,
        /// This run's value (quoted, at most about 200 bytes), or why it has none.
        expected: String,
    },
    /// A record before the end of the file is damaged; what follows it cannot be trusted.
    #[error(
        "journal {} is corrupt at byte {offset} (after {record} intact records): {reason}",
        path.display()
    )]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// How many intact records come before it.
        record: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// An append for a position already recorded with a different output.
    #[error(
        "journal {}: position {pos} is already recorded with a different output (a task that \
         is not deterministic?); nothing was written",
        path.display()
    )]
    Conflict {
        /// The journal.
        path: PathBuf,
        /// The position.
        pos: u64,
    },
    /// An output whose encoding is larger than [`MAX_RECORD_BYTES`].
    #[error(
        "journal {}: the output for position {pos} encodes to {len} bytes, more than the \
         {max}-byte limit",
        path.display()
    )]
    TooLarge {
        /// The journal.
        path: PathBuf,
        /// The position.
        pos: u64,
        /// Its encoded length.
        len: usize,
        /// The limit ([`MAX_RECORD_BYTES`]).
        max: usize,
    },
    /// An output could not be encoded.
    #[error("journal {}: could not encode the output for position {pos}: {source}", path.display())]
    Encode {
        /// The journal.
        path: PathBuf,
        /// The position.
        pos: u64,
        /// What the codec said.
        source: CodecError,
    },
    /// A recorded output could not be decoded as the type asked for.
    #[error(
        "journal {}: the output recorded for position {pos} does not decode as the type asked \
         for: {source}",
        path.display()
    )]
    Decode {
        /// The journal.
        path: PathBuf,
        /// The position.
        pos: u64,
        /// What the codec said.
        source: CodecError,
    },
    /// An earlier write or sync failed, so the journal takes no more records.
    #[error(
        "journal {}: an earlier write or sync failed, so it takes no more records",
        path.display()
    )]
    Broken {
        /// The journal.
        path: PathBuf,
    },
}

fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

// ----- header ----------------------------------------------------------------------------

/// What identifies a run: named fields in order, compared one by one on resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    fields: Vec<Field>,
}

/// One named field of a [`Header`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// The field's name, e.g. "seed".
    pub name: String,
    /// Its value.
    pub value: Value,
}

/// The value of a header [`Field`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// Text, e.g. a version or a number as the user wrote it.
    Text(String),
    /// Bytes, e.g. a hash.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
}

impl Header {
    /// A header with no fields.
    pub fn new() -> Header {
        Header::default()
    }

    /// Adds a text field at the end.
    pub fn text(mut self, name: impl Into<String>, value: impl Into<String>) -> Header {
        self.fields.push(Field {
            name: name.into(),
            value: Value::Text(value.into()),
        });
        self
    }

    /// Adds a bytes field at the end.
    pub fn bytes(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Header {
        self.fields.push(Field {
            name: name.into(),
            value: Value::Bytes(value.into()),
        });
        self
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The value of the first field called `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }

    /// The first field, in `expected`'s order, where this header (a journal's) and
    /// `expected` differ: (field name, this header's side, `expected`'s side), quoted.
    fn first_difference(&self, expected: &Header) -> Option<(String, String, String)> {
        let (ours, theirs) = (&self.fields, &expected.fields);
        for i in 0..ours.len().max(theirs.len()) {
            let diff = match (ours.get(i), theirs.get(i)) {
                (Some(o), Some(t)) if o == t => continue,
                (Some(o), Some(t)) if o.name == t.name => (
                    quote_text(&t.name),
                    o.value.to_string(),
                    t.value.to_string(),
                ),
                (Some(o), Some(t)) => (
                    quote_text(&t.name),
                    format!(
                        "no such field (its field {} is {})",
                        i + 1,
                        quote_text(&o.name)
                    ),
                    t.value.to_string(),
                ),
                (None, Some(t)) => (
                    quote_text(&t.name),
                    format!("no such field (it has {} fields)", ours.len()),
                    t.value.to_string(),
                ),
                (Some(o), None) => (
                    quote_text(&o.name),
                    o.value.to_string(),
                    format!("no such field (it has {} fields)", theirs.len()),
                ),
                (None, None) => break,
            };
            return Some(diff);
        }
        None
    }
}

/// Text, quoted with escapes, cut to about [`QUOTE_LIMIT`] bytes.
fn quote_text(s: &str) -> String {
    if s.len() <= QUOTE_LIMIT {
        return format!("{s:?}");
    }
    let mut cut = QUOTE_LIMIT;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{:?}... ({} bytes)", &s[..cut], s.len())
}

impl fmt::Display for Value {
    /// Text quoted, bytes in hex; either cut to about 200 bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(&quote_text(s)),
            Value::Bytes(b) => {
                f.write_str("0x")?;
                for byte in b.iter().take(QUOTE_LIMIT / 2) {
                    write!(f, "{byte:02x}")?;
                }
                if b.len() > QUOTE_LIMIT / 2 {
                    write!(f, "... ({} bytes)", b.len())?;
                }
                Ok(())
            }
        }
    }
}

// ----- options -----------------------------------------------------------------------------

/// How to open a journal: the settings of [`Journal::create`] and [`Journal::resume`].
#[derive(Debug, Clone)]
pub struct JournalOptions {
    overwrite: bool,
    sync_interval: Duration,
}

impl Default for JournalOptions {
    fn default() -> JournalOptions {
        JournalOptions {
            overwrite: false,
            sync_interval: DEFAULT_SYNC_INTERVAL,
        }
    }
}

impl JournalOptions {
    /// The defaults: never overwrite, sync within [`DEFAULT_SYNC_INTERVAL`].
    pub fn new() -> JournalOptions {
        JournalOptions::default()
    }

    /// Whether `create` may replace an existing file (default: no, it refuses). A file
    /// that another open journal holds is never replaced ([`JournalError::InUse`]).
    pub fn overwrite(mut self, on: bool) -> JournalOptions {
        self.overwrite = on;
        self
    }

    /// The longest a record waits for its `fdatasync` while the journal is open; zero
    /// syncs as soon as the background thread gets to it.
    pub fn sync_interval(mut self, interval: Duration) -> JournalOptions {
        self.sync_interval = interval;
        self
    }

    /// Creates a journal at `path` with `header`; see [`Journal::create`].
    pub fn create(&self, path: impl AsRef<Path>, header: &Header) -> Result<Journal, JournalError> {
        let path = path.as_ref();
        let encoded = codec::encode(header).map_err(|e| JournalError::BadHeader {
            path: path.to_path_buf(),
            reason: format!("this run's header does not encode: {e}"),
        })?;
        if encoded.len() > MAX_HEADER_BYTES {
            return Err(JournalError::BadHeader {
                path: path.to_path_buf(),
                reason: format!(
                    "this run's header encodes to {} bytes, more than the {MAX_HEADER_BYTES}-byte \
                     limit",
                    encoded.len()
                ),
            });
        }
        let mut bytes = Vec::with_capacity(PREAMBLE + encoded.len() + 4);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&encoded);
        let crc = crc32fast::hash(&bytes[MAGIC.len()..]);
        bytes.extend_from_slice(&crc.to_le_bytes());

        let mut open = OpenOptions::new();
        open.read(true).write(true);
        if self.overwrite {
            // Not truncated on open: another run may hold it (checked by the lock first).
            open.create(true);
        } else {
            open.create_new(true);
        }
        let file = open.open(path).map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                JournalError::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io_error(path, "create the file")(source)
            }
        })?;
        let written = lock(path, &file)
            .and_then(|()| {
                if self.overwrite {
                    file.set_len(0)
                        .map_err(io_error(path, "truncate the old journal"))
                } else {
                    Ok(())
                }
            })
            .and_then(|()| {
                file.write_all_at(&bytes, 0)
                    .map_err(io_error(path, "write the header"))
            })
            .and_then(|()| file.sync_data().map_err(io_error(path, "sync the header")));
        if let Err(e) = written {
            if !self.overwrite && !matches!(e, JournalError::InUse { .. }) {
                // create_new made this file and it holds no result: leave no half-made
                // journal behind to block the next attempt.
                let _ = std::fs::remove_file(path);
            }
            return Err(e);
        }
        sync_parent_dir(path);
        Journal::open(
            path,
            file,
            bytes.len() as u64,
            HashMap::new(),
            self.sync_interval,
        )
    }

    /// Resumes the journal at `path` for the run `expected` describes; see
    /// [`Journal::resume`]. `overwrite` does not apply.
    pub fn resume(
        &self,
        path: impl AsRef<Path>,
        expected: &Header,
    ) -> Result<(Journal, Recovered), JournalError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(path, "open the file to resume it"))?;
        lock(path, &file)?;
        let contents = Contents::read(path, &file, Some(expected))?;
        if let Some(torn) = contents.recovered.torn {
            file.set_len(torn.offset)
                .map_err(io_error(path, "cut off the torn last record"))?;
            file.sync_data().map_err(io_error(
                path,
                "sync after cutting off the torn last record",
            ))?;
            debug!(
                path = %path.display(),
                offset = torn.offset,
                bytes = torn.bytes,
                "dropped a torn last record"
            );
        }
        let journal = Journal::open(path, file, contents.end, contents.index, self.sync_interval)?;
        Ok((journal, contents.recovered))
    }
}

/// Takes the journal's exclusive lock on `file` without waiting (see "One writer at a
/// time"): [`JournalError::InUse`] if another open journal holds it.
fn lock(path: &Path, file: &File) -> Result<(), JournalError> {
    use rustix::{fs::FlockOperation, io::Errno};
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(()),
        Err(Errno::WOULDBLOCK) => Err(JournalError::InUse {
            path: path.to_path_buf(),
        }),
        Err(Errno::INTR) => lock(path, file),
        Err(e) => {
            debug!(path = %path.display(), "journal works unlocked: flock failed: {e}");
            Ok(())
        }
    }
}

/// Makes a new file's directory entry durable, where the file system allows it.
fn sync_parent_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        debug!(dir = %dir.display(), "could not sync the journal's directory: {e}");
    }
}

// ----- reading -------------------------------------------------------------------------------

/// The dropped end of a journal: a record cut short by a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TornTail {
    /// Where it starts: the journal's length once it is dropped.
    pub offset: u64,
    /// How many bytes it had.
    pub bytes: u64,
}

/// What a journal held: the outputs recorded per position, and any torn tail dropped.
#[derive(Debug, Clone)]
pub struct Recovered {
    path: PathBuf,
    outputs: BTreeMap<u64, Vec<u8>>,
    torn: Option<TornTail>,
}

impl Recovered {
    /// How many positions are recorded.
    pub fn len(&self) -> usize {
        self.outputs.len()
    }

    /// Whether no position is recorded.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty()
    }

    /// Whether `pos` is recorded.
    pub fn contains(&self, pos: u64) -> bool {
        self.outputs.contains_key(&pos)
    }

    /// The recorded positions, ascending.
    pub fn positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.outputs.keys().copied()
    }

    /// The positions in `0..n` that are not recorded, ascending: what is left to run.
    pub fn missing(&self, n: u64) -> impl Iterator<Item = u64> + '_ {
        (0..n).filter(|pos| !self.outputs.contains_key(pos))
    }

    /// The encoded output recorded for `pos`.
    pub fn bytes(&self, pos: u64) -> Option<&[u8]> {
        self.outputs.get(&pos).map(Vec::as_slice)
    }

    /// The output recorded for `pos`, decoded as `O`.
    pub fn get<O: DeserializeOwned>(&self, pos: u64) -> Result<Option<O>, JournalError> {
        self.outputs
            .get(&pos)
            .map(|bytes| self.decode(pos, bytes))
            .transpose()
    }

    /// Every recorded output, decoded as `O`, by position.
    pub fn decode_all<O: DeserializeOwned>(&self) -> Result<BTreeMap<u64, O>, JournalError> {
        self.outputs
            .iter()
            .map(|(&pos, bytes)| Ok((pos, self.decode(pos, bytes)?)))
            .collect()
    }

    /// The encoded outputs, by position.
    pub fn into_bytes(self) -> BTreeMap<u64, Vec<u8>> {
        self.outputs
    }

    /// The torn last record that was dropped, if there was one.
    pub fn torn_tail(&self) -> Option<TornTail> {
        self.torn
    }

    fn decode<O: DeserializeOwned>(&self, pos: u64, bytes: &[u8]) -> Result<O, JournalError> {
        codec::decode(bytes).map_err(|source| JournalError::Decode {
            path: self.path.clone(),
            pos,
            source,
        })
    }
}

/// A journal's verified contents.
struct Contents {
    header: Header,
    recovered: Recovered,
    /// Each position's record checksum (for duplicate checks on append).
    index: HashMap<u64, u32>,
    /// Where the intact records end.
    end: u64,
}

/// Reads exactly `buf.len()` bytes, or returns how many there were before the end.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Contents {
    /// Reads and verifies the journal in `file`; with `expected`, the header must match it
    /// (checked before the records are read).
    fn read(path: &Path, file: &File, expected: Option<&Header>) -> Result<Contents, JournalError> {
        let file_len = file
            .metadata()
            .map_err(io_error(path, "read the file's length"))?
            .len();
        let mut r = BufReader::with_capacity(CHUNK, file);
        let read_err = io_error(path, "read the file");
        let bad_header = |reason: String| JournalError::BadHeader {
            path: path.to_path_buf(),
            reason,
        };

        let mut preamble = [0u8; PREAMBLE];
        let got = read_up_to(&mut r, &mut preamble).map_err(read_err)?;
        let magic_got = got.min(MAGIC.len());
        if preamble[..magic_got] != MAGIC[..magic_got] {
            return Err(JournalError::NotAJournal {
                path: path.to_path_buf(),
            });
        }
        if got < PREAMBLE {
            return Err(bad_header(format!(
                "the file ends after {got} bytes, inside its header: it was created but its header \
                 was never written (a crash while creating it?); no result was recorded"
            )));
        }
        let version = u32_at(&preamble, MAGIC.len());
        if version != FORMAT_VERSION {
            return Err(JournalError::Version {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let header_len = u32_at(&preamble, MAGIC.len() + 4) as usize;
        if header_len > MAX_HEADER_BYTES {
            return Err(bad_header(format!(
                "it claims {header_len} bytes, more than the {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        let header_end = (PREAMBLE + header_len + 4) as u64;
        if header_end > file_len {
            return Err(bad_header(format!(
                "the file ends after {file_len} bytes, inside its {header_end}-byte header (a \
                 crash while creating it?); no result was recorded"
            )));
        }
        let mut header_bytes = vec![0u8; header_len + 4];
        r.read_exact(&mut header_bytes)
            .map_err(io_error(path, "read the header"))?;
        let stored_crc = u32_at(&header_bytes, header_len);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&preamble[MAGIC.len()..]);
        hasher.update(&header_bytes[..header_len]);
        if hasher.finalize() != stored_crc {
            return Err(bad_header("its checksum does not match".to_owned()));
        }
        let header: Header = codec::decode(&header_bytes[..header_len])
            .map_err(|e| bad_header(format!("it does not decode: {e}")))?;
        if let Some(expected) = expected {
            if let Some((field, journal, expected)) = header.first_difference(expected) {
                return Err(JournalError::Mismatch {
                    path: path.to_path_buf(),
                    field,
                    journal,
                    expected,
                });
            }
        }

        let mut outputs = BTreeMap::new();
        let mut index = HashMap::new();
        let mut off = header_end;
        let mut intact = 0u64;
        let corrupt = |offset: u64, record: u64, reason: String| JournalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            record,
            reason,
        };
        let torn = loop {
            let remaining = file_len - off;
            if remaining == 0 {
                break None;
            }
            let torn_here = Some(TornTail {
                offset: off,
                bytes: remaining,
            });
            if remaining < RECORD_HEAD as u64 {
                break torn_here;
            }
            let mut head = [0u8; RECORD_HEAD];
            r.read_exact(&mut head)
                .map_err(io_error(path, "read a record"))?;
            let (len, pos) = (u32_at(&head, 0) as usize, u64_at(&head, 4));
            if crc32fast::hash(&head[..12]) != u32_at(&head, 12) {
                if let Some(next) = find_intact_record(file, off + 1, file_len)
                    .map_err(io_error(path, "scan past a damaged record"))?
                {
                    return Err(corrupt(
                        off,
                        intact,
                        format!(
                            "the record's header checksum does not match, and an intact record \
                             follows at byte {next}"
                        ),
                    ));
                }
                break torn_here;
            }
            if len > MAX_RECORD_BYTES {
                return Err(corrupt(
                    off,
                    intact,
                    format!(
                        "the record claims {len} bytes, more than the {MAX_RECORD_BYTES}-byte limit"
                    ),
                ));
            }
            let size = (RECORD_OVERHEAD + len) as u64;
            if size > remaining {
                // The header is intact, so the length is what was written: the file ends
                // inside this record.
                break torn_here;
            }
            let mut payload = vec![0u8; len];
            let mut tail = [0u8; 4];
            r.read_exact(&mut payload)
                .and_then(|()| r.read_exact(&mut tail))
                .map_err(io_error(path, "read a record"))?;
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&head);
            hasher.update(&payload);
            let crc = hasher.finalize();
            if crc != u32::from_le_bytes(tail) {
                if size == remaining {
                    break torn_here;
                }
                return Err(corrupt(
                    off,
                    intact,
                    format!("the checksum of the record for position {pos} does not match"),
                ));
            }
            match index.get(&pos) {
                Some(&earlier) if earlier != crc => {
                    return Err(corrupt(
                        off,
                        intact,
                        format!("position {pos} is recorded twice, with different outputs"),
                    ));
                }
                Some(_) => {}
                None => {
                    index.insert(pos, crc);
                    outputs.insert(pos, payload);
                }
            }
            intact += 1;
            off += size;
        };
        Ok(Contents {
            header,
            recovered: Recovered {
                path: path.to_path_buf(),
                outputs,
                torn,
            },
            index,
            end: off,
        })
    }
}

/// The offset of the first intact record (header and record checksums match, length in
/// bounds) starting at or after `from`, reading the file in place.
fn find_intact_record(file: &File, from: u64, file_len: u64) -> io::Result<Option<u64>> {
    let mut buf = vec![0u8; CHUNK + RECORD_HEAD];
    let mut start = from;
    while start + RECORD_OVERHEAD as u64 <= file_len {
        let want = (buf.len() as u64).min(file_len - start) as usize;
        file.read_exact_at(&mut buf[..want], start)?;
        let candidates = want + 1 - RECORD_HEAD;
        for i in 0..candidates {
            let head = &buf[i..i + RECORD_HEAD];
            if crc32fast::hash(&head[..12]) != u32_at(head, 12) {
                continue;
            }
            let at = start + i as u64;
            let len = u32_at(head, 0) as usize;
            if len <= MAX_RECORD_BYTES
                && at + (RECORD_OVERHEAD + len) as u64 <= file_len
                && record_checks_out(file, at, head, len)?
            {
                return Ok(Some(at));
            }
        }
        start += candidates as u64;
    }
    Ok(None)
}

/// Whether the record at `at`, whose header is `head`, has a matching record checksum.
fn record_checks_out(file: &File, at: u64, head: &[u8], len: usize) -> io::Result<bool> {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(head);
    let mut buf = vec![0u8; CHUNK.min(len)];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len());
        file.read_exact_at(&mut buf[..n], at + (RECORD_HEAD + done) as u64)?;
        hasher.update(&buf[..n]);
        done += n;
    }
    let mut tail = [0u8; 4];
    file.read_exact_at(&mut tail, at + (RECORD_HEAD + len) as u64)?;
    Ok(hasher.finalize() == u32::from_le_bytes(tail))
}

// ----- the journal ---------------------------------------------------------------------------

/// An open journal: appends checksummed records and syncs them in the background.
///
/// See the [module documentation](self) for what a crash can cost.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    shared: Arc<Shared>,
    syncer: Option<JoinHandle<()>>,
    /// Each recorded position's record checksum.
    index: HashMap<u64, u32>,
    /// Where the next record goes.
    end: u64,
    /// The record being built (reused).
    buf: Vec<u8>,
    broken: bool,
}

/// What the journal shares with its background syncer.
#[derive(Debug)]
struct Shared {
    file: File,
    state: Mutex<SyncState>,
    wake: Condvar,
    interval: Duration,
}

#[derive(Debug, Default)]
struct SyncState {
    /// Records were written since the last sync began.
    dirty: bool,
    /// The journal is closing: the syncer exits.
    stop: bool,
    /// The background sync failed (the syncer has exited).
    error: Option<io::Error>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The background syncer: once records are dirty, waits one interval, then syncs them.
fn sync_loop(shared: &Shared) {
    let mut g = shared.lock();
    loop {
        while !g.dirty && !g.stop {
            g = shared.wake.wait(g).unwrap_or_else(PoisonError::into_inner);
        }
        let deadline = Instant::now() + shared.interval;
        loop {
            if g.stop {
                return; // the owner syncs as it closes
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            g = shared
                .wake
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        if !g.dirty {
            continue; // an explicit sync got there first
        }
        g.dirty = false;
        drop(g);
        let result = shared.file.sync_data();
        g = shared.lock();
        if let Err(e) = result {
            g.error = Some(e);
            return;
        }
    }
}

impl Journal {
    /// Creates a journal at `path` whose records belong to the run `header` describes;
    /// refuses ([`JournalError::Exists`]) if the file exists. The header is synced to disk
    /// before this returns. See [`JournalOptions`] to overwrite or change the sync interval.
    pub fn create(path: impl AsRef<Path>, header: &Header) -> Result<Journal, JournalError> {
        JournalOptions::new().create(path, header)
    }

    /// Opens the journal at `path` to continue the run `expected` describes: checks the
    /// format and that the header equals `expected` (else [`JournalError::Mismatch`] names
    /// the first field that differs), verifies every record, cuts off a torn last record
    /// (reported in [`Recovered::torn_tail`]) and returns what was recorded; new records go
    /// after it. Damage before the last record is [`JournalError::Corrupt`]; a journal
    /// another run still has open is [`JournalError::InUse`].
    pub fn resume(
        path: impl AsRef<Path>,
        expected: &Header,
    ) -> Result<(Journal, Recovered), JournalError> {
        JournalOptions::new().resume(path, expected)
    }

    /// Whether an open journal (a run still writing it, in any process) holds the lock on
    /// the file at `path` now: a check before expensive work, since `resume` or an
    /// overwriting `create` would then refuse with [`JournalError::InUse`].
    pub fn in_use(path: impl AsRef<Path>) -> Result<bool, JournalError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io_error(path, "open the file"))?;
        match lock(path, &file) {
            Ok(()) => Ok(false),
            Err(JournalError::InUse { .. }) => Ok(true),
            Err(e) => Err(e),
        }
        // The probe's lock goes with `file`, here.
    }

    /// Reads and verifies the journal at `path` without changing it: its header and what
    /// it recorded (a torn last record is reported, not cut off).
    pub fn read(path: impl AsRef<Path>) -> Result<(Header, Recovered), JournalError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(io_error(path, "open the file"))?;
        let contents = Contents::read(path, &file, None)?;
        Ok((contents.header, contents.recovered))
    }

    fn open(
        path: &Path,
        file: File,
        end: u64,
        index: HashMap<u64, u32>,
        interval: Duration,
    ) -> Result<Journal, JournalError> {
        let shared = Arc::new(Shared {
            file,
            state: Mutex::new(SyncState::default()),
            wake: Condvar::new(),
            interval,
        });
        let for_thread = Arc::clone(&shared);
        let syncer = std::thread::Builder::new()
            .name("procpool-journal-sync".to_owned())
            .spawn(move || sync_loop(&for_thread))
            .map_err(io_error(path, "start its sync thread"))?;
        Ok(Journal {
            path: path.to_path_buf(),
            shared,
            syncer: Some(syncer),
            index,
            end,
            buf: Vec::new(),
            broken: false,
        })
    }

    /// The journal's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many positions are recorded (recovered and appended).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no position is recorded.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether `pos` is recorded.
    pub fn contains(&self, pos: u64) -> bool {
        self.index.contains_key(&pos)
    }

    /// Records `output` for position `pos`: written to the file before this returns,
    /// synced to disk within the sync interval. Returns `Ok(false)`, writing nothing, when
    /// `pos` is already recorded with the same bytes; a different output for a recorded
    /// position is [`JournalError::Conflict`].
    pub fn append<O: Serialize + ?Sized>(
        &mut self,
        pos: u64,
        output: &O,
    ) -> Result<bool, JournalError> {
        self.check_usable()?;
        self.buf.clear();
        self.buf.resize(RECORD_HEAD, 0);
        codec::encode_into(output, &mut self.buf).map_err(|source| JournalError::Encode {
            path: self.path.clone(),
            pos,
            source,
        })?;
        let len = self.buf.len() - RECORD_HEAD;
        if len > MAX_RECORD_BYTES {
            return Err(JournalError::TooLarge {
                path: self.path.clone(),
                pos,
                len,
                max: MAX_RECORD_BYTES,
            });
        }
        self.buf[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        self.buf[4..12].copy_from_slice(&pos.to_le_bytes());
        let head_crc = crc32fast::hash(&self.buf[..12]);
        self.buf[12..16].copy_from_slice(&head_crc.to_le_bytes());
        let crc = crc32fast::hash(&self.buf);
        match self.index.get(&pos) {
            Some(&earlier) if earlier == crc => return Ok(false),
            Some(_) => {
                return Err(JournalError::Conflict {
                    path: self.path.clone(),
                    pos,
                });
            }
            None => {}
        }
        self.buf.extend_from_slice(&crc.to_le_bytes());
        if let Err(source) = self.shared.file.write_all_at(&self.buf, self.end) {
            self.broken = true;
            return Err(io_error(&self.path, "append a record")(source));
        }
        self.end += self.buf.len() as u64;
        self.index.insert(pos, crc);
        let mut g = self.shared.lock();
        if !g.dirty {
            g.dirty = true;
            self.shared.wake.notify_one();
        }
        Ok(true)
    }

    /// Appends the `Ok` outputs of `items`, `(position, result)` pairs, as they pass by.
    ///
    /// The adapter yields each pair unchanged, after its output is in the journal. A
    /// journal error never costs a result: the pair it failed to record is yielded first,
    /// then the error as `Err`, which ends the iteration ([`Record::into_inner`] gives back
    /// the rest of the stream, to go on without the journal). Pair a pool's outputs with
    /// their positions: `todo.iter().copied().zip(pool.imap(jobs))`, or
    /// `pool.imap_unordered(jobs).map(|t| (todo[t.pos as usize], t.result))`.
    pub fn record<I, O, E>(&mut self, items: I) -> Record<'_, I::IntoIter>
    where
        I: IntoIterator<Item = (u64, Result<O, E>)>,
        O: Serialize,
    {
        Record {
            journal: self,
            items: items.into_iter(),
            error: None,
            done: false,
        }
    }

    /// Makes every record appended so far durable (`fdatasync`) before returning.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.check_usable()?;
        self.shared.lock().dirty = false;
        if let Err(source) = self.shared.file.sync_data() {
            self.broken = true;
            return Err(io_error(&self.path, "sync")(source));
        }
        Ok(())
    }

    /// Syncs and closes the journal, reporting any write or sync error not yet reported.
    pub fn finish(mut self) -> Result<(), JournalError> {
        self.close()
    }

    /// Fails if the journal took an error before, or its background sync just did.
    fn check_usable(&mut self) -> Result<(), JournalError> {
        if self.broken {
            return Err(JournalError::Broken {
                path: self.path.clone(),
            });
        }
        if let Some(source) = self.shared.lock().error.take() {
            self.broken = true;
            return Err(io_error(&self.path, "sync in the background")(source));
        }
        Ok(())
    }

    /// Stops the syncer and syncs; idempotent (a second call only reports `Broken` if
    /// the first failed).
    fn close(&mut self) -> Result<(), JournalError> {
        let Some(syncer) = self.syncer.take() else {
            return if self.broken {
                Err(JournalError::Broken {
                    path: self.path.clone(),
                })
            } else {
                Ok(())
            };
        };
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if syncer.join().is_err() {
            warn!(path = %self.path.display(), "the journal's sync thread panicked");
        }
        self.sync()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if self.syncer.is_some() {
            if let Err(e) = self.close() {
                warn!("{e}");
            }
        }
    }
}

/// [`Journal::record`]'s adapter: appends each `Ok` output as it passes by.
#[derive(Debug)]
pub struct Record<'j, I> {
    journal: &'j mut Journal,
    items: I,
    /// An append that failed, reported on the next call (after its item was yielded).
    error: Option<JournalError>,
    done: bool,
}

impl<I> Record<'_, I> {
    /// The stream not consumed yet (for example to go on without the journal after an
    /// error).
    pub fn into_inner(self) -> I {
        self.items
    }
}

impl<I, O, E> Iterator for Record<'_, I>
where
    I: Iterator<Item = (u64, Result<O, E>)>,
    O: Serialize,
{
    type Item = Result<(u64, Result<O, E>), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if let Some(e) = self.error.take() {
            self.done = true;
            return Some(Err(e));
        }
        let (pos, result) = self.items.next()?;
        if let Ok(output) = &result {
            if let Err(e) = self.journal.append(pos, output) {
                self.error = Some(e);
            }
        }
        Some(Ok((pos, result)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    /// A scratch directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!(
                "procpool-journal-{}-{name}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }

        fn file(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn header() -> Header {
        Header::new()
            .text("tool", "coordinator 0.1.0")
            .text("task", "parzen")
            .bytes("data", [0xde, 0xad, 0xbe, 0xef, 0x00, 0x01])
            .text("point", "0.5,0.5")
            .text("widths", "0.1,0.2,0.3")
            .text("seed", "42")
            .text("method", "hypercube")
    }

    /// Output for position `pos`: a few bytes whose length varies with `pos`.
    fn output(pos: u64) -> (u64, Vec<u8>) {
        (
            pos,
            (0..(pos * 7 % 23) as u8).map(|b| b ^ pos as u8).collect(),
        )
    }

    /// Writes positions `0..n` and returns the file's bytes and each record's start
    /// (the last entry is the end of the file).
    fn write_journal(path: &Path, n: u64) -> (Vec<u8>, Vec<u64>) {
        let mut j = Journal::create(path, &header()).unwrap();
        let mut starts = vec![fs::metadata(path).unwrap().len()];
        for pos in 0..n {
            assert!(j.append(pos, &output(pos)).unwrap());
            starts.push(fs::metadata(path).unwrap().len());
        }
        j.finish().unwrap();
        (fs::read(path).unwrap(), starts)
    }

    #[test]
    fn round_trip() {
        let dir = Scratch::new("round-trip");
        let path = dir.file("j");
        write_journal(&path, 10);
        let (h, rec) = Journal::read(&path).unwrap();
        assert_eq!(h, header());
        assert_eq!(rec.len(), 10);
        assert_eq!(rec.torn_tail(), None);
        assert_eq!(
            rec.positions().collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        let all = rec.decode_all::<(u64, Vec<u8>)>().unwrap();
        for pos in 0..10 {
            assert_eq!(all[&pos], output(pos));
            assert_eq!(rec.get::<(u64, Vec<u8>)>(pos).unwrap(), Some(output(pos)));
        }
        assert_eq!(rec.get::<(u64, Vec<u8>)>(10).unwrap(), None);
        assert_eq!(rec.missing(12).collect::<Vec<_>>(), [10, 11]);
        // Decoding as the wrong type is a typed error naming the position.
        let err = rec.get::<u64>(3).unwrap_err();
        assert!(matches!(err, JournalError::Decode { pos: 3, .. }), "{err}");
    }

    #[test]
    fn resume_then_append_equals_an_uninterrupted_write() {
        let dir = Scratch::new("resume");
        let whole = dir.file("whole");
        let (bytes, _) = write_journal(&whole, 12);
        for k in [0, 1, 5, 11, 12] {
            let path = dir.file(&format!("part-{k}"));
            let mut j = Journal::create(&path, &header()).unwrap();
            for pos in 0..k {
                j.append(pos, &output(pos)).unwrap();
            }
            drop(j); // not finished: as a killed run leaves it
            let (mut j, rec) = Journal::resume(&path, &header()).unwrap();
            assert_eq!(rec.len() as u64, k);
            assert_eq!(rec.torn_tail(), None);
            assert_eq!(j.len() as u64, k);
            let todo: Vec<u64> = rec.missing(12).collect();
            assert_eq!(todo, (k..12).collect::<Vec<_>>());
            for pos in todo {
                j.append(pos, &output(pos)).unwrap();
            }
            j.finish().unwrap();
            assert!(fs::read(&path).unwrap() == bytes, "k = {k}: files differ");
        }
    }

    #[test]
    fn resume_of_a_complete_journal_has_nothing_missing() {
        let dir = Scratch::new("complete");
        let path = dir.file("j");
        let (bytes, _) = write_journal(&path, 5);
        let (j, rec) = Journal::resume(&path, &header()).unwrap();
        assert_eq!(rec.missing(5).count(), 0);
        j.finish().unwrap();
        assert!(fs::read(&path).unwrap() == bytes);
    }

    #[test]
    fn torn_last_record_is_dropped_at_every_cut() {
        let dir = Scratch::new("torn");
        let path = dir.file("whole");
        let (bytes, starts) = write_journal(&path, 6);
        let last = starts[5] as usize;
        assert!(
            bytes.len() - last > RECORD_OVERHEAD + 8,
            "the last record has a payload"
        );
        let cut_path = dir.file("cut");
        for len in last..bytes.len() {
            fs::write(&cut_path, &bytes[..len]).unwrap();
            let (_, rec) = Journal::read(&cut_path).unwrap();
            assert_eq!(
                rec.positions().collect::<Vec<_>>(),
                [0, 1, 2, 3, 4],
                "cut {len}"
            );
            let expected_torn = (len > last).then_some(TornTail {
                offset: last as u64,
                bytes: (len - last) as u64,
            });
            assert_eq!(rec.torn_tail(), expected_torn, "cut at {len}");
            // Reading changed nothing; resuming cuts the torn record off, and appending
            // the last position again restores the whole file.
            assert_eq!(fs::read(&cut_path).unwrap().len(), len);
            let (mut j, rec) = Journal::resume(&cut_path, &header()).unwrap();
            assert_eq!(rec.torn_tail(), expected_torn);
            assert_eq!(fs::metadata(&cut_path).unwrap().len(), last as u64);
            assert_eq!(rec.missing(6).collect::<Vec<_>>(), [5]);
            j.append(5, &output(5)).unwrap();
            j.finish().unwrap();
            assert!(
                fs::read(&cut_path).unwrap() == bytes,
                "cut at {len}: not restored"
            );
        }
    }

    #[test]
    fn any_flipped_byte_in_the_last_record_is_a_torn_tail() {
        let dir = Scratch::new("torn-flip");
        let (bytes, starts) = write_journal(&dir.file("whole"), 4);
        let last = starts[3] as usize;
        let path = dir.file("flipped");
        for at in last..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 0x5a;
            fs::write(&path, &b).unwrap();
            let (_, rec) = Journal::read(&path).unwrap();
            assert_eq!(
                rec.positions().collect::<Vec<_>>(),
                [0, 1, 2],
                "flip at {at}"
            );
            let torn = rec.torn_tail().unwrap();
            assert_eq!(torn.offset, last as u64, "flip at {at}");
            // A flipped length may make the record run past the end; either way it all goes.
            assert_eq!(torn.bytes, (bytes.len() - last) as u64, "flip at {at}");
        }
    }

    /// Flips `xor` into byte `at` of a copy of `bytes`, and checks that reading and
    /// resuming both report corruption at the start of the record holding that byte,
    /// leaving the file as it was.
    fn check_flip_is_corruption(
        dir: &Scratch,
        bytes: &[u8],
        starts: &[u64],
        at: usize,
        xor: u8,
    ) -> Result<(), TestCaseError> {
        let record = starts.iter().rposition(|&s| s as usize <= at).unwrap();
        let mut b = bytes.to_vec();
        b[at] ^= xor;
        let path = dir.file(&format!("flip-{at}-{xor}"));
        fs::write(&path, &b).unwrap();
        for result in [
            Journal::read(&path).map(|_| ()),
            Journal::resume(&path, &header()).map(|_| ()),
        ] {
            match result {
                Err(JournalError::Corrupt {
                    offset,
                    record: intact,
                    ..
                }) => {
                    prop_assert_eq!(offset, starts[record], "flip at {}", at);
                    prop_assert_eq!(intact, record as u64, "flip at {}", at);
                }
                other => prop_assert!(false, "flip at {at}: expected Corrupt, got {other:?}"),
            }
        }
        prop_assert!(fs::read(&path).unwrap() == b, "the file was changed");
        fs::remove_file(&path).unwrap();
        Ok(())
    }

    #[test]
    fn every_flipped_byte_before_the_last_record_is_corruption() {
        let dir = Scratch::new("flip-all");
        let (bytes, starts) = write_journal(&dir.file("whole"), 5);
        for at in starts[0] as usize..starts[4] as usize {
            check_flip_is_corruption(&dir, &bytes, &starts[..5], at, 0xff).unwrap();
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn a_random_flip_before_the_last_record_is_corruption(
            n in 2u64..12,
            pick in any::<prop::sample::Index>(),
            xor in 1u8..=255,
        ) {
            let dir = Scratch::new("flip-prop");
            let (bytes, starts) = write_journal(&dir.file("whole"), n);
            let body = starts[0] as usize..starts[n as usize - 1] as usize;
            let at = body.start + pick.index(body.len());
            check_flip_is_corruption(&dir, &bytes, &starts[..n as usize], at, xor)?;
        }
    }

    #[test]
    fn a_header_mismatch_names_each_field() {
        let dir = Scratch::new("mismatch");
        let path = dir.file("j");
        write_journal(&path, 3);
        let before = fs::read(&path).unwrap();
        for (i, field) in header().fields().iter().enumerate() {
            let mut expected = header();
            let other = match &field.value {
                Value::Text(s) => Value::Text(format!("{s}-other")),
                Value::Bytes(b) => Value::Bytes(b.iter().map(|x| x ^ 1).collect()),
            };
            expected.fields[i].value = other.clone();
            match Journal::resume(&path, &expected) {
                Err(JournalError::Mismatch {
                    field: name,
                    journal,
                    expected,
                    ..
                }) => {
                    assert_eq!(name, format!("{:?}", field.name));
                    assert_eq!(journal, field.value.to_string());
                    assert_eq!(expected, other.to_string());
                }
                other => panic!("field {}: expected Mismatch, got {other:?}", field.name),
            }
        }
        assert_eq!(header().fields()[2].value.to_string(), "0xdeadbeef0001");
        // Fields missing, extra or renamed are named too.
        let fewer = Header {
            fields: header().fields[..6].to_vec(),
        };
        let err = Journal::resume(&path, &fewer).unwrap_err();
        assert!(
            err.to_string().contains(
                "field \"method\": the journal has \"hypercube\", this run has no such field"
            ),
            "{err}"
        );
        let more = header().text("extra", "1");
        let err = Journal::resume(&path, &more).unwrap_err();
        assert!(
            err.to_string()
                .contains("field \"extra\": the journal has no such field (it has 7 fields)"),
            "{err}"
        );
        let mut renamed = header();
        renamed.fields[5].name = "rng-seed".to_owned();
        let err = Journal::resume(&path, &renamed).unwrap_err();
        assert!(
            err.to_string().contains(
                "field \"rng-seed\": the journal has no such field (its field 6 is \"seed\")"
            ),
            "{err}"
        );
        assert!(
            fs::read(&path).unwrap() == before,
            "a refused resume changed the file"
        );
    }

    #[test]
    fn long_values_are_quoted_short() {
        let dir = Scratch::new("long");
        let path = dir.file("j");
        let long = "x".repeat(10_000);
        Journal::create(&path, &Header::new().text("data", long.clone()))
            .unwrap()
            .finish()
            .unwrap();
        let err = Journal::resume(&path, &Header::new().text("data", "y")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.len() < 600, "{} bytes: {msg}", msg.len());
        assert!(msg.contains("(10000 bytes)"), "{msg}");
        let bytes = Value::Bytes(vec![7; 5000]).to_string();
        assert_eq!(bytes.len(), 2 + 200 + " ... (5000 bytes)".len() - 1);
        // Multi-byte characters are never cut in half.
        let text = Value::Text("é".repeat(300)).to_string();
        assert!(text.ends_with("... (600 bytes)"), "{text}");
    }

    #[test]
    fn what_is_not_a_journal_is_a_clear_error() {
        let dir = Scratch::new("not");
        let path = dir.file("j");
        fs::write(&path, b"width,density\n0.1,0.5\n").unwrap();
        let err = Journal::resume(&path, &header()).unwrap_err();
        assert!(matches!(err, JournalError::NotAJournal { .. }), "{err:?}");
        assert!(
            err.to_string().contains("is not a procpool journal"),
            "{err}"
        );
        for len in [0, 5, MAGIC.len(), PREAMBLE - 1] {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&[1, 0, 0, 0, 9, 9, 9, 9]);
            fs::write(&path, &b[..len]).unwrap();
            let err = Journal::read(&path).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("ends after {len} bytes, inside its header")),
                "{len}: {err}"
            );
        }
        let missing = dir.file("absent");
        let err = Journal::resume(&missing, &header()).unwrap_err();
        assert!(
            matches!(&err, JournalError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn another_format_version_or_a_damaged_header_is_refused() {
        let dir = Scratch::new("version");
        let path = dir.file("j");
        let (bytes, starts) = write_journal(&path, 2);
        let mut b = bytes.clone();
        b[MAGIC.len()] = 2;
        fs::write(&path, &b).unwrap();
        let err = Journal::resume(&path, &header()).unwrap_err();
        assert!(
            matches!(
                err,
                JournalError::Version {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("format version 2"), "{err}");
        for at in MAGIC.len() + 4..starts[0] as usize {
            let mut b = bytes.clone();
            b[at] ^= 0x10;
            fs::write(&path, &b).unwrap();
            let err = Journal::read(&path).unwrap_err();
            assert!(
                matches!(err, JournalError::BadHeader { .. }),
                "flip at {at}: {err:?}"
            );
        }
        // A header length past the limit is refused before anything is allocated.
        let mut b = bytes.clone();
        b[MAGIC.len() + 4..PREAMBLE].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&path, &b).unwrap();
        let err = Journal::read(&path).unwrap_err();
        assert!(err.to_string().contains("more than the"), "{err}");
    }

    #[test]
    fn hostile_record_lengths_are_checked_before_allocating() {
        let dir = Scratch::new("hostile");
        let path = dir.file("j");
        let (bytes, starts) = write_journal(&path, 2);
        let forge = |len: u32| {
            let mut head = [0u8; RECORD_HEAD];
            head[..4].copy_from_slice(&len.to_le_bytes());
            head[4..12].copy_from_slice(&9u64.to_le_bytes());
            let crc = crc32fast::hash(&head[..12]);
            head[12..].copy_from_slice(&crc.to_le_bytes());
            head
        };
        // Over the limit, with a valid header checksum: corruption, not a torn tail.
        let mut b = bytes.clone();
        b.extend_from_slice(&forge(u32::MAX));
        fs::write(&path, &b).unwrap();
        let err = Journal::read(&path).unwrap_err();
        assert!(
            matches!(err, JournalError::Corrupt { record: 2, .. }),
            "{err:?}"
        );
        // Within the limit but past the end of the file: a torn tail, nothing allocated
        // for it (a 1 GiB allocation would be obvious; this returns at once).
        let mut b = bytes.clone();
        b.extend_from_slice(&forge(1 << 30));
        fs::write(&path, &b).unwrap();
        let (_, rec) = Journal::read(&path).unwrap();
        assert_eq!(
            rec.torn_tail(),
            Some(TornTail {
                offset: starts[2],
                bytes: RECORD_HEAD as u64
            })
        );
    }

    #[test]
    fn create_never_overwrites_unless_told() {
        let dir = Scratch::new("exists");
        let path = dir.file("j");
        let (bytes, _) = write_journal(&path, 3);
        let err = Journal::create(&path, &header()).unwrap_err();
        assert!(matches!(err, JournalError::Exists { .. }), "{err:?}");
        assert!(err.to_string().contains("already exists"), "{err}");
        assert!(
            fs::read(&path).unwrap() == bytes,
            "a refused create changed the file"
        );
        let other = fs::write(dir.file("other"), b"precious");
        other.unwrap();
        assert!(Journal::create(dir.file("other"), &header()).is_err());
        assert_eq!(fs::read(dir.file("other")).unwrap(), b"precious");
        JournalOptions::new()
            .overwrite(true)
            .create(&path, &header())
            .unwrap()
            .finish()
            .unwrap();
        let (_, rec) = Journal::read(&path).unwrap();
        assert!(rec.is_empty());
    }

    #[test]
    fn an_open_journal_is_its_runs_alone_until_dropped() {
        let dir = Scratch::new("in-use");
        let path = dir.file("j");
        let mut first = Journal::create(&path, &header()).unwrap();
        first.append(0, &output(0)).unwrap();
        first.sync().unwrap();
        let bytes = fs::read(&path).unwrap();
        let in_use = |r: Result<Journal, JournalError>, what: &str| match r {
            Err(e @ JournalError::InUse { .. }) => {
                assert!(e.to_string().contains("in use by another run"), "{e}");
            }
            Err(e) => panic!("{what}: expected InUse, got {e:?}"),
            Ok(_) => panic!("{what}: a second writer got the open journal"),
        };
        in_use(Journal::resume(&path, &header()).map(|(j, _)| j), "resume");
        in_use(
            JournalOptions::new()
                .overwrite(true)
                .create(&path, &header()),
            "overwrite",
        );
        assert!(
            fs::read(&path).unwrap() == bytes,
            "a refused writer changed the file"
        );
        // Reading takes no lock; the probe sees the writer.
        assert_eq!(Journal::read(&path).unwrap().1.len(), 1);
        assert!(Journal::in_use(&path).unwrap());
        // The first writer goes on; once it is gone, the file is free again.
        first.append(1, &output(1)).unwrap();
        drop(first);
        assert!(!Journal::in_use(&path).unwrap());
        let (mut again, rec) = Journal::resume(&path, &header()).unwrap();
        assert_eq!(rec.positions().collect::<Vec<_>>(), [0, 1]);
        again.append(2, &output(2)).unwrap();
        again.finish().unwrap();
        let fresh = JournalOptions::new()
            .overwrite(true)
            .create(&path, &header());
        fresh.unwrap().finish().unwrap();
        assert!(Journal::read(&path).unwrap().1.is_empty());
    }

    #[test]
    fn a_header_too_large_is_refused_before_the_file_is_made() {
        let dir = Scratch::new("big-header");
        let path = dir.file("j");
        let big = Header::new().bytes("data", vec![1; MAX_HEADER_BYTES]);
        let err = Journal::create(&path, &big).unwrap_err();
        assert!(matches!(err, JournalError::BadHeader { .. }), "{err:?}");
        assert!(err.to_string().contains("more than the"), "{err}");
        assert!(!path.exists(), "a refused create left a file behind");
    }

    #[test]
    fn duplicates_are_ignored_when_equal_and_refused_when_not() {
        let dir = Scratch::new("dup");
        let path = dir.file("j");
        let mut j = Journal::create(&path, &header()).unwrap();
        assert!(j.append(4, &output(4)).unwrap());
        let len = fs::metadata(&path).unwrap().len();
        assert!(!j.append(4, &output(4)).unwrap());
        let err = j.append(4, &output(5)).unwrap_err();
        assert!(
            matches!(err, JournalError::Conflict { pos: 4, .. }),
            "{err:?}"
        );
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            len,
            "a duplicate was written"
        );
        j.finish().unwrap();
        // Recovered positions count too.
        let (mut j, _) = Journal::resume(&path, &header()).unwrap();
        assert!(j.contains(4));
        assert!(!j.append(4, &output(4)).unwrap());
        assert!(matches!(
            j.append(4, &output(5)),
            Err(JournalError::Conflict { pos: 4, .. })
        ));
        j.finish().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), len);
    }

    #[test]
    fn a_file_with_one_position_twice_is_read_once_or_refused() {
        let dir = Scratch::new("dup-file");
        let (bytes, starts) = write_journal(&dir.file("whole"), 3);
        let record = |i: usize| &bytes[starts[i] as usize..starts[i + 1] as usize];
        // The same record twice (as a copied tail would be): read once.
        let mut b = bytes.clone();
        b.extend_from_slice(record(1));
        let path = dir.file("twice");
        fs::write(&path, &b).unwrap();
        let (_, rec) = Journal::read(&path).unwrap();
        assert_eq!(rec.positions().collect::<Vec<_>>(), [0, 1, 2]);
        // Position 1 again with another output, followed by more: corruption.
        let other = dir.file("other");
        let mut j = Journal::create(&other, &header()).unwrap();
        j.append(1, &output(2)).unwrap();
        j.finish().unwrap();
        let forged = fs::read(&other).unwrap()[starts[0] as usize..].to_vec();
        let mut b = bytes.clone();
        b.extend_from_slice(&forged);
        b.extend_from_slice(record(0));
        fs::write(&path, &b).unwrap();
        let err = Journal::read(&path).unwrap_err();
        assert!(err.to_string().contains("recorded twice"), "{err}");
    }

    #[test]
    fn record_appends_the_ok_outputs_as_they_pass() {
        let dir = Scratch::new("record");
        let path = dir.file("j");
        let mut j = Journal::create(&path, &header()).unwrap();
        type Item = (u64, Result<(u64, Vec<u8>), String>);
        let items: Vec<Item> = vec![
            (7, Ok(output(7))),
            (3, Err("job failed".to_owned())),
            (5, Ok(output(5))),
        ];
        let passed: Vec<_> = j.record(items.clone()).collect::<Result<_, _>>().unwrap();
        assert_eq!(passed, items);
        // A conflicting output is still handed on, then the journal's error ends the
        // stream; the rest is there to take without the journal.
        let clash = vec![
            (5, Ok(output(6))),
            (8, Ok::<_, String>(output(8))),
            (9, Ok(output(9))),
        ];
        let mut rec = j.record(clash);
        assert_eq!(rec.next().unwrap().unwrap(), (5, Ok(output(6))));
        assert!(matches!(
            rec.next(),
            Some(Err(JournalError::Conflict { pos: 5, .. }))
        ));
        assert!(rec.next().is_none());
        let rest: Vec<_> = rec.into_inner().map(|(pos, _)| pos).collect();
        assert_eq!(rest, [8, 9]);
        j.finish().unwrap();
        let (_, rec) = Journal::read(&path).unwrap();
        assert_eq!(rec.positions().collect::<Vec<_>>(), [5, 7]);
    }

    #[test]
    fn records_are_synced_in_the_background_and_on_request() {
        let dir = Scratch::new("sync");
        let path = dir.file("j");
        let mut j = JournalOptions::new()
            .sync_interval(Duration::ZERO)
            .create(&path, &header())
            .unwrap();
        for pos in 0..200 {
            j.append(pos, &output(pos)).unwrap();
        }
        j.sync().unwrap();
        // Durability itself cannot be observed without pulling the plug; what can be
        // checked is that the syncer and explicit syncs leave a readable, complete file.
        let (_, rec) = Journal::read(&path).unwrap();
        assert_eq!(rec.len(), 200);
        j.finish().unwrap();
    }
}
