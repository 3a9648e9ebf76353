#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound::fuzzing::identity_check(data));
