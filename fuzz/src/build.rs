//! Valid raft snapshots built from structured fuzz input: the four files Vault writes
//! (in any order, each with any of the header forms Go and GNU tar write), optional extra
//! files, any `sha256sum` spelling, any gzip level, header options and member split.

use std::io::Write;

use arbitrary::Arbitrary;
use flate2::{Compression, Crc, GzBuilder};
use sha2::{Digest, Sha256};
use stashless::archive::{META_JSON, SHA256SUMS, SHA256SUMS_SEALED, STATE_BIN};

/// How one entry's header is written.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Style {
    Ustar,
    Gnu,
    /// A PAX header with unrelated records first.
    PaxComment,
    /// A PAX `path` and `size` with a placeholder name and size 0 (Go, >= 8 GiB).
    PaxPathSize,
    /// A GNU long-name entry before a placeholder name.
    GnuLongName,
    /// `./name`.
    DotSlash,
    /// The size in GNU base-256.
    Base256,
    /// ustar with a `prefix` field (`prefix/name`): only for names with a `/`.
    Prefix,
    /// Type flag `\0` (old tars) instead of `0`.
    OldRegular,
}

#[derive(Arbitrary, Debug)]
pub struct Extra {
    /// Directory depth: 0 is a plain name; deep names need long-name support.
    pub depth: u8,
    pub data: Vec<u8>,
    pub listed: bool,
    pub style: Style,
}

#[derive(Arbitrary, Debug)]
pub struct SumsStyle {
    pub binary_marker: bool,
    pub crlf: bool,
    pub uppercase: bool,
    pub blank_lines: bool,
    pub tab: bool,
    pub no_final_newline: bool,
}

#[derive(Arbitrary, Debug)]
pub struct Spec {
    pub index: u64,
    pub term: u64,
    pub meta_has_size: bool,
    pub state: Vec<u8>,
    /// state.bin is `state` repeated `1 + repeat` times (long, compressible data).
    pub repeat: u8,
    pub sealed: Vec<u8>,
    /// Which of the 24 orders of the four files.
    pub order: u8,
    pub styles: [Style; 4],
    pub extras: Vec<Extra>,
    /// A directory entry first, as some tars write.
    pub directory: bool,
    pub sums: SumsStyle,
    pub level: u8,
    pub gz_name: bool,
    pub gz_comment: bool,
    pub gz_extra: Option<Vec<u8>>,
    pub gz_header_crc: bool,
    /// Offsets in the tar where a new gzip member starts.
    pub members: Vec<u16>,
    /// Zero padding after the end-of-archive blocks (GNU tar pads to 10 KiB records).
    pub tail_zeros: u16,
}

/// What a built snapshot holds, in archive order: (name, content).
pub struct Built {
    pub tar: Vec<u8>,
    pub files: Vec<(String, Vec<u8>)>,
    pub index: u64,
    pub term: u64,
}

fn sha_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

impl Spec {
    pub fn build(&self) -> Built {
        let mut state = Vec::new();
        for _ in 0..=self.repeat.min(64) {
            state.extend_from_slice(&self.state);
        }
        let size = if self.meta_has_size {
            format!(",\"Size\":{}", state.len())
        } else {
            String::new()
        };
        let meta = format!(
            "{{\"Version\":1,\"ID\":\"{}-{}-1\",\"Index\":{},\"Term\":{}{size}}}\n",
            self.term, self.index, self.index, self.term
        )
        .into_bytes();
        let sealed = if self.sealed.is_empty() {
            vec![0x5e]
        } else {
            self.sealed.clone()
        };
        let extras: Vec<(String, &Extra)> = self
            .extras
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, e)| {
                let dirs = "d".repeat(40) + "/";
                let name = format!("{}extra-{i}.bin", dirs.repeat(usize::from(e.depth % 8)));
                (name, e)
            })
            .collect();

        let s = &self.sums;
        let mut listed: Vec<(&str, &[u8])> = vec![(STATE_BIN, &state), (META_JSON, &meta)];
        for (name, e) in &extras {
            if e.listed {
                listed.push((name, &e.data));
            }
        }
        let nl = if s.crlf { "\r\n" } else { "\n" };
        let sep = match (s.tab, s.binary_marker) {
            (true, true) => "\t*",
            (true, false) => "\t",
            (false, true) => " *",
            (false, false) => "  ",
        };
        let mut sums = String::new();
        for (name, data) in listed {
            let digest = sha_hex(data);
            let digest = if s.uppercase {
                digest.to_uppercase()
            } else {
                digest
            };
            sums += &format!("{digest}{sep}{name}{nl}");
            if s.blank_lines {
                sums += nl;
            }
        }
        if s.no_final_newline {
            sums.truncate(sums.trim_end().len());
        }

        let mut four = vec![
            (META_JSON.to_string(), meta, self.styles[0]),
            (STATE_BIN.to_string(), state, self.styles[1]),
            (SHA256SUMS.to_string(), sums.into_bytes(), self.styles[2]),
            (SHA256SUMS_SEALED.to_string(), sealed, self.styles[3]),
        ];
        // Pick one of the 24 orders (Lehmer code).
        let mut code = usize::from(self.order) % 24;
        let mut ordered = Vec::new();
        for radix in [6, 2, 1, 1] {
            let i = code / radix;
            code %= radix;
            ordered.push(four.remove(i));
        }
        let mut entries: Vec<(String, Vec<u8>, Style)> = ordered;
        for (i, (name, e)) in extras.into_iter().enumerate() {
            let at = (i * 2 + usize::from(e.depth)) % (entries.len() + 1);
            entries.insert(at, (name, e.data.clone(), e.style));
        }

        let mut b = tar::Builder::new(Vec::new());
        if self.directory {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            b.append_data(&mut h, "snapshot/", std::io::empty())
                .unwrap();
        }
        for (name, data, style) in &entries {
            append(&mut b, name, data, *style);
        }
        let mut tar = b.into_inner().unwrap();
        tar.extend(std::iter::repeat_n(
            0,
            usize::from(self.tail_zeros % 12_288),
        ));
        Built {
            tar,
            files: entries.into_iter().map(|(n, d, _)| (n, d)).collect(),
            index: self.index,
            term: self.term,
        }
    }

    /// gzip-compresses a tar as the spec says (members, level, header options).
    pub fn gzip(&self, tar: &[u8]) -> Vec<u8> {
        let cuts = self.member_bounds(tar.len());
        let mut out = Vec::new();
        for (i, w) in cuts.windows(2).enumerate() {
            out.extend(self.member(&tar[w[0]..w[1]], i == 0));
        }
        out
    }

    /// Where the gzip members of a `len`-byte tar start and end (two bounds: one member).
    pub fn member_bounds(&self, len: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = self
            .members
            .iter()
            .take(4)
            .map(|&m| usize::from(m) % (len + 1))
            .collect();
        cuts.push(0);
        cuts.push(len);
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    fn member(&self, data: &[u8], first: bool) -> Vec<u8> {
        let level = Compression::new(u32::from(self.level % 10));
        let mut builder = GzBuilder::new();
        let mut header_len = 10;
        if first {
            if self.gz_name {
                builder = builder.filename("snapshot.tar");
                header_len += "snapshot.tar\0".len();
            }
            if self.gz_comment {
                builder = builder.comment("raft snapshot");
                header_len += "raft snapshot\0".len();
            }
            if let Some(extra) = &self.gz_extra {
                let extra: Vec<u8> = extra.iter().copied().take(300).collect();
                header_len += 2 + extra.len();
                builder = builder.extra(extra);
            }
        }
        let mut enc = builder.write(Vec::new(), level);
        enc.write_all(data).unwrap();
        let mut gz = enc.finish().unwrap();
        if first && self.gz_header_crc {
            gz[3] |= 0x02; // FHCRC
            let mut crc = Crc::new();
            crc.update(&gz[..header_len]);
            let hcrc = ((crc.sum() & 0xffff) as u16).to_le_bytes();
            gz.splice(header_len..header_len, hcrc);
        }
        gz
    }
}

fn append(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], style: Style) {
    let mut h = match style {
        Style::Gnu | Style::GnuLongName | Style::Base256 => tar::Header::new_gnu(),
        _ => tar::Header::new_ustar(),
    };
    h.set_mode(0o600);
    h.set_mtime(1_690_000_000);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    let long = name.len() > 100;
    match style {
        Style::PaxComment => {
            b.append_pax_extensions([("comment", b"fuzz".as_slice()), ("mtime", b"1.5")])
                .unwrap();
        }
        Style::PaxPathSize => {
            let size = data.len().to_string();
            b.append_pax_extensions([("path", name.as_bytes()), ("size", size.as_bytes())])
                .unwrap();
            h.set_size(0);
            set_raw_name(&mut h, b"placeholder");
            b.append(&h, data).unwrap();
            return;
        }
        Style::GnuLongName => {
            let mut l = tar::Header::new_gnu();
            set_raw_name(&mut l, b"././@LongLink");
            l.set_entry_type(tar::EntryType::GNULongName);
            let mut bytes = name.as_bytes().to_vec();
            bytes.push(0);
            l.set_size(bytes.len() as u64);
            l.set_cksum();
            b.append(&l, bytes.as_slice()).unwrap();
            set_raw_name(&mut h, b"placeholder");
            b.append(&h, data).unwrap();
            return;
        }
        _ => {}
    }
    if !long {
        match style {
            Style::DotSlash => set_raw_name(&mut h, format!("./{name}").as_bytes()),
            Style::Prefix if name.contains('/') => {
                let (dir, file) = name.rsplit_once('/').unwrap();
                set_raw_name(&mut h, file.as_bytes());
                let prefix = &mut h.as_ustar_mut().unwrap().prefix;
                prefix[..dir.len()].copy_from_slice(dir.as_bytes());
            }
            _ => set_raw_name(&mut h, name.as_bytes()),
        }
        if let Style::OldRegular = style {
            h.as_old_mut().linkflag = [0];
        }
        if let Style::Base256 = style {
            let size = &mut h.as_old_mut().size;
            *size = [0; 12];
            size[0] = 0x80;
            size[4..].copy_from_slice(&(data.len() as u64).to_be_bytes());
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    } else {
        // The tar crate writes a GNU long-name entry (or fails for ustar: then use PAX).
        if let Style::Gnu | Style::Base256 = style {
            b.append_data(&mut h, name, data).unwrap();
        } else {
            b.append_pax_extensions([("path", name.as_bytes())])
                .unwrap();
            set_raw_name(&mut h, b"placeholder");
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
    }
}

fn set_raw_name(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    *field = [0; 100];
    field[..name.len()].copy_from_slice(name);
    h.set_cksum();
}
