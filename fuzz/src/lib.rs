//! Shared code of the fuzz targets: feeding a stream to the verifier in chunks, an
//! independent (whole-buffer, non-streaming) reference check of what the verifier accepted,
//! and a builder of valid snapshots from structured fuzz input.

pub mod build;
pub mod reference;

use stashless::archive::{ArchiveError, SnapshotInfo, SnapshotVerifier};

/// The chunk sizes one split byte stands for: 1..=128 bytes, or 512-byte steps up to
/// 64 KiB (so both byte-by-byte feeding and large chunks are reachable).
pub fn chunk_len(b: u8) -> usize {
    if b < 128 {
        usize::from(b) + 1
    } else {
        usize::from(b - 127) * 512
    }
}

/// Feeds `data` to a fresh verifier in chunks whose sizes cycle through `sizes` (all of
/// `data` at once when `sizes` is empty), then finishes it.
pub fn verify_chunked(
    data: &[u8],
    sizes: impl IntoIterator<Item = usize, IntoIter: Clone>,
) -> Result<SnapshotInfo, ArchiveError> {
    let mut v = SnapshotVerifier::new();
    let mut rest = data;
    let mut sizes = sizes.into_iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if let Err(e) = v.update(chunk) {
            assert_eq!(v.update(b"\x1f\x8b").unwrap_err(), e, "errors are sticky");
            assert_eq!(v.finish().unwrap_err(), e, "finish repeats the first error");
            return Err(e);
        }
    }
    assert_eq!(v.compressed_len(), data.len() as u64);
    v.finish()
}

/// Verifies `data` whole and split as `sizes` says; both must reach the same verdict, and an
/// accepted stream must pass the reference check with the same findings.
pub fn verify_everything(data: &[u8], sizes: &[usize]) -> Result<SnapshotInfo, ArchiveError> {
    let whole = verify_chunked(data, std::iter::empty::<usize>());
    if !sizes.is_empty() {
        let split = verify_chunked(data, sizes.iter().copied());
        match (&whole, &split) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "chunking changed the findings ({sizes:?})"),
            // Which problem is seen first may depend on the chunking in one case: the
            // decompressor fails on data after output the tar parser had not seen yet.
            (Err(ArchiveError::Deflate { .. }), Err(_))
            | (Err(_), Err(ArchiveError::Deflate { .. })) => {}
            (Err(a), Err(b)) => assert_eq!(
                normalized(a),
                normalized(b),
                "chunking changed the error ({sizes:?})"
            ),
            _ => panic!("the verdict depends on the chunking ({sizes:?}): {whole:?} / {split:?}"),
        }
    }
    if let Ok(info) = &whole {
        reference::assert_agrees(data, info);
    }
    whole
}

/// An error without the one chunking-dependent detail: a non-gzip stream is refused at its
/// first bad byte, and the preview shows the bytes received by then.
fn normalized(e: &ArchiveError) -> ArchiveError {
    match e {
        ArchiveError::NotGzip { .. } => ArchiveError::NotGzip {
            preview: String::new(),
        },
        other => other.clone(),
    }
}
