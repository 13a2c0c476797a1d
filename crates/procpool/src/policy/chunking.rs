//! How many jobs go in one chunk, and how many a worker may hold at once.
//!
//! Automatic chunking: the first jobs go out one at a time to idle workers, so each round
//! trip is measured alone, which gives the per-chunk overhead (round trip minus compute).
//! From then on a chunk is sized so that overhead is at most 5% of the chunk's compute at
//! the *running average* job cost (a pool that moves from 1 µs jobs to 10 ms jobs re-sizes
//! its chunks), and at most a quarter of each worker's share of the current input when
//! its length is known, so the last jobs still spread over every worker.
//!
//! In flight per worker: two chunks, or about [`QUEUE_TARGET`] of measured work, whichever
//! is more (capped): enough that a worker never waits for the coordinator, few enough that
//! the tail of a run spreads over all workers.

use super::stats::{Chunk, ChunkChoice};
use std::time::Duration;

/// Most jobs one worker holds at once (unless a fixed chunk is larger).
pub(crate) const MAX_IN_FLIGHT: usize = 1024;
/// Largest automatic chunk.
pub(crate) const MAX_CHUNK: usize = 4096;
/// Work to keep queued at each worker.
const QUEUE_TARGET: Duration = Duration::from_micros(500);
/// Coordinator-side cost assumed per job on top of its compute, for the queue target.
const PER_JOB_OVERHEAD_NS: u64 = 1_000;
/// Round trips measured before an automatic chunksize is chosen.
pub(crate) const PROBE_JOBS: usize = 8;
/// The smallest per-chunk overhead assumed, whatever was measured.
const MIN_OVERHEAD_NS: u64 = 2_000;

/// Chunk sizing state.
#[derive(Debug, Clone)]
pub(crate) struct Sizer {
    mode: Mode,
    /// Running average of job compute time (ns), once any job finished.
    ewma_ns: Option<u64>,
    /// Length of the current input, when known.
    size_hint: Option<usize>,
    workers: usize,
}

#[derive(Debug, Clone)]
enum Mode {
    Fixed(usize),
    Auto {
        /// (compute, round trip minus compute) of probe jobs, in ns.
        samples: Vec<(u64, u64)>,
        /// Median per-chunk overhead, once measured.
        overhead: Option<u64>,
    },
}

/// An automatic chunk size and what it came from.
struct AutoChunk {
    size: usize,
    job_ns: u64,
    overhead_ns: u64,
    by_cost: usize,
    share: Option<(usize, usize)>,
}

impl Sizer {
    /// Sizing for `workers` workers; `one_at_a_time` pools (inline) use chunks of one.
    pub(crate) fn new(chunk: Chunk, workers: usize, one_at_a_time: bool) -> Sizer {
        let mode = match chunk {
            Chunk::Fixed(n) => Mode::Fixed(n.max(1)),
            Chunk::Auto if one_at_a_time => Mode::Fixed(1),
            Chunk::Auto => Mode::Auto {
                samples: Vec::new(),
                overhead: None,
            },
        };
        Sizer {
            mode,
            ewma_ns: None,
            size_hint: None,
            workers: workers.max(1),
        }
    }

    /// The current input has `len` jobs.
    pub(crate) fn hint_len(&mut self, len: usize) {
        self.size_hint = Some(len);
    }

    /// Whether automatic sizing is still measuring (jobs then go out one at a time).
    pub(crate) fn probing(&self) -> bool {
        matches!(self.mode, Mode::Auto { overhead: None, .. })
    }

    /// Jobs per chunk now.
    pub(crate) fn size(&self) -> usize {
        match &self.mode {
            Mode::Fixed(n) => *n,
            Mode::Auto { .. } => self.auto().map_or(1, |a| a.size),
        }
    }

    /// Most unfinished jobs one worker may hold now.
    pub(crate) fn cap(&self) -> usize {
        if self.probing() {
            return 1;
        }
        let chunk = self.size();
        let by_time = self.ewma_ns.map_or(0, |ns| {
            (QUEUE_TARGET.as_nanos() as u64 / (ns + PER_JOB_OVERHEAD_NS)) as usize
        });
        chunk
            .saturating_mul(2)
            .max(by_time)
            .min(MAX_IN_FLIGHT.max(chunk.saturating_mul(2)))
    }

    /// A job ran for `compute_ns`.
    pub(crate) fn record_compute(&mut self, compute_ns: u64) {
        self.ewma_ns = Some(match self.ewma_ns {
            None => compute_ns,
            Some(old) => old - old / 8 + compute_ns / 8,
        });
    }

    /// A chunk of one job sent to an idle worker came back after `rtt`, of which the job
    /// computed `compute`. Returns the choice when this measurement completed the probe.
    pub(crate) fn observe_round_trip(
        &mut self,
        rtt: Duration,
        compute: Duration,
    ) -> Option<ChunkChoice> {
        let Mode::Auto { samples, overhead } = &mut self.mode else {
            return None;
        };
        if overhead.is_some() {
            return None;
        }
        let compute_ns = compute.as_nanos() as u64;
        samples.push((
            compute_ns,
            (rtt.as_nanos() as u64).saturating_sub(compute_ns),
        ));
        if samples.len() < PROBE_JOBS {
            return None;
        }
        *overhead = Some(median(samples.iter().map(|s| s.1)).max(MIN_OVERHEAD_NS));
        self.choice()
    }

    fn auto(&self) -> Option<AutoChunk> {
        let Mode::Auto {
            overhead: Some(overhead_ns),
            ..
        } = &self.mode
        else {
            return None;
        };
        let job_ns = self.ewma_ns.unwrap_or(0).max(100);
        let by_cost = (20 * overhead_ns).div_ceil(job_ns) as usize;
        let mut size = by_cost.clamp(1, MAX_CHUNK);
        let mut share = None;
        if let Some(len) = self.size_hint {
            let s = len.div_ceil(4 * self.workers).max(1);
            if s < size {
                size = s;
                share = Some((s, len));
            }
        }
        Some(AutoChunk {
            size,
            job_ns,
            overhead_ns: *overhead_ns,
            by_cost,
            share,
        })
    }

    /// The automatic chunk size now, with its reasoning (None before it is measured).
    pub(crate) fn choice(&self) -> Option<ChunkChoice> {
        let a = self.auto()?;
        let mut reason = format!(
            "round-trip overhead {:?} (median of {PROBE_JOBS} probe jobs), average job {:?}: \
             {} jobs per chunk keep overhead under 5% of compute",
            Duration::from_nanos(a.overhead_ns),
            Duration::from_nanos(a.job_ns),
            a.by_cost
        );
        if a.by_cost > MAX_CHUNK {
            reason.push_str(&format!(", capped at {MAX_CHUNK}"));
        }
        if let Some((s, len)) = a.share {
            reason.push_str(&format!(
                ", limited to {s} so {len} jobs still spread over {} workers",
                self.workers
            ));
        }
        Some(ChunkChoice {
            chunksize: a.size,
            job: Duration::from_nanos(a.job_ns),
            overhead: Duration::from_nanos(a.overhead_ns),
            reason,
        })
    }
}

fn median(values: impl Iterator<Item = u64>) -> u64 {
    let mut v: Vec<u64> = values.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(job: Duration, overhead: Duration) -> Sizer {
        let mut s = Sizer::new(Chunk::Auto, 2, false);
        assert!(s.probing());
        assert_eq!((s.size(), s.cap()), (1, 1), "probes go out one at a time");
        for _ in 0..PROBE_JOBS {
            s.record_compute(job.as_nanos() as u64);
            s.observe_round_trip(job + overhead, job);
        }
        assert!(!s.probing());
        s
    }

    #[test]
    fn overhead_stays_under_five_percent_of_a_chunk() {
        // 50 µs of overhead, 10 µs jobs: 20 * 50 / 10 = 100 jobs per chunk.
        let s = probed(Duration::from_micros(10), Duration::from_micros(50));
        assert_eq!(s.size(), 100);
        assert!(s.cap() >= 200, "two chunks in flight");
        let c = s.choice().unwrap();
        assert!(c.reason.contains("100 jobs per chunk"), "{}", c.reason);
    }

    #[test]
    fn tiny_jobs_are_capped_and_short_inputs_spread() {
        let mut s = probed(Duration::from_nanos(10), Duration::from_micros(100));
        assert_eq!(s.size(), MAX_CHUNK);
        s.hint_len(1000);
        // 1000 jobs over 2 workers: at most a quarter of each share.
        assert_eq!(s.size(), 125);
        assert!(s.choice().unwrap().reason.contains("spread over 2 workers"));
    }

    #[test]
    fn chunks_follow_the_running_job_cost() {
        let mut s = probed(Duration::from_micros(1), Duration::from_micros(20));
        let small = s.size();
        for _ in 0..100 {
            s.record_compute(1_000_000);
        }
        assert!(s.size() < small, "{} jobs per chunk of 1 ms jobs", s.size());
        assert_eq!(s.size(), 1);
    }

    #[test]
    fn a_huge_fixed_chunk_saturates_instead_of_wrapping() {
        let mut s = Sizer::new(Chunk::Fixed(usize::MAX / 2 + 1), 2, false);
        s.record_compute(1);
        assert_eq!(s.cap(), usize::MAX);
        assert_eq!(s.size(), usize::MAX / 2 + 1);
    }

    #[test]
    fn fixed_and_inline_sizes() {
        assert_eq!(Sizer::new(Chunk::Fixed(7), 3, false).size(), 7);
        assert_eq!(
            Sizer::new(Chunk::Fixed(7), 3, false).cap(),
            14,
            "two chunks"
        );
        let inline = Sizer::new(Chunk::Auto, 1, true);
        assert_eq!(inline.size(), 1);
        assert!(!inline.probing());
    }
}
