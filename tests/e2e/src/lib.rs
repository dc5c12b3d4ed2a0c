//! End-to-end tests against the built binaries, each a separate process as a user runs them.
//! The tests find `coffre`, `coffred` and `coffre-worker` in the Cargo target directory, where
//! `cargo test --workspace` builds them (with the development features CI enables); run alone,
//! a test says that they are missing and skips — except under `CI=true`, where that fails.

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// The directory holding the workspace's binaries, when all three are there.
pub fn binaries() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe.parent()?.parent()?.to_path_buf();
    let all = ["coffre", "coffred", "coffre-worker"].iter().all(|b| dir.join(b).is_file());
    if all {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the binaries are not in {} (CI runs cargo test --workspace, which builds them)",
        dir.display()
    );
    eprintln!(
        "skipping: coffre, coffred and coffre-worker are not all in {}; run cargo test --workspace",
        dir.display()
    );
    None
}
