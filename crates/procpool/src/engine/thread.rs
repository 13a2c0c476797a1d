//! The thread backend: the same policy and the same `Task::run`, on OS threads that share
//! the context through an `Arc` — no serialization, no isolation. Each worker thread has
//! its own inbox (so dispatch is the process backend's, decision for decision), and all
//! of them push events onto one shared queue.
//!
//! A thread cannot be killed: a job that times out is reported, its worker is abandoned
//! (it exits when the job returns) and replaced, and the jobs still in its inbox are taken
//! back for re-dispatch.

use super::{Payload, SpawnError, Spinner, Waiter, WorkerKey};
use crate::policy::{ChunkId, Event, Exit, Finished};
use crate::task::{Task, run_caught};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The signal half of the shared event queue: what a waiting leader blocks on.
#[derive(Default)]
pub(crate) struct EventQueue {
    pending: AtomicUsize,
    waiting: AtomicBool,
    woken: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl EventQueue {
    fn notify(&self) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) {
            let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            self.cv.notify_all();
        }
    }

    fn wake(&self) {
        self.woken.store(true, Ordering::SeqCst);
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.cv.notify_all();
    }

    fn ready(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0 || self.woken.load(Ordering::SeqCst)
    }

    /// Waits until an event is queued or [`EventQueue::wake`] is called.
    pub(crate) fn wait(&self, timeout: Duration, spin: Duration) {
        let start = Instant::now();
        while start.elapsed() < spin {
            if self.ready() {
                return;
            }
            std::hint::spin_loop();
        }
        let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.store(true, Ordering::SeqCst);
        let _ = self
            .cv
            .wait_timeout_while(guard, timeout, |()| !self.ready())
            .unwrap_or_else(PoisonError::into_inner);
        self.waiting.store(false, Ordering::SeqCst);
    }
}

struct Inbox<T> {
    jobs: Mutex<InboxState<T>>,
    cv: Condvar,
    /// Jobs queued (a hint, so spinning does not hammer the lock).
    queued: AtomicUsize,
}

struct InboxState<T> {
    /// (chunk, index in the chunk, input).
    queue: VecDeque<(ChunkId, usize, T)>,
    closed: bool,
    retired: bool,
}

impl<T> Inbox<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState<T>> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next job, after spinning for one as the spinner advises; `None` when closed or
    /// retired.
    fn next(&self, spinner: &mut Spinner) -> Option<(ChunkId, usize, T)> {
        let start = Instant::now();
        let budget = spinner.budget();
        loop {
            if self.queued.load(Ordering::Acquire) == 0 && start.elapsed() < budget {
                std::hint::spin_loop();
                continue;
            }
            {
                let mut s = self.lock();
                if s.retired {
                    return None;
                }
                if let Some(job) = s.queue.pop_front() {
                    self.queued.store(s.queue.len(), Ordering::Release);
                    spinner.record(start.elapsed());
                    return Some(job);
                }
                if s.closed {
                    return None;
                }
                if start.elapsed() >= budget {
                    s = self.cv.wait(s).unwrap_or_else(PoisonError::into_inner);
                    if let Some(job) = s.queue.pop_front() {
                        self.queued.store(s.queue.len(), Ordering::Release);
                        spinner.record(start.elapsed());
                        return Some(job);
                    }
                    continue;
                }
            }
            std::hint::spin_loop();
        }
    }
}

struct ThreadWorker<T> {
    key: WorkerKey,
    inbox: Arc<Inbox<T>>,
}

/// Worker threads started, to be joined once they stop.
type Handles = Vec<std::thread::JoinHandle<()>>;

/// Worker threads over per-thread inboxes and one event queue.
pub(crate) struct ThreadEngine<T: Task> {
    ctx: Arc<T::Context>,
    spin: Duration,
    workers: Vec<ThreadWorker<T>>,
    events: Arc<Mutex<Vec<Event<T::Output>>>>,
    signal: Arc<EventQueue>,
    handles: Handles,
}

impl<T: Task> ThreadEngine<T> {
    pub(crate) fn new(ctx: T::Context, spin: Duration) -> Self {
        ThreadEngine {
            ctx: Arc::new(ctx),
            spin,
            workers: Vec::new(),
            events: Arc::default(),
            signal: Arc::default(),
            handles: Vec::new(),
        }
    }

    fn push(events: &Mutex<Vec<Event<T::Output>>>, signal: &EventQueue, event: Event<T::Output>) {
        events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
        signal.notify();
    }

    pub(crate) fn spawn(&mut self, key: WorkerKey) -> Result<u32, SpawnError> {
        let inbox = Arc::new(Inbox {
            jobs: Mutex::new(InboxState {
                queue: VecDeque::new(),
                closed: false,
                retired: false,
            }),
            cv: Condvar::new(),
            queued: AtomicUsize::new(0),
        });
        let (ctx, events, signal, mine) = (
            Arc::clone(&self.ctx),
            Arc::clone(&self.events),
            Arc::clone(&self.signal),
            Arc::clone(&inbox),
        );
        let mut spinner = Spinner::new(self.spin);
        let handle = std::thread::Builder::new()
            .name(format!("procpool-worker-{key}"))
            .spawn(move || {
                let pid = std::process::id();
                Self::push(&events, &signal, Event::Hello { worker: key, pid });
                Self::push(&events, &signal, Event::Ready { worker: key });
                while let Some((chunk, index, job)) = mine.next(&mut spinner) {
                    let (outcome, compute_ns) = run_caught(job, ctx.as_ref());
                    Self::push(
                        &events,
                        &signal,
                        Event::Done {
                            worker: key,
                            chunk,
                            first: index as u32,
                            results: vec![Finished {
                                compute_ns,
                                phases: None,
                                outcome: outcome.map_err(Box::new),
                            }],
                        },
                    );
                }
                if !mine.lock().retired {
                    Self::push(
                        &events,
                        &signal,
                        Event::Exited {
                            worker: key,
                            exit: Exit {
                                status: "finished".into(),
                                code: Some(0),
                                stderr_tail: String::new(),
                            },
                        },
                    );
                }
            })
            .map_err(|e| SpawnError::io("could not start a worker thread", &e))?;
        self.handles.push(handle);
        self.workers.push(ThreadWorker { key, inbox });
        Ok(std::process::id())
    }

    pub(crate) fn send(&mut self, key: WorkerKey, chunk: ChunkId, jobs: &mut [Payload<T>]) {
        let Some(w) = self.workers.iter().find(|w| w.key == key) else {
            return;
        };
        let mut s = w.inbox.lock();
        for (index, p) in jobs.iter_mut().enumerate() {
            if let Payload::Value(v) = p {
                if let Some(job) = v.take() {
                    s.queue.push_back((chunk, index, job));
                }
            }
        }
        w.inbox.queued.store(s.queue.len(), Ordering::Release);
        drop(s);
        w.inbox.cv.notify_one();
    }

    pub(crate) fn waiter(&self) -> Waiter {
        Waiter::Queue(Arc::clone(&self.signal))
    }

    pub(crate) fn wake(&self) {
        self.signal.wake();
    }

    pub(crate) fn collect(&mut self, out: &mut Vec<Event<T::Output>>) {
        let mut events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        self.signal.pending.store(0, Ordering::SeqCst);
        self.signal.woken.store(false, Ordering::SeqCst);
        out.append(&mut events);
    }

    /// Abandons a worker: it exits when its current job returns. Returns the jobs still
    /// in its inbox (never started) so they can be sent elsewhere; an `Exited` is queued.
    pub(crate) fn retire(&mut self, key: WorkerKey) -> Vec<(ChunkId, usize, T)> {
        let Some(i) = self.workers.iter().position(|w| w.key == key) else {
            return Vec::new();
        };
        let w = self.workers.swap_remove(i);
        let mut s = w.inbox.lock();
        s.retired = true;
        let back = s.queue.drain(..).collect();
        w.inbox.queued.store(0, Ordering::Release);
        drop(s);
        w.inbox.cv.notify_all();
        Self::push(
            &self.events,
            &self.signal,
            Event::Exited {
                worker: key,
                exit: Exit {
                    status: "was abandoned (a thread cannot be killed; it exits when its job \
                             returns)"
                        .into(),
                    code: None,
                    stderr_tail: String::new(),
                },
            },
        );
        back
    }

    /// The worker threads that have been started, for joining: a thread cannot be killed,
    /// so `terminate` waits for the job a retired thread is still running.
    pub(crate) fn take_handles(&mut self) -> Handles {
        std::mem::take(&mut self.handles)
    }

    pub(crate) fn close(&mut self, key: WorkerKey) {
        if let Some(i) = self.workers.iter().position(|w| w.key == key) {
            let w = self.workers.swap_remove(i);
            w.inbox.lock().closed = true;
            w.inbox.cv.notify_all();
        }
    }
}
