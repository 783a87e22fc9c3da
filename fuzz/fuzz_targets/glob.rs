#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    touchgate_fuzz_bodies::glob::run(data);
});
