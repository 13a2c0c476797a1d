//! Faults a worker injects on purpose, so tests can check the coordinator's handling of
//! hostile or broken peers through a real worker process. Set with the environment
//! variable `PROCPOOL_FAULT` (see [`Fault::parse`]); never set in normal use. Jobs are
//! named by their submission number in the pool (0 for the first job submitted), which the
//! coordinator sends along only while fault injection is on.

use super::Output;
use std::io;
use std::time::Duration;

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Abort the process when asked to run job `n`.
    AbortOn(u64),
    /// Exit with code 7 when asked to run job `n`.
    ExitOn(u64),
    /// Sleep forever when asked to run job `n`.
    HangOn(u64),
    /// After `n` results, send an undecodable frame, then stop talking.
    GarbageAfter(u64),
    /// After `n` results, send a frame header over any limit, then stop talking.
    OversizeAfter(u64),
    /// After `n` results, send half a frame and exit.
    TruncateAfter(u64),
    /// Greet with this protocol version.
    Version(u32),
    /// Sleep forever before greeting (a worker frozen during start-up).
    HangStart,
}

impl Fault {
    /// Parses `[worker=K:]KIND=N` (KIND: abort-on, exit-on, hang-on, garbage-after,
    /// oversize-after, truncate-after, version, hang-start; N is ignored for hang-start);
    /// `None` when the spec names another worker.
    pub(crate) fn parse(spec: &str, worker: Option<u32>) -> Result<Option<Fault>, String> {
        let (target, rest) = match spec.strip_prefix("worker=") {
            Some(r) => {
                let (k, rest) = r
                    .split_once(':')
                    .ok_or_else(|| format!("bad fault spec {spec:?}"))?;
                let k = k
                    .parse::<u32>()
                    .map_err(|_| format!("bad worker in fault spec {spec:?}"))?;
                (Some(k), rest)
            }
            None => (None, spec),
        };
        if target.is_some() && target != worker {
            return Ok(None);
        }
        let (kind, n) = rest
            .split_once('=')
            .ok_or_else(|| format!("bad fault spec {spec:?}"))?;
        let n: u64 = n
            .parse()
            .map_err(|_| format!("bad number in fault spec {spec:?}"))?;
        Ok(Some(match kind {
            "abort-on" => Fault::AbortOn(n),
            "exit-on" => Fault::ExitOn(n),
            "hang-on" => Fault::HangOn(n),
            "garbage-after" => Fault::GarbageAfter(n),
            "oversize-after" => Fault::OversizeAfter(n),
            "truncate-after" => Fault::TruncateAfter(n),
            "hang-start" => Fault::HangStart,
            "version" => {
                Fault::Version(u32::try_from(n).map_err(|_| format!("bad version in {spec:?}"))?)
            }
            _ => return Err(format!("unknown fault {kind:?} in {spec:?}")),
        }))
    }

    /// Before greeting the coordinator.
    pub(crate) fn before_hello(self) {
        if self == Fault::HangStart {
            eprintln!("fault injection: hanging before the greeting");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
    }

    /// Before running the job with submission number `n`.
    pub(crate) fn before_job(self, n: u64) {
        match self {
            Fault::AbortOn(x) if x == n => {
                eprintln!("fault injection: aborting on job {n}");
                std::process::abort();
            }
            Fault::ExitOn(x) if x == n => {
                eprintln!("fault injection: exiting on job {n}");
                std::process::exit(7);
            }
            Fault::HangOn(x) if x == n => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            _ => {}
        }
    }

    /// After the `n`th result was queued.
    pub(crate) fn after_result(self, n: u64, output: &mut dyn Output) -> io::Result<()> {
        let bytes: &[u8] = match self {
            Fault::GarbageAfter(x) if x == n => {
                &[8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
            }
            Fault::OversizeAfter(x) if x == n => &[0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4],
            Fault::TruncateAfter(x) if x == n => &[100, 0, 0, 0, 1, 2, 3],
            _ => return Ok(()),
        };
        output.flush()?;
        output.frame(bytes)?;
        output.flush()?;
        if let Fault::TruncateAfter(_) = self {
            std::process::exit(0);
        }
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs_for_this_worker_or_all() {
        assert_eq!(
            Fault::parse("abort-on=5", None),
            Ok(Some(Fault::AbortOn(5)))
        );
        assert_eq!(
            Fault::parse("worker=1:hang-on=3", Some(1)),
            Ok(Some(Fault::HangOn(3)))
        );
        assert_eq!(Fault::parse("worker=1:hang-on=3", Some(2)), Ok(None));
        assert!(Fault::parse("explode=1", None).is_err());
        assert!(Fault::parse("abort-on=x", None).is_err());
    }
}
