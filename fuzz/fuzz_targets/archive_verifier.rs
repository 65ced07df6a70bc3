//! Arbitrary bytes through the streaming snapshot verifier, in arbitrary chunk splits.
//!
//! Input: `[mode] [n split bytes] [stream]`. `n` is `mode % 16`; each split byte is a chunk
//! size (`stashless_fuzz::chunk_len`), cycled. When `mode`'s top bit is set the stream is
//! an uncompressed tar, gzipped here first, so byte-level mutations reach the tar parser
//! and the content checks instead of failing the gzip CRC. The verifier must never panic,
//! must give the same verdict whole and split, and whatever it accepts must pass the
//! reference check (`stashless_fuzz::reference`) with the same files.
#![no_main]

use std::borrow::Cow;
use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;
use stashless_fuzz::{chunk_len, verify_everything};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (splits, body) = rest.split_at(usize::from(mode % 16).min(rest.len()));
    let sizes: Vec<usize> = splits.iter().map(|&b| chunk_len(b)).collect();
    let stream = if mode & 0x80 != 0 {
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(body).unwrap();
        Cow::Owned(gz.finish().unwrap())
    } else {
        Cow::Borrowed(body)
    };
    let _ = verify_everything(&stream, &sizes);
});
