//! Path frames and their codec. (Being written.)
