//! The wire: frames, the codec, the messages, and the worker's side of the conversation.

pub mod codec;
pub mod frame;
pub mod msg;
pub(crate) mod worker;

/// Runs the worker side of the protocol over in-memory input, as a real worker would over
/// its socket: returns what it wrote and how it ended. For tests and fuzzing: any input,
/// however hostile, must end in a clean `Err`, never a panic or an unbounded allocation.
pub fn serve_in_memory(
    registry: &crate::Registry,
    mut input: &[u8],
) -> (Vec<u8>, Result<(), String>) {
    let mut output = Vec::new();
    let result = worker::serve(registry, &mut input, &mut output, &worker::NoFds, None)
        .map_err(|e| e.to_string());
    (output, result)
}
