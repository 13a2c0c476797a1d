//! The codec: the only module that names bincode.
//!
//! bincode 2.0.x through serde, with an explicit fixed-int little-endian configuration:
//! that is the bincode-1 wire format, which other implementations (wincode) also speak,
//! so the crate can be swapped without a protocol change. Decoding must consume the whole
//! input, and its size limit follows the input: a length prefix inside a message may claim
//! at most the next power of two above the input's own length (4 KiB at least), so a
//! hostile message can never make us allocate more than twice what it was — never the
//! 4 GiB a lying `u32` could ask for.

use super::msg::{JobResult, Outcome, Phases};
use bincode::config::{Configuration, Fixint, Limit, LittleEndian};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The largest number of bytes one decode may claim; equal to the largest frame.
pub const DECODE_LIMIT: usize = super::frame::MAX_FRAME_LIMIT as usize;

const fn config<const N: usize>() -> Configuration<LittleEndian, Fixint, Limit<N>> {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<N>()
}

/// Runs `$call` with `$cfg` bound to the configuration whose limit is the smallest power
/// of two (from 4 KiB up to [`DECODE_LIMIT`]) at or above `$len`.
macro_rules! with_limit_for {
    ($len:expr, |$cfg:ident| $call:expr) => {{
        let len: usize = $len;
        with_limit_for!(@arms len, $cfg, $call;
            12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29)
    }};
    (@arms $len:ident, $cfg:ident, $call:expr; $($bits:literal)*) => {
        $(
            if $len <= 1usize << $bits {
                let $cfg = config::<{ 1usize << $bits }>();
                $call
            } else
        )*
        {
            let $cfg = config::<DECODE_LIMIT>();
            $call
        }
    };
}

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(pub String);

/// Appends the encoding of `value` to `out`; on error `out` is left as it was.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let at = out.len();
    match bincode::serde::encode_into_std_write(value, out, config::<DECODE_LIMIT>()) {
        Ok(_) => Ok(()),
        Err(e) => {
            out.truncate(at);
            Err(CodecError(format!("encode failed: {e}")))
        }
    }
}

/// Encodes `value` into a new buffer.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Decodes an owned value that must fill `bytes` exactly.
#[inline]
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, used) = with_limit_for!(
        bytes.len(),
        |cfg| bincode::serde::decode_from_slice::<T, _>(bytes, cfg)
    )
    .map_err(|e| CodecError(format!("decode failed: {e}")))?;
    check_used(used, bytes.len())?;
    Ok(value)
}

/// Decodes a value that borrows from `bytes` (zero-copy strings and byte slices).
pub fn decode_borrowed<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, CodecError> {
    let (value, used) = with_limit_for!(bytes.len(), |cfg| {
        bincode::serde::borrow_decode_from_slice::<T, _>(bytes, cfg)
    })
    .map_err(|e| CodecError(format!("decode failed: {e}")))?;
    check_used(used, bytes.len())?;
    Ok(value)
}

/// Encodes a context for sharing with workers: its body, and the large
/// [`SharedSlice`](crate::SharedSlice)s inside it as out-of-band buffers (the body holds
/// their indices; see `crate::shared`).
pub(crate) fn encode_shared<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<crate::shared::BufView>), CodecError> {
    let (body, bufs) = crate::shared::with_encode_scope(|| encode(value));
    Ok((body?, bufs))
}

/// Decodes a context encoded by [`encode_shared`], its out-of-band buffers resolved to
/// `bufs` (mapped by the caller).
pub(crate) fn decode_shared<T: DeserializeOwned>(
    bytes: &[u8],
    bufs: Vec<crate::shared::BufIn>,
) -> Result<T, CodecError> {
    crate::shared::with_decode_scope(bufs, || decode(bytes))
}

/// Decodes one value that borrows from the start of `bytes` (more may follow); returns it
/// and how many bytes it took.
pub fn decode_prefix<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<(T, usize), CodecError> {
    with_limit_for!(bytes.len(), |cfg| {
        bincode::serde::borrow_decode_from_slice::<T, _>(bytes, cfg)
    })
    .map_err(|e| CodecError(format!("decode failed: {e}")))
}

/// Appends the encoding of `Down::Jobs { chunk, first, payloads, tags }` exactly as
/// [`encode_into`] would, without building the message (the hot path of many small jobs).
pub(crate) fn encode_jobs<'a>(
    out: &mut Vec<u8>,
    chunk: u64,
    first: u32,
    payloads: impl ExactSizeIterator<Item = &'a [u8]>,
    tags: &[u64],
) {
    /// `Down::Jobs` is variant 2 (`Hello`, `Context`, `Jobs`, ...).
    const JOBS: u32 = 2;
    out.extend_from_slice(&JOBS.to_le_bytes());
    out.extend_from_slice(&chunk.to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&(payloads.len() as u64).to_le_bytes());
    for p in payloads {
        out.extend_from_slice(&(p.len() as u64).to_le_bytes());
        out.extend_from_slice(p);
    }
    out.extend_from_slice(&(tags.len() as u64).to_le_bytes());
    for t in tags {
        out.extend_from_slice(&t.to_le_bytes());
    }
}

/// Appends the result of a job that succeeded with `output`, without phases, exactly as
/// [`encode_into`] would encode its `JobResult` (the worker's hot path).
#[inline]
pub(crate) fn encode_ok_result(out: &mut Vec<u8>, compute_ns: u64, output: &[u8]) {
    let mut head = [0u8; 20];
    head[..8].copy_from_slice(&compute_ns.to_le_bytes());
    // Bytes 8..12: variant 0, `Outcome::Ok`.
    head[12..].copy_from_slice(&(output.len() as u64).to_le_bytes());
    out.reserve(head.len() + output.len() + 1);
    out.extend_from_slice(&head);
    out.extend_from_slice(output);
    // `phases: None`.
    out.push(0);
}

/// Encodes one job's result exactly as [`encode_into`] would, without going through serde
/// for a successful job (the hot path of many small jobs). An error outcome goes through
/// serde.
#[inline]
pub(crate) fn encode_job_result(r: &JobResult<'_>, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let Outcome::Ok(bytes) = r.outcome else {
        return encode_into(r, out);
    };
    let Some(p) = &r.phases else {
        encode_ok_result(out, r.compute_ns, bytes);
        return Ok(());
    };
    out.reserve(8 + 4 + 8 + bytes.len() + 33);
    out.extend_from_slice(&r.compute_ns.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
    out.push(1);
    for v in [p.begun, p.decoded, p.computed, p.encoded] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

/// The commonest job result read in place: a successful job without phases. Returns its
/// `compute_ns`, its output's bytes and what follows it, or `None` for anything else
/// (decode that with [`decode_job_result`], which also explains errors). Plain values
/// out, no enum: on the coordinator's hot path a `JobResult` moved through a `Result`
/// cost a store-forwarding stall per job (measured).
#[inline(always)]
pub(crate) fn split_ok_result(bytes: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let (ns, rest) = bytes.split_first_chunk::<8>()?;
    let (tag, rest) = rest.split_first_chunk::<4>()?;
    if u32::from_le_bytes(*tag) != 0 {
        return None;
    }
    let (len, rest) = rest.split_first_chunk::<8>()?;
    let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
    let (output, rest) = rest.split_at_checked(len)?;
    let (&phases, rest) = rest.split_first()?;
    (phases == 0).then_some((u64::from_le_bytes(*ns), output, rest))
}

/// Decodes one job's result from the start of `bytes`, as [`decode_prefix`] would (and
/// fast for a successful job); returns it and the bytes it used.
#[inline]
pub(crate) fn decode_job_result(bytes: &[u8]) -> Result<(JobResult<'_>, usize), CodecError> {
    fn u64_at(b: &[u8], at: usize) -> Option<u64> {
        Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
    }
    let short = || CodecError("decode failed: a job result is cut short".into());
    let compute_ns = u64_at(bytes, 0).ok_or_else(short)?;
    let tag = bytes
        .get(8..12)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(short)?;
    if tag != 0 {
        return decode_prefix::<JobResult<'_>>(bytes);
    }
    let len = u64_at(bytes, 12).ok_or_else(short)?;
    let start: usize = 20;
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| start.checked_add(len))
        .filter(|&end| end <= bytes.len())
        .ok_or_else(short)?;
    let output = &bytes[start..end];
    let (phases, used) = match bytes.get(end) {
        Some(0) => (None, end + 1),
        Some(1) => {
            let at = |i: usize| u64_at(bytes, end + 1 + 8 * i).ok_or_else(short);
            let p = Phases {
                begun: at(0)?,
                decoded: at(1)?,
                computed: at(2)?,
                encoded: at(3)?,
            };
            (Some(p), end + 33)
        }
        Some(other) => {
            return Err(CodecError(format!(
                "decode failed: invalid option tag {other} in a job result"
            )));
        }
        None => return Err(short()),
    };
    Ok((
        JobResult {
            compute_ns,
            outcome: Outcome::Ok(output),
            phases,
        },
        used,
    ))
}

#[inline]
fn check_used(used: usize, len: usize) -> Result<(), CodecError> {
    if used == len {
        Ok(())
    } else {
        Err(CodecError(format!(
            "decode failed: {} trailing bytes after the value",
            len - used
        )))
    }
}

/// A `Down::Jobs` message read in place by [`decode_jobs`]: the payloads and tags are
/// walked from the frame's bytes, with no vector built per chunk.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobsView<'a> {
    /// The chunk's id.
    pub chunk: u64,
    /// Index of the first job within the chunk.
    pub first: u32,
    /// Number of jobs.
    pub count: usize,
    /// The payloads, each behind its u64 length (checked to fill this exactly).
    payloads: &'a [u8],
    /// The tags, 8 bytes each (none, or one per job... whatever the frame holds).
    tags: &'a [u8],
}

impl<'a> JobsView<'a> {
    /// The payloads in order.
    pub(crate) fn payloads(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.payloads;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<8>()?;
            // `decode_jobs` checked that every length fits in what follows it.
            let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
            let (payload, tail) = tail.split_at_checked(len)?;
            rest = tail;
            Some(payload)
        })
    }

    /// Tag `i`, if the frame has one.
    pub(crate) fn tag(&self, i: usize) -> Option<u64> {
        let at = i.checked_mul(8)?;
        let bytes = self.tags.get(at..at.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }
}

/// Reads a `Down::Jobs` message as [`decode_borrowed`] would, without building it (the
/// worker's hot path of many small jobs). `None` when `bytes` holds another message
/// (decode that one with [`decode_borrowed`]); an error when it is a `Jobs` message that
/// is cut short, overlong or inconsistent — exactly the inputs bincode refuses.
pub(crate) fn decode_jobs(bytes: &[u8]) -> Option<Result<JobsView<'_>, CodecError>> {
    /// `Down::Jobs` is variant 2 (see [`encode_jobs`]).
    const JOBS: [u8; 4] = 2u32.to_le_bytes();
    let (tag, rest) = bytes.split_first_chunk::<4>()?;
    if *tag != JOBS {
        return None;
    }
    fn take<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], CodecError> {
        let (v, tail) = rest
            .split_first_chunk::<N>()
            .ok_or_else(|| CodecError("decode failed: a jobs message is cut short".into()))?;
        *rest = tail;
        Ok(*v)
    }
    fn len(rest: &mut &[u8]) -> Result<usize, CodecError> {
        let n = u64::from_le_bytes(take::<8>(rest)?);
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= rest.len())
            .ok_or_else(|| {
                CodecError(format!(
                    "decode failed: a length of {n} in a jobs message of {} bytes",
                    rest.len()
                ))
            })
    }
    Some((|| {
        let mut rest = rest;
        let chunk = u64::from_le_bytes(take::<8>(&mut rest)?);
        let first = u32::from_le_bytes(take::<4>(&mut rest)?);
        // Each payload takes at least its 8-byte length: a count cannot exceed that.
        let count = u64::from_le_bytes(take::<8>(&mut rest)?);
        let count = usize::try_from(count)
            .ok()
            .filter(|&c| c <= rest.len() / 8)
            .ok_or_else(|| CodecError(format!("decode failed: {count} jobs claimed")))?;
        let start = rest;
        for _ in 0..count {
            let n = len(&mut rest)?;
            rest = &rest[n..];
        }
        let payloads = &start[..start.len() - rest.len()];
        let tags = u64::from_le_bytes(take::<8>(&mut rest)?);
        let tags = usize::try_from(tags)
            .ok()
            .and_then(|t| t.checked_mul(8))
            .filter(|&b| b == rest.len())
            .ok_or_else(|| {
                CodecError(format!(
                    "decode failed: {tags} tags in the last {} bytes of a jobs message",
                    rest.len()
                ))
            })?;
        Ok(JobsView {
            chunk,
            first,
            count,
            payloads,
            tags: &rest[..tags],
        })
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Sample {
        A { x: u32, s: String },
        B(f64),
    }

    #[test]
    fn round_trip_and_fixed_layout() {
        let v = Sample::A {
            x: 7,
            s: "hi".into(),
        };
        let bytes = encode(&v).unwrap();
        // variant u32, x u32, len u64, "hi": the bincode-1 fixint layout.
        assert_eq!(
            bytes,
            [0, 0, 0, 0, 7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, b'h', b'i']
        );
        assert_eq!(decode::<Sample>(&bytes).unwrap(), v);
        let b = encode(&Sample::B(1.5)).unwrap();
        assert_eq!(decode::<Sample>(&b).unwrap(), Sample::B(1.5));
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&5u32).unwrap();
        bytes.push(0);
        let err = decode::<u32>(&bytes).unwrap_err();
        assert!(err.0.contains("1 trailing bytes"), "{err}");
    }

    #[test]
    fn huge_length_prefix_is_refused_not_allocated() {
        // A string claiming 2^40 bytes inside a 12-byte input.
        let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"abcd");
        assert!(decode::<String>(&bytes).is_err());
        assert!(decode::<Vec<u64>>(&bytes).is_err());
    }

    fn job_result()
    -> impl proptest::strategy::Strategy<Value = (u64, Option<Vec<u8>>, Option<[u64; 4]>)> {
        use proptest::prelude::*;
        (
            any::<u64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(any::<[u64; 4]>()),
        )
    }

    proptest::proptest! {
        #[test]
        fn the_fast_job_result_path_is_bincode((ns, out, phases) in job_result(), cut in 0usize..80) {
            use crate::error::JobError;
            let phases = phases.map(|p| Phases { begun: p[0], decoded: p[1], computed: p[2], encoded: p[3] });
            let r = JobResult {
                compute_ns: ns,
                outcome: match &out {
                    Some(b) => Outcome::Ok(b),
                    None => Outcome::Err(JobError::Panicked { message: "x".into(), location: None, backtrace: None, pid: 1 }),
                },
                phases,
            };
            let mut fast = Vec::new();
            encode_job_result(&r, &mut fast).unwrap();
            let slow = encode(&r).unwrap();
            proptest::prop_assert_eq!(&fast, &slow);
            fast.extend_from_slice(b"tail");
            match split_ok_result(&fast) {
                Some((ns2, output, rest)) => {
                    proptest::prop_assert!(out.is_some() && r.phases.is_none());
                    proptest::prop_assert_eq!(ns2, ns);
                    proptest::prop_assert_eq!(Some(output), out.as_deref());
                    proptest::prop_assert_eq!(rest, b"tail");
                }
                None => proptest::prop_assert!(out.is_none() || r.phases.is_some()),
            }
            let (back, used) = decode_job_result(&fast).unwrap();
            proptest::prop_assert_eq!(back, r);
            proptest::prop_assert_eq!(used, slow.len());
            // Cut short anywhere: an error, never a panic or a read past the end.
            if cut < slow.len() {
                proptest::prop_assert!(decode_job_result(&slow[..cut]).is_err());
                proptest::prop_assert!(split_ok_result(&slow[..cut]).is_none());
            }
        }
    }

    #[test]
    fn the_fast_jobs_encoding_is_bincode() {
        use super::super::msg::{Bytes, Down};
        let payloads: Vec<Vec<u8>> = vec![vec![], vec![1, 2, 3], vec![9; 70]];
        for tags in [vec![], vec![4, 5, 6]] {
            let msg = Down::Jobs {
                chunk: 77,
                first: 3,
                payloads: payloads.iter().map(|p| Bytes(p)).collect(),
                tags: tags.clone(),
            };
            let mut fast = Vec::new();
            encode_jobs(&mut fast, 77, 3, payloads.iter().map(Vec::as_slice), &tags);
            assert_eq!(fast, encode(&msg).unwrap());
            assert_eq!(decode_borrowed::<Down<'_>>(&fast).unwrap(), msg);
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_jobs_decoding_is_bincode(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20), 0..8),
            tags in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..8),
            chunk in proptest::prelude::any::<u64>(),
            first in proptest::prelude::any::<u32>(),
            cut in 0usize..400,
            flip in proptest::prelude::any::<(usize, u8)>(),
        ) {
            use super::super::msg::{Bytes, Down};
            let mut bytes = Vec::new();
            encode_jobs(&mut bytes, chunk, first, payloads.iter().map(Vec::as_slice), &tags);
            let view = decode_jobs(&bytes).unwrap().unwrap();
            proptest::prop_assert_eq!((view.chunk, view.first, view.count), (chunk, first, payloads.len()));
            let got: Vec<&[u8]> = view.payloads().collect();
            let want: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(got, want);
            for i in 0..=tags.len() {
                proptest::prop_assert_eq!(view.tag(i), tags.get(i).copied());
            }
            // Damaged or cut short: it accepts exactly what bincode accepts, and agrees.
            let mut bad = bytes.clone();
            bad.truncate(cut.min(bad.len()));
            if !bad.is_empty() {
                let at = flip.0 % bad.len();
                bad[at] ^= flip.1;
            }
            let slow = decode_borrowed::<Down<'_>>(&bad);
            match decode_jobs(&bad) {
                None => {
                    let was_jobs = matches!(slow, Ok(Down::Jobs { .. }));
                    proptest::prop_assert!(!was_jobs, "bincode read jobs");
                }
                Some(Err(_)) => proptest::prop_assert!(slow.is_err(), "{:?}", slow),
                Some(Ok(v)) => {
                    let Ok(Down::Jobs { chunk, first, payloads, tags }) = slow else {
                        return Err(proptest::test_runner::TestCaseError::fail(format!("bincode: {slow:?}")));
                    };
                    proptest::prop_assert_eq!((v.chunk, v.first, v.count), (chunk, first, payloads.len()));
                    let got: Vec<&[u8]> = v.payloads().collect();
                    let want: Vec<&[u8]> = payloads.iter().map(|Bytes(b)| *b).collect();
                    proptest::prop_assert_eq!(got, want);
                    for i in 0..=tags.len() {
                        proptest::prop_assert_eq!(v.tag(i), tags.get(i).copied());
                    }
                }
            }
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = encode(&Sample::A {
            x: 1,
            s: "hello".into(),
        })
        .unwrap();
        for cut in 0..bytes.len() {
            assert!(decode::<Sample>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
