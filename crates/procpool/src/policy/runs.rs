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

/// Jobs waiting to be sent, in order: their metas as runs, their payloads in blocks.
///
/// A run pushed at once is stored as blocks of the chunk size it was pushed with, so a
/// chunk is usually one whole block, taken without touching its payloads (a `map` used to
/// move each payload into the queue one by one, then out of it into its chunk one by one).
/// A take that does not end on a block's end drains the jobs it needs from the block.
#[derive(Debug)]
pub(super) struct Queue<P> {
    runs: VecDeque<Run>,
    blocks: VecDeque<VecDeque<P>>,
    len: usize,
}

impl<P> Default for Queue<P> {
    fn default() -> Self {
        Queue {
            runs: VecDeque::new(),
            blocks: VecDeque::new(),
            len: 0,
        }
    }
}

impl<P> Queue<P> {
    /// Number of jobs.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Whether no job waits.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a job last.
    pub(super) fn push_back(&mut self, meta: Meta, payload: P) {
        if let Some(run) = push_meta(self.runs.back_mut(), meta) {
            self.runs.push_back(run);
        }
        match self.blocks.back_mut() {
            Some(block) => block.push_back(payload),
            None => self.blocks.push_back(VecDeque::from([payload])),
        }
        self.len += 1;
    }

    /// Queues jobs `first`, `first + 1`, ... (positions and submission numbers counting up)
    /// from `payloads` as one run, in blocks of `block` jobs, until the iterator ends or
    /// gives an error. Returns how many it queued, and the error that stopped it (the
    /// iterator resumes after it).
    pub(super) fn push_run<E>(
        &mut self,
        first: Meta,
        payloads: &mut impl Iterator<Item = Result<P, E>>,
        block: usize,
    ) -> (usize, Option<E>) {
        let block = block.max(1);
        let mut len = 0;
        let mut error = None;
        loop {
            let mut v = Vec::with_capacity(block.min(payloads.size_hint().0.max(1)));
            while v.len() < block {
                match payloads.next() {
                    Some(Ok(p)) => v.push(p),
                    Some(Err(e)) => {
                        error = Some(e);
                        break;
                    }
                    None => break,
                }
            }
            let n = v.len();
            len += n;
            if n > 0 {
                self.blocks.push_back(VecDeque::from(v));
            }
            if n < block || error.is_some() {
                break;
            }
        }
        self.len += len;
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
        self.blocks.push_front(VecDeque::from([payload]));
        self.len += 1;
    }

    /// Takes the first job.
    pub(super) fn pop_front(&mut self) -> Option<(Meta, P)> {
        let block = self.blocks.front_mut()?;
        let payload = block.pop_front()?;
        if block.is_empty() {
            self.blocks.pop_front();
        }
        self.len -= 1;
        let run = self.runs.pop_front()?;
        if run.len > 1 {
            self.runs.push_front(run.skip(1));
        }
        Some((run.first, payload))
    }

    /// Takes the first `n` jobs (all of them if fewer wait).
    pub(super) fn take_front(&mut self, n: usize) -> (Metas, Vec<P>) {
        let n = n.min(self.len());
        let mut payloads: Vec<P> = Vec::new();
        let mut left = n;
        while left > 0 {
            let Some(front) = self.blocks.front_mut() else {
                break;
            };
            if front.len() > left {
                payloads.extend(front.drain(..left));
                left = 0;
            } else if let Some(block) = self.blocks.pop_front() {
                left -= block.len();
                if payloads.is_empty() {
                    // A whole block: no payload moves (unless it was drained from the
                    // front before, when this is one `memmove`).
                    payloads = Vec::from(block);
                } else {
                    payloads.extend(block);
                }
            }
        }
        self.len -= n - left;
        let n = n - left;
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
        self.blocks.clear();
        self.len = 0;
        self.runs
            .drain(..)
            .flat_map(|r| (0..r.len).map(move |k| r.meta(k)))
            .collect()
    }

    /// Keeps only the jobs whose request `keep` accepts (payloads stay with their jobs).
    pub(super) fn retain(&mut self, keep: impl Fn(u64) -> bool) {
        let runs = std::mem::take(&mut self.runs);
        let mut payloads = std::mem::take(&mut self.blocks).into_iter().flatten();
        self.len = 0;
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

    /// What identifies a job's meta: request, position, submission number, crashes, starts.
    type Key = (u64, u64, u64, u32, u32);

    fn key(m: &Meta) -> Key {
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
        let (n, e) = q.push_run(meta(1, 10, 20, at), &mut input, 1);
        assert_eq!((n, e), (2, Some("bad")));
        // It resumes after the error; the next run continues the first only if told so.
        let (n, e) = q.push_run(meta(1, 13, 23, at), &mut input, 8);
        assert_eq!((n, e), (1, None));
        assert_eq!(q.runs.len(), 2);
        let (n, _) = q.push_run(
            meta(1, 14, 24, at),
            &mut vec![Ok::<_, ()>('d')].into_iter(),
            8,
        );
        assert_eq!((n, q.runs.len()), (1, 2));
        let all: Vec<_> = q.metas().map(|m| (m.pos, m.seq)).collect();
        assert_eq!(all, [(10, 20), (11, 21), (13, 23), (14, 24)]);
        assert_eq!(q.take_front(4).1, ['a', 'b', 'c', 'd']);
        // Nothing to queue: no run.
        assert_eq!(
            q.push_run(
                meta(1, 0, 0, at),
                &mut std::iter::empty::<Result<char, ()>>(),
                8
            ),
            (0, None)
        );
        assert!(q.runs.is_empty());
    }

    /// One operation on a queue, for the model test.
    #[derive(Debug, Clone)]
    enum Op {
        Run { len: usize, block: usize },
        Back,
        Front,
        Pop,
        Take(usize),
        Cancel(u64),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            (0usize..40, 1usize..12).prop_map(|(len, block)| Op::Run { len, block }),
            Just(Op::Back),
            Just(Op::Front),
            Just(Op::Pop),
            (0usize..30).prop_map(Op::Take),
            (0u64..4).prop_map(Op::Cancel),
        ]
    }

    proptest::proptest! {
        /// Whatever the blocks, the queue hands out exactly what a plain list of
        /// (meta, payload) would, in the same order.
        #[test]
        fn blocks_behave_like_a_plain_list(ops in proptest::collection::vec(op(), 0..40)) {
            let at = Instant::now();
            let mut q = Queue::default();
            let mut model: VecDeque<(Key, u64)> = VecDeque::new();
            let (mut pos, mut seq) = (0u64, 0u64);
            for (i, op) in ops.into_iter().enumerate() {
                let req = i as u64 % 4;
                match op {
                    Op::Run { len, block } => {
                        let first = meta(req, pos, seq, at);
                        let mut it = (0..len as u64).map(|k| Ok::<_, ()>(1000 * seq + k));
                        let (n, e) = q.push_run(first, &mut it, block);
                        proptest::prop_assert_eq!((n, e), (len, None));
                        for k in 0..len as u64 {
                            model.push_back(((req, pos + k, seq + k, 0, 0), 1000 * seq + k));
                        }
                        pos += len as u64;
                        seq += len as u64;
                    }
                    Op::Back | Op::Front => {
                        let m = meta(req, pos, seq, at);
                        let item = (key(&m), 7 * seq);
                        if matches!(op, Op::Back) {
                            q.push_back(m, 7 * seq);
                            model.push_back(item);
                        } else {
                            q.push_front(m, 7 * seq);
                            model.push_front(item);
                        }
                        pos += 1;
                        seq += 1;
                    }
                    Op::Pop => {
                        let got = q.pop_front().map(|(m, p)| (key(&m), p));
                        proptest::prop_assert_eq!(got, model.pop_front());
                    }
                    Op::Take(n) => {
                        let (metas, payloads) = q.take_front(n);
                        let want: Vec<_> = model.drain(..n.min(model.len())).collect();
                        let got: Vec<_> = metas.iter().map(|m| key(&m)).zip(payloads).collect();
                        proptest::prop_assert_eq!(metas.len(), want.len());
                        proptest::prop_assert_eq!(got, want);
                    }
                    Op::Cancel(r) => {
                        q.retain(|x| x != r);
                        model.retain(|(k, _)| k.0 != r);
                    }
                }
                proptest::prop_assert_eq!(q.len(), model.len());
                proptest::prop_assert_eq!(q.is_empty(), model.is_empty());
                let metas: Vec<_> = q.metas().map(|m| key(&m)).collect();
                let want: Vec<_> = model.iter().map(|(k, _)| *k).collect();
                proptest::prop_assert_eq!(metas, want);
            }
        }
    }

    #[test]
    fn a_whole_block_leaves_as_it_came() {
        let at = Instant::now();
        let mut q = Queue::default();
        let mut input = (0..10u32).map(Ok::<_, ()>);
        assert_eq!(q.push_run(meta(1, 0, 0, at), &mut input, 4), (10, None));
        assert_eq!(
            q.blocks.iter().map(VecDeque::len).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        // A chunk of the block size is the front block itself.
        let ptr = q.blocks[0].as_slices().0.as_ptr();
        let (_, chunk) = q.take_front(4);
        assert_eq!((chunk.as_slice(), chunk.as_ptr()), (&[0, 1, 2, 3][..], ptr));
        // Smaller and larger takes drain and join blocks.
        assert_eq!(q.take_front(1).1, [4]);
        assert_eq!(q.take_front(4).1, [5, 6, 7, 8]);
        assert_eq!(q.blocks.len(), 1);
        assert_eq!(q.take_front(4).1, [9]);
        assert!(q.is_empty() && q.blocks.is_empty());
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
