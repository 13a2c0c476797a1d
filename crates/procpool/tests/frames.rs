//! The frame decoder and the worker loop under arbitrary bytes: they never panic, and no
//! single allocation ever exceeds what the input could justify (a counting allocator
//! watches every allocation made while decoding).

use procpool::wire::codec;
use procpool::wire::frame::FrameReader;
use procpool::wire::msg::{Down, Up};
use procpool::{JobError, Registry, Task};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

mod counting;
use counting::largest_allocation;

#[derive(Serialize, Deserialize)]
struct Echo(String);
impl Task for Echo {
    const NAME: &'static str = "echo";
    type Context = Vec<String>;
    type Output = String;
    fn run(self, _: &Vec<String>) -> String {
        self.0
    }
}

/// What any decode may allocate at most for an input of `len` bytes: twice the input
/// (bincode's claims are capped at the next power of two), 4 KiB at least, or serde's
/// cautious pre-allocation of one MiB for a sequence of unknown honesty.
fn allowed(len: usize) -> usize {
    (2 * len).max(4096).max(1 << 20) + 4096
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decoding_arbitrary_frames_never_panics_or_overallocates(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let (_, largest) = largest_allocation(|| {
            let _ = codec::decode_borrowed::<Up<'_>>(&bytes);
            let _ = codec::decode_borrowed::<Down<'_>>(&bytes);
            let _ = codec::decode::<JobError>(&bytes);
            let _ = codec::decode::<Vec<String>>(&bytes);
            let _ = codec::decode::<String>(&bytes);
        });
        prop_assert!(largest <= allowed(bytes.len()), "{largest} bytes for a {}-byte input", bytes.len());
    }

    #[test]
    fn the_frame_reader_buffers_only_what_arrived(bytes in proptest::collection::vec(any::<u8>(), 0..8192), max in 16u32..65536) {
        let ((), largest) = largest_allocation(|| {
            let mut r = FrameReader::new(max);
            for piece in bytes.chunks(97) {
                r.push(piece);
                while let Ok(Some(body)) = r.next_frame() {
                    assert!(body.len() <= max as usize);
                    let _ = codec::decode_borrowed::<Up<'_>>(body);
                }
            }
            let _ = r.finish();
        });
        prop_assert!(largest <= allowed(bytes.len()).max(128 << 10), "{largest}");
    }

    #[test]
    fn the_worker_loop_survives_arbitrary_input(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let registry = Registry::new().task::<Echo>();
        let ((out, _result), largest) = largest_allocation(|| procpool::serve_in_memory(&registry, &bytes));
        prop_assert!(largest <= allowed(bytes.len()).max(512 << 10), "{largest}");
        // It always greets first, whatever follows.
        prop_assert!(out.len() >= 4);
    }
}

#[test]
fn a_lying_string_length_inside_a_small_frame_allocates_little() {
    // A `JobError::Panicked` whose message claims 512 MiB, in 16 bytes.
    let mut bytes = 0u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&(1u64 << 29).to_le_bytes());
    bytes.extend_from_slice(b"abcd");
    let (r, largest) = largest_allocation(|| codec::decode::<JobError>(&bytes));
    assert!(r.is_err());
    assert!(largest <= 4096, "allocated {largest} bytes");
}
