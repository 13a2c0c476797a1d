//! The codec: the only module that names bincode.
//!
//! bincode 2.0.x through serde, with an explicit fixed-int little-endian configuration:
//! that is the bincode-1 wire format, which other implementations (wincode) also speak,
//! so the crate can be swapped without a protocol change. Decoding must consume the whole
//! input, and its size limit follows the input: a length prefix inside a message may claim
//! at most the next power of two above the input's own length (4 KiB at least), so a
//! hostile message can never make us allocate more than twice what it was — never the
//! 4 GiB a lying `u32` could ask for.

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

/// An encoded value kept inline when it is small (a job's input, while it waits and until
/// its result is in): a `map` over numbers then allocates nothing per job. Encoding each
/// job into a `Vec` of its own cost a `malloc`, the `Vec`'s growth and a `free` per job,
/// which was more than half of the coordinator's CPU time for jobs that carry a `u64`.
pub(crate) type Encoded = smallvec::SmallVec<[u8; 16]>;

/// Encodes `value` as [`Encoded`] (as [`encode`] would, without a heap buffer when it fits).
#[inline]
pub(crate) fn encode_small<T: Serialize + ?Sized>(value: &T) -> Result<Encoded, CodecError> {
    // Into a plain array first: bincode's slice writer is a bounds check and a copy,
    // where writing into the `SmallVec` itself checked for room and spilling per field.
    let mut buf = [0u8; 16];
    match bincode::serde::encode_into_slice(value, &mut buf, config::<DECODE_LIMIT>()) {
        Ok(len) => Ok(Encoded::from_buf_and_len(buf, len)),
        // Too large for the array: on the heap.
        Err(bincode::error::EncodeError::UnexpectedEnd) => encode(value).map(Encoded::from_vec),
        Err(e) => Err(CodecError(format!("encode failed: {e}"))),
    }
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

/// Appends `n` as bincode's variable-length integer (its standard configuration): one
/// byte below 251, a marker and 2, 4 or 8 little-endian bytes above.
#[inline(always)]
pub(crate) fn put_varint(out: &mut Vec<u8>, n: u64) {
    if n < 251 {
        out.push(n as u8);
    } else {
        put_varint_long(out, n);
    }
}

#[cold]
fn put_varint_long(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0u8; 9];
    // Nine bytes hold any u64 in this encoding, so this cannot fail.
    if let Ok(used) = bincode::encode_into_slice(n, &mut buf, bincode::config::standard()) {
        out.extend_from_slice(&buf[..used]);
    }
}

/// Reads a varint written by [`put_varint`] off the front of `bytes`: its value and the
/// rest, or `None` when it is cut short or malformed.
#[inline(always)]
pub(crate) fn take_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    match bytes.split_first() {
        Some((&b, rest)) if b < 251 => Some((u64::from(b), rest)),
        Some(_) => take_varint_long(bytes),
        None => None,
    }
}

#[cold]
fn take_varint_long(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (n, used) =
        bincode::decode_from_slice::<u64, _>(bytes, bincode::config::standard()).ok()?;
    Some((n, bytes.get(used..)?))
}

/// Appends `bytes` as an item: its length as a varint, then the bytes (what
/// `Down::Jobs` and `Up::Outputs` hold their payloads and outputs as).
#[inline(always)]
pub(crate) fn put_item(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Reads an item written by [`put_item`] off the front of `bytes`: its bytes and the rest,
/// or `None` when it is cut short or malformed.
#[inline(always)]
pub(crate) fn take_item(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = take_varint(bytes)?;
    rest.split_at_checked(usize::try_from(len).ok()?)
}

/// Appends the encoding of `Down::Jobs { chunk, first, count, payloads, tags }` exactly as
/// [`encode_into`] would, `payloads` written as items, without building the message (the
/// hot path of many small jobs).
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
    out.extend_from_slice(&(payloads.len() as u32).to_le_bytes());
    // The items' total length goes first: written once they are.
    let at = out.len();
    out.extend_from_slice(&0u64.to_le_bytes());
    for p in payloads {
        put_item(out, p);
    }
    let len = (out.len() - at - 8) as u64;
    out[at..at + 8].copy_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(tags.len() as u64).to_le_bytes());
    for t in tags {
        out.extend_from_slice(&t.to_le_bytes());
    }
}

/// Checks that `bytes` holds exactly `count` [items](put_item) (what `Down::Jobs` carries),
/// and says what is wrong when not.
pub(crate) fn check_items(bytes: &[u8], count: u32) -> Result<(), CodecError> {
    let bad = |i| {
        CodecError(format!(
            "decode failed: item {i} of {count} is cut short or malformed"
        ))
    };
    let mut rest = bytes;
    for i in 0..count {
        rest = take_item(rest).ok_or_else(|| bad(i))?.1;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(CodecError(format!(
            "decode failed: {} bytes after {count} items",
            rest.len()
        )))
    }
}

/// Appends the result of a job that succeeded with `output`, as `Up::Outputs` holds it:
/// `compute_ns` as a varint, then `output` as an item (the worker's hot path).
#[inline(always)]
pub(crate) fn encode_ok_output(out: &mut Vec<u8>, compute_ns: u64, output: &[u8]) {
    put_varint(out, compute_ns);
    put_item(out, output);
}

/// Reads a result written by [`encode_ok_output`] off the front of `bytes`: its
/// `compute_ns`, its output's bytes and what follows, or `None` when it is cut short or
/// malformed.
#[inline(always)]
pub(crate) fn split_ok_output(bytes: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let (ns, rest) = take_varint(bytes)?;
    let (output, rest) = take_item(rest)?;
    Some((ns, output, rest))
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
    /// The payloads as items (checked to be `count` of them, filling this exactly).
    payloads: &'a [u8],
    /// The tags, 8 bytes each (none, or one per job... whatever the frame holds).
    tags: &'a [u8],
}

impl<'a> JobsView<'a> {
    /// The payloads in order.
    pub(crate) fn payloads(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut rest = self.payloads;
        std::iter::from_fn(move || {
            // `decode_jobs` checked that the items fill `payloads` exactly.
            let (payload, tail) = take_item(rest)?;
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
/// worker's hot path of many small jobs), and checks its payloads with [`check_items`].
/// `None` when `bytes` holds another message (decode that one with [`decode_borrowed`]);
/// an error when it is a `Jobs` message that is cut short, overlong or inconsistent.
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
    Some((|| {
        let mut rest = rest;
        let chunk = u64::from_le_bytes(take::<8>(&mut rest)?);
        let first = u32::from_le_bytes(take::<4>(&mut rest)?);
        let count = u32::from_le_bytes(take::<4>(&mut rest)?);
        let len = u64::from_le_bytes(take::<8>(&mut rest)?);
        let payloads = usize::try_from(len)
            .ok()
            .and_then(|len| rest.split_at_checked(len))
            .map(|(p, tail)| {
                rest = tail;
                p
            })
            .ok_or_else(|| {
                CodecError(format!(
                    "decode failed: {len} bytes of payloads in a jobs message of {} bytes",
                    bytes.len()
                ))
            })?;
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
        check_items(payloads, count)?;
        Ok(JobsView {
            chunk,
            first,
            count: count as usize,
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

    /// `payloads` as the items a `Jobs` message holds.
    fn items(payloads: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            put_item(&mut out, p);
        }
        out
    }

    #[test]
    fn the_fast_jobs_encoding_is_bincode() {
        use super::super::msg::Down;
        let payloads: Vec<Vec<u8>> = vec![vec![], vec![1, 2, 3], vec![9; 70], vec![5; 300]];
        let stream = items(&payloads);
        // Lengths below 251 take one byte; 300 takes three (marker 251, then a u16).
        assert_eq!(stream.len(), 1 + 4 + 71 + 303);
        for tags in [vec![], vec![4, 5, 6]] {
            let msg = Down::Jobs {
                chunk: 77,
                first: 3,
                count: 4,
                payloads: &stream,
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
        fn small_encodings_are_the_encodings(n in proptest::prelude::any::<u64>(), bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            // Inline up to 16 bytes, on the heap above: the same bytes either way.
            let small = encode_small(&n).unwrap();
            proptest::prop_assert!(!small.spilled());
            proptest::prop_assert_eq!(&small[..], &encode(&n).unwrap()[..]);
            let v = encode_small(&bytes).unwrap();
            proptest::prop_assert_eq!(v.spilled(), bytes.len() + 8 > 16);
            proptest::prop_assert_eq!(&v[..], &encode(&bytes).unwrap()[..]);
        }

        #[test]
        fn varints_are_bincodes(n in proptest::prelude::any::<u64>(), small in 0u64..300, cut in 0usize..9) {
            for n in [n, small, n >> 16, n >> 32] {
                let mut fast = Vec::new();
                put_varint(&mut fast, n);
                let slow = bincode::encode_to_vec(n, bincode::config::standard()).unwrap();
                proptest::prop_assert_eq!(&fast, &slow);
                fast.push(7);
                proptest::prop_assert_eq!(take_varint(&fast), Some((n, &[7u8][..])));
                if cut < slow.len() {
                    proptest::prop_assert_eq!(take_varint(&slow[..cut]), None);
                }
            }
        }

        #[test]
        fn outputs_read_back_and_refuse_damage(
            outs in proptest::collection::vec((proptest::prelude::any::<u64>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)), 0..6),
            cut in 0usize..2000,
        ) {
            let mut bytes = Vec::new();
            for (ns, o) in &outs {
                encode_ok_output(&mut bytes, *ns, o);
            }
            let mut rest = &bytes[..];
            for (ns, o) in &outs {
                let (ns2, o2, tail) = split_ok_output(rest).unwrap();
                proptest::prop_assert_eq!((ns2, o2), (*ns, &o[..]));
                rest = tail;
            }
            proptest::prop_assert!(rest.is_empty());
            // Cut short anywhere: some output fails to split off, never a read past the end.
            if cut < bytes.len() {
                let mut rest = &bytes[..cut];
                let mut whole = 0;
                while let Some((_, _, tail)) = split_ok_output(rest) {
                    rest = tail;
                    whole += 1;
                }
                proptest::prop_assert!(whole < outs.len());
            }
        }

        #[test]
        fn the_fast_jobs_decoding_is_bincode(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), 0..8),
            tags in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..8),
            chunk in proptest::prelude::any::<u64>(),
            first in proptest::prelude::any::<u32>(),
            cut in 0usize..2500,
            flip in proptest::prelude::any::<(usize, u8)>(),
        ) {
            use super::super::msg::Down;
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
            // Damaged or cut short: it accepts exactly what bincode and `check_items`
            // accept, and agrees with them.
            let mut bad = bytes.clone();
            bad.truncate(cut.min(bad.len()));
            if !bad.is_empty() {
                let at = flip.0 % bad.len();
                bad[at] ^= flip.1;
            }
            let slow = decode_borrowed::<Down<'_>>(&bad).and_then(|m| match m {
                Down::Jobs { payloads, count, .. } => check_items(payloads, count).map(|()| m),
                m => Ok(m),
            });
            match decode_jobs(&bad) {
                None => {
                    let was_jobs = matches!(slow, Ok(Down::Jobs { .. }));
                    proptest::prop_assert!(!was_jobs, "bincode read jobs");
                }
                Some(Err(_)) => proptest::prop_assert!(slow.is_err(), "{:?}", slow),
                Some(Ok(v)) => {
                    let Ok(Down::Jobs { chunk, first, count, payloads, tags }) = slow else {
                        return Err(proptest::test_runner::TestCaseError::fail(format!("bincode: {slow:?}")));
                    };
                    proptest::prop_assert_eq!((v.chunk, v.first, v.count), (chunk, first, count as usize));
                    let got: Vec<&[u8]> = v.payloads().collect();
                    let mut want = Vec::new();
                    let mut rest = payloads;
                    while let Some((p, tail)) = take_item(rest) {
                        want.push(p);
                        rest = tail;
                    }
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
