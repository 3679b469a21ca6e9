#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| resi::fuzzing::nkn_messages(data));
