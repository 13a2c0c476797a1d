//! Black-box tests of the `coordinator` binary: what a user types, what they see.

mod bench;
mod common;
mod demos;
mod errors;
mod faults;
mod journal;
#[cfg(feature = "mpi")]
mod mpi;
mod outputs;
mod select;
mod sweep;
