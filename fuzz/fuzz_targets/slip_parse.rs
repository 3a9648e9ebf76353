#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound::fuzzing::slip_parse(data));
