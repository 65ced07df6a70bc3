//! The gzip layer (RFC 1952), push-style on flate2.
//!
//! Each member is decoded by its own [`flate2::write::GzDecoder`] (header, deflate data,
//! CRC32 and length trailer), which writes the decompressed bytes to the next layer. What
//! flate2 reports as an `io::Error` is turned back into a typed [`ArchiveError`] here:
//!
//! * the first four bytes of every member (magic, method, reserved flags) are checked
//!   before flate2 sees them, so a stream that is not gzip fails at its first wrong byte
//!   and bytes after a member are told apart from a bad header;
//! * the next layer's own error travels through flate2 in [`Output`], which also keeps
//!   the member's CRC32 and length, to name both values of a mismatching trailer;
//! * whether a member ended cleanly is known when its decoder refuses more input (then
//!   it has taken the whole trailer): a stream that stops before that is truncated.
//!
//! Concatenated members are accepted, as RFC 1952 and `gunzip` do (Go writes just one);
//! any other byte after the end of a member is an error.

use std::io::{self, Write};

use flate2::Crc;
use flate2::write::GzDecoder;

use super::{ArchiveError, Result};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The only compression method gzip has.
const DEFLATE: u8 = 8;
#[cfg(test)]
pub(super) const FHCRC: u8 = 0x02;
const FRESERVED: u8 = 0xe0;
/// The member's bytes checked here before flate2 parses the header: magic, method, flags.
const CHECKED_PREFIX: u64 = 4;
/// How many leading bytes of the stream are kept to describe a non-gzip input.
const HEAD_PREVIEW: usize = 16;

/// Where the gzip layer writes the decompressed stream.
pub(super) trait Inflated {
    fn write(&mut self, data: &[u8]) -> Result<()>;
}

/// The decompressed output on its way to the next layer.
struct Output<T> {
    inner: T,
    /// CRC32 and length of the current member's output.
    crc: Crc,
    /// The next layer's error, which flate2 can only pass on as an `io::Error`.
    error: Option<ArchiveError>,
}

impl<T: Inflated> Write for Output<T> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.error.is_none() {
            self.crc.update(data);
            match self.inner.write(data) {
                Ok(()) => return Ok(data.len()),
                Err(e) => self.error = Some(e),
            }
        }
        Err(io::Error::other("the tar layer refused the data"))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The member being decoded.
struct Member<T: Inflated> {
    dec: GzDecoder<Output<T>>,
    /// Compressed offset of the member's first byte.
    start: u64,
    /// Bytes of the member the decoder has taken.
    taken: u64,
    /// The last 8 bytes the decoder took: the trailer, once the member is complete.
    tail: [u8; 8],
}

impl<T: Inflated> Member<T> {
    fn took(&mut self, bytes: &[u8]) {
        self.taken += bytes.len() as u64;
        if let Some(last8) = bytes.last_chunk::<8>() {
            self.tail = *last8;
        } else {
            self.tail.rotate_left(bytes.len());
            self.tail[8 - bytes.len()..].copy_from_slice(bytes);
        }
    }
}

/// Decodes a gzip stream fed chunk by chunk into an [`Inflated`] sink.
pub(super) struct GzipLayer<T: Inflated> {
    /// The open member, if any; it holds the output.
    member: Option<Box<Member<T>>>,
    /// The output while no member is open (`None` also after flate2 kept it on an error).
    idle: Option<Output<T>>,
    /// Compressed bytes taken so far.
    offset: u64,
    members: u64,
    /// The first bytes of the stream, to describe a stream that is not gzip.
    head: Vec<u8>,
}

impl<T: Inflated> GzipLayer<T> {
    pub(super) fn new(inner: T) -> Self {
        GzipLayer {
            member: None,
            idle: Some(Output {
                inner,
                crc: Crc::new(),
                error: None,
            }),
            offset: 0,
            members: 0,
            head: Vec::with_capacity(HEAD_PREVIEW),
        }
    }

    /// The next layer (`None` only after an error lost it).
    pub(super) fn get_ref(&self) -> Option<&T> {
        match &self.member {
            Some(m) => Some(&m.dec.get_ref().inner),
            None => self.idle.as_ref().map(|o| &o.inner),
        }
    }

    /// Decodes the next chunk; all the output it allows reaches the next layer before
    /// this returns.
    pub(super) fn update(&mut self, mut input: &[u8]) -> Result<()> {
        if self.head.len() < HEAD_PREVIEW {
            let n = (HEAD_PREVIEW - self.head.len()).min(input.len());
            self.head.extend_from_slice(&input[..n]);
        }
        while !input.is_empty() {
            let Some(m) = &mut self.member else {
                self.open()?;
                continue;
            };
            if m.taken < CHECKED_PREFIX {
                let n = usize::try_from(CHECKED_PREFIX - m.taken)
                    .map_or(input.len(), |n| n.min(input.len()));
                check_prefix(m.taken, &input[..n], m.start, self.members == 1, &self.head)?;
            }
            match m.dec.write(input) {
                Ok(0) if m.dec.header().is_some() => self.close(false)?,
                Ok(0) => return Err(no_progress(self.offset)),
                Ok(n) => {
                    let n = n.min(input.len());
                    m.took(&input[..n]);
                    self.offset += n as u64;
                    input = &input[n..];
                }
                Err(e) => return Err(self.write_error(e)),
            }
        }
        // Output flate2 still holds goes to the next layer now, so its errors show here.
        if let Some(m) = &mut self.member
            && m.dec.header().is_some()
            && let Err(e) = m.dec.flush()
        {
            return Err(self.write_error(e));
        }
        Ok(())
    }

    /// The stream ended: the last member must be complete. Returns the next layer.
    pub(super) fn finish(mut self) -> Result<T> {
        if let Some(m) = &mut self.member {
            // A decoder that has taken the whole trailer refuses more input; one that
            // takes this byte (or fails on it) was still waiting for the rest.
            let complete = m.dec.header().is_some() && matches!(m.dec.write(&[0]), Ok(0));
            if !complete {
                return Err(ArchiveError::Truncated {
                    compressed: self.offset,
                });
            }
            self.close(true)?;
        }
        self.idle
            .map(|o| o.inner)
            .ok_or_else(|| no_progress(self.offset))
    }

    /// Opens a member at the current offset.
    fn open(&mut self) -> Result<()> {
        let mut out = self.idle.take().ok_or_else(|| no_progress(self.offset))?;
        out.crc.reset();
        self.member = Some(Box::new(Member {
            dec: GzDecoder::new(out),
            start: self.offset,
            taken: 0,
            tail: [0; 8],
        }));
        self.members += 1;
        Ok(())
    }

    /// Closes a member whose decoder took its whole trailer: checks the trailer.
    fn close(&mut self, at_end: bool) -> Result<()> {
        let Some(mut m) = self.member.take() else {
            return Ok(());
        };
        if let Err(e) = m.dec.try_finish() {
            let err = if let Some(err) = m.dec.get_mut().error.take() {
                err
            } else if e.kind() == io::ErrorKind::UnexpectedEof {
                if at_end {
                    ArchiveError::Truncated {
                        compressed: self.offset,
                    }
                } else {
                    no_progress(self.offset)
                }
            } else {
                trailer_error(&m.tail, &m.dec.get_ref().crc, self.offset, &e)
            };
            self.member = Some(m);
            return Err(err);
        }
        match m.dec.finish() {
            Ok(out) => {
                self.idle = Some(out);
                Ok(())
            }
            Err(e) => Err(ArchiveError::Deflate {
                offset: self.offset,
                detail: e.to_string(),
            }),
        }
    }

    /// Types an error flate2 returned while taking input or flushing.
    fn write_error(&mut self, e: io::Error) -> ArchiveError {
        let Some(m) = &mut self.member else {
            return no_progress(self.offset);
        };
        if let Some(err) = m.dec.get_mut().error.take() {
            return err;
        }
        if m.dec.header().is_none() {
            // Magic, method and flags were checked above; flate2 refuses a header whose
            // checksum does not match, and a file name or comment of 64 KiB or more.
            let detail = e.to_string();
            if detail.contains("checksum") {
                ArchiveError::GzipHeaderCrc
            } else {
                ArchiveError::GzipUnsupported(detail)
            }
        } else {
            // The decoder took everything before this chunk's untaken rest.
            ArchiveError::Deflate {
                offset: self.offset,
                detail: e.to_string(),
            }
        }
    }
}

/// Checks bytes at member positions `at..` (all below [`CHECKED_PREFIX`]).
fn check_prefix(at: u64, bytes: &[u8], start: u64, first: bool, head: &[u8]) -> Result<()> {
    for (pos, &b) in (at..).zip(bytes) {
        match pos {
            0 | 1 if b != GZIP_MAGIC[pos as usize] => {
                return Err(if first {
                    ArchiveError::NotGzip {
                        preview: describe_bytes(head),
                    }
                } else {
                    ArchiveError::TrailingGarbage { offset: start }
                });
            }
            2 if b != DEFLATE => {
                return Err(ArchiveError::GzipUnsupported(format!(
                    "compression method {b} (only 8, deflate, exists)"
                )));
            }
            3 if b & FRESERVED != 0 => {
                return Err(ArchiveError::GzipUnsupported(format!(
                    "reserved header flags are set ({b:#04x})"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Names the mismatch flate2 found in a complete trailer.
fn trailer_error(trailer: &[u8; 8], crc: &Crc, offset: u64, e: &io::Error) -> ArchiveError {
    let [c0, c1, c2, c3, l0, l1, l2, l3] = *trailer;
    let (expected, actual) = (u32::from_le_bytes([c0, c1, c2, c3]), crc.sum());
    if expected != actual {
        return ArchiveError::GzipCrc { expected, actual };
    }
    let (expected, actual) = (u32::from_le_bytes([l0, l1, l2, l3]), crc.amount());
    if expected != actual {
        return ArchiveError::GzipLength { expected, actual };
    }
    ArchiveError::Deflate {
        offset,
        detail: e.to_string(),
    }
}

fn no_progress(offset: u64) -> ArchiveError {
    ArchiveError::Deflate {
        offset,
        detail: "the decompressor made no progress".to_string(),
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

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::{Compression, Crc};

    use super::FHCRC;
    use crate::archive::testutil::*;
    use crate::archive::*;

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
    fn trailer_mismatches_name_both_values() {
        let gz = vault_spec().gz();
        let n = gz.len();
        let crc = u32::from_le_bytes(gz[n - 8..n - 4].try_into().unwrap());
        let len = u32::from_le_bytes(gz[n - 4..].try_into().unwrap());
        let mut bad = gz.clone();
        bad[n - 8..n - 4].copy_from_slice(&(crc ^ 1).to_le_bytes());
        assert_eq!(
            verify_chunked(&bad, 7).unwrap_err(),
            ArchiveError::GzipCrc {
                expected: crc ^ 1,
                actual: crc
            }
        );
        let mut bad = gz.clone();
        bad[n - 4..].copy_from_slice(&(len + 1).to_le_bytes());
        let err = verify(&bad).unwrap_err();
        assert_eq!(
            err,
            ArchiveError::GzipLength {
                expected: len + 1,
                actual: len
            }
        );
        assert!(
            err.to_string()
                .starts_with("snapshot is corrupt: gzip length mismatch")
        );

        // A member followed by another is checked when the next one starts, in update().
        let mut two = bad;
        two.extend_from_slice(&gzip(&[0; 512]));
        let mut v = SnapshotVerifier::new();
        assert!(matches!(
            v.update(&two),
            Err(ArchiveError::GzipLength { .. })
        ));
    }

    #[test]
    fn trailing_data_is_found_in_any_chunking() {
        let gz = vault_spec().gz();
        let mut trailing = gz.clone();
        trailing.extend_from_slice(b"\x1fjunk");
        for chunk in [1, 5, 4096, trailing.len()] {
            assert_eq!(
                verify_chunked(&trailing, chunk).unwrap_err(),
                ArchiveError::TrailingGarbage {
                    offset: gz.len() as u64
                },
                "chunk {chunk}"
            );
        }
        // The complete stream, then junk in an update of its own.
        let mut v = SnapshotVerifier::new();
        v.update(&gz).unwrap();
        assert_eq!(
            v.update(b"junk").unwrap_err(),
            ArchiveError::TrailingGarbage {
                offset: gz.len() as u64
            }
        );
    }

    #[test]
    fn invalid_deflate_data_fails_in_update() {
        // No header flags: the deflate data starts at byte 10. Block type 3 is reserved.
        let mut gz = vault_spec().gz();
        gz[10] = 0x07;
        let mut v = SnapshotVerifier::new();
        let err = v.update(&gz).unwrap_err();
        assert!(matches!(err, ArchiveError::Deflate { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("snapshot is corrupt: invalid deflate data near compressed byte"),
            "{err}"
        );
    }

    #[test]
    fn header_name_of_64_kib_is_refused() {
        let tar = vault_spec().tar();
        let mut enc = flate2::GzBuilder::new()
            .filename(vec![b'n'; 70_000])
            .write(Vec::new(), Compression::fast());
        enc.write_all(&tar).unwrap();
        let gz = enc.finish().unwrap();
        assert!(matches!(
            verify_chunked(&gz, 4096),
            Err(ArchiveError::GzipUnsupported(_))
        ));
    }
}
