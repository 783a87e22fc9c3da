#![no_main]

use libfuzzer_sys::fuzz_target;

mod body {
    include!("../bodies/auth_data.rs");
}

fuzz_target!(|data: &[u8]| {
    let _ = body::run(data);
});
