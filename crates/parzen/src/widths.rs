//! Window-width lists: parsing a user's spec and the article's default sweeps.

use crate::error::{Error, Result};
use crate::estimate::validate_width;
use crate::samples::Samples;

/// Largest `COUNT` accepted in a `START:STOP:COUNT` spec (guards against absurd allocations).
pub const MAX_LINSPACE_COUNT: usize = 10_000_000;

/// Parses `"0.5,1,1.5"` (a comma list) or `"START:STOP:COUNT"` (inclusive, like
/// `numpy.linspace`) into validated window widths.
pub fn parse_widths(spec: &str) -> Result<Vec<f64>> {
    let bad = |item: &str, reason: &str| Error::WidthSpec {
        spec: item.to_owned(),
        reason: reason.to_owned(),
    };
    if spec.trim().is_empty() {
        return Err(bad(spec, "the width list is empty"));
    }
    if spec.contains(':') {
        let parts: Vec<&str> = spec.split(':').collect();
        let [start, stop, count] = parts[..] else {
            return Err(bad(
                spec,
                "a range must be START:STOP:COUNT (three items separated by ':')",
            ));
        };
        let start = parse_width(start)?;
        let stop = parse_width(stop)?;
        let count_item = count.trim();
        let count: usize = count_item
            .parse()
            .ok()
            .filter(|c| (1..=MAX_LINSPACE_COUNT).contains(c))
            .ok_or_else(|| {
                bad(
                    spec,
                    &format!(
                        "COUNT {} must be an integer from 1 to {MAX_LINSPACE_COUNT}",
                        crate::data::quote(count_item)
                    ),
                )
            })?;
        return linspace(start, stop, count)
            .into_iter()
            .map(validate_width)
            .collect();
    }
    spec.split(',')
        .enumerate()
        .map(|(i, item)| {
            if item.trim().is_empty() {
                Err(bad(spec, &format!("item {} is empty", i + 1)))
            } else {
                parse_width(item)
            }
        })
        .collect()
}

/// Parses one list item (surrounding whitespace allowed) as a valid width.
fn parse_width(item: &str) -> Result<f64> {
    let trimmed = item.trim();
    let bad = |reason: &str| Error::WidthSpec {
        spec: trimmed.to_owned(),
        reason: reason.to_owned(),
    };
    if trimmed.is_empty() {
        return Err(bad("empty item"));
    }
    let h: f64 = trimmed.parse().map_err(|_| bad("not a number"))?;
    validate_width(h).map_err(|_| bad("a window width must be a finite number > 0"))
}

/// `numpy.linspace(start, stop, count)` (endpoint included), reproduced operation for operation.
fn linspace(start: f64, stop: f64, count: usize) -> Vec<f64> {
    if count == 1 {
        return vec![start];
    }
    let div = (count - 1) as f64;
    let delta = stop - start;
    let step = delta / div;
    let mut y: Vec<f64> = if step == 0.0 {
        // numpy's special case for a step that underflows (gh-5437).
        (0..count).map(|i| i as f64 / div * delta + start).collect()
    } else {
        (0..count).map(|i| i as f64 * step + start).collect()
    };
    if let Some(last) = y.last_mut() {
        *last = stop;
    }
    y
}

/// The article's table of widths: 0.1, 0.2, ..., 1.2 (each `k / 10.0`).
pub fn default_widths() -> Vec<f64> {
    (1..=12).map(|k| k as f64 / 10.0).collect()
}

/// The article's benchmark sweep: `numpy.linspace(1.0, 1.2, 100)`.
pub fn seed_benchmark_widths() -> Vec<f64> {
    linspace(1.0, 1.2, 100)
}

/// Normal-reference width of the hypercube estimate, for data of unknown scale:
/// `h = σ · (144 · 2^(d+2) · π^(d/2) / (d + 2))^(1/(d+4)) · n^(-1/(d+4))`.
///
/// This is the width minimizing the asymptotic mean integrated squared error of the
/// hypercube (box) kernel when the data are N(μ, σ² I): the box of edge `h` has
/// `∫K² = 1` and second moment `1/12` per axis, and N(0, I)'s `∫(∇²f)² = d(d+2) /
/// (2^(d+2) π^(d/2))`. In one dimension the constant is `(384 √π)^(1/5) ≈ 3.69`
/// (Silverman's 1.06 for the Gaussian kernel, times √12 for the box's spread). `σ` is the
/// geometric mean of the per-dimension sample standard deviations, so that rescaling one
/// axis rescales `h` by its share. Refuses what [`crate::lscv::check`] refuses (n < 2, a
/// constant column).
pub fn normal_reference_width(samples: &Samples) -> Result<f64> {
    crate::lscv::check(samples)?;
    let (n, d) = (samples.len(), samples.dims());
    let nf = n as f64;
    let mut log_sigma = 0.0;
    for k in 0..d {
        let mean = samples.rows().map(|r| r[k]).sum::<f64>() / nf;
        let var = samples.rows().map(|r| (r[k] - mean).powi(2)).sum::<f64>() / (nf - 1.0);
        log_sigma += var.sqrt().ln() / d as f64;
    }
    let df = d as f64;
    let constant = (144.0 * 2f64.powf(df + 2.0) * std::f64::consts::PI.powf(df / 2.0) / (df + 2.0))
        .powf(1.0 / (df + 4.0));
    let h = log_sigma.exp() * constant * nf.powf(-1.0 / (df + 4.0));
    validate_width(h)
}

/// `count` widths from a quarter to twice [`normal_reference_width`] (evenly spaced, like
/// `numpy.linspace`): a range for an LSCV sweep on data of unknown scale. `count` is 1 to
/// [`MAX_LINSPACE_COUNT`].
pub fn reference_widths(samples: &Samples, count: usize) -> Result<Vec<f64>> {
    if !(1..=MAX_LINSPACE_COUNT).contains(&count) {
        return Err(Error::WidthSpec {
            spec: count.to_string(),
            reason: format!("the count must be from 1 to {MAX_LINSPACE_COUNT}"),
        });
    }
    let h = normal_reference_width(samples)?;
    linspace(h / 4.0, 2.0 * h, count)
        .into_iter()
        .map(validate_width)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> String {
        parse_widths(spec).unwrap_err().to_string()
    }

    #[test]
    fn parses_comma_lists() {
        assert_eq!(parse_widths("0.5,1,1.5").unwrap(), vec![0.5, 1.0, 1.5]);
        assert_eq!(parse_widths(" 0.5 , 1 ,1.5 ").unwrap(), vec![0.5, 1.0, 1.5]);
        assert_eq!(parse_widths("2").unwrap(), vec![2.0]);
        assert_eq!(parse_widths("1e-3").unwrap(), vec![0.001]);
    }

    #[test]
    fn parses_ranges_like_numpy() {
        assert_eq!(parse_widths("0.5:2:4").unwrap(), vec![0.5, 1.0, 1.5, 2.0]);
        assert_eq!(
            parse_widths("2:0.5:7").unwrap(),
            vec![2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5]
        );
        assert_eq!(parse_widths("1:1:3").unwrap(), vec![1.0, 1.0, 1.0]);
        assert_eq!(parse_widths(" 0.7 : 9 : 1 ").unwrap(), vec![0.7]);
    }

    #[test]
    fn rejects_bad_specs_naming_the_item() {
        assert_eq!(err(""), r#"bad width spec "": the width list is empty"#);
        assert_eq!(err("  "), r#"bad width spec "  ": the width list is empty"#);
        assert_eq!(err("0.5,,1"), r#"bad width spec "0.5,,1": item 2 is empty"#);
        assert_eq!(err("0.5,"), r#"bad width spec "0.5,": item 2 is empty"#);
        assert_eq!(err("0.5,abc"), r#"bad width spec "abc": not a number"#);
        let finite = "a window width must be a finite number > 0";
        for item in ["0", "-1", "NaN", "inf", "-inf"] {
            assert_eq!(
                err(&format!("1,{item}")),
                format!("bad width spec {item:?}: {finite}")
            );
        }
        assert_eq!(err("0:1:3"), format!("bad width spec \"0\": {finite}"));
        assert_eq!(err("1:nan:3"), format!("bad width spec \"nan\": {finite}"));
        let count = |c: &str| {
            format!(
                "bad width spec \"1:2:{c}\": COUNT {c:?} must be an integer from 1 to {MAX_LINSPACE_COUNT}"
            )
        };
        for c in ["0", "-2", "2.5", "x", "", "99999999999"] {
            assert_eq!(err(&format!("1:2:{c}")), count(c));
        }
        assert!(err("1:2").contains("START:STOP:COUNT"));
        assert!(err("1:2:3:4").contains("START:STOP:COUNT"));
    }

    #[test]
    fn normal_reference_width_follows_the_formula_and_the_scale() {
        let g = crate::Gaussian::standard(2).unwrap();
        let s = g.sample(10_000, 3).unwrap();
        let h = normal_reference_width(&s).unwrap();
        // sigma close to 1: h close to 3.491 * 1e4^(-1/6) = 0.752.
        assert!((h - 0.752).abs() < 0.02, "{h}");
        // Scaling one axis by 16 scales h by sqrt(16) = 4 (geometric mean).
        let scaled: Vec<f64> = s.rows().flat_map(|r| [r[0] * 16.0, r[1]]).collect();
        let s16 = Samples::from_rows(2, scaled).unwrap();
        let h16 = normal_reference_width(&s16).unwrap();
        assert!((h16 / h - 4.0).abs() < 1e-9, "{h16} / {h}");
        // One dimension: the constant is (384 sqrt(pi))^(1/5).
        let one = Samples::from_rows(1, vec![-1.0, 1.0]).unwrap();
        let expect =
            (384.0 * std::f64::consts::PI.sqrt()).powf(0.2) * 2f64.sqrt() * 2f64.powf(-0.2);
        assert!((normal_reference_width(&one).unwrap() - expect).abs() < 1e-12);
        let w = reference_widths(&s, 5).unwrap();
        assert_eq!(w.len(), 5);
        assert!((w[0] - h / 4.0).abs() < 1e-15 && (w[4] - 2.0 * h).abs() < 1e-15);
        assert!(reference_widths(&s, 0).is_err());
        let constant = Samples::from_rows(2, vec![1.0, 2.0, 1.0, 3.0]).unwrap();
        assert!(
            normal_reference_width(&constant)
                .unwrap_err()
                .to_string()
                .contains("column 0")
        );
    }

    #[test]
    fn default_widths_are_the_article_table() {
        let w = default_widths();
        assert_eq!(w.len(), 12);
        assert_eq!(w[0], 0.1);
        assert_eq!(w[2], 0.3);
        assert_eq!(w[11], 1.2);
    }

    /// Bits of `numpy.linspace(1.0, 1.2, 100)` from numpy 2.4.
    #[rustfmt::skip]
    const NUMPY_LINSPACE_1_1P2_100: [u64; 100] = [
        0x3ff0000000000000, 0x3ff0084655d9bab3, 0x3ff0108cabb37566, 0x3ff018d3018d3019, 0x3ff021195766eacc,
        0x3ff0295fad40a57f, 0x3ff031a6031a6032, 0x3ff039ec58f41ae5, 0x3ff04232aecdd598, 0x3ff04a7904a7904a,
        0x3ff052bf5a814afd, 0x3ff05b05b05b05b0, 0x3ff0634c0634c063, 0x3ff06b925c0e7b16, 0x3ff073d8b1e835c9,
        0x3ff07c1f07c1f07c, 0x3ff084655d9bab2f, 0x3ff08cabb37565e2, 0x3ff094f2094f2095, 0x3ff09d385f28db48,
        0x3ff0a57eb50295fb, 0x3ff0adc50adc50ae, 0x3ff0b60b60b60b61, 0x3ff0be51b68fc614, 0x3ff0c6980c6980c7,
        0x3ff0cede62433b7a, 0x3ff0d724b81cf62c, 0x3ff0df6b0df6b0df, 0x3ff0e7b163d06b92, 0x3ff0eff7b9aa2645,
        0x3ff0f83e0f83e0f8, 0x3ff10084655d9bab, 0x3ff108cabb37565e, 0x3ff1111111111111, 0x3ff1195766eacbc4,
        0x3ff1219dbcc48677, 0x3ff129e4129e412a, 0x3ff1322a6877fbdd, 0x3ff13a70be51b690, 0x3ff142b7142b7143,
        0x3ff14afd6a052bf6, 0x3ff15343bfdee6a8, 0x3ff15b8a15b8a15b, 0x3ff163d06b925c0e, 0x3ff16c16c16c16c1,
        0x3ff1745d1745d174, 0x3ff17ca36d1f8c27, 0x3ff184e9c2f946da, 0x3ff18d3018d3018d, 0x3ff195766eacbc40,
        0x3ff19dbcc48676f3, 0x3ff1a6031a6031a6, 0x3ff1ae497039ec59, 0x3ff1b68fc613a70c, 0x3ff1bed61bed61bf,
        0x3ff1c71c71c71c72, 0x3ff1cf62c7a0d725, 0x3ff1d7a91d7a91d8, 0x3ff1dfef73544c8a, 0x3ff1e835c92e073d,
        0x3ff1f07c1f07c1f0, 0x3ff1f8c274e17ca3, 0x3ff20108cabb3756, 0x3ff2094f2094f209, 0x3ff21195766eacbc,
        0x3ff219dbcc48676f, 0x3ff2222222222222, 0x3ff22a6877fbdcd5, 0x3ff232aecdd59788, 0x3ff23af523af523b,
        0x3ff2433b79890cee, 0x3ff24b81cf62c7a1, 0x3ff253c8253c8254, 0x3ff25c0e7b163d07, 0x3ff26454d0eff7ba,
        0x3ff26c9b26c9b26c, 0x3ff274e17ca36d1f, 0x3ff27d27d27d27d2, 0x3ff2856e2856e285, 0x3ff28db47e309d38,
        0x3ff295fad40a57eb, 0x3ff29e4129e4129e, 0x3ff2a6877fbdcd51, 0x3ff2aecdd5978804, 0x3ff2b7142b7142b7,
        0x3ff2bf5a814afd6a, 0x3ff2c7a0d724b81d, 0x3ff2cfe72cfe72d0, 0x3ff2d82d82d82d83, 0x3ff2e073d8b1e836,
        0x3ff2e8ba2e8ba2e8, 0x3ff2f10084655d9c, 0x3ff2f946da3f184e, 0x3ff3018d3018d301, 0x3ff309d385f28db4,
        0x3ff31219dbcc4867, 0x3ff31a6031a6031a, 0x3ff322a6877fbdcd, 0x3ff32aecdd597880, 0x3ff3333333333333,
    ];

    #[test]
    fn seed_benchmark_widths_match_numpy_bit_for_bit() {
        let w = seed_benchmark_widths();
        let bits: Vec<u64> = w.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, NUMPY_LINSPACE_1_1P2_100);
        let parsed: Vec<u64> = parse_widths("1.0:1.2:100")
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(parsed, NUMPY_LINSPACE_1_1P2_100);
    }
}
