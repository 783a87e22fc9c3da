#![no_main]

use libfuzzer_sys::fuzz_target;

mod object {
    include!("../bodies/attestation_object.rs");
}
mod body {
    include!("../bodies/chain.rs");
}

fuzz_target!(|data: &[u8]| {
    let _ = body::run(data);
});
