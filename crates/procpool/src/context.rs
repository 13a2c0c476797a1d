//! How a context reaches process workers: inline on the socket when small, otherwise in
//! shared memory that every worker maps — one sealed, anonymous object holding the encoded
//! body and every heap buffer, plus the objects that [`SharedSlice`](crate::SharedSlice)s
//! made with `new_shared` already live in, handed on as they are.
//!
//! The pool builds one [`ContextImage`] and gives the same image to every worker it starts,
//! replacements included, so the coordinator holds one copy however many workers there
//! are, and a worker is ready as soon as it has mapped the objects (no bytes to receive,
//! and none to decode for the buffers). A worker checks everything it is given before
//! reading a byte of it: each object's size and seals, and that every buffer lies inside
//! its object (see `os::shm` and `shared`).

use crate::error::Error;
use crate::os::shm::{self, MAX_FDS, Region};
use crate::shared::{BufIn, BufView};
use crate::wire::codec;
use crate::wire::msg::{BufDesc, Down};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

/// Contexts that encode to more than this many bytes travel in shared memory by default
/// (see `PoolBuilder::share_context_above` for how it was chosen).
pub const SHARE_ABOVE: usize = 64 << 10;

/// Bodies up to this size ride inline in the `SharedContext` message even when buffers
/// are shared.
const BODY_INLINE_MAX: usize = 4 << 10;

/// Alignment of each buffer inside the shared object (enough for any `Pod` type).
const ALIGN: usize = 64;

/// What goes into a context's own shared object: each part at a 64-byte boundary.
#[derive(Default)]
struct Pack<'a> {
    parts: Vec<(usize, &'a [u8])>,
    len: usize,
}

impl<'a> Pack<'a> {
    fn place(&mut self, bytes: &'a [u8]) -> BufDesc {
        let at = self.len.next_multiple_of(ALIGN);
        self.len = at + bytes.len();
        self.parts.push((at, bytes));
        BufDesc {
            region: 0,
            offset: at as u64,
            len: bytes.len() as u64,
        }
    }
}

/// A context, encoded once, as every process worker of a pool receives it.
pub(crate) enum ContextImage {
    /// Small: the encoded context in a `Context` frame.
    Inline(Vec<u8>),
    /// In shared memory.
    Shared {
        inline: Vec<u8>,
        body: Option<BufDesc>,
        buffers: Vec<BufDesc>,
        regions: Vec<Arc<Region>>,
    },
}

impl ContextImage {
    /// Encodes `ctx`; shares it when its encoding (bodies and buffers) is over
    /// `share_above` bytes.
    pub(crate) fn build<C: Serialize>(ctx: &C, share_above: usize) -> Result<ContextImage, Error> {
        let encode_error = |source: codec::CodecError| Error::Codec {
            what: "the context".into(),
            source,
        };
        let (body, bufs) = codec::encode_shared(ctx).map_err(encode_error)?;
        let total = bufs
            .iter()
            .map(BufView::len)
            .fold(body.len(), usize::saturating_add);
        if total <= share_above {
            // Small: the plain encoding, every buffer inline.
            let body = if bufs.is_empty() {
                body
            } else {
                codec::encode(ctx).map_err(encode_error)?
            };
            return Ok(ContextImage::Inline(body));
        }
        let mut regions: Vec<Arc<Region>> = Vec::new();
        // Region 0 is the pack (when it has anything): heap buffers and a large body.
        let mut pack = Pack::default();
        let body_desc = (body.len() > BODY_INLINE_MAX).then(|| pack.place(&body));
        let mut descs = Vec::with_capacity(bufs.len());
        for view in &bufs {
            let desc = match view {
                BufView::Region {
                    region,
                    offset,
                    len,
                } if region.fd().is_some() && regions.len() < MAX_FDS - 1 => {
                    let index = match regions.iter().position(|r| Arc::ptr_eq(r, region)) {
                        Some(i) => i,
                        None => {
                            regions.push(Arc::clone(region));
                            regions.len() - 1
                        }
                    };
                    // +1: region 0 is the pack; shifted back below if there is none.
                    BufDesc {
                        region: index as u32 + 1,
                        offset: *offset as u64,
                        len: *len as u64,
                    }
                }
                BufView::Region {
                    region,
                    offset,
                    len,
                } => pack.place(&region.bytes()[*offset..*offset + *len]),
                BufView::Heap(bytes) => pack.place(bytes.bytes()),
            };
            descs.push(desc);
        }
        if pack.parts.is_empty() {
            for d in &mut descs {
                d.region -= 1;
            }
        } else {
            let packed = shm::create(pack.len, |out| {
                for (at, bytes) in &pack.parts {
                    out[*at..*at + bytes.len()].copy_from_slice(bytes);
                }
            })
            .map_err(|e| {
                Error::io(
                    format!("could not create the shared context ({} bytes)", pack.len),
                    e,
                )
            })?;
            regions.insert(0, Arc::new(packed));
        }
        let inline = if body_desc.is_some() {
            Vec::new()
        } else {
            body
        };
        Ok(ContextImage::Shared {
            inline,
            body: body_desc,
            buffers: descs,
            regions,
        })
    }

    /// The message that carries it.
    pub(crate) fn message(&self) -> Down<'_> {
        match self {
            ContextImage::Inline(payload) => Down::Context { payload },
            ContextImage::Shared {
                inline,
                body,
                buffers,
                regions,
            } => Down::SharedContext {
                inline,
                body: *body,
                buffers: buffers.clone(),
                regions: regions.iter().map(|r| r.len() as u64).collect(),
            },
        }
    }

    /// The descriptors that must travel with the message, in order.
    pub(crate) fn fds(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            ContextImage::Inline(_) => Vec::new(),
            ContextImage::Shared { regions, .. } => regions.iter().filter_map(|r| r.fd()).collect(),
        }
    }

    /// Bytes of shared memory this image holds (0 when inline).
    pub(crate) fn shared_bytes(&self) -> usize {
        match self {
            ContextImage::Inline(_) => 0,
            ContextImage::Shared { regions, .. } => regions.iter().map(|r| r.len()).sum(),
        }
    }
}

/// A worker's side: maps the objects whose descriptors came with the message, checks
/// every location against them, and decodes the context (its shared slices pointing into
/// the mappings). Every failure is a message naming what was wrong.
pub(crate) fn install<C: DeserializeOwned>(
    inline: &[u8],
    body: Option<BufDesc>,
    buffers: &[BufDesc],
    regions: &[u64],
    fds: Vec<OwnedFd>,
) -> Result<C, String> {
    if fds.len() != regions.len() {
        return Err(format!(
            "the shared context announced {} objects, but {} descriptors came with it",
            regions.len(),
            fds.len()
        ));
    }
    let mapped = fds
        .into_iter()
        .zip(regions)
        .map(|(fd, &len)| shm::open_received(fd, len).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    let locate = |what: &str, d: &BufDesc| -> Result<BufIn, String> {
        let region = mapped.get(d.region as usize).ok_or_else(|| {
            format!(
                "{what} lies in shared object {}, but only {} were sent",
                d.region,
                mapped.len()
            )
        })?;
        let end = d.offset.checked_add(d.len);
        if end.is_none_or(|end| end > region.len() as u64) {
            return Err(format!(
                "{what} ({} bytes at offset {}) lies outside its {}-byte shared object",
                d.len,
                d.offset,
                region.len()
            ));
        }
        Ok(BufIn {
            region: Arc::clone(region),
            offset: d.offset as usize,
            len: d.len as usize,
        })
    };
    let bufs = buffers
        .iter()
        .enumerate()
        .map(|(i, d)| locate(&format!("shared buffer {i}"), d))
        .collect::<Result<Vec<_>, _>>()?;
    let body_in = body.map(|d| locate("the context's body", &d)).transpose()?;
    let bytes = match &body_in {
        Some(b) => &b.region.bytes()[b.offset..b.offset + b.len],
        None => inline,
    };
    codec::decode_shared::<C>(bytes, bufs).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SharedSlice;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Ctx {
        name: String,
        big: SharedSlice<f64>,
        small: SharedSlice<u32>,
        made_shared: SharedSlice<u64>,
    }

    fn ctx() -> Ctx {
        Ctx {
            name: "n".into(),
            big: (0..100_000).map(f64::from).collect::<Vec<_>>().into(),
            small: vec![1, 2, 3].into(),
            made_shared: SharedSlice::new_shared(50_000, |v| {
                for (i, x) in v.iter_mut().enumerate() {
                    *x = i as u64 * 3;
                }
            })
            .unwrap(),
        }
    }

    fn dup(fds: &[BorrowedFd<'_>]) -> Vec<OwnedFd> {
        fds.iter()
            .map(|f| f.try_clone_to_owned().unwrap())
            .collect()
    }

    #[test]
    fn shared_image_round_trips_with_zero_copy_buffers() {
        let c = ctx();
        let image = ContextImage::build(&c, SHARE_ABOVE).unwrap();
        let Down::SharedContext {
            inline,
            body,
            buffers,
            regions,
        } = image.message()
        else {
            panic!("a 1 MB context must be shared");
        };
        // The pack, and the object `made_shared` already lived in (not copied).
        assert_eq!(regions.len(), 2);
        assert_eq!(buffers.len(), 2);
        assert_eq!(buffers[1].region, 1);
        let back: Ctx = install(inline, body, &buffers, &regions, dup(&image.fds())).unwrap();
        assert_eq!(back, c);
        assert!(back.big.is_shared() && back.made_shared.is_shared());
        assert!(!back.small.is_shared(), "small slices ride in the body");
    }

    #[test]
    fn small_contexts_stay_inline() {
        let image = ContextImage::build(&("hello", vec![1u8; 100]), SHARE_ABOVE).unwrap();
        assert!(matches!(image, ContextImage::Inline(_)));
        assert!(image.fds().is_empty());
        // A large plain context (no shared slices) is shared too: its body goes in the pack.
        let image = ContextImage::build(&vec![7u8; 1 << 20], SHARE_ABOVE).unwrap();
        let Down::SharedContext {
            inline,
            body,
            buffers,
            regions,
        } = image.message()
        else {
            panic!("a 1 MiB context must be shared");
        };
        assert!(inline.is_empty() && body.is_some() && buffers.is_empty());
        let back: Vec<u8> = install(inline, body, &buffers, &regions, dup(&image.fds())).unwrap();
        assert_eq!(back, vec![7u8; 1 << 20]);
    }

    #[test]
    fn hostile_locations_are_errors_not_reads_past_the_end() {
        let c = ctx();
        let image = ContextImage::build(&c, SHARE_ABOVE).unwrap();
        let Down::SharedContext {
            inline,
            body,
            buffers,
            regions,
        } = image.message()
        else {
            panic!("shared");
        };
        // A buffer that claims to run past its object.
        let mut bad = buffers.clone();
        bad[0].len = regions[0] + 8;
        let err = install::<Ctx>(inline, body, &bad, &regions, dup(&image.fds())).unwrap_err();
        assert!(err.contains("lies outside its"), "{err}");
        // An object smaller than announced.
        let mut short = regions.clone();
        short[0] += 4096;
        let err = install::<Ctx>(inline, body, &buffers, &short, dup(&image.fds())).unwrap_err();
        assert!(err.contains("were announced"), "{err}");
        // Fewer descriptors than objects.
        let mut fds = dup(&image.fds());
        fds.pop();
        let err = install::<Ctx>(inline, body, &buffers, &regions, fds).unwrap_err();
        assert!(err.contains("descriptors came with it"), "{err}");
        // A misaligned buffer for f64.
        let mut skew = buffers.clone();
        skew[0].offset += 4;
        skew[0].len -= 8;
        let err = install::<Ctx>(inline, body, &skew, &regions, dup(&image.fds())).unwrap_err();
        assert!(err.contains("not an aligned array"), "{err}");
    }

    #[test]
    fn out_of_band_references_need_a_scope() {
        let c = ctx();
        let (body, bufs) = codec::encode_shared(&c).unwrap();
        assert_eq!(bufs.len(), 2);
        let err = codec::decode::<Ctx>(&body).unwrap_err();
        assert!(
            err.to_string().contains("outside a shared context"),
            "{err}"
        );
        // Without a scope a slice is just its bytes.
        let plain = codec::encode(&c).unwrap();
        assert_eq!(codec::decode::<Ctx>(&plain).unwrap(), c);
    }
}
