//! Operating-system mechanisms, each behind safe functions: child processes (`child`),
//! the worker-mode markers (`env`), shared memory and descriptor passing (`shm`), and the
//! remaining system calls (`unix`). Every `unsafe` of the crate lives in this module.

pub(crate) mod child;
pub(crate) mod env;
pub(crate) mod shm;
pub(crate) mod unix;
