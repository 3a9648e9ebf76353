#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound::fuzzing::exchange_request(data));
