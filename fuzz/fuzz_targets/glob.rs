#![no_main]

use libfuzzer_sys::fuzz_target;

mod body {
    include!("../bodies/glob.rs");
}

fuzz_target!(|data: &[u8]| {
    body::run(data);
});
