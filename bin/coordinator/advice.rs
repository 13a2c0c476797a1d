//! Warnings about a sweep that ran but whose densities cannot tell anything: every window
//! around the point is empty (the point or the widths are far off the data's scale, as
//! with `--data` in other units than the default point and widths assume), or every
//! window holds every sample (widths larger than the data). The warning gives the
//! samples' mean and spread and flags on their scale, so the next run is a useful one.
//!
//! Printed on stderr after the report (a warning never costs the result), not under `-q`.
//! The report itself is unchanged: the numbers are what was asked for.

use crate::output::{list, sig_trim};
use crate::run::Report;
use parzen::samples::Samples;

/// Dimensions up to which the point, means and deviations are listed in full.
const LIST_UP_TO: usize = 6;
/// A point further than this many standard deviations from the mean is off the data.
const OFF_BY_SDS: f64 = 3.0;
/// How many widths the suggested `--widths` spans.
const SUGGESTED_COUNT: usize = 40;
/// The suggested widths run from the rule-of-thumb width divided by this to it times this.
const SUGGESTED_RANGE: f64 = 4.0;

/// The warning for `report` over `samples`, if its densities are all degenerate.
pub fn degenerate_sweep(report: &Report, samples: &Samples) -> Option<String> {
    let counts: Vec<u64> = report.results.iter().filter_map(|r| r.count).collect();
    let n = samples.len() as u64;
    if counts.is_empty() || n == 0 {
        return None;
    }
    let at = if report.point.len() <= LIST_UP_TO {
        format!("x = ({})", list(&report.point))
    } else {
        format!("the {}-dimensional point", report.point.len())
    };
    let empty = counts.iter().all(|&k| k == 0);
    let what = if empty {
        format!("no sample lies in any window around {at}: every count is 0, so every p(x) is 0")
    } else if counts.iter().all(|&k| k == n) {
        format!(
            "every window around {at} holds all {n} samples: the widths are larger than the \
             data, so p(x) only shrinks with h"
        )
    } else {
        return None;
    };
    let (mean, sd) = mean_and_sd(samples);
    let mut advice = format!("warning: {what}. {}", describe(&mean, &sd));
    // Empty windows around a point far off the data: move the point; windows that are
    // empty around a point inside the data, or that hold everything: the widths are off.
    let mut flags = Vec::new();
    if empty && off_the_data(&report.point, &mean, &sd) {
        let point: Vec<String> = mean.iter().map(|&m| sig_trim(m, 4)).collect();
        flags.push(format!("--point {}", point.join(",")));
    }
    if let Some(h) = rule_of_thumb(&sd, samples.len()) {
        flags.push(format!(
            "--widths {}:{}:{SUGGESTED_COUNT}",
            sig_trim(h / SUGGESTED_RANGE, 3),
            sig_trim(h * SUGGESTED_RANGE, 3)
        ));
    }
    if !flags.is_empty() {
        advice.push_str(&format!("; on their scale, try {}", flags.join(" ")));
    }
    Some(advice)
}

/// The samples' mean and standard deviation: every value up to [`LIST_UP_TO`]
/// dimensions, their ranges beyond.
fn describe(mean: &[f64], sd: &[f64]) -> String {
    if mean.len() <= LIST_UP_TO {
        return format!(
            "The samples' mean is ({}) and their standard deviation ({})",
            list_sig(mean),
            list_sig(sd)
        );
    }
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{} to {}", sig_trim(lo, 4), sig_trim(hi, 4))
    };
    format!(
        "The samples' means per dimension run from {} and their standard deviations from {}",
        range(mean),
        range(sd)
    )
}

/// Whether `point` lies more than [`OFF_BY_SDS`] standard deviations from the mean in
/// some dimension (any distance at all where the dimension does not vary).
fn off_the_data(point: &[f64], mean: &[f64], sd: &[f64]) -> bool {
    point
        .iter()
        .zip(mean)
        .zip(sd)
        .any(|((p, m), s)| (p - m).abs() > OFF_BY_SDS * s || (*s == 0.0 && p != m))
}

/// Per-dimension mean and (population) standard deviation, in two passes.
fn mean_and_sd(samples: &Samples) -> (Vec<f64>, Vec<f64>) {
    let d = samples.dims();
    let n = samples.len() as f64;
    let mut mean = vec![0.0; d];
    for row in samples.rows() {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x;
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0.0; d];
    for row in samples.rows() {
        for ((v, x), m) in var.iter_mut().zip(row).zip(&mean) {
            *v += (x - m) * (x - m);
        }
    }
    let sd = var.iter().map(|v| (v / n).sqrt()).collect();
    (mean, sd)
}

/// A width on the data's scale: the geometric mean of the dimensions' spreads (those that
/// vary) times `n^(-1/(d+4))`, the rate of a normal-reference rule. A starting point for a
/// sweep, not a choice: `--select lscv` chooses.
fn rule_of_thumb(sd: &[f64], n: usize) -> Option<f64> {
    let spread: Vec<f64> = sd
        .iter()
        .copied()
        .filter(|s| s.is_finite() && *s > 0.0)
        .collect();
    if spread.is_empty() {
        return None;
    }
    let geo = (spread.iter().map(|s| s.ln()).sum::<f64>() / spread.len() as f64).exp();
    let h = geo * (n as f64).powf(-1.0 / (sd.len() as f64 + 4.0));
    (h.is_finite() && h > 0.0).then_some(h)
}

/// `v` as a comma-separated list, 4 significant digits each.
fn list_sig(v: &[f64]) -> String {
    v.iter()
        .map(|&x| sig_trim(x, 4))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_of_thumb_follows_the_spread_and_skips_constant_dimensions() {
        let h = rule_of_thumb(&[2.0, 8.0], 10_000).unwrap();
        // geometric mean 4, times 10000^(-1/6)
        assert!((h - 4.0 * 10_000f64.powf(-1.0 / 6.0)).abs() < 1e-12, "{h}");
        let h1 = rule_of_thumb(&[0.0, 3.0], 100).unwrap();
        assert!((h1 - 3.0 * 100f64.powf(-1.0 / 6.0)).abs() < 1e-12, "{h1}");
        assert_eq!(rule_of_thumb(&[0.0, 0.0], 100), None);
        assert_eq!(rule_of_thumb(&[f64::NAN], 100), None);
    }

    #[test]
    fn a_point_is_off_the_data_beyond_three_deviations() {
        assert!(!off_the_data(&[0.0, 0.0], &[0.1, -0.2], &[1.0, 1.0]));
        assert!(off_the_data(&[0.0, 0.0], &[0.1, 5000.0], &[1.0, 800.0]));
        assert!(off_the_data(&[1.0], &[2.0], &[0.0]));
        assert!(!off_the_data(&[2.0], &[2.0], &[0.0]));
    }

    #[test]
    fn many_dimensions_are_summarized() {
        let d = describe(&[0.5; 40], &[1.0; 40]);
        assert!(d.contains("run from 0.5 to 0.5"), "{d}");
        assert!(describe(&[1.0, 2.0], &[3.0, 4.0]).contains("mean is (1, 2)"));
    }

    #[test]
    fn mean_and_sd_of_known_rows() {
        let s = Samples::from_rows(2, vec![1.0, 10.0, 3.0, 10.0, 5.0, 10.0]).unwrap();
        let (m, sd) = mean_and_sd(&s);
        assert_eq!(m, [3.0, 10.0]);
        assert!((sd[0] - (8.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(sd[1], 0.0);
    }
}
