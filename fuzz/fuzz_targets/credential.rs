#![no_main]

use libfuzzer_sys::fuzz_target;

mod body {
    include!("../bodies/credential.rs");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = body::run(text);
    }
});
