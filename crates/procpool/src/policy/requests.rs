//! Requests: what a caller asked for (one `apply`, a `map`, an `imap` stream) and where
//! its results collect until the caller takes them — in order through a bounded reorder
//! buffer, as they come, or into a vector of slots.
//!
//! Each result is delivered at most once: a sink refuses a second result for a position
//! (logged and dropped), and a request forgets a position once it is delivered or
//! withdrawn. A cancelled request takes no more results and disappears when the last of
//! its jobs in flight is accounted for.

use super::stats::WorkerRef;
use crate::error::JobError;
use crate::reorder::Reorder;
use crate::table::IdTable;
use std::collections::{BTreeMap, VecDeque};
use tracing::warn;

/// One result as a request holds it.
#[derive(Debug)]
pub(crate) struct Item<O> {
    /// The worker that produced it (`None` if it never ran).
    pub worker: Option<WorkerRef>,
    /// The output, or why there is none.
    pub result: Result<O, Box<JobError>>,
}

/// One result of a collect request: the output, or why there is none (which worker ran it
/// is not kept).
pub(crate) type Collected<O> = Result<O, Box<JobError>>;

/// A complete collect request's outputs in position order, or its first failure by
/// position, with that position.
pub(crate) type Outputs<O> = Result<Vec<O>, (u64, Box<JobError>)>;

/// Where a request's results collect.
#[derive(Debug)]
pub(crate) enum Sink<O> {
    /// In position order, at most a window ahead of the next one taken.
    Ordered(Reorder<Item<O>>),
    /// As they arrive.
    Unordered(VecDeque<(u64, Item<O>)>),
    /// All of them, taken at once when complete: outputs by position, failures apart (they
    /// are rare, and an `Option<O>` is all a position needs: one byte for `()`, where a
    /// slot that could hold an error took sixteen — a million-job `map` touched 16 MB).
    Collect {
        outputs: Vec<Option<O>>,
        errors: BTreeMap<u64, Box<JobError>>,
        filled: usize,
    },
}

impl<O> Sink<O> {
    /// A sink for `n` results taken together.
    pub(crate) fn collect(n: usize) -> Sink<O> {
        Sink::Collect {
            outputs: (0..n).map(|_| None).collect(),
            errors: BTreeMap::new(),
            filled: 0,
        }
    }
}

#[derive(Debug)]
struct Request<O> {
    sink: Sink<O>,
    /// Jobs submitted whose result has not been delivered or withdrawn.
    outstanding: usize,
    is_async: bool,
    cancelled: bool,
}

/// Every open request.
#[derive(Debug)]
pub(crate) struct Requests<O> {
    table: IdTable<Request<O>>,
    next: u64,
}

impl<O> Default for Requests<O> {
    fn default() -> Self {
        Requests {
            table: IdTable::default(),
            next: 0,
        }
    }
}

impl<O> Requests<O> {
    /// Opens a request; returns its id.
    pub(crate) fn open(&mut self, sink: Sink<O>, is_async: bool) -> u64 {
        let id = self.next;
        self.next += 1;
        self.table.insert(
            id,
            Request {
                sink,
                outstanding: 0,
                is_async,
                cancelled: false,
            },
        );
        id
    }

    /// Whether `req` is open and takes jobs.
    pub(crate) fn accepts(&self, req: u64) -> bool {
        self.table.get(&req).is_some_and(|r| !r.cancelled)
    }

    /// `n` more jobs of `req` are on their way.
    pub(crate) fn add_outstanding(&mut self, req: u64, n: usize) {
        if let Some(r) = self.table.get_mut(&req) {
            r.outstanding += n;
        }
    }

    /// `n` jobs of `req` were withdrawn (the request was cancelled).
    pub(crate) fn withdraw(&mut self, req: u64, n: usize) {
        if let Some(r) = self.table.get_mut(&req) {
            r.outstanding = r.outstanding.saturating_sub(n);
            if r.cancelled && r.outstanding == 0 {
                self.table.remove(&req);
            }
        }
    }

    /// Puts the result for `pos` of `req` where the caller will find it. Returns whether
    /// it was taken in (false: the request is gone or cancelled, or it was a duplicate).
    pub(crate) fn deliver(
        &mut self,
        req: u64,
        pos: u64,
        worker: Option<WorkerRef>,
        result: Result<O, Box<JobError>>,
    ) -> bool {
        self.deliver_run(req, pos, worker, std::iter::once(result)) == 1
    }

    /// Delivers the results of positions `first_pos..` of `req`, in order, as [`deliver`]
    /// would one by one (every item is consumed); returns how many were taken in.
    ///
    /// [`deliver`]: Requests::deliver
    pub(crate) fn deliver_run(
        &mut self,
        req: u64,
        first_pos: u64,
        worker: Option<WorkerRef>,
        results: impl Iterator<Item = Result<O, Box<JobError>>>,
    ) -> usize {
        let Some(r) = self.table.get_mut(&req) else {
            results.for_each(drop);
            return 0;
        };
        if r.cancelled {
            r.outstanding = r.outstanding.saturating_sub(results.count());
            if r.outstanding == 0 {
                self.table.remove(&req);
            }
            return 0;
        }
        let (mut seen, mut taken) = (0, 0);
        match &mut r.sink {
            // A `map`'s results, the bulk of them: one tight loop (`put` is not inlined).
            Sink::Collect {
                outputs,
                errors,
                filled,
            } => {
                for (result, pos) in results.zip(first_pos..) {
                    seen += 1;
                    taken += usize::from(put_collect(outputs, errors, filled, pos, result));
                }
            }
            sink => {
                for (result, pos) in results.zip(first_pos..) {
                    seen += 1;
                    taken += usize::from(put(sink, pos, worker, result));
                }
            }
        }
        r.outstanding = r.outstanding.saturating_sub(seen);
        taken
    }

    /// Marks `req` cancelled: it takes no more results. Returns whether it existed.
    pub(crate) fn cancel(&mut self, req: u64) -> bool {
        match self.table.get_mut(&req) {
            Some(r) => {
                r.cancelled = true;
                if r.outstanding == 0 {
                    self.table.remove(&req);
                }
                true
            }
            None => false,
        }
    }

    /// Jobs of `req` not yet delivered or withdrawn.
    pub(crate) fn outstanding(&self, req: u64) -> usize {
        self.table.get(&req).map_or(0, |r| r.outstanding)
    }

    /// Whether the next result of an ordered or unordered request is here.
    pub(crate) fn has_next(&self, req: u64) -> bool {
        match self.table.get(&req).map(|r| &r.sink) {
            Some(Sink::Ordered(ro)) => ro.ready(),
            Some(Sink::Unordered(q)) => !q.is_empty(),
            Some(Sink::Collect { .. }) | None => false,
        }
    }

    /// Takes the next result of an ordered or unordered request, with its position.
    pub(crate) fn take_next(&mut self, req: u64) -> Option<(u64, Item<O>)> {
        match &mut self.table.get_mut(&req)?.sink {
            Sink::Ordered(ro) => {
                let pos = ro.next_pos();
                ro.pop().map(|item| (pos, item))
            }
            Sink::Unordered(q) => q.pop_front(),
            Sink::Collect { .. } => None,
        }
    }

    /// Results held in an ordered request's reorder buffer (for the memory bound).
    #[cfg(test)]
    pub(crate) fn held(&self, req: u64) -> usize {
        match self.table.get(&req).map(|r| &r.sink) {
            Some(Sink::Ordered(ro)) => ro.held(),
            Some(Sink::Unordered(q)) => q.len(),
            _ => 0,
        }
    }

    /// Widens an ordered request's reorder window.
    pub(crate) fn grow_window(&mut self, req: u64, window: usize) {
        if let Some(Request {
            sink: Sink::Ordered(ro),
            ..
        }) = self.table.get_mut(&req)
        {
            ro.grow_capacity(window);
        }
    }

    /// Whether a collect request has all its results (or is gone).
    pub(crate) fn is_complete(&self, req: u64) -> bool {
        match self.table.get(&req) {
            Some(Request {
                sink: Sink::Collect {
                    outputs, filled, ..
                },
                ..
            }) => *filled == outputs.len(),
            Some(_) => false,
            None => true,
        }
    }

    /// Takes a complete collect request's results, in position order, and closes it.
    pub(crate) fn take_collected(&mut self, req: u64) -> Option<Vec<Collected<O>>> {
        if !self.is_complete(req) {
            return None;
        }
        match self.table.remove(&req)?.sink {
            Sink::Collect {
                outputs,
                mut errors,
                ..
            } => Some(
                outputs
                    .into_iter()
                    .zip(0u64..)
                    // Complete: every position has its output or its error.
                    .filter_map(|(output, pos)| match output {
                        Some(o) => Some(Ok(o)),
                        None => errors.remove(&pos).map(Err),
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Takes a complete collect request's outputs in position order, or its first failure
    /// by position with that position, and closes it (what a blocking `map` returns:
    /// nothing is built per job when every job succeeded).
    pub(crate) fn take_outputs(&mut self, req: u64) -> Option<Outputs<O>> {
        if !self.is_complete(req) {
            return None;
        }
        match self.table.remove(&req)?.sink {
            Sink::Collect {
                outputs, errors, ..
            } => Some(match errors.into_iter().next() {
                Some(first) => Err(first),
                None => Ok(outputs.into_iter().flatten().collect()),
            }),
            _ => None,
        }
    }

    /// Closes a request whose results were all taken.
    pub(crate) fn finish(&mut self, req: u64) {
        if self.table.get(&req).is_some_and(|r| r.outstanding == 0) {
            self.table.remove(&req);
        }
    }

    /// Whether asynchronous requests still wait for results (someone must drive).
    pub(crate) fn async_busy(&self) -> bool {
        self.table
            .values()
            .any(|r| r.is_async && r.outstanding > 0 && !r.cancelled)
    }
}

/// Puts one result into a sink; returns whether it was taken in (not a duplicate, in range).
fn put<O>(
    sink: &mut Sink<O>,
    pos: u64,
    worker: Option<WorkerRef>,
    result: Result<O, Box<JobError>>,
) -> bool {
    match sink {
        Sink::Ordered(ro) => match ro.push(pos, Item { worker, result }) {
            Ok(()) => true,
            Err(e) => {
                warn!("dropping a result: {e}");
                false
            }
        },
        Sink::Unordered(q) => {
            q.push_back((pos, Item { worker, result }));
            true
        }
        Sink::Collect {
            outputs,
            errors,
            filled,
        } => put_collect(outputs, errors, filled, pos, result),
    }
}

/// Puts one result into a collecting sink's slot `pos`; returns whether it was taken in.
#[inline(always)]
fn put_collect<O>(
    outputs: &mut [Option<O>],
    errors: &mut BTreeMap<u64, Box<JobError>>,
    filled: &mut usize,
    pos: u64,
    result: Result<O, Box<JobError>>,
) -> bool {
    match outputs.get_mut(pos as usize) {
        Some(slot @ None) if errors.is_empty() || !errors.contains_key(&pos) => {
            match result {
                Ok(output) => *slot = Some(output),
                Err(e) => {
                    errors.insert(pos, e);
                }
            }
            *filled += 1;
            true
        }
        _ => {
            warn!("dropping a result: position {pos} arrived twice or out of range");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_results_come_out_in_order_once() {
        let mut r = Requests::<u32>::default();
        let req = r.open(Sink::Ordered(Reorder::new(4)), false);
        for _ in 0..3 {
            r.add_outstanding(req, 1);
        }
        assert!(r.deliver(req, 2, None, Ok(20)));
        assert!(!r.has_next(req));
        assert!(r.deliver(req, 0, None, Ok(0)));
        assert!(!r.deliver(req, 0, None, Ok(0)), "a duplicate is refused");
        assert_eq!(r.take_next(req).map(|(p, _)| p), Some(0));
        assert!(r.deliver(req, 1, None, Ok(10)));
        let got: Vec<u64> = std::iter::from_fn(|| r.take_next(req).map(|(p, _)| p)).collect();
        assert_eq!(got, [1, 2]);
        assert_eq!(r.outstanding(req), 0);
    }

    #[test]
    fn collect_completes_and_cancel_forgets() {
        let mut r = Requests::<u32>::default();
        let req = r.open(Sink::collect(2), true);
        r.add_outstanding(req, 1);
        r.add_outstanding(req, 1);
        assert!(r.async_busy());
        assert!(r.deliver(req, 1, None, Ok(1)));
        assert!(!r.is_complete(req));
        assert!(r.deliver(req, 0, None, Err(Box::new(JobError::Terminated))));
        let items = r.take_collected(req).unwrap();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_err() && items[1].is_ok());
        assert!(!r.async_busy());

        // Outputs alone, or the first failure by position; duplicates refused either way.
        let req = r.open(Sink::collect(4), false);
        r.add_outstanding(req, 4);
        assert!(r.deliver(req, 3, None, Err(Box::new(JobError::Terminated))));
        assert!(
            !r.deliver(req, 3, None, Ok(9)),
            "an error's position is taken"
        );
        assert!(r.deliver(req, 0, None, Ok(7)));
        assert!(
            !r.deliver(req, 0, None, Ok(8)),
            "an output's position is taken"
        );
        assert!(r.deliver(req, 2, None, Err(Box::new(JobError::Terminated))));
        assert!(r.take_outputs(req).is_none(), "not complete yet");
        assert!(!r.deliver(req, 4, None, Ok(1)), "out of range");
        assert!(r.deliver(req, 1, None, Ok(5)));
        let (pos, _) = r.take_outputs(req).unwrap().unwrap_err();
        assert_eq!(pos, 2, "the first failure by position");
        let req = r.open(Sink::collect(3), false);
        r.add_outstanding(req, 3);
        for pos in [2, 0, 1] {
            assert!(r.deliver(req, pos, None, Ok(pos as u32 * 10)));
        }
        assert_eq!(r.take_outputs(req).unwrap().unwrap(), [0, 10, 20]);

        let req = r.open(Sink::collect(3), true);
        for _ in 0..3 {
            r.add_outstanding(req, 1);
        }
        assert!(r.cancel(req));
        assert!(!r.accepts(req));
        r.withdraw(req, 2);
        assert!(
            !r.deliver(req, 0, None, Ok(5)),
            "a cancelled request takes nothing"
        );
        assert!(
            r.is_complete(req),
            "gone once its last job is accounted for"
        );
    }
}
