//! Black-box tests of the coordinator binary.
