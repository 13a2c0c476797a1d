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
pub const PROTOCOL_VERSION: u32 = 2;

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
    },
    /// The per-worker context, sent once (Python's `initializer`).
    Context {
        /// Encoded `Task::Context`.
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
    },
    /// Jobs to run in order; one frame may carry a chunk of several.
    Jobs(Vec<JobMsg<'a>>),
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

/// One job inside a [`Down::Jobs`] frame.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct JobMsg<'a> {
    /// The coordinator's id for the job (echoed in the result).
    pub id: u64,
    /// Encoded task value.
    #[serde(with = "serde_bytes")]
    pub payload: &'a [u8],
}

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
    /// One job's result.
    Done {
        /// The job id from [`JobMsg::id`].
        id: u64,
        /// Nanoseconds the task itself ran.
        compute_ns: u64,
        /// What came of it.
        #[serde(borrow)]
        outcome: Outcome<'a>,
    },
    /// The worker refuses to serve (unknown task, version mismatch, bad context); it exits next.
    Refused {
        /// Why.
        reason: String,
    },
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
        let msg = Down::Jobs(vec![
            JobMsg {
                id: 1,
                payload: &payload,
            },
            JobMsg {
                id: 2,
                payload: &[],
            },
        ]);
        let bytes = codec::encode(&msg).unwrap();
        assert_eq!(codec::decode_borrowed::<Down<'_>>(&bytes).unwrap(), msg);
        let up = Up::Done {
            id: 3,
            compute_ns: 10,
            outcome: Outcome::Err(JobError::Panicked {
                message: "boom".into(),
            }),
        };
        let bytes = codec::encode(&up).unwrap();
        assert_eq!(codec::decode_borrowed::<Up<'_>>(&bytes).unwrap(), up);
    }
}
