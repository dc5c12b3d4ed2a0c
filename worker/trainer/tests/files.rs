//! What the trainer writes: owner-only files, written through no planted link.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::os::unix::fs::{PermissionsExt, symlink};

use coffre_trainer::weights::{create_private_dir, write_atomic};

/// Red-team finding (low): `write_atomic` created `.NAME.tmp` with `File::create`, which follows
/// a symbolic link planted at that predictable name: another local user overwrote a victim file
/// with model weights. Files were also world-readable.
#[test]
fn attack_planted_symlink_at_the_temporary_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let out = dir.path().join("run");
    create_private_dir(&out).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o700);
    symlink(&victim, out.join(".model.safetensors.tmp")).unwrap();
    write_atomic(&out.join("model.safetensors"), b"weights").unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), b"weights");
    let mode = std::fs::metadata(out.join("model.safetensors")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "weights trained on confidential data are readable by others: {mode:o}");
    // Overwriting keeps the old file until the new one is complete, and stays owner-only.
    write_atomic(&out.join("model.safetensors"), b"weights v2").unwrap();
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), b"weights v2");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") && n != ".model.safetensors.tmp")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
