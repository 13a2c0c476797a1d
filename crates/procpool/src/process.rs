//! Hand-built fan-out, the seed article's first example: [`Process`] runs a [`Target`] in
//! a child process; [`Queue`] collects values that any process holding a
//! [`QueueSender`] puts.
//!
//! The queue listens on a local socket in the Linux abstract namespace (via
//! `interprocess`) under a random name; a sender is just that name plus a random token,
//! so it serializes like any other argument — which is exactly how Python passes its
//! `mp.Queue` to `Process(args=...)`. The queue drains every connection on its own
//! threads as data arrives, so a child never blocks on a full pipe and joining children
//! before reading the queue cannot deadlock (a known trap of Python's Queue).

use crate::error::Error;
use crate::os::child::{ChildOutput, ChildProc, describe_status};
use crate::task::Target;
use crate::wire::codec;
use crate::wire::frame::{self, FrameReader};
use crate::wire::msg::{Down, PROTOCOL_VERSION, Up};
use interprocess::local_socket::{GenericNamespaced, ListenerOptions, prelude::*};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::io::Write;
use std::marker::PhantomData;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
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
        let payload = codec::encode(&target)
            .map_err(|e| Error::Config(format!("could not encode target {:?}: {e}", T::NAME)))?;
        let (child, mut sock) =
            ChildProc::spawn("process", None, Duration::ZERO, ChildOutput::Inherit, &[])
                .map_err(|e| Error::Spawn(format!("could not start a process: {e}")))?;
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
                Err(Error::Spawn(match reason {
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
                Err(Error::Spawn(format!(
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

/// A multi-producer queue that any process may put into (Python's `multiprocessing.Queue`).
pub struct Queue<T> {
    name: String,
    token: u64,
    rx: mpsc::Receiver<T>,
    stop: Arc<AtomicBool>,
    _t: PhantomData<fn() -> T>,
}

/// The putting end of a [`Queue`]; serializable, so it can be a [`Target`]'s field.
#[derive(Serialize, Deserialize)]
pub struct QueueSender<T> {
    name: String,
    token: u64,
    #[serde(skip)]
    conn: Mutex<Option<interprocess::local_socket::Stream>>,
    #[serde(skip)]
    _t: PhantomData<fn(T)>,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        QueueSender {
            name: self.name.clone(),
            token: self.token,
            conn: Mutex::new(None),
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for QueueSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSender")
            .field("name", &self.name)
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Queue<T> {
    /// A new, empty queue listening under a fresh random name.
    pub fn new() -> Result<Queue<T>, Error> {
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
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("procpool-queue-accept".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let tx = tx.clone();
                    let _ = std::thread::Builder::new()
                        .name("procpool-queue-reader".into())
                        .spawn(move || read_connection(conn, token, &tx));
                }
            })
            .map_err(|e| Error::io("could not start the queue's accept thread", e))?;
        Ok(Queue {
            name,
            token,
            rx,
            stop,
            _t: PhantomData,
        })
    }

    /// A sender for this queue, to hand to a [`Target`] (or to use here).
    pub fn sender(&self) -> QueueSender<T> {
        QueueSender {
            name: self.name.clone(),
            token: self.token,
            conn: Mutex::new(None),
            _t: PhantomData,
        }
    }

    /// Waits for the next value (forever, like Python's `get()`).
    pub fn get(&self) -> Result<T, Error> {
        self.rx.recv().map_err(|_| Error::Closed)
    }

    /// Waits at most `timeout` for the next value.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T, Error> {
        self.rx.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => Error::Timeout(timeout),
            mpsc::RecvTimeoutError::Disconnected => Error::Closed,
        })
    }

    /// The next value if one is there already.
    pub fn try_get(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Values in arrival order, waiting for each (endless: combine with `take`).
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.get().ok())
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag and releases the name.
        if let Ok(ns) = self.name.as_str().to_ns_name::<GenericNamespaced>() {
            let _ = interprocess::local_socket::Stream::connect(ns);
        }
    }
}

impl<T> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("name", &self.name).finish()
    }
}

fn read_connection<T: DeserializeOwned>(
    mut conn: interprocess::local_socket::Stream,
    token: u64,
    tx: &mpsc::Sender<T>,
) {
    let mut reader = FrameReader::new(frame::DEFAULT_MAX_FRAME);
    let mut authenticated = false;
    loop {
        let body = match frame::read_frame_blocking(&mut reader, &mut conn) {
            Ok(Some(body)) => body,
            Ok(None) => return,
            Err(e) => {
                warn!("queue: dropping a connection: {e}");
                return;
            }
        };
        if !authenticated {
            match codec::decode::<(u32, u64)>(&body) {
                Ok((PROTOCOL_VERSION, t)) if t == token => authenticated = true,
                _ => {
                    warn!("queue: refusing a connection that did not present the queue's token");
                    return;
                }
            }
            continue;
        }
        match codec::decode::<T>(&body) {
            Ok(value) => {
                if tx.send(value).is_err() {
                    return;
                }
            }
            Err(e) => {
                warn!("queue: dropping a connection that sent an undecodable value: {e}");
                return;
            }
        }
    }
}

impl<T: Serialize> QueueSender<T> {
    /// Puts one value on the queue.
    pub fn put(&self, value: &T) -> Result<(), Error> {
        let mut out = Vec::new();
        frame::write_frame(&mut out, value, frame::DEFAULT_MAX_FRAME)?;
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if conn.is_none() {
            let ns = self
                .name
                .as_str()
                .to_ns_name::<GenericNamespaced>()
                .map_err(|e| Error::io(format!("invalid queue name {:?}", self.name), e))?;
            let mut stream = interprocess::local_socket::Stream::connect(ns)
                .map_err(|e| Error::io(format!("could not connect to queue {:?}", self.name), e))?;
            let mut hello = Vec::new();
            frame::write_frame(
                &mut hello,
                &(PROTOCOL_VERSION, self.token),
                frame::DEFAULT_MAX_FRAME,
            )?;
            stream
                .write_all(&hello)
                .map_err(|e| Error::io(format!("could not write to queue {:?}", self.name), e))?;
            *conn = Some(stream);
        }
        let Some(stream) = conn.as_mut() else {
            return Err(Error::Closed);
        };
        stream
            .write_all(&out)
            .map_err(|e| Error::io(format!("could not write to queue {:?}", self.name), e))
    }
}
