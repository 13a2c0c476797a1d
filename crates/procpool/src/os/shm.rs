//! Shared memory for contexts: anonymous, sealed, read-only objects, their mappings, and
//! handing their descriptors to a worker over its socket (`SCM_RIGHTS`).
//!
//! On Linux an object is a `memfd` sealed against writes, growth and shrinking once it is
//! filled, so a mapping of it can never change under a reader or be cut short (no `SIGBUS`).
//! Elsewhere it is a POSIX shared-memory object unlinked the moment it is created (it cannot
//! be sealed there). Either way it has no name anyone can find, and it disappears with its
//! last descriptor and mapping: nothing is left in `/dev/shm`, even when the coordinator is
//! killed with `SIGKILL`.

use rustix::fs::{self, SealFlags};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Most descriptors one message may carry (the kernel's limit is 253).
pub(crate) const MAX_FDS: usize = 64;

/// The seals a shared object must carry before a worker maps it.
#[cfg(target_os = "linux")]
fn required_seals() -> SealFlags {
    SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE
}

/// A read-only mapping of a shared object (or nothing, for zero bytes), and the object's
/// descriptor when it may be handed on to workers.
pub(crate) struct Region {
    map: Option<memmap2::Mmap>,
    fd: Option<OwnedFd>,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region").field("len", &self.len()).finish()
    }
}

impl Region {
    /// The mapped bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Their number.
    pub(crate) fn len(&self) -> usize {
        self.bytes().len()
    }

    /// The object's descriptor, if this side kept it (the creating side does).
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }
}

/// Creates a shared object of `len` bytes, lets `fill` write it, seals it, and maps it
/// read-only. The returned region keeps the descriptor, to hand to workers.
pub(crate) fn create(len: usize, fill: impl FnOnce(&mut [u8])) -> io::Result<Region> {
    if len == 0 {
        fill(&mut []);
        return Ok(Region {
            map: None,
            fd: None,
        });
    }
    let fd = anonymous_object()?;
    fs::ftruncate(&fd, len as u64)?;
    let file = File::from(fd);
    {
        // SAFETY: the object was created just now, has no name and no other descriptor or
        // mapping, so nothing else can modify or truncate it while this mapping lives.
        let mut map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file)? };
        fill(&mut map);
    }
    let fd = OwnedFd::from(file);
    seal(&fd)?;
    let map = map_readonly(&fd, len, false)?;
    Ok(Region {
        map: Some(map),
        fd: Some(fd),
    })
}

/// Maps a shared object received from the coordinator, checking first that it is `len`
/// bytes long and (on Linux) sealed so it cannot shrink or change while mapped. The
/// descriptor is closed once mapped: the mapping keeps the object alive.
pub(crate) fn open_received(fd: OwnedFd, len: u64) -> Result<Region, String> {
    let size = fs::fstat(&fd)
        .map_err(|e| format!("cannot inspect the shared context object: {e}"))?
        .st_size;
    let size = u64::try_from(size).unwrap_or(0);
    if size != len {
        return Err(format!(
            "the shared context object holds {size} bytes, but {len} were announced"
        ));
    }
    #[cfg(target_os = "linux")]
    {
        let seals = fs::fcntl_get_seals(&fd)
            .map_err(|e| format!("the shared context object is not a sealed memfd: {e}"))?;
        if !seals.contains(required_seals()) {
            return Err(format!(
                "the shared context object is not sealed against writes and resizing \
                 (seals {seals:?}); refusing to map it"
            ));
        }
    }
    if len == 0 {
        return Ok(Region {
            map: None,
            fd: None,
        });
    }
    let len = usize::try_from(len).map_err(|_| format!("{len} bytes cannot be mapped here"))?;
    // Populated: a worker is about to read all of it, and filling the page tables in one
    // call is cheaper than one fault per page.
    let map =
        map_readonly(&fd, len, true).map_err(|e| format!("cannot map the shared context: {e}"))?;
    Ok(Region {
        map: Some(map),
        fd: None,
    })
}

fn map_readonly(fd: &OwnedFd, len: usize, populate: bool) -> io::Result<memmap2::Mmap> {
    let file = File::from(fd.try_clone()?);
    let mut options = memmap2::MmapOptions::new();
    options.len(len);
    if populate {
        options.populate();
    }
    // SAFETY: on Linux the object is sealed against writes, growth and shrinking (checked
    // or set by the caller), so the mapped bytes never change and never go away under us.
    // Elsewhere it is an unlinked object that only this pool's processes can reach and
    // that nobody writes after filling it.
    unsafe { options.map(&file) }
}

#[cfg(target_os = "linux")]
fn anonymous_object() -> io::Result<OwnedFd> {
    use rustix::fs::MemfdFlags;
    Ok(fs::memfd_create(
        "procpool-context",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?)
}

#[cfg(target_os = "linux")]
fn seal(fd: &OwnedFd) -> io::Result<()> {
    Ok(fs::fcntl_add_seals(fd, required_seals() | SealFlags::SEAL)?)
}

#[cfg(not(target_os = "linux"))]
fn anonymous_object() -> io::Result<OwnedFd> {
    use rustix::fs::Mode;
    use rustix::shm;
    for _ in 0..16 {
        let name = format!(
            "/procpool-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        match shm::open(
            name.as_str(),
            shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        ) {
            Ok(fd) => {
                // Unlinked at once: no name is left behind, whatever happens next.
                shm::unlink(name.as_str())?;
                return Ok(fd);
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free name for a shared-memory object"))
}

#[cfg(not(target_os = "linux"))]
fn seal(_fd: &OwnedFd) -> io::Result<()> {
    Ok(())
}

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`); returns how many bytes went (the
/// descriptors go with the first of them).
pub(crate) fn send_with_fds(
    sock: BorrowedFd<'_>,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other(format!(
            "{} descriptors do not fit in one message",
            fds.len()
        )));
    }
    Ok(rustix::net::sendmsg(
        sock,
        &[IoSlice::new(bytes)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?)
}

/// Reads into `buf` like `read(2)`, keeping any descriptors that came with the bytes
/// (close-on-exec, so a program a task starts does not inherit them).
pub(crate) fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> io::Result<usize> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(io::Error::other(
            "descriptors from the coordinator were cut off (more than fit in one message)",
        ));
    }
    Ok(got.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn created_objects_are_sealed_and_read_back() {
        let r = create(10_000, |b| {
            for (i, x) in b.iter_mut().enumerate() {
                *x = i as u8;
            }
        })
        .unwrap();
        assert_eq!(r.len(), 10_000);
        assert_eq!(r.bytes()[257], 1);
        let fd = r.fd().unwrap().try_clone_to_owned().unwrap();
        #[cfg(target_os = "linux")]
        {
            // Sealed: nobody can write, grow or shrink it.
            assert!(fs::ftruncate(&fd, 5).is_err());
            assert!(fs::fcntl_get_seals(&fd).unwrap().contains(required_seals()));
        }
        let seen = open_received(fd, 10_000).unwrap();
        assert_eq!(seen.bytes(), r.bytes());
    }

    #[test]
    fn a_short_or_unsealed_object_is_refused() {
        let r = create(100, |b| b.fill(7)).unwrap();
        let fd = r.fd().unwrap().try_clone_to_owned().unwrap();
        let err = open_received(fd, 4096).unwrap_err();
        assert!(err.contains("holds 100 bytes, but 4096"), "{err}");
        #[cfg(target_os = "linux")]
        {
            let raw = fs::memfd_create("unsealed", fs::MemfdFlags::CLOEXEC).unwrap();
            fs::ftruncate(&raw, 4096).unwrap();
            let err = open_received(raw, 4096).unwrap_err();
            assert!(err.contains("not sealed"), "{err}");
        }
    }

    #[test]
    fn descriptors_travel_with_their_bytes() {
        let (a, b) = UnixStream::pair().unwrap();
        let r = create(64, |b| b.fill(9)).unwrap();
        let sent = send_with_fds(a.as_fd(), b"hello", &[r.fd().unwrap()]).unwrap();
        assert_eq!(sent, 5);
        (&a).write_all(b" world").unwrap();
        let mut fds = Vec::new();
        let mut buf = [0u8; 64];
        let n = recv_with_fds(b.as_fd(), &mut buf, &mut fds).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        let mut rest = [0u8; 6];
        (&b).read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b" world");
        let seen = open_received(fds.pop().unwrap(), 64).unwrap();
        assert_eq!(seen.bytes(), &[9u8; 64][..]);
    }
}
