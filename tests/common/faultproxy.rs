//! A TCP relay with fault controls (kill, black-hole, heal) for path tests.
