//! Merge cookies. (Being written.)
