//! Jobs kept as runs: consecutive jobs of one request, submitted together, differ only in
//! their position and submission number, so a run stores the first job's [`Meta`] and a
//! length, and job `k` of it is the first with `pos + k` and `seq + k`.
//!
//! Why: a `map` of a million jobs used to build, move and split a 48-byte `Meta` per job
//! three times on the coordinator's hot path (queue, dispatch, chunk), which cost more than
//! everything else the coordinator does per job. Runs make that per batch and per chunk;
//! only the payloads (one per job, the job's input) still move one by one. Retried and
//! suspect jobs, which carry their own crash counts, are runs of one, so nothing about
//! blame changes: it sees the same `Meta` values, produced on demand.

use super::Meta;
use std::collections::VecDeque;

/// `len` consecutive jobs starting with `first`.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: Meta,
    len: usize,
}

impl Run {
    /// Job `k` of the run (`k < len`).
    fn meta(&self, k: usize) -> Meta {
        Meta {
            pos: self.first.pos + k as u64,
            seq: self.first.seq + k as u64,
            ..self.first
        }
    }

    /// Whether `next` is the job right after this run's last.
    fn continues_with(&self, next: &Meta) -> bool {
        let len = self.len as u64;
        let f = &self.first;
        next.req == f.req
            && f.pos.checked_add(len) == Some(next.pos)
            && f.seq.checked_add(len) == Some(next.seq)
            && next.crashes == f.crashes
            && next.starts == f.starts
            && next.queued == f.queued
    }

    /// The run without its first `k` jobs (`k < len`).
    fn skip(self, k: usize) -> Run {
        Run {
            first: self.meta(k),
            len: self.len - k,
        }
    }
}

/// Appends `meta` to `runs`, extending the last run when it continues it.
fn push_meta(last: Option<&mut Run>, meta: Meta) -> Option<Run> {
    match last {
        Some(last) if last.continues_with(&meta) => {
            last.len += 1;
            None
        }
        _ => Some(Run {
            first: meta,
            len: 1,
        }),
    }
}

/// The metas of a chunk's jobs, in order.
#[derive(Debug, Default)]
pub(super) struct Metas {
    runs: Vec<Run>,
    len: usize,
}

impl Metas {
    /// Appends one job.
    pub(super) fn push(&mut self, meta: Meta) {
        if let Some(run) = push_meta(self.runs.last_mut(), meta) {
            self.runs.push(run);
        }
        self.len += 1;
    }

    /// Number of jobs.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every job's meta, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Meta> + '_ {
        self.iter_from(0)
    }

    /// The metas of jobs `start..`, in order (skipping whole runs, not jobs).
    pub(super) fn iter_from(&self, start: usize) -> impl Iterator<Item = Meta> + '_ {
        let mut skip = start;
        self.runs.iter().flat_map(move |r| {
            let k = skip.min(r.len);
            skip -= k;
            (k..r.len).map(|i| r.meta(i))
        })
    }

    /// Jobs `start..start + n` as runs: each run's first job and how many follow it
    /// (consecutive positions of one request).
    pub(super) fn segments(
        &self,
        start: usize,
        n: usize,
    ) -> impl Iterator<Item = (Meta, usize)> + '_ {
        let (mut skip, mut left) = (start, n);
        self.runs.iter().filter_map(move |r| {
            let k = skip.min(r.len);
            skip -= k;
            let len = (r.len - k).min(left);
            left -= len;
            (len > 0).then(|| (r.meta(k), len))
        })
    }

    /// Counts one more start for every job (the chunk is being sent).
    pub(super) fn count_start(&mut self) {
        for r in &mut self.runs {
            r.first.starts = r.first.starts.saturating_add(1);
        }
    }
}

/// Jobs waiting to be sent, in order: their metas as runs, their payloads one by one.
#[derive(Debug)]
pub(super) struct Queue<P> {
    runs: VecDeque<Run>,
    payloads: VecDeque<P>,
}

impl<P> Default for Queue<P> {
    fn default() -> Self {
        Queue {
            runs: VecDeque::new(),
            payloads: VecDeque::new(),
        }
    }
}

impl<P> Queue<P> {
    /// Number of jobs.
    pub(super) fn len(&self) -> usize {
        self.payloads.len()
    }

    /// Whether no job waits.
    pub(super) fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }

    /// Room for `n` more jobs.
    pub(super) fn reserve(&mut self, n: usize) {
        self.payloads.reserve(n);
    }

    /// Queues a job last.
    pub(super) fn push_back(&mut self, meta: Meta, payload: P) {
        if let Some(run) = push_meta(self.runs.back_mut(), meta) {
            self.runs.push_back(run);
        }
        self.payloads.push_back(payload);
    }

    /// Queues jobs `first`, `first + 1`, ... (positions and submission numbers counting up)
    /// from `payloads` as one run, until the iterator ends or gives an error. Returns how
    /// many it queued, and the error that stopped it (the iterator resumes after it).
    pub(super) fn push_run<E>(
        &mut self,
        first: Meta,
        payloads: &mut impl Iterator<Item = Result<P, E>>,
    ) -> (usize, Option<E>) {
        let before = self.payloads.len();
        let mut error = None;
        for p in payloads.by_ref() {
            match p {
                Ok(p) => self.payloads.push_back(p),
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let len = self.payloads.len() - before;
        if len > 0 {
            match self.runs.back_mut() {
                Some(last) if last.continues_with(&first) => last.len += len,
                _ => self.runs.push_back(Run { first, len }),
            }
        }
        (len, error)
    }

    /// Queues a job first (a run of its own: jobs put back keep their own history).
    pub(super) fn push_front(&mut self, meta: Meta, payload: P) {
        self.runs.push_front(Run {
            first: meta,
            len: 1,
        });
        self.payloads.push_front(payload);
    }

    /// Takes the first job.
    pub(super) fn pop_front(&mut self) -> Option<(Meta, P)> {
        let payload = self.payloads.pop_front()?;
        let run = self.runs.pop_front()?;
        if run.len > 1 {
            self.runs.push_front(run.skip(1));
        }
        Some((run.first, payload))
    }

    /// Takes the first `n` jobs (all of them if fewer wait).
    pub(super) fn take_front(&mut self, n: usize) -> (Metas, Vec<P>) {
        let n = n.min(self.len());
        let payloads: Vec<P> = self.payloads.drain(..n).collect();
        let mut metas = Metas {
            runs: Vec::new(),
            len: n,
        };
        let mut left = n;
        while left > 0 {
            let Some(run) = self.runs.pop_front() else {
                break;
            };
            if run.len > left {
                self.runs.push_front(run.skip(left));
                metas.runs.push(Run {
                    first: run.first,
                    len: left,
                });
                left = 0;
            } else {
                left -= run.len;
                metas.runs.push(run);
            }
        }
        (metas, payloads)
    }

    /// Empties the queue; returns every job's meta, in order (the payloads are dropped).
    pub(super) fn drain_metas(&mut self) -> Vec<Meta> {
        self.payloads.clear();
        self.runs
            .drain(..)
            .flat_map(|r| (0..r.len).map(move |k| r.meta(k)))
            .collect()
    }

    /// Keeps only the jobs whose request `keep` accepts (payloads stay with their jobs).
    pub(super) fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        let runs = std::mem::take(&mut self.runs);
        let mut payloads = std::mem::take(&mut self.payloads).into_iter();
        for r in runs {
            let kept = keep(r.first.req);
            for k in 0..r.len {
                let Some(p) = payloads.next() else {
                    return;
                };
                if kept {
                    self.push_back(r.meta(k), p);
                }
            }
        }
    }

    /// Every job's meta, in order (tests).
    #[cfg(test)]
    pub(super) fn metas(&self) -> impl Iterator<Item = Meta> + '_ {
        self.runs
            .iter()
            .flat_map(|r| (0..r.len).map(move |k| r.meta(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn meta(req: u64, pos: u64, seq: u64, at: Instant) -> Meta {
        Meta {
            req,
            pos,
            seq,
            crashes: 0,
            starts: 0,
            queued: at,
        }
    }

    fn key(m: &Meta) -> (u64, u64, u64, u32, u32) {
        (m.req, m.pos, m.seq, m.crashes, m.starts)
    }

    #[test]
    fn a_batch_is_one_run_and_splits_where_it_is_taken() {
        let at = Instant::now();
        let mut q = Queue::default();
        for i in 0..10 {
            q.push_back(meta(1, i, 100 + i, at), i);
        }
        assert_eq!(q.runs.len(), 1);
        let (metas, payloads) = q.take_front(4);
        assert_eq!(payloads, [0, 1, 2, 3]);
        assert_eq!(metas.len(), 4);
        let got: Vec<_> = metas.iter().map(|m| key(&m)).collect();
        assert_eq!(
            got,
            (0..4).map(|i| (1, i, 100 + i, 0, 0)).collect::<Vec<_>>()
        );
        assert_eq!(q.len(), 6);
        assert_eq!(
            q.pop_front().map(|(m, p)| (key(&m), p)),
            Some(((1, 4, 104, 0, 0), 4))
        );
        let rest: Vec<_> = q.metas().map(|m| m.pos).collect();
        assert_eq!(rest, [5, 6, 7, 8, 9]);
        // Taking more than waits takes what waits.
        let (metas, payloads) = q.take_front(99);
        assert_eq!((metas.len(), payloads.len(), q.is_empty()), (5, 5, true));
        assert_eq!(
            metas.iter_from(3).map(|m| m.pos).collect::<Vec<_>>(),
            [8, 9]
        );
    }

    #[test]
    fn only_true_continuations_merge() {
        let at = Instant::now();
        let later = at + std::time::Duration::from_nanos(1);
        let mut q = Queue::default();
        q.push_back(meta(1, 0, 0, at), 'a');
        q.push_back(meta(1, 1, 1, at), 'b'); // continues
        q.push_back(meta(2, 2, 2, at), 'c'); // another request
        q.push_back(meta(2, 4, 3, at), 'd'); // a gap in positions
        q.push_back(meta(2, 5, 5, at), 'e'); // a gap in submission numbers
        q.push_back(meta(2, 6, 6, later), 'f'); // queued at another time
        let mut crashed = meta(2, 7, 7, later);
        crashed.crashes = 1;
        q.push_back(crashed, 'g'); // another history
        assert_eq!(q.runs.len(), 6);
        q.push_front(meta(9, 0, 50, at), 'z');
        let all: Vec<_> = q.metas().map(|m| key(&m)).collect();
        assert_eq!(
            all,
            [
                (9, 0, 50, 0, 0),
                (1, 0, 0, 0, 0),
                (1, 1, 1, 0, 0),
                (2, 2, 2, 0, 0),
                (2, 4, 3, 0, 0),
                (2, 5, 5, 0, 0),
                (2, 6, 6, 0, 0),
                (2, 7, 7, 1, 0),
            ]
        );
        // Cancelling request 2 keeps the others, payloads beside their jobs.
        q.retain(|req| req != 2);
        let left: Vec<_> = std::iter::from_fn(|| q.pop_front())
            .map(|(m, p)| (m.req, m.pos, p))
            .collect();
        assert_eq!(left, [(9, 0, 'z'), (1, 0, 'a'), (1, 1, 'b')]);
    }

    #[test]
    fn runs_are_pushed_whole_and_stop_at_an_error() {
        let at = Instant::now();
        let mut q = Queue::default();
        let mut input = vec![Ok('a'), Ok('b'), Err("bad"), Ok('c')].into_iter();
        let (n, e) = q.push_run(meta(1, 10, 20, at), &mut input);
        assert_eq!((n, e), (2, Some("bad")));
        // It resumes after the error; the next run continues the first only if told so.
        let (n, e) = q.push_run(meta(1, 13, 23, at), &mut input);
        assert_eq!((n, e), (1, None));
        assert_eq!(q.runs.len(), 2);
        let (n, _) = q.push_run(meta(1, 14, 24, at), &mut vec![Ok::<_, ()>('d')].into_iter());
        assert_eq!((n, q.runs.len()), (1, 2));
        let all: Vec<_> = q.metas().map(|m| (m.pos, m.seq)).collect();
        assert_eq!(all, [(10, 20), (11, 21), (13, 23), (14, 24)]);
        assert_eq!(q.take_front(4).1, ['a', 'b', 'c', 'd']);
        // Nothing to queue: no run.
        assert_eq!(
            q.push_run(
                meta(1, 0, 0, at),
                &mut std::iter::empty::<Result<char, ()>>()
            ),
            (0, None)
        );
        assert!(q.runs.is_empty());
    }

    #[test]
    fn chunks_count_starts_and_drain_in_order() {
        let at = Instant::now();
        let mut q = Queue::default();
        for i in 0..3 {
            q.push_back(meta(4, i, i, at), ());
        }
        q.push_front(meta(3, 9, 77, at), ());
        let (mut metas, _) = q.take_front(4);
        metas.count_start();
        let got: Vec<_> = metas.iter().map(|m| (m.pos, m.starts)).collect();
        assert_eq!(got, [(9, 1), (0, 1), (1, 1), (2, 1)]);
        let mut pushed = Metas::default();
        for m in metas.iter() {
            pushed.push(m);
        }
        assert_eq!(pushed.runs.len(), 2);
        let segs: Vec<_> = pushed.segments(0, 4).map(|(m, n)| (m.pos, n)).collect();
        assert_eq!(segs, [(9, 1), (0, 3)]);
        let segs: Vec<_> = pushed.segments(2, 1).map(|(m, n)| (m.pos, n)).collect();
        assert_eq!(segs, [(1, 1)]);
        assert_eq!(pushed.segments(4, 3).count(), 0);
        assert_eq!(
            pushed.iter_from(1).map(|m| m.pos).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let mut q2 = Queue::default();
        q2.push_back(meta(5, 0, 0, at), ());
        q2.push_back(meta(5, 1, 1, at), ());
        assert_eq!(
            q2.drain_metas().iter().map(|m| m.pos).collect::<Vec<_>>(),
            [0, 1]
        );
        assert!(q2.is_empty());
    }
}
