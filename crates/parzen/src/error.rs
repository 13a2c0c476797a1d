//! The crate's one error type: every way building, estimating, sampling or loading can fail.

use std::path::PathBuf;

/// Everything that can go wrong in this crate; each message is one lowercase line that names
/// the offending value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Samples were given zero dimensions per row.
    #[error("samples need at least one dimension, got dims = 0")]
    ZeroDims,

    /// Samples were given no values at all.
    #[error("no samples: the data is empty")]
    NoSamples,

    /// The flat data length is not a whole number of rows.
    #[error("data length {len} is not a multiple of the dimension count {dims}")]
    RaggedData {
        /// Number of values given.
        len: usize,
        /// Dimensions per sample.
        dims: usize,
    },

    /// A sample coordinate is NaN or infinite (indices are 0-based).
    #[error("sample {row}, coordinate {col} (0-based) is {value}; samples must be finite")]
    NonFiniteSample {
        /// 0-based sample (row) index.
        row: usize,
        /// 0-based coordinate (column) index.
        col: usize,
        /// The offending value.
        value: f64,
    },

    /// A point (or pdf argument) has the wrong number of coordinates.
    #[error("point has {got} coordinates but the samples have {expected} dimensions")]
    PointDims {
        /// Coordinates in the point.
        got: usize,
        /// Dimensions expected.
        expected: usize,
    },

    /// A point coordinate is NaN or infinite (index is 0-based).
    #[error("point coordinate {index} (0-based) is {value}; the point must be finite")]
    NonFinitePoint {
        /// 0-based coordinate index.
        index: usize,
        /// The offending value.
        value: f64,
    },

    /// A window width is not a finite number > 0.
    #[error("window width must be a finite number > 0, got {0}")]
    InvalidWidth(f64),

    /// A width specification could not be parsed (the spec quoted to about 200 bytes).
    #[error("bad width spec {}: {reason}", crate::data::quote(spec))]
    WidthSpec {
        /// The offending item (or the whole spec when it is empty).
        spec: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A Gaussian was given an empty mean vector.
    #[error("gaussian mean must have at least one dimension, got an empty mean")]
    EmptyMean,

    /// A Gaussian covariance has the wrong number of entries.
    #[error(
        "covariance has {len} entries but a {dims}-dimensional mean needs {dims}x{dims} = {expected}"
    )]
    CovLength {
        /// Entries given.
        len: usize,
        /// Dimensions of the mean.
        dims: usize,
        /// Entries needed (`dims * dims`).
        expected: usize,
    },

    /// A Gaussian parameter is NaN or infinite.
    #[error("gaussian {what} entry {index} (0-based) is {value}; parameters must be finite")]
    NonFiniteParam {
        /// `"mean"` or `"covariance"`.
        what: &'static str,
        /// 0-based flat index into the parameter.
        index: usize,
        /// The offending value.
        value: f64,
    },

    /// A Gaussian covariance matrix is not symmetric.
    #[error("covariance is not symmetric: entry ({i}, {j}) = {a} but ({j}, {i}) = {b}")]
    NotSymmetric {
        /// 0-based row.
        i: usize,
        /// 0-based column.
        j: usize,
        /// Value at (i, j).
        a: f64,
        /// Value at (j, i).
        b: f64,
    },

    /// A Gaussian covariance matrix is not positive definite (Cholesky failed).
    #[error("covariance is not positive definite: cholesky pivot {pivot} (0-based) is {value}")]
    NotPositiveDefinite {
        /// 0-based index of the failing pivot.
        pivot: usize,
        /// The non-positive pivot value.
        value: f64,
    },

    /// Zero samples were requested from a Gaussian.
    #[error("sample count must be >= 1, got {0}")]
    SampleCount(usize),

    /// Drawing `n` samples of `d` dimensions needs more memory than can be allocated.
    #[error("{n} samples of {d} dimensions need {bytes} bytes, which cannot be allocated")]
    SampleAlloc {
        /// Samples requested.
        n: usize,
        /// Dimensions.
        d: usize,
        /// Bytes needed (`n * d * 8`, computed without overflow).
        bytes: u128,
    },

    /// A file could not be opened, read or written.
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        /// `"read"` or `"write"`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS reason.
        source: std::io::Error,
    },

    /// A path to load is not a regular file (a directory, a FIFO, a device...).
    #[error("{}: is {kind}, not a regular file", .path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead, e.g. `"a directory"`.
        kind: &'static str,
    },

    /// Loading a file would exceed a size or allocation limit (the message names both numbers).
    #[error("{}: {reason}", .path.display())]
    Limit {
        /// The file.
        path: PathBuf,
        /// Which limit, with the numbers.
        reason: String,
    },

    /// A CSV file has bad content (line numbers are 1-based).
    #[error("{}, line {line}: {reason}", .path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with that line.
        reason: String,
    },

    /// A CSV file holds no samples.
    #[error("{}: contains no samples", .path.display())]
    CsvEmpty {
        /// The file.
        path: PathBuf,
    },

    /// Least-squares cross-validation needs at least two samples.
    #[error("lscv needs at least 2 samples (its cross term divides by n - 1), got n = {0}")]
    LscvTooFew(usize),

    /// A column holds the same value in every sample, so LSCV has no minimum.
    #[error(
        "column {col} (0-based) is {value} in all {n} samples: with no spread in that \
         dimension the lscv score keeps falling as the width shrinks; drop the column"
    )]
    ConstantColumn {
        /// 0-based column.
        col: usize,
        /// The value it always holds.
        value: f64,
        /// Number of samples.
        n: usize,
    },

    /// A width's powers or score leave the float64 range, so the score cannot be trusted.
    #[error("lscv at h = {h:e} in {d} dimensions: {reason}")]
    LscvRange {
        /// The width.
        h: f64,
        /// Dimensions.
        d: usize,
        /// What overflowed or underflowed, with its value.
        reason: String,
    },

    /// A caller-provided buffer has the wrong length for what is to be written into it.
    #[error("{what} buffer holds {got} values but {expected} are needed")]
    BufferLen {
        /// Which buffer (`"distances"`, `"offsets"`, `"values"`...).
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length needed.
        expected: usize,
    },

    /// Precomputed arrays (for example read from shared memory or the wire) are inconsistent.
    #[error("invalid precomputed index: {0}")]
    BadIndex(String),

    /// A [`PartialIndex`](crate::PartialIndex) was asked for a width whose bucket it did
    /// not keep.
    #[error(
        "width {h} reads bucket {bucket}, which this partial index did not keep (build it \
             with this width among its widths)"
    )]
    NotIndexed {
        /// The width.
        h: f64,
        /// The bucket it reads.
        bucket: usize,
    },

    /// An `.npy` file is malformed or holds something other than a finite 2-D float64 array.
    #[error("{}: {reason}", .path.display())]
    Npy {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
