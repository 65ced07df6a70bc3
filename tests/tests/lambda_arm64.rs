//! The arm64 Lambda packages as deployed: each zip `scripts/build-lambdas.sh` writes holds one
//! executable `bootstrap`, an aarch64 ELF, and that binary passes the same Runtime API
//! conformance check as the x86_64 builds (every `events/` sample, SIGTERM), run under qemu's
//! user mode (Debian's qemu-user) with Debian's aarch64 C library as its root.
//!
//! Ignored by default (the packages come from a release cross build): `tests/run.sh` builds
//! them and runs these with `--ignored`, `STASHLESS_LAMBDA_ARM64_DIR` naming the zips' folder.

use std::path::{Path, PathBuf};

use stashless_tests::runtime_api::{
    Program, scheduler_function_conformance, session_function_conformance,
};

fn packages() -> PathBuf {
    std::env::var_os("STASHLESS_LAMBDA_ARM64_DIR")
        .map(PathBuf::from)
        .expect("STASHLESS_LAMBDA_ARM64_DIR must name the folder scripts/build-lambdas.sh wrote")
}

/// `bootstrap` of `function`'s zip, unpacked into `into` after checking what the zip holds.
fn unpack(function: &str, into: &Path) -> PathBuf {
    let zip = packages().join(function).join("bootstrap.zip");
    // Python's zipfile reads the archive: names and the Unix modes Lambda will see.
    let listing = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             print(json.dumps([[i.filename, i.external_attr >> 16, i.file_size] for i in z.infolist()]))\n\
             z.extractall(sys.argv[2])",
        ])
        .arg(&zip)
        .arg(into)
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}: {}",
        zip.display(),
        String::from_utf8_lossy(&listing.stderr)
    );
    let entries: Vec<(String, u32, u64)> = serde_json::from_slice(&listing.stdout).unwrap();
    assert_eq!(entries.len(), 1, "{}: {entries:?}", zip.display());
    let (name, mode, size) = &entries[0];
    assert_eq!(
        name, "bootstrap",
        "Lambda's provided runtimes start ./bootstrap"
    );
    assert_eq!(
        mode & 0o111,
        0o111,
        "bootstrap must be executable in the zip: {mode:o}"
    );
    let bin = into.join("bootstrap");
    let elf = std::fs::read(&bin).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "a 64-bit ELF");
    assert_eq!(elf[5], 1, "little-endian");
    let machine = u16::from_le_bytes([elf[18], elf[19]]);
    assert_eq!(
        machine, 183,
        "e_machine must be EM_AARCH64 (183), not {machine}"
    );
    // zipfile does not restore modes; the check above is on the zip itself.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(*mode & 0o777)).unwrap();
    println!(
        "{function}: bootstrap.zip {} bytes, bootstrap {size} bytes",
        std::fs::metadata(&zip).unwrap().len()
    );
    bin
}

/// The package's `bootstrap`, started under qemu's aarch64 user mode.
fn emulated(function: &str, dir: &Path) -> Program {
    let qemu = std::env::var("STASHLESS_QEMU_AARCH64").unwrap_or_else(|_| "qemu-aarch64".into());
    let root =
        std::env::var("STASHLESS_AARCH64_ROOT").unwrap_or_else(|_| "/usr/aarch64-linux-gnu".into());
    Program::emulated(qemu, &["-L", &root], unpack(function, dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the arm64 zips (scripts/build-lambdas.sh); tests/run.sh runs it"]
async fn arm64_scheduler_package_under_emulation() {
    let dir = tempfile::tempdir().unwrap();
    scheduler_function_conformance(emulated("scheduler", dir.path()))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the arm64 zips (scripts/build-lambdas.sh); tests/run.sh runs it"]
async fn arm64_backup_package_under_emulation() {
    let dir = tempfile::tempdir().unwrap();
    session_function_conformance(
        emulated("backup", dir.path()),
        "backup",
        "backup",
        "backupsessions",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the arm64 zips (scripts/build-lambdas.sh); tests/run.sh runs it"]
async fn arm64_restore_package_under_emulation() {
    let dir = tempfile::tempdir().unwrap();
    session_function_conformance(
        emulated("restore", dir.path()),
        "restore",
        "restore",
        "restoresessions",
    )
    .await
    .unwrap();
}

/// A real backup and restore by the arm64 binaries (their TLS, hashing and S3 code as built
/// for Graviton): a changed secret is back after the restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the arm64 zips (scripts/build-lambdas.sh); tests/run.sh runs it"]
async fn arm64_backup_and_restore_packages_round_trip_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let backup = emulated("backup", &dir.path().join("backup"));
    let restore = emulated("restore", &dir.path().join("restore"));
    let w = stashless_tests::World::standard("arm64rt", "arm64rt").await;
    stashless_tests::runtime_api::backup_then_restore_under_the_runtime(&w, &backup, &restore)
        .await
        .unwrap();
}
