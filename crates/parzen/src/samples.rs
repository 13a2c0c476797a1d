//! A validated set of n samples of d finite coordinates each, stored row-major.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// n rows × d dimensions of finite `f64`, row-major; never empty, `d >= 1`.
///
/// Deserializing re-runs the same checks as [`Samples::from_rows`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawSamples")]
pub struct Samples {
    dims: usize,
    data: Vec<f64>,
}

/// Unchecked wire form of [`Samples`], validated on the way in.
#[derive(Deserialize)]
struct RawSamples {
    dims: usize,
    data: Vec<f64>,
}

impl TryFrom<RawSamples> for Samples {
    type Error = Error;

    fn try_from(raw: RawSamples) -> Result<Samples> {
        Samples::from_rows(raw.dims, raw.data)
    }
}

impl Samples {
    /// Builds samples from row-major `data` with `dims` coordinates per row, checking that
    /// `dims >= 1`, the data is non-empty, a whole number of rows and finite.
    pub fn from_rows(dims: usize, data: Vec<f64>) -> Result<Samples> {
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
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteSample {
                row: i / dims,
                col: i % dims,
                value: data[i],
            });
        }
        Ok(Samples { dims, data })
    }

    /// Number of coordinates per sample (d).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Number of samples (n).
    pub fn len(&self) -> usize {
        self.data.len() / self.dims
    }

    /// Always `false`: validated samples hold at least one row (kept for API symmetry).
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The coordinates of sample `i`; panics if `i >= len()`, like slice indexing.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.dims..(i + 1) * self.dims]
    }

    /// Iterator over the rows, in order.
    pub fn rows(&self) -> std::slice::ChunksExact<'_, f64> {
        self.data.chunks_exact(self.dims)
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// Gives back the row-major values.
    pub fn into_vec(self) -> Vec<f64> {
        self.data
    }
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
