//! Everything the binary prints or writes: the sweep's report (table, JSON, CSV), the
//! versioned JSON documents and the error document, CSV writing, readable numbers for
//! tables, and the check that an output file can be written before any work starts.

use crate::cli::Format;
use crate::error::AppError;
use crate::run::{Report, SourceReport, Status};
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// `"schema"` of the sweep's JSON report.
pub const SWEEP_SCHEMA: &str = "coordinator.sweep/2";
/// `"schema"` of `coordinator sysinfo --format json`.
pub const SYSINFO_SCHEMA: &str = "coordinator.sysinfo/1";
/// `"schema"` of the document printed under `--format json` when a run fails before any
/// result.
pub const ERROR_SCHEMA: &str = "coordinator.error/1";

/// `"schema"` of a bench suite's JSON report: `coordinator.bench.<suite>/1`.
pub fn bench_schema(suite: &str) -> String {
    format!("coordinator.bench.{suite}/1")
}

/// `"schema"` of a demo's JSON report: `coordinator.demo.<name>/1`.
pub fn demo_schema(name: &str) -> String {
    format!("coordinator.demo.{name}/1")
}

/// Significant digits of estimates and errors in tables (JSON and CSV keep every digit).
pub const TABLE_DIGITS: usize = 6;

/// Stdout that remembers whether anything was written, so a failure knows whether a
/// JSON document is still owed.
pub struct Tracked<W> {
    inner: W,
    written: bool,
}

impl<W: Write> Tracked<W> {
    /// Wraps `inner`; nothing written yet.
    pub fn new(inner: W) -> Self {
        Tracked {
            inner,
            written: false,
        }
    }

    /// Whether any byte went out.
    pub fn written(&self) -> bool {
        self.written
    }
}

impl<W: Write> Write for Tracked<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written |= n > 0;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `report` in `format`.
pub fn write_report(out: &mut dyn Write, report: &Report, format: Format) -> io::Result<()> {
    match format {
        Format::Table => write_table(out, report),
        Format::Json => write_json(out, report),
        Format::Csv => write_sweep_csv(out, report),
    }
}

/// Writes `value` as one pretty JSON document and a newline.
pub fn write_json(out: &mut dyn Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(json_io)?;
    writeln!(out)
}

/// The document `--format json` prints when a run fails before any result.
#[derive(Debug, Serialize)]
struct ErrorDoc<'a> {
    schema: &'static str,
    /// What failed, as on stderr.
    error: String,
    /// usage, failed or interrupted.
    kind: &'a str,
    /// The exit code the process ends with.
    exit_code: u8,
}

/// Writes `e` as a `coordinator.error/1` document.
pub fn write_error(out: &mut dyn Write, e: &AppError) -> io::Result<()> {
    write_json(
        out,
        &ErrorDoc {
            schema: ERROR_SCHEMA,
            error: e.to_string(),
            kind: e.kind_name(),
            exit_code: e.exit_code(),
        },
    )?;
    out.flush()
}

/// A JSON error as the I/O error it wraps (keeping `BrokenPipe` recognisable).
pub fn json_io(e: serde_json::Error) -> io::Error {
    match e.io_error_kind() {
        Some(kind) => io::Error::new(kind, e),
        None => io::Error::other(e),
    }
}

/// A CSV error as the I/O error it wraps (keeping `BrokenPipe` recognisable).
pub fn csv_io(e: csv::Error) -> io::Error {
    let msg = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        _ => io::Error::other(msg),
    }
}

/// Writes a header-first CSV: `header`, then each row, quoted where needed (RFC 4180).
pub fn write_csv<R, I>(out: &mut dyn Write, header: &[&str], rows: R) -> io::Result<()>
where
    R: IntoIterator<Item = I>,
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut w = csv::Writer::from_writer(out);
    w.write_record(header).map_err(csv_io)?;
    for row in rows {
        w.write_record(row).map_err(csv_io)?;
    }
    w.flush()
}

/// A CSV cell of an optional number: empty when absent, every digit otherwise.
pub fn cell<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(String::new, |x| x.to_string())
}

/// `x` in full (it reads back bit for bit), in scientific notation when plain decimals
/// would be long: `0.5`, `1e-200`, `2.5e20`.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a != 0.0 && a.is_finite() && !(1e-5..1e16).contains(&a) {
        format!("{x:e}")
    } else {
        x.to_string()
    }
}

/// `x` to `digits` significant digits, trailing zeros kept so that columns align
/// (`0.130000`, `0.00602994`), in scientific notation outside 1e-5 ..= 1e`digits`.
pub fn sig(x: f64, digits: usize) -> String {
    let digits = digits.max(1);
    if x == 0.0 {
        return format!("{:.*}", digits - 1, 0.0);
    }
    if !x.is_finite() {
        return x.to_string();
    }
    // The exponent after rounding (9.9999996 rounds to 1.00000e1).
    let e = format!("{:.*e}", digits - 1, x);
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-5..digits as i32).contains(&exp) {
        let decimals = (digits as i32 - 1 - exp).max(0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{mantissa}e{exp}")
    }
}

/// Like [`sig`], without trailing zeros: for labels such as a width (`0.1`, `1.00202`).
pub fn sig_trim(x: f64, digits: usize) -> String {
    let s = sig(x, digits);
    match s.split_once('e') {
        Some((m, e)) => format!("{}e{e}", trim_zeros(m)),
        None => trim_zeros(&s).to_owned(),
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Checks, before any work starts, that `path` (given to `flag`) ends in `.ext` and can be
/// written: an existing file is opened for appending (not truncated), a new one is created
/// and removed again. Bad input: exit code 2, naming the flag and the path.
pub fn check_output_path(flag: &str, path: &Path, ext: &str) -> Result<(), AppError> {
    let bad = |why: String| AppError::usage(format!("{flag} {}: {why}", path.display()));
    if path.extension().and_then(|e| e.to_str()) != Some(ext) {
        return Err(bad(format!("must end in .{ext}")));
    }
    if path.is_dir() {
        return Err(bad("is a directory".into()));
    }
    let cannot = |e: io::Error| bad(format!("cannot be written: {e}"));
    if path.exists() {
        OpenOptions::new().append(true).open(path).map_err(cannot)?;
    } else {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(cannot)?;
        // Only a probe: the real file is written when the results are in.
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// `v` as a comma-separated list, every digit of each number: `0, -1.5`.
pub fn list(v: &[f64]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_table(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    let d = TABLE_DIGITS;
    writeln!(
        out,
        "Parzen-window (hypercube) density estimate at x = ({})",
        list(&r.point)
    )?;
    match &r.source {
        SourceReport::Gaussian { mean, cov, seed } => writeln!(
            out,
            "samples: {} drawn from N(mean = ({}), cov = [{}]), {} dims, seed {seed}",
            r.samples,
            list(mean),
            list(cov),
            r.dims
        )?,
        SourceReport::File { path } => writeln!(
            out,
            "samples: {} rows of {} dims from {path}",
            r.samples, r.dims
        )?,
    }
    let chunk = match r.chunksize_chosen {
        Some(n) if r.chunksize == "auto" => format!("auto (chose {n})"),
        _ => r.chunksize.clone(),
    };
    let pids = r
        .pids
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if r.pids.is_empty() {
        writeln!(
            out,
            "pool:    {} backend, no worker started: every width came from the journal",
            r.backend
        )?;
    } else {
        writeln!(
            out,
            "pool:    {} backend, {} workers (pids {pids}), chunksize {chunk}",
            r.backend, r.workers
        )?;
    }
    writeln!(out)?;
    let hs: Vec<String> = r.results.iter().map(|row| sig_trim(row.h, d)).collect();
    let h_width = hs.iter().map(String::len).max().unwrap_or(1).max(1);
    let has_truth = r.true_density.is_some();
    let has_lscv = r.results.iter().any(|row| row.lscv.is_some());
    write!(
        out,
        "{:>5}  {:>h_width$}  {:>10}  {:>12}",
        "pos", "h", "k", "p(x)"
    )?;
    if has_truth {
        write!(out, "  {:>15}", "|p(x) - p_true|")?;
    }
    if has_lscv {
        write!(out, "  {:>13}", "LSCV(h)")?;
    }
    writeln!(out)?;
    let one_line = |text: &str| text.lines().map(str::trim).collect::<Vec<_>>().join(" | ");
    for (row, h) in r.results.iter().zip(&hs) {
        let Some(k) = row.count.filter(|_| row.status != Status::Failed) else {
            writeln!(
                out,
                "{:>5}  {h:>h_width$}  FAILED: {}",
                row.pos,
                one_line(row.error.as_deref().unwrap_or("no result"))
            )?;
            continue;
        };
        let missing = "-";
        let p = row
            .density
            .map_or_else(|| missing.to_owned(), |p| sig(p, d));
        write!(out, "{:>5}  {h:>h_width$}  {k:>10}  {p:>12}", row.pos)?;
        if let Some(t) = r.true_density {
            let e = row
                .density
                .map_or_else(|| missing.to_owned(), |p| sig((p - t).abs(), d));
            write!(out, "  {e:>15}")?;
        }
        if has_lscv {
            let l = match row.lscv {
                Some(Some(v)) => sig(v, d),
                _ => missing.to_owned(),
            };
            write!(out, "  {l:>13}")?;
        }
        if let Some(note) = &row.note {
            write!(out, "  NOT FINITE: {}", one_line(note))?;
        }
        writeln!(out)?;
    }
    writeln!(out)?;
    // A choice among part of the widths says so.
    let among = if r.failed > 0 {
        format!(
            " (among the {} of {} widths that finished)",
            r.results.len() - r.failed,
            r.results.len()
        )
    } else {
        String::new()
    };
    match (r.true_density, &r.best) {
        (Some(t), Some(b)) => {
            writeln!(out, "true density p(x) = {}", sig(t, d))?;
            writeln!(
                out,
                "closest estimate: h = {} (pos {}), p(x) = {}, off by {}{among}",
                sig_trim(b.h, d),
                b.pos,
                sig(b.density, d),
                sig((b.density - t).abs(), d)
            )?;
        }
        (Some(t), None) => writeln!(
            out,
            "true density p(x) = {}; no estimate succeeded",
            sig(t, d)
        )?,
        (None, _) if r.select == "lscv" => {
            writeln!(out, "true density unknown (samples from a file)")?;
        }
        (None, _) => writeln!(
            out,
            "true density unknown (samples from a file): no closest width"
        )?,
    }
    if r.select == "lscv" {
        match r.selected {
            Some(s) => {
                let row = r.results.iter().find(|row| row.pos == s.pos);
                let score = row.and_then(|row| row.lscv.flatten());
                let density = row.and_then(|row| row.density);
                writeln!(
                    out,
                    "selected by least-squares cross-validation: h = {} (pos {}), LSCV = {}, p(x) = {}{among}",
                    sig_trim(s.h, d),
                    s.pos,
                    score.map_or_else(|| "-".to_owned(), |v| sig(v, d)),
                    density.map_or_else(|| "-".to_owned(), |v| sig(v, d))
                )?;
                if r.results.first().map(|row| row.pos) == Some(s.pos)
                    || r.results.last().map(|row| row.pos) == Some(s.pos)
                {
                    writeln!(
                        out,
                        "(the smallest score is at an end of the widths given: the minimum may lie \
                         beyond them)"
                    )?;
                }
            }
            None => writeln!(
                out,
                "least-squares cross-validation: no width has a finite score"
            )?,
        }
    }
    if let Some(signal) = &r.interrupted {
        writeln!(
            out,
            "interrupted by {signal}: {} of {} widths finished",
            r.results.len() - r.failed,
            r.results.len()
        )?;
    } else if r.failed > 0 {
        writeln!(out, "{} of {} jobs FAILED", r.failed, r.results.len())?;
    }
    if r.not_finite > 0 {
        writeln!(
            out,
            "{} of {} widths NOT FINITE (flagged, never chosen)",
            r.not_finite,
            r.results.len()
        )?;
    }
    if let (true, Some(path)) = (r.journal.resumed, &r.journal.path) {
        writeln!(
            out,
            "{} of {} widths from the journal {}",
            r.journal.recovered,
            r.results.len(),
            path.display()
        )?;
    }
    if r.pids.is_empty() {
        writeln!(
            out,
            "{} widths in {:.1} ms (no worker started)",
            r.results.len(),
            r.elapsed_s * 1e3
        )
    } else {
        writeln!(
            out,
            "{} widths in {:.1} ms (workers ready after {:.1} ms)",
            r.results.len(),
            r.elapsed_s * 1e3,
            r.ready_s * 1e3
        )
    }
}

/// The sweep's CSV header.
pub const SWEEP_CSV_HEADER: [&str; 8] = [
    "pos",
    "h",
    "count",
    "density",
    "abs_error",
    "lscv",
    "status",
    "error",
];

/// [`SWEEP_CSV_HEADER`], then one row per width: `status` is ok, not_finite or failed; a
/// number that is missing (failed, not finite, not computed) is an empty cell; `error`
/// holds why a job failed or which value is not finite.
fn write_sweep_csv(out: &mut dyn Write, r: &Report) -> io::Result<()> {
    write_csv(
        out,
        &SWEEP_CSV_HEADER,
        r.results.iter().map(|row| {
            let err = match (row.density, r.true_density) {
                (Some(d), Some(t)) => Some((d - t).abs()),
                _ => None,
            };
            let status = match row.status {
                Status::Ok => "ok",
                Status::NotFinite => "not_finite",
                Status::Failed => "failed",
            };
            [
                row.pos.to_string(),
                num(row.h),
                cell(row.count),
                row.density.map(num).unwrap_or_default(),
                err.map(num).unwrap_or_default(),
                row.lscv.flatten().map(num).unwrap_or_default(),
                status.to_owned(),
                row.error
                    .clone()
                    .or_else(|| row.note.clone())
                    .unwrap_or_default(),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_digits_round_and_align() {
        assert_eq!(sig(0.12999999999999998, 6), "0.130000");
        assert_eq!(sig(0.15915494309189535, 6), "0.159155");
        assert_eq!(sig(0.006029943091895362, 6), "0.00602994");
        assert_eq!(sig(-0.5, 6), "-0.500000");
        assert_eq!(sig(9.9999996, 6), "10.0000");
        assert_eq!(sig(123456.7, 6), "123457");
        assert_eq!(sig(1234567.0, 6), "1.23457e6");
        assert_eq!(sig(0.0000012345678, 6), "1.23457e-6");
        assert_eq!(sig(0.0, 6), "0.00000");
        assert_eq!(sig(f64::INFINITY, 6), "inf");
        assert_eq!(sig_trim(0.1, 6), "0.1");
        assert_eq!(sig_trim(1.0, 6), "1");
        assert_eq!(sig_trim(1.002020202020202, 6), "1.00202");
        assert_eq!(sig_trim(2.5e-7, 6), "2.5e-7");
        for x in [0.5, 1.0, 1e-200, 2.5e20, -3.25e-9, 0.1452, 123456.0] {
            assert_eq!(num(x).parse::<f64>().unwrap().to_bits(), x.to_bits(), "{x}");
        }
        assert_eq!(num(1e-200), "1e-200");
        assert_eq!(num(0.5), "0.5");
        assert_eq!(num(1.0), "1");
    }

    #[test]
    fn tracked_knows_whether_anything_went_out() {
        let mut t = Tracked::new(Vec::new());
        assert!(!t.written());
        t.write_all(b"").unwrap();
        assert!(!t.written());
        t.write_all(b"x").unwrap();
        assert!(t.written());
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let mut out = Vec::new();
        write_csv(
            &mut out,
            &["a", "b"],
            [["1".to_owned(), "killed, \"badly\"\nline 2".to_owned()]],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,b\n1,\"killed, \"\"badly\"\"\nline 2\"\n"
        );
    }

    #[test]
    fn output_paths_are_checked_without_being_left_behind() {
        let dir = std::env::temp_dir().join(format!("coordinator-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let new = dir.join("new.svg");
        check_output_path("--plot", &new, "svg").unwrap();
        assert!(!new.exists(), "the probe must not stay");
        let e = check_output_path("--plot", &dir.join("x.png"), "svg").unwrap_err();
        assert!(e.to_string().contains("x.png") && e.exit_code() == 2, "{e}");
        let e = check_output_path("--timeline", &dir.join("no/such/t.svg"), "svg").unwrap_err();
        assert!(e.to_string().starts_with("--timeline "), "{e}");
        assert_eq!(e.exit_code(), 2);
        let existing = dir.join("old.svg");
        std::fs::write(&existing, "keep").unwrap();
        check_output_path("--plot", &existing, "svg").unwrap();
        assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
