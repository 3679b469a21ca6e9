//! The session protocol state machine. (Being written.)
