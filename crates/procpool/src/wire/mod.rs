//! The wire: frames, the codec, the messages, and the worker's side of the conversation.

pub mod codec;
pub mod frame;
pub mod msg;
