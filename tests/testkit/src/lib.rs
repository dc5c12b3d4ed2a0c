//! Test helpers shared by Coffre crates.
//!
//! Real vendor evidence and conformance vectors live outside the repository, in
//! `../shared/testdata` next to the checkout (or wherever `COFFRE_TESTDATA` points). They are never
//! copied into the project. Tests ask [`require`] for a path:
//!
//! - found: the path is returned;
//! - missing on a developer machine: the test prints why and skips those cases (`None`);
//! - missing under `CI=true`: the test fails, because CI must never pass by skipping evidence.
//!
//! This crate is a dev-dependency only; nothing in a shipped binary uses it.

#![forbid(unsafe_code)]
#![allow(clippy::panic)] // failing the test run under CI is the purpose of `require`

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where the shared test data should be: `COFFRE_TESTDATA`, else `<repo>/../shared/testdata`.
pub fn testdata_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("COFFRE_TESTDATA") {
        return PathBuf::from(dir);
    }
    // This crate lives at <repo>/tests/testkit.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata")
}

/// Whether we run under CI (`CI=true`), where missing test data is an error.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The path of `relative` inside the shared test data, or `None` (with a message) when it is
/// absent outside CI. Panics when it is absent under CI.
pub fn require(relative: &str) -> Option<PathBuf> {
    let path = testdata_root().join(relative);
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "shared test data {} not found (set COFFRE_TESTDATA or place ../shared/testdata beside the checkout)",
        path.display()
    );
    if under_ci() {
        panic!("{msg}; CI=true, so missing evidence fails the run");
    }
    // Written to stderr directly: the test harness captures `eprintln!` of passing tests, and a
    // skip must be visible.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {msg}");
    None
}

/// Reads a file from the shared test data (see [`require`]).
pub fn read(relative: &str) -> Option<Vec<u8>> {
    let path = require(relative)?;
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}
