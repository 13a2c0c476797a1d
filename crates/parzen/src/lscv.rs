//! Least-squares cross-validation (LSCV) of the hypercube estimate's width: the sweep worth
//! parallelizing, O(pairs) per width where a Parzen count is O(1).
//!
//! For a width `h`, with `n` samples of `d` dimensions,
//!
//! ```text
//! LSCV(h) = S(h) / (n^2 h^(2d)) - 2 C(h) / (n (n-1) h^d)
//! S(h)    = sum over all ordered pairs (i, j), i = j included, of prod_k max(0, h - |X_ik - X_jk|)
//! C(h)    = number of ordered pairs i != j with max_k |X_ik - X_jk| <= h/2
//! ```
//!
//! (`S / (n^2 h^2d)` is the integral of the squared estimate, `C` the leave-one-out term.)
//! The selected width is the one with the smallest score ([`select`]).
//!
//! - [`naive_terms`] is the literal double loop, the reference.
//! - [`check`] refuses data where LSCV is meaningless (n < 2, a constant column);
//!   [`prepare`] also writes the samples sorted by their first coordinate, column-major,
//!   into a caller buffer (shared memory, say), and [`LscvView`] reads it back to compute
//!   [`Terms`] for any width, pruning and vectorized. [`Lscv`] owns the buffer.
//! - [`score`] is the formula, with every overflow or underflow an error.
//! - [`LscvView::candidate_pairs`] counts, in O(n), the pairs a width evaluates; the time
//!   of [`LscvView::terms`] is about `pairs × d ×` [`NS_PER_PAIR_DIM`] nanoseconds.
//!
//! Measured (`cargo bench -p parzen --bench kernel -- lscv`, n = 1e4, d = 2, N(0, I), one
//! core of the 2-core AMD EPYC VM, AVX2): 1.9 ms at h = 0.1, 7.8 ms at 0.5, 15 ms at 1.0,
//! 16 ms at 1.2 (about 1.9e9 pairs per second); 100 widths of `linspace(1.0, 1.2, 100)`
//! take 1.45 s (14.5 ms a width), of `linspace(0.1, 1.2, 100)` 0.86 s (8.6 ms a width);
//! preparing (sort and transpose) takes 0.27 ms. Pairs grow as n², so n = 5e3 gives about
//! a quarter of those times.
//!
//! # Why the fast terms equal the naive loop's
//!
//! Each pair's factors are computed with the same rounded operations in the same order:
//! `|fl(X_jk - X_ik)| = |fl(X_ik - X_jk)|` (rounding is symmetric), the product runs over
//! `k = 0..d` from `1.0`, and `C`'s test `a <= h/2` (real) is `a <= t` for `t` the largest
//! double `<= h/2`, as in [`crate::estimate`]. The pair `(j, i)` has the same terms as
//! `(i, j)`, so each unordered pair is evaluated once and doubled, and the diagonal adds
//! `n` times `h·h·…·h` (what the naive loop computes for `i = j`). Hence `C` is exact.
//! `S` differs only in the order of summation: per-row partial sums in lanes, then a
//! compensated (Neumaier) total, as the naive loop's own accumulator is; both are within
//! a few ulps times the number of terms of the exact sum of the same non-negative terms.
//!
//! Pruning is exactly conservative: rows are sorted by the first coordinate, so for `j > i`
//! the rounded gap `g(j) = fl(X_j0 - X_i0) >= 0` and `g` is non-decreasing in `j` (rounding
//! is monotone). Once `g(j) >= h`, every later `j` also has `g >= h`, and such a pair adds
//! nothing: its first factor `fl(h - g) <= 0` (the real difference is `<= 0` and rounding
//! keeps the sign) becomes `max(0, ·) = 0`, and `g >= h > h/2` fails `C`'s test. So the scan
//! for row `i` stops at the first such `j`, and that stop is non-decreasing in `i`
//! (`fl(X_j0 - X_i0)` only falls as `X_i0` grows), which is what lets
//! [`LscvView::candidate_pairs`] find all stops with two pointers.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::samples::Samples;

/// Measured cost of [`LscvView::terms`] per candidate pair and dimension, in nanoseconds,
/// for `d <= 8` (dimensions compiled in): 0.22 to 0.29 for d = 1..4 at n = 1e4, N(0, I),
/// h = 0.5 and 1, one core of the 2-core AMD EPYC VM with AVX2
/// (`cargo bench -p parzen --bench kernel -- lscv` gives 0.26 at d = 2). The cost model:
/// `seconds ≈ candidate_pairs × d × NS_PER_PAIR_DIM × 1e-9` ([`LscvView::estimated_seconds`]).
pub const NS_PER_PAIR_DIM: f64 = 0.25;

/// The same for `d > 8` (the loop over dimensions runs at run time): measured 0.45 to 0.55
/// at d = 5 before 5..=8 were compiled in.
pub const NS_PER_PAIR_DIM_GENERIC: f64 = 0.55;

/// The two sums of one width: `S` (the squared estimate's integral times `n^2 h^2d`) and
/// `C` (ordered pairs `i != j` within `h/2` in every coordinate).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Terms {
    /// `sum_i sum_j prod_k max(0, h - |X_ik - X_jk|)`, the diagonal included.
    pub s: f64,
    /// Ordered pairs `i != j` with `max_k |X_ik - X_jk| <= h/2`.
    pub c: u64,
}

/// Compensated (Neumaier) running sum: error independent of the number of terms.
#[derive(Clone, Copy, Default)]
struct Sum {
    sum: f64,
    carry: f64,
}

impl Sum {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.carry += (self.sum - t) + x;
        } else {
            self.carry += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(self) -> f64 {
        self.sum + self.carry
    }
}

/// `max(0, h - a)`, written as both loops write it.
#[inline(always)]
fn factor(h: f64, a: f64) -> f64 {
    let f = h - a;
    if f > 0.0 { f } else { 0.0 }
}

/// The reference: the literal double loop over all ordered pairs, `C`'s test written as
/// `2a <= h` (exactly the real `a <= h/2`: doubling is exact, or overflows to `+inf`
/// only when `a` is far beyond any finite `h`). O(n^2 d); for tests and small n.
pub fn naive_terms(samples: &Samples, h: f64) -> Terms {
    let mut s = Sum::default();
    let mut c = 0u64;
    for (i, xi) in samples.rows().enumerate() {
        for (j, xj) in samples.rows().enumerate() {
            let mut prod = 1.0;
            let mut cheb = 0.0_f64;
            for (a, b) in xi.iter().zip(xj) {
                let diff = (a - b).abs();
                prod *= factor(h, diff);
                cheb = cheb.max(diff);
            }
            s.add(prod);
            if i != j && 2.0 * cheb <= h {
                c += 1;
            }
        }
    }
    Terms { s: s.value(), c }
}

/// Refuses data on which LSCV is meaningless: fewer than 2 samples, or a column with the
/// same value in every sample (its score keeps falling as `h` shrinks).
pub fn check(samples: &Samples) -> Result<()> {
    let n = samples.len();
    if n < 2 {
        return Err(Error::LscvTooFew(n));
    }
    let first = samples.row(0);
    let mut varies = vec![false; samples.dims()];
    for row in samples.rows() {
        for ((v, x), f) in varies.iter_mut().zip(row).zip(first) {
            *v |= x != f;
        }
    }
    if let Some(col) = varies.iter().position(|v| !v) {
        return Err(Error::ConstantColumn {
            col,
            value: first[col],
            n,
        });
    }
    Ok(())
}

/// Writes the samples, sorted by their first coordinate, column-major (`d` columns of `n`)
/// into `out` (length `n × d`), after [`check`]. Read it back with [`LscvView::new`].
pub fn prepare(samples: &Samples, out: &mut [f64]) -> Result<()> {
    check(samples)?;
    let (n, d) = (samples.len(), samples.dims());
    let expected = n.checked_mul(d).ok_or(Error::LscvTooFew(0))?;
    if out.len() != expected {
        return Err(Error::BufferLen {
            what: "lscv",
            got: out.len(),
            expected,
        });
    }
    let data = samples.as_slice();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| data[a * d].total_cmp(&data[b * d]));
    for (k, column) in out.chunks_exact_mut(n).enumerate() {
        for (slot, &i) in column.iter_mut().zip(&order) {
            *slot = data[i * d + k];
        }
    }
    Ok(())
}

/// Largest double `t` with `t <= h / 2` (real halving), for `h > 0`.
fn half_width(h: f64) -> f64 {
    let t = 0.5 * h;
    if t * 2.0 > h {
        f64::from_bits(t.to_bits() - 1)
    } else {
        t
    }
}

/// Lanes of the inner loop: independent pairs per step, which the compiler keeps in vector
/// registers (16 measured fastest with SSE2, AVX2 and AVX-512 alike).
const LANES: usize = 16;

/// `S` and `C` summed over `j` in one row's window, against the row's coordinates `xi`;
/// `cols[k]` is column `k` restricted to the window (all of one length). Blocks of
/// [`LANES`] pairs, each coordinate's block as a fixed-size array so that nothing is
/// bounds-checked; counts in f64 lanes (exact below 2^53), which vectorize best.
#[inline(always)]
fn window_fixed<const D: usize>(cols: [&[f64]; D], xi: [f64; D], h: f64, t: f64) -> (f64, u64) {
    let len = cols[0].len();
    let mut s = [0.0; LANES];
    let mut c = [0.0_f64; LANES];
    let zero = [0.0; LANES];
    let blocks = len / LANES;
    for b in 0..blocks {
        let mut block: [&[f64; LANES]; D] = [&zero; D];
        for (k, slot) in block.iter_mut().enumerate() {
            // Always a whole block: every column is `len` long.
            if let Ok(a) = <&[f64; LANES]>::try_from(&cols[k][b * LANES..(b + 1) * LANES]) {
                *slot = a;
            }
        }
        let mut prod = [1.0; LANES];
        let mut cheb = [0.0_f64; LANES];
        for k in 0..D {
            for l in 0..LANES {
                let a = (block[k][l] - xi[k]).abs();
                prod[l] *= factor(h, a);
                cheb[l] = if a > cheb[l] { a } else { cheb[l] };
            }
        }
        for l in 0..LANES {
            s[l] += prod[l];
            c[l] += if cheb[l] <= t { 1.0 } else { 0.0 };
        }
    }
    let mut row_s: f64 = s.iter().sum();
    let mut row_c = c.iter().sum::<f64>() as u64;
    let tail: [&[f64]; D] = std::array::from_fn(|k| &cols[k][blocks * LANES..]);
    for j in 0..len - blocks * LANES {
        let mut prod = 1.0;
        let mut cheb = 0.0_f64;
        for (col, x) in tail.iter().zip(xi) {
            let a = (col[j] - x).abs();
            prod *= factor(h, a);
            cheb = if a > cheb { a } else { cheb };
        }
        row_s += prod;
        row_c += u64::from(cheb <= t);
    }
    (row_s, row_c)
}

/// Every row's window for a dimension known at compile time.
#[inline(always)]
fn terms_fixed<const D: usize>(data: &[f64], n: usize, h: f64, t: f64) -> (Sum, u64) {
    let x0 = &data[..n];
    let mut s = Sum::default();
    let mut c = 0u64;
    let mut end = 0;
    for i in 0..n {
        end = end.max(i + 1);
        while end < n && x0[end] - x0[i] < h {
            end += 1;
        }
        let cols: [&[f64]; D] = std::array::from_fn(|k| &data[k * n + i + 1..k * n + end]);
        let xi: [f64; D] = std::array::from_fn(|k| data[k * n + i]);
        let (rs, rc) = window_fixed(cols, xi, h, t);
        s.add(rs);
        c += rc;
    }
    (s, c)
}

/// Every row's window for any dimension (loops over `k` at run time).
fn terms_any(data: &[f64], n: usize, d: usize, h: f64, t: f64) -> (Sum, u64) {
    let x0 = &data[..n];
    let mut s = Sum::default();
    let mut c = 0u64;
    let mut end = 0;
    let mut prods = Vec::new();
    let mut chebs = Vec::new();
    for i in 0..n {
        end = end.max(i + 1);
        while end < n && x0[end] - x0[i] < h {
            end += 1;
        }
        let len = end - i - 1;
        prods.clear();
        prods.resize(len, 1.0);
        chebs.clear();
        chebs.resize(len, 0.0_f64);
        for k in 0..d {
            let xik = data[k * n + i];
            let col = &data[k * n + i + 1..k * n + end];
            for ((p, m), x) in prods.iter_mut().zip(chebs.iter_mut()).zip(col) {
                let a = (x - xik).abs();
                *p *= factor(h, a);
                *m = if a > *m { a } else { *m };
            }
        }
        let mut row = [0.0; LANES];
        let mut chunks = prods.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (r, p) in row.iter_mut().zip(chunk) {
                *r += p;
            }
        }
        s.add(row.iter().sum::<f64>() + chunks.remainder().iter().sum::<f64>());
        c += chebs.iter().map(|&m| u64::from(m <= t)).sum::<u64>();
    }
    (s, c)
}

/// [`terms_fixed`] and [`terms_any`] by dimension, compiled for whatever vector unit the
/// build targets.
#[inline(always)]
fn terms_dispatch(data: &[f64], n: usize, d: usize, h: f64, t: f64) -> (Sum, u64) {
    match d {
        1 => terms_fixed::<1>(data, n, h, t),
        2 => terms_fixed::<2>(data, n, h, t),
        3 => terms_fixed::<3>(data, n, h, t),
        4 => terms_fixed::<4>(data, n, h, t),
        5 => terms_fixed::<5>(data, n, h, t),
        6 => terms_fixed::<6>(data, n, h, t),
        7 => terms_fixed::<7>(data, n, h, t),
        8 => terms_fixed::<8>(data, n, h, t),
        _ => terms_any(data, n, d, h, t),
    }
}

/// [`terms_dispatch`] compiled for AVX2 (4 lanes of f64 instead of SSE2's 2). No FMA:
/// contracting `a * b + c` would change roundings.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn terms_avx2(data: &[f64], n: usize, d: usize, h: f64, t: f64) -> (Sum, u64) {
    terms_dispatch(data, n, d, h, t)
}

/// Prepared samples ([`prepare`]) read from a plain slice: the LSCV terms of any width.
#[derive(Clone, Copy, Debug)]
pub struct LscvView<'a> {
    data: &'a [f64],
    n: usize,
    d: usize,
}

impl<'a> LscvView<'a> {
    /// Wraps `n × d` values written by [`prepare`], checking in O(n) that there are that
    /// many, `n >= 2`, `d >= 1`, all finite, and the first column is sorted (the pruning
    /// relies on it).
    pub fn new(data: &'a [f64], n: usize, d: usize) -> Result<LscvView<'a>> {
        if d == 0 {
            return Err(Error::ZeroDims);
        }
        if n < 2 {
            return Err(Error::LscvTooFew(n));
        }
        let expected = n.checked_mul(d).ok_or(Error::RaggedData {
            len: data.len(),
            dims: d,
        })?;
        if data.len() != expected {
            return Err(Error::BufferLen {
                what: "lscv",
                got: data.len(),
                expected,
            });
        }
        if let Some(i) = crate::samples::first_non_finite(data) {
            return Err(Error::NonFiniteSample {
                row: i % n,
                col: i / n,
                value: data[i],
            });
        }
        if let Some(i) = data[..n].windows(2).position(|w| w[1] < w[0]) {
            return Err(Error::BadIndex(format!(
                "lscv data is not sorted by its first column: row {} is {} after {}",
                i + 1,
                data[i + 1],
                data[i]
            )));
        }
        Ok(LscvView { data, n, d })
    }

    /// `S` and `C` for width `h` (finite, > 0: see [`crate::validate_width`]), pruned and
    /// vectorized; `C` equals [`naive_terms`]'s exactly, `S` to rounding.
    pub fn terms(&self, h: f64) -> Terms {
        let t = half_width(h);
        #[cfg(target_arch = "x86_64")]
        let (s, c) = if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            unsafe { terms_avx2(self.data, self.n, self.d, h, t) }
        } else {
            terms_dispatch(self.data, self.n, self.d, h, t)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (s, c) = terms_dispatch(self.data, self.n, self.d, h, t);
        let mut diagonal = 1.0;
        for _ in 0..self.d {
            diagonal *= factor(h, 0.0);
        }
        let mut total = Sum::default();
        total.add(2.0 * s.sum);
        total.add(2.0 * s.carry);
        total.add(self.n as f64 * diagonal);
        Terms {
            s: total.value(),
            c: 2 * c,
        }
    }

    /// The exact number of unordered pairs `i < j` that [`LscvView::terms`] evaluates for
    /// width `h`, in O(n) (two pointers over the sorted first column).
    pub fn candidate_pairs(&self, h: f64) -> u64 {
        let x0 = &self.data[..self.n];
        let mut pairs = 0u64;
        let mut end = 0;
        for i in 0..self.n {
            end = end.max(i + 1);
            while end < self.n && x0[end] - x0[i] < h {
                end += 1;
            }
            pairs += (end - i - 1) as u64;
        }
        pairs
    }

    /// Estimated seconds of [`LscvView::terms`] for width `h` on one core of the reference
    /// machine: `candidate_pairs(h) × d ×` [`NS_PER_PAIR_DIM`] (or
    /// [`NS_PER_PAIR_DIM_GENERIC`] above 8 dimensions), plus O(n) for the row scan.
    pub fn estimated_seconds(&self, h: f64) -> f64 {
        let per = if self.d <= 8 {
            NS_PER_PAIR_DIM
        } else {
            NS_PER_PAIR_DIM_GENERIC
        };
        (self.candidate_pairs(h) as f64 * self.d as f64 * per + self.n as f64) * 1e-9
    }

    /// LSCV score of width `h`: [`LscvView::terms`] then [`score`].
    pub fn score(&self, h: f64) -> Result<f64> {
        score(self.terms(h), self.n, self.d, h)
    }

    /// Number of samples (n).
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always `false`: a view holds at least two samples (kept for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Number of dimensions (d).
    pub fn dims(&self) -> usize {
        self.d
    }
}

/// `LSCV(h) = S / (n^2 h^2d) - 2 C / (n (n-1) h^d)`.
///
/// Errors (never a silent value): `n < 2` ([`Error::LscvTooFew`]), and
/// [`Error::LscvRange`] when `h^d` or `h^2d` is 0 or infinite, or the score is not finite:
/// then the powers under- or overflowed and no comparison of scores would mean anything.
pub fn score(terms: Terms, n: usize, d: usize, h: f64) -> Result<f64> {
    if n < 2 {
        return Err(Error::LscvTooFew(n));
    }
    let range = |reason: String| Error::LscvRange { h, d, reason };
    let hd = h.powf(d as f64);
    let h2d = hd * hd;
    for (name, v) in [("h^d", hd), ("h^2d", h2d)] {
        if v == 0.0 || !v.is_finite() {
            return Err(range(format!("{name} = {v:e} is out of float64 range")));
        }
    }
    let nf = n as f64;
    let value = terms.s / (nf * nf * h2d) - 2.0 * terms.c as f64 / (nf * (nf - 1.0) * hd);
    if value.is_finite() {
        Ok(value)
    } else {
        Err(range(format!("the score is {value}")))
    }
}

/// Index of the smallest score, the first one on ties; `None` for no scores.
pub fn select(scores: &[f64]) -> Option<usize> {
    scores
        .iter()
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
}

/// Owned prepared samples for LSCV ([`prepare`] into a `Vec`), shipped once to each
/// worker; deserializing re-runs [`LscvView::new`]'s checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawLscv")]
pub struct Lscv {
    n: usize,
    d: usize,
    /// On the wire as one block of little-endian bytes.
    #[serde(with = "crate::estimate::le_words")]
    data: Vec<f64>,
}

/// Unchecked wire form of [`Lscv`].
#[derive(Deserialize)]
struct RawLscv {
    n: usize,
    d: usize,
    #[serde(with = "crate::estimate::le_words")]
    data: Vec<f64>,
}

impl TryFrom<RawLscv> for Lscv {
    type Error = Error;

    fn try_from(raw: RawLscv) -> Result<Lscv> {
        LscvView::new(&raw.data, raw.n, raw.d)?;
        Ok(Lscv {
            n: raw.n,
            d: raw.d,
            data: raw.data,
        })
    }
}

impl Lscv {
    /// Checks and prepares the samples ([`prepare`]) into an owned buffer.
    pub fn new(samples: &Samples) -> Result<Lscv> {
        check(samples)?;
        let mut data = vec![0.0; samples.as_slice().len()];
        prepare(samples, &mut data)?;
        Ok(Lscv {
            n: samples.len(),
            d: samples.dims(),
            data,
        })
    }

    /// The prepared samples as a borrowed view.
    pub fn view(&self) -> LscvView<'_> {
        LscvView {
            data: &self.data,
            n: self.n,
            d: self.d,
        }
    }

    /// The prepared values: column-major, sorted by the first column.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// Number of samples (n).
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always `false` (kept for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Number of dimensions (d).
    pub fn dims(&self) -> usize {
        self.d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
    }

    fn grid(dims: usize, cells: Vec<i32>) -> Samples {
        let mut data: Vec<f64> = cells.iter().map(|&c| f64::from(c) * 0.25).collect();
        data.truncate(data.len() / dims * dims);
        Samples::from_rows(dims, data).unwrap()
    }

    #[test]
    fn tiny_example_by_hand() {
        // Three points on a line: 0, 0.25, 1. h = 0.5: pairs within 0.25 are (0, 0.25) both
        // ways; S = 3·0.5 (diagonal) + 2·(0.5 - 0.25) = 2.
        let s = Samples::from_rows(1, vec![0.0, 1.0, 0.25]).unwrap();
        let naive = naive_terms(&s, 0.5);
        assert_eq!(naive, Terms { s: 2.0, c: 2 });
        let fast = Lscv::new(&s).unwrap();
        assert_eq!(fast.view().terms(0.5), naive);
        assert_eq!(fast.view().candidate_pairs(0.5), 1);
        assert_eq!(fast.as_slice(), &[0.0, 0.25, 1.0]);
        // LSCV = 2 / (9 · 0.25) - 2·2 / (3·2·0.5) = 8/9 - 4/3.
        let v = score(naive, 3, 1, 0.5).unwrap();
        assert!((v - (8.0 / 9.0 - 4.0 / 3.0)).abs() < 1e-15, "{v}");
    }

    #[test]
    fn degenerate_data_is_refused_by_name() {
        let one = Samples::from_rows(2, vec![1.0, 2.0]).unwrap();
        assert_eq!(
            Lscv::new(&one).unwrap_err().to_string(),
            "lscv needs at least 2 samples (its cross term divides by n - 1), got n = 1"
        );
        assert!(matches!(
            score(Terms { s: 1.0, c: 0 }, 1, 2, 1.0),
            Err(Error::LscvTooFew(1))
        ));
        let constant = Samples::from_rows(2, vec![1.0, 3.5, 2.0, 3.5, 0.0, 3.5]).unwrap();
        assert_eq!(
            check(&constant).unwrap_err().to_string(),
            "column 1 (0-based) is 3.5 in all 3 samples: with no spread in that dimension \
             the lscv score keeps falling as the width shrinks; drop the column"
        );
        let mut out = vec![0.0; 6];
        assert!(prepare(&constant, &mut out).is_err());
        let ok = Samples::from_rows(2, vec![1.0, 3.5, 2.0, 3.0]).unwrap();
        assert_eq!(
            prepare(&ok, &mut out).unwrap_err().to_string(),
            "lscv buffer holds 6 values but 4 are needed"
        );
    }

    #[test]
    fn out_of_range_powers_are_errors() {
        let t = Terms { s: 10.0, c: 2 };
        let msg = score(t, 10, 3, 1e-100).unwrap_err().to_string();
        assert_eq!(
            msg,
            "lscv at h = 1e-100 in 3 dimensions: h^2d = 0e0 is out of float64 range"
        );
        let msg = score(t, 10, 2, 1e100).unwrap_err().to_string();
        assert!(msg.contains("h^2d = inf"), "{msg}");
        let msg = score(t, 10, 400, 1e-2).unwrap_err().to_string();
        assert!(msg.contains("h^d = 0e0"), "{msg}");
        assert!(score(t, 10, 2, 0.5).unwrap().is_finite());
    }

    #[test]
    fn view_checks_its_input() {
        assert!(
            LscvView::new(&[1.0, 0.0], 2, 1)
                .unwrap_err()
                .to_string()
                .contains("not sorted")
        );
        assert!(LscvView::new(&[0.0, 1.0, 2.0], 2, 1).is_err());
        assert!(LscvView::new(&[0.0, f64::NAN], 2, 1).is_err());
        assert!(LscvView::new(&[0.0], 1, 1).is_err());
        assert!(LscvView::new(&[0.0, 1.0], 2, 0).is_err());
        let v = LscvView::new(&[0.0, 1.0, 5.0, 6.0], 2, 2).unwrap();
        assert_eq!((v.len(), v.dims(), v.is_empty()), (2, 2, false));
        assert_eq!(v.candidate_pairs(1.0), 0);
        assert_eq!(v.candidate_pairs(1.5), 1);
        assert!(v.estimated_seconds(1.5) > 0.0);
        let lscv = Lscv::new(&Samples::from_rows(2, vec![0.0, 5.0, 1.0, 6.0]).unwrap()).unwrap();
        let json = serde_json::to_string(&lscv).unwrap();
        assert_eq!(serde_json::from_str::<Lscv>(&json).unwrap(), lscv);
        let swapped = json.replace("\"n\":2", "\"n\":3");
        assert!(serde_json::from_str::<Lscv>(&swapped).is_err());
    }

    #[test]
    fn select_takes_the_first_smallest() {
        assert_eq!(select(&[]), None);
        assert_eq!(select(&[3.0, -1.0, 2.0, -1.0]), Some(1));
        assert_eq!(select(&[0.5]), Some(0));
    }

    #[test]
    fn gaussian_sample_selects_a_sensible_width() {
        // N(0, I) in 2-D, n = 400: the LSCV curve has its minimum well inside 0.1..1.2.
        let s = crate::Gaussian::standard(2)
            .unwrap()
            .sample(400, 9)
            .unwrap();
        let lscv = Lscv::new(&s).unwrap();
        let widths: Vec<f64> = (1..=24).map(|k| f64::from(k) * 0.05).collect();
        let scores: Vec<f64> = widths
            .iter()
            .map(|&h| lscv.view().score(h).unwrap())
            .collect();
        let best = select(&scores).unwrap();
        assert!(best > 0 && best < widths.len() - 1, "{scores:?}");
        for &h in &widths {
            let naive = naive_terms(&s, h);
            let fast = lscv.view().terms(h);
            assert_eq!(fast.c, naive.c, "h = {h}");
            assert!(close(fast.s, naive.s), "h = {h}: {} vs {}", fast.s, naive.s);
        }
    }

    fn dataset() -> impl Strategy<Value = (Samples, f64)> {
        prop_oneof![1usize..=5, Just(8usize), Just(9usize)]
            .prop_flat_map(|d| {
                (
                    Just(d),
                    prop::collection::vec(-8i32..=8, 50 * d..=300 * d),
                    prop::collection::vec(any::<bool>(), 300),
                    prop_oneof![Just(0.5), Just(0.25), Just(1.0), 0.05f64..3.0],
                )
            })
            .prop_map(|(d, cells, dup, h)| {
                // Grid points (multiples of 0.25) give pairs exactly h/2 apart; repeat some
                // rows to get duplicates.
                let base = grid(d, cells);
                let mut data = Vec::new();
                for (i, row) in base.rows().enumerate() {
                    data.extend_from_slice(row);
                    if dup.get(i).copied().unwrap_or(false) && i % 3 == 0 {
                        data.extend_from_slice(row);
                    }
                }
                (Samples::from_rows(d, data).unwrap(), h)
            })
            .prop_filter("lscv needs a spread in every column", |(s, _)| {
                check(s).is_ok()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn fast_terms_match_the_double_loop((s, h) in dataset()) {
            let naive = naive_terms(&s, h);
            let lscv = Lscv::new(&s).unwrap();
            let fast = lscv.view().terms(h);
            prop_assert_eq!(fast.c, naive.c);
            prop_assert!(close(fast.s, naive.s), "{} vs {}", fast.s, naive.s);
            // Dispatch-free path (whatever the CPU) gives the same.
            let t = half_width(h);
            let (ps, pc) = terms_dispatch(lscv.as_slice(), s.len(), s.dims(), h, t);
            prop_assert_eq!(2 * pc, naive.c);
            let (as_, ac) = terms_any(lscv.as_slice(), s.len(), s.dims(), h, t);
            prop_assert_eq!(ac, pc);
            prop_assert!(close(as_.value(), ps.value()));
            // Pairs evaluated never exceed all pairs, and bound C.
            let pairs = lscv.view().candidate_pairs(h);
            let n = s.len() as u64;
            prop_assert!(pairs <= n * (n - 1) / 2);
            prop_assert!(2 * pairs >= fast.c);
        }

        #[test]
        fn same_width_selected((s, _) in dataset()) {
            let lscv = Lscv::new(&s).unwrap();
            let widths = [0.3, 0.5, 0.75, 1.0, 1.5, 2.0];
            let fast: Vec<f64> = widths.iter().map(|&h| lscv.view().score(h).unwrap()).collect();
            let naive: Vec<f64> = widths
                .iter()
                .map(|&h| score(naive_terms(&s, h), s.len(), s.dims(), h).unwrap())
                .collect();
            for (f, n) in fast.iter().zip(&naive) {
                prop_assert!((f - n).abs() <= 1e-9 * n.abs().max(1e-12), "{} vs {}", f, n);
            }
            prop_assert_eq!(select(&fast), select(&naive));
        }
    }
}
