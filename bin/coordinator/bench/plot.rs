//! SVG charts with plotters: horizontal bars (the seed's chart: one colour per backend,
//! min-max whiskers, values in readable units) and speedup lines; every chart names the
//! machine and the date under its title.

use crate::error::AppError;
use crate::output::sig_trim;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

fn draw_err(path: &Path, e: impl std::fmt::Display) -> AppError {
    AppError::failed(format!("could not draw {}: {e}", path.display()))
}

/// One bar of a bar chart: a configuration's median, with its fastest and slowest runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// What the bar is ("process x2").
    pub label: String,
    /// Its backend: one colour per backend, named in the legend.
    pub backend: String,
    /// The median.
    pub median: f64,
    /// The smallest of the timed runs (the whisker's left end).
    pub min: f64,
    /// The largest (the whisker's right end).
    pub max: f64,
}

/// What the bars measure, which decides the axis unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// Seconds, drawn in µs, ms or s.
    Time,
    /// Jobs per second, drawn in jobs/s, k jobs/s or M jobs/s.
    Rate,
}

/// The factor and unit to draw values up to `top` in: times in µs, ms or s, rates in
/// jobs/s, k jobs/s or M jobs/s, so that axis numbers stay short.
pub fn unit(measure: Measure, top: f64) -> (f64, &'static str) {
    match measure {
        Measure::Time if top >= 1.0 => (1.0, "s"),
        Measure::Time if top >= 1e-3 => (1e3, "ms"),
        Measure::Time => (1e6, "µs"),
        Measure::Rate if top >= 1e6 => (1e-6, "M jobs/s"),
        Measure::Rate if top >= 1e3 => (1e-3, "k jobs/s"),
        Measure::Rate => (1.0, "jobs/s"),
    }
}

/// The colour of a backend, the same in every chart.
pub fn backend_color(backend: &str) -> RGBColor {
    match backend {
        "serial" => RGBColor(127, 127, 127),
        "thread" => RGBColor(31, 119, 180),
        "process" => RGBColor(255, 127, 14),
        "mpi" => RGBColor(148, 103, 189),
        _ => RGBColor(44, 160, 44),
    }
}

/// Height of the title, subtitle and legend above a chart.
const TITLE_HEIGHT: u32 = 96;

/// What a legend entry looks like.
enum Key {
    /// A filled square of a backend's colour.
    Fill(RGBColor),
    /// A whisker with end caps and the median's circle.
    Whisker,
    /// A dashed line.
    Dashed,
}

/// A one-row legend under the subtitle, where it can never cover a bar.
fn legend_row(
    top: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    entries: &[(Key, String)],
    path: &Path,
) -> Result<(), AppError> {
    let y = 76;
    let mut x = 20;
    let font = ("sans-serif", 14).into_font();
    for (key, name) in entries {
        let style = BLACK.stroke_width(1);
        let drawn = match key {
            Key::Fill(c) => top.draw(&Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled())),
            Key::Whisker => top
                .draw(&PathElement::new(vec![(x, y), (x + 24, y)], style))
                .and_then(|()| top.draw(&PathElement::new(vec![(x, y - 5), (x, y + 5)], style)))
                .and_then(|()| {
                    top.draw(&PathElement::new(
                        vec![(x + 24, y - 5), (x + 24, y + 5)],
                        style,
                    ))
                })
                .and_then(|()| top.draw(&Circle::new((x + 12, y), 4, style))),
            Key::Dashed => top
                .draw(&PathElement::new(vec![(x, y), (x + 8, y)], style))
                .and_then(|()| top.draw(&PathElement::new(vec![(x + 14, y), (x + 24, y)], style))),
        };
        drawn.map_err(|e| draw_err(path, e))?;
        let text_x = x + if matches!(key, Key::Fill(_)) { 20 } else { 30 };
        let centred = TextStyle::from(font.clone()).pos(Pos::new(HPos::Left, VPos::Center));
        top.draw(&Text::new(name.clone(), (text_x, y), centred))
            .map_err(|e| draw_err(path, e))?;
        let width = top
            .estimate_text_size(name, &TextStyle::from(font.clone()))
            .map_or(8 * name.len() as u32, |(w, _)| w);
        x = text_x + width as i32 + 22;
    }
    Ok(())
}

/// Draws the title in large type and `subtitle` (the machine, the date) under it in grey,
/// and returns the area below for the chart.
fn titled<'b>(
    root: &DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    title: &str,
    subtitle: &str,
    path: &Path,
) -> Result<DrawingArea<SVGBackend<'b>, plotters::coord::Shift>, AppError> {
    root.fill(&WHITE).map_err(|e| draw_err(path, e))?;
    let (top, body) = root.split_vertically(TITLE_HEIGHT);
    top.draw(&Text::new(title.to_owned(), (20, 14), ("sans-serif", 22)))
        .map_err(|e| draw_err(path, e))?;
    top.draw(&Text::new(
        subtitle.to_owned(),
        (20, 44),
        ("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)),
    ))
    .map_err(|e| draw_err(path, e))?;
    Ok(body)
}

/// The header's area: the top of `root`, for [`legend_row`].
fn header<'b>(
    root: &DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
) -> DrawingArea<SVGBackend<'b>, plotters::coord::Shift> {
    root.split_vertically(TITLE_HEIGHT).0
}

/// One horizontal bar per [`Bar`], top to bottom, coloured by backend (with a legend),
/// its min-max drawn as a whisker and its median written beside it; `what` names the
/// quantity on the x axis (its unit is added); a dashed line marks `reference`.
pub fn bars(
    path: &Path,
    title: &str,
    subtitle: &str,
    what: &str,
    measure: Measure,
    bars: &[Bar],
    reference: Option<(&str, f64)>,
) -> Result<(), AppError> {
    let n = bars.len().max(1);
    let top = bars
        .iter()
        .map(|b| b.max.max(b.median))
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let (k, unit) = unit(measure, top);
    let height = 160 + TITLE_HEIGHT + 38 * n as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    let body = titled(&root, title, subtitle, path)?;
    let label_of = |slot: usize| -> String {
        n.checked_sub(slot + 1)
            .and_then(|i| bars.get(i))
            .map_or_else(String::new, |b| b.label.clone())
    };
    let mut chart = ChartBuilder::on(&body)
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(190)
        .build_cartesian_2d(0.0..top * k * 1.18, (0..n - 1).into_segmented())
        .map_err(|e| draw_err(path, e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n + 1)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => label_of(*i),
            _ => String::new(),
        })
        .light_line_style(WHITE)
        .x_labels(8)
        .x_label_formatter(&|x| sig_trim(*x, 3))
        .x_desc(format!("{what} ({unit})"))
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| draw_err(path, e))?;
    // One series per backend, in order of appearance, so the legend has one entry each.
    let mut backends: Vec<&str> = Vec::new();
    for b in bars {
        if !backends.contains(&b.backend.as_str()) {
            backends.push(&b.backend);
        }
    }
    let mut legend: Vec<(Key, String)> = backends
        .iter()
        .map(|b| (Key::Fill(backend_color(b)), (*b).to_owned()))
        .collect();
    legend.push((Key::Whisker, "fastest to slowest run, o median".into()));
    for backend in backends {
        let color = backend_color(backend);
        chart
            .draw_series(
                bars.iter()
                    .enumerate()
                    .filter(|(_, b)| b.backend == backend)
                    .map(|(i, b)| {
                        let slot = n - 1 - i;
                        let mut r = Rectangle::new(
                            [
                                (0.0, SegmentValue::Exact(slot)),
                                (b.median * k, SegmentValue::Exact(slot + 1)),
                            ],
                            color.mix(0.75).filled(),
                        );
                        r.set_margin(7, 7, 0, 0);
                        r
                    }),
            )
            .map_err(|e| draw_err(path, e))?;
    }
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            ErrorBar::new_horizontal(
                SegmentValue::CenterOf(n - 1 - i),
                b.min * k,
                b.median * k,
                b.max * k,
                BLACK.stroke_width(1),
                10,
            )
        }))
        .map_err(|e| draw_err(path, e))?;
    let value_style = ("sans-serif", 14)
        .into_font()
        .into_text_style(&body)
        .pos(Pos::new(HPos::Left, VPos::Center));
    chart
        .draw_series(bars.iter().enumerate().map(|(i, b)| {
            Text::new(
                format!("{} {unit}", sig_trim(b.median * k, 3)),
                (
                    b.max.max(b.median) * k + top * k * 0.015,
                    SegmentValue::CenterOf(n - 1 - i),
                ),
                value_style.clone(),
            )
        }))
        .map_err(|e| draw_err(path, e))?;
    if let Some((name, r)) = reference {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(r * k, SegmentValue::Exact(0)), (r * k, SegmentValue::Last)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(|e| draw_err(path, e))?;
        legend.push((Key::Dashed, name.to_owned()));
    }
    legend_row(&header(&root), &legend, path)?;
    root.present().map_err(|e| draw_err(path, e))
}

/// Speedup (y) against job size in µs (x, log scale), one line per series, with dashed
/// lines at 1 (break-even).
pub fn speedup_lines(
    path: &Path,
    title: &str,
    subtitle: &str,
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
    let root = SVGBackend::new(path, (1000, 680)).into_drawing_area();
    let body = titled(&root, title, subtitle, path)?;
    let mut chart = ChartBuilder::on(&body)
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
        .x_label_formatter(&|x| sig_trim(*x, 3))
        .y_label_formatter(&|y| sig_trim(*y, 3))
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
    for (name, pts) in series {
        let backend = name.split_whitespace().next().unwrap_or_default();
        let color = backend_color(backend);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_keep_axis_numbers_short() {
        assert_eq!(unit(Measure::Time, 0.00016), (1e6, "µs"));
        assert_eq!(unit(Measure::Time, 0.003), (1e3, "ms"));
        assert_eq!(unit(Measure::Time, 0.0000400), (1e6, "µs"));
        assert_eq!(unit(Measure::Time, 2.5), (1.0, "s"));
        assert_eq!(unit(Measure::Rate, 2.2e6), (1e-6, "M jobs/s"));
        assert_eq!(unit(Measure::Rate, 45_000.0), (1e-3, "k jobs/s"));
    }

    #[test]
    fn each_backend_has_its_own_colour() {
        let names = ["serial", "thread", "process", "mpi"];
        for a in names {
            for b in names {
                assert_eq!(a == b, backend_color(a) == backend_color(b), "{a} {b}");
            }
        }
    }
}
