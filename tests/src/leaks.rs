//! The suite-wide secret leak scan. With `STASHLESS_LEAK_DIR` set (tests/run.sh sets it for
//! the whole run), every test process writes into that directory:
//! - every log line of its own code and of the functions it drives, at debug level
//!   (`logs-<pid>.log`, from [`crate::init_logs`]), and the logs of function processes
//!   started under the local Lambda Runtime API;
//! - every status and Event text the functions wrote (`objects-<pid>.jsonl`: the Stash
//!   objects and Events of each in-memory API server when its test ends; Secrets excluded);
//! - every secret it made (`secrets-<pid>.tsv`: Vault root tokens and unseal keys, other
//!   Vault tokens, the S3 secret key, every value put in a Kubernetes Secret).
//!
//! After the suite, `leak_scan` ([`scan`]) fails if any secret appears in any log or text
//! file, naming the file, line and kind of secret, never the value.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where this run collects logs, texts and secrets, if it does.
pub fn dir() -> Option<PathBuf> {
    std::env::var_os("STASHLESS_LEAK_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// Open (append) `<dir>/<stem>-<pid>.<ext>`.
pub fn file(stem: &str, ext: &str) -> Option<std::fs::File> {
    let dir = dir()?;
    let _ = std::fs::create_dir_all(&dir);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{stem}-{}.{ext}", std::process::id())))
        .ok()
}

/// Secrets shorter than this are not scanned for (they would match by chance).
pub const MIN_LEN: usize = 8;

/// Record a secret this test made, so the scan looks for it.
pub fn secret(kind: &str, value: &str) {
    let value = value.trim();
    if value.len() < MIN_LEN || value.contains(['\t', '\n']) {
        return;
    }
    if let Some(mut f) = file("secrets", "tsv") {
        let _ = writeln!(f, "{kind}\t{value}");
    }
}

/// Append texts (one JSON document per line) for the scan, with one open of the file.
pub fn texts(stem: &str, lines: impl IntoIterator<Item = String>) {
    if let Some(f) = file(stem, "jsonl") {
        let mut w = std::io::BufWriter::new(f);
        for line in lines {
            let _ = writeln!(w, "{line}");
        }
    }
}

/// One secret found where it must not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub file: String,
    pub line: usize,
    pub kind: String,
}

/// What a scan looked at.
#[derive(Debug, Default)]
pub struct Scanned {
    pub secrets: usize,
    pub files: usize,
    pub lines: usize,
    pub findings: Vec<Finding>,
}

/// Scan every file in `dir` but the secrets files for every recorded secret (also in its
/// base64 form, as a Secret's data would carry it).
pub fn scan(dir: &Path) -> std::io::Result<Scanned> {
    let mut secrets: Vec<(String, String)> = Vec::new();
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if name.starts_with("secrets-") {
            for l in std::fs::read_to_string(&p)?.lines() {
                if let Some((kind, value)) = l.split_once('\t') {
                    secrets.push((kind.to_string(), value.to_string()));
                }
            }
        } else if p.is_file() {
            files.push(p);
        }
    }
    secrets.sort();
    secrets.dedup();
    use base64::Engine;
    let needles: Vec<(String, String)> = secrets
        .iter()
        .flat_map(|(k, v)| {
            [
                (k.clone(), v.clone()),
                (
                    format!("{k} (base64)"),
                    base64::engine::general_purpose::STANDARD.encode(v),
                ),
            ]
        })
        .collect();
    let mut out = Scanned {
        secrets: secrets.len(),
        files: files.len(),
        ..Scanned::default()
    };
    files.sort();
    for p in files {
        let bytes = std::fs::read(&p)?;
        let text = String::from_utf8_lossy(&bytes);
        for (i, line) in text.lines().enumerate() {
            out.lines += 1;
            for (kind, needle) in &needles {
                if line.contains(needle.as_str()) {
                    out.findings.push(Finding {
                        file: p.file_name().unwrap_or_default().to_string_lossy().into(),
                        line: i + 1,
                        kind: kind.clone(),
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_planted_secret_is_found_and_named_without_its_value() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("secrets-1.tsv"),
            "vault root token\ts.abcdefghijkl\nS3 secret key\tSECRETKEY123456\n",
        )
        .unwrap();
        std::fs::write(d.path().join("logs-1.log"), "INFO started\nINFO all fine\n").unwrap();
        let clean = scan(d.path()).unwrap();
        assert_eq!(clean.secrets, 2);
        assert_eq!(clean.lines, 2);
        assert!(clean.findings.is_empty());
        std::fs::write(
            d.path().join("objects-2.jsonl"),
            "{\"message\":\"ok\"}\n{\"message\":\"token s.abcdefghijkl refused\"}\n{\"data\":\"U0VDUkVUS0VZMTIzNDU2\"}\n",
        )
        .unwrap();
        let found = scan(d.path()).unwrap();
        assert_eq!(
            found.findings,
            vec![
                Finding {
                    file: "objects-2.jsonl".into(),
                    line: 2,
                    kind: "vault root token".into()
                },
                Finding {
                    file: "objects-2.jsonl".into(),
                    line: 3,
                    kind: "S3 secret key (base64)".into()
                },
            ]
        );
        assert!(!format!("{:?}", found.findings).contains("abcdefghijkl"));
    }
}
