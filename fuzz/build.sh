#!/bin/sh
# Builds every fuzz target with libFuzzer on the stable toolchain: the
# sanitizer-coverage instrumentation libFuzzer needs is plain LLVM passes
# (-C passes, -C llvm-args are stable flags); only the address sanitizer
# would need nightly, and it is not used (Rust code is memory-safe; the
# targets look for panics, overflows and invariant violations).
# --target keeps RUSTFLAGS off build scripts and proc macros.
set -eu
cd "$(dirname "$0")"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cdebug-assertions -Coverflow-checks"
exec cargo build --release --target "$(rustc -vV | sed -n 's/^host: //p')" "$@"
