//! The hypercube Parzen-window estimate: the literal reference and its fast prepared forms.
//!
//! Why the fast forms are bit-identical to [`estimate_naive`]: with `a = |x - p|` (the
//! same rounded subtraction in both) and a finite `h > 0`, the rounded quotient satisfies
//! `fl(a / h) <= 0.5` exactly when the real `a <= h / 2`. Monotone rounding gives one
//! direction; for the other, if `2a > h` with `h` in `[2^e, 2^(e+1))` then `2a - h` is a
//! positive multiple of `ulp(h)`, so `a / h - 0.5 > 2^-54`, which is past the midpoint
//! between `0.5` and the next double, so it cannot round down to `0.5`. (Subnormal `h` only
//! widens that gap.) `a <= h / 2` in turn equals `a <= t` for `t` the largest double
//! `<= h / 2`, which is `0.5 * h` except when that product rounds up (subnormal `h` with an
//! odd last bit). And "every coordinate within `t`" is "the largest coordinate distance
//! within `t`", so one maximum per sample is all a worker needs.
//!
//! Two layouts of those maxima are offered, each written into caller-provided buffers (so
//! they can live in shared memory) and read back from plain slices:
//!
//! - **Distances in sample order** ([`fill_distances`], [`count_scan`]; owned: [`Prepared`]):
//!   every width scans all n values, a memory-bound pass of 8 bytes per sample.
//! - **A bucket index** ([`BucketKey`], [`fill_index`], [`IndexView`]; owned:
//!   [`PreparedIndex`]): the distances grouped by a monotone key of their bit pattern, plus
//!   the offset of each bucket. A width reads two offsets and compares only the values of
//!   the one bucket that holds `t`, so a count costs about a microsecond instead of a pass
//!   over n. The fastest exact layout measured here, by four orders of magnitude per width;
//!   [`Prepared`] stays the scan because the binary's fault tests rely on jobs that take a
//!   while.
//! - **A partial bucket index** ([`PartialIndex`], [`PartialIndexView`]): the same offsets,
//!   but the values of only the buckets that given widths read, found in one pass (a
//!   histogram) that writes kilobytes instead of n values. What the coordinator shares when
//!   it knows its widths before it starts (it always does): at n = 1e6 a full index's 8 MB
//!   of fresh memory cost more in page faults than computing it.
//!
//! Why the index counts exactly: the bit patterns of non-negative doubles (`+inf` included)
//! increase with the value, and [`BucketKey::bucket`] only subtracts a constant (saturating),
//! shifts right and clamps to the last bucket, each of which keeps that order, so the key is
//! non-decreasing in the value. Hence a distance in a bucket below `bucket(t)` is `< t`, one
//! in a bucket above it is `> t`, and `#{d <= t}` is the offset of `bucket(t)` plus the
//! values `<= t` inside that bucket, compared exactly as in the scan. The key's base is
//! chosen from a subsample of the rows; it decides only how evenly the values spread over
//! the buckets (speed), never a count. Worst case (all distances in one bucket, for example
//! every sample at the same place) a count scans all n values, like [`count_scan`].
//!
//! Measured with `cargo bench -p parzen --bench kernel` (n = 1e6, d = 2, N(0, I), 100
//! widths, one core of the 2-core AMD EPYC VM shared with other builds, buffers touched
//! beforehand; two runs): the distances take 1.0 to 1.1 ms to fill and 0.10 to 0.14 ns per
//! sample per width to scan (10 to 14 ms per 100 widths); the index takes 3.8 to 4.7 ms to
//! fill (a histogram pass, then a scatter pass) and 0.15 to 0.3 µs per width (25 to 28 µs
//! per 100 widths in 1.0..1.2). A scan of u32 keys (the top half of each distance's bits,
//! exact ties resolved against the f64 values) was tried: 1.3 to 1.5 ms to fill, 0.28 to
//! 0.36 ns per sample per width. A freshly allocated 8 MB buffer
//! costs about 4 more ms of page faults on this VM, whichever layout fills it. The partial
//! index takes 2.4 ms (100 widths over 1.0..1.2 or 0.1..1.2, kept values included, no
//! caller buffers: its allocations are kilobytes); with an `if` around the kept values it
//! took 3.1 ms (mispredictions), without them 1.3 ms.

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
/// compiler turns it into packed compares. (Measured on the reference machine: explicit
/// AVX2 or AVX-512 versions of this loop were not faster.)
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

/// `max_j |x_j - p_j|`. Values are finite, so a plain compare picks the same maximum as
/// `f64::max`, without its NaN handling.
#[inline(always)]
fn chebyshev(row: &[f64], point: &[f64]) -> f64 {
    row.iter().zip(point).fold(0.0_f64, |m, (x, p)| {
        let a = (x - p).abs();
        if a > m { a } else { m }
    })
}

/// Calls `f` with [`chebyshev`] of every row, for a dimension known at compile time
/// (unrolled, vectorized).
#[inline(always)]
fn each_distance_of<const D: usize>(data: &[f64], point: &[f64], mut f: impl FnMut(f64)) {
    let mut p = [0.0; D];
    p.copy_from_slice(&point[..D]);
    for row in data.chunks_exact(D) {
        f(chebyshev(row, &p));
    }
}

/// Calls `f` with every sample's largest coordinate distance to `point`, in sample order
/// (`point` has `samples.dims()` coordinates: checked by the callers).
#[inline(always)]
fn each_distance(samples: &Samples, point: &[f64], mut f: impl FnMut(f64)) {
    let data = samples.as_slice();
    match samples.dims() {
        1 => each_distance_of::<1>(data, point, f),
        2 => each_distance_of::<2>(data, point, f),
        3 => each_distance_of::<3>(data, point, f),
        4 => each_distance_of::<4>(data, point, f),
        _ => samples.rows().for_each(|row| f(chebyshev(row, point))),
    }
}

/// Writes [`chebyshev`] of each row of `data` (rows of `dims` values, `out.len()` of them)
/// into `out`.
#[inline(always)]
fn each_distance_in(data: &[f64], dims: usize, point: &[f64], out: &mut [f64]) {
    fn of<const D: usize>(data: &[f64], point: &[f64], out: &mut [f64]) {
        let mut p = [0.0; D];
        p.copy_from_slice(&point[..D]);
        for (row, o) in data.chunks_exact(D).zip(out) {
            *o = chebyshev(row, &p);
        }
    }
    match dims {
        1 => of::<1>(data, point, out),
        2 => of::<2>(data, point, out),
        3 => of::<3>(data, point, out),
        4 => of::<4>(data, point, out),
        _ => {
            for (row, o) in data.chunks_exact(dims).zip(out) {
                *o = chebyshev(row, point);
            }
        }
    }
}

/// Checks that `point` has `samples.dims()` finite coordinates.
fn check_point(samples: &Samples, point: &[f64]) -> Result<()> {
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
    Ok(())
}

/// Checks that a caller's buffer has exactly the length needed.
fn check_len(what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got == expected {
        Ok(())
    } else {
        Err(Error::BufferLen {
            what,
            got,
            expected,
        })
    }
}

/// Writes every sample's largest coordinate distance `max_j |x_ij - p_j|` to `point` into
/// `out` (length `samples.len()`), in sample order: the input of [`count_scan`].
pub fn fill_distances(samples: &Samples, point: &[f64], out: &mut [f64]) -> Result<()> {
    check_point(samples, point)?;
    check_len("distances", out.len(), samples.len())?;
    let mut slots = out.iter_mut();
    each_distance(samples, point, |d| {
        if let Some(slot) = slots.next() {
            *slot = d;
        }
    });
    Ok(())
}

/// Number of `distances` (from [`fill_distances`]) inside the hypercube of edge `h`, by a
/// scan of all of them; meaningful for finite `h > 0` (see [`validate_width`]).
pub fn count_scan(distances: &[f64], h: f64) -> u64 {
    count_below(distances, half_width(h))
}

/// Buckets of the index [`BucketKey::for_samples`] chooses: 16 octaves of 128 buckets.
const INDEX_BUCKETS: u32 = 2048;
/// Right shift of a distance's bit pattern that leaves the exponent and the top 7 mantissa
/// bits: 128 buckets per octave.
const INDEX_SHIFT: u32 = 45;
/// About how many rows [`BucketKey::for_samples`] looks at to place the buckets.
const ANCHOR_ROWS: usize = 1024;

/// The monotone map from a distance to its bucket in the index: `(bits - base) >> shift`,
/// saturating at 0 below `base` and clamped to the last bucket. Plain data (`Copy`): ship it
/// beside the arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawBucketKey")]
pub struct BucketKey {
    base: u64,
    shift: u32,
    buckets: u32,
}

/// Unchecked wire form of [`BucketKey`].
#[derive(Deserialize)]
struct RawBucketKey {
    base: u64,
    shift: u32,
    buckets: u32,
}

impl TryFrom<RawBucketKey> for BucketKey {
    type Error = Error;

    fn try_from(raw: RawBucketKey) -> Result<BucketKey> {
        BucketKey::new(raw.base, raw.shift, raw.buckets)
    }
}

impl BucketKey {
    /// A key map with the given base bit pattern, shift (`< 64`) and bucket count (`>= 1`).
    pub fn new(base: u64, shift: u32, buckets: u32) -> Result<BucketKey> {
        if shift >= 64 {
            return Err(Error::BadIndex(format!(
                "bucket shift {shift} must be below 64"
            )));
        }
        if buckets == 0 {
            return Err(Error::BadIndex("bucket count must be at least 1".into()));
        }
        Ok(BucketKey {
            base,
            shift,
            buckets,
        })
    }

    /// The key map for these samples around `point` (which must have `samples.dims()` finite
    /// coordinates): 2048 buckets, 128 per octave, the last one holding the largest finite
    /// distance among about 1024 evenly spaced rows. Costs microseconds.
    pub fn for_samples(samples: &Samples, point: &[f64]) -> Result<BucketKey> {
        check_point(samples, point)?;
        let n = samples.len();
        let stride = (n / ANCHOR_ROWS).max(1);
        let mut anchor = 0.0_f64;
        for i in (0..n).step_by(stride).chain(std::iter::once(n - 1)) {
            let d = chebyshev(samples.row(i), point);
            if d > anchor && d.is_finite() {
                anchor = d;
            }
        }
        let top = anchor.to_bits() >> INDEX_SHIFT;
        let base = top.saturating_sub(u64::from(INDEX_BUCKETS - 1)) << INDEX_SHIFT;
        BucketKey::new(base, INDEX_SHIFT, INDEX_BUCKETS)
    }

    /// The bucket of a non-negative value (or `+inf`); non-decreasing in the value.
    #[inline(always)]
    pub fn bucket(&self, value: f64) -> usize {
        let k = value.to_bits().saturating_sub(self.base) >> self.shift;
        // At most `buckets - 1`, a u32: the cast is lossless.
        k.min(u64::from(self.buckets - 1)) as usize
    }

    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        self.buckets as usize
    }

    /// Length of the offsets array of an index with this key: `buckets() + 1`.
    pub fn offsets_len(&self) -> usize {
        self.buckets() + 1
    }
}

/// Writes the bucket index of the samples around `point` into caller buffers: `offsets`
/// (length [`BucketKey::offsets_len`]) gets the start of each bucket and then n, `values`
/// (length `samples.len()`) the distances grouped by bucket (in sample order within one).
///
/// Two passes over the samples (a histogram, then a scatter) and a buffer of
/// [`BucketKey::buckets`] positions; read it back with [`IndexView::new`].
pub fn fill_index(
    samples: &Samples,
    point: &[f64],
    key: &BucketKey,
    offsets: &mut [u64],
    values: &mut [f64],
) -> Result<()> {
    check_point(samples, point)?;
    check_len("offsets", offsets.len(), key.offsets_len())?;
    check_len("values", values.len(), samples.len())?;
    // u32 positions are measurably faster (half the cache footprint) where n allows.
    if u32::try_from(samples.len()).is_ok() {
        scatter::<u32>(samples, point, key, offsets, values);
    } else {
        scatter::<u64>(samples, point, key, offsets, values);
    }
    Ok(())
}

/// A position counter of [`fill_index`]: `u32` or `u64`.
trait Slot: Copy + Default + Into<u64> + std::ops::AddAssign {
    /// One.
    const ONE: Self;
    /// `v`, which fits (it is at most n).
    fn from_u64(v: u64) -> Self;
}

impl Slot for u32 {
    const ONE: u32 = 1;
    fn from_u64(v: u64) -> u32 {
        v as u32
    }
}

impl Slot for u64 {
    const ONE: u64 = 1;
    fn from_u64(v: u64) -> u64 {
        v
    }
}

/// [`fill_index`]'s two passes, lengths checked: a histogram of the buckets, its prefix
/// sums into `offsets`, then every distance written at its bucket's next position.
fn scatter<C: Slot>(
    samples: &Samples,
    point: &[f64],
    key: &BucketKey,
    offsets: &mut [u64],
    values: &mut [f64],
) {
    let mut next = vec![C::default(); key.buckets()];
    // `bucket` is at most `buckets - 1`, so the indexing below never fails.
    each_distance(samples, point, |d| next[key.bucket(d)] += C::ONE);
    let mut start = 0u64;
    for (offset, slot) in offsets.iter_mut().zip(next.iter_mut()) {
        *offset = start;
        start += (*slot).into();
        *slot = C::from_u64(*offset);
    }
    offsets[key.buckets()] = start;
    // Positions stay below n = values.len(): each bucket gets exactly its count.
    each_distance(samples, point, |d| {
        let slot = &mut next[key.bucket(d)];
        values[(*slot).into() as usize] = d;
        *slot += C::ONE;
    });
}

/// A bucket index read from plain slices (for example a shared-memory mapping): counts and
/// densities for any width without copying the arrays.
#[derive(Clone, Copy, Debug)]
pub struct IndexView<'a> {
    key: BucketKey,
    dims: usize,
    offsets: &'a [u64],
    values: &'a [f64],
}

impl<'a> IndexView<'a> {
    /// Wraps arrays written by [`fill_index`], checking their shape in O(buckets): `dims >= 1`,
    /// at least one value, `offsets.len() == key.offsets_len()`, offsets non-decreasing from
    /// 0 to `values.len()`. Counts can then never index out of bounds; that they are exact
    /// also needs every value in its own bucket, which [`IndexView::check_values`] checks.
    pub fn new(
        key: BucketKey,
        dims: usize,
        offsets: &'a [u64],
        values: &'a [f64],
    ) -> Result<IndexView<'a>> {
        if dims == 0 {
            return Err(Error::ZeroDims);
        }
        if values.is_empty() {
            return Err(Error::NoSamples);
        }
        check_starts("offsets", &key, offsets, values.len() as u64)?;
        Ok(IndexView {
            key,
            dims,
            offsets,
            values,
        })
    }

    /// Checks every value in O(n): not NaN, not negative (nor `-0.0`), and in the bucket its
    /// key names, so that counts are exact. Run it on arrays from an untrusted source.
    pub fn check_values(&self) -> Result<()> {
        check_bucket_values(&self.key, self.offsets, self.values)
    }

    /// Number of samples inside the hypercube of edge `h`, equal to [`count_scan`] and to the
    /// naive loop's count for finite `h > 0`; 0 for a negative or NaN `h`.
    #[inline]
    pub fn count(&self, h: f64) -> u64 {
        let Some(b) = read_bucket(&self.key, h) else {
            return 0;
        };
        let t = half_width(h);
        // In bounds: `new` checked offsets.len() == buckets + 1 and every offset <= n.
        let (lo, hi) = (self.offsets[b], self.offsets[b + 1]);
        lo + count_below(&self.values[lo as usize..hi as usize], t)
    }

    /// Density estimate `(count / n) / h^d`, bit-identical to [`estimate_naive`] for finite `h > 0`.
    pub fn density(&self, h: f64) -> f64 {
        density_from_count(self.count(h), self.values.len(), self.dims, h)
    }

    /// Number of samples (n).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always `false`: a view holds at least one sample (kept for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Number of dimensions (d).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// How many values a count for width `h` compares one by one (the size of its bucket).
    pub fn scanned(&self, h: f64) -> usize {
        let b = self.key.bucket(half_width(h).max(0.0));
        (self.offsets[b + 1] - self.offsets[b]) as usize
    }
}

/// A bucket index that keeps only the buckets some given widths read: the offsets of every
/// bucket (from a histogram of all n distances) but the values of a few buckets only, so it
/// is built in one pass over the samples that writes a few kilobytes, not n values.
///
/// What the coordinator shares with its workers: the widths of a run are known before it
/// starts, each reads exactly one bucket, and a hundred widths over 2048 buckets keep a few
/// percent of the values (all of them in the worst case, never more). A count for a width
/// whose bucket was not kept is an error ([`Error::NotIndexed`]), never a wrong number.
/// Counts are exact for the same reason as [`IndexView`]'s (see the module notes).
#[derive(Clone, Debug, PartialEq)]
pub struct PartialIndex {
    key: BucketKey,
    dims: usize,
    offsets: Vec<u64>,
    starts: Vec<u64>,
    values: Vec<f64>,
}

/// The arrays of a [`PartialIndex`], moved out (for example into shared memory); read them
/// back with [`PartialIndexView::new`].
#[derive(Clone, Debug, PartialEq)]
pub struct IndexParts {
    /// The monotone map from a distance to its bucket.
    pub key: BucketKey,
    /// Dimensions of the samples.
    pub dims: usize,
    /// Start of each bucket among all n distances in bucket order, then n.
    pub offsets: Vec<u64>,
    /// Start of each bucket in `values`, then `values.len()`: a bucket that was not kept
    /// (or is empty) has no values.
    pub starts: Vec<u64>,
    /// The distances of the kept buckets, bucket by bucket (in sample order within one).
    pub values: Vec<f64>,
}

impl PartialIndex {
    /// Indexes every sample's largest coordinate distance to `point` (which must have
    /// `samples.dims()` finite coordinates), keeping the buckets that `widths` read (widths
    /// that are not finite and > 0 keep nothing: their counts need no bucket or are refused
    /// beforehand by [`validate_width`]). One pass over the samples.
    pub fn new(samples: &Samples, point: &[f64], widths: &[f64]) -> Result<PartialIndex> {
        let key = BucketKey::for_samples(samples, point)?;
        let mut kept = vec![false; key.buckets()];
        for &h in widths {
            if let Some(b) = read_bucket(&key, h) {
                kept[b] = true;
            }
        }
        let (offsets, starts, values) = if u32::try_from(samples.len()).is_ok() {
            partial_pass::<u32>(samples, point, &key, &kept)
        } else {
            partial_pass::<u64>(samples, point, &key, &kept)
        };
        Ok(PartialIndex {
            key,
            dims: samples.dims(),
            offsets,
            starts,
            values,
        })
    }

    /// The index as a borrowed view.
    pub fn view(&self) -> PartialIndexView<'_> {
        PartialIndexView {
            key: self.key,
            dims: self.dims,
            offsets: &self.offsets,
            starts: &self.starts,
            values: &self.values,
        }
    }

    /// Number of samples inside the hypercube of edge `h`, or [`Error::NotIndexed`] when
    /// `h`'s bucket was not kept (see [`PartialIndexView::count`]).
    pub fn count(&self, h: f64) -> Result<u64> {
        self.view().count(h)
    }

    /// The arrays, moved out.
    pub fn into_parts(self) -> IndexParts {
        IndexParts {
            key: self.key,
            dims: self.dims,
            offsets: self.offsets,
            starts: self.starts,
            values: self.values,
        }
    }
}

/// The bucket a count for width `h` reads, or `None` when it reads none (`h` NaN or
/// negative, where the count is 0).
fn read_bucket(key: &BucketKey, h: f64) -> Option<usize> {
    let t = half_width(h);
    if t.is_nan() || t < 0.0 {
        None
    } else {
        Some(key.bucket(t))
    }
}

/// Calls `f` with the distances of consecutive blocks of rows and their buckets (computed
/// in a loop the compiler vectorizes), in sample order.
#[inline(always)]
fn each_block(
    samples: &Samples,
    point: &[f64],
    key: &BucketKey,
    mut f: impl FnMut(&[f64], &[u32]),
) {
    const BLOCK: usize = 256;
    let mut dists = [0.0f64; BLOCK];
    let mut buckets = [0u32; BLOCK];
    let dims = samples.dims();
    // Whole blocks first (fixed length: fully unrolled), then the rest.
    let mut rows = samples.as_slice().chunks_exact(dims * BLOCK);
    for block in &mut rows {
        each_distance_in(block, dims, point, &mut dists);
        for (b, &d) in buckets.iter_mut().zip(&dists) {
            // At most `buckets - 1`, a u32.
            *b = key.bucket(d) as u32;
        }
        f(&dists, &buckets);
    }
    let rest = rows.remainder();
    let m = rest.len() / dims;
    each_distance_in(rest, dims, point, &mut dists[..m]);
    for (b, &d) in buckets.iter_mut().zip(&dists[..m]) {
        *b = key.bucket(d) as u32;
    }
    f(&dists[..m], &buckets[..m]);
}

/// [`PartialIndex::new`]'s work: a histogram of every distance's bucket that sets the
/// distances of kept buckets aside in sample order, then those placed bucket by bucket.
/// Returns the offsets, the starts and the kept values.
///
/// Memory: the kept values once, plus the set-aside copy while it is at most an eighth of
/// n; past that the pass stops setting aside and a second pass writes the kept distances
/// straight into place, so the index never needs much more than its own size (the bound
/// the coordinator's memory budget assumes).
fn partial_pass<C: Slot>(
    samples: &Samples,
    point: &[f64],
    key: &BucketKey,
    kept: &[bool],
) -> (Vec<u64>, Vec<u64>, Vec<f64>) {
    let limit = (samples.len() / 8).max(1 << 16);
    let mut counts = vec![C::default(); key.buckets()];
    let mut aside = Vec::new();
    let mut overflow = false;
    let mut picked = [0.0f64; 256];
    // `bucket` is at most `buckets - 1` = `kept.len() - 1`: the indexing never fails.
    each_block(samples, point, key, |dists, buckets| {
        for &b in buckets {
            counts[b as usize] += C::ONE;
        }
        if overflow {
            return;
        }
        // Branch-free: which bucket is kept is unpredictable sample by sample, and the
        // mispredictions of an `if` cost more than the histogram itself (measured).
        let mut len = 0;
        for (&d, &b) in dists.iter().zip(buckets) {
            // `len` counts kept distances among at most 256: always in bounds.
            picked[len.min(picked.len() - 1)] = d;
            len += usize::from(kept[b as usize]);
        }
        aside.extend_from_slice(&picked[..len]);
        if aside.len() > limit {
            overflow = true;
            aside = Vec::new();
        }
    });
    let mut offsets = Vec::with_capacity(key.offsets_len());
    let mut starts = Vec::with_capacity(key.offsets_len());
    let mut next = Vec::with_capacity(key.buckets());
    let (mut offset, mut start) = (0u64, 0u64);
    for (&count, &keep) in counts.iter().zip(kept) {
        offsets.push(offset);
        starts.push(start);
        next.push(start as usize);
        offset += count.into();
        if keep {
            start += count.into();
        }
    }
    offsets.push(offset);
    starts.push(start);
    // Each kept distance lands below `start`, the number of them (a usize: it is at most n).
    let mut values = vec![0.0; start as usize];
    let mut place = |d: f64, b: usize| {
        let slot = &mut next[b];
        values[*slot] = d;
        *slot += 1;
    };
    if overflow {
        each_block(samples, point, key, |dists, buckets| {
            for (&d, &b) in dists.iter().zip(buckets) {
                if kept[b as usize] {
                    place(d, b as usize);
                }
            }
        });
    } else {
        for d in aside {
            place(d, key.bucket(d));
        }
    }
    (offsets, starts, values)
}

/// Checks one array of bucket starts: `key.offsets_len()` values, non-decreasing from 0 to
/// `end`.
fn check_starts(what: &'static str, key: &BucketKey, starts: &[u64], end: u64) -> Result<()> {
    check_len(what, starts.len(), key.offsets_len())?;
    if starts[0] != 0 {
        return Err(Error::BadIndex(format!(
            "{what} start at {}, not 0",
            starts[0]
        )));
    }
    if let Some(i) = starts.windows(2).position(|w| w[1] < w[0]) {
        return Err(Error::BadIndex(format!(
            "{what} {} = {} is below {what} {} = {}",
            i + 1,
            starts[i + 1],
            i,
            starts[i]
        )));
    }
    let last = starts[starts.len() - 1];
    if last != end {
        return Err(Error::BadIndex(format!("{what} end at {last}, not {end}")));
    }
    Ok(())
}

/// Checks that every value is not NaN, not negative (nor `-0.0`), and in the bucket its
/// key names, bucket `b` being `values[starts[b]..starts[b + 1]]` (shapes already checked
/// by [`check_starts`]).
fn check_bucket_values(key: &BucketKey, starts: &[u64], values: &[f64]) -> Result<()> {
    for (b, w) in starts.windows(2).enumerate() {
        let bucket = &values[w[0] as usize..w[1] as usize];
        if let Some(i) = bucket
            .iter()
            .position(|&v| v.is_nan() || v.is_sign_negative() || key.bucket(v) != b)
        {
            let at = w[0] as usize + i;
            return Err(Error::BadIndex(format!(
                "value {at} = {:e} does not belong in bucket {b}",
                values[at]
            )));
        }
    }
    Ok(())
}

/// A [`PartialIndex`] read from plain slices (for example a shared-memory mapping).
#[derive(Clone, Copy, Debug)]
pub struct PartialIndexView<'a> {
    key: BucketKey,
    dims: usize,
    offsets: &'a [u64],
    starts: &'a [u64],
    values: &'a [f64],
}

impl<'a> PartialIndexView<'a> {
    /// Wraps the arrays of an [`IndexParts`], checking their shape in O(buckets): `dims >= 1`,
    /// `offsets` non-decreasing from 0 to n >= 1, `starts` non-decreasing from 0 to
    /// `values.len()`, and every bucket either kept whole or not at all. Counts can then
    /// never index out of bounds; that they are exact also needs every value in its own
    /// bucket, which [`PartialIndexView::check_values`] checks.
    pub fn new(
        key: BucketKey,
        dims: usize,
        offsets: &'a [u64],
        starts: &'a [u64],
        values: &'a [f64],
    ) -> Result<PartialIndexView<'a>> {
        if dims == 0 {
            return Err(Error::ZeroDims);
        }
        check_len("offsets", offsets.len(), key.offsets_len())?;
        let n = offsets[offsets.len() - 1];
        if n == 0 {
            return Err(Error::NoSamples);
        }
        check_starts("offsets", &key, offsets, n)?;
        check_starts("starts", &key, starts, values.len() as u64)?;
        let sizes = |s: &'a [u64]| s.windows(2).map(|w| w[1] - w[0]);
        if let Some((b, (all, kept))) = sizes(offsets)
            .zip(sizes(starts))
            .enumerate()
            .find(|(_, (all, kept))| *kept != 0 && kept != all)
        {
            return Err(Error::BadIndex(format!(
                "bucket {b} keeps {kept} of its {all} values (a bucket is kept whole or not \
                 at all)"
            )));
        }
        Ok(PartialIndexView {
            key,
            dims,
            offsets,
            starts,
            values,
        })
    }

    /// Checks every kept value in O(kept): not NaN, not negative (nor `-0.0`), and in the
    /// bucket its key names, so that counts are exact. Run it on arrays from an untrusted
    /// source.
    pub fn check_values(&self) -> Result<()> {
        check_bucket_values(&self.key, self.starts, self.values)
    }

    /// Number of samples inside the hypercube of edge `h`, equal to [`count_scan`] and to
    /// the naive loop's count for finite `h > 0`; 0 for a negative or NaN `h`;
    /// [`Error::NotIndexed`] when the values `h` needs were not kept.
    #[inline]
    pub fn count(&self, h: f64) -> Result<u64> {
        let Some(b) = read_bucket(&self.key, h) else {
            return Ok(0);
        };
        // In bounds: `new` checked both arrays' lengths (buckets + 1) and their ends.
        let (lo, hi) = (self.offsets[b], self.offsets[b + 1]);
        let (from, to) = (self.starts[b], self.starts[b + 1]);
        if to - from != hi - lo {
            return Err(Error::NotIndexed { h, bucket: b });
        }
        Ok(lo + count_below(&self.values[from as usize..to as usize], half_width(h)))
    }

    /// Density estimate `(count / n) / h^d`, bit-identical to [`estimate_naive`] for finite
    /// `h > 0`, or [`Error::NotIndexed`] as [`PartialIndexView::count`].
    pub fn density(&self, h: f64) -> Result<f64> {
        Ok(density_from_count(self.count(h)?, self.len(), self.dims, h))
    }

    /// Number of samples (n).
    pub fn len(&self) -> usize {
        self.offsets[self.offsets.len() - 1] as usize
    }

    /// Always `false`: a view holds at least one sample (kept for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of dimensions (d).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// How many distances the index keeps (at most n).
    pub fn kept(&self) -> usize {
        self.values.len()
    }
}

/// Per-point precomputation shipped once to each worker: each sample's largest coordinate
/// distance `max_j |x_ij - p_j|` to the point, in sample order, owned ([`fill_distances`]);
/// a count scans them all ([`count_scan`]), a memory-bound job of 8 bytes per sample.
///
/// Deserializing checks that there is at least one distance, `dims >= 1`, and no distance is
/// NaN or negative.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPrepared")]
pub struct Prepared {
    dims: usize,
    /// On the wire as one block of little-endian bytes: a million distances encode and
    /// decode as a copy, not a million separate values.
    #[serde(with = "le_words")]
    dists: Vec<f64>,
}

/// Unchecked wire form of [`Prepared`], validated on the way in.
#[derive(Deserialize)]
struct RawPrepared {
    dims: usize,
    #[serde(with = "le_words")]
    dists: Vec<f64>,
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
        if let Some(i) = raw
            .dists
            .iter()
            .position(|d| d.is_nan() || d.is_sign_negative())
        {
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
        let mut dists = vec![0.0; samples.len()];
        fill_distances(samples, point, &mut dists)?;
        Ok(Prepared {
            dims: samples.dims(),
            dists,
        })
    }

    /// Number of samples inside the hypercube of edge `h` (meaningful for finite `h > 0`;
    /// see [`validate_width`]).
    pub fn count(&self, h: f64) -> u64 {
        count_scan(&self.dists, h)
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

/// Per-point precomputation with counts in about a microsecond: the bucket index of every
/// sample's largest coordinate distance to the point (see the module docs), owned.
///
/// Deserializing checks the shape and every value ([`IndexView::new`],
/// [`IndexView::check_values`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPreparedIndexIndex")]
pub struct PreparedIndex {
    dims: usize,
    key: BucketKey,
    /// On the wire as one block of little-endian bytes, like `values`.
    #[serde(with = "le_words")]
    offsets: Vec<u64>,
    /// On the wire as one block of little-endian bytes: a million distances encode and
    /// decode as a copy, not a million separate values.
    #[serde(with = "le_words")]
    values: Vec<f64>,
}

/// Unchecked wire form of [`PreparedIndex`], validated on the way in.
#[derive(Deserialize)]
struct RawPreparedIndexIndex {
    dims: usize,
    key: BucketKey,
    #[serde(with = "le_words")]
    offsets: Vec<u64>,
    #[serde(with = "le_words")]
    values: Vec<f64>,
}

/// `Vec<f64>` or `Vec<u64>` as one byte string of little-endian values.
pub(crate) mod le_words {
    use std::marker::PhantomData;

    use serde::{Deserializer, Serializer};

    /// An 8-byte plain value with a little-endian form.
    pub(crate) trait Word: Copy {
        fn to_le(self) -> [u8; 8];
        fn from_le(bytes: [u8; 8]) -> Self;
    }

    impl Word for f64 {
        fn to_le(self) -> [u8; 8] {
            self.to_le_bytes()
        }
        fn from_le(bytes: [u8; 8]) -> f64 {
            f64::from_le_bytes(bytes)
        }
    }

    impl Word for u64 {
        fn to_le(self) -> [u8; 8] {
            self.to_le_bytes()
        }
        fn from_le(bytes: [u8; 8]) -> u64 {
            u64::from_le_bytes(bytes)
        }
    }

    pub(crate) fn serialize<T: Word, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le()).collect();
        serde_bytes::serialize(&bytes, s)
    }

    pub(crate) fn deserialize<'de, T: Word, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<T>, D::Error> {
        d.deserialize_bytes(Words(PhantomData))
    }

    /// Straight from the decoder's bytes to the values: one allocation, the result's.
    struct Words<T>(PhantomData<T>);

    impl<'de, T: Word> serde::de::Visitor<'de> for Words<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a byte string of little-endian 8-byte values")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Vec<T>, E> {
            if !bytes.len().is_multiple_of(8) {
                return Err(E::custom(format!(
                    "{} bytes is not a whole number of 8-byte values",
                    bytes.len()
                )));
            }
            Ok(bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    T::from_le(b)
                })
                .collect())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Vec<T>, E> {
            self.visit_bytes(&bytes)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // Self-describing formats (JSON) hand bytes over as a sequence of numbers.
            let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
            while let Some(b) = seq.next_element::<u8>()? {
                bytes.push(b);
            }
            self.visit_bytes(&bytes)
        }
    }
}

impl TryFrom<RawPreparedIndexIndex> for PreparedIndex {
    type Error = Error;

    fn try_from(raw: RawPreparedIndexIndex) -> Result<PreparedIndex> {
        IndexView::new(raw.key, raw.dims, &raw.offsets, &raw.values)?.check_values()?;
        Ok(PreparedIndex {
            dims: raw.dims,
            key: raw.key,
            offsets: raw.offsets,
            values: raw.values,
        })
    }
}

impl PreparedIndex {
    /// Builds the bucket index of every sample's largest coordinate distance to `point`,
    /// which must have `samples.dims()` finite coordinates ([`BucketKey::for_samples`] then
    /// [`fill_index`] into owned buffers).
    pub fn new(samples: &Samples, point: &[f64]) -> Result<PreparedIndex> {
        let key = BucketKey::for_samples(samples, point)?;
        let mut offsets = vec![0u64; key.offsets_len()];
        let mut values = vec![0.0f64; samples.len()];
        fill_index(samples, point, &key, &mut offsets, &mut values)?;
        Ok(PreparedIndex {
            dims: samples.dims(),
            key,
            offsets,
            values,
        })
    }

    /// The index as a borrowed view.
    pub fn view(&self) -> IndexView<'_> {
        IndexView {
            key: self.key,
            dims: self.dims,
            offsets: &self.offsets,
            values: &self.values,
        }
    }

    /// Number of samples inside the hypercube of edge `h` (meaningful for finite `h > 0`;
    /// see [`validate_width`]).
    pub fn count(&self, h: f64) -> u64 {
        self.view().count(h)
    }

    /// Density estimate `(count / n) / h^d`, bit-identical to [`estimate_naive`] for finite `h > 0`.
    pub fn density(&self, h: f64) -> f64 {
        self.view().density(h)
    }

    /// Number of samples (n).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Always `false`: a prepared point holds at least one sample (kept for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Number of dimensions (d).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// The key map of the index.
    pub fn key(&self) -> BucketKey {
        self.key
    }

    /// Start of each bucket in [`PreparedIndex::values`], then n.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Each sample's largest coordinate distance to the point, grouped by bucket (not in
    /// sample order).
    pub fn values(&self) -> &[f64] {
        &self.values
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
        let index = PreparedIndex::new(&s, &p).unwrap();
        assert_eq!(index.count(1.0), 3);
        assert_eq!(index.density(1.0), 0.3);
        assert_eq!(
            (index.len(), index.dims(), index.is_empty()),
            (10, 3, false)
        );
        assert_eq!(index.offsets().len(), index.key().offsets_len());
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
        let index = PreparedIndex::new(&s, &p).unwrap();
        for (h, k, density) in expected {
            assert_eq!(prep.count(h), k, "h = {h}");
            assert_eq!(index.count(h), k, "h = {h}");
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
        let index = PreparedIndex::new(&s, &[-f64::MAX]).unwrap();
        assert!(index.values().contains(&f64::INFINITY));
        for h in [1.0, 1e300, f64::MAX] {
            assert_eq!(
                prep.density(h).to_bits(),
                estimate_naive(&s, &[-f64::MAX], h).to_bits()
            );
            assert_eq!(index.density(h).to_bits(), prep.density(h).to_bits());
        }
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let prep = Prepared::new(&article_cube(), &[0.0, 0.0, 0.0]).unwrap();
        let json = serde_json::to_string(&prep).unwrap();
        let back: Prepared = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prep);
        assert!(
            serde_json::from_str::<Prepared>(r#"{"dims":0,"dists":[0,0,0,0,0,0,240,63]}"#).is_err()
        );
        assert!(serde_json::from_str::<Prepared>(r#"{"dims":1,"dists":[]}"#).is_err());
        // -1.0 as little-endian bytes.
        assert!(
            serde_json::from_str::<Prepared>(r#"{"dims":1,"dists":[0,0,0,0,0,0,240,191]}"#)
                .is_err()
        );
        let one: Prepared =
            serde_json::from_str(r#"{"dims":1,"dists":[0,0,0,0,0,0,240,63]}"#).unwrap();
        assert_eq!(one.distances(), &[1.0]);
    }

    #[test]
    fn index_serde_round_trip_and_validation() {
        let prep = PreparedIndex::new(&article_cube(), &[0.0, 0.0, 0.0]).unwrap();
        let json = serde_json::to_string(&prep).unwrap();
        let back: PreparedIndex = serde_json::from_str(&json).unwrap();
        assert_eq!(back, prep);
        // Tamper with the wire form: every inconsistency is refused, never a wrong count.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let tampered = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = value.clone();
            edit(&mut v);
            serde_json::from_value::<PreparedIndex>(v)
                .unwrap_err()
                .to_string()
        };
        let le_bytes = |words: &[u64]| -> serde_json::Value {
            words
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .collect::<Vec<u8>>()
                .into()
        };
        assert!(tampered(&|v| v["dims"] = 0.into()).contains("dims = 0"));
        assert!(tampered(&|v| v["key"]["shift"] = 64.into()).contains("shift 64"));
        assert!(tampered(&|v| v["values"] = le_bytes(&[0])).contains("offsets end at 10, not 1"));
        // A value moved into another bucket, and a negative one.
        let mut values = prep.values().to_vec();
        values.swap(0, 9);
        let moved = values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        if prep.key().bucket(values[0]) != prep.key().bucket(values[9]) {
            let msg = tampered(&|v| v["values"] = le_bytes(&moved));
            assert!(msg.contains("does not belong in bucket"), "{msg}");
        }
        let mut negative: Vec<u64> = prep.values().iter().map(|v| v.to_bits()).collect();
        negative[0] = (-1.0f64).to_bits();
        assert!(tampered(&|v| v["values"] = le_bytes(&negative)).contains("does not belong"));
        let mut offsets = prep.offsets().to_vec();
        offsets[1] = 11;
        let msg = tampered(&|v| v["offsets"] = le_bytes(&offsets));
        assert!(msg.contains("is below offsets 1 = 11"), "{msg}");
        assert!(tampered(&|v| v["offsets"] = le_bytes(&[0, 10])).contains("offsets buffer"));
    }

    #[test]
    fn buffers_of_the_wrong_length_are_refused() {
        let s = article_cube();
        let p = [0.0, 0.0, 0.0];
        let key = BucketKey::for_samples(&s, &p).unwrap();
        let mut offsets = vec![0u64; key.offsets_len()];
        let mut values = vec![0.0; 10];
        assert_eq!(
            fill_index(&s, &p, &key, &mut offsets[1..], &mut values)
                .unwrap_err()
                .to_string(),
            "offsets buffer holds 2048 values but 2049 are needed"
        );
        assert_eq!(
            fill_index(&s, &p, &key, &mut offsets, &mut values[..9])
                .unwrap_err()
                .to_string(),
            "values buffer holds 9 values but 10 are needed"
        );
        assert_eq!(
            fill_distances(&s, &p, &mut values[..3])
                .unwrap_err()
                .to_string(),
            "distances buffer holds 3 values but 10 are needed"
        );
        assert!(fill_index(&s, &p[..2], &key, &mut offsets, &mut values).is_err());
        assert!(BucketKey::new(0, 3, 0).is_err());
        fill_index(&s, &p, &key, &mut offsets, &mut values).unwrap();
        let view = IndexView::new(key, 3, &offsets, &values).unwrap();
        view.check_values().unwrap();
        assert_eq!(view.count(1.0), 3);
        assert_eq!((view.len(), view.dims(), view.is_empty()), (10, 3, false));
        assert!(view.scanned(1.0) <= 10);
        assert_eq!(view.count(-1.0), 0);
        assert_eq!(view.count(f64::NAN), 0);
        assert_eq!(view.count(f64::INFINITY), 10);
        assert!(IndexView::new(key, 3, &offsets, &[]).is_err());
    }

    #[test]
    fn one_crowded_bucket_still_counts_exactly() {
        // Every sample at the same distance: one bucket holds all of them.
        let s = Samples::from_rows(1, vec![0.25; 100]).unwrap();
        let prep = PreparedIndex::new(&s, &[0.0]).unwrap();
        assert_eq!(prep.view().scanned(0.5), 100);
        assert_eq!(prep.count(0.5), 100);
        assert_eq!(prep.count(f64::from_bits(0.5f64.to_bits() - 1)), 0);
    }

    #[test]
    fn a_partial_index_keeps_only_what_its_widths_read() {
        let s = crate::Gaussian::standard(2)
            .unwrap()
            .sample(20_000, 7)
            .unwrap();
        let p = [0.1, -0.2];
        let widths = [0.5, 0.51, 1.0, 2.0];
        let full = PreparedIndex::new(&s, &p).unwrap();
        let part = PartialIndex::new(&s, &p, &widths).unwrap();
        let view = part.view();
        view.check_values().unwrap();
        assert_eq!(
            (view.len(), view.dims(), view.is_empty()),
            (20_000, 2, false)
        );
        assert!(
            view.kept() > 0 && view.kept() < 20_000 / 10,
            "{}",
            view.kept()
        );
        for h in widths {
            assert_eq!(part.count(h).unwrap(), full.count(h), "h = {h}");
            assert_eq!(
                view.density(h).unwrap().to_bits(),
                estimate_naive(&s, &p, h).to_bits()
            );
        }
        // Widths whose count needs no bucket.
        assert_eq!(part.count(-1.0).unwrap(), 0);
        assert_eq!(part.count(f64::NAN).unwrap(), 0);
        // A width it was not built for: refused by name, never a wrong count.
        let e = part.count(0.75).unwrap_err();
        assert!(matches!(e, Error::NotIndexed { h, .. } if h == 0.75), "{e}");
        assert!(e.to_string().contains("width 0.75 reads bucket"), "{e}");
        // Widths that are not finite and > 0 keep nothing; infinity keeps the last bucket.
        let none = PartialIndex::new(&s, &p, &[f64::NAN, -2.0]).unwrap();
        assert_eq!(none.view().kept(), 0);
        let inf = PartialIndex::new(&s, &p, &[f64::INFINITY]).unwrap();
        assert_eq!(inf.count(f64::INFINITY).unwrap(), 20_000);
        assert!(PartialIndex::new(&s, &p[..1], &widths).is_err());
    }

    #[test]
    fn a_partial_index_that_keeps_most_samples_takes_the_second_pass() {
        // 200 000 samples, a width for nearly every bucket: far more than an eighth of them
        // kept, so the kept distances are written by a second pass. Same counts either way.
        let s = crate::Gaussian::standard(2)
            .unwrap()
            .sample(200_000, 3)
            .unwrap();
        let p = [0.0, 0.0];
        let widths: Vec<f64> = (1..=4000).map(|i| f64::from(i) * 0.002).collect();
        let part = PartialIndex::new(&s, &p, &widths).unwrap();
        assert!(part.view().kept() > 200_000 / 2, "{}", part.view().kept());
        part.view().check_values().unwrap();
        let full = PreparedIndex::new(&s, &p).unwrap();
        for &h in widths.iter().step_by(37) {
            assert_eq!(part.count(h).unwrap(), full.count(h), "h = {h}");
        }
    }

    #[test]
    fn hostile_partial_arrays_are_refused() {
        // Ten samples in one bucket, the one width 0.5 reads, and one far away.
        let mut data = vec![0.25; 10];
        data.push(100.0);
        let s = Samples::from_rows(1, data).unwrap();
        let p = [0.0];
        let parts = PartialIndex::new(&s, &p, &[0.5]).unwrap().into_parts();
        let (key, offsets, starts, values) = (parts.key, parts.offsets, parts.starts, parts.values);
        let err = |offsets: &[u64], starts: &[u64], values: &[f64]| {
            PartialIndexView::new(key, 1, offsets, starts, values)
                .unwrap_err()
                .to_string()
        };
        assert!(PartialIndexView::new(key, 0, &offsets, &starts, &values).is_err());
        // A bucket kept in part.
        let b = key.bucket(0.25);
        assert_eq!(values.len(), 10);
        let mut short = starts.clone();
        short[b + 1..].iter_mut().for_each(|v| *v -= 1);
        let msg = err(&offsets, &short, &values[..values.len() - 1]);
        assert!(msg.contains(&format!("bucket {b} keeps")), "{msg}");
        // Starts that do not end at the values' length, or go down.
        assert!(err(&offsets, &starts, &values[1..]).contains("starts end at"));
        let mut down = starts.clone();
        down[1] = 5;
        assert!(err(&offsets, &down, &values).contains("starts 1 = 5"));
        assert!(err(&offsets[1..], &starts, &values).contains("offsets buffer"));
        assert!(err(&vec![0; offsets.len()], &starts, &values).contains("no samples"));
        // A value moved out of its bucket is caught by the O(kept) check.
        let mut moved = values.clone();
        moved[0] = 7.0;
        let view = PartialIndexView::new(key, 1, &offsets, &starts, &moved).unwrap();
        assert!(
            view.check_values()
                .unwrap_err()
                .to_string()
                .contains("does not belong")
        );
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
        let index = PreparedIndex::new(s, p).unwrap();
        index.view().check_values().unwrap();
        prop_assert_eq!(
            index.density(h).to_bits(),
            naive.to_bits(),
            "index, h = {:e}",
            h
        );
        // The partial index, kept for this width and read back from its parts.
        let parts = PartialIndex::new(s, p, &[h]).unwrap().into_parts();
        let view = PartialIndexView::new(
            parts.key,
            parts.dims,
            &parts.offsets,
            &parts.starts,
            &parts.values,
        )
        .unwrap();
        view.check_values().unwrap();
        prop_assert_eq!(
            view.density(h).unwrap().to_bits(),
            naive.to_bits(),
            "partial index, h = {:e}",
            h
        );
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
            let index = PreparedIndex::new(&s, &p).unwrap();
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(prep.count(lo) <= prep.count(hi));
            prop_assert!(prep.count(hi) <= s.len() as u64);
            prop_assert_eq!(index.count(lo), prep.count(lo));
            prop_assert_eq!(index.count(hi), prep.count(hi));
        }
    }
}
