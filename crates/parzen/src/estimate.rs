//! The hypercube Parzen-window estimate: the literal reference and its fast prepared form.
//!
//! Why [`Prepared::count`] is bit-identical to [`estimate_naive`]: with `a = |x - p|` (the
//! same rounded subtraction in both) and a finite `h > 0`, the rounded quotient satisfies
//! `fl(a / h) <= 0.5` exactly when the real `a <= h / 2`. Monotone rounding gives one
//! direction; for the other, if `2a > h` with `h` in `[2^e, 2^(e+1))` then `2a - h` is a
//! positive multiple of `ulp(h)`, so `a / h - 0.5 > 2^-54`, which is past the midpoint
//! between `0.5` and the next double, so it cannot round down to `0.5`. (Subnormal `h` only
//! widens that gap.) `a <= h / 2` in turn equals `a <= t` for `t` the largest double
//! `<= h / 2`, which is `0.5 * h` except when that product rounds up (subnormal `h` with an
//! odd last bit). And "every coordinate within `t`" is "the largest coordinate distance
//! within `t`", so one maximum per sample is all a worker needs.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::samples::Samples;

/// Checks that a window width is finite and > 0, returning it.
pub fn validate_width(h: f64) -> Result<f64> {
    if h.is_finite() && h > 0.0 {
        Ok(h)
    } else {
        Err(Error::InvalidWidth(h))
    }
}

/// Reference estimate `p(point)` computed exactly as the article's numpy code does.
///
/// A sample counts when `|(x_j - p_j) / h| <= 0.5` for every dimension `j`; the result is
/// `(k / n) / h^d` with `h^d` from `powf` (C `pow`, as Python's `h**d`).
///
/// # Panics
///
/// Panics if `point.len() != samples.dims()` (use [`Prepared::new`] for a checked entry).
pub fn estimate_naive(samples: &Samples, point: &[f64], h: f64) -> f64 {
    assert_eq!(
        point.len(),
        samples.dims(),
        "point has {} coordinates but the samples have {} dimensions",
        point.len(),
        samples.dims()
    );
    let k = samples
        .rows()
        .filter(|row| {
            row.iter()
                .zip(point)
                .all(|(x, p)| ((x - p) / h).abs() <= 0.5)
        })
        .count();
    density_from_count(k as u64, samples.len(), samples.dims(), h)
}

/// `(k / n) / h^d`, the one formula shared by both estimators so they round alike
/// (`powf` is C `pow`, as in the numpy reference).
pub fn density_from_count(k: u64, n: usize, dims: usize, h: f64) -> f64 {
    (k as f64 / n as f64) / h.powf(dims as f64)
}

/// Largest double `t` with `t <= h / 2` (real halving), for `h > 0`.
fn half_width(h: f64) -> f64 {
    let t = 0.5 * h;
    if t * 2.0 > h {
        // 0.5 * h rounded up (only possible for subnormal h); step one double down.
        f64::from_bits(t.to_bits() - 1)
    } else {
        t
    }
}

/// How many of `dists` are `<= t`. Branchless, in sixteen independent lanes, so the
/// compiler turns it into packed compares; the hot loop of every job. (Measured on the
/// reference machine: explicit AVX2 or AVX-512 versions of this loop were slower.)
fn count_below(dists: &[f64], t: f64) -> u64 {
    let mut chunks = dists.chunks_exact(16);
    let mut lanes = [0u64; 16];
    for chunk in &mut chunks {
        for (lane, &d) in lanes.iter_mut().zip(chunk) {
            *lane += u64::from(d <= t);
        }
    }
    let tail: u64 = chunks.remainder().iter().map(|&d| u64::from(d <= t)).sum();
    lanes.iter().sum::<u64>() + tail
}

/// How many of `dists` (each sample's largest coordinate distance to a point) are inside
/// the hypercube of edge `h`: the count behind [`Prepared::count`], on any slice.
pub fn count_within(dists: &[f64], h: f64) -> u64 {
    count_below(dists, half_width(h))
}

/// `max_j |x_j - p_j|`. Values are finite, so a plain compare picks the same maximum as
/// `f64::max`, without its NaN handling.
#[inline(always)]
fn chebyshev(row: &[f64], point: &[f64]) -> f64 {
    row.iter().zip(point).fold(0.0_f64, |m, (x, p)| {
        let a = (x - p).abs();
        if a > m { a } else { m }
    })
}

/// [`chebyshev`] of every row, for a dimension known at compile time (unrolled, vectorized).
fn distances<const D: usize>(data: &[f64], point: &[f64]) -> Vec<f64> {
    data.chunks_exact(D)
        .map(|row| chebyshev(row, &point[..D]))
        .collect()
}

/// Per-point precomputation shipped once to each worker: each sample's largest coordinate
/// distance `max_j |x_ij - p_j|` to the point, plus the dimension count.
///
/// Deserializing checks that there is at least one distance, `dims >= 1`, and no distance is
/// NaN or negative.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPrepared")]
pub struct Prepared {
    dims: usize,
    /// On the wire as one block of little-endian bytes: a million distances encode and
    /// decode as a copy, not a million separate values.
    #[serde(with = "le_f64s")]
    dists: Vec<f64>,
}

/// Unchecked wire form of [`Prepared`], validated on the way in.
#[derive(Deserialize)]
struct RawPrepared {
    dims: usize,
    #[serde(with = "le_f64s")]
    dists: Vec<f64>,
}

/// `Vec<f64>` as one byte string of little-endian values.
mod le_f64s {
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        serde_bytes::serialize(&bytes, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        d.deserialize_bytes(F64s)
    }

    /// Straight from the decoder's bytes to the values: one allocation, the result's.
    struct F64s;

    impl<'de> serde::de::Visitor<'de> for F64s {
        type Value = Vec<f64>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string of little-endian f64 values")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<f64>, E> {
            if !bytes.len().is_multiple_of(8) {
                return Err(E::custom(format!(
                    "{} bytes is not a whole number of f64 values",
                    bytes.len()
                )));
            }
            Ok(bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b)
                })
                .collect())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<f64>, E> {
            self.visit_bytes(&bytes)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f64>, A::Error> {
            // Self-describing formats (JSON) hand bytes over as a sequence of numbers.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element::<u8>()? {
                bytes.push(b);
            }
            self.visit_bytes(&bytes)
        }
    }
}

impl TryFrom<RawPrepared> for Prepared {
    type Error = Error;

    fn try_from(raw: RawPrepared) -> Result<Prepared> {
        if raw.dims == 0 {
            return Err(Error::ZeroDims);
        }
        if raw.dists.is_empty() {
            return Err(Error::NoSamples);
        }
        // A distance may be +inf (the subtraction overflowed) but never NaN or negative.
        if let Some(i) = raw.dists.iter().position(|d| d.is_nan() || *d < 0.0) {
            return Err(Error::NonFiniteSample {
                row: i,
                col: 0,
                value: raw.dists[i],
            });
        }
        Ok(Prepared {
            dims: raw.dims,
            dists: raw.dists,
        })
    }
}

impl Prepared {
    /// Computes every sample's largest coordinate distance to `point`, which must have
    /// `samples.dims()` finite coordinates.
    pub fn new(samples: &Samples, point: &[f64]) -> Result<Prepared> {
        if point.len() != samples.dims() {
            return Err(Error::PointDims {
                got: point.len(),
                expected: samples.dims(),
            });
        }
        if let Some(index) = point.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinitePoint {
                index,
                value: point[index],
            });
        }
        let dists = match samples.dims() {
            1 => distances::<1>(samples.as_slice(), point),
            2 => distances::<2>(samples.as_slice(), point),
            3 => distances::<3>(samples.as_slice(), point),
            4 => distances::<4>(samples.as_slice(), point),
            _ => samples.rows().map(|row| chebyshev(row, point)).collect(),
        };
        Ok(Prepared {
            dims: samples.dims(),
            dists,
        })
    }

    /// Number of samples inside the hypercube of edge `h` (meaningful for finite `h > 0`;
    /// see [`validate_width`]).
    pub fn count(&self, h: f64) -> u64 {
        count_below(&self.dists, half_width(h))
    }

    /// Density estimate `(count / n) / h^d`, bit-identical to [`estimate_naive`] for finite `h > 0`.
    pub fn density(&self, h: f64) -> f64 {
        density_from_count(self.count(h), self.dists.len(), self.dims, h)
    }

    /// Number of samples (n).
    pub fn len(&self) -> usize {
        self.dists.len()
    }

    /// Always `false`: a prepared point holds at least one sample (kept for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.dists.is_empty()
    }

    /// Number of dimensions (d).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Each sample's largest coordinate distance to the point, in sample order.
    pub fn distances(&self) -> &[f64] {
        &self.dists
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn article_cube() -> Samples {
        let inside = [[0.0, 0.0, 0.0], [0.2, 0.2, 0.2], [0.1, -0.1, -0.3]];
        let outside = [
            [-1.2, 0.3, -0.3],
            [0.8, -0.82, -0.9],
            [1.0, 0.6, -0.7],
            [0.8, 0.7, 0.2],
            [0.7, -0.8, -0.45],
            [-0.3, 0.6, 0.9],
            [1.0, 1.0, 1.0],
        ];
        let data = inside.iter().chain(&outside).flatten().copied().collect();
        Samples::from_rows(3, data).unwrap()
    }

    #[test]
    fn article_cube_example_gives_0_3() {
        let s = article_cube();
        assert_eq!(s.len(), 10);
        let p = [0.0, 0.0, 0.0];
        assert_eq!(estimate_naive(&s, &p, 1.0), 0.3);
        let prep = Prepared::new(&s, &p).unwrap();
        assert_eq!(prep.count(1.0), 3);
        assert_eq!(prep.density(1.0), 0.3);
        assert_eq!(prep.len(), 10);
        assert!(!prep.is_empty());
        assert_eq!(prep.dims(), 3);
    }

    /// Values computed with numpy 2.4: `np.all(np.abs(X-p)/h <= .5, axis=1).sum()` then `(k/n)/h**3`.
    #[test]
    fn matches_numpy_reference() {
        #[rustfmt::skip]
        let x = vec![
            0.3, -1.2, 0.05,  1.1, 0.4, -0.7,  -0.45, 0.25, 0.9,  0.0, 0.0, 0.0,
            0.5, 0.5, 0.5,  -0.5, -0.5, -0.5,  2.0, -3.0, 1.0,  0.12, 0.34, -0.56,
            -0.9, 0.8, -0.1,  0.25, -0.25, 0.45,
        ];
        let s = Samples::from_rows(3, x).unwrap();
        let p = [0.1, -0.2, 0.05];
        let prep = Prepared::new(&s, &p).unwrap();
        let expected = [
            (0.1, 0, 0.0_f64),
            (0.5, 1, 0.8),
            (0.8, 2, 0.39062499999999994),
            (1.0, 2, 0.2),
            (1.2, 3, 0.17361111111111113),
            (1.7, 6, 0.12212497455729698),
            (2.5, 9, 0.0576),
            (7.0, 10, 0.0029154518950437317),
        ];
        for (h, k, density) in expected {
            assert_eq!(prep.count(h), k, "h = {h}");
            assert_eq!(estimate_naive(&s, &p, h).to_bits(), density.to_bits());
            assert_eq!(prep.density(h).to_bits(), density.to_bits());
        }
    }

    #[test]
    fn point_errors_name_the_values() {
        let s = article_cube();
        let e = Prepared::new(&s, &[0.0, 0.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "point has 2 coordinates but the samples have 3 dimensions"
        );
        let e = Prepared::new(&s, &[0.0, f64::NAN, 0.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "point coordinate 1 (0-based) is NaN; the point must be finite"
        );
    }

    #[test]
    #[should_panic(expected = "point has 1 coordinates")]
    fn naive_panics_on_wrong_point_length() {
        estimate_naive(&article_cube(), &[0.0], 1.0);
    }

    #[test]
    fn validate_width_accepts_only_finite_positive() {
        assert_eq!(validate_width(0.5).unwrap(), 0.5);
        assert_eq!(
            validate_width(f64::MIN_POSITIVE / 4.0).unwrap(),
            f64::MIN_POSITIVE / 4.0
        );
        assert_eq!(
            validate_width(-1.0).unwrap_err().to_string(),
            "window width must be a finite number > 0, got -1"
        );
        for bad in [0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(validate_width(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn half_width_is_largest_double_not_above_half() {
        let tiny = f64::from_bits(1);
        assert_eq!(half_width(tiny), 0.0);
        let odd = f64::from_bits(3);
        assert_eq!(half_width(odd), f64::from_bits(1));
        assert_eq!(half_width(f64::from_bits(4)), f64::from_bits(2));
        assert_eq!(half_width(1.0), 0.5);
        assert_eq!(half_width(f64::MAX), f64::MAX / 2.0);
    }

    #[test]
    fn subnormal_widths_agree_with_naive() {
        // Samples at multiples of the smallest subnormal around 0, widths with odd last bits.
        let data: Vec<f64> = (-6i64..=6).map(|k| k as f64 * f64::from_bits(1)).collect();
        let s = Samples::from_rows(1, data).unwrap();
        let prep = Prepared::new(&s, &[0.0]).unwrap();
        for bits in 1..=9u64 {
            let h = f64::from_bits(bits);
            let naive = estimate_naive(&s, &[0.0], h);
            assert_eq!(prep.density(h).to_bits(), naive.to_bits(), "h bits {bits}");
        }
    }

    #[test]
    fn exact_faces_count_and_one_ulp_outside_does_not() {
        for h in [1.0, 0.3, 1.2, 1e-7, 3e5] {
            let half = h / 2.0;
            let s = Samples::from_rows(
                2,
                vec![
                    half,
                    -half,
                    -half,
                    half,
                    up(half),
                    0.0,
                    0.0,
                    -up(half),
                    down(half),
                    0.0,
                ],
            )
            .unwrap();
            let prep = Prepared::new(&s, &[0.0, 0.0]).unwrap();
            assert_eq!(prep.count(h), 3, "h = {h}");
            assert_eq!(
                prep.density(h).to_bits(),
                estimate_naive(&s, &[0.0, 0.0], h).to_bits()
            );
        }
    }

    #[test]
    fn overflowing_distances_never_count() {
        let s = Samples::from_rows(1, vec![f64::MAX, -f64::MAX, 0.0]).unwrap();
        let prep = Prepared::new(&s, &[-f64::MAX]).unwrap();
        assert_eq!(prep.distances()[0], f64::INFINITY);
        for h in [1.0, 1e300, f64::MAX] {
            assert_eq!(
                prep.density(h).to_bits(),
                estimate_naive(&s, &[-f64::MAX], h).to_bits()
            );
        }
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let prep = Prepared::new(&article_cube(), &[0.0, 0.0, 0.0]).unwrap();
        let json = serde_json::to_string(&prep).unwrap();
        let back: Prepared = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prep);
        assert!(serde_json::from_str::<Prepared>(r#"{"dims":0,"dists":[1.0]}"#).is_err());
        assert!(serde_json::from_str::<Prepared>(r#"{"dims":1,"dists":[]}"#).is_err());
        assert!(serde_json::from_str::<Prepared>(r#"{"dims":1,"dists":[-1.0]}"#).is_err());
    }

    /// A width spread over many magnitudes: mantissa in [1, 2) times 2^e, e in [-40, 40].
    fn width() -> impl Strategy<Value = f64> {
        (1.0f64..2.0, -40i32..=40).prop_map(|(m, e)| m * 2f64.powi(e))
    }

    /// Samples of `dims` columns around the origin, scaled by a random magnitude, with a point.
    fn samples_and_point(dims: usize) -> impl Strategy<Value = (Samples, Vec<f64>)> {
        (
            prop::collection::vec(-1.0f64..1.0, dims..=dims * 40),
            prop::collection::vec(-1.0f64..1.0, dims),
            -20i32..=20,
        )
            .prop_map(move |(mut data, mut point, e)| {
                let scale = 2f64.powi(e);
                data.truncate(data.len() / dims * dims);
                data.iter_mut().for_each(|v| *v *= scale);
                point.iter_mut().for_each(|v| *v *= scale);
                (Samples::from_rows(dims, data).unwrap(), point)
            })
    }

    /// The next double above a positive finite `x`.
    fn up(x: f64) -> f64 {
        f64::from_bits(x.to_bits() + 1)
    }

    /// The next double below a positive `x`.
    fn down(x: f64) -> f64 {
        f64::from_bits(x.to_bits() - 1)
    }

    /// Samples built to sit exactly on, just inside and just outside the cube faces.
    fn boundary_case(dims: usize) -> impl Strategy<Value = (Samples, Vec<f64>, f64)> {
        (
            prop::collection::vec(-1.0f64..1.0, dims),
            width(),
            prop::collection::vec((0usize..dims, 0usize..7, any::<bool>()), 1..30),
            -10i32..=10,
        )
            .prop_map(move |(point, h, picks, e)| {
                let point: Vec<f64> = point.iter().map(|v| v * 2f64.powi(e)).collect();
                let half = h / 2.0;
                let mut data = Vec::new();
                for (axis, kind, negative) in picks {
                    let offset = match kind {
                        0 | 5 | 6 => half,
                        1 => up(half),
                        2 => down(half),
                        3 => up(up(half)),
                        _ => down(down(half)),
                    };
                    let sign = if negative { -1.0 } else { 1.0 };
                    let mut row = point.clone();
                    row[axis] = point[axis] + sign * offset;
                    // Neighbours of the rounded face coordinate itself.
                    if kind == 5 {
                        row[axis] = f64::from_bits(row[axis].to_bits() + 1);
                    } else if kind == 6 {
                        row[axis] = f64::from_bits(row[axis].to_bits() - 1);
                    }
                    data.extend(row);
                }
                (Samples::from_rows(dims, data).unwrap(), point, h)
            })
    }

    fn assert_identical(s: &Samples, p: &[f64], h: f64) -> std::result::Result<(), TestCaseError> {
        let prep = Prepared::new(s, p).unwrap();
        let naive = estimate_naive(s, p, h);
        let fast = prep.density(h);
        prop_assert_eq!(fast.to_bits(), naive.to_bits(), "h = {:e}", h);
        prop_assert!(fast >= 0.0);
        Ok(())
    }

    proptest! {
        #[test]
        fn prepared_matches_naive((s, p) in samples_and_point(3), h in width()) {
            assert_identical(&s, &p, h)?;
        }

        #[test]
        fn prepared_matches_naive_in_1_2_3_5_dims(
            (s, p) in prop_oneof![
                samples_and_point(1),
                samples_and_point(2),
                samples_and_point(3),
                samples_and_point(5),
            ],
            h in width(),
        ) {
            assert_identical(&s, &p, h)?;
        }

        #[test]
        fn prepared_matches_naive_on_cube_faces(
            (s, p, h) in prop_oneof![
                boundary_case(1),
                boundary_case(2),
                boundary_case(3),
                boundary_case(5),
            ],
        ) {
            assert_identical(&s, &p, h)?;
        }

        #[test]
        fn count_is_monotone_in_h((s, p) in samples_and_point(2), a in width(), b in width()) {
            let prep = Prepared::new(&s, &p).unwrap();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(prep.count(lo) <= prep.count(hi));
            prop_assert!(prep.count(hi) <= s.len() as u64);
        }
    }
}
