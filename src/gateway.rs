//! The gateway. (Being written.)
