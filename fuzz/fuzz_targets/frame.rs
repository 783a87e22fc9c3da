#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod body {
    include!("../bodies/frame.rs");
}

fuzz_target!(|data: &[u8]| {
    body::run(data);
});
