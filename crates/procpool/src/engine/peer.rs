//! One worker's side of the conversation as the coordinator sees it, whatever carries the
//! bytes (a socket, MPI messages): frames in, events out, refusals and protocol errors
//! turned into `Failed` events naming the worker.

use super::WorkerKey;
use crate::error::JobError;
use crate::policy::{Event, Finished};
use crate::task::Task;
use crate::wire::codec;
use crate::wire::frame::FrameReader;
use crate::wire::msg::{JobResult, Outcome, PROTOCOL_VERSION, Up};

/// Frames from one worker, and where its conversation stands.
pub(crate) struct Peer {
    pub key: WorkerKey,
    pub pid: u32,
    /// How messages name it ("worker pid 123", "rank 2 (pid 123)").
    pub name: String,
    pub reader: FrameReader,
    pub greeted: bool,
    /// Refused or broke the protocol: its input is ignored from now on.
    pub failed: bool,
}

impl Peer {
    pub(crate) fn new(key: WorkerKey, pid: u32, name: String, max_frame: u32) -> Peer {
        Peer {
            key,
            pid,
            name,
            reader: FrameReader::new(max_frame),
            greeted: false,
            failed: false,
        }
    }

    /// Marks it failed (once) and reports why; the pool then stops it. `deterministic`:
    /// every worker would do the same (it refused, or speaks another protocol).
    pub(crate) fn fail<O>(&mut self, events: &mut Vec<Event<O>>, reason: String) {
        self.fail_as(events, reason, false);
    }

    fn fail_as<O>(&mut self, events: &mut Vec<Event<O>>, reason: String, deterministic: bool) {
        if !self.failed {
            self.failed = true;
            events.push(Event::Failed {
                worker: self.key,
                reason,
                deterministic,
            });
        }
    }

    /// At the end of its input: a frame cut short is a protocol error.
    pub(crate) fn finish<O>(&mut self, events: &mut Vec<Event<O>>) {
        if let Err(e) = self.reader.finish() {
            let reason = format!("{} broke off a frame: {e}", self.name);
            self.fail(events, reason);
        }
    }

    /// The event for a chunk's results as decoded, or `None` when they did not decode
    /// (then the worker is failed, naming `what` it sent).
    fn results<O>(
        &mut self,
        events: &mut Vec<Event<O>>,
        chunk: u64,
        first: u32,
        decoded: Result<Vec<Finished<O>>, codec::CodecError>,
        what: &str,
    ) -> Option<Event<O>> {
        match decoded {
            Ok(results) => Some(Event::Done {
                worker: self.key,
                chunk,
                first,
                results,
            }),
            Err(e) => {
                let reason = format!("{} sent undecodable {what}: {e}", self.name);
                self.fail(events, reason);
                None
            }
        }
    }

    /// Turns every whole frame received so far into events.
    pub(crate) fn decode<T: Task>(&mut self, events: &mut Vec<Event<T::Output>>) {
        while !self.failed {
            let frame = match self.reader.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    let reason = format!("{} sent a bad frame: {e}", self.name);
                    self.fail(events, reason);
                    return;
                }
            };
            let msg = match codec::decode_borrowed::<Up<'_>>(frame) {
                Ok(msg) => msg,
                Err(e) => {
                    let reason = if self.greeted {
                        format!("{} sent an undecodable message: {e}", self.name)
                    } else {
                        format!(
                            "{} sent an undecodable greeting (a binary of another protocol \
                             version?): {e}",
                            self.name
                        )
                    };
                    self.fail(events, reason);
                    return;
                }
            };
            let event = match msg {
                Up::Hello { protocol, pid } if !self.greeted => {
                    if protocol != PROTOCOL_VERSION {
                        let reason = format!(
                            "worker pid {pid} speaks protocol version {protocol}, this \
                             coordinator speaks {PROTOCOL_VERSION}; refusing it"
                        );
                        self.fail_as(events, reason, true);
                        return;
                    }
                    self.greeted = true;
                    self.pid = pid;
                    Event::Hello {
                        worker: self.key,
                        pid,
                    }
                }
                Up::Refused { reason } => {
                    let reason = format!("{} refused: {reason}", self.name);
                    self.fail_as(events, reason, true);
                    return;
                }
                _ if !self.greeted => {
                    let reason = format!("{} did not greet first", self.name);
                    self.fail(events, reason);
                    return;
                }
                Up::Hello { .. } => {
                    let reason = format!("{} greeted twice", self.name);
                    self.fail(events, reason);
                    return;
                }
                Up::Ready => Event::Ready { worker: self.key },
                Up::Done {
                    chunk,
                    first,
                    count,
                    results,
                } => {
                    let decoded = decode_results::<T>(results, count);
                    match self.results(events, chunk, first, decoded, "results") {
                        Some(event) => event,
                        None => return,
                    }
                }
                Up::Outputs {
                    chunk,
                    first,
                    count,
                    results,
                } => {
                    let decoded = decode_outputs::<T>(results, count);
                    match self.results(events, chunk, first, decoded, "outputs") {
                        Some(event) => event,
                        None => return,
                    }
                }
            };
            events.push(event);
        }
    }
}

/// A job's encoded output decoded; one that does not decode is a codec error of its job's
/// own.
fn decode_output<T: Task>(bytes: &[u8]) -> Result<T::Output, Box<JobError>> {
    codec::decode::<T::Output>(bytes).map_err(|e| {
        Box::new(JobError::Codec {
            message: format!("output: {e}"),
        })
    })
}

/// Decodes the `count` results of an `Outputs` message (jobs that succeeded).
fn decode_outputs<T: Task>(
    bytes: &[u8],
    count: u32,
) -> Result<Vec<Finished<T::Output>>, codec::CodecError> {
    // Never trust the count for an allocation: each result takes at least 2 bytes.
    let mut out = Vec::with_capacity((count as usize).min(bytes.len() / 2 + 1));
    let mut rest = bytes;
    for i in 0..count {
        let Some((compute_ns, output, tail)) = codec::split_ok_output(rest) else {
            return Err(codec::CodecError(format!(
                "output {i} of {count} is cut short or malformed"
            )));
        };
        rest = tail;
        out.push(Finished {
            compute_ns,
            phases: None,
            outcome: decode_output::<T>(output),
        });
    }
    if rest.is_empty() {
        Ok(out)
    } else {
        Err(codec::CodecError(format!(
            "{} bytes after {count} outputs",
            rest.len()
        )))
    }
}

/// Decodes the `count` back-to-back `JobResult`s of a `Done` message (failures, and results
/// with phases: successes without them come as `Outputs`).
fn decode_results<T: Task>(
    mut bytes: &[u8],
    count: u32,
) -> Result<Vec<Finished<T::Output>>, codec::CodecError> {
    // Never trust the count for an allocation: each result takes at least 13 bytes.
    let mut out = Vec::with_capacity((count as usize).min(bytes.len() / 13 + 1));
    for _ in 0..count {
        let (r, used) = codec::decode_prefix::<JobResult<'_>>(bytes)?;
        bytes = &bytes[used..];
        out.push(Finished {
            compute_ns: r.compute_ns,
            phases: r.phases.map(Box::new),
            outcome: match r.outcome {
                Outcome::Ok(b) => decode_output::<T>(b),
                Outcome::Err(e) => Err(Box::new(e)),
            },
        });
    }
    if bytes.is_empty() {
        Ok(out)
    } else {
        Err(codec::CodecError(format!(
            "{} bytes after {count} results",
            bytes.len()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Double(u64);
    impl Task for Double {
        const NAME: &'static str = "double";
        type Context = ();
        type Output = u64;
        fn run(self, _: &()) -> u64 {
            self.0 * 2
        }
    }

    /// A greeted peer fed `messages`, and the events they made.
    fn feed(messages: &[Up<'_>]) -> (Peer, Vec<Event<u64>>) {
        let mut peer = Peer::new(3, 0, "worker pid 42".into(), frame::DEFAULT_MAX_FRAME);
        let mut bytes = Vec::new();
        let hello = Up::Hello {
            protocol: PROTOCOL_VERSION,
            pid: 42,
        };
        for m in std::iter::once(&hello).chain(messages) {
            frame::write_frame(&mut bytes, m, frame::DEFAULT_MAX_FRAME).unwrap();
        }
        peer.reader.push(&bytes);
        let mut events = Vec::new();
        peer.decode::<Double>(&mut events);
        (peer, events)
    }

    fn outputs(values: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (ns, v) in values {
            codec::encode_ok_output(&mut out, *ns, v);
        }
        out
    }

    #[test]
    fn outputs_become_results_and_a_bad_one_fails_only_its_job() {
        let seven = codec::encode(&7u64).unwrap();
        let results = outputs(&[(5, &seven), (0, &[1, 2]), (300, &seven)]);
        let (peer, events) = feed(&[Up::Outputs {
            chunk: 9,
            first: 4,
            count: 3,
            results: &results,
        }]);
        assert!(!peer.failed);
        let Some(Event::Done {
            chunk: 9,
            first: 4,
            results,
            ..
        }) = events.last()
        else {
            panic!("no results");
        };
        let got: Vec<_> = results
            .iter()
            .map(|r| (r.compute_ns, r.outcome.as_ref().ok().copied()))
            .collect();
        assert_eq!(got, [(5, Some(7)), (0, None), (300, Some(7))]);
        assert!(matches!(
            results[1].outcome.as_ref().map_err(|e| &**e),
            Err(JobError::Codec { message }) if message.starts_with("output: ")
        ));
    }

    #[test]
    fn done_carries_failures_and_phased_results() {
        use crate::wire::msg::Phases;
        let seven = codec::encode(&7u64).unwrap();
        let mut results = Vec::new();
        let phases = Phases {
            begun: 1,
            decoded: 2,
            computed: 3,
            encoded: 4,
        };
        for r in [
            JobResult {
                compute_ns: 9,
                outcome: Outcome::Ok(&seven),
                phases: Some(phases),
            },
            JobResult {
                compute_ns: 0,
                outcome: Outcome::Err(JobError::Codec {
                    message: "input: bad".into(),
                }),
                phases: None,
            },
        ] {
            codec::encode_into(&r, &mut results).unwrap();
        }
        let (peer, events) = feed(&[Up::Done {
            chunk: 2,
            first: 0,
            count: 2,
            results: &results,
        }]);
        assert!(!peer.failed);
        let Some(Event::Done { results: got, .. }) = events.last() else {
            panic!("no results");
        };
        assert_eq!(got[0].outcome.as_ref().ok(), Some(&7));
        assert_eq!(got[0].phases.as_deref(), Some(&phases));
        assert!(got[1].outcome.is_err());
        // One result claimed more than sent: the worker is failed by name.
        let (peer, events) = feed(&[Up::Done {
            chunk: 2,
            first: 0,
            count: 3,
            results: &results,
        }]);
        assert!(peer.failed);
        assert!(matches!(events.last(), Some(Event::Failed { reason, .. })
            if reason.starts_with("worker pid 42 sent undecodable results")));
    }

    #[test]
    fn damaged_outputs_fail_the_worker_by_name() {
        let seven = codec::encode(&7u64).unwrap();
        let good = outputs(&[(5, &seven), (6, &seven)]);
        for (count, results) in [
            (3, &good[..]),
            (1, &good[..]),
            (2, &good[..good.len() - 1]),
            (1, &[0, 200][..]),
        ] {
            let (peer, events) = feed(&[Up::Outputs {
                chunk: 1,
                first: 0,
                count,
                results,
            }]);
            assert!(peer.failed);
            assert!(
                matches!(events.last(), Some(Event::Failed { reason, .. })
                    if reason.starts_with("worker pid 42 sent undecodable outputs")),
                "{count} {results:?}"
            );
        }
    }
}
