//! The `resi` command. (Being written.)
