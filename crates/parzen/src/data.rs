//! Loading a user's own samples from CSV or `.npy` files, and writing them back for Python.
//!
//! The `.npy` reader and writer are hand-written rather than built on the `npyz` crate:
//! `npyz` multiplies the header's shape entries with unchecked `u64` arithmetic (a crafted
//! shape panics in debug builds and wraps in release), reports every problem as a bare
//! `io::Error` string that would have to be re-classified to tell "bad magic" from "truncated"
//! from "wrong dtype", and pulls in a full Python-literal parser (pest, num-bigint) for a
//! header that here only ever needs `descr`, `fortran_order` and `shape`. The format is small
//! and documented (magic `\x93NUMPY`, version, little-endian header length, a Python dict
//! literal padded to 64 bytes), so a ~150-line reader gives exact error messages, never
//! panics, and a writer that produces the same bytes as `numpy.save`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::samples::Samples;

/// Loads samples by extension: `.npy` (any case) as numpy, anything else as CSV.
pub fn load(path: &Path) -> Result<Samples> {
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if is_npy {
        load_npy(path)
    } else {
        load_csv(path)
    }
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

/// Loads one sample per row from a comma-separated file with an optional header line.
///
/// The first non-blank line is a header when any of its fields is non-empty and not a
/// number; blank (or whitespace-only) lines are skipped; every row must have the same
/// number of fields, and every value must parse as a finite `f64` ("nan" and "inf" are
/// rejected even though they parse).
pub fn load_csv(path: &Path) -> Result<Samples> {
    let file = File::open(path).map_err(|e| read_error(path, e))?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(BufReader::new(file));
    let bad = |line: u64, reason: String| Error::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    };

    let mut record = csv::StringRecord::new();
    let mut data = Vec::new();
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
                    csv::ErrorKind::Io(source) => read_error(path, source),
                    csv::ErrorKind::Utf8 { err, .. } => bad(
                        line,
                        format!("field {} is not valid utf-8", err.field() + 1),
                    ),
                    other => bad(line, format!("{other:?}").to_lowercase()),
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
        for (i, field) in record.iter().enumerate() {
            let column = i + 1;
            if field.is_empty() {
                return Err(bad(line, format!("field {column} is empty")));
            }
            let value: f64 = field
                .parse()
                .map_err(|_| bad(line, format!("field {column} {field:?} is not a number")))?;
            if !value.is_finite() {
                return Err(bad(
                    line,
                    format!("field {column} {field:?} is not finite; values must be finite"),
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
/// numpy pads magic + version + length + header to a multiple of this.
const NPY_ALIGN: usize = 64;
/// numpy reserves room for this many digits in the first shape entry (`GROWTH_AXIS_MAX_DIGITS`).
const NPY_GROWTH_DIGITS: usize = 21;

/// Loads a numpy `.npy` file holding a 2-D (n×d) or 1-D (n×1) float64 array, C order.
pub fn load_npy(path: &Path) -> Result<Samples> {
    let bytes = std::fs::read(path).map_err(|e| read_error(path, e))?;
    parse_npy(&bytes).map_err(|reason| Error::Npy {
        path: path.to_path_buf(),
        reason,
    })
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

/// Parses a whole `.npy` file image into samples, or says what is wrong with it.
fn parse_npy(bytes: &[u8]) -> std::result::Result<Samples, String> {
    if bytes.len() < 8 || &bytes[..6] != NPY_MAGIC {
        return Err("not an npy file (it does not start with the magic \\x93NUMPY)".into());
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
                "expected a 1-D or 2-D array, got shape {shape_text}"
            ));
        }
    };
    let big_endian = match header.descr.as_deref() {
        Some("<f8") => false,
        Some(">f8") => true,
        _ => {
            return Err(format!(
                "unsupported dtype {}: expected float64 ('<f8')",
                header.descr_text
            ));
        }
    };
    // Fortran order only changes the layout when both axes are longer than one.
    if header.fortran_order && n > 1 && d > 1 {
        return Err(format!(
            "fortran-order array (shape {shape_text}) is not supported; save it with np.ascontiguousarray"
        ));
    }
    if n == 0 {
        return Err(format!("contains no samples (shape {shape_text})"));
    }
    if d == 0 {
        return Err(format!("samples have zero columns (shape {shape_text})"));
    }
    let n_usize = usize::try_from(n).map_err(|_| format!("shape {shape_text} is too large"))?;
    let d_usize = usize::try_from(d).map_err(|_| format!("shape {shape_text} is too large"))?;
    let need = n_usize
        .checked_mul(d_usize)
        .and_then(|c| c.checked_mul(8))
        .ok_or_else(|| format!("shape {shape_text} is too large"))?;
    let body = &bytes[text_end..];
    if body.len() < need {
        return Err(format!(
            "truncated data: shape {shape_text} needs {need} bytes but only {} follow the header",
            body.len()
        ));
    }
    if body.len() > need {
        return Err(format!(
            "{} unexpected bytes after the data of shape {shape_text}",
            body.len() - need
        ));
    }
    let mut data = Vec::with_capacity(n_usize * d_usize);
    for (i, chunk) in body.chunks_exact(8).enumerate() {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(chunk);
        let v = if big_endian {
            f64::from_be_bytes(raw)
        } else {
            f64::from_le_bytes(raw)
        };
        if !v.is_finite() {
            return Err(format!(
                "row {}, column {} (0-based) is {v}; values must be finite",
                i / d_usize,
                i % d_usize
            ));
        }
        data.push(v);
    }
    Samples::from_rows(d_usize, data).map_err(|e| e.to_string())
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
                "npy header has unexpected text after the dict: {:?}",
                &text[p.pos..]
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
            (_, _, raw) => return Err(format!("npy header 'fortran_order' is {raw}, not a bool")),
        };
        let shape = match find("shape")? {
            (_, Literal::Seq(items), raw) => items
                .iter()
                .map(|item| match item {
                    Literal::Int(v) => Ok(*v),
                    _ => Err(format!(
                        "npy header 'shape' {raw} is not a tuple of integers"
                    )),
                })
                .collect::<std::result::Result<Vec<u64>, String>>()?,
            (_, _, raw) => return Err(format!("npy header 'shape' {raw} is not a tuple")),
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
                (_, raw) => return Err(format!("npy header key {raw} is not a string")),
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
            npy_err(&npy_bytes(&dict("'<f4'", "False", "(2, 2)"), &four)),
            "unsupported dtype '<f4': expected float64 ('<f8')"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("'<i8'", "False", "(2, 2)"), &four)),
            "unsupported dtype '<i8': expected float64 ('<f8')"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("[('a', '<f8')]", "False", "(4,)"), &four)),
            "unsupported dtype [('a', '<f8')]: expected float64 ('<f8')"
        );
        assert_eq!(
            npy_err(&npy_bytes(&dict("'<f8'", "True", "(2, 2)"), &four)),
            "fortran-order array (shape (2, 2)) is not supported; save it with np.ascontiguousarray"
        );
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
}
