//! Every sample in `events/` is accepted by its function's input parser, except the
//! `malformed-*` ones, which must be refused as permanent errors.

use std::path::Path;

use stashless::events::{SessionRef, Tick};

fn samples(dir: &str) -> Vec<(String, serde_json::Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../events")
        .join(dir);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            value,
        ));
    }
    assert!(out.len() >= 2, "no samples in {dir}");
    out
}

#[test]
fn backup_samples() {
    for (name, v) in samples("backup") {
        let r = SessionRef::from_event(&v, "BackupSession");
        if name.starts_with("malformed") {
            let e = r.expect_err(&name);
            assert!(!e.is_retryable(), "{name}");
        } else {
            r.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn restore_samples() {
    for (name, v) in samples("restore") {
        let r = SessionRef::from_event(&v, "RestoreSession");
        if name.starts_with("malformed") {
            let e = r.expect_err(&name);
            assert!(!e.is_retryable(), "{name}");
        } else {
            r.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}

#[test]
fn scheduler_samples() {
    for (name, v) in samples("scheduler") {
        let r = Tick::from_event(&v);
        if name.starts_with("malformed") {
            r.expect_err(&name);
        } else {
            r.unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
