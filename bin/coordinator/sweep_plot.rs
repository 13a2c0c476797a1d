//! `--plot FILE.svg` on the sweep: the estimate p(x; h) against h (left axis) and, when
//! cross-validation ran, LSCV(h) (right axis), with the true density as a dashed line
//! when it is known and a vertical line at each rule's choice — the picture of choosing a
//! width with and without the truth. Values that are not finite are left out.

use crate::error::AppError;
use crate::output::sig_trim;
use crate::run::Report;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

fn draw_err(path: &Path, e: impl std::fmt::Display) -> AppError {
    AppError::failed(format!("could not draw {}: {e}", path.display()))
}

/// Colour of the density curve.
const DENSITY: RGBColor = RGBColor(31, 119, 180);
/// Colour of the LSCV curve and its choice.
const LSCV: RGBColor = RGBColor(214, 39, 40);
/// Colour of the true density and the width closest to it.
const TRUTH: RGBColor = RGBColor(44, 160, 44);

/// `lo..hi` widened by 6% on each side (or around a single value).
fn padded(lo: f64, hi: f64) -> Range<f64> {
    let span = if hi > lo {
        hi - lo
    } else {
        lo.abs().max(1e-12)
    };
    (lo - 0.06 * span)..(hi + 0.06 * span)
}

/// The LSCV axis: from the smallest score to the largest, except that a few very large
/// scores (tiny widths, where the score shoots up) would flatten the minimum into a line;
/// then the axis stops at 4 times the median's distance from the minimum, and the scores
/// above it are left out (the legend says how many).
fn lscv_range(points: &[(f64, f64)]) -> (f64, f64) {
    let mut scores: Vec<f64> = points.iter().map(|p| p.1).collect();
    scores.sort_by(f64::total_cmp);
    let (Some(&lo), Some(&hi)) = (scores.first(), scores.last()) else {
        return (0.0, 1.0);
    };
    let spread = scores[scores.len() / 2] - lo;
    if spread > 0.0 && hi - lo > 10.0 * spread {
        (lo, lo + 4.0 * spread)
    } else {
        (lo, hi)
    }
}

/// Draws the sweep's curves as an SVG at `path`.
pub fn draw(path: &Path, r: &Report) -> Result<(), AppError> {
    let density: Vec<(f64, f64)> = r
        .results
        .iter()
        .filter_map(|row| row.density.filter(|d| d.is_finite()).map(|d| (row.h, d)))
        .collect();
    let lscv: Vec<(f64, f64)> = r
        .results
        .iter()
        .filter_map(|row| match row.lscv {
            Some(Some(v)) if v.is_finite() => Some((row.h, v)),
            _ => None,
        })
        .collect();
    let hs = density.iter().chain(&lscv).map(|p| p.0);
    let (hmin, hmax) = hs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), h| {
        (a.min(h), b.max(h))
    });
    if !(hmin.is_finite() && hmax.is_finite()) {
        return Err(AppError::failed(format!(
            "could not draw {}: no width has a finite value to plot",
            path.display()
        )));
    }
    let x = padded(hmin, hmax);
    let dmax = density
        .iter()
        .map(|p| p.1)
        .chain(r.true_density)
        .fold(0.0_f64, f64::max);
    // Room at the top for the legend.
    let y = 0.0..dmax.max(f64::MIN_POSITIVE) * 1.4;
    let (lmin, lmax) = lscv_range(&lscv);
    let source = match &r.source {
        crate::run::SourceReport::Gaussian { seed, .. } => format!("N(mean, cov), seed {seed}"),
        crate::run::SourceReport::File { path } => path.clone(),
    };
    let point = r
        .point
        .iter()
        .map(|v| sig_trim(*v, 4))
        .collect::<Vec<_>>()
        .join(", ");
    let title = if lscv.is_empty() {
        "Choosing the window width: p(x; h) against h".to_owned()
    } else {
        "Choosing the window width: p(x; h) and LSCV(h) against h".to_owned()
    };
    let subtitle = format!(
        "n = {} samples of {} dims from {source}; x = ({point}); {} widths",
        r.samples,
        r.dims,
        r.results.len()
    );
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let (top, body) = root.split_vertically(70);
    top.draw(&Text::new(title, (20, 12), ("sans-serif", 22)))
        .map_err(|e| draw_err(path, e))?;
    top.draw(&Text::new(
        subtitle,
        (20, 42),
        ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
    ))
    .map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&body)
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .right_y_label_area_size(if lscv.is_empty() { 10 } else { 90 })
        .build_cartesian_2d(x.clone(), y.clone())
        .map_err(|e| draw_err(path, e))?
        .set_secondary_coord(
            x.clone(),
            if lscv.is_empty() {
                0.0..1.0
            } else {
                padded(lmin, lmax)
            },
        );
    chart
        .configure_mesh()
        .x_desc("window width h")
        .y_desc("density estimate p(x; h)")
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .x_label_formatter(&|v| sig_trim(*v, 3))
        .y_label_formatter(&|v| sig_trim(*v, 3))
        .light_line_style(WHITE)
        .draw()
        .map_err(|e| draw_err(path, e))?;
    if !lscv.is_empty() {
        chart
            .configure_secondary_axes()
            .y_desc("LSCV(h) (smaller is better)")
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .y_label_formatter(&|v| sig_trim(*v, 3))
            .draw()
            .map_err(|e| draw_err(path, e))?;
    }
    chart
        .draw_series(LineSeries::new(
            density.iter().copied(),
            DENSITY.stroke_width(2),
        ))
        .map_err(|e| draw_err(path, e))?
        .label("p(x; h), the estimate at x")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], DENSITY.stroke_width(2)));
    if density.len() <= 60 {
        chart
            .draw_series(density.iter().map(|&p| Circle::new(p, 3, DENSITY.filled())))
            .map_err(|e| draw_err(path, e))?;
    }
    if let Some(t) = r.true_density {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(x.start, t), (x.end, t)],
                6,
                4,
                TRUTH.stroke_width(1),
            ))
            .map_err(|e| draw_err(path, e))?
            .label(format!("true density {}", sig_trim(t, 6)))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], TRUTH));
    }
    if !lscv.is_empty() {
        let shown: Vec<(f64, f64)> = lscv.iter().copied().filter(|p| p.1 <= lmax).collect();
        let off = lscv.len() - shown.len();
        let label = if off == 0 {
            "LSCV(h), from the data alone (right axis)".to_owned()
        } else {
            format!("LSCV(h), from the data alone (right axis; {off} above it, left out)")
        };
        let lscv = shown;
        chart
            .draw_secondary_series(LineSeries::new(lscv.iter().copied(), LSCV.stroke_width(2)))
            .map_err(|e| draw_err(path, e))?
            .label(label)
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], LSCV.stroke_width(2)));
        if lscv.len() <= 60 {
            chart
                .draw_secondary_series(lscv.iter().map(|&p| Circle::new(p, 3, LSCV.filled())))
                .map_err(|e| draw_err(path, e))?;
        }
    }
    // The choices: the smallest LSCV score, and the estimate closest to the truth.
    let lscv_choice = r.selected.filter(|s| s.method == "lscv").map(|s| s.h);
    let marks = [
        (lscv_choice, LSCV, "chosen by LSCV"),
        (r.best.map(|b| b.h), TRUTH, "closest to the true density"),
    ];
    for (h, color, what) in marks {
        let Some(h) = h else { continue };
        chart
            .draw_series(DashedLineSeries::new(
                vec![(h, y.start), (h, y.end)],
                4,
                3,
                color.stroke_width(2),
            ))
            .map_err(|e| draw_err(path, e))?
            .label(format!("{what}: h = {}", sig_trim(h, 6)))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y - 6), (x, y + 6)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(160, 160, 160))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))
}
