//! `--timeline FILE.svg`: one lane per worker slot, each job a bar from dispatch to result
//! (its compute, as the worker reported it, drawn darker at the end), each worker's spawn
//! and handshake marked — the picture that shows idle workers, stragglers and IPC gaps.

use crate::error::AppError;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use procpool::Timeline;
use std::path::Path;

fn err(path: &Path, e: impl std::fmt::Display) -> AppError {
    AppError::failed(format!("could not draw {}: {e}", path.display()))
}

/// A recorded timeline and its chart title, to be drawn once the report is out.
#[derive(Debug, Clone)]
pub struct Drawing {
    /// What the pool recorded.
    pub timeline: Timeline,
    /// The chart's title.
    pub title: String,
}

impl Drawing {
    /// Draws it as an SVG at `path`.
    pub fn draw(&self, path: &Path) -> Result<(), AppError> {
        draw(&self.timeline, &self.title, path)
    }
}

/// Draws `t` as an SVG at `path`.
pub fn draw(t: &Timeline, title: &str, path: &Path) -> Result<(), AppError> {
    let lanes = t.workers.iter().map(|w| w.worker + 1).max().unwrap_or(1);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let end = t
        .jobs
        .iter()
        .map(|j| ms(j.done))
        .chain(
            t.workers
                .iter()
                .filter_map(|w| w.exited.or(w.ready).map(ms)),
        )
        .fold(0.0_f64, f64::max)
        .max(0.001);
    // Two spare lanes on top hold the legend.
    let root = SVGBackend::new(path, (1200, 280 + 60 * lanes as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(150)
        .build_cartesian_2d(0.0..end * 1.02, (0..lanes + 1).into_segmented())
        .map_err(|e| err(path, e))?;
    let pid_of = |lane: usize| -> String {
        let pids: Vec<String> = t
            .workers
            .iter()
            .filter(|w| w.worker == lane)
            .map(|w| w.pid.to_string())
            .collect();
        pids.join(", ")
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(lanes + 2)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if *i < lanes => {
                format!("worker {i} (pid {})", pid_of(*i))
            }
            _ => String::new(),
        })
        .x_desc("milliseconds since the pool started")
        .draw()
        .map_err(|e| err(path, e))?;
    let job_color = RGBColor(100, 149, 237);
    let compute_color = RGBColor(25, 25, 112);
    let start_color = RGBColor(255, 140, 0);
    // Spawn to ready: the handshake (and context transfer).
    chart
        .draw_series(t.workers.iter().filter_map(|w| {
            let ready = w.ready?;
            let mut r = Rectangle::new(
                [
                    (ms(w.spawned), SegmentValue::Exact(w.worker)),
                    (
                        ms(ready).max(ms(w.spawned) + end * 0.002),
                        SegmentValue::Exact(w.worker + 1),
                    ),
                ],
                start_color.mix(0.8).filled(),
            );
            r.set_margin(4, 4, 0, 0);
            Some(r)
        }))
        .map_err(|e| err(path, e))?
        .label("spawn to ready (handshake, context)")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], start_color.filled()));
    // Intervals closer than a pixel are merged, so a timeline of a million jobs is still
    // a small SVG (and looks the same).
    let eps = end / 2400.0;
    let sent: Vec<(usize, f64, f64)> = merge(
        t.jobs.iter().map(|j| (j.worker, ms(j.sent), ms(j.done))),
        eps,
    );
    let compute: Vec<(usize, f64, f64)> = merge(
        t.jobs.iter().map(|j| {
            let hi = ms(j.done);
            (j.worker, (hi - ms(j.compute)).max(ms(j.sent)), hi)
        }),
        eps,
    );
    chart
        .draw_series(sent.iter().map(|&(lane, lo, hi)| {
            let mut r = Rectangle::new(
                [
                    (lo, SegmentValue::Exact(lane)),
                    (hi.max(lo + eps), SegmentValue::Exact(lane + 1)),
                ],
                job_color.mix(0.35).filled(),
            );
            r.set_margin(12, 12, 0, 0);
            r
        }))
        .map_err(|e| err(path, e))?
        .label("jobs: dispatched to result received")
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 20, y + 5)], job_color.mix(0.35).filled())
        });
    chart
        .draw_series(compute.iter().map(|&(lane, lo, hi)| {
            let mut r = Rectangle::new(
                [
                    (lo, SegmentValue::Exact(lane)),
                    (hi.max(lo + eps / 4.0), SegmentValue::Exact(lane + 1)),
                ],
                compute_color.mix(0.7).filled(),
            );
            r.set_margin(16, 16, 0, 0);
            r
        }))
        .map_err(|e| err(path, e))?
        .label("compute (as reported by the worker)")
        .legend(move |(x, y)| {
            Rectangle::new([(x, y - 5), (x + 20, y + 5)], compute_color.filled())
        });
    chart
        .draw_series(t.workers.iter().filter_map(|w| {
            let exited = ms(w.exited?);
            Some(PathElement::new(
                vec![
                    (exited, SegmentValue::Exact(w.worker)),
                    (exited, SegmentValue::Exact(w.worker + 1)),
                ],
                RED.stroke_width(2),
            ))
        }))
        .map_err(|e| err(path, e))?
        .label("worker exit")
        .legend(|(x, y)| {
            PathElement::new(vec![(x + 10, y - 6), (x + 10, y + 6)], RED.stroke_width(2))
        });
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// Unions `(lane, lo, hi)` intervals per lane, joining those less than `eps` apart.
fn merge(spans: impl Iterator<Item = (usize, f64, f64)>, eps: f64) -> Vec<(usize, f64, f64)> {
    let mut v: Vec<(usize, f64, f64)> = spans.collect();
    v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut out: Vec<(usize, f64, f64)> = Vec::new();
    for (lane, lo, hi) in v {
        match out.last_mut() {
            Some(last) if last.0 == lane && lo <= last.2 + eps => last.2 = last.2.max(hi),
            _ => out.push((lane, lo, hi)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::merge;

    #[test]
    fn merges_close_intervals_per_lane_only() {
        let got = merge(
            [(0, 0.0, 1.0), (0, 1.05, 2.0), (0, 5.0, 6.0), (1, 0.5, 0.6)].into_iter(),
            0.1,
        );
        assert_eq!(got, vec![(0, 0.0, 2.0), (0, 5.0, 6.0), (1, 0.5, 0.6)]);
    }
}
