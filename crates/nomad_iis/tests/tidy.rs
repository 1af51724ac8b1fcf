//! Cheap checks on the source tree itself (as rust-analyzer's tidy tests do): every Rust file
//! opens with a `//!` comment saying what it owns, and no crate root forgets `unsafe_code`.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_comment() {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crates"), &mut files);
    assert!(files.len() > 20, "found only {} files", files.len());
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! comment: {missing:?}"
    );
}

#[test]
fn every_crate_root_states_its_unsafe_policy() {
    let mut roots = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("crates"))
        .unwrap()
        .flatten()
    {
        for root in ["src/lib.rs", "src/main.rs"] {
            let path = entry.path().join(root);
            if path.exists() {
                roots.push(path);
            }
        }
    }
    let silent: Vec<_> = roots
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.contains("#![forbid(unsafe_code)]") && !text.contains("#![deny(unsafe_code)]")
        })
        .collect();
    assert!(
        silent.is_empty(),
        "crate roots without forbid/deny(unsafe_code): {silent:?}"
    );
}
