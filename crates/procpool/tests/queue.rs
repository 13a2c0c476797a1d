//! `Queue`, `JoinableQueue` and their handles against real child processes: `maxsize`,
//! `qsize`/`empty`/`full`, `close`, gets in a child, competing consumers, `task_done` and
//! `join`, and the errors a handle gives when it cannot work. Many tests are ports of
//! CPython's `_TestQueue` (Lib/test/_test_multiprocessing.py), named after the test they
//! port; CPython's `Event`s become small queues of `()`.
//!
//! A custom harness (libtest-mimic), because this binary is also the worker: `main` hands
//! it to `serve_if_worker` before anything else. Every test runs under a watchdog, so a
//! hang is a failure, never a stuck CI job. No test asserts how long anything took.

use libtest_mimic::{Arguments, Failed};
use procpool::{
    Error, JoinableQueue, Process, Queue, QueueReceiver, QueueSender, Registry, Target,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::Duration;

mod common;
use common::{TestFn, check, watchdog};

// ----- targets (the children's bodies) -------------------------------------------------

/// Runs a child's body; an error ends the child with exit code 3 and the error on stderr,
/// which the parent sees as a failed `join`.
fn child(name: &str, body: impl FnOnce() -> Result<(), Error>) {
    if let Err(e) = body() {
        eprintln!("{name}: {e}");
        std::process::exit(3);
    }
}

/// Once told to go, gets `n` values and reports them (CPython's `_test_put`).
#[derive(Serialize, Deserialize)]
struct Drain {
    from: QueueReceiver<u64>,
    n: usize,
    go: QueueReceiver<()>,
    report: QueueSender<Vec<u64>>,
}
impl Target for Drain {
    const NAME: &'static str = "drain";
    fn run(self) {
        child(Self::NAME, || {
            self.go.get()?;
            let got = (0..self.n)
                .map(|_| self.from.get())
                .collect::<Result<Vec<u64>, Error>>()?;
            self.report.put(&got)
        });
    }
}

/// Once told to go, puts 2, 3, 4, 5 and says it is done (CPython's `_test_get`).
#[derive(Serialize, Deserialize)]
struct PutAfterGo {
    to: QueueSender<u64>,
    go: QueueReceiver<()>,
    done: QueueSender<()>,
}
impl Target for PutAfterGo {
    const NAME: &'static str = "put_after_go";
    fn run(self) {
        child(Self::NAME, || {
            self.go.get()?;
            for v in 2..=5 {
                self.to.put(&v)?;
            }
            self.done.put(&())
        });
    }
}

/// Puts `start..end` (CPython's `_test_fork`).
#[derive(Serialize, Deserialize)]
struct PutRange {
    to: QueueSender<u64>,
    start: u64,
    end: u64,
}
impl Target for PutRange {
    const NAME: &'static str = "put_range";
    fn run(self) {
        child(Self::NAME, || {
            (self.start..self.end).try_for_each(|v| self.to.put(&v))
        });
    }
}

/// Takes work until a `None`; for each value puts (its pid, the value, the value squared).
#[derive(Serialize, Deserialize)]
struct Square {
    work: QueueReceiver<Option<u64>>,
    results: QueueSender<(u32, u64, u64)>,
}
impl Target for Square {
    const NAME: &'static str = "square";
    fn run(self) {
        child(Self::NAME, || {
            while let Some(v) = self.work.get()? {
                self.results.put(&(std::process::id(), v, v * v))?;
            }
            Ok(())
        });
    }
}

/// Takes work from a joinable queue until a `None`: reports each value, then marks it
/// done; the `None` is not marked (CPython's `_test_task_done`).
#[derive(Serialize, Deserialize)]
struct Finish {
    work: QueueReceiver<Option<u64>>,
    results: QueueSender<u64>,
}
impl Target for Finish {
    const NAME: &'static str = "finish";
    fn run(self) {
        child(Self::NAME, || {
            while let Some(v) = self.work.get()? {
                self.results.put(&v)?;
                self.work.task_done()?;
            }
            Ok(())
        });
    }
}

/// Joins a joinable queue from a child, then reports how many results were in when the
/// join returned.
#[derive(Serialize, Deserialize)]
struct JoinThenCount {
    work: QueueSender<Option<u64>>,
    results: QueueSender<u64>,
    report: QueueSender<usize>,
}
impl Target for JoinThenCount {
    const NAME: &'static str = "join_then_count";
    fn run(self) {
        child(Self::NAME, || {
            self.work.join()?;
            self.report.put(&self.results.qsize()?)
        });
    }
}

/// Puts `0..n`, reporting each value on `progress` once its put returned.
#[derive(Serialize, Deserialize)]
struct Produce {
    to: QueueSender<u64>,
    n: u64,
    progress: QueueSender<u64>,
}
impl Target for Produce {
    const NAME: &'static str = "produce";
    fn run(self) {
        child(Self::NAME, || {
            for v in 0..self.n {
                self.to.put(&v)?;
                self.progress.put(&v)?;
            }
            Ok(())
        });
    }
}

/// What a child sees of a queue: puts two values, reports `(qsize, empty)` through its
/// receiver, gets both, reports `(qsize, empty)` through its sender.
#[derive(Serialize, Deserialize)]
struct Observe {
    tx: QueueSender<u64>,
    rx: QueueReceiver<u64>,
    report: QueueSender<(usize, bool)>,
}
impl Target for Observe {
    const NAME: &'static str = "observe";
    fn run(self) {
        child(Self::NAME, || {
            self.tx.put(&7)?;
            self.tx.put(&8)?;
            self.report.put(&(self.rx.qsize()?, self.rx.empty()?))?;
            let (a, b) = (self.rx.get()?, self.rx.get()?);
            if (a, b) != (7, 8) {
                return Err(Error::Protocol(format!("got {a}, {b} instead of 7, 8")));
            }
            self.report.put(&(self.tx.qsize()?, self.tx.empty()?))
        });
    }
}

/// Puts 10, closes its handle, tries to put 11: reports that put's error.
#[derive(Serialize, Deserialize)]
struct CloseThenPut {
    to: QueueSender<u64>,
    report: QueueSender<String>,
}
impl Target for CloseThenPut {
    const NAME: &'static str = "close_then_put";
    fn run(self) {
        child(Self::NAME, || {
            self.to.put(&10)?;
            self.to.close();
            let after = match self.to.put(&11) {
                Ok(()) => "the put after close() succeeded".to_owned(),
                Err(e) => e.to_string(),
            };
            self.report.put(&after)
        });
    }
}

/// Connects, says it waits, then waits on a queue whose owner drops it: reports the error
/// of that get and of one more call on the same handle.
#[derive(Serialize, Deserialize)]
struct Orphan {
    from: QueueReceiver<u64>,
    report: QueueSender<String>,
}
impl Target for Orphan {
    const NAME: &'static str = "orphan";
    fn run(self) {
        child(Self::NAME, || {
            self.from.qsize()?;
            self.report.put(&"waiting".to_owned())?;
            let first = match self.from.get() {
                Ok(v) => format!("got {v} from a dropped queue"),
                Err(e) => e.to_string(),
            };
            let second = match self.from.qsize() {
                Ok(n) => format!("a dropped queue has {n} values"),
                Err(e) => e.to_string(),
            };
            self.report.put(&first)?;
            self.report.put(&second)
        });
    }
}

/// Connects, says it waits, then blocks in a get (the parent kills it meanwhile).
#[derive(Serialize, Deserialize)]
struct WaitToBeKilled {
    from: QueueReceiver<u64>,
    ready: QueueSender<()>,
}
impl Target for WaitToBeKilled {
    const NAME: &'static str = "wait_to_be_killed";
    fn run(self) {
        child(Self::NAME, || {
            self.from.qsize()?;
            self.ready.put(&())?;
            let v = self.from.get()?;
            // Reaching here means the kill came too late; the parent's checks still hold.
            eprintln!("wait_to_be_killed: got {v}");
            Ok(())
        });
    }
}

fn registry() -> Registry {
    Registry::new()
        .target::<Drain>()
        .target::<PutAfterGo>()
        .target::<PutRange>()
        .target::<Square>()
        .target::<Finish>()
        .target::<JoinThenCount>()
        .target::<Produce>()
        .target::<Observe>()
        .target::<CloseThenPut>()
        .target::<Orphan>()
        .target::<WaitToBeKilled>()
}

// ----- helpers ---------------------------------------------------------------------------

/// Joins `p` and fails unless it exited with code 0.
fn join_ok(p: &mut Process) -> Result<(), Failed> {
    let status = p.join()?;
    check(status.success(), || {
        format!("child {} {}", p.pid(), procpool::describe_status(status))
    })
}

/// Whether `r` is a timeout after exactly `after`.
fn is_timeout<T>(r: &Result<T, Error>, after: Duration) -> bool {
    matches!(r, Err(Error::Timeout(d)) if *d == after)
}

/// A short wait, for the calls that must time out (never a limit on how long anything
/// may take: a slow machine only makes these tests wait longer, never fail).
const SHORT: Duration = Duration::from_millis(100);

// ----- ports of CPython's _TestQueue ----------------------------------------------------

/// `test_put`: a queue of maxsize 6 fills, every kind of put on it fails with a timeout
/// (here and through a handle), and a child drains it in order.
fn test_put() -> Result<(), Failed> {
    let q = Queue::<u64>::with_maxsize(6)?;
    let go = Queue::<()>::new()?;
    let report = Queue::<Vec<u64>>::new()?;
    let mut p = Process::spawn(Drain {
        from: q.receiver(),
        n: 6,
        go: go.receiver(),
        report: report.sender(),
    })?;
    check(q.empty() && !q.full() && q.maxsize() == Some(6), || {
        format!("fresh queue: {q:?}")
    })?;

    let tx = q.sender();
    q.put(&1)?;
    q.put(&2)?;
    q.put_timeout(&3, SHORT)?;
    q.try_put(&4)?;
    tx.put(&5)?;
    tx.try_put(&6)?;

    check(!q.empty() && q.full() && q.qsize() == 6, || {
        format!("after six puts: qsize {}", q.qsize())
    })?;
    check(tx.full()? && !tx.empty()? && tx.qsize()? == 6, || {
        "a handle sees a different queue".into()
    })?;
    let r = q.try_put(&7);
    check(is_timeout(&r, Duration::ZERO), || {
        format!("try_put on full: {r:?}")
    })?;
    let r = q.put_timeout(&7, SHORT);
    check(is_timeout(&r, SHORT), || {
        format!("put_timeout on full: {r:?}")
    })?;
    let r = tx.try_put(&7);
    check(is_timeout(&r, Duration::ZERO), || {
        format!("handle try_put: {r:?}")
    })?;
    let r = tx.put_timeout(&7, SHORT);
    check(is_timeout(&r, SHORT), || {
        format!("handle put_timeout: {r:?}")
    })?;
    check(q.qsize() == 6, || "a failed put changed the queue".into())?;

    go.put(&())?;
    let got = report.get()?;
    check(got == [1, 2, 3, 4, 5, 6], || {
        format!("the child got {got:?}")
    })?;
    check(q.empty() && !q.full(), || format!("after the child: {q:?}"))?;
    join_ok(&mut p)
}

/// `test_get`: a child puts once told to; every kind of get takes its values in order,
/// then every kind of get on the empty queue times out.
fn test_get() -> Result<(), Failed> {
    let q = Queue::<u64>::new()?;
    let go = Queue::<()>::new()?;
    let done = Queue::<()>::new()?;
    let mut p = Process::spawn(PutAfterGo {
        to: q.sender(),
        go: go.receiver(),
        done: done.sender(),
    })?;
    check(q.empty(), || "not empty before the child put".into())?;
    go.put(&())?;
    done.get()?;
    check(!q.empty() && q.qsize() == 4, || {
        format!("after the child: qsize {}", q.qsize())
    })?;

    let rx = q.receiver();
    check(q.get()? == 2, || "first value".into())?;
    check(rx.get()? == 3, || "second value".into())?;
    check(q.get_timeout(Duration::from_secs(60))? == 4, || {
        "third value".into()
    })?;
    check(rx.try_get()? == Some(5), || "fourth value".into())?;
    check(q.empty() && rx.empty()?, || {
        "not empty after four gets".into()
    })?;

    check(q.try_get().is_none(), || "try_get on empty".into())?;
    check(rx.try_get()?.is_none(), || "handle try_get on empty".into())?;
    let r = q.get_timeout(SHORT);
    check(is_timeout(&r, SHORT), || {
        format!("get_timeout on empty: {r:?}")
    })?;
    let r = rx.get_timeout(SHORT);
    check(is_timeout(&r, SHORT), || {
        format!("handle get_timeout: {r:?}")
    })?;
    join_ok(&mut p)
}

/// `test_fork`: values put before a child starts and values the child puts come out in
/// one FIFO order.
fn test_fork() -> Result<(), Failed> {
    let q = Queue::<u64>::new()?;
    for v in 0..10 {
        q.put(&v)?;
    }
    let mut p = Process::spawn(PutRange {
        to: q.sender(),
        start: 10,
        end: 20,
    })?;
    let got = (0..20)
        .map(|_| q.get())
        .collect::<Result<Vec<u64>, Error>>()?;
    check(got == (0..20).collect::<Vec<u64>>(), || format!("{got:?}"))?;
    check(q.try_get().is_none(), || "an extra value".into())?;
    join_ok(&mut p)
}

/// `test_qsize`, here and in a child through both kinds of handle.
fn test_qsize() -> Result<(), Failed> {
    let q = Queue::<u64>::new()?;
    check(q.qsize() == 0, || "fresh".into())?;
    q.put(&1)?;
    check(q.qsize() == 1, || "after one put".into())?;
    q.put(&5)?;
    check(q.qsize() == 2, || "after two puts".into())?;
    q.get()?;
    check(q.qsize() == 1, || "after one get".into())?;
    q.get()?;
    check(q.qsize() == 0, || "after two gets".into())?;

    let report = Queue::<(usize, bool)>::new()?;
    let mut p = Process::spawn(Observe {
        tx: q.sender(),
        rx: q.receiver(),
        report: report.sender(),
    })?;
    let full = report.get()?;
    let drained = report.get()?;
    check(full == (2, false), || {
        format!("child saw {full:?} after two puts")
    })?;
    check(drained == (0, true), || {
        format!("child saw {drained:?} after two gets")
    })?;
    join_ok(&mut p)
}

/// `test_task_done`: four children take values from a joinable queue and mark each done;
/// `join` (here, and from another child) returns once all ten are done, not before.
fn test_task_done() -> Result<(), Failed> {
    const N: u64 = 10;
    let work = JoinableQueue::<Option<u64>>::new()?;
    let results = Queue::<u64>::new()?;
    let report = Queue::<usize>::new()?;
    for v in 0..N {
        work.put(&Some(v))?;
    }
    // The remote joiner starts while every value is still unfinished.
    let mut joiner = Process::spawn(JoinThenCount {
        work: work.sender(),
        results: results.sender(),
        report: report.sender(),
    })?;
    let mut workers = (0..4)
        .map(|_| {
            Process::spawn(Finish {
                work: work.receiver(),
                results: results.sender(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    work.join()?;
    // Each worker reports a value before marking it done, so a join that returned early
    // would find fewer results.
    check(results.qsize() == N as usize, || {
        format!("join returned with {} of {N} results in", results.qsize())
    })?;
    let seen = report.get()?;
    check(seen == N as usize, || {
        format!("the child's join returned with {seen} of {N} results in")
    })?;
    join_ok(&mut joiner)?;

    for _ in &workers {
        work.put(&None)?;
    }
    for p in &mut workers {
        join_ok(p)?;
    }
    let mut got: Vec<u64> = (0..N).map(|_| results.get()).collect::<Result<_, _>>()?;
    got.sort_unstable();
    check(got == (0..N).collect::<Vec<_>>(), || format!("{got:?}"))?;
    // The four `None`s were taken but not marked done: four more task_done calls are
    // due, a fifth is one too many.
    for _ in 0..4 {
        work.task_done()?;
    }
    work.join()?;
    let r = work.task_done();
    check(
        matches!(&r, Err(e) if e.to_string().contains("task_done() was called more times")),
        || format!("a fifth task_done: {r:?}"),
    )
}

/// `test_timeout` (without its timing): a get on an empty queue ends in a timeout that
/// names the time waited.
fn test_timeout() -> Result<(), Failed> {
    let q = Queue::<u64>::new()?;
    let wait = Duration::from_millis(200);
    let r = q.get_timeout(wait);
    check(is_timeout(&r, wait), || format!("{r:?}"))?;
    let r = q.receiver().get_timeout(wait);
    check(is_timeout(&r, wait), || format!("handle: {r:?}"))?;
    check(
        r.is_err_and(|e| e.to_string() == "timed out after 200ms"),
        || "the message".into(),
    )
}

/// A value that cannot be serialized, for the queue to refuse.
#[derive(Debug, PartialEq, Deserialize)]
enum Item {
    Fine(bool),
    Poison,
}
impl Serialize for Item {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Item::Fine(b) => s.serialize_newtype_variant("Item", 0, "Fine", b),
            Item::Poison => Err(serde::ser::Error::custom(
                "this value refuses to be serialized",
            )),
        }
    }
}

/// `test_queue_feeder_donot_stop_onexc`: a value that cannot be serialized fails its own
/// put, clearly, and leaves the queue (and the handle) working and correctly counted.
fn test_queue_feeder_donot_stop_onexc() -> Result<(), Failed> {
    let refused = |r: Result<(), Error>| matches!(&r, Err(e) if e.to_string().contains("refuses to be serialized"));
    let q = Queue::<Item>::new()?;
    check(refused(q.put(&Item::Poison)), || {
        "owner put of poison".into()
    })?;
    q.put(&Item::Fine(true))?;
    check(q.get()? == Item::Fine(true), || "owner get".into())?;

    let q = Queue::<Item>::with_maxsize(1)?;
    let tx = q.sender();
    check(refused(tx.put(&Item::Poison)), || {
        "handle put of poison".into()
    })?;
    tx.put(&Item::Fine(true))?;
    check(q.qsize() == 1, || {
        format!("qsize {} after one good put", q.qsize())
    })?;
    check(q.get()? == Item::Fine(true), || "handle's value".into())?;
    check(q.empty(), || "not empty".into())
}

/// `test_closed_queue_empty_exceptions` and `test_closed_queue_put_get_exceptions`: after
/// `close()` a put fails naming the cause, `empty()` still works, and (unlike CPython,
/// where a get after close fails) gets drain what was put.
fn test_closed_queue_put_get() -> Result<(), Failed> {
    let q = Queue::<u64>::new()?;
    q.close();
    check(q.empty(), || "a closed unused queue is empty".into())?;

    let q = JoinableQueue::<u64>::new()?;
    q.put(&1)?;
    q.put(&2)?;
    q.close();
    let r = q.put(&3);
    check(
        matches!(&r, Err(e) if e.to_string().contains("close() was called")),
        || format!("put after close: {r:?}"),
    )?;
    check(!q.empty() && q.qsize() == 2, || "close lost values".into())?;
    check(q.get()? == 1 && q.get()? == 2, || {
        "drain after close".into()
    })?;
    check(q.try_get().is_none(), || "an extra value".into())?;

    // Close is per handle: a closed sender refuses, another handle still puts.
    let q = Queue::<u64>::new()?;
    let a = q.sender();
    let b = q.sender();
    a.put(&1)?;
    a.close();
    let r = a.put(&2);
    check(
        matches!(&r, Err(e) if e.to_string().contains("close() was called")),
        || format!("handle put after close: {r:?}"),
    )?;
    b.put(&3)?;
    check(q.get()? == 1 && q.get()? == 3, || {
        "values around a close".into()
    })?;
    check(q.try_get().is_none(), || "an extra value".into())
}

// ----- beyond CPython's suite -------------------------------------------------------------

/// A producer child with maxsize 2 completes two puts, then waits until the parent gets:
/// each get lets exactly one more put through.
fn maxsize_blocks_producer_until_consumer_gets() -> Result<(), Failed> {
    let q = Queue::<u64>::with_maxsize(2)?;
    let progress = Queue::<u64>::new()?;
    let mut p = Process::spawn(Produce {
        to: q.sender(),
        n: 5,
        progress: progress.sender(),
    })?;
    check(progress.get()? == 0 && progress.get()? == 1, || {
        "the first two puts".into()
    })?;
    check(q.qsize() == 2 && q.full(), || {
        format!("qsize {}", q.qsize())
    })?;
    // The third put waits for room: no progress while nobody gets.
    let r = progress.get_timeout(Duration::from_millis(300));
    check(r.is_err(), || {
        format!("a put into a full queue returned: {r:?}")
    })?;
    check(p.is_alive(), || {
        "the producer ended with the queue full".into()
    })?;
    for v in 0..5 {
        check(q.get()? == v, || format!("value {v}"))?;
        if v + 2 < 5 {
            let done = progress.get()?;
            check(done == v + 2, || format!("progress {done} after get {v}"))?;
        }
        check(q.qsize() <= 2, || {
            format!("qsize {} over maxsize", q.qsize())
        })?;
    }
    join_ok(&mut p)?;
    check(progress.try_get().is_none() && q.empty(), || {
        "leftovers".into()
    })
}

/// Producer/consumer across processes both ways: four children get work from one queue
/// and put results on another; every value is taken exactly once.
fn children_compete_for_work() -> Result<(), Failed> {
    const N: u64 = 200;
    let work = Queue::<Option<u64>>::new()?;
    let results = Queue::<(u32, u64, u64)>::new()?;
    let mut workers = (0..4)
        .map(|_| {
            Process::spawn(Square {
                work: work.receiver(),
                results: results.sender(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pids: BTreeSet<u32> = workers.iter().map(Process::pid).collect();
    for v in 0..N {
        work.put(&Some(v))?;
    }
    for _ in &workers {
        work.put(&None)?;
    }
    for p in &mut workers {
        join_ok(p)?;
    }
    // Joined before reading: the children's puts were taken as they came.
    let got: Vec<(u32, u64, u64)> = (0..N).map(|_| results.get()).collect::<Result<_, _>>()?;
    check(results.try_get().is_none(), || {
        "a value was taken twice".into()
    })?;
    let values: BTreeSet<u64> = got.iter().map(|&(_, v, _)| v).collect();
    check(
        values.len() == N as usize && values == (0..N).collect(),
        || format!("{} distinct values of {N}", values.len()),
    )?;
    check(
        got.iter()
            .all(|&(pid, v, sq)| pids.contains(&pid) && sq == v * v),
        || format!("a wrong result or a stranger's pid: {got:?}"),
    )?;
    check(work.empty(), || "work left over".into())
}

/// A consumer killed while it waits in `get` takes nothing with it.
fn killed_consumer_loses_no_value() -> Result<(), Failed> {
    let q = Queue::<u64>::new()?;
    let ready = Queue::<()>::new()?;
    let mut p = Process::spawn(WaitToBeKilled {
        from: q.receiver(),
        ready: ready.sender(),
    })?;
    ready.get()?;
    p.kill()?;
    q.put(&42)?;
    check(q.get()? == 42, || {
        "the value went to the dead consumer".into()
    })?;
    check(q.try_get().is_none(), || "an extra value".into())
}

/// Handles of a dropped queue fail with an error that says the queue is gone, here and
/// in a child that was waiting on it.
fn handle_of_a_dropped_queue() -> Result<(), Failed> {
    let gone = |s: &str| s.contains("is gone: its owner dropped it or exited");

    let q = Queue::<u64>::new()?;
    let (tx, rx) = (q.sender(), q.receiver());
    tx.put(&1)?; // connected before the drop
    drop(q);
    let r = tx.put(&2);
    check(matches!(&r, Err(e) if gone(&e.to_string())), || {
        format!("put: {r:?}")
    })?;
    let r = rx.get();
    check(matches!(&r, Err(e) if gone(&e.to_string())), || {
        format!("get: {r:?}")
    })?;

    let q = Queue::<u64>::new()?;
    let report = Queue::<String>::new()?;
    let mut p = Process::spawn(Orphan {
        from: q.receiver(),
        report: report.sender(),
    })?;
    let first = report.get()?;
    check(first == "waiting", || first.clone())?;
    drop(q);
    for what in ["the waiting get", "the next call"] {
        let e = report.get()?;
        check(gone(&e), || format!("{what} in the child: {e}"))?;
    }
    join_ok(&mut p)
}

/// A child's handle refuses a put after its close; what it put before stays.
fn child_put_after_close() -> Result<(), Failed> {
    let q = Queue::<u64>::new()?;
    let report = Queue::<String>::new()?;
    let mut p = Process::spawn(CloseThenPut {
        to: q.sender(),
        report: report.sender(),
    })?;
    let e = report.get()?;
    check(e.contains("close() was called on this handle"), || {
        e.clone()
    })?;
    // The queue's name is in its Debug form: `Queue { name: "...", .. }`.
    let debug = format!("{q:?}");
    let name = debug.split('"').nth(1).unwrap_or("no name");
    check(e.contains(name), || {
        format!("the error does not name the queue {name:?}: {e}")
    })?;
    join_ok(&mut p)?;
    check(q.get()? == 10 && q.try_get().is_none(), || "values".into())
}

/// task_done and join on a plain queue's handles fail, saying why; so does maxsize 0.
fn misuse_is_refused_clearly() -> Result<(), Failed> {
    let q = Queue::<u64>::new()?;
    q.put(&1)?;
    let rx = q.receiver();
    rx.get()?;
    let r = rx.task_done();
    check(
        matches!(&r, Err(e) if e.to_string().contains("is not joinable")),
        || format!("task_done on a plain queue: {r:?}"),
    )?;
    let r = q.sender().join();
    check(
        matches!(&r, Err(e) if e.to_string().contains("is not joinable")),
        || format!("join on a plain queue: {r:?}"),
    )?;
    let r = Queue::<u64>::with_maxsize(0);
    check(
        matches!(&r, Err(Error::Config(m)) if m.contains("maxsize 0")),
        || format!("maxsize 0: {r:?}"),
    )?;
    let r = JoinableQueue::<u64>::with_maxsize(0);
    check(r.is_err(), || "joinable maxsize 0".into())?;
    let jq = JoinableQueue::<u64>::new()?;
    let r = jq.receiver().task_done();
    check(
        matches!(&r, Err(e) if e.to_string().contains("more times")),
        || format!("task_done before any put: {r:?}"),
    )
}

// ----- harness -----------------------------------------------------------------------------

fn main() {
    procpool::serve_if_worker(registry());
    let args = Arguments::from_args();
    let tests: [(&'static str, TestFn); 15] = [
        ("test_put", test_put),
        ("test_get", test_get),
        ("test_fork", test_fork),
        ("test_qsize", test_qsize),
        ("test_task_done", test_task_done),
        ("test_timeout", test_timeout),
        (
            "test_queue_feeder_donot_stop_onexc",
            test_queue_feeder_donot_stop_onexc,
        ),
        ("test_closed_queue_put_get", test_closed_queue_put_get),
        (
            "maxsize_blocks_producer_until_consumer_gets",
            maxsize_blocks_producer_until_consumer_gets,
        ),
        ("children_compete_for_work", children_compete_for_work),
        (
            "killed_consumer_loses_no_value",
            killed_consumer_loses_no_value,
        ),
        ("handle_of_a_dropped_queue", handle_of_a_dropped_queue),
        ("child_put_after_close", child_put_after_close),
        ("misuse_is_refused_clearly", misuse_is_refused_clearly),
        ("handles_are_independent", handles_are_independent),
    ];
    let trials = tests
        .into_iter()
        .map(|(name, f)| watchdog(name, 120, f))
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

/// Clones are independent handles, and handles work from threads of the owner too: two
/// threads block in `get` on their own receivers while the owner puts.
fn handles_are_independent() -> Result<(), Failed> {
    let q = Queue::<u64>::new()?;
    let rx = q.receiver();
    let got = std::thread::scope(|s| {
        let a = s.spawn(|| rx.get());
        let rx2 = rx.clone();
        let b = s.spawn(move || rx2.get());
        let put = q.put(&1).and_then(|()| q.put(&2));
        (put, a.join(), b.join())
    });
    let (put, a, b) = got;
    put?;
    let (Ok(a), Ok(b)) = (a, b) else {
        return Err("a receiving thread panicked".into());
    };
    let mut both = [a?, b?];
    both.sort_unstable();
    check(both == [1, 2], || format!("{both:?}"))
}
