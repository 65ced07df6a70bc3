//! The content layer: what the files of a raft snapshot must be. Every regular file is
//! hashed as it streams past; `meta.json` and `SHA256SUMS` are also buffered (they are
//! small) and parsed when they end, and each file's digest is checked against
//! `SHA256SUMS` as soon as both are known. [`Content::finish`] checks what can only be
//! known at the end: which files are present, what `SHA256SUMS` covers, the size of
//! `state.bin`.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::{
    ArchiveError, ArchiveFile, META_JSON, Result, SHA256SUMS, SHA256SUMS_SEALED, STATE_BIN,
    SnapshotMeta, check_small,
};

/// A regular file whose data is streaming past.
pub(super) struct FileSink {
    name: String,
    size: u64,
    hasher: Sha256,
    /// The content, for the small files that are parsed.
    buf: Option<Vec<u8>>,
}

impl FileSink {
    pub(super) fn write(&mut self, data: &[u8]) {
        self.hasher.update(data);
        if let Some(buf) = &mut self.buf {
            buf.extend_from_slice(data);
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The size the tar header gave.
    pub(super) fn size(&self) -> u64 {
        self.size
    }
}

/// The files seen so far and what was parsed out of them.
pub(super) struct Content {
    files: Vec<ArchiveFile>,
    /// Raw digests, parallel to `files`.
    digests: Vec<[u8; 32]>,
    meta: Option<SnapshotMeta>,
    sums: Option<BTreeMap<String, [u8; 32]>>,
}

/// What a complete, consistent snapshot holds.
pub(super) struct Verified {
    pub(super) meta: SnapshotMeta,
    pub(super) files: Vec<ArchiveFile>,
    pub(super) state_size: u64,
}

impl Content {
    pub(super) fn new() -> Self {
        Content {
            files: Vec::new(),
            digests: Vec::new(),
            meta: None,
            sums: None,
        }
    }

    /// The regular files seen so far, in archive order.
    pub(super) fn files(&self) -> &[ArchiveFile] {
        &self.files
    }

    /// A regular file starts: it must be new, and small if it is parsed.
    pub(super) fn start_file(&self, name: String, size: u64) -> Result<FileSink> {
        if self.files.iter().any(|f| f.name == name) {
            return Err(ArchiveError::Duplicate(name));
        }
        let buf = if name == META_JSON || name == SHA256SUMS {
            check_small(&name, size)?;
            Some(Vec::with_capacity(size as usize))
        } else {
            None
        };
        Ok(FileSink {
            name,
            size,
            hasher: Sha256::new(),
            buf,
        })
    }

    /// A regular file ended: parses it if it is `meta.json` or `SHA256SUMS`, and checks
    /// whatever digests can be checked now.
    pub(super) fn end_file(&mut self, file: FileSink) -> Result<()> {
        let digest: [u8; 32] = file.hasher.finalize().into();
        let name = file.name;
        if name == META_JSON {
            self.meta = Some(parse_meta(file.buf.as_deref().unwrap_or_default())?);
        } else if name == SHA256SUMS {
            let sums = parse_sums(file.buf.as_deref().unwrap_or_default())?;
            // Check the files that came before the list.
            for (seen, seen_digest) in self.files.iter().zip(&self.digests) {
                if let Some(expected) = sums.get(&seen.name) {
                    check_digest(&seen.name, expected, seen_digest)?;
                }
            }
            self.sums = Some(sums);
        } else if let Some(expected) = self.sums.as_ref().and_then(|s| s.get(&name)) {
            check_digest(&name, expected, &digest)?;
        }
        self.files.push(ArchiveFile {
            name,
            size: file.size,
            sha256: hex::encode(digest),
        });
        self.digests.push(digest);
        Ok(())
    }

    /// The archive ended: checks the snapshot is complete and consistent.
    pub(super) fn finish(self) -> Result<Verified> {
        let Content {
            files, meta, sums, ..
        } = self;
        let file = |name: &str| files.iter().find(|f| f.name == name);
        for name in [META_JSON, STATE_BIN, SHA256SUMS] {
            if file(name).is_none() {
                return Err(ArchiveError::MissingFile(name.to_string()));
            }
        }
        match file(SHA256SUMS_SEALED) {
            None => return Err(ArchiveError::MissingSealed),
            Some(f) if f.size == 0 => return Err(ArchiveError::EmptySealed),
            Some(_) => {}
        }
        // Present because SHA256SUMS and meta.json are (they are parsed when
        // their entry ends); mismatching digests were reported by `end_file`.
        let sums = sums.unwrap_or_default();
        for name in [META_JSON, STATE_BIN] {
            if !sums.contains_key(name) {
                return Err(ArchiveError::SumsMissingEntry(name.to_string()));
            }
        }
        if let Some(name) = sums.keys().find(|name| file(name).is_none()) {
            return Err(ArchiveError::SumsListsAbsent(name.clone()));
        }
        let state_size = file(STATE_BIN).map_or(0, |f| f.size);
        let meta = meta.unwrap_or_default();
        if let Some(size) = meta.size
            && size != state_size
        {
            return Err(ArchiveError::StateSizeMismatch {
                meta: size,
                actual: state_size,
            });
        }
        Ok(Verified {
            meta,
            files,
            state_size,
        })
    }
}

fn check_digest(name: &str, expected: &[u8; 32], actual: &[u8; 32]) -> Result<()> {
    if expected != actual {
        return Err(ArchiveError::HashMismatch {
            name: name.to_string(),
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}

/// Parses `meta.json` leniently.
fn parse_meta(bytes: &[u8]) -> Result<SnapshotMeta> {
    let raw: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ArchiveError::InvalidMeta(e.to_string()))?;
    Ok(SnapshotMeta {
        id: raw.get("ID").and_then(|v| v.as_str()).map(str::to_string),
        index: raw.get("Index").and_then(|v| v.as_u64()).unwrap_or(0),
        term: raw.get("Term").and_then(|v| v.as_u64()).unwrap_or(0),
        version: raw.get("Version").and_then(|v| v.as_i64()),
        size: raw.get("Size").and_then(|v| v.as_u64()),
        raw,
    })
}

/// Parses `sha256sum` output: `<64 hex> <sp><sp or *><name>` per line. Blank
/// lines are ignored; a file listed twice is an error.
fn parse_sums(bytes: &[u8]) -> Result<BTreeMap<String, [u8; 32]>> {
    let bad = |line: usize, detail: String| ArchiveError::InvalidSums { line, detail };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        bad(line, "it is not UTF-8 text".to_string())
    })?;
    let mut sums = BTreeMap::new();
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((digest_hex, rest)) = line.split_at_checked(64) else {
            return Err(bad(
                line_no,
                "expected a 64-character sha256 and a file name".to_string(),
            ));
        };
        let mut digest = [0u8; 32];
        hex::decode_to_slice(digest_hex, &mut digest)
            .map_err(|_| bad(line_no, format!("{digest_hex:?} is not a hex sha256")))?;
        let name = rest.trim_start_matches([' ', '\t']);
        if name.len() == rest.len() {
            return Err(bad(
                line_no,
                "expected spaces between the sha256 and the file name".to_string(),
            ));
        }
        let name = name.strip_prefix('*').unwrap_or(name).trim_end();
        if name.is_empty() {
            return Err(bad(line_no, "no file name after the sha256".to_string()));
        }
        if sums.insert(name.to_string(), digest).is_some() {
            return Err(bad(line_no, format!("{name} is listed twice")));
        }
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use crate::archive::testutil::*;
    use crate::archive::*;

    #[test]
    fn wrong_sum_fails_with_mismatch() {
        let spec = vault_spec();
        let state = &spec.entries[1].1;
        let meta = &spec.entries[0].1;
        let wrong = sha_hex(b"something else");
        let sums = format!("{}  meta.json\n{wrong}  state.bin\n", sha_hex(meta));
        let err = verify(&spec.clone().replace(SHA256SUMS, sums.into_bytes()).gz()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "state.bin sha256 mismatch: SHA256SUMS says {wrong}, archive has {}",
                sha_hex(state)
            )
        );
        // The error is reported by update(), as soon as SHA256SUMS is read.
        let sums = format!("{wrong}  meta.json\n{}  state.bin\n", sha_hex(state));
        let gz = spec.clone().replace(SHA256SUMS, sums.into_bytes()).gz();
        let mut v = SnapshotVerifier::new();
        let err = v.update(&gz).unwrap_err();
        assert!(matches!(&err, ArchiveError::HashMismatch { name, .. } if name == META_JSON));
        assert_eq!(v.update(b"more").unwrap_err(), err, "errors are sticky");
        assert_eq!(v.finish().unwrap_err(), err);
    }

    #[test]
    fn sums_must_cover_meta_and_state_and_only_present_files() {
        let spec = vault_spec();
        let (meta, state) = (&spec.entries[0].1, &spec.entries[1].1);
        let only_meta = format!("{}  meta.json\n", sha_hex(meta));
        let err = verify(
            &spec
                .clone()
                .replace(SHA256SUMS, only_meta.into_bytes())
                .gz(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "SHA256SUMS has no entry for state.bin");

        let extra = format!(
            "{}  meta.json\n{}  state.bin\n{}  other.bin\n",
            sha_hex(meta),
            sha_hex(state),
            sha_hex(b"x")
        );
        let err = verify(&spec.clone().replace(SHA256SUMS, extra.into_bytes()).gz()).unwrap_err();
        assert_eq!(err, ArchiveError::SumsListsAbsent("other.bin".into()));

        let garbage = b"not a checksum line\n".to_vec();
        let err = verify(&spec.replace(SHA256SUMS, garbage).gz()).unwrap_err();
        assert!(
            matches!(err, ArchiveError::InvalidSums { line: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn sums_accept_binary_marker_and_crlf() {
        let spec = vault_spec();
        let (meta, state) = (&spec.entries[0].1, &spec.entries[1].1);
        let sums = format!(
            "{} *meta.json\r\n\r\n{}  state.bin",
            sha_hex(meta),
            sha_hex(state).to_uppercase()
        );
        verify(&spec.replace(SHA256SUMS, sums.into_bytes()).gz()).unwrap();
    }

    #[test]
    fn missing_or_empty_sealed_fails() {
        let spec = vault_spec();
        let err = verify(&spec.clone().without(SHA256SUMS_SEALED).gz()).unwrap_err();
        assert_eq!(err, ArchiveError::MissingSealed);
        assert!(err.to_string().contains("standby node"));
        let err = verify(&spec.replace(SHA256SUMS_SEALED, Vec::new()).gz()).unwrap_err();
        assert_eq!(err, ArchiveError::EmptySealed);
    }

    #[test]
    fn missing_files_fail() {
        for name in [META_JSON, STATE_BIN, SHA256SUMS] {
            let err = verify(&vault_spec().without(name).gz()).unwrap_err();
            // Without meta.json or state.bin, SHA256SUMS lists an absent file,
            // but the missing file is what gets reported.
            assert_eq!(err, ArchiveError::MissingFile(name.into()), "{name}");
            assert_eq!(
                err.to_string(),
                format!("{name} is missing from the snapshot")
            );
        }
    }

    #[test]
    fn oversized_small_files_fail_early() {
        let big = vec![b' '; MAX_SMALL_FILE as usize + 1];
        let gz = vault_spec().replace(META_JSON, big).gz();
        let mut v = SnapshotVerifier::new();
        // Fails on the header, before the data is buffered.
        let err = v.update(&gz[..4096.min(gz.len())]).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Oversized { name, .. } if name == META_JSON),
            "{err}"
        );
    }

    #[test]
    fn meta_json_is_parsed_leniently() {
        let spec = vault_spec();
        let state_len = spec.entries[1].1.len();
        let rebuild = |meta: &[u8]| {
            let sums = format!(
                "{}  meta.json\n{}  state.bin\n",
                sha_hex(meta),
                sha_hex(&spec.entries[1].1)
            );
            spec.clone()
                .replace(META_JSON, meta.to_vec())
                .replace(SHA256SUMS, sums.into_bytes())
                .gz()
        };
        let info = verify(&rebuild(b"{\"Index\":\"7\",\"Extra\":true}")).unwrap();
        assert_eq!(info.meta.index, 0);
        assert_eq!(info.meta.term, 0);
        assert_eq!(info.meta.id, None);
        assert_eq!(info.meta.size, None);
        assert_eq!(info.meta.raw["Extra"], true);

        let err = verify(&rebuild(b"{not json")).unwrap_err();
        assert!(matches!(err, ArchiveError::InvalidMeta(_)), "{err}");

        let wrong_size = format!("{{\"Index\":3,\"Size\":{}}}", state_len + 1);
        let err = verify(&rebuild(wrong_size.as_bytes())).unwrap_err();
        assert_eq!(
            err,
            ArchiveError::StateSizeMismatch {
                meta: state_len as u64 + 1,
                actual: state_len as u64
            }
        );
    }
}
