//! Black-box tests of the `coordinator` binary: what a user types, what they see.

mod common;
mod errors;
mod faults;
mod sweep;
