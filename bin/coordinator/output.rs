//! Printing a sweep's report: an aligned table, one JSON object, or CSV rows.

use crate::cli::Format;
use crate::run::{Report, SourceReport};
use std::io::{self, Write};

/// Writes `report` in `format`.
pub fn write_report(out: &mut impl Write, report: &Report, format: Format) -> io::Result<()> {
    match format {
        Format::Table => write_table(out, report),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, report).map_err(json_io)?;
            writeln!(out)
        }
        Format::Csv => write_csv(out, report),
    }
}

/// A JSON error as the I/O error it wraps (keeping `BrokenPipe` recognisable).
pub fn json_io(e: serde_json::Error) -> io::Error {
    match e.io_error_kind() {
        Some(kind) => io::Error::new(kind, e),
        None => io::Error::other(e),
    }
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_table(out: &mut impl Write, r: &Report) -> io::Result<()> {
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
    writeln!(
        out,
        "pool:    {} backend, {} workers (pids {pids}), chunksize {chunk}",
        r.backend, r.workers
    )?;
    writeln!(out)?;
    let h_width = r
        .results
        .iter()
        .map(|row| row.h.to_string().len())
        .max()
        .unwrap_or(1)
        .max(1);
    let has_truth = r.true_density.is_some();
    write!(
        out,
        "{:>5}  {:>h_width$}  {:>10}  {:<22}",
        "pos", "h", "k", "p(x)"
    )?;
    if has_truth {
        write!(out, "  |p(x) - p_true|")?;
    }
    writeln!(out)?;
    for row in &r.results {
        match (row.count, row.density, &row.error) {
            (Some(k), Some(d), _) => {
                write!(
                    out,
                    "{:>5}  {:>h_width$}  {:>10}  {:<22}",
                    row.pos, row.h, k, d
                )?;
                if let Some(t) = r.true_density {
                    write!(out, "  {}", (d - t).abs())?;
                }
                writeln!(out)?;
            }
            (_, _, error) => writeln!(
                out,
                "{:>5}  {:>h_width$}  FAILED: {}",
                row.pos,
                row.h,
                error
                    .as_deref()
                    .unwrap_or("no result")
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" | ")
            )?,
        }
    }
    writeln!(out)?;
    match (r.true_density, &r.best) {
        (Some(t), Some(b)) => {
            writeln!(out, "true density p(x) = {t}")?;
            writeln!(
                out,
                "closest estimate: h = {} (pos {}), p(x) = {}, off by {}",
                b.h,
                b.pos,
                b.density,
                (b.density - t).abs()
            )?;
        }
        (Some(t), None) => writeln!(out, "true density p(x) = {t}; no estimate succeeded")?,
        (None, _) => writeln!(
            out,
            "true density unknown (samples from a file): no closest width"
        )?,
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
    writeln!(
        out,
        "{} widths in {:.1} ms (workers ready after {:.1} ms)",
        r.results.len(),
        r.elapsed_s * 1e3,
        r.ready_s * 1e3
    )
}

fn write_csv(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(out, "pos,h,count,density,abs_error")?;
    for row in &r.results {
        let count = row.count.map(|c| c.to_string()).unwrap_or_default();
        let density = row.density.map(|d| d.to_string()).unwrap_or_default();
        let err = match (row.density, r.true_density) {
            (Some(d), Some(t)) => (d - t).abs().to_string(),
            _ => String::new(),
        };
        writeln!(out, "{},{},{count},{density},{err}", row.pos, row.h)?;
    }
    Ok(())
}
