//! One worker's side of the conversation as the coordinator sees it, whatever carries the
//! bytes (a socket, MPI messages): frames in, events out, refusals and protocol errors
//! turned into `Failed` events naming the worker.

use super::WorkerKey;
use crate::error::JobError;
use crate::policy::{Event, Finished};
use crate::task::Task;
use crate::wire::codec;
use crate::wire::frame::FrameReader;
use crate::wire::msg::{Outcome, PROTOCOL_VERSION, Up};

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
                } => match decode_results::<T>(results, count) {
                    Ok(results) => Event::Done {
                        worker: self.key,
                        chunk,
                        first,
                        results,
                    },
                    Err(e) => {
                        let reason = format!("{} sent undecodable results: {e}", self.name);
                        self.fail(events, reason);
                        return;
                    }
                },
            };
            events.push(event);
        }
    }
}

/// Decodes `count` back-to-back job results; a job whose output does not decode gets a
/// codec error of its own.
fn decode_results<T: Task>(
    mut bytes: &[u8],
    count: u32,
) -> Result<Vec<Finished<T::Output>>, codec::CodecError> {
    // Never trust the count for an allocation: each result takes at least 13 bytes.
    let mut out = Vec::with_capacity((count as usize).min(bytes.len() / 13 + 1));
    for _ in 0..count {
        if let Some((compute_ns, output, rest)) = codec::split_ok_result(bytes) {
            bytes = rest;
            out.push(Finished {
                compute_ns,
                phases: None,
                outcome: codec::decode::<T::Output>(output).map_err(|e| {
                    Box::new(JobError::Codec {
                        message: format!("output: {e}"),
                    })
                }),
            });
            continue;
        }
        let (r, used) = codec::decode_job_result(bytes)?;
        bytes = &bytes[used..];
        out.push(Finished {
            compute_ns: r.compute_ns,
            phases: r.phases.map(Box::new),
            outcome: match r.outcome {
                Outcome::Ok(b) => codec::decode::<T::Output>(b).map_err(|e| {
                    Box::new(JobError::Codec {
                        message: format!("output: {e}"),
                    })
                }),
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
