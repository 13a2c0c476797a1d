//! Operating-system mechanisms that the rest of the crate uses through safe functions.

pub(crate) mod shm;
