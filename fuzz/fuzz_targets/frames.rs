//! Arbitrary bytes into everything that reads the wire: the frame reader, the message
//! decoders, and a whole worker loop. None of them may panic or allocate without bound.

#![no_main]

use libfuzzer_sys::fuzz_target;
use procpool::wire::codec;
use procpool::wire::frame::FrameReader;
use procpool::wire::msg::{Down, JobResult, Up};
use procpool::{JobError, Registry, Task};
use serde::{Deserialize, Serialize};

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

fuzz_target!(|data: &[u8]| {
    let mut reader = FrameReader::new(1 << 16);
    for piece in data.chunks(61) {
        reader.push(piece);
        while let Ok(Some(body)) = reader.next_frame() {
            if let Ok(Up::Done { results, .. }) = codec::decode_borrowed::<Up<'_>>(body) {
                let _ = codec::decode_prefix::<JobResult<'_>>(results);
            }
            let _ = codec::decode_borrowed::<Down<'_>>(body);
        }
    }
    let _ = reader.finish();
    let _ = codec::decode::<JobError>(data);
    let _ = procpool::serve_in_memory(&Registry::new().task::<Echo>(), data);
});
