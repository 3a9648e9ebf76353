#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound::fuzzing::cose_key_parse(data));
