//! SVG charts with plotters: horizontal bars (the seed's chart) and speedup lines.

use crate::error::AppError;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use std::path::Path;

fn draw_err(path: &Path, e: impl std::fmt::Display) -> AppError {
    AppError::failed(format!("could not draw {}: {e}", path.display()))
}

/// One horizontal bar per `(label, value)`, top to bottom, with its value written at its
/// end, and a dashed vertical line at `reference` (the seed's chart: serial).
pub fn bars(
    path: &Path,
    title: &str,
    x_desc: &str,
    bars: &[(String, f64)],
    reference: Option<f64>,
) -> Result<(), AppError> {
    let n = bars.len();
    let max = bars
        .iter()
        .map(|b| b.1)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let height = 140 + 34 * n as u32;
    let root = SVGBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(10)
        .build_cartesian_2d(0.0..max * 1.45, (0..n.saturating_sub(1)).into_segmented())
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .disable_y_axis()
        .y_labels(1)
        .y_label_formatter(&|_| String::new())
        .x_desc(x_desc)
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    let color = RGBColor(46, 139, 87);
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let slot = n - 1 - i;
            let mut r = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(slot)),
                    (*v, SegmentValue::Exact(slot + 1)),
                ],
                color.mix(0.45).filled(),
            );
            r.set_margin(6, 6, 0, 0);
            r
        }))
        .map_err(|e| draw_err(path, e))?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!("{}: {}", bars[i].0, significant(*v)),
                (*v + max * 0.01, SegmentValue::CenterOf(n - 1 - i)),
                ("sans-serif", 14),
            )
        }))
        .map_err(|e| draw_err(path, e))?;
    if let Some(r) = reference {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(r, SegmentValue::Exact(0)), (r, SegmentValue::Last)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| draw_err(path, e))?;
    }
    root.present().map_err(|e| draw_err(path, e))
}

/// Speedup (y) against job size in µs (x, log scale), one line per series, with dashed
/// lines at 1 (break-even).
pub fn speedup_lines(
    path: &Path,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), AppError> {
    let xs = series.iter().flat_map(|s| s.1.iter().map(|p| p.0));
    let (xmin, xmax) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (xmin, xmax) = if xmin <= xmax {
        (xmin / 2.0, xmax * 2.0)
    } else {
        (0.5, 2.0)
    };
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max)
        * 1.3;
    let ymin = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .filter(|y| *y > 0.0)
        .fold(0.5_f64, f64::min)
        / 1.5;
    let root = SVGBackend::new(path, (960, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((xmin..xmax).log_scale(), (ymin..ymax).log_scale())
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("job size (µs of busy work, log scale)")
        .y_desc("speedup against serial (log scale)")
        .axis_desc_style(("sans-serif", 15))
        .x_label_formatter(&|x| significant(*x).to_string())
        .y_label_formatter(&|y| significant(*y).to_string())
        .draw()
        .map_err(|e| draw_err(path, e))?;
    chart
        .draw_series(DashedLineSeries::new(
            vec![(xmin, 1.0), (xmax, 1.0)],
            6,
            4,
            BLACK.stroke_width(1),
        ))
        .map_err(|e| draw_err(path, e))?
        .label("break-even (speedup 1)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| draw_err(path, e))?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| draw_err(path, e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| draw_err(path, e))?;
    root.present().map_err(|e| draw_err(path, e))
}

/// A number with three significant digits, without trailing noise.
fn significant(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(2 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}
