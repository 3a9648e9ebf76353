#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keybound::fuzzing::workplan_parse(data));
