//! Hypercube Parzen-window density estimation: the workload of the orchestrator benchmark.
//!
//! The estimate follows Sebastian Raschka's "parallel programming with Python's
//! multiprocessing" article: a sample counts towards the density at a point when it lies
//! inside the axis-aligned hypercube of edge `h` centred on that point, and the density is
//! `(k / n) / h^d`. [`estimate_naive`] is the literal reference; [`Prepared`] (each sample's
//! distance to the point, scanned per width) and [`PreparedIndex`] (a bucket index of those
//! distances, about a microsecond per width) are the fast, bit-identical forms shipped once
//! to each worker; [`fill_distances`], [`fill_index`] and [`IndexView`] do the same in
//! caller buffers, for shared memory; [`PartialIndex`] keeps only the buckets some known
//! widths read (one pass, kilobytes written: what the coordinator shares). [`lscv`] scores widths by least-squares cross-validation, the
//! O(pairs)-per-width sweep; [`data`] loads samples (mapping float64 `.npy` files).

#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod data;
pub mod error;
pub mod estimate;
pub mod gaussian;
pub mod lscv;
pub mod samples;
pub mod widths;

pub use data::{
    LoadLimits, load, load_csv, load_csv_with, load_npy, load_npy_with, load_with, write_csv,
    write_npy,
};
pub use error::{Error, Result};
pub use estimate::{
    BucketKey, IndexParts, IndexView, PartialIndex, PartialIndexView, Prepared, PreparedIndex,
    count_scan, density_from_count, estimate_naive, fill_distances, fill_index, validate_width,
};
pub use gaussian::Gaussian;
pub use lscv::{Lscv, LscvView, Terms};
pub use samples::Samples;
pub use widths::{
    default_widths, normal_reference_width, parse_widths, reference_widths, seed_benchmark_widths,
};
