#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| resi::fuzzing::grpc_framing(data));
