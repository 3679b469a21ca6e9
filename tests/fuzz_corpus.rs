//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`,
//! crashes found and fixed included) through the same harness functions
//! the fuzzer runs, so a regression shows up in a plain `cargo test`.

use std::path::Path;

#[test]
fn every_corpus_file_passes_its_harness() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, harness) in resi::fuzzing::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus of {name} ({}): {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 5, "corpus of {name} has only {} files", files.len());
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let run = std::panic::catch_unwind(|| harness(&data));
            assert!(run.is_ok(), "{name}: {} fails its harness", file.display());
        }
        eprintln!("{name}: {} corpus files replayed", files.len());
    }
}
