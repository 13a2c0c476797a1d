//! Loading a user's own samples from CSV or `.npy` files, and writing them back for Python.
//!
//! # What is read, and how
//!
//! - `.npy`, little-endian float64, C order (what `numpy.save` writes for a float array):
//!   the file is **mapped** read-only, like `numpy.load(f, mmap_mode='r')`, and the samples
//!   borrow the mapping: nothing is copied or read into a `Vec`. Every value is still
//!   checked finite (one pass, which also brings the pages in).
//! - Other `.npy` layouts are converted once into an owned float64 array: float32 (`<f4`,
//!   `>f4`), big-endian float64, integers (`i1`..`i8`, `u1`..`u8`; one beyond 2^53 in
//!   magnitude is an error, as float64 cannot hold it exactly), Fortran order. 1-D arrays
//!   are n samples of one dimension. Complex, object, string, bool and structured dtypes
//!   are refused, naming the dtype; a `.npz` archive is refused with how to extract one
//!   array from it.
//! - CSV: one sample per line, an optional header line (see [`load_csv`]).
//!
//! # Bounds
//!
//! Nothing grows without a limit: only regular files are opened (a FIFO, a device such as
//! `/dev/zero` or a directory is refused by name, and opening never blocks); a file over
//! [`LoadLimits::max_file_bytes`] is refused before it is read; anything allocated for
//! values (a conversion, CSV rows) must fit [`LoadLimits::max_alloc_bytes`] and is reserved
//! with `try_reserve`, so an impossible request is an error, not an abort. An `.npy` header
//! is at most [`MAX_NPY_HEADER_BYTES`], its shape product is overflow-checked and the data
//! must be exactly as long as the shape says (never a read past the end). A CSV line over
//! [`MAX_LINE_BYTES`] is an error naming its line number. Messages quote at most about
//! 200 bytes of the offending input.
//!
//! # The caveat of mapping
//!
//! A mapped file must not change while the samples are alive. If another process truncates
//! it, touching the lost pages raises `SIGBUS` and the process dies; if it rewrites it in
//! place, the samples change under the estimate (and past the finite check). numpy's
//! `mmap_mode` has exactly the same caveat. Copy the file first (or load a converted
//! layout, which is owned) when something else may write to it during a run.
//!
//! # Why a hand-written `.npy` reader
//!
//! The `.npy` reader and writer are hand-written rather than built on the `npyz` crate:
//! `npyz` multiplies the header's shape entries with unchecked `u64` arithmetic (a crafted
//! shape panics in debug builds and wraps in release), reports every problem as a bare
//! `io::Error` string that would have to be re-classified to tell "bad magic" from "truncated"
//! from "wrong dtype", and pulls in a full Python-literal parser (pest, num-bigint) for a
//! header that here only ever needs `descr`, `fortran_order` and `shape`. The format is small
//! and documented (magic `\x93NUMPY`, version, little-endian header length, a Python dict
//! literal padded to 64 bytes), so a short reader gives exact error messages, never
//! panics, and a writer that produces the same bytes as `numpy.save`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::samples::{Samples, first_non_finite};

/// How large a file may be and how much memory loading it may allocate for values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadLimits {
    /// Largest file accepted, in bytes (checked before reading or mapping it).
    pub max_file_bytes: u64,
    /// Largest allocation for values (a converted `.npy`, CSV rows), in bytes. A mapped
    /// float64 `.npy` allocates nothing and is bounded by `max_file_bytes` alone.
    pub max_alloc_bytes: u64,
}

impl Default for LoadLimits {
    /// 64 GiB files, 8 GiB of values (a billion float64).
    fn default() -> LoadLimits {
        LoadLimits {
            max_file_bytes: 64 << 30,
            max_alloc_bytes: 8 << 30,
        }
    }
}

/// Longest CSV line accepted, in bytes.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Longest `.npy` header accepted, in bytes (numpy itself refuses headers over 10,000
/// bytes unless told otherwise).
pub const MAX_NPY_HEADER_BYTES: usize = 1 << 16;

/// Most bytes of offending input a message quotes.
const QUOTE_BYTES: usize = 200;

/// `s` in double quotes, cut to about [`QUOTE_BYTES`] bytes (on a character boundary) with
/// the full length said when cut.
pub(crate) fn quote(s: &str) -> String {
    if s.len() <= QUOTE_BYTES {
        return format!("{s:?}");
    }
    let mut end = QUOTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &s[..end], s.len())
}

/// Loads samples with the default [`LoadLimits`]: see [`load_with`].
pub fn load(path: &Path) -> Result<Samples> {
    load_with(path, &LoadLimits::default())
}

/// Loads samples as `.npy` when the file starts with numpy's magic or is named `.npy` (any
/// case), refuses a `.npz` archive, and reads anything else as CSV.
pub fn load_with(path: &Path, limits: &LoadLimits) -> Result<Samples> {
    let (mut file, len) = open_regular(path, limits)?;
    let mut head = [0u8; 6];
    let got = read_up_to(&mut file, &mut head).map_err(|e| read_error(path, e))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| read_error(path, e))?;
    let head = &head[..got];
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    if head.starts_with(NPY_MAGIC)
        || head.starts_with(ZIP_MAGIC)
        || matches!(ext.as_deref(), Some("npy" | "npz"))
    {
        npy_from_file(path, &file, len, limits)
    } else {
        csv_from_file(path, file, limits)
    }
}

/// Reads until `buf` is full or the file ends; returns how many bytes were read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn read_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    }
}

fn write_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    }
}

fn limit_error(path: &Path, reason: String) -> Error {
    Error::Limit {
        path: path.to_path_buf(),
        reason,
    }
}

/// What a non-regular file is, for the message refusing it.
fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Opens `path` for reading without blocking (a FIFO would wait for a writer) and accepts
/// it only if it is a regular file within `limits.max_file_bytes`; returns it and its length.
fn open_regular(path: &Path, limits: &LoadLimits) -> Result<(File, u64)> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // No effect on a regular file's reads; makes opening a FIFO return at once.
        opts.custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(|e| read_error(path, e))?;
    let meta = file.metadata().map_err(|e| read_error(path, e))?;
    if !meta.is_file() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
            kind: file_kind(&meta.file_type()),
        });
    }
    if meta.len() > limits.max_file_bytes {
        return Err(limit_error(
            path,
            format!(
                "file is {} bytes, over the limit of {} bytes",
                meta.len(),
                limits.max_file_bytes
            ),
        ));
    }
    Ok((file, meta.len()))
}

/// Loads one sample per row from a comma-separated file, with the default [`LoadLimits`]:
/// see [`load_csv_with`].
pub fn load_csv(path: &Path) -> Result<Samples> {
    load_csv_with(path, &LoadLimits::default())
}

/// Loads one sample per row from a comma-separated file with an optional header line.
///
/// The first non-blank line is a header when any of its fields is non-empty and not a
/// number; blank (or whitespace-only) lines are skipped; every row must have the same
/// number of fields, and every value must parse as a finite `f64` ("nan" and "inf" are
/// rejected even though they parse). A line may hold at most [`MAX_LINE_BYTES`] and the
/// values at most `limits.max_alloc_bytes`.
pub fn load_csv_with(path: &Path, limits: &LoadLimits) -> Result<Samples> {
    let (file, _) = open_regular(path, limits)?;
    csv_from_file(path, file, limits)
}

/// Why [`LineCap`] stopped a read: the 1-based line that is too long.
#[derive(Debug)]
struct LineTooLong(u64);

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {} is longer than {MAX_LINE_BYTES} bytes", self.0)
    }
}

impl std::error::Error for LineTooLong {}

/// Why [`LineCap`] stopped a read: the file grew past the size limit while being read.
#[derive(Debug)]
struct TooManyBytes(u64);

impl std::fmt::Display for TooManyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} bytes", self.0)
    }
}

impl std::error::Error for TooManyBytes {}

/// A reader that fails once a line runs past [`MAX_LINE_BYTES`] or the whole input past a
/// byte limit, so that the CSV parser's buffers stay bounded.
struct LineCap<R> {
    inner: R,
    /// Newlines seen so far.
    newlines: u64,
    /// Bytes since the last newline.
    run: usize,
    /// Bytes read so far, and the most allowed.
    total: u64,
    max_total: u64,
}

impl<R: Read> Read for LineCap<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // At most one line's worth per read, so a line wholly inside `buf` is within the cap.
        let max = buf.len().min(MAX_LINE_BYTES);
        let k = self.inner.read(&mut buf[..max])?;
        let chunk = &buf[..k];
        self.total += k as u64;
        if self.total > self.max_total {
            return Err(std::io::Error::other(TooManyBytes(self.max_total)));
        }
        let too_long = std::io::Error::other(LineTooLong(self.newlines + 1));
        match (
            chunk.iter().position(|&b| b == b'\n'),
            chunk.iter().rposition(|&b| b == b'\n'),
        ) {
            (Some(first), Some(last)) => {
                if self.run + first > MAX_LINE_BYTES {
                    return Err(too_long);
                }
                self.newlines += chunk.iter().filter(|&&b| b == b'\n').count() as u64;
                self.run = k - last - 1;
            }
            _ => self.run += k,
        }
        if self.run > MAX_LINE_BYTES {
            return Err(std::io::Error::other(LineTooLong(self.newlines + 1)));
        }
        Ok(k)
    }
}

/// Reads CSV samples from an opened regular file.
fn csv_from_file(path: &Path, file: File, limits: &LoadLimits) -> Result<Samples> {
    let capped = LineCap {
        inner: file,
        newlines: 0,
        run: 0,
        total: 0,
        max_total: limits.max_file_bytes,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(capped);
    let bad = |line: u64, reason: String| Error::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let budget_values = usize::try_from(limits.max_alloc_bytes / 8).unwrap_or(usize::MAX);

    let mut record = csv::StringRecord::new();
    let mut data: Vec<f64> = Vec::new();
    // (field count, line, which) of the header or first data row; every row must match it.
    let mut width: Option<(usize, u64, &str)> = None;
    let mut dims = 0;
    let mut first = true;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                return Err(match e.into_kind() {
                    csv::ErrorKind::Io(source) => {
                        if let Some(LineTooLong(at)) =
                            source.get_ref().and_then(|r| r.downcast_ref())
                        {
                            bad(
                                *at,
                                format!(
                                    "line is longer than {MAX_LINE_BYTES} bytes; is this a CSV file?"
                                ),
                            )
                        } else if let Some(TooManyBytes(max)) =
                            source.get_ref().and_then(|r| r.downcast_ref())
                        {
                            limit_error(
                                path,
                                format!("file grew past the limit of {max} bytes while read"),
                            )
                        } else {
                            read_error(path, source)
                        }
                    }
                    csv::ErrorKind::Utf8 { err, .. } => bad(
                        line,
                        format!("field {} is not valid utf-8", err.field() + 1),
                    ),
                    other => {
                        let text = format!("{other:?}").to_lowercase();
                        bad(line, quote(&text))
                    }
                });
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        if record.iter().all(str::is_empty) {
            continue;
        }
        let is_first = std::mem::take(&mut first);
        if is_first
            && record
                .iter()
                .any(|f| !f.is_empty() && f.parse::<f64>().is_err())
        {
            width = Some((record.len(), line, "header"));
            continue;
        }
        match width {
            None => width = Some((record.len(), line, "first row")),
            Some((w, at, what)) if w != record.len() => {
                return Err(bad(
                    line,
                    format!(
                        "has {} fields but the {what} (line {at}) has {w}",
                        record.len()
                    ),
                ));
            }
            Some(_) => {}
        }
        dims = record.len();
        let need = data.len().saturating_add(dims);
        if need > budget_values {
            return Err(limit_error(
                path,
                format!(
                    "line {line}: {need} values need {} bytes, over the allocation budget of {} bytes",
                    need.saturating_mul(8),
                    limits.max_alloc_bytes
                ),
            ));
        }
        if need > data.capacity() {
            // Grow geometrically, but never past the budget.
            let target = need
                .max(data.capacity().saturating_mul(2))
                .min(budget_values);
            data.try_reserve_exact(target - data.len()).map_err(|_| {
                limit_error(
                    path,
                    format!(
                        "line {line}: cannot allocate {} bytes for the values",
                        target.saturating_mul(8)
                    ),
                )
            })?;
        }
        for (i, field) in record.iter().enumerate() {
            let column = i + 1;
            if field.is_empty() {
                return Err(bad(line, format!("field {column} is empty")));
            }
            let value: f64 = field.parse().map_err(|_| {
                // Numbers joined by another separator: say which, and what is expected.
                let sep = [(';', "semicolons"), ('\t', "tabs"), (' ', "spaces")]
                    .into_iter()
                    .find(|(c, _)| {
                        field.contains(*c)
                            && field
                                .split(*c)
                                .filter(|p| !p.trim().is_empty())
                                .all(|p| p.trim().parse::<f64>().is_ok())
                    });
                let hint = sep.map_or(String::new(), |(_, name)| {
                    format!(" (numbers separated by {name}? fields must be separated by commas)")
                });
                bad(
                    line,
                    format!("field {column} {} is not a number{hint}", quote(field)),
                )
            })?;
            if !value.is_finite() {
                return Err(bad(
                    line,
                    format!(
                        "field {column} {} is not finite; values must be finite",
                        quote(field)
                    ),
                ));
            }
            data.push(value);
        }
    }
    if data.is_empty() {
        return Err(Error::CsvEmpty {
            path: path.to_path_buf(),
        });
    }
    Samples::from_rows(dims, data)
}

/// Writes one sample per line, comma-separated, no header, each value in Rust's shortest
/// round-trip form (`{:?}`), so that Python's `float()` reads back the identical bits.
pub fn write_csv(path: &Path, samples: &Samples) -> Result<()> {
    let file = File::create(path).map_err(|e| write_error(path, e))?;
    let mut out = BufWriter::new(file);
    let mut line = String::new();
    for row in samples.rows() {
        line.clear();
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                line.push(',');
            }
            let _ = write!(line, "{v:?}");
        }
        line.push('\n');
        out.write_all(line.as_bytes())
            .map_err(|e| write_error(path, e))?;
    }
    out.flush().map_err(|e| write_error(path, e))
}

/// The `.npy` magic string.
const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";
/// A zip archive's first bytes (a `.npz` file).
const ZIP_MAGIC: &[u8; 4] = b"PK\x03\x04";
/// numpy pads magic + version + length + header to a multiple of this.
const NPY_ALIGN: usize = 64;
/// numpy reserves room for this many digits in the first shape entry (`GROWTH_AXIS_MAX_DIGITS`).
const NPY_GROWTH_DIGITS: usize = 21;
/// Largest integer magnitude every smaller one of which float64 holds exactly: 2^53.
const EXACT_INT: u64 = 1 << 53;

/// Loads a numpy `.npy` file with the default [`LoadLimits`]: see [`load_npy_with`].
pub fn load_npy(path: &Path) -> Result<Samples> {
    load_npy_with(path, &LoadLimits::default())
}

/// Loads a numpy `.npy` file holding a 2-D (n×d) or 1-D (n×1) real array: mapped without a
/// copy when it is little-endian float64 in C order, converted once otherwise (see the
/// module docs for the dtypes and bounds).
pub fn load_npy_with(path: &Path, limits: &LoadLimits) -> Result<Samples> {
    let (file, len) = open_regular(path, limits)?;
    npy_from_file(path, &file, len, limits)
}

/// Maps an opened `.npy` file and borrows or converts its array.
fn npy_from_file(path: &Path, file: &File, len: u64, limits: &LoadLimits) -> Result<Samples> {
    let npy_error = |reason: String| Error::Npy {
        path: path.to_path_buf(),
        reason,
    };
    if len == 0 {
        return Err(npy_error(not_npy(&[])));
    }
    // SAFETY: the mapping is read-only and private to this process; the file may still be
    // changed by another one while the samples live, which is the caveat the module docs
    // state (numpy's mmap_mode shares it): a truncation raises SIGBUS, a rewrite changes
    // values. Nothing here assumes more than that the bytes are bytes.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(file) }
        .map_err(|e| read_error(path, e))?;
    let layout = npy_layout(&map).map_err(npy_error)?;
    if layout.in_place() {
        let map = Arc::new(map);
        if let Some(result) =
            Samples::from_mapping(layout.d, map.clone(), layout.offset, layout.n * layout.d)
        {
            return result.map_err(|e| match e {
                Error::NonFiniteSample { row, col, value } => {
                    npy_error(non_finite(row, col, value))
                }
                other => other,
            });
        }
        return decode_npy(&map, &layout, limits).map_err(npy_error);
    }
    decode_npy(&map, &layout, limits).map_err(npy_error)
}

/// The message for a non-finite value.
fn non_finite(row: usize, col: usize, value: f64) -> String {
    format!("row {row}, column {col} (0-based) is {value}; values must be finite")
}

/// The message for a file that does not start with numpy's magic (a `.npz` gets its own).
fn not_npy(bytes: &[u8]) -> String {
    if bytes.starts_with(ZIP_MAGIC) {
        "is a .npz archive (a zip of arrays), not an .npy file: extract one array, \
         e.g. numpy.save('x.npy', numpy.load(f)['name'])"
            .into()
    } else {
        "not an npy file (it does not start with the magic \\x93NUMPY)".into()
    }
}

/// Writes samples as a 2-D little-endian float64 C-order `.npy`, byte-identical to `numpy.save`.
pub fn write_npy(path: &Path, samples: &Samples) -> Result<()> {
    let file = File::create(path).map_err(|e| write_error(path, e))?;
    let mut out = BufWriter::new(file);
    out.write_all(&npy_header(samples.len(), samples.dims()))
        .map_err(|e| write_error(path, e))?;
    for v in samples.as_slice() {
        out.write_all(&v.to_le_bytes())
            .map_err(|e| write_error(path, e))?;
    }
    out.flush().map_err(|e| write_error(path, e))
}

/// The version 1.0 header numpy writes for an (n, d) `<f8` C-order array.
fn npy_header(n: usize, d: usize) -> Vec<u8> {
    let first = n.to_string();
    let mut text = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': ({first}, {d}), }}");
    text.extend(std::iter::repeat_n(
        ' ',
        NPY_GROWTH_DIGITS.saturating_sub(first.len()),
    ));
    // magic (6) + version (2) + u16 length (2) + text + '\n', padded with 1..=64 spaces.
    let unpadded = NPY_MAGIC.len() + 2 + 2 + text.len() + 1;
    let pad = NPY_ALIGN - unpadded % NPY_ALIGN;
    text.extend(std::iter::repeat_n(' ', pad));
    text.push('\n');
    let mut bytes = Vec::with_capacity(10 + text.len());
    bytes.extend_from_slice(NPY_MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    // The text is at most a few hundred bytes, far below u16::MAX.
    bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// Element kinds an `.npy` array may hold here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Float,
    Int,
    Uint,
}

/// A plain numeric dtype: kind, size in bytes, byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dtype {
    kind: Kind,
    size: usize,
    big_endian: bool,
}

impl Dtype {
    /// Parses a dtype string such as `<f8`, `>i4` or `|u1`, or says why it is refused.
    fn parse(descr: &str, raw: &str) -> std::result::Result<Dtype, String> {
        let bytes = descr.as_bytes();
        let (big_endian, rest) = match bytes.first() {
            Some(b'<') => (false, &descr[1..]),
            Some(b'>') => (true, &descr[1..]),
            Some(b'=') => (cfg!(target_endian = "big"), &descr[1..]),
            Some(b'|') => (false, &descr[1..]),
            _ => (cfg!(target_endian = "big"), descr),
        };
        let (code, size) = rest.split_at(rest.len().min(1));
        let size: Option<usize> = size.parse().ok();
        let refuse = |what: &str| {
            Err(format!(
                "dtype {} ({what}) is not supported: samples must be real numbers; \
                 convert with X.astype(numpy.float64)",
                quote_raw(raw)
            ))
        };
        let kind = match code {
            "f" => Kind::Float,
            "i" => Kind::Int,
            "u" => Kind::Uint,
            "c" => return refuse("complex"),
            "O" => return refuse("object"),
            "S" | "a" | "U" => return refuse("string"),
            "b" | "?" => return refuse("bool"),
            "M" | "m" => return refuse("datetime"),
            "V" => return refuse("raw bytes"),
            _ => return refuse("unknown"),
        };
        match (kind, size) {
            (Kind::Float, Some(s @ (4 | 8)))
            | (Kind::Int | Kind::Uint, Some(s @ (1 | 2 | 4 | 8))) => Ok(Dtype {
                kind,
                size: s,
                big_endian,
            }),
            (Kind::Float, Some(2)) => refuse("float16"),
            _ => refuse("unsupported size"),
        }
    }
}

/// A dtype's source text, cut for messages.
fn quote_raw(raw: &str) -> String {
    if raw.len() <= QUOTE_BYTES {
        raw.to_owned()
    } else {
        quote(raw)
    }
}

/// Where an `.npy` file's array is and how to read it, every size already checked.
#[derive(Debug)]
struct NpyLayout {
    n: usize,
    d: usize,
    dtype: Dtype,
    /// Stored column by column (only when both axes are longer than one).
    fortran: bool,
    /// Byte offset of the data.
    offset: usize,
    shape_text: String,
}

impl NpyLayout {
    /// Whether the bytes already are the samples: little-endian float64 in row order.
    fn in_place(&self) -> bool {
        self.dtype
            == Dtype {
                kind: Kind::Float,
                size: 8,
                big_endian: false,
            }
            && !self.fortran
    }
}

/// Reads an `.npy` file image's header and checks every size against the bytes present.
fn npy_layout(bytes: &[u8]) -> std::result::Result<NpyLayout, String> {
    if bytes.len() < 8 || &bytes[..6] != NPY_MAGIC {
        return Err(not_npy(bytes));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_size, text_start) = match major {
        1 => (2, 10),
        2 | 3 => (4, 12),
        _ => return Err(format!("unsupported npy format version {major}.{minor}")),
    };
    let Some(len_bytes) = bytes.get(8..8 + len_size) else {
        return Err("truncated npy header (file ends inside the header length)".into());
    };
    let text_len = len_bytes
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    if text_len > MAX_NPY_HEADER_BYTES {
        return Err(format!(
            "npy header declares {text_len} bytes, over the limit of {MAX_NPY_HEADER_BYTES}"
        ));
    }
    let text_end = text_start + text_len;
    let Some(text) = bytes.get(text_start..text_end) else {
        return Err(format!(
            "truncated npy header: it declares {text_len} bytes but only {} follow",
            bytes.len() - text_start.min(bytes.len())
        ));
    };
    let text = std::str::from_utf8(text).map_err(|_| "npy header is not valid text".to_string())?;
    let header = NpyHeader::parse(text)?;

    let shape_text = header.shape_text();
    let (n, d) = match header.shape[..] {
        [n] => (n, 1),
        [n, d] => (n, d),
        [] => return Err("expected a 1-D or 2-D array, got a 0-d scalar (shape ())".into()),
        _ => {
            return Err(format!(
                "expected a 1-D or 2-D array, got shape {}",
                quote_raw(&shape_text)
            ));
        }
    };
    let dtype = match header.descr.as_deref() {
        Some(descr) => Dtype::parse(descr, &header.descr_text)?,
        None => {
            return Err(format!(
                "structured dtype {} is not supported: save a plain 2-D array of numbers",
                quote_raw(&header.descr_text)
            ));
        }
    };
    if n == 0 {
        return Err(format!("contains no samples (shape {shape_text})"));
    }
    if d == 0 {
        return Err(format!("samples have zero columns (shape {shape_text})"));
    }
    let too_large = || format!("shape {shape_text} is too large");
    let n_usize = usize::try_from(n).map_err(|_| too_large())?;
    let d_usize = usize::try_from(d).map_err(|_| too_large())?;
    let need = n_usize
        .checked_mul(d_usize)
        .and_then(|c| c.checked_mul(dtype.size))
        .ok_or_else(too_large)?;
    let body = bytes.len() - text_end;
    if body < need {
        return Err(format!(
            "truncated data: shape {shape_text} needs {need} bytes but only {body} follow the header"
        ));
    }
    if body > need {
        return Err(format!(
            "{} unexpected bytes after the data of shape {shape_text}",
            body - need
        ));
    }
    Ok(NpyLayout {
        n: n_usize,
        d: d_usize,
        dtype,
        // Fortran order only changes the layout when both axes are longer than one.
        fortran: header.fortran_order && n > 1 && d > 1,
        offset: text_end,
        shape_text,
    })
}

/// Converts the array described by `layout` into owned row-major float64 samples, within
/// the allocation budget.
fn decode_npy(
    bytes: &[u8],
    layout: &NpyLayout,
    limits: &LoadLimits,
) -> std::result::Result<Samples, String> {
    let NpyLayout { n, d, dtype, .. } = *layout;
    let count = n * d; // checked in npy_layout (times the item size, even)
    let need = count as u64 * 8;
    if need > limits.max_alloc_bytes {
        return Err(format!(
            "shape {} as float64 needs {need} bytes, over the allocation budget of {} bytes",
            layout.shape_text, limits.max_alloc_bytes
        ));
    }
    let mut out: Vec<f64> = Vec::new();
    out.try_reserve_exact(count).map_err(|_| {
        format!(
            "cannot allocate {need} bytes for shape {}",
            layout.shape_text
        )
    })?;
    out.resize(count, 0.0);
    let body = &bytes[layout.offset..layout.offset + count * dtype.size];
    for (k, item) in body.chunks_exact(dtype.size).enumerate() {
        // Element k of the file is (row, col) of the array.
        let (row, col) = if layout.fortran {
            (k % n, k / n)
        } else {
            (k / d, k % d)
        };
        let value = decode_item(item, dtype).map_err(|bad| {
            format!("row {row}, column {col} (0-based) is {bad}, beyond 2^53 in magnitude: float64 cannot hold it exactly")
        })?;
        if !value.is_finite() {
            return Err(non_finite(row, col, value));
        }
        out[row * d + col] = value;
    }
    debug_assert!(first_non_finite(&out).is_none());
    Samples::from_rows(d, out).map_err(|e| e.to_string())
}

/// One element as float64, or the integer's text when float64 cannot hold it exactly.
fn decode_item(item: &[u8], dtype: Dtype) -> std::result::Result<f64, String> {
    let mut raw = [0u8; 8];
    // Widen to 8 bytes in little-endian order, sign-extending signed integers.
    if dtype.big_endian {
        for (dst, src) in raw.iter_mut().zip(item.iter().rev()) {
            *dst = *src;
        }
    } else {
        raw[..dtype.size].copy_from_slice(item);
    }
    let negative = dtype.kind == Kind::Int && raw[dtype.size - 1] & 0x80 != 0;
    if negative {
        raw[dtype.size..].fill(0xff);
    }
    let bits = u64::from_le_bytes(raw);
    match dtype.kind {
        Kind::Float if dtype.size == 8 => Ok(f64::from_bits(bits)),
        Kind::Float => Ok(f64::from(f32::from_bits(bits as u32))),
        Kind::Int => {
            let v = bits as i64;
            if v.unsigned_abs() > EXACT_INT {
                Err(v.to_string())
            } else {
                Ok(v as f64)
            }
        }
        Kind::Uint => {
            if bits > EXACT_INT {
                Err(bits.to_string())
            } else {
                Ok(bits as f64)
            }
        }
    }
}

#[cfg(test)]
/// Parses a whole `.npy` file image into owned samples (the tests' entry, no file).
fn parse_npy(bytes: &[u8]) -> std::result::Result<Samples, String> {
    let limits = LoadLimits::default();
    let layout = npy_layout(bytes)?;
    decode_npy(bytes, &layout, &limits)
}

/// The three keys of an `.npy` header that matter here.
#[derive(Debug)]
struct NpyHeader {
    /// The dtype when it is a plain string like `<f8` (structured dtypes are lists).
    descr: Option<String>,
    /// The dtype exactly as written in the header, for messages.
    descr_text: String,
    fortran_order: bool,
    shape: Vec<u64>,
}

impl NpyHeader {
    /// Parses the header's Python dict literal.
    fn parse(text: &str) -> std::result::Result<NpyHeader, String> {
        let mut p = LiteralParser {
            text,
            pos: 0,
            depth: 0,
        };
        let entries = p.dict()?;
        p.skip_ws();
        if p.pos != text.len() {
            return Err(format!(
                "npy header has unexpected text after the dict: {}",
                quote(&text[p.pos..])
            ));
        }
        let find = |key: &str| {
            entries
                .iter()
                .find(|(k, _, _)| k == key)
                .ok_or_else(|| format!("npy header is missing '{key}'"))
        };
        let (_, descr, descr_text) = find("descr")?;
        let descr = match descr {
            Literal::Str(s) => Some(s.clone()),
            _ => None,
        };
        let fortran_order = match find("fortran_order")? {
            (_, Literal::Bool(b), _) => *b,
            (_, _, raw) => {
                return Err(format!(
                    "npy header 'fortran_order' is {}, not a bool",
                    quote_raw(raw)
                ));
            }
        };
        let shape = match find("shape")? {
            (_, Literal::Seq(items), raw) => items
                .iter()
                .map(|item| match item {
                    Literal::Int(v) => Ok(*v),
                    _ => Err(format!(
                        "npy header 'shape' {} is not a tuple of integers",
                        quote_raw(raw)
                    )),
                })
                .collect::<std::result::Result<Vec<u64>, String>>()?,
            (_, _, raw) => {
                return Err(format!(
                    "npy header 'shape' {} is not a tuple",
                    quote_raw(raw)
                ));
            }
        };
        Ok(NpyHeader {
            descr,
            descr_text: (*descr_text).to_owned(),
            fortran_order,
            shape,
        })
    }

    /// The shape written as Python does: `(3,)`, `(2, 3)`.
    fn shape_text(&self) -> String {
        match &self.shape[..] {
            [one] => format!("({one},)"),
            many => {
                let parts: Vec<String> = many.iter().map(u64::to_string).collect();
                format!("({})", parts.join(", "))
            }
        }
    }
}

/// A Python literal as it can appear in an `.npy` header.
#[derive(Debug)]
enum Literal {
    Str(String),
    Bool(bool),
    Int(u64),
    /// A tuple or list.
    Seq(Vec<Literal>),
    /// A nested dict (kept only to be reported, never used).
    Dict,
}

/// Recursive-descent parser for the small subset of Python literals numpy headers use.
struct LiteralParser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

/// Deepest nesting accepted, so that a crafted header cannot overflow the stack.
const MAX_DEPTH: usize = 16;

/// One parsed `key: value` pair with the value's source text.
type Entry<'a> = (String, Literal, &'a str);

impl<'a> LiteralParser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, want: u8) -> std::result::Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(want) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{}'", want as char)))
        }
    }

    fn unexpected(&self, wanted: &str) -> String {
        let rest: String = self.text[self.pos..].trim_end().chars().take(20).collect();
        if rest.is_empty() {
            format!("npy header ends early: expected {wanted}")
        } else {
            format!("npy header is not a valid dict: expected {wanted} at {rest:?}")
        }
    }

    /// `{ key: value, ... }` with string keys and an optional trailing comma.
    fn dict(&mut self) -> std::result::Result<Vec<Entry<'a>>, String> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(entries);
            }
            let key = match self.value()? {
                (Literal::Str(k), _) => k,
                (_, raw) => {
                    return Err(format!("npy header key {} is not a string", quote_raw(raw)));
                }
            };
            self.expect(b':')?;
            let (value, raw) = self.value()?;
            entries.push((key, value, raw));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.unexpected("',' or '}'")),
            }
        }
    }

    /// Any supported literal, with its source text.
    fn value(&mut self) -> std::result::Result<(Literal, &'a str), String> {
        self.skip_ws();
        let start = self.pos;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("npy header nests too deeply".into());
        }
        let literal = match self.peek() {
            Some(q @ (b'\'' | b'"')) => self.string(q)?,
            Some(open @ (b'(' | b'[')) => {
                let close = if open == b'(' { b')' } else { b']' };
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.value()?.0);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(c) if c == close => {}
                        _ => return Err(self.unexpected(&format!("',' or '{}'", close as char))),
                    }
                }
                Literal::Seq(items)
            }
            Some(b'{') => {
                self.dict()?;
                Literal::Dict
            }
            Some(b'0'..=b'9') => self.integer()?,
            Some(b'T' | b'F') => {
                if self.text[self.pos..].starts_with("True") {
                    self.pos += 4;
                    Literal::Bool(true)
                } else if self.text[self.pos..].starts_with("False") {
                    self.pos += 5;
                    Literal::Bool(false)
                } else {
                    return Err(self.unexpected("a value"));
                }
            }
            _ => return Err(self.unexpected("a value")),
        };
        self.depth -= 1;
        Ok((literal, &self.text[start..self.pos]))
    }

    /// A quoted string; a backslash takes the next character literally.
    fn string(&mut self, quote: u8) -> std::result::Result<Literal, String> {
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.text[self.pos..].char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c as u32 == u32::from(quote) => {
                    self.pos += i + 1;
                    return Ok(Literal::Str(out));
                }
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        out.push(next);
                    }
                }
                c => out.push(c),
            }
        }
        self.pos = self.text.len();
        Err("npy header has an unterminated string".into())
    }

    /// A non-negative integer, with Python 2's optional `L` suffix.
    fn integer(&mut self) -> std::result::Result<Literal, String> {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = &self.text[start..self.pos];
        if self.peek() == Some(b'L') {
            self.pos += 1;
        }
        digits
            .parse()
            .map(Literal::Int)
            .map_err(|_| format!("npy header integer {digits} is too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh path in the system temp dir, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(ext: &str) -> TempFile {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("parzen-test-{}-{n}.{ext}", std::process::id());
            TempFile(std::env::temp_dir().join(name))
        }

        fn with(ext: &str, contents: &[u8]) -> TempFile {
            let f = TempFile::new(ext);
            std::fs::write(&f.0, contents).unwrap();
            f
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn csv_err(contents: &str) -> String {
        let f = TempFile::with("csv", contents.as_bytes());
        let msg = load_csv(f.path()).unwrap_err().to_string();
        let prefix = format!("{}", f.path().display());
        assert!(msg.starts_with(&prefix), "{msg}");
        msg[prefix.len()..].to_owned()
    }

    fn npy_err(contents: &[u8]) -> String {
        let f = TempFile::with("npy", contents);
        let msg = load_npy(f.path()).unwrap_err().to_string();
        let prefix = format!("{}: ", f.path().display());
        assert!(msg.starts_with(&prefix), "{msg}");
        msg[prefix.len()..].to_owned()
    }

    /// The exact bytes numpy 2.4 writes for `np.save(f, np.array([[1.0, 2.0], [3.0, 4.0]]))`.
    fn numpy_2x2() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"\x93NUMPY\x01\x00\x76\x00");
        b.extend_from_slice(b"{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }");
        b.extend(std::iter::repeat_n(b' ', 58));
        b.push(b'\n');
        for v in [1.0f64, 2.0, 3.0, 4.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(b.len(), 160);
        b
    }

    /// An npy file image with the given header dict text and raw data bytes.
    fn npy_bytes(dict: &str, data: &[u8]) -> Vec<u8> {
        let mut text = dict.to_owned();
        while !(10 + text.len() + 1).is_multiple_of(64) {
            text.push(' ');
        }
        text.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(text.len() as u16).to_le_bytes());
        b.extend_from_slice(text.as_bytes());
        b.extend_from_slice(data);
        b
    }

    fn le(values: &[f64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn csv_with_and_without_header() {
        let f = TempFile::with("csv", b"1,2\n3,4\n5,6\n");
        let s = load_csv(f.path()).unwrap();
        assert_eq!((s.len(), s.dims()), (3, 2));
        assert_eq!(s.as_slice(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);

        let f = TempFile::with("csv", b"x, y\n 1 , 2.5 \n-3e2,4\n\n  \n");
        let s = load_csv(f.path()).unwrap();
        assert_eq!(s.as_slice(), &[1.0, 2.5, -300.0, 4.0]);

        let f = TempFile::with("txt", b"0.5\r\n-1.25\r\n");
        let s = load(f.path()).unwrap();
        assert_eq!((s.len(), s.dims()), (2, 1));
    }

    #[test]
    fn csv_errors_name_file_line_and_value() {
        assert_eq!(
            csv_err("a,b\n1,2\n3,x\n"),
            r#", line 3: field 2 "x" is not a number"#
        );
        assert_eq!(
            csv_err("1,2\nx,y\n"),
            r#", line 2: field 1 "x" is not a number"#
        );
        assert_eq!(
            csv_err("x;y\n1;2\n"),
            r#", line 2: field 1 "1;2" is not a number (numbers separated by semicolons? fields must be separated by commas)"#
        );
        assert_eq!(
            csv_err("1\t-2.5\n3\t4\n"),
            ", line 2: field 1 \"3\\t4\" is not a number (numbers separated by tabs? fields must be separated by commas)"
        );
        assert_eq!(
            csv_err("1,2\n3 4,5\n"),
            r#", line 2: field 1 "3 4" is not a number (numbers separated by spaces? fields must be separated by commas)"#
        );
        assert_eq!(
            csv_err("1,2\n3;x,5\n"),
            r#", line 2: field 1 "3;x" is not a number"#
        );
        assert_eq!(
            csv_err("1,2\n3,4,5\n"),
            ", line 2: has 3 fields but the first row (line 1) has 2"
        );
        assert_eq!(
            csv_err("a,b,c\n1,2\n"),
            ", line 2: has 2 fields but the header (line 1) has 3"
        );
        assert_eq!(
            csv_err("1,2\n3,nan\n"),
            r#", line 2: field 2 "nan" is not finite; values must be finite"#
        );
        assert_eq!(
            csv_err("1,-inf\n"),
            r#", line 1: field 2 "-inf" is not finite; values must be finite"#
        );
        assert_eq!(csv_err("1,,2\n"), ", line 1: field 2 is empty");
        assert_eq!(csv_err(""), ": contains no samples");
        assert_eq!(csv_err("x,y\n"), ": contains no samples");
        assert_eq!(csv_err("x,y\n\n \n"), ": contains no samples");
        let f = TempFile::with("csv", b"1,\xff\n");
        let msg = load_csv(f.path()).unwrap_err().to_string();
        assert!(msg.ends_with("line 1: field 2 is not valid utf-8"), "{msg}");
    }

    #[test]
    fn missing_files_name_path_and_os_reason() {
        let f = TempFile::new("csv");
        for result in [load_csv(f.path()), load_npy(f.path()), load(f.path())] {
            let msg = result.unwrap_err().to_string();
            assert!(msg.starts_with("cannot read "), "{msg}");
            assert!(msg.contains(&f.path().display().to_string()), "{msg}");
            assert!(msg.contains("os error"), "{msg}");
        }
        let dir = std::env::temp_dir()
            .join("parzen-no-such-dir")
            .join("x.npy");
        let s = Samples::from_rows(1, vec![1.0]).unwrap();
        let msg = write_npy(&dir, &s).unwrap_err().to_string();
        assert!(
            msg.starts_with("cannot write ") && msg.contains("os error"),
            "{msg}"
        );
    }

    #[test]
    fn csv_round_trip_is_exact() {
        let values = vec![
            0.1,
            -0.0,
            1.0 / 3.0,
            1e-300,
            f64::MIN_POSITIVE / 3.0,
            f64::MAX,
            -123456789.0,
            2.5e16,
        ];
        let s = Samples::from_rows(2, values).unwrap();
        let f = TempFile::new("csv");
        write_csv(f.path(), &s).unwrap();
        let back = load(f.path()).unwrap();
        let bits = |s: &Samples| s.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&s));
        assert_eq!(back.dims(), 2);
    }

    #[test]
    fn npy_writer_matches_numpy_bytes() {
        let s = Samples::from_rows(2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let f = TempFile::new("npy");
        write_npy(f.path(), &s).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), numpy_2x2());
        let f = TempFile::with("npy", &numpy_2x2());
        assert_eq!(load(f.path()).unwrap(), s);
    }

    #[test]
    fn npy_header_is_aligned_for_all_row_count_widths() {
        for n in [1usize, 9, 10, 12345, 10usize.pow(10), usize::MAX] {
            let h = npy_header(n, 3);
            assert_eq!(h.len() % 64, 0, "n = {n}");
            assert_eq!(h.last(), Some(&b'\n'));
            let text = std::str::from_utf8(&h[10..]).unwrap();
            let parsed = NpyHeader::parse(text).unwrap();
            assert_eq!(parsed.shape, vec![n as u64, 3]);
        }
    }

    #[test]
    fn npy_round_trip_is_bit_exact() {
        let g = crate::Gaussian::standard(3).unwrap();
        let s = g.sample(1000, 5).unwrap();
        let f = TempFile::new("npy");
        write_npy(f.path(), &s).unwrap();
        let back = load(f.path()).unwrap();
        let bits = |s: &Samples| s.as_slice().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&s));
        assert_eq!(back.dims(), 3);
    }

    #[test]
    fn npy_accepts_1d_big_endian_versions_and_degenerate_fortran() {
        let one_d = npy_bytes(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
            &le(&[1.5, -2.0]),
        );
        let f = TempFile::with("NPY", &one_d);
        let s = load(f.path()).unwrap();
        assert_eq!((s.len(), s.dims()), (2, 1));
        assert_eq!(s.as_slice(), &[1.5, -2.0]);

        let be: Vec<u8> = [1.0f64, 2.0].iter().flat_map(|v| v.to_be_bytes()).collect();
        let bytes = npy_bytes(
            "{'descr': '>f8', 'fortran_order': False, 'shape': (1, 2), }",
            &be,
        );
        assert_eq!(parse_npy(&bytes).unwrap().as_slice(), &[1.0, 2.0]);

        // Key order, quotes, spacing and Python 2 longs vary between writers.
        let bytes = npy_bytes(
            r#"{"shape":(2L,1L),"fortran_order":True,"descr":"<f8"}"#,
            &le(&[3.0, 4.0]),
        );
        assert_eq!(parse_npy(&bytes).unwrap().as_slice(), &[3.0, 4.0]);

        // Version 2.0: a u32 header length.
        let text = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1), }\n";
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&(text.len() as u32).to_le_bytes());
        v2.extend_from_slice(text.as_bytes());
        v2.extend_from_slice(&le(&[7.0]));
        assert_eq!(parse_npy(&v2).unwrap().as_slice(), &[7.0]);
    }

    #[test]
    fn npy_errors_are_clear() {
        let dict = |descr: &str, fortran: &str, shape: &str| {
            format!("{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}")
        };
        let four = le(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            npy_err(b"1,2\n3,4\n"),
            "not an npy file (it does not start with the magic \\x93NUMPY)"
        );
        assert_eq!(
            npy_err(b""),
            "not an npy file (it does not start with the magic \\x93NUMPY)"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("[('a', '<f8')]", "False", "(4,)"), &four)),
            "structured dtype [('a', '<f8')] is not supported: save a plain 2-D array of numbers"
        );
        for (descr, what) in [
            ("'<c16'", "complex"),
            ("'|O'", "object"),
            ("'<U5'", "string"),
            ("'|S3'", "string"),
            ("'|b1'", "bool"),
            ("'<M8[s]'", "datetime"),
            ("'<f2'", "float16"),
            ("'<i3'", "unsupported size"),
            ("'<x8'", "unknown"),
        ] {
            assert_eq!(
                npy_err(&npy_bytes(&dict(descr, "False", "(2, 2)"), &four)),
                format!(
                    "dtype {descr} ({what}) is not supported: samples must be real numbers; \
                     convert with X.astype(numpy.float64)"
                )
            );
        }
        assert_eq!(
            npy_err(&npy_bytes(&dict("'<f8'", "False", "(1, 2, 2)"), &four)),
            "expected a 1-D or 2-D array, got shape (1, 2, 2)"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("'<f8'", "False", "()"), &le(&[1.0]))),
            "expected a 1-D or 2-D array, got a 0-d scalar (shape ())"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("'<f8'", "False", "(0, 3)"), &[])),
            "contains no samples (shape (0, 3))"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("'<f8'", "False", "(0,)"), &[])),
            "contains no samples (shape (0,))"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("'<f8'", "False", "(5, 0)"), &[])),
            "samples have zero columns (shape (5, 0))"
        );
        assert_eq!(
            npy_err(&npy_bytes(
                &dict("'<f8'", "False", "(2, 2)"),
                &le(&[1.0, 2.0, f64::NAN, 4.0])
            )),
            "row 1, column 0 (0-based) is NaN; values must be finite"
        );
        assert_eq!(
            npy_err(&npy_bytes(
                &dict("'<f8'", "False", "(2, 2)"),
                &le(&[1.0, 2.0, 3.0, f64::NEG_INFINITY])
            )),
            "row 1, column 1 (0-based) is -inf; values must be finite"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("'<f8'", "False", "(2, 2)"), &four[..30])),
            "truncated data: shape (2, 2) needs 32 bytes but only 30 follow the header"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("'<f8'", "False", "(1, 2)"), &four)),
            "16 unexpected bytes after the data of shape (1, 2)"
        );
        assert_eq!(
            npy_err(&npy_bytes(
                &dict(
                    "'<f8'",
                    "False",
                    "(18446744073709551615, 18446744073709551615)"
                ),
                &four
            )),
            "shape (18446744073709551615, 18446744073709551615) is too large"
        );
        assert_eq!(
            npy_err(&npy_bytes(
                &dict("'<f8'", "False", "(99999999999999999999, 1)"),
                &four
            )),
            "npy header integer 99999999999999999999 is too large"
        );
        assert_eq!(
            npy_err(&numpy_2x2()[..50]),
            "truncated npy header: it declares 118 bytes but only 40 follow"
        );
        assert_eq!(
            npy_err(b"\x93NUMPY\x01"),
            "not an npy file (it does not start with the magic \\x93NUMPY)"
        );
        assert_eq!(
            npy_err(b"\x93NUMPY\x01\x00\x05"),
            "truncated npy header (file ends inside the header length)"
        );
        assert_eq!(
            npy_err(b"\x93NUMPY\x04\x00\x05\x00"),
            "unsupported npy format version 4.0"
        );
        assert_eq!(
            npy_err(&npy_bytes("{'descr': '<f8', 'shape': (2, 2)}", &four)),
            "npy header is missing 'fortran_order'"
        );
        assert_eq!(
            npy_err(&npy_bytes(
                "{'descr': '<f8', 'fortran_order': 0, 'shape': (4,)}",
                &four
            )),
            "npy header 'fortran_order' is 0, not a bool"
        );
        assert_eq!(
            npy_err(&npy_bytes(
                "{'descr': '<f8', 'fortran_order': False, 'shape': 4}",
                &four
            )),
            "npy header 'shape' 4 is not a tuple"
        );
        assert_eq!(
            npy_err(&npy_bytes(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (-4,)}",
                &four
            )),
            "npy header is not a valid dict: expected a value at \"-4,)}\""
        );
        assert_eq!(
            npy_err(&npy_bytes(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (4,)",
                &four
            )),
            "npy header ends early: expected ',' or '}'"
        );
        let deep = format!(
            "{{'descr': '<f8', 'fortran_order': False, 'shape': {}4{}}}",
            "(".repeat(40),
            ")".repeat(40)
        );
        assert_eq!(
            npy_err(&npy_bytes(&deep, &four)),
            "npy header nests too deeply"
        );
        assert_eq!(
            npy_err(&npy_bytes("{'descr': '<f8", &four)),
            "npy header has an unterminated string"
        );
    }

    fn bytes_of<T: Copy, const N: usize>(values: &[T], to: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|&v| to(v)).collect()
    }

    fn npy_file(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> TempFile {
        let fortran = if fortran { "True" } else { "False" };
        let dict = format!("{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}");
        TempFile::with("npy", &npy_bytes(&dict, data))
    }

    #[test]
    fn float64_c_order_is_mapped_not_copied() {
        let s = Samples::from_rows(3, (0..30).map(f64::from).collect()).unwrap();
        let f = TempFile::new("npy");
        write_npy(f.path(), &s).unwrap();
        let back = load(f.path()).unwrap();
        assert!(back.is_mapped());
        assert!(!s.is_mapped());
        assert_eq!(back, s);
        assert_eq!(back.row(9), &[27.0, 28.0, 29.0]);
        assert_eq!(back.clone().into_vec(), s.clone().into_vec());
        // Serialized alike whether mapped or owned.
        assert_eq!(
            serde_json::to_string(&back).unwrap(),
            serde_json::to_string(&s).unwrap()
        );
        let one_d = npy_file("'<f8'", false, "(3,)", &le(&[1.0, 2.0, 3.0]));
        let back = load_npy(one_d.path()).unwrap();
        assert!(back.is_mapped());
        assert_eq!((back.len(), back.dims()), (3, 1));
    }

    #[test]
    fn other_dtypes_are_converted_exactly() {
        let expect = [1.5f64, -2.0, 3.25, 4.0, -0.5, 6.0];
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "'<f4'",
                bytes_of(&expect.map(|v| v as f32), f32::to_le_bytes),
            ),
            (
                "'>f4'",
                bytes_of(&expect.map(|v| v as f32), f32::to_be_bytes),
            ),
            ("'>f8'", bytes_of(&expect, f64::to_be_bytes)),
        ];
        for (descr, data) in cases {
            let f = npy_file(descr, false, "(3, 2)", &data);
            let s = load(f.path()).unwrap();
            assert!(!s.is_mapped(), "{descr}");
            assert_eq!(s.as_slice(), &expect, "{descr}");
        }
        let ints = [-128i64, 127, 0, -1, 5, 100];
        let int_cases: Vec<(&str, Vec<u8>)> = vec![
            ("'|i1'", ints.iter().map(|&v| v as i8 as u8).collect()),
            ("'<i2'", bytes_of(&ints.map(|v| v as i16), i16::to_le_bytes)),
            ("'>i2'", bytes_of(&ints.map(|v| v as i16), i16::to_be_bytes)),
            ("'<i4'", bytes_of(&ints.map(|v| v as i32), i32::to_le_bytes)),
            ("'>i8'", bytes_of(&ints, i64::to_be_bytes)),
            ("'<i8'", bytes_of(&ints, i64::to_le_bytes)),
        ];
        for (descr, data) in int_cases {
            let f = npy_file(descr, false, "(2, 3)", &data);
            let s = load(f.path()).unwrap();
            assert_eq!(s.as_slice(), &ints.map(|v| v as f64), "{descr}");
        }
        let uints = [0u64, 255, 7, 1 << 53];
        let uint_cases: Vec<(&str, Vec<u8>)> = vec![
            ("'|u1'", vec![0, 255, 7, 0]),
            ("'<u2'", bytes_of(&[0u16, 255, 7, 0], u16::to_le_bytes)),
            ("'>u4'", bytes_of(&[0u32, 255, 7, 0], u32::to_be_bytes)),
            ("'<u8'", bytes_of(&uints, u64::to_le_bytes)),
        ];
        for (descr, data) in uint_cases {
            let f = npy_file(descr, false, "(4,)", &data);
            let s = load(f.path()).unwrap();
            assert_eq!(&s.as_slice()[..3], &[0.0, 255.0, 7.0], "{descr}");
        }
        // Fortran order: column by column in the file, row-major in the samples.
        let f = npy_file(
            "'<f8'",
            true,
            "(2, 3)",
            &le(&[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]),
        );
        let s = load(f.path()).unwrap();
        assert_eq!(s.as_slice(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert!(!s.is_mapped());
        let f = npy_file(
            "'<i2'",
            true,
            "(3, 2)",
            &bytes_of(&[1i16, 3, 5, 2, 4, 6], i16::to_le_bytes),
        );
        assert_eq!(
            load(f.path()).unwrap().as_slice(),
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
    }

    #[test]
    fn conversion_errors_name_row_column_and_value() {
        let big = (1u64 << 53) + 1;
        let f = npy_file(
            "'<u8'",
            false,
            "(2, 2)",
            &bytes_of(&[0, 1, 2, big], u64::to_le_bytes),
        );
        let msg = load(f.path()).unwrap_err().to_string();
        assert!(
            msg.ends_with(
                "row 1, column 1 (0-based) is 9007199254740993, beyond 2^53 in magnitude: \
                 float64 cannot hold it exactly"
            ),
            "{msg}"
        );
        let neg = -(1i64 << 53) - 1;
        let f = npy_file(
            "'>i8'",
            true,
            "(2, 2)",
            &bytes_of(&[0, neg, 2, 3], i64::to_be_bytes),
        );
        let msg = load(f.path()).unwrap_err().to_string();
        assert!(msg.ends_with("row 1, column 0 (0-based) is -9007199254740993, beyond 2^53 in magnitude: float64 cannot hold it exactly"), "{msg}");
        let f = npy_file(
            "'<f4'",
            false,
            "(1, 2)",
            &bytes_of(&[1.0f32, f32::NAN], f32::to_le_bytes),
        );
        let msg = load(f.path()).unwrap_err().to_string();
        assert!(
            msg.ends_with("row 0, column 1 (0-based) is NaN; values must be finite"),
            "{msg}"
        );
        // The mapped path names the value too.
        let f = npy_file("'<f8'", false, "(2, 1)", &le(&[1.0, f64::INFINITY]));
        let msg = load(f.path()).unwrap_err().to_string();
        assert!(
            msg.ends_with("row 1, column 0 (0-based) is inf; values must be finite"),
            "{msg}"
        );
    }

    #[test]
    fn npz_archives_say_how_to_extract_an_array() {
        let zip = b"PK\x03\x04\x14\x00\x00\x00\x00\x00rest of an archive";
        for ext in ["npz", "npy", "dat"] {
            let f = TempFile::with(ext, zip);
            let msg = load(f.path()).unwrap_err().to_string();
            assert!(
                msg.ends_with(
                    "is a .npz archive (a zip of arrays), not an .npy file: extract one array, \
                     e.g. numpy.save('x.npy', numpy.load(f)['name'])"
                ),
                "{ext}: {msg}"
            );
        }
        let empty = TempFile::with("npy", b"");
        let msg = load(empty.path()).unwrap_err().to_string();
        assert!(
            msg.ends_with("not an npy file (it does not start with the magic \\x93NUMPY)"),
            "{msg}"
        );
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = std::env::temp_dir();
        for result in [load(&dir), load_csv(&dir), load_npy(&dir)] {
            let msg = result.unwrap_err().to_string();
            assert_eq!(
                msg,
                format!("{}: is a directory, not a regular file", dir.display())
            );
        }
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            let msg = load(zero).unwrap_err().to_string();
            assert_eq!(msg, "/dev/zero: is a character device, not a regular file");
        }
        // A FIFO with no writer: refused at once, never waited on.
        let fifo = TempFile::new("csv");
        let c_path = std::ffi::CString::new(fifo.path().to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system entry.
        let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
        assert_eq!(rc, 0, "mkfifo failed");
        let msg = load(fifo.path()).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: is a named pipe (FIFO), not a regular file",
                fifo.path().display()
            )
        );
    }

    #[test]
    fn limits_are_enforced_before_allocating() {
        let s = Samples::from_rows(2, vec![1.0; 200]).unwrap();
        let npy = TempFile::new("npy");
        write_npy(npy.path(), &s).unwrap();
        let csv = TempFile::new("csv");
        write_csv(csv.path(), &s).unwrap();
        let size = std::fs::metadata(npy.path()).unwrap().len();
        let small_file = LoadLimits {
            max_file_bytes: size - 1,
            max_alloc_bytes: u64::MAX,
        };
        let msg = load_with(npy.path(), &small_file).unwrap_err().to_string();
        assert!(
            msg.ends_with(&format!(
                "file is {size} bytes, over the limit of {} bytes",
                size - 1
            )),
            "{msg}"
        );
        // A mapped float64 file allocates nothing: the budget does not apply.
        let no_alloc = LoadLimits {
            max_file_bytes: u64::MAX,
            max_alloc_bytes: 8,
        };
        assert!(load_with(npy.path(), &no_alloc).unwrap().is_mapped());
        // CSV rows count against it: 100 rows of 2 values need 1600 bytes.
        let budget = LoadLimits {
            max_file_bytes: u64::MAX,
            max_alloc_bytes: 1599,
        };
        let msg = load_with(csv.path(), &budget).unwrap_err().to_string();
        assert!(
            msg.ends_with(
                "line 100: 200 values need 1600 bytes, over the allocation budget of 1599 bytes"
            ),
            "{msg}"
        );
        // So does a conversion.
        let f4 = npy_file("'<f4'", false, "(100, 2)", &vec![0u8; 800]);
        let msg = load_with(f4.path(), &budget).unwrap_err().to_string();
        assert!(
            msg.ends_with("shape (100, 2) as float64 needs 1600 bytes, over the allocation budget of 1599 bytes"),
            "{msg}"
        );
        // A header that claims to be huge.
        let mut v2 = b"\x93NUMPY\x02\x00".to_vec();
        v2.extend_from_slice(&100_000u32.to_le_bytes());
        v2.extend_from_slice(&[b' '; 64]);
        assert_eq!(
            npy_err(&v2),
            "npy header declares 100000 bytes, over the limit of 65536"
        );
    }

    #[test]
    fn long_csv_lines_are_refused_with_their_number() {
        let mut text = b"1,2\n3,4\n".to_vec();
        text.extend(std::iter::repeat_n(b'5', MAX_LINE_BYTES + 1));
        text.extend_from_slice(b"\n6,7\n");
        let f = TempFile::with("csv", &text);
        let msg = load(f.path()).unwrap_err().to_string();
        assert!(
            msg.ends_with(&format!(
                "line 3: line is longer than {MAX_LINE_BYTES} bytes; is this a CSV file?"
            )),
            "{msg}"
        );
        // Exactly at the cap is fine (then it fails as a number with a short quote).
        let mut text = b"1\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES));
        text.push(b'\n');
        let f = TempFile::with("csv", &text);
        let msg = load(f.path()).unwrap_err().to_string();
        assert!(msg.len() < 400, "{} bytes", msg.len());
        assert!(
            msg.ends_with(&format!("... ({MAX_LINE_BYTES} bytes) is not a number")),
            "{msg}"
        );
        // No newline at all.
        let f = TempFile::with("csv", &vec![b'9'; 3 * MAX_LINE_BYTES]);
        let msg = load(f.path()).unwrap_err().to_string();
        assert!(msg.contains("line 1: line is longer than"), "{msg}");
    }

    #[test]
    fn quotes_are_cut_at_a_char_boundary() {
        let long = "é".repeat(150);
        let q = quote(&long);
        assert!(q.ends_with("... (300 bytes)"), "{q}");
        assert!(q.len() < 220);
        assert_eq!(quote("abc"), "\"abc\"");
    }
}
