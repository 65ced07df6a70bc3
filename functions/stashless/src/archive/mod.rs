//! In-flight verification of a Vault/OpenBao raft snapshot.
//!
//! `GET /v1/sys/storage/raft/snapshot` answers with a gzip-compressed tar
//! archive written by Go's `archive/tar` (hashicorp/raft-snapshot). It holds,
//! in this order:
//!
//! * `meta.json`: hashicorp/raft's `SnapshotMeta` as JSON,
//! * `state.bin`: the FSM state (`meta.json`'s `Size` bytes),
//! * `SHA256SUMS`: `sha256sum`-style lines for `meta.json` and `state.bin`,
//! * `SHA256SUMS.sealed`: the same list encrypted with the seal; we cannot open
//!   it, but Vault refuses to restore a snapshot without it.
//!
//! [`SnapshotVerifier`] checks all of that while the bytes stream past on their
//! way to S3: it is push-based (feed it chunks with
//! [`SnapshotVerifier::update`]), never buffers `state.bin`, keeps memory
//! bounded whatever the input, never panics, and reports the first provable
//! problem as soon as it is seen. [`SnapshotVerifier::finish`] then checks that
//! the stream was complete and consistent and returns a [`SnapshotInfo`] for
//! the backup manifest.
//!
//! What is checked:
//!
//! * gzip (decoded by flate2): the header (magic, method, flags, optional header
//!   CRC; a file name or comment of 64 KiB or more is refused), the deflate data,
//!   and every member's trailer (CRC32 and length). Concatenated gzip members are
//!   accepted, as RFC 1952 and `gunzip` do (Go writes just one); any other byte
//!   after the end of a member is an error. A member's trailer is checked when the
//!   next member starts or, for the last one, by [`SnapshotVerifier::finish`].
//! * tar: every header's checksum, the sizes (octal or base-256), PAX
//!   extended headers (`path` and `size` records are honoured, which is how Go
//!   writes a `state.bin` of 8 GiB or more) and GNU long names; the archive
//!   must end with two zero blocks, after which only zero padding may follow.
//! * content: `meta.json`, `state.bin`, `SHA256SUMS` and a non-empty
//!   `SHA256SUMS.sealed` must all be present, exactly once; `SHA256SUMS` must
//!   list `meta.json` and `state.bin`, every file it lists must be in the
//!   archive with that sha256, and `meta.json` must be JSON whose `Size` (when
//!   present) equals the size of `state.bin`. Other regular files are hashed
//!   and reported in [`SnapshotInfo::files`] but do not fail the check.
//!
//! One module per layer, each feeding the next as the bytes arrive: `gzip` (on
//! flate2) → `tar` → `content`.

mod content;
mod gzip;
mod tar;
#[cfg(test)]
mod testutil;

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::content::Verified;
use self::gzip::GzipLayer;
use self::tar::TarParser;

/// Name of the raft metadata file inside the snapshot.
pub const META_JSON: &str = "meta.json";
/// Name of the FSM state file inside the snapshot.
pub const STATE_BIN: &str = "state.bin";
/// Name of the checksum list inside the snapshot.
pub const SHA256SUMS: &str = "SHA256SUMS";
/// Name of the sealed (encrypted) checksum list inside the snapshot.
pub const SHA256SUMS_SEALED: &str = "SHA256SUMS.sealed";

/// Largest `meta.json`, `SHA256SUMS` or PAX extended header accepted (they are
/// buffered in memory).
pub const MAX_SMALL_FILE: u64 = 1 << 20;
/// Largest number of tar headers accepted (a raft snapshot has 4).
pub const MAX_ENTRIES: usize = 1024;
/// Longest entry name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 4096;

/// What the verifier learnt about a complete, consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Hex sha256 of the whole compressed stream (the object stored in S3).
    pub sha256: String,
    /// Size of the compressed stream in bytes.
    pub size: u64,
    /// The parsed `meta.json`.
    pub meta: SnapshotMeta,
    /// Every regular file of the archive, in archive order.
    pub files: Vec<ArchiveFile>,
    /// Size of `state.bin` in bytes.
    pub state_size: u64,
}

/// hashicorp/raft's `SnapshotMeta`, parsed leniently: a missing or mistyped
/// field is `None` (or 0), never an error. `raw` keeps the whole document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotMeta {
    /// `ID`, e.g. `"2-41-1690000000000"`.
    pub id: Option<String>,
    /// `Index`: the raft index the snapshot was taken at.
    pub index: u64,
    /// `Term`: the raft term the snapshot was taken in.
    pub term: u64,
    /// `Version`: the snapshot format version.
    pub version: Option<i64>,
    /// `Size`: the size of `state.bin` in bytes.
    pub size: Option<u64>,
    /// The whole `meta.json` document.
    pub raw: serde_json::Value,
}

/// One regular file of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveFile {
    pub name: String,
    pub size: u64,
    /// Hex sha256 of the file's content.
    pub sha256: String,
}

/// Why a snapshot stream is not a complete, consistent raft snapshot.
///
/// Offsets named "compressed" count bytes of the stream as received; the
/// others count bytes of the decompressed tar. The offset of invalid deflate data is
/// where the decompressor was given the chunk it failed in, not the exact bad byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    #[error("snapshot is empty: the snapshot endpoint returned no data")]
    Empty,
    #[error(
        "not a gzip stream (first bytes: {preview}): expected the gzip-compressed tar that \
         /v1/sys/storage/raft/snapshot returns"
    )]
    NotGzip { preview: String },
    #[error("unsupported gzip stream: {0}")]
    GzipUnsupported(String),
    #[error("snapshot is corrupt: the gzip header checksum does not match")]
    GzipHeaderCrc,
    #[error("snapshot is corrupt: invalid deflate data near compressed byte {offset}: {detail}")]
    Deflate { offset: u64, detail: String },
    #[error(
        "snapshot is corrupt: gzip CRC32 mismatch (the gzip trailer says {expected:08x}, \
         the data has {actual:08x})"
    )]
    GzipCrc { expected: u32, actual: u32 },
    #[error(
        "snapshot is corrupt: gzip length mismatch (the gzip trailer says {expected} bytes \
         modulo 2^32, the data has {actual})"
    )]
    GzipLength { expected: u32, actual: u32 },
    #[error("snapshot is truncated: the gzip stream ended early after {compressed} bytes")]
    Truncated { compressed: u64 },
    #[error(
        "unexpected data after the end of the gzip stream at compressed byte {offset}: \
         the snapshot is followed by something else"
    )]
    TrailingGarbage { offset: u64 },
    #[error("tar archive is corrupt: the header at tar offset {offset} has a bad checksum")]
    TarChecksum { offset: u64 },
    #[error("tar archive is corrupt: {detail} (header at tar offset {offset})")]
    TarHeader { offset: u64, detail: String },
    #[error("tar archive is incomplete: {name} is cut short ({got} of {expected} bytes)")]
    EntryCutShort {
        name: String,
        got: u64,
        expected: u64,
    },
    #[error("tar archive is incomplete: it has no end-of-archive marker")]
    TarUnterminated,
    #[error("unexpected non-zero data after the tar end-of-archive marker at tar offset {offset}")]
    TarTrailingData { offset: u64 },
    #[error("{name} is {size} bytes, more than the {limit} bytes accepted for it")]
    Oversized { name: String, size: u64, limit: u64 },
    #[error("tar archive has more than {limit} entries; a raft snapshot has 4")]
    TooManyEntries { limit: usize },
    #[error("tar archive has an entry name longer than {limit} bytes")]
    NameTooLong { limit: usize },
    #[error("tar archive contains {0} more than once")]
    Duplicate(String),
    #[error("{0} is missing from the snapshot")]
    MissingFile(String),
    #[error(
        "SHA256SUMS.sealed is missing: the snapshot was probably taken from a standby node \
         or is incomplete"
    )]
    MissingSealed,
    #[error(
        "SHA256SUMS.sealed is empty: Vault could not seal the checksums, so it would refuse \
         to restore this snapshot"
    )]
    EmptySealed,
    #[error("meta.json is not valid JSON: {0}")]
    InvalidMeta(String),
    #[error("SHA256SUMS is malformed: line {line}: {detail}")]
    InvalidSums { line: usize, detail: String },
    #[error("SHA256SUMS has no entry for {0}")]
    SumsMissingEntry(String),
    #[error("SHA256SUMS lists {0} but the archive has no such file")]
    SumsListsAbsent(String),
    #[error("{name} sha256 mismatch: SHA256SUMS says {expected}, archive has {actual}")]
    HashMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("meta.json says state.bin is {meta} bytes but the archive holds {actual}")]
    StateSizeMismatch { meta: u64, actual: u64 },
}

type Result<T> = std::result::Result<T, ArchiveError>;

/// Verifies a raft snapshot stream chunk by chunk; see the module docs.
pub struct SnapshotVerifier {
    stream_hash: Sha256,
    compressed_len: u64,
    gzip: GzipLayer<TarParser>,
    /// The first error; every later call returns it again.
    failed: Option<ArchiveError>,
}

impl Default for SnapshotVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SnapshotVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tar = self.gzip.get_ref();
        f.debug_struct("SnapshotVerifier")
            .field("compressed_len", &self.compressed_len)
            .field("tar_offset", &tar.map(TarParser::pos))
            .field("files", &tar.map(|t| t.content().files()))
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl SnapshotVerifier {
    pub fn new() -> Self {
        SnapshotVerifier {
            stream_hash: Sha256::new(),
            compressed_len: 0,
            gzip: GzipLayer::new(TarParser::new()),
            failed: None,
        }
    }

    /// Feeds the next chunk of the compressed stream. Errors as soon as the
    /// stream is provably bad; after an error every call returns that error.
    pub fn update(&mut self, chunk: &[u8]) -> std::result::Result<(), ArchiveError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.stream_hash.update(chunk);
        self.compressed_len += chunk.len() as u64;
        self.gzip.update(chunk).inspect_err(|e| {
            self.failed = Some(e.clone());
        })
    }

    /// Bytes of compressed input seen so far.
    pub fn compressed_len(&self) -> u64 {
        self.compressed_len
    }

    /// The stream ended: checks it is complete and consistent.
    pub fn finish(self) -> std::result::Result<SnapshotInfo, ArchiveError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.compressed_len == 0 {
            return Err(ArchiveError::Empty);
        }
        let Verified {
            meta,
            files,
            state_size,
        } = self.gzip.finish()?.finish()?.finish()?;
        Ok(SnapshotInfo {
            sha256: hex::encode(self.stream_hash.finalize()),
            size: self.compressed_len,
            meta,
            files,
            state_size,
        })
    }
}

/// Refuses a file that is buffered in memory (`meta.json`, `SHA256SUMS`, a PAX
/// extended header) when its header says it is too large.
fn check_small(name: &str, size: u64) -> Result<()> {
    if size > MAX_SMALL_FILE {
        return Err(ArchiveError::Oversized {
            name: name.to_string(),
            size,
            limit: MAX_SMALL_FILE,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::archive::testutil::*;
    use crate::archive::*;

    #[test]
    fn valid_snapshot_passes_at_any_chunk_size() {
        let spec = vault_spec();
        let gz = spec.gz();
        let state = &spec.entries[1].1;
        for chunk in [1, 7, 4096, gz.len()] {
            let info = verify_chunked(&gz, chunk).unwrap_or_else(|e| panic!("chunk {chunk}: {e}"));
            assert_eq!(info.sha256, sha_hex(&gz));
            assert_eq!(info.size, gz.len() as u64);
            assert_eq!(info.state_size, state.len() as u64);
            assert_eq!(info.meta.index, 41);
            assert_eq!(info.meta.term, 2);
            assert_eq!(info.meta.id.as_deref(), Some("2-41-1690000000000"));
            assert_eq!(info.meta.version, Some(1));
            assert_eq!(info.meta.size, Some(state.len() as u64));
            assert_eq!(info.meta.raw["ConfigurationIndex"], 1);
            let names: Vec<_> = info.files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, [META_JSON, STATE_BIN, SHA256SUMS, SHA256SUMS_SEALED]);
            for (file, (_, data)) in info.files.iter().zip(&spec.entries) {
                assert_eq!(file.size, data.len() as u64);
                assert_eq!(file.sha256, sha_hex(data));
            }
        }
    }

    #[test]
    fn info_round_trips_through_json() {
        let info = verify(&vault_spec().gz()).unwrap();
        let json = serde_json::to_string(&info).unwrap();
        let back: SnapshotInfo = serde_json::from_str(&json).unwrap();
        assert_eq!(back, info);
    }

    #[test]
    fn empty_stream_fails() {
        assert_eq!(verify_chunked(&[], 1).unwrap_err(), ArchiveError::Empty);
        let mut v = SnapshotVerifier::new();
        v.update(&[]).unwrap();
        assert_eq!(
            v.finish().unwrap_err().to_string(),
            "snapshot is empty: the snapshot endpoint returned no data"
        );
    }

    #[test]
    fn never_panics_on_mangled_input() {
        let spec = spec_with_state(noise(3000, 5));
        let gz = spec.gz();
        let tar = spec.tar();
        let mut seed = 99u64;
        for round in 0..400 {
            let r = noise(16, seed);
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let pick =
                |i: usize| u64::from_le_bytes(r[i * 8..i * 8 + 8].try_into().unwrap()) as usize;
            // Mangle the uncompressed tar (headers included), then gzip it, so
            // the tar parser sees the garbage; or mangle the gzip stream.
            let data = if round % 2 == 0 {
                let mut t = tar.clone();
                let at = pick(0) % 2048; // the first headers and meta.json
                let len = (pick(1) % 64).min(t.len() - at);
                t[at..at + len].copy_from_slice(&noise(len, seed)[..]);
                gzip(&t)
            } else {
                let mut g = gz.clone();
                let at = pick(0) % g.len();
                g[at] = g[at].wrapping_add(1 + (pick(1) % 255) as u8);
                g
            };
            let _ = verify_chunked(&data, 1 + pick(1) % 5000);
        }
    }
}
