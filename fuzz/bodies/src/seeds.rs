//! The seed corpus of a fuzz target, for the stable regression tests
//! (`tests/agent_seeds.rs`, `tests/frame_seeds.rs` of this package).

/// `fuzz/corpus-seed/<target>/`.
pub fn seed_dir(target: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../corpus-seed")
        .join(target)
}

/// Every seed of `target` as (file name, bytes), sorted by name; at least four.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = std::fs::read_dir(seed_dir(target))
        .unwrap_or_else(|e| panic!("fuzz/corpus-seed/{target}: {e}"))
        .map(|e| {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    all.sort();
    assert!(
        all.len() >= 4,
        "seeds missing from fuzz/corpus-seed/{target}"
    );
    all
}
