//! Strict framing: a little-endian u32 length, then that many bytes of body.
//!
//! The length is checked against the connection's maximum before anything is buffered
//! for it, the buffer grows only as bytes actually arrive (a lying length prefix costs
//! nothing), a clean end of input at a frame boundary is the normal end, and an end in
//! the middle of a frame is an error.

use super::codec::{self, CodecError};
use serde::Serialize;
use std::io::{self, Read};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 4;
/// The largest frame any connection accepts, whatever it is configured to (1 GiB).
pub const MAX_FRAME_LIMIT: u32 = 1 << 30;
/// The default largest frame (256 MiB): big enough for a context of 30 million f64s.
pub const DEFAULT_MAX_FRAME: u32 = 256 << 20;

const MIN_READ: usize = 64 << 10;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix is over the limit.
    #[error("frame of {len} bytes is over the limit of {max} bytes")]
    TooLong {
        /// The announced length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame ({have} of {want} bytes received)")]
    Truncated {
        /// Bytes of the frame received.
        have: usize,
        /// Bytes the frame announced (header included).
        want: usize,
    },
    /// The body is not a valid message.
    #[error("undecodable frame: {0}")]
    Codec(#[from] CodecError),
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Appends one frame holding the encoding of `msg` to `out`; returns the frame's size.
///
/// On error `out` is left as it was.
pub fn write_frame<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    msg: &T,
    max: u32,
) -> Result<usize, FrameError> {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    if let Err(e) = codec::encode_into(msg, out) {
        out.truncate(at);
        return Err(e.into());
    }
    let len = out.len() - at - HEADER_LEN;
    if len > max as usize {
        out.truncate(at);
        return Err(FrameError::TooLong {
            len: len as u64,
            max,
        });
    }
    out[at..at + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(len + HEADER_LEN)
}

/// Appends one frame whose body `body` writes straight into `out`; returns the frame's
/// size. On error (the body is over `max`) `out` is left as it was.
pub(crate) fn write_frame_with(
    out: &mut Vec<u8>,
    max: u32,
    body: impl FnOnce(&mut Vec<u8>),
) -> Result<usize, FrameError> {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER_LEN]);
    body(out);
    let len = out.len() - at - HEADER_LEN;
    if len > max as usize {
        out.truncate(at);
        return Err(FrameError::TooLong {
            len: len as u64,
            max,
        });
    }
    out[at..at + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(len + HEADER_LEN)
}

/// An incremental frame decoder: bytes go in as they arrive, whole frames come out.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max: u32,
}

impl FrameReader {
    /// A decoder that refuses frames longer than `max` bytes (capped at [`MAX_FRAME_LIMIT`]).
    pub fn new(max: u32) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max: max.min(MAX_FRAME_LIMIT),
        }
    }

    /// Changes the limit for frames not yet taken (keeps what is buffered).
    pub fn set_max(&mut self, max: u32) {
        self.max = max.min(MAX_FRAME_LIMIT);
    }

    /// Bytes received but not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Appends bytes (used by tests and by in-memory peers).
    #[cfg(any(test, feature = "fuzzing", feature = "mpi"))]
    pub fn push(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Reads once from `r` into the buffer; returns what `read` returned (0 means end of input).
    pub fn fill_from<R: Read + ?Sized>(&mut self, r: &mut R) -> io::Result<usize> {
        self.make_room(MIN_READ);
        let n = r.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Whether a whole frame is buffered, so taking it would not need another read.
    pub fn has_frame(&self) -> bool {
        match self.peek_len() {
            Some(len) => self.buffered() >= HEADER_LEN + len as usize || len > self.max,
            None => false,
        }
    }

    /// Takes the next whole frame's body, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let Some(len) = self.peek_len() else {
            return Ok(None);
        };
        if len > self.max {
            return Err(FrameError::TooLong {
                len: u64::from(len),
                max: self.max,
            });
        }
        let total = HEADER_LEN + len as usize;
        if self.buffered() < total {
            return Ok(None);
        }
        let body = self.start + HEADER_LEN..self.start + total;
        self.start += total;
        Ok(Some(&self.buf[body]))
    }

    /// Checks that the input ended at a frame boundary.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buffered() == 0 {
            return Ok(());
        }
        let want = match self.peek_len() {
            Some(len) => HEADER_LEN + len as usize,
            None => HEADER_LEN,
        };
        Err(FrameError::Truncated {
            have: self.buffered(),
            want,
        })
    }

    fn peek_len(&self) -> Option<u32> {
        let head = self.buf.get(self.start..self.start + HEADER_LEN)?;
        if self.buffered() < HEADER_LEN {
            return None;
        }
        let mut len = [0; HEADER_LEN];
        len.copy_from_slice(head);
        Some(u32::from_le_bytes(len))
    }

    /// Ensures at least `want` writable bytes after `end`, compacting first and then
    /// growing by doubling; the buffer never grows past what the current frame needs
    /// plus one read.
    fn make_room(&mut self, want: usize) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end >= want {
                return;
            }
        }
        let needed = self.end + want;
        let grown = needed.max(self.buf.len() * 2).max(MIN_READ);
        self.buf.resize(grown, 0);
    }
}

/// Reads frames from a blocking reader one by one (for simple, low-rate peers).
pub fn read_frame_blocking<R: Read + ?Sized>(
    reader: &mut FrameReader,
    r: &mut R,
) -> Result<Option<Vec<u8>>, FrameError> {
    loop {
        if let Some(body) = reader.next_frame()? {
            return Ok(Some(body.to_vec()));
        }
        match reader.fill_from(r) {
            Ok(0) => {
                reader.finish()?;
                return Ok(None);
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames_of(bytes: &[u8], max: u32) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut r = FrameReader::new(max);
        let mut src = bytes;
        let mut out = Vec::new();
        while let Some(f) = read_frame_blocking(&mut r, &mut src)? {
            out.push(f);
        }
        Ok(out)
    }

    #[test]
    fn frames_round_trip_and_boundaries() {
        let mut out = Vec::new();
        write_frame(&mut out, "hello", 1024).unwrap();
        write_frame(&mut out, &42u64, 1024).unwrap();
        let frames = frames_of(&out, 1024).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(codec::decode::<String>(&frames[0]).unwrap(), "hello");
        assert_eq!(codec::decode::<u64>(&frames[1]).unwrap(), 42);
    }

    #[test]
    fn eof_mid_frame_is_truncated() {
        let mut out = Vec::new();
        write_frame(&mut out, "hello", 1024).unwrap();
        out.pop();
        match frames_of(&out, 1024) {
            Err(FrameError::Truncated { have, want }) => {
                assert_eq!(want, out.len() + 1);
                assert_eq!(have, out.len());
            }
            other => panic!("expected truncation, got {other:?}"),
        }
        assert!(matches!(
            frames_of(&out[..2], 1024),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn over_limit_is_refused_before_buffering() {
        let mut bytes = u32::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        let mut r = FrameReader::new(1 << 20);
        r.push(&bytes);
        assert!(
            matches!(r.next_frame(), Err(FrameError::TooLong { len, max })
            if len == u64::from(u32::MAX) && max == 1 << 20)
        );
        // The buffer only holds what arrived.
        assert!(r.buf.len() <= MIN_READ);
    }

    #[test]
    fn writing_over_limit_leaves_buffer_unchanged() {
        let mut out = vec![9];
        let err = write_frame(&mut out, &vec![0u8; 100], 50).unwrap_err();
        assert!(matches!(err, FrameError::TooLong { .. }));
        assert_eq!(out, [9]);
    }

    #[test]
    fn large_frames_grow_the_buffer_as_bytes_arrive() {
        let body = vec![7u8; 300_000];
        let mut out = Vec::new();
        write_frame(&mut out, &body, DEFAULT_MAX_FRAME).unwrap();
        // Feed in small pieces.
        let mut r = FrameReader::new(DEFAULT_MAX_FRAME);
        let mut got = None;
        for piece in out.chunks(1000) {
            r.push(piece);
            if let Some(f) = r.next_frame().unwrap() {
                got = Some(codec::decode::<Vec<u8>>(f).unwrap());
            }
        }
        assert_eq!(got.unwrap(), body);
        assert!(r.buf.len() < 2 * out.len() + MIN_READ);
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048),
                                       max in 0u32..4096) {
            let mut r = FrameReader::new(max);
            r.push(&bytes);
            while let Ok(Some(f)) = r.next_frame() {
                prop_assert!(f.len() <= max as usize);
            }
            prop_assert!(r.buf.len() <= bytes.len().max(MIN_READ) * 2);
        }

        #[test]
        fn any_split_gives_the_same_frames(msgs in proptest::collection::vec(".{0,40}", 1..8),
                                           cut in 1usize..64) {
            let mut out = Vec::new();
            for m in &msgs { write_frame(&mut out, m, 4096).unwrap(); }
            let mut r = FrameReader::new(4096);
            let mut got = Vec::new();
            for piece in out.chunks(cut) {
                r.push(piece);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(codec::decode::<String>(f).unwrap());
                }
            }
            r.finish().unwrap();
            prop_assert_eq!(got, msgs);
        }
    }
}
