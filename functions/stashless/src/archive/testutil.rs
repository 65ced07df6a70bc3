//! Test helpers shared by the layers' tests: snapshots built with the `tar` and `flate2`
//! crates, and the verifier fed in chunks.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use super::{
    ArchiveError, META_JSON, SHA256SUMS, SHA256SUMS_SEALED, STATE_BIN, SnapshotInfo,
    SnapshotVerifier,
};

/// Deterministic pseudo-random bytes (xorshift64*).
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
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
pub(crate) fn state_bin() -> Vec<u8> {
    let mut state = noise(200 * 1024, 42);
    for i in 0..3000 {
        state.extend_from_slice(format!("logical/kv/key-{i}: value {}\n", i * 7).as_bytes());
    }
    state
}

pub(crate) fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub(crate) fn meta_json(size: usize) -> Vec<u8> {
    format!(
        "{{\"Version\":1,\"ID\":\"2-41-1690000000000\",\"Index\":41,\"Term\":2,\"Peers\":\"ka4xMjcuMC4wLjE6ODIwMQ==\",\
         \"Configuration\":{{\"Servers\":[{{\"Suffrage\":0,\"ID\":\"node1\",\"Address\":\"127.0.0.1:8201\"}}]}},\
         \"ConfigurationIndex\":1,\"Size\":{size},\"CRC\":\"3q2+7w==\"}}\n"
    )
    .into_bytes()
}

#[derive(Clone)]
pub(crate) struct Spec {
    pub(crate) entries: Vec<(String, Vec<u8>)>,
    pub(crate) pax: bool,
}

/// The four files Vault writes, with a correct SHA256SUMS.
pub(crate) fn vault_spec() -> Spec {
    spec_with_state(state_bin())
}

pub(crate) fn spec_with_state(state: Vec<u8>) -> Spec {
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
    pub(crate) fn without(mut self, name: &str) -> Self {
        self.entries.retain(|(n, _)| n != name);
        self
    }
    pub(crate) fn replace(mut self, name: &str, data: Vec<u8>) -> Self {
        for (n, d) in &mut self.entries {
            if n == name {
                *d = data.clone();
            }
        }
        self
    }
    pub(crate) fn tar(&self) -> Vec<u8> {
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
    pub(crate) fn gz(&self) -> Vec<u8> {
        gzip(&self.tar())
    }
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub(crate) fn verify_chunked(
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

pub(crate) fn verify(data: &[u8]) -> std::result::Result<SnapshotInfo, ArchiveError> {
    verify_chunked(data, data.len().max(1))
}
