//! The arm64 Lambda packages as deployed: each zip `scripts/build-lambdas.sh` writes holds one
//! executable `bootstrap`, an aarch64 ELF, and that binary passes the same Runtime API
//! conformance check as the x86_64 builds (every `events/` sample, SIGTERM), run under qemu's
//! user mode (Debian's qemu-user) with Debian's aarch64 C library as its root.
//!
//! Not ignored: these run in `cargo test --workspace`, which needs what `tests/setup.sh`
//! installs (the README's test command is `bash tests/run.sh`, which also builds the packages,
//! a cached release cross build, and exports `STASHLESS_LAMBDA_ARM64_DIR`, the zips' folder).
//! Without the variable each test fails, naming the command that builds the zips, as the
//! end-to-end tests fail naming `tests/setup.sh` when a server is missing: a missing artefact
//! never passes as a skipped test. No default location is looked at, so zips left from other
//! sources are not tested by mistake. `tests/run.sh` runs them in the in-memory pass only.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use stashless_tests::runtime_api::{
    Program, scheduler_function_conformance, session_function_conformance,
};

fn packages() -> PathBuf {
    let dir = std::env::var_os("STASHLESS_LAMBDA_ARM64_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .expect(
            "STASHLESS_LAMBDA_ARM64_DIR is not set: build the arm64 zips with \
             `STASHLESS_LAMBDA_DIR=<dir> bash scripts/build-lambdas.sh` (a release cross build; \
             without STASHLESS_LAMBDA_DIR they go to <repository>/target/lambda) and set \
             STASHLESS_LAMBDA_ARM64_DIR to that folder's absolute path; `bash tests/run.sh` \
             does both",
        );
    assert!(
        dir.is_dir(),
        "STASHLESS_LAMBDA_ARM64_DIR={}: no such folder (scripts/build-lambdas.sh writes it)",
        dir.display()
    );
    dir
}

/// `bootstrap` of `function`'s zip, unpacked into `into` after checking what the zip holds.
fn unpack(packages: &Path, function: &str, into: &Path) -> PathBuf {
    let zip = packages.join(function).join("bootstrap.zip");
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
fn emulated(packages: &Path, function: &str, dir: &Path) -> Program {
    let qemu = std::env::var("STASHLESS_QEMU_AARCH64").unwrap_or_else(|_| "qemu-aarch64".into());
    let root =
        std::env::var("STASHLESS_AARCH64_ROOT").unwrap_or_else(|_| "/usr/aarch64-linux-gnu".into());
    Program::emulated(qemu, &["-L", &root], unpack(packages, function, dir))
}

/// Each package and its check: the scheduler's, or the session functions' (the samples of
/// `events/<function>`, and the resource whose failing API must surface as an error).
const PACKAGES: [(&str, Option<&str>); 3] = [
    ("scheduler", None),
    ("backup", Some("backupsessions")),
    ("restore", Some("restoresessions")),
];

/// `function`'s package, unpacked into `dir` and run under emulation through its check.
async fn package_conformance(
    packages: &Path,
    function: &str,
    failing_plural: Option<&str>,
    dir: &Path,
) -> Result<()> {
    let program = emulated(packages, function, dir);
    match failing_plural {
        None => scheduler_function_conformance(program).await,
        Some(plural) => session_function_conformance(program, function, function, plural).await,
    }
}

/// Every package of [`PACKAGES`] at once (each in its own emulator, Runtime API and API
/// server); every failure reported, each naming its function.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm64_packages_under_emulation() {
    let packages = packages();
    let dir = tempfile::tempdir().unwrap();
    let results = futures::future::join_all(PACKAGES.map(|(function, failing_plural)| {
        let (packages, into) = (&packages, dir.path().join(function));
        async move {
            package_conformance(packages, function, failing_plural, &into)
                .await
                .with_context(|| format!("the arm64 {function} package under emulation"))
        }
    }))
    .await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A real backup and restore by the arm64 binaries (their TLS, hashing and S3 code as built
/// for Graviton): a changed secret is back after the restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm64_backup_and_restore_packages_round_trip_a_secret() {
    let packages = packages();
    let dir = tempfile::tempdir().unwrap();
    let backup = emulated(&packages, "backup", &dir.path().join("backup"));
    let restore = emulated(&packages, "restore", &dir.path().join("restore"));
    let w = stashless_tests::World::standard("arm64rt", "arm64rt").await;
    stashless_tests::runtime_api::backup_then_restore_under_the_runtime(&w, &backup, &restore)
        .await
        .unwrap();
}
