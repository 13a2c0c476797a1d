//! Engines: the mechanics of running jobs somewhere (worker processes, OS threads, inline,
//! or MPI ranks). Each carries out the policy's [`Command`](crate::policy::Command)s and
//! reports what happened as policy [`Event`]s, which is why their results can be compared
//! bit for bit: the decisions are the same code for all of them.

#[cfg(feature = "mpi")]
pub(crate) mod mpi;
mod peer;
pub(crate) mod process;
pub(crate) mod serial;
pub(crate) mod thread;

use crate::error::{Error, JobError};
use crate::policy::{ChunkId, Event};
use crate::task::Task;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a pool runs its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Backend {
    /// Isolated worker processes (the current binary re-executed), bincode over pipes.
    #[default]
    Process,
    /// OS threads in this process sharing the context: same API, no serialization.
    Thread,
    /// Inline in the calling thread, one job at a time.
    Serial,
    /// MPI ranks 1..N as workers, rank 0 coordinating (cargo feature `mpi`, under mpirun).
    #[cfg(feature = "mpi")]
    Mpi,
}

impl Backend {
    /// All backends, in the order reports list them.
    pub const ALL: [Backend; 3] = [Backend::Serial, Backend::Thread, Backend::Process];

    /// The lowercase name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Process => "process",
            Backend::Thread => "thread",
            Backend::Serial => "serial",
            #[cfg(feature = "mpi")]
            Backend::Mpi => "mpi",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "process" => Ok(Backend::Process),
            "thread" => Ok(Backend::Thread),
            "serial" => Ok(Backend::Serial),
            #[cfg(feature = "mpi")]
            "mpi" => Ok(Backend::Mpi),
            #[cfg(not(feature = "mpi"))]
            "mpi" => Err(Error::Config(
                "this build has no MPI backend (build with --features mpi)".into(),
            )),
            other => Err(Error::Config(format!(
                "unknown backend {other:?} (expected process, thread or serial)"
            ))),
        }
    }
}

pub(crate) use crate::policy::WorkerKey;

/// Why a worker could not be started.
#[derive(Debug)]
pub(crate) struct SpawnError {
    /// In words.
    pub message: String,
    /// Worth retrying later (out of processes, memory or descriptors for now).
    pub transient: bool,
    /// The system error number behind it, if any.
    pub os_error: Option<i32>,
}

impl SpawnError {
    fn io(what: &str, e: &std::io::Error) -> SpawnError {
        SpawnError {
            message: format!("{what}: {e}"),
            transient: crate::policy::transient_spawn_error(e),
            os_error: e.raw_os_error(),
        }
    }
}

/// A job's input as a backend keeps it: encoded bytes (process: kept for re-dispatch) or
/// the value itself (thread, serial: moved to the worker). `repr(u64)`: with the default
/// layout, moving one out of a `Result` on the coordinator's hot path copied it in
/// unaligned pieces and stalled on store forwarding once per job (measured: a third more
/// coordinator CPU per empty job).
#[repr(u64)]
pub(crate) enum Payload<T> {
    Bytes(crate::wire::codec::Encoded),
    Value(Option<T>),
}

impl<T> crate::policy::Payload for Payload<T> {
    fn present(&self) -> bool {
        !matches!(self, Payload::Value(None))
    }
}

/// Appends the jobs of `chunk` to `out` as `Jobs` frames: one, or as many as the frame
/// limit needs (each job fits alone: [`Engine::payload`] checked it). For the engines that
/// send bytes. `tags` are the jobs' submission numbers (fault injection), or empty.
pub(crate) fn frame_jobs<T>(
    out: &mut Vec<u8>,
    chunk: u64,
    jobs: &[Payload<T>],
    tags: &[u64],
    max: u32,
) {
    use crate::wire::{codec, frame};
    fn bytes<T>(p: &Payload<T>) -> &[u8] {
        match p {
            Payload::Bytes(b) => b,
            Payload::Value(_) => &[],
        }
    }
    let frame = |out: &mut Vec<u8>, first: usize, n: usize| {
        frame::write_frame_with(out, max, |out| {
            let tags = tags.get(first..first + n).unwrap_or(&[]);
            codec::encode_jobs(
                out,
                chunk,
                first as u32,
                jobs[first..first + n].iter().map(bytes),
                tags,
            );
        })
    };
    if frame(out, 0, jobs.len()).is_ok() {
        return;
    }
    // Too large together: as many frames as it takes, greedily.
    let budget = (max as usize) / 2;
    let mut first = 0;
    while first < jobs.len() {
        let mut n = 0;
        let mut size = 0;
        while first + n < jobs.len() {
            let len = bytes(&jobs[first + n]).len() + 16;
            if n > 0 && size + len > budget {
                break;
            }
            size += len;
            n += 1;
        }
        let _ = frame(out, first, n);
        first += n;
    }
}

/// Bounded, adaptive spinning before blocking, that stops when it cannot win.
///
/// The rule follows how long waits actually last, spun or slept: spin while they are
/// within a few spin budgets. The margin matters: when the peer sleeps, a wait includes its
/// wake-up (50-70 µs on a VM, above a 50 µs budget); counting such waits as "short" keeps
/// this side spinning, the peer's replies then come fast, and both sides settle back into
/// spinning instead of both sleeping for good. Waits of genuinely long jobs (a millisecond
/// and up) still switch spinning off.
///
/// Spinning only pays when the peer runs on another CPU at the same time. A process that
/// may use one CPU only (`taskset -c 0`, a one-CPU container) never spins: both sides would
/// burn the CPU the other needs. And when spins stop paying — most of the recent ones ended
/// in a sleep anyway, as on a loaded machine — spinning pauses for a while (16 waits,
/// doubling up to 1024 while it keeps failing), then tries again.
#[derive(Debug, Clone)]
pub(crate) struct Spinner {
    budget: Duration,
    typical: Option<Duration>,
    /// The budget handed out for the wait in progress.
    current: Duration,
    /// Of the last spins, how many ended with what was awaited (in sixteenths).
    paid: u32,
    /// Waits left without spinning, and the next pause's length.
    paused: u32,
    pause_len: u32,
}

/// Waits without spinning after spins stop paying (doubles up to [`MAX_PAUSE`]).
const MIN_PAUSE: u32 = 16;
const MAX_PAUSE: u32 = 1024;

impl Spinner {
    pub(crate) fn new(budget: Duration) -> Spinner {
        Self::for_cpus(budget, crate::os::unix::usable_cpus())
    }

    /// A spinner for a process that may run on `cpus` CPUs.
    pub(crate) fn for_cpus(budget: Duration, cpus: usize) -> Spinner {
        Spinner {
            budget: if cpus > 1 { budget } else { Duration::ZERO },
            typical: None,
            current: Duration::ZERO,
            paid: 16,
            paused: 0,
            pause_len: MIN_PAUSE,
        }
    }

    /// How long to spin before the next blocking wait (call once per wait, then
    /// [`Spinner::record`] how long it lasted).
    pub(crate) fn budget(&mut self) -> Duration {
        self.current = if self.paused > 0 {
            self.paused -= 1;
            Duration::ZERO
        } else {
            match self.typical {
                Some(t) if t > self.budget * 4 => Duration::ZERO,
                _ => self.budget,
            }
        };
        self.current
    }

    /// How long the last wait lasted (until what it waited for came).
    pub(crate) fn record(&mut self, waited: Duration) {
        if self.budget.is_zero() {
            return;
        }
        if !self.current.is_zero() {
            // A running average of spins that paid, in sixteenths.
            let paid = u32::from(waited <= self.current) * 16;
            self.paid = (self.paid * 7 + paid) / 8;
            if self.paid < 4 {
                self.paused = self.pause_len;
                self.pause_len = (self.pause_len * 2).min(MAX_PAUSE);
                self.paid = 8;
            } else if self.paid >= 12 {
                self.pause_len = MIN_PAUSE;
            }
        }
        // Clamped, so one long idle stretch is forgotten after a few quick waits.
        let waited = waited.min(self.budget * 8);
        self.typical = Some(match self.typical {
            None => waited,
            Some(t) => (t * 3 + waited) / 4,
        });
    }
}

#[cfg(test)]
mod spinner_tests {
    use super::*;

    const B: Duration = Duration::from_micros(50);

    #[test]
    fn one_cpu_never_spins() {
        let mut s = Spinner::for_cpus(B, 1);
        for _ in 0..10 {
            assert_eq!(s.budget(), Duration::ZERO);
            s.record(Duration::from_micros(1));
        }
    }

    #[test]
    fn spins_that_pay_keep_spinning() {
        let mut s = Spinner::for_cpus(B, 2);
        for _ in 0..100 {
            assert_eq!(s.budget(), B);
            s.record(Duration::from_micros(5));
        }
    }

    #[test]
    fn spins_that_do_not_pay_pause_and_back_off() {
        let mut s = Spinner::for_cpus(B, 2);
        let mut spun = 0;
        // The peer answers just after each spin gave up (it needed this very CPU).
        for _ in 0..2000 {
            if !s.budget().is_zero() {
                spun += 1;
            }
            s.record(B + Duration::from_micros(10));
        }
        assert!(spun < 100, "spun {spun} of 2000 waits that never paid");
        // Once spins pay again, spinning comes back.
        for _ in 0..MAX_PAUSE + 100 {
            let b = s.budget();
            s.record(if b.is_zero() {
                B * 2
            } else {
                Duration::from_micros(5)
            });
        }
        assert_eq!(s.budget(), B);
    }

    #[test]
    fn long_waits_switch_spinning_off() {
        let mut s = Spinner::for_cpus(B, 4);
        for _ in 0..10 {
            let _ = s.budget();
            s.record(Duration::from_millis(5));
        }
        assert_eq!(s.budget(), Duration::ZERO);
    }
}

/// What the pool's leader thread blocks on, without holding the pool's lock.
pub(crate) enum Waiter {
    /// Descriptors to poll (process backend).
    Poll(Vec<crate::os::unix::PollFd>),
    /// The shared result queue (thread backend).
    Queue(Arc<thread::EventQueue>),
    /// Nothing to wait for (serial: everything already happened).
    None,
    /// Nothing to block on (MPI): pause this long, then poll again.
    #[cfg(feature = "mpi")]
    Pause(Duration),
}

impl Waiter {
    /// Waits until something may have happened, spinning up to `spin` first.
    pub(crate) fn wait(self, timeout: Duration, spin: Duration) {
        match self {
            Waiter::Poll(mut fds) => {
                if !spin.is_zero() {
                    let until = Instant::now() + spin;
                    loop {
                        if crate::os::unix::poll(&mut fds, Some(Duration::ZERO)).unwrap_or(1) > 0 {
                            return;
                        }
                        if Instant::now() >= until {
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
                let _ = crate::os::unix::poll(&mut fds, Some(timeout));
            }
            Waiter::Queue(q) => q.wait(timeout, spin),
            Waiter::None => {}
            #[cfg(feature = "mpi")]
            Waiter::Pause(d) => {
                if d.is_zero() {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(d.min(timeout));
                }
            }
        }
    }
}

/// The three backends behind one face.
pub(crate) enum Engine<T: Task> {
    Process(process::ProcessEngine<T>),
    Thread(thread::ThreadEngine<T>),
    Serial(serial::SerialEngine<T>),
    #[cfg(feature = "mpi")]
    Mpi(mpi::MpiEngine<T>),
}

/// How a pool asks for its workers to be configured.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub max_frame: u32,
    pub spin: Duration,
    pub forward_output: bool,
    /// Greeting flags for workers ([`FLAG_PHASES`](crate::wire::msg::FLAG_PHASES)).
    pub flags: u32,
    /// Added to every worker process's environment.
    pub env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl<T: Task> Engine<T> {
    /// Starts one worker; it reports `Ready` (or `Failed`/`Exited`) through events.
    pub(crate) fn spawn(&mut self, key: WorkerKey) -> Result<u32, SpawnError> {
        match self {
            Engine::Process(e) => e.spawn(key),
            Engine::Thread(e) => e.spawn(key),
            Engine::Serial(e) => e.spawn(key),
            #[cfg(feature = "mpi")]
            Engine::Mpi(e) => e.spawn(key),
        }
    }

    /// The largest frame, for backends that send bytes.
    fn max_frame(&self) -> Option<u32> {
        match self {
            Engine::Process(e) => Some(e.max_frame()),
            #[cfg(feature = "mpi")]
            Engine::Mpi(e) => Some(e.max_frame()),
            Engine::Thread(_) | Engine::Serial(_) => None,
        }
    }

    /// Makes a job's input ready to send (encodes it for backends that send bytes).
    pub(crate) fn payload(&self, job: T) -> Result<Payload<T>, JobError> {
        let Some(max) = self.max_frame() else {
            return Ok(Payload::Value(Some(job)));
        };
        let bytes = crate::wire::codec::encode_small(&job).map_err(|e| JobError::Codec {
            message: format!("input: {e}"),
        })?;
        // Room for the frame header, the message tag and the job's id and length.
        let max = max as usize;
        if bytes.len() + 64 > max {
            return Err(JobError::Codec {
                message: format!(
                    "input of {} bytes is over the frame limit of {max} bytes",
                    bytes.len()
                ),
            });
        }
        Ok(Payload::Bytes(bytes))
    }

    /// Queues a chunk for one worker (written out by [`Engine::flush`]); `tags` are the
    /// jobs' submission numbers, sent only while fault injection is on.
    pub(crate) fn send(
        &mut self,
        worker: WorkerKey,
        chunk: ChunkId,
        jobs: &mut [Payload<T>],
        tags: &[u64],
    ) {
        match self {
            Engine::Process(e) => e.send(worker, chunk, jobs, tags),
            Engine::Thread(e) => e.send(worker, chunk, jobs),
            Engine::Serial(e) => e.send(worker, chunk, jobs),
            #[cfg(feature = "mpi")]
            Engine::Mpi(e) => e.send(worker, chunk, jobs, tags),
        }
    }

    /// Writes out what `send` queued, as far as it goes without blocking.
    pub(crate) fn flush(&mut self) {
        match self {
            Engine::Process(e) => e.flush(),
            #[cfg(feature = "mpi")]
            Engine::Mpi(e) => e.flush(),
            Engine::Thread(_) | Engine::Serial(_) => {}
        }
    }

    /// What to block on until something happens.
    pub(crate) fn waiter(&self) -> Waiter {
        match self {
            Engine::Process(e) => e.waiter(),
            Engine::Thread(e) => e.waiter(),
            Engine::Serial(_) => Waiter::None,
            #[cfg(feature = "mpi")]
            Engine::Mpi(e) => Waiter::Pause(e.pause()),
        }
    }

    /// Interrupts a leader blocked in [`Waiter::wait`].
    pub(crate) fn wake(&self) {
        match self {
            Engine::Process(e) => e.wake(),
            Engine::Thread(e) => e.wake(),
            Engine::Serial(_) => {}
            #[cfg(feature = "mpi")]
            Engine::Mpi(_) => {}
        }
    }

    /// Takes whatever happened since the last call, without blocking.
    pub(crate) fn collect(&mut self, events: &mut Vec<Event<T::Output>>) {
        match self {
            Engine::Process(e) => e.collect(events),
            Engine::Thread(e) => e.collect(events),
            Engine::Serial(e) => e.collect(events),
            #[cfg(feature = "mpi")]
            Engine::Mpi(e) => e.collect(events),
        }
    }

    /// Stops a worker now (SIGKILL for processes; a thread is abandoned and exits when
    /// its current job returns; an MPI rank is dropped from the pool). An `Exited` event
    /// follows. Returns the jobs it had not started when the backend can give them back
    /// (threads), for re-dispatch: (chunk, index in the chunk, input).
    pub(crate) fn kill(&mut self, worker: WorkerKey) -> Vec<(ChunkId, usize, T)> {
        match self {
            Engine::Process(e) => {
                e.kill(worker);
                Vec::new()
            }
            Engine::Thread(e) => e.retire(worker),
            Engine::Serial(e) => {
                e.retire(worker);
                Vec::new()
            }
            #[cfg(feature = "mpi")]
            Engine::Mpi(e) => {
                e.kill(worker);
                Vec::new()
            }
        }
    }

    /// Asks a worker to finish: it exits after its queued jobs. An `Exited` event follows.
    pub(crate) fn close(&mut self, worker: WorkerKey) {
        match self {
            Engine::Process(e) => e.close(worker),
            Engine::Thread(e) => e.close(worker),
            Engine::Serial(e) => e.retire(worker),
            #[cfg(feature = "mpi")]
            Engine::Mpi(e) => e.close(worker),
        }
    }

    /// Threads to join once every worker is told to stop (thread backend).
    pub(crate) fn take_threads(&mut self) -> Vec<std::thread::JoinHandle<()>> {
        match self {
            Engine::Thread(e) => e.take_handles(),
            _ => Vec::new(),
        }
    }

    /// Bytes of the context in shared memory (process backend).
    pub(crate) fn context_shared_bytes(&self) -> u64 {
        match self {
            Engine::Process(e) => e.context_shared_bytes(),
            _ => 0,
        }
    }

    /// Bytes written to and read from workers so far.
    pub(crate) fn wire_bytes(&self) -> (u64, u64) {
        match self {
            Engine::Process(e) => e.wire_bytes(),
            #[cfg(feature = "mpi")]
            Engine::Mpi(e) => e.wire_bytes(),
            Engine::Thread(_) | Engine::Serial(_) => (0, 0),
        }
    }
}
