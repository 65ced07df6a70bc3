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
//! * gzip: the header (magic, method, flags, optional header CRC), the deflate
//!   data, and every member's trailer (CRC32 and length). Concatenated gzip
//!   members are accepted, as RFC 1952 and `gunzip` do (Go writes just one);
//!   any other byte after the end of a member is an error.
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

use std::collections::BTreeMap;
use std::fmt;

use flate2::{Crc, Decompress, FlushDecompress, Status};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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

/// Size of the buffer the deflate data is inflated into.
const OUT_BUF_LEN: usize = 128 * 1024;
const BLOCK: usize = 512;
/// How many leading bytes of the stream are kept to describe a non-gzip input.
const HEAD_PREVIEW: usize = 16;

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
/// others count bytes of the decompressed tar.
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
    /// The first bytes of the stream, to describe a stream that is not gzip.
    head: Vec<u8>,
    gz: GzState,
    inflater: Decompress,
    out: Vec<u8>,
    member_crc: Crc,
    /// Compressed offset of the current member's deflate data.
    deflate_start: u64,
    tar: TarParser,
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
        f.debug_struct("SnapshotVerifier")
            .field("compressed_len", &self.compressed_len)
            .field("tar_offset", &self.tar.pos)
            .field("files", &self.tar.files)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl SnapshotVerifier {
    pub fn new() -> Self {
        SnapshotVerifier {
            stream_hash: Sha256::new(),
            compressed_len: 0,
            head: Vec::with_capacity(HEAD_PREVIEW),
            gz: GzState::Header(GzHeader::new(true)),
            inflater: Decompress::new(false),
            out: vec![0; OUT_BUF_LEN],
            member_crc: Crc::new(),
            deflate_start: 0,
            tar: TarParser::new(),
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
        let offset = self.compressed_len;
        self.compressed_len += chunk.len() as u64;
        if self.head.len() < HEAD_PREVIEW {
            let n = (HEAD_PREVIEW - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..n]);
        }
        self.process(chunk, offset).inspect_err(|e| {
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
        if !matches!(self.gz, GzState::End) {
            return Err(ArchiveError::Truncated {
                compressed: self.compressed_len,
            });
        }
        let tar = self.tar.finish()?;
        let file = |name: &str| tar.files.iter().find(|f| f.name == name);
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
        // their entry ends); mismatching digests were reported by `update`.
        let sums = tar.sums.unwrap_or_default();
        for name in [META_JSON, STATE_BIN] {
            if !sums.contains_key(name) {
                return Err(ArchiveError::SumsMissingEntry(name.to_string()));
            }
        }
        if let Some(name) = sums.keys().find(|name| file(name).is_none()) {
            return Err(ArchiveError::SumsListsAbsent(name.clone()));
        }
        let state_size = file(STATE_BIN).map_or(0, |f| f.size);
        let meta = tar.meta.unwrap_or_default();
        if let Some(size) = meta.size
            && size != state_size
        {
            return Err(ArchiveError::StateSizeMismatch {
                meta: size,
                actual: state_size,
            });
        }
        Ok(SnapshotInfo {
            sha256: hex::encode(self.stream_hash.finalize()),
            size: self.compressed_len,
            meta,
            files: tar.files,
            state_size,
        })
    }

    fn process(&mut self, mut input: &[u8], mut offset: u64) -> Result<()> {
        while !input.is_empty() {
            let consumed = match &mut self.gz {
                GzState::Header(h) => match h.feed(input, &self.head, offset)? {
                    Some(n) => {
                        self.deflate_start = offset + n as u64;
                        self.inflater.reset(false);
                        self.member_crc.reset();
                        self.gz = GzState::Body;
                        n
                    }
                    None => input.len(),
                },
                GzState::Body => self.inflate(input, offset)?,
                GzState::Trailer { buf, have } => {
                    let n = (buf.len() - *have).min(input.len());
                    buf[*have..*have + n].copy_from_slice(&input[..n]);
                    *have += n;
                    if *have == buf.len() {
                        let [c0, c1, c2, c3, l0, l1, l2, l3] = *buf;
                        let expected = u32::from_le_bytes([c0, c1, c2, c3]);
                        let actual = self.member_crc.sum();
                        if expected != actual {
                            return Err(ArchiveError::GzipCrc { expected, actual });
                        }
                        let expected = u32::from_le_bytes([l0, l1, l2, l3]);
                        let actual = self.member_crc.amount();
                        if expected != actual {
                            return Err(ArchiveError::GzipLength { expected, actual });
                        }
                        self.gz = GzState::End;
                    }
                    n
                }
                GzState::End => {
                    // Only another gzip member may follow.
                    if input[0] != GZIP_MAGIC[0] {
                        return Err(ArchiveError::TrailingGarbage { offset });
                    }
                    self.gz = GzState::Header(GzHeader::new(false));
                    0
                }
            };
            input = &input[consumed..];
            offset += consumed as u64;
        }
        Ok(())
    }

    /// Inflates as much of `input` as belongs to the current member and
    /// passes the output to the tar parser. Returns the bytes consumed.
    fn inflate(&mut self, input: &[u8], offset: u64) -> Result<usize> {
        let mut pos = 0;
        loop {
            let in_before = self.inflater.total_in();
            let out_before = self.inflater.total_out();
            let status =
                match self
                    .inflater
                    .decompress(&input[pos..], &mut self.out, FlushDecompress::None)
                {
                    Ok(status) => status,
                    Err(e) => {
                        return Err(ArchiveError::Deflate {
                            offset: self.deflate_start + self.inflater.total_in(),
                            detail: e.to_string(),
                        });
                    }
                };
            let consumed = usize::try_from(self.inflater.total_in() - in_before).unwrap_or(0);
            let produced = usize::try_from(self.inflater.total_out() - out_before).unwrap_or(0);
            pos = (pos + consumed).min(input.len());
            if produced > 0 {
                let data = &self.out[..produced.min(self.out.len())];
                self.member_crc.update(data);
                self.tar.feed(data)?;
            }
            if status == Status::StreamEnd {
                self.gz = GzState::Trailer {
                    buf: [0; 8],
                    have: 0,
                };
                return Ok(pos);
            }
            if produced == self.out.len() {
                continue; // more output may be pending
            }
            if pos == input.len() {
                return Ok(pos);
            }
            if consumed == 0 && produced == 0 {
                return Err(ArchiveError::Deflate {
                    offset: offset + pos as u64,
                    detail: "the decompressor made no progress".to_string(),
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------
// gzip framing (RFC 1952)

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const FRESERVED: u8 = 0xe0;

enum GzState {
    Header(GzHeader),
    Body,
    Trailer {
        buf: [u8; 8],
        have: usize,
    },
    /// A member ended; the stream may end here or another member follow.
    End,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GzStage {
    Fixed,
    ExtraLen,
    Extra(u16),
    Name,
    Comment,
    HeaderCrc,
    Done,
}

/// Incremental parser of one gzip member header.
struct GzHeader {
    first_member: bool,
    stage: GzStage,
    buf: [u8; 10],
    have: usize,
    flags: u8,
    crc: Crc,
}

impl GzHeader {
    fn new(first_member: bool) -> Self {
        GzHeader {
            first_member,
            stage: GzStage::Fixed,
            buf: [0; 10],
            have: 0,
            flags: 0,
            crc: Crc::new(),
        }
    }

    /// The stage that follows `stage`, given the header flags.
    fn next_stage(&self, stage: GzStage) -> GzStage {
        let order = [
            (GzStage::ExtraLen, FEXTRA),
            (GzStage::Name, FNAME),
            (GzStage::Comment, FCOMMENT),
            (GzStage::HeaderCrc, FHCRC),
        ];
        let rank = |s: GzStage| match s {
            GzStage::Fixed => 0,
            GzStage::ExtraLen | GzStage::Extra(_) => 1,
            GzStage::Name => 2,
            GzStage::Comment => 3,
            GzStage::HeaderCrc => 4,
            GzStage::Done => 5,
        };
        let current = rank(stage);
        order
            .iter()
            .find(|(s, flag)| rank(*s) > current && self.flags & flag != 0)
            .map_or(GzStage::Done, |(s, _)| *s)
    }

    /// Collects up to `want` bytes into `buf`; returns how many were taken.
    fn collect(&mut self, input: &[u8], want: usize) -> usize {
        let n = (want - self.have).min(input.len());
        self.buf[self.have..self.have + n].copy_from_slice(&input[..n]);
        self.have += n;
        n
    }

    /// Consumes header bytes. `Some(n)` once the header is complete (`n`
    /// bytes of `input` were part of it), `None` if all of `input` was header
    /// and more is needed.
    fn feed(&mut self, input: &[u8], head: &[u8], offset: u64) -> Result<Option<usize>> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.stage {
                GzStage::Fixed => {
                    pos += self.collect(rest, 10);
                    let magic_len = self.have.min(2);
                    if self.buf[..magic_len] != GZIP_MAGIC[..magic_len] {
                        return Err(if self.first_member {
                            ArchiveError::NotGzip {
                                preview: describe_bytes(head),
                            }
                        } else {
                            ArchiveError::TrailingGarbage {
                                offset: offset + pos as u64 - self.have as u64,
                            }
                        });
                    }
                    if self.have < 10 {
                        return Ok(None);
                    }
                    if self.buf[2] != 8 {
                        return Err(ArchiveError::GzipUnsupported(format!(
                            "compression method {} (only 8, deflate, exists)",
                            self.buf[2]
                        )));
                    }
                    self.flags = self.buf[3];
                    if self.flags & FRESERVED != 0 {
                        return Err(ArchiveError::GzipUnsupported(format!(
                            "reserved header flags are set ({:#04x})",
                            self.flags
                        )));
                    }
                    self.crc.update(&self.buf);
                    self.have = 0;
                    self.stage = self.next_stage(GzStage::Fixed);
                }
                GzStage::ExtraLen => {
                    pos += self.collect(rest, 2);
                    if self.have < 2 {
                        return Ok(None);
                    }
                    self.crc.update(&self.buf[..2]);
                    self.have = 0;
                    self.stage = GzStage::Extra(u16::from_le_bytes([self.buf[0], self.buf[1]]));
                }
                GzStage::Extra(remaining) => {
                    let n = usize::from(remaining).min(rest.len());
                    self.crc.update(&rest[..n]);
                    pos += n;
                    // n <= remaining, which is a u16
                    let left = remaining - u16::try_from(n).unwrap_or(remaining);
                    if left > 0 {
                        self.stage = GzStage::Extra(left);
                        return Ok(None);
                    }
                    self.stage = self.next_stage(GzStage::Extra(0));
                }
                GzStage::Name | GzStage::Comment => match rest.iter().position(|&b| b == 0) {
                    Some(i) => {
                        self.crc.update(&rest[..=i]);
                        pos += i + 1;
                        self.stage = self.next_stage(self.stage);
                    }
                    None => {
                        self.crc.update(rest);
                        return Ok(None);
                    }
                },
                GzStage::HeaderCrc => {
                    pos += self.collect(rest, 2);
                    if self.have < 2 {
                        return Ok(None);
                    }
                    let stored = u16::from_le_bytes([self.buf[0], self.buf[1]]);
                    // The low 16 bits of the CRC32 of the header so far.
                    if stored != (self.crc.sum() & 0xffff) as u16 {
                        return Err(ArchiveError::GzipHeaderCrc);
                    }
                    self.stage = GzStage::Done;
                }
                GzStage::Done => return Ok(Some(pos)),
            }
        }
    }
}

/// Describes the first bytes of a stream for a person: hex, plus the text if
/// it looks like text (an HTML or JSON error page, say).
fn describe_bytes(bytes: &[u8]) -> String {
    let hex = bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    let texty = !bytes.is_empty()
        && bytes
            .iter()
            .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace());
    if texty {
        format!("{hex}, text {:?}", String::from_utf8_lossy(bytes))
    } else {
        hex
    }
}

// ---------------------------------------------------------------------------
// tar (ustar, with PAX and GNU extensions as Go's archive/tar reads them)

enum TarState {
    /// Expecting a 512-byte header block.
    Header,
    /// Inside an entry's data; `pad` bytes of padding follow it.
    Data {
        remaining: u64,
        pad: u64,
        sink: Sink,
    },
    /// Skipping the padding after an entry.
    Pad { remaining: u64 },
    /// Two zero blocks were seen; only zero padding may follow.
    End,
}

/// Where an entry's data goes.
enum Sink {
    Skip,
    File(Box<FileSink>),
    Pax(Vec<u8>),
    LongName(Vec<u8>),
}

struct FileSink {
    name: String,
    size: u64,
    hasher: Sha256,
    /// The content, for the small files that are parsed.
    buf: Option<Vec<u8>>,
}

impl Sink {
    fn write(&mut self, data: &[u8]) {
        match self {
            Sink::Skip => {}
            Sink::File(f) => {
                f.hasher.update(data);
                if let Some(buf) = &mut f.buf {
                    buf.extend_from_slice(data);
                }
            }
            Sink::Pax(buf) | Sink::LongName(buf) => buf.extend_from_slice(data),
        }
    }

    fn describe(&self) -> String {
        match self {
            Sink::Skip => "an entry".to_string(),
            Sink::File(f) => f.name.clone(),
            Sink::Pax(_) => "a PAX extended header".to_string(),
            Sink::LongName(_) => "a GNU long name entry".to_string(),
        }
    }
}

struct TarParser {
    state: TarState,
    block: [u8; BLOCK],
    block_len: usize,
    /// Decompressed bytes consumed so far.
    pos: u64,
    zero_blocks: u8,
    headers: usize,
    /// `path` / `size` overrides from the last PAX header, for the next entry.
    pending_name: Option<String>,
    pending_size: Option<u64>,
    /// A GNU long name for the next entry. As in Go's archive/tar (what Vault
    /// reads snapshots with), it wins over a PAX `path`, whatever the order.
    pending_long_name: Option<String>,
    files: Vec<ArchiveFile>,
    /// Raw digests, parallel to `files`.
    digests: Vec<[u8; 32]>,
    meta: Option<SnapshotMeta>,
    sums: Option<BTreeMap<String, [u8; 32]>>,
}

/// What the tar parser found in a complete archive.
struct TarSummary {
    files: Vec<ArchiveFile>,
    meta: Option<SnapshotMeta>,
    sums: Option<BTreeMap<String, [u8; 32]>>,
}

impl TarParser {
    fn new() -> Self {
        TarParser {
            state: TarState::Header,
            block: [0; BLOCK],
            block_len: 0,
            pos: 0,
            zero_blocks: 0,
            headers: 0,
            pending_name: None,
            pending_size: None,
            pending_long_name: None,
            files: Vec::new(),
            digests: Vec::new(),
            meta: None,
            sums: None,
        }
    }

    fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            match &mut self.state {
                TarState::Header => {
                    if self.block_len == 0 && data.len() >= BLOCK {
                        let (block, rest) = data.split_at(BLOCK);
                        data = rest;
                        self.header(block)?;
                    } else {
                        let n = (BLOCK - self.block_len).min(data.len());
                        self.block[self.block_len..self.block_len + n].copy_from_slice(&data[..n]);
                        self.block_len += n;
                        data = &data[n..];
                        if self.block_len == BLOCK {
                            self.block_len = 0;
                            let block = self.block;
                            self.header(&block)?;
                        }
                    }
                }
                TarState::Data {
                    remaining, sink, ..
                } => {
                    let n = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                    sink.write(&data[..n]);
                    *remaining -= n as u64;
                    self.pos += n as u64;
                    data = &data[n..];
                    if *remaining == 0 {
                        self.end_entry()?;
                    }
                }
                TarState::Pad { remaining } => {
                    let n = usize::try_from(*remaining).map_or(data.len(), |r| r.min(data.len()));
                    *remaining -= n as u64;
                    self.pos += n as u64;
                    data = &data[n..];
                    if *remaining == 0 {
                        self.state = TarState::Header;
                    }
                }
                TarState::End => {
                    if let Some(i) = data.iter().position(|&b| b != 0) {
                        return Err(ArchiveError::TarTrailingData {
                            offset: self.pos + i as u64,
                        });
                    }
                    self.pos += data.len() as u64;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Handles one header block (`block.len() == BLOCK`).
    fn header(&mut self, block: &[u8]) -> Result<()> {
        let offset = self.pos;
        self.pos += BLOCK as u64;
        let header_err = |detail: &str| ArchiveError::TarHeader {
            offset,
            detail: detail.to_string(),
        };
        if block.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            if self.zero_blocks >= 2 {
                if self.pending_name.is_some()
                    || self.pending_size.is_some()
                    || self.pending_long_name.is_some()
                {
                    return Err(header_err("an extended header is not followed by an entry"));
                }
                self.state = TarState::End;
            }
            return Ok(());
        }
        if self.zero_blocks > 0 {
            return Err(header_err("a zero block is followed by another header"));
        }
        if !checksum_ok(block) {
            return Err(ArchiveError::TarChecksum { offset });
        }
        self.headers += 1;
        if self.headers > MAX_ENTRIES {
            return Err(ArchiveError::TooManyEntries { limit: MAX_ENTRIES });
        }
        let size =
            parse_numeric(&block[124..136]).ok_or_else(|| header_err("invalid size field"))?;
        match block[156] {
            // PAX extended header for the next entry.
            b'x' => {
                check_small("a PAX extended header", size)?;
                self.start_entry(size, Sink::Pax(Vec::with_capacity(size as usize)))
            }
            // GNU long name for the next entry.
            b'L' => {
                if size > MAX_NAME_LEN as u64 + 1 {
                    return Err(ArchiveError::NameTooLong {
                        limit: MAX_NAME_LEN,
                    });
                }
                self.start_entry(size, Sink::LongName(Vec::with_capacity(size as usize)))
            }
            // GNU long link name: not needed.
            b'K' => self.start_entry(size, Sink::Skip),
            // Global PAX header: not needed, but Go returns it as an entry of its
            // own, which consumes the extended headers before it.
            b'g' => {
                self.pending_name = None;
                self.pending_size = None;
                self.pending_long_name = None;
                self.start_entry(size, Sink::Skip)
            }
            typeflag => {
                let (long_name, pax_name) =
                    (self.pending_long_name.take(), self.pending_name.take());
                let name = match long_name.or(pax_name) {
                    Some(name) => name,
                    None => ustar_name(block),
                };
                let size = self.pending_size.take().unwrap_or(size);
                let name = match name.strip_prefix("./") {
                    Some(stripped) => stripped.to_string(),
                    None => name,
                };
                match typeflag {
                    // Old tars mark directories as regular files named "dir/".
                    b'0' | b'7' | 0 if !(typeflag == 0 && name.ends_with('/')) => {
                        self.start_file(name, size)
                    }
                    // Links, devices, directories, FIFOs: header only.
                    b'1'..=b'6' | 0 => Ok(()),
                    // Anything else (GNU sparse, vendor types): skip its data.
                    _ => self.start_entry(size, Sink::Skip),
                }
            }
        }
    }

    fn start_file(&mut self, name: String, size: u64) -> Result<()> {
        if self.files.iter().any(|f| f.name == name) {
            return Err(ArchiveError::Duplicate(name));
        }
        let buf = if name == META_JSON || name == SHA256SUMS {
            check_small(&name, size)?;
            Some(Vec::with_capacity(size as usize))
        } else {
            None
        };
        let sink = Sink::File(Box::new(FileSink {
            name,
            size,
            hasher: Sha256::new(),
            buf,
        }));
        self.start_entry(size, sink)
    }

    fn start_entry(&mut self, size: u64, sink: Sink) -> Result<()> {
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.state = TarState::Data {
            remaining: size,
            pad,
            sink,
        };
        if size == 0 {
            self.end_entry()?;
        }
        Ok(())
    }

    /// The current entry's data is complete.
    fn end_entry(&mut self) -> Result<()> {
        let TarState::Data { pad, sink, .. } = std::mem::replace(&mut self.state, TarState::Header)
        else {
            return Ok(());
        };
        if pad > 0 {
            self.state = TarState::Pad { remaining: pad };
        }
        match sink {
            Sink::Skip => Ok(()),
            Sink::File(file) => self.end_file(*file),
            Sink::Pax(buf) => self.apply_pax(&buf),
            Sink::LongName(buf) => {
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                // Go ignores an empty long name.
                self.pending_long_name =
                    (end > 0).then(|| String::from_utf8_lossy(&buf[..end]).into_owned());
                Ok(())
            }
        }
    }

    fn end_file(&mut self, file: FileSink) -> Result<()> {
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

    /// Applies the `path` and `size` records of a PAX extended header to the
    /// next entry, replacing those of an earlier PAX header (as Go does).
    /// Records are `"<len> <key>=<value>\n"`, `<len>` counting the whole record.
    fn apply_pax(&mut self, mut buf: &[u8]) -> Result<()> {
        self.pending_name = None;
        self.pending_size = None;
        let offset = self.pos;
        let bad = |detail: &str| ArchiveError::TarHeader {
            offset,
            detail: format!("malformed PAX extended header: {detail}"),
        };
        while !buf.is_empty() {
            let space = buf
                .iter()
                .take(20)
                .position(|&b| b == b' ')
                .ok_or_else(|| bad("record without a length"))?;
            let len: usize = std::str::from_utf8(&buf[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("invalid record length"))?;
            if len <= space + 1 || len > buf.len() || buf[len - 1] != b'\n' {
                return Err(bad("record length does not match its content"));
            }
            let record = &buf[space + 1..len - 1];
            buf = &buf[len..];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| bad("record without '='"))?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            match key {
                b"path" => {
                    if value.len() > MAX_NAME_LEN {
                        return Err(ArchiveError::NameTooLong {
                            limit: MAX_NAME_LEN,
                        });
                    }
                    self.pending_name = Some(String::from_utf8_lossy(value).into_owned());
                }
                b"size" => {
                    let size = std::str::from_utf8(value)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .filter(|&s| s <= i64::MAX as u64)
                        .ok_or_else(|| bad("invalid size record"))?;
                    self.pending_size = Some(size);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<TarSummary> {
        match self.state {
            TarState::End => Ok(TarSummary {
                files: self.files,
                meta: self.meta,
                sums: self.sums,
            }),
            TarState::Data {
                remaining, sink, ..
            } => {
                let expected = match &sink {
                    Sink::File(f) => f.size,
                    _ => remaining,
                };
                Err(ArchiveError::EntryCutShort {
                    name: sink.describe(),
                    got: expected.saturating_sub(remaining),
                    expected,
                })
            }
            TarState::Header | TarState::Pad { .. } => Err(ArchiveError::TarUnterminated),
        }
    }
}

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

/// Verifies a header's checksum: the sum of its bytes with the checksum field
/// read as spaces, unsigned (POSIX) or signed (some old tars), as Go accepts.
fn checksum_ok(block: &[u8]) -> bool {
    let Some(stored) = parse_octal(&block[148..156]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// Parses a numeric header field: octal text, or GNU base-256 when the high
/// bit of the first byte is set. Negative or overflowing values are `None`.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    match field.first() {
        Some(&first) if first & 0x80 != 0 => {
            if first & 0x40 != 0 {
                return None; // negative
            }
            let mut value = u64::from(first & 0x3f);
            for &b in &field[1..] {
                value = value.checked_mul(256)?.checked_add(u64::from(b))?;
            }
            (value <= i64::MAX as u64).then_some(value)
        }
        _ => parse_octal(field),
    }
}

/// Parses octal text padded with spaces or NULs on either side; empty is 0.
fn parse_octal(field: &[u8]) -> Option<u64> {
    let pad = |b: &u8| *b == b' ' || *b == 0;
    let start = field.iter().position(|b| !pad(b)).unwrap_or(field.len());
    let end = field.iter().rposition(|b| !pad(b)).map_or(start, |i| i + 1);
    let mut value: u64 = 0;
    for &b in &field[start..end] {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// The entry name of a ustar header: `prefix/name` for POSIX ustar, `name`
/// for GNU and v7 headers.
fn ustar_name(block: &[u8]) -> String {
    let cstr = |field: &[u8]| {
        let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        String::from_utf8_lossy(&field[..end]).into_owned()
    };
    let name = cstr(&block[0..100]);
    if &block[257..265] == b"ustar\x0000" {
        let prefix = cstr(&block[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
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
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// Deterministic pseudo-random bytes (xorshift64*).
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// A state.bin that exercises both stored and Huffman-coded deflate blocks.
    fn state_bin() -> Vec<u8> {
        let mut state = noise(200 * 1024, 42);
        for i in 0..3000 {
            state.extend_from_slice(format!("logical/kv/key-{i}: value {}\n", i * 7).as_bytes());
        }
        state
    }

    fn sha_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn meta_json(size: usize) -> Vec<u8> {
        format!(
            "{{\"Version\":1,\"ID\":\"2-41-1690000000000\",\"Index\":41,\"Term\":2,\"Peers\":\"ka4xMjcuMC4wLjE6ODIwMQ==\",\
             \"Configuration\":{{\"Servers\":[{{\"Suffrage\":0,\"ID\":\"node1\",\"Address\":\"127.0.0.1:8201\"}}]}},\
             \"ConfigurationIndex\":1,\"Size\":{size},\"CRC\":\"3q2+7w==\"}}\n"
        )
        .into_bytes()
    }

    #[derive(Clone)]
    struct Spec {
        entries: Vec<(String, Vec<u8>)>,
        pax: bool,
    }

    /// The four files Vault writes, with a correct SHA256SUMS.
    fn vault_spec() -> Spec {
        spec_with_state(state_bin())
    }

    fn spec_with_state(state: Vec<u8>) -> Spec {
        let meta = meta_json(state.len());
        let sums = format!(
            "{}  state.bin\n{}  meta.json\n",
            sha_hex(&state),
            sha_hex(&meta)
        );
        Spec {
            entries: vec![
                (META_JSON.into(), meta),
                (STATE_BIN.into(), state),
                (SHA256SUMS.into(), sums.into_bytes()),
                (SHA256SUMS_SEALED.into(), noise(120, 7)),
            ],
            pax: false,
        }
    }

    impl Spec {
        fn without(mut self, name: &str) -> Self {
            self.entries.retain(|(n, _)| n != name);
            self
        }
        fn replace(mut self, name: &str, data: Vec<u8>) -> Self {
            for (n, d) in &mut self.entries {
                if n == name {
                    *d = data.clone();
                }
            }
            self
        }
        fn tar(&self) -> Vec<u8> {
            let mut builder = tar::Builder::new(Vec::new());
            for (name, data) in &self.entries {
                if self.pax {
                    builder
                        .append_pax_extensions([
                            ("mtime", b"1690000000.123456789".as_slice()),
                            ("comment", b"written with a PAX header".as_slice()),
                        ])
                        .unwrap();
                }
                let mut header = tar::Header::new_ustar();
                header.set_size(data.len() as u64);
                header.set_mode(0o600);
                header.set_mtime(1_690_000_000);
                header.set_entry_type(tar::EntryType::Regular);
                builder
                    .append_data(&mut header, name, data.as_slice())
                    .unwrap();
            }
            builder.into_inner().unwrap()
        }
        fn gz(&self) -> Vec<u8> {
            gzip(&self.tar())
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn verify_chunked(
        data: &[u8],
        chunk: usize,
    ) -> std::result::Result<SnapshotInfo, ArchiveError> {
        let mut v = SnapshotVerifier::new();
        for c in data.chunks(chunk.max(1)) {
            v.update(c)?;
        }
        assert_eq!(v.compressed_len(), data.len() as u64);
        v.finish()
    }

    fn verify(data: &[u8]) -> std::result::Result<SnapshotInfo, ArchiveError> {
        verify_chunked(data, data.len().max(1))
    }

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
    fn truncated_stream_always_fails() {
        let gz = vault_spec().gz();
        let step = (gz.len() / 50).max(1);
        let cuts = (1..gz.len())
            .step_by(step)
            .chain(gz.len().saturating_sub(20)..gz.len());
        for cut in cuts {
            let err = verify_chunked(&gz[..cut], 4096)
                .expect_err(&format!("truncated at {cut} of {} passed", gz.len()));
            assert!(
                matches!(err, ArchiveError::Truncated { compressed } if compressed == cut as u64),
                "cut {cut}: {err}"
            );
            assert!(err.to_string().starts_with("snapshot is truncated"));
        }
    }

    #[test]
    fn flipped_byte_fails() {
        // Past the 10-byte gzip header, whose MTIME/XFL/OS bytes are not
        // covered by any checksum; the trailer is covered. Sparse on the full
        // snapshot, dense on a small one (to keep the debug-mode test quick).
        let small = spec_with_state([noise(24 * 1024, 9), b"kv/a: 1\n".repeat(600)].concat());
        for (gz, positions) in [(vault_spec().gz(), 41), (small.gz(), 211)] {
            let cases = (10..gz.len())
                .step_by(gz.len() / positions)
                .chain(gz.len() - 8..gz.len());
            for (i, pos) in cases.enumerate() {
                let mask = [0x01, 0x80, 0xff, 0x10][i % 4];
                let mut bad = gz.clone();
                bad[pos] ^= mask;
                assert!(
                    verify(&bad).is_err(),
                    "flip {mask:#x} at {pos} of {} passed",
                    gz.len()
                );
            }
        }
    }

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
    fn garbage_is_not_gzip() {
        let html = b"<html><body>502 Bad Gateway</body></html>";
        let err = verify(html).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("not a gzip stream (first bytes: 3c 68 74 6d"),
            "{msg}"
        );
        assert!(msg.contains("<html><body>502 "), "{msg}");
        // Fails at once, even one byte at a time.
        let mut v = SnapshotVerifier::new();
        assert!(matches!(
            v.update(&[0x00]),
            Err(ArchiveError::NotGzip { .. })
        ));
        // An uncompressed tar is not accepted either.
        assert!(matches!(
            verify(&vault_spec().tar()),
            Err(ArchiveError::NotGzip { .. })
        ));
        let err = verify(&noise(10_000, 3)).unwrap_err();
        assert!(matches!(err, ArchiveError::NotGzip { .. }), "{err}");
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
    fn pax_headers_work() {
        let mut spec = vault_spec();
        spec.pax = true;
        let tar = spec.tar();
        assert!(
            tar.windows(9).any(|w| w == b"comment=w"),
            "test archive has PAX headers"
        );
        let info = verify(&gzip(&tar)).unwrap();
        assert_eq!(info.files.len(), 4);
        assert_eq!(info.meta.index, 41);
    }

    #[test]
    fn pax_path_and_size_override_the_ustar_fields() {
        // What Go writes for a state.bin of 8 GiB or more: a PAX "size"
        // record and 0 in the ustar size field. Here also a PAX "path".
        let spec = vault_spec();
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in &spec.entries {
            let mut header = tar::Header::new_ustar();
            if name == STATE_BIN {
                let size = data.len().to_string();
                builder
                    .append_pax_extensions([
                        ("path", b"state.bin".as_slice()),
                        ("size", size.as_bytes()),
                    ])
                    .unwrap();
                header.set_size(0);
                header.set_path("placeholder").unwrap();
                header.set_cksum();
                builder.append(&header, data.as_slice()).unwrap();
                continue;
            }
            header.set_size(data.len() as u64);
            builder
                .append_data(&mut header, name, data.as_slice())
                .unwrap();
        }
        let info = verify(&gzip(&builder.into_inner().unwrap())).unwrap();
        assert_eq!(info.state_size, spec.entries[1].1.len() as u64);
        assert_eq!(info.files[1].name, STATE_BIN);
    }

    #[test]
    fn extended_headers_name_the_entry_as_go_does() {
        // Found by fuzzing (fuzz/, archive_verifier): the verifier named an entry after
        // the last extended header, so it saw a state.bin where Go's archive/tar, which
        // Vault reads snapshots with, sees another file. Go: a GNU long name wins over a
        // PAX path in any order, each PAX header replaces the previous one, and a global
        // header is an entry of its own that uses up the extended headers before it.
        let spec = vault_spec();
        let long_name = |b: &mut tar::Builder<Vec<u8>>, name: &str| {
            let mut h = tar::Header::new_gnu();
            h.set_path("././@LongLink").unwrap();
            h.set_entry_type(tar::EntryType::GNULongName);
            h.set_size(name.len() as u64 + 1);
            h.set_cksum();
            b.append(&h, [name.as_bytes(), b"\0"].concat().as_slice())
                .unwrap();
        };
        let pax = |b: &mut tar::Builder<Vec<u8>>, key: &str, value: &str| {
            b.append_pax_extensions([(key, value.as_bytes())]).unwrap();
        };
        let global = |b: &mut tar::Builder<Vec<u8>>| {
            let mut h = tar::Header::new_ustar();
            h.set_path("pax_global_header").unwrap();
            h.set_entry_type(tar::EntryType::XGlobalHeader);
            h.set_size(18);
            h.set_cksum();
            b.append(&h, b"18 comment=global\n".as_slice()).unwrap();
        };
        // The archive, with `before` writing the headers before state.bin's, whose own
        // header says "other.bin".
        let build = |before: &dyn Fn(&mut tar::Builder<Vec<u8>>)| {
            let mut b = tar::Builder::new(Vec::new());
            for (name, data) in &spec.entries {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                if name == STATE_BIN {
                    before(&mut b);
                    h.set_path("other.bin").unwrap();
                    h.set_cksum();
                    b.append(&h, data.as_slice()).unwrap();
                } else {
                    b.append_data(&mut h, name, data.as_slice()).unwrap();
                }
            }
            gzip(&b.into_inner().unwrap())
        };
        let missing = Err(ArchiveError::MissingFile(STATE_BIN.into()));
        let long_then_pax = build(&|b| {
            long_name(b, "other.bin");
            pax(b, "path", STATE_BIN);
        });
        assert_eq!(verify(&long_then_pax), missing);
        let two_pax = build(&|b| {
            pax(b, "path", STATE_BIN);
            pax(b, "comment", "second");
        });
        assert_eq!(verify(&two_pax), missing);
        let pax_then_global = build(&|b| {
            pax(b, "path", STATE_BIN);
            global(b);
        });
        assert_eq!(verify(&pax_then_global), missing);

        // What Go names state.bin is accepted.
        let pax_then_long = build(&|b| {
            pax(b, "path", "other.bin");
            long_name(b, STATE_BIN);
        });
        assert_eq!(
            verify_chunked(&pax_then_long, 7).unwrap().files[1].name,
            STATE_BIN
        );
        let global_then_pax = build(&|b| {
            global(b);
            pax(b, "path", "other.bin");
            pax(b, "path", STATE_BIN);
        });
        assert_eq!(verify(&global_then_pax).unwrap().files[1].name, STATE_BIN);
    }

    #[test]
    fn gnu_long_names_and_other_entries_are_tolerated() {
        let spec = vault_spec();
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_size(0);
        builder
            .append_data(&mut dir, "somedir/", std::io::empty())
            .unwrap();
        for (name, data) in &spec.entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            builder
                .append_data(&mut header, name, data.as_slice())
                .unwrap();
        }
        let long = format!("{}/extra.txt", "d".repeat(150));
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        builder
            .append_data(&mut header, &long, b"hello".as_slice())
            .unwrap();
        // A POSIX ustar name split into prefix and name.
        let split = format!("{}/prefixed.txt", "p".repeat(120));
        let mut header = tar::Header::new_ustar();
        header.set_size(2);
        builder
            .append_data(&mut header, &split, b"hi".as_slice())
            .unwrap();
        let mut tar = builder.into_inner().unwrap();
        tar.extend_from_slice(&[0; 8192]); // record padding, as GNU tar writes
        let info = verify(&gzip(&tar)).unwrap();
        assert_eq!(info.files.len(), 6);
        assert_eq!(info.files[4].name, long);
        assert_eq!(info.files[4].sha256, sha_hex(b"hello"));
        assert_eq!(info.files[5].name, split);
    }

    #[test]
    fn data_after_the_end_fails() {
        let spec = vault_spec();
        let gz = spec.gz();
        let mut trailing = gz.clone();
        trailing.extend_from_slice(b"junk");
        let err = verify(&trailing).unwrap_err();
        assert_eq!(
            err,
            ArchiveError::TrailingGarbage {
                offset: gz.len() as u64
            }
        );

        // Non-zero bytes after the tar end-of-archive marker.
        let mut tar = spec.tar();
        tar.extend_from_slice(b"junk");
        assert!(matches!(
            verify(&gzip(&tar)),
            Err(ArchiveError::TarTrailingData { .. })
        ));

        // A second gzip member holding only zero padding is accepted.
        let mut two = gz.clone();
        two.extend_from_slice(&gzip(&[0; 1024]));
        verify(&two).unwrap();
        // A partial second member is truncation.
        let mut partial = gz;
        partial.extend_from_slice(&[0x1f, 0x8b, 8]);
        assert!(matches!(
            verify(&partial),
            Err(ArchiveError::Truncated { .. })
        ));
    }

    #[test]
    fn tar_without_end_or_cut_short_fails() {
        let tar = vault_spec().tar();
        // Complete gzip stream, incomplete tar: no end-of-archive blocks.
        let no_end = &tar[..tar.len() - 1024];
        assert_eq!(
            verify(&gzip(no_end)).unwrap_err(),
            ArchiveError::TarUnterminated
        );
        // Cut inside state.bin (which starts after meta.json's header, data, padding and its own header).
        let state_start = 512 + 512 + 512;
        let cut = &tar[..state_start + 1000];
        let err = verify(&gzip(cut)).unwrap_err();
        assert!(
            matches!(&err, ArchiveError::EntryCutShort { name, got: 1000, .. } if name == STATE_BIN),
            "{err}"
        );
    }

    #[test]
    fn bad_tar_header_checksum_fails() {
        let mut tar = vault_spec().tar();
        tar[600] ^= 0x20; // inside meta.json's data: caught by SHA256SUMS
        assert!(matches!(
            verify(&gzip(&tar)),
            Err(ArchiveError::HashMismatch { .. })
        ));
        let mut tar = vault_spec().tar();
        tar[3] ^= 0x01; // inside the first header's name field
        assert_eq!(
            verify(&gzip(&tar)).unwrap_err(),
            ArchiveError::TarChecksum { offset: 0 }
        );
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

    #[test]
    fn gzip_header_options_are_parsed() {
        let tar = vault_spec().tar();
        let mut enc = flate2::GzBuilder::new()
            .filename("snapshot.tar")
            .comment("raft snapshot")
            .extra(vec![1, 2, 3, 4, 5])
            .write(Vec::new(), Compression::fast());
        enc.write_all(&tar).unwrap();
        let mut gz = enc.finish().unwrap();
        verify_chunked(&gz, 1).unwrap();
        verify(&gz).unwrap();

        // Add a correct FHCRC by hand, then a wrong one.
        let header_len = 10 + 2 + 5 + "snapshot.tar\0".len() + "raft snapshot\0".len();
        gz[3] |= FHCRC;
        let mut crc = Crc::new();
        crc.update(&gz[..header_len]);
        let hcrc = ((crc.sum() & 0xffff) as u16).to_le_bytes();
        let mut good = gz[..header_len].to_vec();
        good.extend_from_slice(&hcrc);
        good.extend_from_slice(&gz[header_len..]);
        verify_chunked(&good, 3).unwrap();
        good[header_len] ^= 1;
        assert_eq!(verify(&good).unwrap_err(), ArchiveError::GzipHeaderCrc);

        let mut method = vault_spec().gz();
        method[2] = 7;
        assert!(matches!(
            verify(&method),
            Err(ArchiveError::GzipUnsupported(_))
        ));
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

    #[test]
    fn numeric_fields() {
        assert_eq!(parse_octal(b"0000644\0"), Some(0o644));
        assert_eq!(parse_octal(b"  17 \0\0"), Some(0o17));
        assert_eq!(parse_octal(b"\0\0\0\0"), Some(0));
        assert_eq!(parse_octal(b"0009"), None);
        assert_eq!(parse_octal(b"77777777777777777777777"), None);
        let mut b256 = [0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0];
        assert_eq!(parse_numeric(&b256), Some(2 << 32));
        b256[0] = 0xff;
        assert_eq!(parse_numeric(&b256), None);
    }
}
