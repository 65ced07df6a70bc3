//! The tar layer: ustar, with PAX and GNU extensions as Go's `archive/tar` reads them
//! (hashicorp/raft-snapshot writes snapshots with it, Vault and OpenBao read them with
//! it), parsed push-style from the decompressed stream. Regular files go to the content
//! layer ([`Content`]); extended headers name and size the entry after them.

use super::content::{Content, FileSink};
use super::gzip::Inflated;
use super::{ArchiveError, MAX_ENTRIES, MAX_NAME_LEN, Result, check_small};

const BLOCK: usize = 512;

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

impl Sink {
    fn write(&mut self, data: &[u8]) {
        match self {
            Sink::Skip => {}
            Sink::File(f) => f.write(data),
            Sink::Pax(buf) | Sink::LongName(buf) => buf.extend_from_slice(data),
        }
    }

    fn describe(&self) -> String {
        match self {
            Sink::Skip => "an entry".to_string(),
            Sink::File(f) => f.name().to_string(),
            Sink::Pax(_) => "a PAX extended header".to_string(),
            Sink::LongName(_) => "a GNU long name entry".to_string(),
        }
    }
}

pub(super) struct TarParser {
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
    content: Content,
}

impl Inflated for TarParser {
    fn write(&mut self, data: &[u8]) -> Result<()> {
        self.feed(data)
    }
}

impl TarParser {
    pub(super) fn new() -> Self {
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
            content: Content::new(),
        }
    }

    /// Decompressed bytes consumed so far.
    pub(super) fn pos(&self) -> u64 {
        self.pos
    }

    pub(super) fn content(&self) -> &Content {
        &self.content
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
                        let file = self.content.start_file(name, size)?;
                        self.start_entry(size, Sink::File(Box::new(file)))
                    }
                    // Links, devices, directories, FIFOs: header only.
                    b'1'..=b'6' | 0 => Ok(()),
                    // Anything else (GNU sparse, vendor types): skip its data.
                    _ => self.start_entry(size, Sink::Skip),
                }
            }
        }
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
            Sink::File(file) => self.content.end_file(*file),
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

    /// The decompressed stream ended: the archive must have ended too. Returns the
    /// content layer.
    pub(super) fn finish(self) -> Result<Content> {
        match self.state {
            TarState::End => Ok(self.content),
            TarState::Data {
                remaining, sink, ..
            } => {
                let expected = match &sink {
                    Sink::File(f) => f.size(),
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

#[cfg(test)]
mod tests {
    use super::{parse_numeric, parse_octal};
    use crate::archive::testutil::*;
    use crate::archive::*;

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
        let mut builder = ::tar::Builder::new(Vec::new());
        for (name, data) in &spec.entries {
            let mut header = ::tar::Header::new_ustar();
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
        let long_name = |b: &mut ::tar::Builder<Vec<u8>>, name: &str| {
            let mut h = ::tar::Header::new_gnu();
            h.set_path("././@LongLink").unwrap();
            h.set_entry_type(::tar::EntryType::GNULongName);
            h.set_size(name.len() as u64 + 1);
            h.set_cksum();
            b.append(&h, [name.as_bytes(), b"\0"].concat().as_slice())
                .unwrap();
        };
        let pax = |b: &mut ::tar::Builder<Vec<u8>>, key: &str, value: &str| {
            b.append_pax_extensions([(key, value.as_bytes())]).unwrap();
        };
        let global = |b: &mut ::tar::Builder<Vec<u8>>| {
            let mut h = ::tar::Header::new_ustar();
            h.set_path("pax_global_header").unwrap();
            h.set_entry_type(::tar::EntryType::XGlobalHeader);
            h.set_size(18);
            h.set_cksum();
            b.append(&h, b"18 comment=global\n".as_slice()).unwrap();
        };
        // The archive, with `before` writing the headers before state.bin's, whose own
        // header says "other.bin".
        let build = |before: &dyn Fn(&mut ::tar::Builder<Vec<u8>>)| {
            let mut b = ::tar::Builder::new(Vec::new());
            for (name, data) in &spec.entries {
                let mut h = ::tar::Header::new_gnu();
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
        let mut builder = ::tar::Builder::new(Vec::new());
        let mut dir = ::tar::Header::new_gnu();
        dir.set_entry_type(::tar::EntryType::Directory);
        dir.set_size(0);
        builder
            .append_data(&mut dir, "somedir/", std::io::empty())
            .unwrap();
        for (name, data) in &spec.entries {
            let mut header = ::tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            builder
                .append_data(&mut header, name, data.as_slice())
                .unwrap();
        }
        let long = format!("{}/extra.txt", "d".repeat(150));
        let mut header = ::tar::Header::new_gnu();
        header.set_size(5);
        builder
            .append_data(&mut header, &long, b"hello".as_slice())
            .unwrap();
        // A POSIX ustar name split into prefix and name.
        let split = format!("{}/prefixed.txt", "p".repeat(120));
        let mut header = ::tar::Header::new_ustar();
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
    fn non_zero_data_after_the_end_marker_fails() {
        // Non-zero bytes after the tar end-of-archive marker.
        let mut tar = vault_spec().tar();
        tar.extend_from_slice(b"junk");
        assert!(matches!(
            verify(&gzip(&tar)),
            Err(ArchiveError::TarTrailingData { .. })
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
