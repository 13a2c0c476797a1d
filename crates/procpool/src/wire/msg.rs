//! The messages, both ways. `Hello` is variant 0 in each direction and variants are only
//! ever appended: bincode is not self-describing, so a peer of another version must still
//! be able to read the greeting that tells it so. Bump [`PROTOCOL_VERSION`] whenever a
//! message changes.
//!
//! Envelopes are task-independent: task inputs, outputs and contexts travel as encoded
//! byte payloads, so the frame layer (and the fuzzer) can decode any frame without knowing
//! the task, and a job kept for re-dispatch is kept as its bytes.

use crate::error::JobError;
use serde::{Deserialize, Serialize};

/// The protocol spoken by this build; both sides refuse a peer with another one.
pub const PROTOCOL_VERSION: u32 = 3;

/// Coordinator → worker.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Down<'a> {
    /// First message: who we are and what the worker is to serve.
    Hello {
        /// Must equal [`PROTOCOL_VERSION`].
        protocol: u32,
        /// Registered name of the task (pool) or target (process).
        task: &'a str,
        /// Largest frame either side may send.
        max_frame: u32,
        /// Options, [`FLAG_PHASES`] and so on.
        flags: u32,
    },
    /// The per-worker context, sent once (Python's `initializer`).
    Context {
        /// Encoded `Task::Context`.
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Jobs `first..first + count` of chunk `chunk`, to run in order (a chunk too large
    /// for one frame comes in several).
    Jobs {
        /// The coordinator's id for the chunk (echoed in the results).
        chunk: u64,
        /// Index of the first of these jobs in the chunk.
        first: u32,
        /// How many jobs.
        count: u32,
        /// The encoded task values, `count` [items](crate::wire::codec::put_item) back to
        /// back: each its length as a varint (one byte below 251), then its bytes. Not a
        /// `Vec` of byte strings, whose fixed 8-byte lengths made up most of the bytes a
        /// chunk of small jobs put through the socket.
        #[serde(with = "serde_bytes")]
        payloads: &'a [u8],
        /// Each job's submission number, only when fault injection is on (tests).
        tags: Vec<u64>,
    },
    /// Run a process target once, then exit.
    Run {
        /// Encoded target.
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// The per-worker context, in shared memory: the descriptors of `regions.len()` sealed
    /// shared objects came with the bytes before this frame (`SCM_RIGHTS`), in order.
    SharedContext {
        /// The encoded context, when it travels inline (empty when `body` locates it).
        #[serde(with = "serde_bytes")]
        inline: &'a [u8],
        /// Where the encoded context lies in the shared objects, when not inline.
        body: Option<BufDesc>,
        /// The context's out-of-band buffers, by the index its body refers to them with.
        buffers: Vec<BufDesc>,
        /// The size of each shared object, in the order their descriptors came.
        regions: Vec<u64>,
    },
    /// No more jobs: finish what you hold and exit. (The end of input without it means
    /// the coordinator is gone: a worker then takes its process group down with it.)
    Bye,
}

/// Bytes `offset..offset + len` of shared object `region`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct BufDesc {
    /// Index into the shared objects sent with the context.
    pub region: u32,
    /// First byte.
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
}

/// Set in [`Down::Hello`]'s flags: time each job's phases (see [`Phases`]).
pub const FLAG_PHASES: u32 = 1;
/// Set in [`Down::Hello`]'s flags: read the clock after every job, so that each result's
/// `compute_ns` is its own job's (without it, only the sum over a chunk is exact).
pub const FLAG_JOB_TIMES: u32 = 2;

/// Worker → coordinator.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Up<'a> {
    /// First message, sent before reading anything.
    Hello {
        /// The worker's [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The worker's process id.
        pid: u32,
    },
    /// The context is installed; jobs may come.
    Ready,
    /// Results of jobs `first..first + count` of chunk `chunk`: `count` [`JobResult`]s,
    /// each encoded on its own, back to back in `results`.
    Done {
        /// The chunk id from [`Down::Jobs`].
        chunk: u64,
        /// Index of the first result's job in the chunk.
        first: u32,
        /// How many results.
        count: u32,
        /// The encoded results.
        #[serde(with = "serde_bytes")]
        results: &'a [u8],
    },
    /// The worker refuses to serve (unknown task, version mismatch, bad context); it exits next.
    Refused {
        /// Why.
        reason: String,
    },
    /// Results of jobs `first..first + count` of chunk `chunk` that all succeeded, without
    /// phases: the commonest results, in 2 bytes each for a small output instead of a
    /// [`JobResult`]'s 21 (the bytes through the socket cost more than anything else the
    /// two sides do per small job). Each is its `compute_ns` as a varint, then its encoded
    /// output as an [item](crate::wire::codec::put_item).
    Outputs {
        /// The chunk id from [`Down::Jobs`].
        chunk: u64,
        /// Index of the first result's job in the chunk.
        first: u32,
        /// How many results.
        count: u32,
        /// The encoded results.
        #[serde(with = "serde_bytes")]
        results: &'a [u8],
    },
}

/// One job's result inside [`Up::Done`].
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct JobResult<'a> {
    /// Nanoseconds since the previous timed result of the chunk ended (or the chunk
    /// arrived): the job's own time when the coordinator set [`FLAG_JOB_TIMES`] or
    /// [`FLAG_PHASES`]; otherwise the worker reads its clock once per group of jobs, the
    /// group's last result carries its time and the others 0, and only sums are exact.
    pub compute_ns: u64,
    /// What came of it.
    #[serde(borrow)]
    pub outcome: Outcome<'a>,
    /// When its phases ended in the worker, if the coordinator asked ([`FLAG_PHASES`]).
    pub phases: Option<Phases>,
}

/// When a job's phases ended in its worker: wall-clock nanoseconds since the Unix epoch,
/// which other processes on the same machine can compare with their own clocks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Phases {
    /// Its frame was read (or the job before it in the frame was done).
    pub begun: u64,
    /// Its input was decoded.
    pub decoded: u64,
    /// The task returned.
    pub computed: u64,
    /// Its result was encoded and queued for writing.
    pub encoded: u64,
}

/// A job's outcome on the wire.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub enum Outcome<'a> {
    /// Encoded `Task::Output`.
    Ok(#[serde(with = "serde_bytes")] &'a [u8]),
    /// The job failed inside the worker.
    Err(JobError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec;

    #[test]
    fn hello_is_variant_zero_both_ways() {
        let down = codec::encode(&Down::Hello {
            protocol: 9,
            task: "t",
            max_frame: 1,
            flags: 0,
        })
        .unwrap();
        assert_eq!(&down[..8], &[0, 0, 0, 0, 9, 0, 0, 0]);
        let up = codec::encode(&Up::Hello {
            protocol: 9,
            pid: 5,
        })
        .unwrap();
        assert_eq!(up, [0, 0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0]);
    }

    #[test]
    fn messages_round_trip_borrowed() {
        let payload = [1u8, 2, 3];
        let mut items = Vec::new();
        codec::put_item(&mut items, &payload);
        codec::put_item(&mut items, &[]);
        assert_eq!(items, [3, 1, 2, 3, 0]);
        let msg = Down::Jobs {
            chunk: 4,
            first: 1,
            count: 2,
            payloads: &items,
            tags: vec![],
        };
        let bytes = codec::encode(&msg).unwrap();
        assert_eq!(codec::decode_borrowed::<Down<'_>>(&bytes).unwrap(), msg);
        let mut results = Vec::new();
        let one = JobResult {
            compute_ns: 10,
            outcome: Outcome::Err(JobError::Panicked {
                message: "boom".into(),
                location: None,
                backtrace: None,
                pid: 7,
            }),
            phases: None,
        };
        codec::encode_into(&one, &mut results).unwrap();
        let two = JobResult {
            compute_ns: 11,
            outcome: Outcome::Ok(&payload),
            phases: Some(Phases::default()),
        };
        codec::encode_into(&two, &mut results).unwrap();
        let up = Up::Done {
            chunk: 4,
            first: 1,
            count: 2,
            results: &results,
        };
        let bytes = codec::encode(&up).unwrap();
        let back = codec::decode_borrowed::<Up<'_>>(&bytes).unwrap();
        assert_eq!(back, up);
        let Up::Done { results, .. } = back else {
            unreachable!()
        };
        let (first, used) = codec::decode_prefix::<JobResult<'_>>(results).unwrap();
        assert_eq!(first, one);
        let (second, rest) = codec::decode_prefix::<JobResult<'_>>(&results[used..]).unwrap();
        assert_eq!(second, two);
        assert_eq!(used + rest, results.len());
        let mut outputs = Vec::new();
        codec::encode_ok_output(&mut outputs, 0, &payload);
        codec::encode_ok_output(&mut outputs, 300, &[]);
        assert_eq!(outputs, [0, 3, 1, 2, 3, 251, 44, 1, 0]);
        let up = Up::Outputs {
            chunk: 4,
            first: 1,
            count: 2,
            results: &outputs,
        };
        let bytes = codec::encode(&up).unwrap();
        assert_eq!(codec::decode_borrowed::<Up<'_>>(&bytes).unwrap(), up);
    }
}
