//! [`SharedSlice`]: a read-only array of plain-old-data values that a pool shares with its
//! workers instead of copying it to each one.
//!
//! Inside a context (`Task::Context`), a `SharedSlice` travels *out of band*, like Python's
//! pickle protocol 5 buffers: the context's bincode body holds only a reference, and the
//! bytes live in one sealed, anonymous shared-memory object that every worker of the pool
//! maps read-only — replacements included. A worker reads them in place: no socket
//! transfer, no decode, one copy in memory however many workers there are. Slices made with
//! [`SharedSlice::new_shared`] already live in such an object, so not even the pool copies
//! them. The thread and serial backends share the same bytes through the `Arc` they hold;
//! MPI broadcasts them (ranks may be on other hosts).
//!
//! Anywhere else (a job's input, another serializer such as JSON) a `SharedSlice`
//! serializes as its bytes and deserializes into an owned copy, so it is an ordinary value.
//!
//! How the out-of-band reference works: while the pool encodes a context, a thread-local
//! *encode scope* collects each large slice's bytes and the slice writes only its index;
//! while a worker decodes one, a *decode scope* holds the mapped buffers that indices
//! resolve to, after checking bounds and alignment. Outside a scope a reference is an error,
//! never a dangling pointer.

use crate::os::shm::Region;
use bytemuck::Pod;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Slices smaller than this travel inside the context's body even when a pool shares its
/// context (copying a few KiB costs less than a descriptor and a mapping).
pub(crate) const OUT_OF_BAND_MIN: usize = 16 << 10;

/// A read-only array of `T` (plain old data: numbers, or `#[derive(bytemuck::Pod)]`
/// structs) that pools share with their workers instead of copying (see the module notes).
///
/// ```
/// use procpool::SharedSlice;
/// // Built straight into shared memory: workers will map these very pages.
/// let squares = SharedSlice::<f64>::new_shared(1000, |xs| {
///     for (i, x) in xs.iter_mut().enumerate() {
///         *x = (i * i) as f64;
///     }
/// })?;
/// assert_eq!(squares[10], 100.0);
/// // Or from an ordinary vector (the pool copies it into shared memory once).
/// let v = SharedSlice::from(vec![1u32, 2, 3]);
/// assert_eq!(&v[..], &[1, 2, 3]);
/// # Ok::<(), procpool::Error>(())
/// ```
pub struct SharedSlice<T: Pod> {
    data: Data<T>,
}

enum Data<T> {
    Heap(Arc<[T]>),
    Mapped {
        region: Arc<Region>,
        /// Byte offset of the first element in the region.
        offset: usize,
        /// Elements.
        len: usize,
    },
}

impl<T: Pod> SharedSlice<T> {
    /// A slice holding `values`, on the heap until a pool shares it.
    pub fn from_vec(values: Vec<T>) -> SharedSlice<T> {
        SharedSlice {
            data: Data::Heap(values.into()),
        }
    }

    /// A slice of `len` values written by `fill` (which starts from zeroed memory) directly
    /// into a sealed shared-memory object, which pools then hand to their workers as it is.
    pub fn new_shared(len: usize, fill: impl FnOnce(&mut [T])) -> crate::Result<SharedSlice<T>> {
        let bytes = len.checked_mul(size_of::<T>()).ok_or_else(|| {
            crate::Error::Config(format!(
                "a shared slice of {len} values of {} bytes is too large",
                size_of::<T>()
            ))
        })?;
        let region =
            crate::os::shm::create(bytes, |b| fill(bytemuck::cast_slice_mut(b))).map_err(|e| {
                crate::Error::io(
                    format!("could not create a shared-memory object of {bytes} bytes"),
                    e,
                )
            })?;
        Ok(SharedSlice {
            data: Data::Mapped {
                region: Arc::new(region),
                offset: 0,
                len,
            },
        })
    }

    /// The values.
    pub fn as_slice(&self) -> &[T] {
        match &self.data {
            Data::Heap(v) => v,
            Data::Mapped {
                region,
                offset,
                len,
            } => {
                let bytes = &region.bytes()[*offset..*offset + *len * size_of::<T>()];
                bytemuck::cast_slice(bytes)
            }
        }
    }

    /// Whether the values live in shared memory (made by [`SharedSlice::new_shared`], or
    /// mapped by a worker) rather than on this process's heap.
    pub fn is_shared(&self) -> bool {
        matches!(self.data, Data::Mapped { .. })
    }

    fn byte_view(&self) -> BufView
    where
        T: Send + Sync,
    {
        match &self.data {
            Data::Heap(v) => BufView::Heap(Arc::new(HeapBytes(Arc::clone(v)))),
            Data::Mapped {
                region,
                offset,
                len,
            } => BufView::Region {
                region: Arc::clone(region),
                offset: *offset,
                len: *len * size_of::<T>(),
            },
        }
    }
}

impl<T: Pod> Deref for SharedSlice<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> AsRef<[T]> for SharedSlice<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Pod> Clone for SharedSlice<T> {
    /// Cheap: the values are shared, not copied.
    fn clone(&self) -> Self {
        SharedSlice {
            data: match &self.data {
                Data::Heap(v) => Data::Heap(Arc::clone(v)),
                Data::Mapped {
                    region,
                    offset,
                    len,
                } => Data::Mapped {
                    region: Arc::clone(region),
                    offset: *offset,
                    len: *len,
                },
            },
        }
    }
}

impl<T: Pod> From<Vec<T>> for SharedSlice<T> {
    fn from(values: Vec<T>) -> Self {
        SharedSlice::from_vec(values)
    }
}

impl<T: Pod> Default for SharedSlice<T> {
    fn default() -> Self {
        SharedSlice::from_vec(Vec::new())
    }
}

impl<T: Pod + PartialEq> PartialEq for SharedSlice<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Pod> fmt::Debug for SharedSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSlice")
            .field("len", &self.len())
            .field("shared", &self.is_shared())
            .finish()
    }
}

/// The bytes of a heap slice, type-erased.
struct HeapBytes<T>(Arc<[T]>);

/// Something whose bytes can be copied into a shared object.
pub(crate) trait Bytes: Send + Sync {
    fn bytes(&self) -> &[u8];
}

impl<T: Pod + Send + Sync> Bytes for HeapBytes<T> {
    fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// One out-of-band buffer as the encoding side holds it.
pub(crate) enum BufView {
    /// On the heap: to be copied into the context's shared object.
    Heap(Arc<dyn Bytes>),
    /// Already in a shared object: handed on as it is.
    Region {
        region: Arc<Region>,
        offset: usize,
        len: usize,
    },
}

impl BufView {
    pub(crate) fn len(&self) -> usize {
        match self {
            BufView::Heap(b) => b.bytes().len(),
            BufView::Region { len, .. } => *len,
        }
    }
}

/// One out-of-band buffer as the decoding side resolves it: bytes `offset..offset + len`
/// of a mapped region, checked to lie inside it.
pub(crate) struct BufIn {
    pub region: Arc<Region>,
    pub offset: usize,
    pub len: usize,
}

thread_local! {
    static ENCODE: RefCell<Option<Vec<BufView>>> = const { RefCell::new(None) };
    static DECODE: RefCell<Option<Vec<BufIn>>> = const { RefCell::new(None) };
}

/// Runs `f` with an encode scope open; returns its result and the buffers collected.
pub(crate) fn with_encode_scope<R>(f: impl FnOnce() -> R) -> (R, Vec<BufView>) {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            ENCODE.with(|s| s.borrow_mut().take());
        }
    }
    ENCODE.with(|s| *s.borrow_mut() = Some(Vec::new()));
    let reset = Reset;
    let r = f();
    let bufs = ENCODE.with(|s| s.borrow_mut().take()).unwrap_or_default();
    drop(reset);
    (r, bufs)
}

/// Runs `f` with a decode scope holding `bufs`.
pub(crate) fn with_decode_scope<R>(bufs: Vec<BufIn>, f: impl FnOnce() -> R) -> R {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            DECODE.with(|s| s.borrow_mut().take());
        }
    }
    DECODE.with(|s| *s.borrow_mut() = Some(bufs));
    let _reset = Reset;
    f()
}

/// The wire form: the bytes themselves, or the index of an out-of-band buffer.
#[derive(Serialize, Deserialize)]
enum Repr<'a> {
    Inline(#[serde(with = "serde_bytes", borrow)] Cow<'a, [u8]>),
    OutOfBand(u32),
}

impl<T: Pod + Send + Sync> Serialize for SharedSlice<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let bytes: &[u8] = bytemuck::cast_slice(self.as_slice());
        if bytes.len() >= OUT_OF_BAND_MIN {
            let index = ENCODE.with(|scope| {
                scope.borrow_mut().as_mut().map(|bufs| {
                    bufs.push(self.byte_view());
                    bufs.len() - 1
                })
            });
            if let Some(index) = index {
                let index = u32::try_from(index).map_err(serde::ser::Error::custom)?;
                return Repr::OutOfBand(index).serialize(s);
            }
        }
        Repr::Inline(Cow::Borrowed(bytes)).serialize(s)
    }
}

impl<'de, T: Pod> Deserialize<'de> for SharedSlice<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let elem = size_of::<T>();
        match Repr::deserialize(d)? {
            Repr::Inline(bytes) => {
                if elem == 0 || bytes.len() % elem != 0 {
                    return Err(D::Error::custom(format!(
                        "{} bytes are not a whole number of {elem}-byte values",
                        bytes.len()
                    )));
                }
                Ok(SharedSlice::from_vec(bytemuck::pod_collect_to_vec(&bytes)))
            }
            Repr::OutOfBand(index) => DECODE.with(|scope| {
                let scope = scope.borrow();
                let bufs = scope.as_ref().ok_or_else(|| {
                    D::Error::custom(
                        "a reference to shared memory outside a shared context (this value was \
                         encoded for a pool's workers)",
                    )
                })?;
                let b = bufs.get(index as usize).ok_or_else(|| {
                    D::Error::custom(format!(
                        "shared buffer {index} does not exist ({} were sent)",
                        bufs.len()
                    ))
                })?;
                let end = b.offset.checked_add(b.len);
                if end.is_none_or(|end| end > b.region.len()) {
                    return Err(D::Error::custom(format!(
                        "shared buffer {index} ({} bytes at offset {}) lies outside its \
                         {}-byte object",
                        b.len,
                        b.offset,
                        b.region.len()
                    )));
                }
                let start = b.region.bytes()[b.offset..].as_ptr() as usize;
                if elem == 0
                    || b.len % elem != 0
                    || !start.is_multiple_of(std::mem::align_of::<T>())
                {
                    return Err(D::Error::custom(format!(
                        "shared buffer {index} ({} bytes at offset {}) is not an aligned array \
                         of {elem}-byte values",
                        b.len, b.offset
                    )));
                }
                Ok(SharedSlice {
                    data: Data::Mapped {
                        region: Arc::clone(&b.region),
                        offset: b.offset,
                        len: b.len / elem,
                    },
                })
            }),
        }
    }
}

// The values are immutable and a `Region` is a read-only mapping, so sharing a slice
// across threads is sound whenever `T` is plain old data.
const _: fn() = || {
    fn assert_send_sync<X: Send + Sync>() {}
    assert_send_sync::<SharedSlice<f64>>();
};
