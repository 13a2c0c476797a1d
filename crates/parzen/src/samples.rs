//! A validated set of n samples of d finite coordinates each, stored row-major, either owned
//! or borrowed from a read-only file mapping (see [`crate::data`] for the mapping's caveat).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// n rows × d dimensions of finite `f64`, row-major; never empty, `d >= 1`.
///
/// The values live in a `Vec` or, for an `.npy` file that is already little-endian float64
/// in C order, in the file's read-only mapping (no copy). Cloning a mapped set shares the
/// mapping. Deserializing re-runs the same checks as [`Samples::from_rows`] and gives an
/// owned set; serializing writes `{dims, data}` either way.
#[derive(Clone)]
pub struct Samples {
    dims: usize,
    storage: Storage,
}

/// Where the values are.
#[derive(Clone)]
enum Storage {
    /// In memory of our own.
    Owned(Vec<f64>),
    /// `len` values at byte `offset` of a read-only mapping (8-aligned, little-endian host).
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
}

/// Unchecked wire form of [`Samples`], validated on the way in.
#[derive(Deserialize)]
struct RawSamples {
    dims: usize,
    data: Vec<f64>,
}

/// Borrowed wire form, so a mapped set serializes without a copy.
#[derive(Serialize)]
struct SamplesRef<'a> {
    dims: usize,
    data: &'a [f64],
}

impl Serialize for Samples {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        SamplesRef {
            dims: self.dims,
            data: self.as_slice(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Samples {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Samples, D::Error> {
        let raw = RawSamples::deserialize(d)?;
        Samples::from_rows(raw.dims, raw.data).map_err(serde::de::Error::custom)
    }
}

impl PartialEq for Samples {
    fn eq(&self, other: &Samples) -> bool {
        self.dims == other.dims && self.as_slice() == other.as_slice()
    }
}

impl std::fmt::Debug for Samples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Samples")
            .field("dims", &self.dims)
            .field("len", &self.len())
            .field("mapped", &self.is_mapped())
            .field("data", &self.as_slice())
            .finish()
    }
}

/// Index of the first non-finite value, if any: a branch-free pass per block of 1024
/// values (vectorized), and a search only inside a block that failed.
pub(crate) fn first_non_finite(data: &[f64]) -> Option<usize> {
    let mut start = 0;
    for block in data.chunks(1024) {
        let all_finite = block.iter().fold(true, |ok, v| ok & v.is_finite());
        if !all_finite {
            return block.iter().position(|v| !v.is_finite()).map(|i| start + i);
        }
        start += block.len();
    }
    None
}

/// Checks `dims >= 1`, a non-empty whole number of rows; then finiteness, naming the value.
fn check(dims: usize, data: &[f64]) -> Result<()> {
    if dims == 0 {
        return Err(Error::ZeroDims);
    }
    if data.is_empty() {
        return Err(Error::NoSamples);
    }
    if !data.len().is_multiple_of(dims) {
        return Err(Error::RaggedData {
            len: data.len(),
            dims,
        });
    }
    if let Some(i) = first_non_finite(data) {
        return Err(Error::NonFiniteSample {
            row: i / dims,
            col: i % dims,
            value: data[i],
        });
    }
    Ok(())
}

impl Samples {
    /// Builds samples from row-major `data` with `dims` coordinates per row, checking that
    /// `dims >= 1`, the data is non-empty, a whole number of rows and finite.
    pub fn from_rows(dims: usize, data: Vec<f64>) -> Result<Samples> {
        check(dims, &data)?;
        Ok(Samples {
            dims,
            storage: Storage::Owned(data),
        })
    }

    /// Borrows `len` values at byte `offset` of a mapping, after the same checks as
    /// [`Samples::from_rows`]. `None` when the bytes cannot be viewed as `f64` in place
    /// (misaligned, out of range, or a big-endian host): the caller then copies.
    pub(crate) fn from_mapping(
        dims: usize,
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    ) -> Option<Result<Samples>> {
        let storage = Storage::Mapped { map, offset, len };
        let data = mapped_slice(&storage)?;
        Some(check(dims, data).map(|()| Samples { dims, storage }))
    }

    /// Number of coordinates per sample (d).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Number of samples (n).
    pub fn len(&self) -> usize {
        self.as_slice().len() / self.dims
    }

    /// Always `false`: validated samples hold at least one row (kept for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }

    /// Whether the values are borrowed from a file mapping rather than owned.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Mapped { .. })
    }

    /// The coordinates of sample `i`; panics if `i >= len()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.as_slice()[i * self.dims..(i + 1) * self.dims]
    }

    /// Iterator over the rows, in order.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f64> {
        self.as_slice().chunks_exact(self.dims)
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[f64] {
        match &self.storage {
            Storage::Owned(v) => v,
            // Checked viewable when built, and a mapping never changes length.
            storage @ Storage::Mapped { .. } => mapped_slice(storage).unwrap_or(&[]),
        }
    }

    /// Gives back the row-major values (a copy when they are mapped).
    pub fn into_vec(self) -> Vec<f64> {
        match self.storage {
            Storage::Owned(v) => v,
            Storage::Mapped { .. } => self.as_slice().to_vec(),
        }
    }
}

/// The mapped values as `f64`, when in range, 8-aligned and the host is little-endian.
fn mapped_slice(storage: &Storage) -> Option<&[f64]> {
    let Storage::Mapped { map, offset, len } = storage else {
        return None;
    };
    if cfg!(target_endian = "big") {
        return None;
    }
    let bytes = map.get(*offset..offset.checked_add(len.checked_mul(8)?)?)?;
    bytemuck::try_cast_slice(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_reads_rows() {
        let s = Samples::from_rows(2, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        assert_eq!(s.dims(), 2);
        assert_eq!(s.len(), 3);
        assert!(!s.is_empty());
        assert_eq!(s.row(1), &[3.0, 4.0]);
        assert_eq!(s.rows().count(), 3);
        assert_eq!(s.as_slice().len(), 6);
        assert_eq!(s.clone().into_vec(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(
            Samples::from_rows(0, vec![1.0]),
            Err(Error::ZeroDims)
        ));
        assert!(matches!(
            Samples::from_rows(2, vec![]),
            Err(Error::NoSamples)
        ));
        let e = Samples::from_rows(2, vec![1.0, 2.0, 3.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "data length 3 is not a multiple of the dimension count 2"
        );
    }

    #[test]
    fn serde_round_trip_validates() {
        let s = Samples::from_rows(2, vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"dims":2,"data":[1.0,2.0,3.0,4.0]}"#);
        assert_eq!(serde_json::from_str::<Samples>(&json).unwrap(), s);
        let bad = serde_json::from_str::<Samples>(r#"{"dims":2,"data":[1.0,2.0,3.0]}"#);
        assert!(bad.unwrap_err().to_string().contains("not a multiple"));
    }

    #[test]
    fn first_non_finite_finds_the_first_in_any_block() {
        let mut v = vec![1.0; 5000];
        assert_eq!(first_non_finite(&v), None);
        v[4097] = f64::INFINITY;
        v[4999] = f64::NAN;
        assert_eq!(first_non_finite(&v), Some(4097));
        v[3] = f64::NEG_INFINITY;
        assert_eq!(first_non_finite(&v), Some(3));
        assert_eq!(first_non_finite(&[]), None);
    }

    #[test]
    fn names_first_non_finite_value() {
        let e =
            Samples::from_rows(2, vec![1.0, 2.0, 3.0, f64::NAN, f64::INFINITY, 0.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sample 1, coordinate 1 (0-based) is NaN; samples must be finite"
        );
        let e =
            Samples::from_rows(3, vec![0.0, 0.0, 0.0, f64::NEG_INFINITY, 0.0, 0.0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sample 1, coordinate 0 (0-based) is -inf; samples must be finite"
        );
    }
}
