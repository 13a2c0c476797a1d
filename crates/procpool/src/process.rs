//! Hand-built fan-out, the seed article's first example: [`Process`] runs a [`Target`] in
//! a child process; a [`Queue`] (or [`JoinableQueue`]) carries values between processes
//! through its handles, [`QueueSender`] to put and [`QueueReceiver`] to get.
//!
//! The process that creates a queue owns it: the values live in its memory, and it
//! listens on a local socket in the Linux abstract namespace (via `interprocess`) under a
//! random name. A handle is just that name plus a random token, so it serializes like any
//! other argument — which is exactly how Python passes its `mp.Queue` to
//! `Process(args=...)`. A handle sends one request at a time (put, get, qsize,
//! task-done, join) and the owner answers each; one thread per connection serves it, so a
//! put into an unbounded queue is taken as soon as it arrives: a child never blocks on a
//! full pipe, and joining children before reading the queue cannot deadlock (a known trap
//! of Python's Queue). Only a `maxsize` makes a put wait, by design, until a reader makes
//! room.

use crate::error::Error;
use crate::os::child::{ChildOutput, ChildProc, describe_status};
use crate::os::unix;
use crate::task::Target;
use crate::wire::codec::{self, CodecError};
use crate::wire::frame::{self, FrameError, FrameReader};
use crate::wire::msg::{Down, PROTOCOL_VERSION, Up};
use interprocess::local_socket::{GenericNamespaced, ListenerOptions, Stream, prelude::*};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::marker::PhantomData;
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// A child process running one [`Target`] (Python's `multiprocessing.Process`).
///
/// Dropping a `Process` that is still running kills and reaps it: no handle leaks a process.
pub struct Process {
    child: ChildProc,
    status: Option<ExitStatus>,
}

impl Process {
    /// Starts `target` in a new process (the current binary re-executed; `main` must call
    /// [`serve_if_worker`](crate::serve_if_worker) with a registry that has the target).
    /// Returns once the child has the target.
    pub fn spawn<T: Target>(target: T) -> Result<Process, Error> {
        if crate::worker::runtime::in_pool_worker() {
            return Err(Error::InsideWorker);
        }
        let payload = codec::encode(&target).map_err(|source| Error::Codec {
            what: format!("process target {:?}", T::NAME),
            source,
        })?;
        let (child, mut sock) =
            ChildProc::spawn("process", None, Duration::ZERO, ChildOutput::Inherit, &[]).map_err(
                |e| Error::Spawn {
                    reason: format!("could not start a process: {e}"),
                    source: Some(e),
                },
            )?;
        let pid = child.pid();
        let mut out = Vec::new();
        let max = frame::DEFAULT_MAX_FRAME;
        frame::write_frame(
            &mut out,
            &Down::Hello {
                protocol: PROTOCOL_VERSION,
                task: T::NAME,
                max_frame: max,
                flags: 0,
            },
            max,
        )?;
        frame::write_frame(&mut out, &Down::Run { payload: &payload }, max)?;
        let mut process = Process {
            child,
            status: None,
        };
        let started = sock.write_all(&out).and_then(|()| {
            // Wait for the child to take the target (Ready) or refuse it.
            let mut reader = FrameReader::new(max);
            let mut greeted = false;
            loop {
                let Some(body) = frame::read_frame_blocking(&mut reader, &mut sock)
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                else {
                    return Ok(Err(None));
                };
                match codec::decode_borrowed::<Up<'_>>(&body) {
                    Ok(Up::Hello { .. }) if !greeted => greeted = true,
                    Ok(Up::Ready) if greeted => return Ok(Ok(())),
                    Ok(Up::Refused { reason }) => return Ok(Err(Some(reason))),
                    Ok(_) | Err(_) => {
                        return Ok(Err(Some("it does not speak our protocol".into())));
                    }
                }
            }
        });
        match started {
            Ok(Ok(())) => {
                debug!(pid, target = T::NAME, "process started");
                Ok(process)
            }
            Ok(Err(reason)) => {
                let status = process.child.reap(Duration::from_millis(200));
                let how = status.map_or_else(|| "did not exit".into(), describe_status);
                Err(Error::spawn(match reason {
                    Some(r) => format!("process pid {pid} refused target {:?}: {r}", T::NAME),
                    None => format!(
                        "process pid {pid} {how} before taking target {:?} (did main call \
                         procpool::serve_if_worker first?)",
                        T::NAME
                    ),
                }))
            }
            Err(e) => {
                let status = process.child.reap(Duration::from_millis(200));
                let how = status.map_or_else(|| "did not exit".into(), describe_status);
                Err(Error::spawn(format!(
                    "process pid {pid} {how} before taking its target: {e}"
                )))
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Whether it is still running.
    pub fn is_alive(&mut self) -> bool {
        self.status.is_none() && self.child.try_reap().is_none()
    }

    /// Waits for it to end and returns how it ended (reaping it).
    pub fn join(&mut self) -> Result<ExitStatus, Error> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let status = self
            .child
            .wait()
            .map_err(|e| Error::io(format!("could not reap process pid {}", self.pid()), e))?;
        self.status = Some(status);
        Ok(status)
    }

    /// Kills it with SIGKILL (if it is still running) and reaps it.
    pub fn kill(&mut self) -> Result<ExitStatus, Error> {
        self.child.kill();
        self.join()
    }

    /// How it ended, in words ("exited with code 0", "was killed by SIGKILL (9)"), once it has.
    pub fn describe_exit(&mut self) -> Option<String> {
        self.child.try_reap().map(describe_status)
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process").field("pid", &self.pid()).finish()
    }
}

// ----- the queue: one owner, handles anywhere -------------------------------------------

/// The largest value a queue carries, encoded.
const MAX_ITEM: u32 = frame::DEFAULT_MAX_FRAME;

/// Version of the queue protocol (requests and replies below). Both ends are normally the
/// same binary; bump it whenever a request or reply changes.
const QUEUE_PROTOCOL: u32 = 1;

/// How often an owner thread that waits on behalf of a handle (a blocking `get`, `put` or
/// `join`) checks that the handle's process is still there.
const PEER_CHECK: Duration = Duration::from_millis(100);

/// What a handle asks the queue's owner. One request, then one reply: a handle never sends
/// a second request before the reply to the first (the owner relies on that to notice a
/// handle that hung up while it waits). `Hello` is variant 0 and first on every connection;
/// variants are only ever appended.
#[derive(Serialize, Deserialize)]
enum Request {
    /// Presents the protocol version and the queue's token.
    Hello { protocol: u32, token: u64 },
    /// Puts one encoded value, waiting for room at most `wait` (`None`: as long as it takes).
    Put {
        #[serde(with = "serde_bytes")]
        value: Vec<u8>,
        wait: Option<Duration>,
    },
    /// Takes the next value, waiting for one at most `wait` (`None`: as long as it takes).
    Get { wait: Option<Duration> },
    /// Asks how many values are in the queue.
    Stat,
    /// Marks one value taken from a joinable queue as processed.
    TaskDone,
    /// Waits until every value put on a joinable queue was marked done.
    Join,
}

/// The owner's answer to one [`Request`]. `Welcome` is variant 0; variants are only ever
/// appended.
#[derive(Serialize, Deserialize)]
enum Reply {
    /// The handle's `Hello` was accepted.
    Welcome,
    /// The put, task-done or join succeeded.
    Done,
    /// The value a get took.
    Item(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The wait ran out (full for a put, empty for a get).
    TimedOut,
    /// How many values are in the queue, and its maxsize (0: unbounded).
    Stat { len: u64, maxsize: u64 },
    /// A task-done or join on a queue that is not a [`JoinableQueue`].
    NotJoinable,
    /// More task-dones than values were put.
    TooManyTaskDone,
    /// The request was refused (a wrong token or version, or a value that is not the
    /// queue's type); the reason says which.
    Refused { reason: String },
}

/// The owner's state, shared by its own calls and the threads that serve handles.
struct Shared {
    name: String,
    token: u64,
    /// Most values held at once (`None`: unbounded).
    maxsize: Option<usize>,
    joinable: bool,
    /// Whether encoded bytes decode as the queue's value type (checked on every remote put,
    /// so a wrong value fails the put that sent it, not a later get).
    check: fn(&[u8]) -> Result<(), CodecError>,
    state: Mutex<State>,
    /// Signalled on every change of `state`, and when the queue goes away.
    changed: Condvar,
    /// Set once the owning `Queue` is dropped: every waiter gives up, every handle's
    /// connection is shut down.
    gone: AtomicBool,
    /// The connections being served, to shut them down when the queue goes away.
    conns: Mutex<Conns>,
}

/// The values (encoded) and, for a joinable queue, how many are not yet marked done.
#[derive(Default)]
struct State {
    items: VecDeque<Vec<u8>>,
    unfinished: u64,
}

/// Open connections by id: a second handle on each, for `shutdown`.
#[derive(Default)]
struct Conns {
    next: u64,
    open: HashMap<u64, UnixStream>,
}

/// Why a wait for the queue's state ended without it.
enum WaitEnd {
    /// The caller's timeout ran out.
    TimedOut,
    /// The queue was dropped.
    Gone,
    /// The handle being served hung up.
    PeerLeft,
}

/// Checks that `bytes` decode as a `T`.
fn decodes_as<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), CodecError> {
    codec::decode::<T>(bytes).map(drop)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `ready` holds, at most `wait` (`None`: no limit). With a `peer`, also
    /// gives up when that socket's other end hangs up.
    fn wait_for<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        wait: Option<Duration>,
        peer: Option<BorrowedFd<'_>>,
        ready: impl Fn(&State) -> bool,
    ) -> Result<MutexGuard<'a, State>, WaitEnd> {
        // A limit too far away to represent is no limit.
        let deadline = wait.and_then(|w| Instant::now().checked_add(w));
        loop {
            if self.gone.load(Ordering::SeqCst) {
                return Err(WaitEnd::Gone);
            }
            if ready(&st) {
                return Ok(st);
            }
            let mut slice = match (wait, deadline) {
                (Some(_), Some(d)) => Some(d.saturating_duration_since(Instant::now())),
                _ => None,
            };
            if slice == Some(Duration::ZERO) {
                return Err(WaitEnd::TimedOut);
            }
            if peer.is_some() {
                slice = Some(slice.map_or(PEER_CHECK, |s| s.min(PEER_CHECK)));
            }
            st = match slice {
                None => self
                    .changed
                    .wait(st)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(s) => {
                    self.changed
                        .wait_timeout(st, s)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
            // The handle waits for our reply and sends nothing meanwhile: a readable
            // socket means it hung up.
            let hung_up = |fd| unix::wait_fd(fd, false, Some(Duration::ZERO)).unwrap_or(true);
            if peer.is_some_and(hung_up) {
                return Err(WaitEnd::PeerLeft);
            }
        }
    }

    /// Appends one encoded value once there is room.
    fn put(
        &self,
        value: Vec<u8>,
        wait: Option<Duration>,
        peer: Option<BorrowedFd<'_>>,
    ) -> Result<(), WaitEnd> {
        let maxsize = self.maxsize;
        let mut st = self.wait_for(self.lock(), wait, peer, |st| {
            maxsize.is_none_or(|m| st.items.len() < m)
        })?;
        st.items.push_back(value);
        if self.joinable {
            st.unfinished += 1;
        }
        self.changed.notify_all();
        Ok(())
    }

    /// Takes the oldest encoded value once there is one.
    fn take(
        &self,
        wait: Option<Duration>,
        peer: Option<BorrowedFd<'_>>,
    ) -> Result<Vec<u8>, WaitEnd> {
        let mut st = self.wait_for(self.lock(), wait, peer, |st| !st.items.is_empty())?;
        let value = st.items.pop_front();
        self.changed.notify_all();
        value.ok_or(WaitEnd::TimedOut)
    }

    /// Puts back, at the front, a value taken for a handle that could not receive it.
    fn untake(&self, value: Vec<u8>) {
        self.lock().items.push_front(value);
        self.changed.notify_all();
    }

    /// Marks one value done; `Err` with the reply that says why not.
    fn task_done(&self) -> Result<(), Reply> {
        if !self.joinable {
            return Err(Reply::NotJoinable);
        }
        let mut st = self.lock();
        if st.unfinished == 0 {
            return Err(Reply::TooManyTaskDone);
        }
        st.unfinished -= 1;
        if st.unfinished == 0 {
            self.changed.notify_all();
        }
        Ok(())
    }

    /// Waits until every value put was marked done.
    fn join(&self, peer: Option<BorrowedFd<'_>>) -> Result<(), WaitEnd> {
        self.wait_for(self.lock(), None, peer, |st| st.unfinished == 0)
            .map(drop)
    }

    fn stat(&self) -> Reply {
        Reply::Stat {
            len: self.lock().items.len() as u64,
            maxsize: self.maxsize.map_or(0, |m| m as u64),
        }
    }

    /// Notes an open connection (`None` when the queue is already gone).
    fn register(&self, stream: UnixStream) -> Option<u64> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock `shut_down` takes after setting `gone`: a connection is
        // either seen by its sweep or sees the flag here.
        if self.gone.load(Ordering::SeqCst) {
            return None;
        }
        let id = conns.next;
        conns.next += 1;
        conns.open.insert(id, stream);
        Some(id)
    }

    fn unregister(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.open.remove(&id);
    }

    /// The owner dropped the queue: wake every waiter, hang up on every handle, and let the
    /// accept loop end (which releases the name).
    fn shut_down(&self) {
        self.gone.store(true, Ordering::SeqCst);
        drop(self.lock());
        self.changed.notify_all();
        let conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        for stream in conns.open.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        drop(conns);
        if let Ok(ns) = self.name.as_str().to_ns_name::<GenericNamespaced>() {
            let _ = Stream::connect(ns);
        }
    }
}

/// Serves one handle's connection until it hangs up, misbehaves or the queue goes away.
fn serve_connection(shared: &Shared, conn: Stream) {
    let Stream::UdSocket(uds) = &conn;
    let Ok(second) = uds.inner().try_clone() else {
        return;
    };
    let Some(id) = shared.register(second) else {
        return;
    };
    if let Err(e) = serve_requests(shared, uds.inner()) {
        warn!(queue = %shared.name, "queue: dropping a connection: {e}");
    }
    shared.unregister(id);
}

/// The request loop of [`serve_connection`]; `Ok` when the handle hung up or the queue
/// went away, `Err` when the handle broke the protocol or a write failed.
fn serve_requests(shared: &Shared, conn: &UnixStream) -> Result<(), String> {
    let mut reader = FrameReader::new(MAX_ITEM);
    let mut out = Vec::new();
    let mut greeted = false;
    let mut r = conn;
    loop {
        let body = match frame::read_frame_blocking(&mut reader, &mut r) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(()),
            Err(_) if shared.gone.load(Ordering::SeqCst) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        };
        if shared.gone.load(Ordering::SeqCst) {
            return Ok(());
        }
        let request: Request = codec::decode(&body).map_err(|e| e.to_string())?;
        let peer = Some(conn.as_fd());
        let mut last = false;
        let reply = match (greeted, request) {
            (false, Request::Hello { protocol, token }) => {
                if protocol != QUEUE_PROTOCOL {
                    last = true;
                    Reply::Refused {
                        reason: format!(
                            "queue protocol {protocol}, expected {QUEUE_PROTOCOL} (a handle \
                             from another build?)"
                        ),
                    }
                } else if token != shared.token {
                    last = true;
                    Reply::Refused {
                        reason: "the handle's token does not match".into(),
                    }
                } else {
                    greeted = true;
                    Reply::Welcome
                }
            }
            (false, _) => return Err("a request before the handshake".into()),
            (true, Request::Hello { .. }) => return Err("a second handshake".into()),
            (true, Request::Put { value, wait }) => match (shared.check)(&value) {
                Err(e) => Reply::Refused {
                    reason: format!("the value is not of the queue's type: {e}"),
                },
                Ok(()) => match shared.put(value, wait, peer) {
                    Ok(()) => Reply::Done,
                    Err(WaitEnd::TimedOut) => Reply::TimedOut,
                    Err(WaitEnd::Gone | WaitEnd::PeerLeft) => return Ok(()),
                },
            },
            (true, Request::Get { wait }) => match shared.take(wait, peer) {
                Ok(value) => Reply::Item(value),
                Err(WaitEnd::TimedOut) => Reply::TimedOut,
                Err(WaitEnd::Gone | WaitEnd::PeerLeft) => return Ok(()),
            },
            (true, Request::Stat) => shared.stat(),
            (true, Request::TaskDone) => match shared.task_done() {
                Ok(()) => Reply::Done,
                Err(refusal) => refusal,
            },
            (true, Request::Join) if !shared.joinable => Reply::NotJoinable,
            (true, Request::Join) => match shared.join(peer) {
                Ok(()) => Reply::Done,
                Err(WaitEnd::TimedOut) => Reply::TimedOut,
                Err(WaitEnd::Gone | WaitEnd::PeerLeft) => return Ok(()),
            },
        };
        out.clear();
        let sent = frame::write_frame(&mut out, &reply, MAX_ITEM)
            .map_err(|e| e.to_string())
            .and_then(|_| (&*conn).write_all(&out).map_err(|e| e.to_string()));
        if let Err(e) = sent {
            // A value that did not reach its handle goes back where it was.
            if let Reply::Item(value) = reply {
                shared.untake(value);
            }
            return Err(format!("could not reply: {e}"));
        }
        if last {
            return Ok(());
        }
    }
}

/// The error of a put through a handle (or the queue) after its `close()`.
fn closed_error(name: &str) -> Error {
    Error::QueueClosed {
        queue: name.to_owned(),
    }
}

/// The error of a handle whose queue is gone (dropped, or its owner exited).
fn gone_error(name: &str, source: io::Error) -> Error {
    Error::QueueGone {
        queue: name.to_owned(),
        source,
    }
}

fn not_joinable_error(name: &str) -> Error {
    Error::Config(format!(
        "queue {name:?} is not joinable: task_done() and join() need a JoinableQueue"
    ))
}

fn too_many_task_done_error(name: &str) -> Error {
    Error::Config(format!(
        "task_done() was called more times than values were put on queue {name:?}"
    ))
}

/// Refuses maxsize 0 (Python's "unbounded"), which here would be a queue that never
/// takes a value.
fn check_maxsize(maxsize: usize) -> Result<(), Error> {
    if maxsize == 0 {
        return Err(Error::Config(
            "queue maxsize 0: a bounded queue holds at least one value (Queue::new() is \
             unbounded)"
                .into(),
        ));
    }
    Ok(())
}

fn encode_error(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Codec {
        what: format!("a value for queue {name:?}"),
        source: crate::wire::codec::CodecError(e.to_string()),
    }
}

/// A multi-producer, multi-consumer FIFO queue that any process may put into and get from
/// (Python's `multiprocessing.Queue`).
///
/// The process that creates it owns it: the values live here. Other processes reach it
/// through handles that serialize into a [`Target`]: a [`QueueSender`] to put and a
/// [`QueueReceiver`] to get. Dropping the queue ends it: a handle used after that fails
/// with an error that says the queue is gone.
///
/// ```no_run
/// # fn main() -> Result<(), procpool::Error> {
/// let q = procpool::Queue::<u64>::with_maxsize(2)?;
/// q.put(&1)?;
/// q.put(&2)?;
/// assert!(q.full());
/// assert!(q.try_put(&3).is_err()); // full: Error::Timeout(0 s)
/// assert_eq!(q.get()?, 1);
/// assert_eq!(q.qsize(), 1);
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    shared: Arc<Shared>,
    /// Set by [`close`](Queue::close): no more puts through the queue itself.
    closed: AtomicBool,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A new, empty, unbounded queue listening under a fresh random name.
    pub fn new() -> Result<Queue<T>, Error> {
        Queue::build(None, false)
    }

    /// A new, empty queue that holds at most `maxsize` values: a put waits (or, with a
    /// timeout, fails) while it is full. `maxsize` 0 is refused (Python reads 0 as
    /// "unbounded": use [`Queue::new`] for that).
    pub fn with_maxsize(maxsize: usize) -> Result<Queue<T>, Error> {
        check_maxsize(maxsize)?;
        Queue::build(Some(maxsize), false)
    }

    fn build(maxsize: Option<usize>, joinable: bool) -> Result<Queue<T>, Error> {
        let token: u64 = rand::random();
        let name = format!(
            "procpool-queue-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let ns = name
            .as_str()
            .to_ns_name::<GenericNamespaced>()
            .map_err(|e| Error::io(format!("invalid queue name {name:?}"), e))?;
        let listener = ListenerOptions::new()
            .name(ns)
            .create_sync()
            .map_err(|e| Error::io(format!("could not listen on queue {name:?}"), e))?;
        let shared = Arc::new(Shared {
            name,
            token,
            maxsize,
            joinable,
            check: decodes_as::<T>,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            gone: AtomicBool::new(false),
            conns: Mutex::new(Conns::default()),
        });
        let accept = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("procpool-queue-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if accept.gone.load(Ordering::SeqCst) {
                        return;
                    }
                    let conn = match conn {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of descriptors, say: back off rather than spin.
                            warn!(queue = %accept.name, "queue: accept failed: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    let shared = Arc::clone(&accept);
                    let started = std::thread::Builder::new()
                        .name("procpool-queue-conn".into())
                        .spawn(move || serve_connection(&shared, conn));
                    if let Err(e) = started {
                        warn!(queue = %accept.name, "queue: could not serve a connection: {e}");
                    }
                }
            })
            .map_err(|e| Error::io("could not start the queue's accept thread", e))?;
        Ok(Queue {
            shared,
            closed: AtomicBool::new(false),
            _t: PhantomData,
        })
    }

    /// A putting handle for this queue, to hand to a [`Target`] (or to use here).
    pub fn sender(&self) -> QueueSender<T> {
        QueueSender {
            link: Link::new(&self.shared),
            _t: PhantomData,
        }
    }

    /// A getting handle for this queue, to hand to a [`Target`] (or to use here).
    pub fn receiver(&self) -> QueueReceiver<T> {
        QueueReceiver {
            link: Link::new(&self.shared),
            _t: PhantomData,
        }
    }

    /// Puts one value, waiting while the queue is full (forever, like Python's `put()`).
    pub fn put(&self, value: &T) -> Result<(), Error> {
        self.put_wait(value, None)
    }

    /// Puts one value, waiting at most `timeout` for room: `Error::Timeout` when the queue
    /// stayed full (Python's `queue.Full`).
    pub fn put_timeout(&self, value: &T, timeout: Duration) -> Result<(), Error> {
        self.put_wait(value, Some(timeout))
    }

    /// Puts one value if there is room now; `Error::Timeout(0 s)` when the queue is full
    /// (Python's `put_nowait`).
    pub fn try_put(&self, value: &T) -> Result<(), Error> {
        self.put_wait(value, Some(Duration::ZERO))
    }

    fn put_wait(&self, value: &T, wait: Option<Duration>) -> Result<(), Error> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(closed_error(&self.shared.name));
        }
        let bytes = codec::encode(value).map_err(|e| encode_error(&self.shared.name, e))?;
        self.shared.put(bytes, wait, None).map_err(|end| match end {
            WaitEnd::TimedOut => Error::Timeout(wait.unwrap_or_default()),
            WaitEnd::Gone | WaitEnd::PeerLeft => {
                gone_error(&self.shared.name, io::ErrorKind::NotConnected.into())
            }
        })
    }

    /// Waits for the next value (forever, like Python's `get()`).
    pub fn get(&self) -> Result<T, Error> {
        self.get_wait(None)
    }

    /// Waits at most `timeout` for the next value: `Error::Timeout` when none came
    /// (Python's `queue.Empty`).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_wait(Some(timeout))
    }

    /// The next value if one is there already (Python's `get_nowait`).
    pub fn try_get(&self) -> Option<T> {
        match self.get_wait(Some(Duration::ZERO)) {
            Ok(value) => Some(value),
            Err(Error::Timeout(_)) => None,
            Err(e) => {
                warn!("{e}");
                None
            }
        }
    }

    fn get_wait(&self, wait: Option<Duration>) -> Result<T, Error> {
        let name = &self.shared.name;
        let bytes = self.shared.take(wait, None).map_err(|end| match end {
            WaitEnd::TimedOut => Error::Timeout(wait.unwrap_or_default()),
            WaitEnd::Gone | WaitEnd::PeerLeft => {
                gone_error(name, io::ErrorKind::NotConnected.into())
            }
        })?;
        codec::decode(&bytes)
            .map_err(|e| Error::Protocol(format!("queue {name:?}: undecodable value: {e}")))
    }

    /// Values in arrival order, waiting for each (endless: combine with `take`).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.get().ok())
    }

    /// How many values are in the queue now (Python's `qsize()`: exact at this instant,
    /// but other processes may change it at any time).
    pub fn qsize(&self) -> usize {
        self.shared.lock().items.len()
    }

    /// Whether the queue is empty now (see [`qsize`](Queue::qsize)).
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// Whether the queue holds `maxsize` values now (never, for an unbounded queue).
    pub fn full(&self) -> bool {
        self.shared.maxsize.is_some_and(|m| self.qsize() >= m)
    }

    /// The most values it holds at once (`None`: unbounded).
    pub fn maxsize(&self) -> Option<usize> {
        self.shared.maxsize
    }

    /// No more puts through the queue itself (they fail with an error); gets still drain
    /// what was put, and handles are not affected (Python's `close()`, without its
    /// feeder thread: a put here has already reached the queue when it returns).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        self.shared.shut_down();
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.shared.name)
            .field("maxsize", &self.shared.maxsize)
            .finish()
    }
}

/// A [`Queue`] that counts unfinished work (Python's `multiprocessing.JoinableQueue`):
/// every put adds one, every [`task_done`](JoinableQueue::task_done) takes one away, and
/// [`join`](JoinableQueue::join) waits until none is left.
///
/// It is a `Queue` for everything else (it dereferences to one); its handles call
/// [`QueueReceiver::task_done`] and [`QueueSender::join`] from other processes.
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// A new, empty, unbounded joinable queue.
    pub fn new() -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue {
            queue: Queue::build(None, true)?,
        })
    }

    /// A new, empty joinable queue that holds at most `maxsize` values (0 is refused, as
    /// for [`Queue::with_maxsize`]).
    pub fn with_maxsize(maxsize: usize) -> Result<JoinableQueue<T>, Error> {
        check_maxsize(maxsize)?;
        Ok(JoinableQueue {
            queue: Queue::build(Some(maxsize), true)?,
        })
    }

    /// Marks one value that was taken from the queue as processed. Called more times than
    /// values were put, it fails (Python's `ValueError`).
    pub fn task_done(&self) -> Result<(), Error> {
        self.queue
            .shared
            .task_done()
            .map_err(|_| too_many_task_done_error(&self.queue.shared.name))
    }

    /// Waits until every value put so far was marked done with `task_done`.
    pub fn join(&self) -> Result<(), Error> {
        self.queue
            .shared
            .join(None)
            .map_err(|_| gone_error(&self.queue.shared.name, io::ErrorKind::NotConnected.into()))
    }
}

impl<T> std::ops::Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T> std::fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("name", &self.queue.shared.name)
            .field("maxsize", &self.queue.shared.maxsize)
            .finish()
    }
}

// ----- handles ---------------------------------------------------------------------------

/// A handle's way to the queue: its name and token (all that serializes), and a lazily
/// opened connection to the owner.
#[derive(Serialize, Deserialize)]
struct Link {
    name: String,
    token: u64,
    #[serde(skip)]
    conn: Mutex<Option<Conn>>,
    #[serde(skip)]
    closed: AtomicBool,
}

/// An open connection to the queue's owner.
struct Conn {
    stream: Stream,
    reader: FrameReader,
}

impl Link {
    fn new(shared: &Shared) -> Link {
        Link {
            name: shared.name.clone(),
            token: shared.token,
            conn: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }

    fn unexpected(&self) -> Error {
        Error::Protocol(format!(
            "queue {:?} answered a request with the wrong reply",
            self.name
        ))
    }

    /// Sends one request, returns the owner's reply (connecting first if need be). A
    /// connection that failed is dropped; the next call connects again.
    fn call(&self, request: &Request) -> Result<Reply, Error> {
        let mut out = Vec::new();
        frame::write_frame(&mut out, request, MAX_ITEM).map_err(|e| encode_error(&self.name, e))?;
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.is_none() {
            *conn = Some(self.connect()?);
        }
        let Some(c) = conn.as_mut() else {
            return Err(gone_error(&self.name, io::ErrorKind::NotConnected.into()));
        };
        let reply = self.exchange(c, &out);
        if reply.is_err() {
            *conn = None;
        }
        reply
    }

    fn connect(&self) -> Result<Conn, Error> {
        let ns = self
            .name
            .as_str()
            .to_ns_name::<GenericNamespaced>()
            .map_err(|e| Error::io(format!("invalid queue name {:?}", self.name), e))?;
        let stream = Stream::connect(ns).map_err(|e| gone_error(&self.name, e))?;
        let mut conn = Conn {
            stream,
            reader: FrameReader::new(MAX_ITEM),
        };
        let mut hello = Vec::new();
        frame::write_frame(
            &mut hello,
            &Request::Hello {
                protocol: QUEUE_PROTOCOL,
                token: self.token,
            },
            MAX_ITEM,
        )
        .map_err(|e| encode_error(&self.name, e))?;
        match self.exchange(&mut conn, &hello)? {
            Reply::Welcome => Ok(conn),
            Reply::Refused { reason } => Err(Error::Protocol(format!(
                "queue {:?} refused this handle: {reason}",
                self.name
            ))),
            _ => Err(self.unexpected()),
        }
    }

    /// Writes one request frame and reads the reply.
    fn exchange(&self, conn: &mut Conn, request: &[u8]) -> Result<Reply, Error> {
        conn.stream
            .write_all(request)
            .map_err(|e| gone_error(&self.name, e))?;
        let body = match frame::read_frame_blocking(&mut conn.reader, &mut conn.stream) {
            Ok(Some(body)) => body,
            Ok(None) => {
                return Err(gone_error(
                    &self.name,
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the owner closed the connection",
                    ),
                ));
            }
            Err(FrameError::Io(e)) => return Err(gone_error(&self.name, e)),
            Err(e) => return Err(Error::Protocol(format!("queue {:?}: {e}", self.name))),
        };
        codec::decode(&body).map_err(|e| Error::Protocol(format!("queue {:?}: {e}", self.name)))
    }

    fn put(&self, value: Vec<u8>, wait: Option<Duration>) -> Result<(), Error> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(closed_error(&self.name));
        }
        match self.call(&Request::Put { value, wait })? {
            Reply::Done => Ok(()),
            Reply::TimedOut => Err(Error::Timeout(wait.unwrap_or_default())),
            Reply::Refused { reason } => Err(Error::Protocol(format!(
                "queue {:?} refused a value: {reason}",
                self.name
            ))),
            _ => Err(self.unexpected()),
        }
    }

    fn get(&self, wait: Option<Duration>) -> Result<Option<Vec<u8>>, Error> {
        match self.call(&Request::Get { wait })? {
            Reply::Item(value) => Ok(Some(value)),
            Reply::TimedOut => Ok(None),
            _ => Err(self.unexpected()),
        }
    }

    /// The queue's length and maxsize (0: unbounded).
    fn stat(&self) -> Result<(u64, u64), Error> {
        match self.call(&Request::Stat)? {
            Reply::Stat { len, maxsize } => Ok((len, maxsize)),
            _ => Err(self.unexpected()),
        }
    }

    fn task_done(&self) -> Result<(), Error> {
        match self.call(&Request::TaskDone)? {
            Reply::Done => Ok(()),
            Reply::NotJoinable => Err(not_joinable_error(&self.name)),
            Reply::TooManyTaskDone => Err(too_many_task_done_error(&self.name)),
            _ => Err(self.unexpected()),
        }
    }

    fn join(&self) -> Result<(), Error> {
        match self.call(&Request::Join)? {
            Reply::Done => Ok(()),
            Reply::NotJoinable => Err(not_joinable_error(&self.name)),
            _ => Err(self.unexpected()),
        }
    }

    /// Marks the link closed and hangs up (unless a call is in flight on another thread:
    /// then the connection closes with the handle).
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut conn) = self.conn.try_lock() {
            *conn = None;
        }
    }
}

impl Clone for Link {
    fn clone(&self) -> Link {
        Link {
            name: self.name.clone(),
            token: self.token,
            conn: Mutex::new(None),
            closed: AtomicBool::new(false),
        }
    }
}

/// The putting end of a [`Queue`]; serializable, so it can be a [`Target`]'s field.
///
/// It connects to the queue's owner on first use; every put is acknowledged, so when
/// `put` returns the value is in the queue (a child may exit right after). On an unbounded
/// queue a put never waits for a reader: the owner takes values as they arrive, so joining
/// the children before reading the queue cannot deadlock. A clone is an independent
/// handle (its own connection); `close` is local to one handle.
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct QueueSender<T> {
    link: Link,
    #[serde(skip)]
    _t: PhantomData<fn(T)>,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        QueueSender {
            link: self.link.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for QueueSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSender")
            .field("name", &self.link.name)
            .finish()
    }
}

impl<T: Serialize> QueueSender<T> {
    /// Puts one value, waiting while the queue is full (forever, like Python's `put()`).
    pub fn put(&self, value: &T) -> Result<(), Error> {
        self.put_wait(value, None)
    }

    /// Puts one value, waiting at most `timeout` for room: `Error::Timeout` when the queue
    /// stayed full (Python's `queue.Full`).
    pub fn put_timeout(&self, value: &T, timeout: Duration) -> Result<(), Error> {
        self.put_wait(value, Some(timeout))
    }

    /// Puts one value if there is room now; `Error::Timeout(0 s)` when the queue is full.
    pub fn try_put(&self, value: &T) -> Result<(), Error> {
        self.put_wait(value, Some(Duration::ZERO))
    }

    fn put_wait(&self, value: &T, wait: Option<Duration>) -> Result<(), Error> {
        if self.link.closed.load(Ordering::SeqCst) {
            return Err(closed_error(&self.link.name));
        }
        let bytes = codec::encode(value).map_err(|e| encode_error(&self.link.name, e))?;
        self.link.put(bytes, wait)
    }
}

impl<T> QueueSender<T> {
    /// No more puts through this handle (they fail with an error); the values it put stay
    /// in the queue for the readers (Python's `close()`).
    pub fn close(&self) {
        self.link.close();
    }

    /// How many values are in the queue now (asks the owner).
    pub fn qsize(&self) -> Result<usize, Error> {
        let (len, _) = self.link.stat()?;
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }

    /// Whether the queue is empty now.
    pub fn empty(&self) -> Result<bool, Error> {
        Ok(self.link.stat()?.0 == 0)
    }

    /// Whether the queue holds its maxsize of values now (never, when unbounded).
    pub fn full(&self) -> Result<bool, Error> {
        let (len, maxsize) = self.link.stat()?;
        Ok(maxsize != 0 && len >= maxsize)
    }

    /// Waits until every value put on the queue was marked done (a [`JoinableQueue`]'s
    /// `join()`, from another process); an error for a plain `Queue`.
    pub fn join(&self) -> Result<(), Error> {
        self.link.join()
    }
}

/// The getting end of a [`Queue`]; serializable, so it can be a [`Target`]'s field: a
/// child gets values from the queue's owner over a local socket.
///
/// Several receivers (in any processes, and the owner itself) may compete for values:
/// each value goes to exactly one of them. A receiver whose process dies while it waits
/// takes nothing with it. A clone is an independent handle (its own connection).
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct QueueReceiver<T> {
    link: Link,
    #[serde(skip)]
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for QueueReceiver<T> {
    fn clone(&self) -> Self {
        QueueReceiver {
            link: self.link.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for QueueReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueReceiver")
            .field("name", &self.link.name)
            .finish()
    }
}

impl<T: DeserializeOwned> QueueReceiver<T> {
    /// Waits for the next value (forever, like Python's `get()`).
    pub fn get(&self) -> Result<T, Error> {
        match self.get_wait(None)? {
            Some(value) => Ok(value),
            None => Err(self.link.unexpected()),
        }
    }

    /// Waits at most `timeout` for the next value: `Error::Timeout` when none came.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.get_wait(Some(timeout))?.ok_or(Error::Timeout(timeout))
    }

    /// The next value if one is there already (`Ok(None)`: empty).
    pub fn try_get(&self) -> Result<Option<T>, Error> {
        self.get_wait(Some(Duration::ZERO))
    }

    fn get_wait(&self, wait: Option<Duration>) -> Result<Option<T>, Error> {
        let Some(bytes) = self.link.get(wait)? else {
            return Ok(None);
        };
        codec::decode(&bytes).map(Some).map_err(|e| {
            Error::Protocol(format!(
                "queue {:?}: undecodable value: {e}",
                self.link.name
            ))
        })
    }

    /// Values in arrival order, waiting for each; ends at the first error (the queue is
    /// gone, say).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.get().ok())
    }
}

impl<T> QueueReceiver<T> {
    /// How many values are in the queue now (asks the owner).
    pub fn qsize(&self) -> Result<usize, Error> {
        let (len, _) = self.link.stat()?;
        Ok(usize::try_from(len).unwrap_or(usize::MAX))
    }

    /// Whether the queue is empty now.
    pub fn empty(&self) -> Result<bool, Error> {
        Ok(self.link.stat()?.0 == 0)
    }

    /// Marks one value taken from a [`JoinableQueue`] as processed; an error for a plain
    /// `Queue`, or when called more times than values were put.
    pub fn task_done(&self) -> Result<(), Error> {
        self.link.task_done()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends raw frames on a fresh connection to `q` and returns the owner's replies.
    fn raw_exchange(q: &Queue<u64>, requests: &[Request]) -> Vec<Option<Reply>> {
        let ns = q
            .shared
            .name
            .as_str()
            .to_ns_name::<GenericNamespaced>()
            .unwrap();
        let mut stream = Stream::connect(ns).unwrap();
        let mut reader = FrameReader::new(MAX_ITEM);
        requests
            .iter()
            .map(|r| {
                let mut out = Vec::new();
                frame::write_frame(&mut out, r, MAX_ITEM).unwrap();
                stream.write_all(&out).ok()?;
                let body = frame::read_frame_blocking(&mut reader, &mut stream).ok()??;
                Some(codec::decode::<Reply>(&body).unwrap())
            })
            .collect()
    }

    #[test]
    fn a_wrong_token_or_version_is_refused_with_the_reason() {
        let q = Queue::<u64>::new().unwrap();
        let mut link = Link::new(&q.shared);
        link.token ^= 1;
        let e = link.stat().unwrap_err().to_string();
        assert!(
            e.contains("refused this handle") && e.contains("token"),
            "{e}"
        );

        let replies = raw_exchange(
            &q,
            &[
                Request::Hello {
                    protocol: QUEUE_PROTOCOL + 1,
                    token: q.shared.token,
                },
                Request::Stat,
            ],
        );
        assert!(
            matches!(&replies[0], Some(Reply::Refused { reason }) if reason.contains("protocol")),
            "version mismatch"
        );
        assert!(replies[1].is_none(), "the owner hangs up after refusing");
    }

    #[test]
    fn requests_before_the_handshake_end_the_connection() {
        let q = Queue::<u64>::new().unwrap();
        let replies = raw_exchange(&q, &[Request::Stat]);
        assert!(replies[0].is_none());
        // The queue itself is unharmed.
        q.sender().put(&3).unwrap();
        assert_eq!(q.get().unwrap(), 3);
    }

    #[test]
    fn a_value_of_another_type_fails_its_put_and_nothing_else() {
        let q = Queue::<u64>::new().unwrap();
        let link = Link::new(&q.shared);
        let e = link.put(vec![1, 2, 3], None).unwrap_err().to_string();
        assert!(e.contains("not of the queue's type"), "{e}");
        assert!(q.empty());
        // The same connection goes on working.
        link.put(codec::encode(&5u64).unwrap(), None).unwrap();
        assert_eq!(q.get().unwrap(), 5);
    }

    #[test]
    fn an_unbounded_put_never_waits_and_a_bounded_one_does() {
        let q = Queue::<u64>::new().unwrap();
        let tx = q.sender();
        for v in 0..1000 {
            tx.try_put(&v).unwrap();
        }
        assert_eq!(q.qsize(), 1000);
        assert!(!q.full() && !tx.full().unwrap());
        assert_eq!(
            q.iter().take(1000).collect::<Vec<_>>(),
            (0..1000).collect::<Vec<_>>()
        );

        let q = Queue::<u64>::with_maxsize(1).unwrap();
        q.put(&1).unwrap();
        std::thread::scope(|s| {
            let waiting = s.spawn(|| q.sender().put(&2));
            assert_eq!(q.get().unwrap(), 1);
            waiting.join().unwrap().unwrap();
        });
        assert_eq!(q.get().unwrap(), 2);
    }
}
