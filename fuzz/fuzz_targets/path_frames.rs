#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| resi::fuzzing::path_frames(data));
