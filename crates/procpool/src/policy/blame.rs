//! Who is charged when a worker dies holding unfinished jobs.
//!
//! Blame is exact. A worker runs its jobs in order and reports each result, so the jobs it
//! held when it died are its running job followed by jobs it had not started — except that
//! results it had already computed may still have been in its output buffer. So:
//! - holding one job, it was running that job: the job is charged with the crash (re-run,
//!   or failed once it has killed `retries + 1` workers);
//! - holding several, which one was running is unknowable: none is charged, and all become
//!   *suspects*, each re-run alone on an otherwise idle worker, where a crash does identify
//!   its job. This costs nothing while nothing crashes (no per-job acknowledgement), and a
//!   job that kills its worker cannot take innocent neighbours down with it;
//! - killed by the pool because its running job overran the job timeout: that job fails
//!   with `TimedOut`, and the others go back to the queue uncharged.
//!
//! A job is charged for a crash only when its worker held nothing else, so `attempts` in
//! the eventual error counts real crashes of that job, however many storms passed by.

/// What happens to each job a dead worker held, in the order it held them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Charged with the crash: re-run alone (a suspect) with this many crashes so far.
    Charged { crashes: u32 },
    /// Charged one crash too many: fails with this many crashes.
    Failed { crashes: u32 },
    /// Timed out: fails with `TimedOut`.
    TimedOut,
    /// Not charged, but possibly the culprit: re-run alone.
    Suspect,
    /// Not charged and certainly not running: back to the front of the queue.
    Requeue,
}

/// The verdict for each of `held` (the crash counts of the unfinished jobs, running job
/// first) when their worker died; `timed_out` says the pool killed it for its running job.
pub(crate) fn judge(held: &[u32], timed_out: bool, retries: u32) -> Vec<Verdict> {
    match held {
        [] => Vec::new(),
        [_, rest @ ..] if timed_out => std::iter::once(Verdict::TimedOut)
            .chain(rest.iter().map(|_| Verdict::Requeue))
            .collect(),
        [crashes] => {
            let crashes = crashes.saturating_add(1);
            vec![if crashes > retries {
                Verdict::Failed { crashes }
            } else {
                Verdict::Charged { crashes }
            }]
        }
        several => several.iter().map(|_| Verdict::Suspect).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_job_held_is_charged_until_it_fails() {
        assert_eq!(judge(&[0], false, 2), [Verdict::Charged { crashes: 1 }]);
        assert_eq!(judge(&[2], false, 2), [Verdict::Failed { crashes: 3 }]);
        assert_eq!(judge(&[0], false, 0), [Verdict::Failed { crashes: 1 }]);
    }

    #[test]
    fn several_held_are_suspects_and_nobody_is_charged() {
        assert_eq!(judge(&[0, 2, 1], false, 2), vec![Verdict::Suspect; 3]);
    }

    #[test]
    fn a_timeout_fails_the_running_job_only() {
        assert_eq!(
            judge(&[0, 0, 1], true, 2),
            [Verdict::TimedOut, Verdict::Requeue, Verdict::Requeue]
        );
        assert_eq!(judge(&[], true, 2), []);
    }
}
