//! Modify dispatch and the extension registry. (Being written.)
