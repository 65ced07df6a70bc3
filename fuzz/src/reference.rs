//! A reference check of a snapshot, written separately from the streaming verifier: the
//! whole stream is decompressed with zlib-rs (gzip framing, inflate and checksums of its
//! own: the verifier decodes with flate2 on miniz_oxide, so one inflate or gzip bug cannot
//! hide in both), the tar is walked as one buffer, and the content rules of
//! `stashless::archive` (module docs) are applied to the files found. Used only on streams
//! the verifier accepted: if it says "fine", this must say "fine" and see the same files.
//!
//! Tar semantics are Go's `archive/tar` (what Vault and OpenBao read snapshots with):
//! ustar prefix, GNU base-256 sizes, PAX `path`/`size` records (each PAX header replaces the
//! previous one), GNU long names (which win over a PAX `path`), header-only link, device,
//! directory and FIFO types, `typeflag 0` with a trailing `/` as a directory, a global PAX
//! header as an entry of its own (using up the extended headers before it). The verifier's
//! documented leniencies are mirrored: `./` is stripped, other files are allowed, trailing
//! zero padding is allowed.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};
use stashless::archive::{
    ArchiveFile, META_JSON, SHA256SUMS, SHA256SUMS_SEALED, STATE_BIN, SnapshotInfo,
};

const BLOCK: usize = 512;
/// Larger decompressed streams are not checked (a fuzz input cannot get near this).
const MAX_TAR: u64 = 256 << 20;

/// A file of the archive as the reference reads it.
#[derive(Debug)]
pub struct RefFile {
    pub name: String,
    pub data: Vec<u8>,
}

/// Panics, with the reason, unless the reference check accepts `stream` and finds what
/// `info` reports.
pub fn assert_agrees(stream: &[u8], info: &SnapshotInfo) {
    let files = match check(stream) {
        Ok(files) => files,
        Err(why) => panic!("the verifier accepted a snapshot the reference rejects: {why}"),
    };
    let expected: Vec<ArchiveFile> = files
        .iter()
        .map(|f| ArchiveFile {
            name: f.name.clone(),
            size: f.data.len() as u64,
            sha256: hex::encode(Sha256::digest(&f.data)),
        })
        .collect();
    assert_eq!(info.files, expected, "files differ from the reference");
    assert_eq!(info.sha256, hex::encode(Sha256::digest(stream)));
    assert_eq!(info.size, stream.len() as u64);
    let state = files.iter().find(|f| f.name == STATE_BIN).expect("checked");
    assert_eq!(info.state_size, state.data.len() as u64);
    let meta = files.iter().find(|f| f.name == META_JSON).expect("checked");
    let raw: serde_json::Value = serde_json::from_slice(&meta.data).expect("checked");
    assert_eq!(info.meta.raw, raw);
    assert_eq!(info.meta.index, raw["Index"].as_u64().unwrap_or(0));
    assert_eq!(info.meta.term, raw["Term"].as_u64().unwrap_or(0));
    assert_eq!(info.meta.size, raw["Size"].as_u64());
}

/// The regular files of a valid snapshot, or why it is not one.
pub fn check(stream: &[u8]) -> Result<Vec<RefFile>, String> {
    if stream.is_empty() {
        return Err("empty".into());
    }
    let tar = gunzip(stream).map_err(|e| format!("gzip: {e}"))?;
    let files = read_tar(&tar)?;
    check_content(&files)?;
    Ok(files)
}

/// Decompresses every member of a gzip stream with zlib-rs (not flate2: flate2 is what the
/// verifier decodes with, and a flate2 feature here would switch the verifier's backend
/// too, the fuzz build having one flate2). A member must end with its trailer, and
/// another member or nothing must follow it.
fn gunzip(mut stream: &[u8]) -> Result<Vec<u8>, String> {
    use zlib_rs::{Inflate, InflateFlush, Status};
    let mut tar = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !stream.is_empty() {
        // 16 + 15: a gzip header, a 32 KiB window; the trailer is checked too.
        let mut inflate = Inflate::new(true, 16 + 15);
        loop {
            let (in_before, out_before) = (inflate.total_in(), inflate.total_out());
            let status = inflate
                .decompress(stream, &mut buf, InflateFlush::NoFlush)
                .map_err(|e| {
                    format!(
                        "{} ({})",
                        e.as_str(),
                        inflate.error_message().unwrap_or("no detail")
                    )
                })?;
            let consumed = (inflate.total_in() - in_before) as usize;
            let produced = (inflate.total_out() - out_before) as usize;
            stream = &stream[consumed..];
            tar.extend_from_slice(&buf[..produced]);
            if tar.len() as u64 > MAX_TAR {
                return Err("more than the reference checks".into());
            }
            match status {
                Status::StreamEnd => break,
                _ if consumed == 0 && produced == 0 => return Err("truncated".into()),
                _ => {}
            }
        }
    }
    Ok(tar)
}

fn check_content(files: &[RefFile]) -> Result<(), String> {
    let get = |name: &str| files.iter().find(|f| f.name == name);
    for (i, f) in files.iter().enumerate() {
        if files[..i].iter().any(|g| g.name == f.name) {
            return Err(format!("{} twice", f.name));
        }
    }
    let (Some(meta), Some(state), Some(sums), Some(sealed)) = (
        get(META_JSON),
        get(STATE_BIN),
        get(SHA256SUMS),
        get(SHA256SUMS_SEALED),
    ) else {
        return Err("one of the four files is missing".into());
    };
    if sealed.data.is_empty() {
        return Err("empty SHA256SUMS.sealed".into());
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&meta.data).map_err(|e| format!("meta.json: {e}"))?;
    if let Some(size) = meta.get("Size").and_then(|v| v.as_u64())
        && size != state.data.len() as u64
    {
        return Err("meta.json Size is not state.bin's size".into());
    }
    let sums = parse_sums(&sums.data)?;
    for name in [META_JSON, STATE_BIN] {
        if !sums.contains_key(name) {
            return Err(format!("SHA256SUMS does not list {name}"));
        }
    }
    for (name, digest) in &sums {
        let file = get(name).ok_or_else(|| format!("SHA256SUMS lists absent {name}"))?;
        if Sha256::digest(&file.data).as_slice() != digest.as_slice() {
            return Err(format!("{name}: sha256 differs from SHA256SUMS"));
        }
    }
    Ok(())
}

/// `sha256sum` output: `<64 hex><spaces or tabs>[*]<name>`, blank lines skipped.
fn parse_sums(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "SHA256SUMS is not UTF-8")?;
    let mut sums = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let digest = hex::decode(line.get(..64).ok_or("short line")?).map_err(|e| e.to_string())?;
        let rest = &line[64..];
        let name = rest.trim_start_matches([' ', '\t']);
        if name.len() == rest.len() {
            return Err("no separator".into());
        }
        let name = name.strip_prefix('*').unwrap_or(name).trim_end();
        if name.is_empty() || sums.insert(name.to_string(), digest).is_some() {
            return Err(format!("bad or repeated name {name:?}"));
        }
    }
    Ok(sums)
}

/// Walks a whole tar archive and returns its regular files.
fn read_tar(tar: &[u8]) -> Result<Vec<RefFile>, String> {
    let block_at = |pos: usize| tar.get(pos..pos + BLOCK);
    let mut files = Vec::new();
    let mut pos = 0;
    let (mut long_name, mut pax_name, mut pax_size) = (None::<String>, None::<String>, None);
    loop {
        let block = block_at(pos).ok_or("no end-of-archive marker")?;
        if block.iter().all(|&b| b == 0) {
            let next = block_at(pos + BLOCK).ok_or("a single zero block")?;
            if next.iter().any(|&b| b != 0) {
                return Err("a zero block followed by a header".into());
            }
            if tar[pos..].iter().any(|&b| b != 0) {
                return Err("data after the end-of-archive marker".into());
            }
            if long_name.is_some() || pax_name.is_some() || pax_size.is_some() {
                return Err("an extended header without an entry".into());
            }
            return Ok(files);
        }
        let header_sum = octal(&block[148..156]).ok_or("checksum field")?;
        let blanked = block
            .iter()
            .enumerate()
            .map(|(i, &b)| if (148..156).contains(&i) { b' ' } else { b });
        let unsigned: u64 = blanked.clone().map(u64::from).sum();
        let signed: i64 = blanked.map(|b| i64::from(b as i8)).sum();
        if header_sum != unsigned && i64::try_from(header_sum) != Ok(signed) {
            return Err(format!("checksum at {pos}"));
        }
        let size_field = numeric(&block[124..136]).ok_or("size field")?;
        let typeflag = block[156];
        pos += BLOCK;
        let data_of = |size: u64| -> Result<(&[u8], usize), String> {
            let size = usize::try_from(size).map_err(|_| "huge entry")?;
            let data = tar.get(pos..pos + size).ok_or("entry cut short")?;
            Ok((data, pos + size.div_ceil(BLOCK) * BLOCK))
        };
        match typeflag {
            b'x' => {
                let (data, next) = data_of(size_field)?;
                (pax_name, pax_size) = (None, None);
                for (key, value) in pax_records(data)? {
                    match key.as_slice() {
                        b"path" => pax_name = Some(String::from_utf8_lossy(&value).into_owned()),
                        b"size" => {
                            pax_size = Some(
                                std::str::from_utf8(&value)
                                    .ok()
                                    .and_then(|s| s.parse::<u64>().ok())
                                    .filter(|&s| s <= i64::MAX as u64)
                                    .ok_or("PAX size")?,
                            );
                        }
                        _ => {}
                    }
                }
                pos = next;
            }
            b'L' => {
                let (data, next) = data_of(size_field)?;
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                long_name = (end > 0).then(|| String::from_utf8_lossy(&data[..end]).into_owned());
                pos = next;
            }
            b'K' => pos = data_of(size_field)?.1,
            // Go returns a global header as an entry: the extended headers before it
            // are used up.
            b'g' => {
                (long_name, pax_name, pax_size) = (None, None, None);
                pos = data_of(size_field)?.1;
            }
            _ => {
                let name = match (long_name.take(), pax_name.take()) {
                    (Some(n), _) | (None, Some(n)) => n,
                    (None, None) => header_name(block),
                };
                let size = pax_size.take().unwrap_or(size_field);
                let name = name.strip_prefix("./").map_or(name.clone(), str::to_string);
                let regular =
                    matches!(typeflag, b'0' | b'7') || (typeflag == 0 && !name.ends_with('/'));
                let header_only = matches!(typeflag, b'1'..=b'6' | 0);
                if regular {
                    let (data, next) = data_of(size)?;
                    files.push(RefFile {
                        name,
                        data: data.to_vec(),
                    });
                    pos = next;
                } else if !header_only {
                    pos = data_of(size)?.1;
                }
            }
        }
    }
}

/// A PAX record: key, value.
type PaxRecord = (Vec<u8>, Vec<u8>);

/// `"<len> <key>=<value>\n"` records.
fn pax_records(mut buf: &[u8]) -> Result<Vec<PaxRecord>, String> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let sp = buf
            .iter()
            .position(|&b| b == b' ')
            .ok_or("PAX: no length")?;
        let len: usize = std::str::from_utf8(&buf[..sp])
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("PAX: length")?;
        if len <= sp + 1 || len > buf.len() || buf[len - 1] != b'\n' {
            return Err("PAX: record length".into());
        }
        let record = &buf[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("PAX: no '='")?;
        out.push((record[..eq].to_vec(), record[eq + 1..].to_vec()));
        buf = &buf[len..];
    }
    Ok(out)
}

fn header_name(block: &[u8]) -> String {
    let cstr = |f: &[u8]| {
        let f = &f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())];
        String::from_utf8_lossy(f).into_owned()
    };
    let name = cstr(&block[..100]);
    let prefix = cstr(&block[345..500]);
    if &block[257..265] == b"ustar\x0000" && !prefix.is_empty() {
        format!("{prefix}/{name}")
    } else {
        name
    }
}

/// Octal text, padded with spaces or NULs; all padding is 0.
fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches([' ', '\0']);
    if text.is_empty() {
        return Some(0);
    }
    if !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

/// Octal, or GNU base-256 (high bit set; negative refused).
fn numeric(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 == 0 {
        return octal(field);
    }
    if field[0] & 0x40 != 0 {
        return None;
    }
    let mut bytes = field.to_vec();
    bytes[0] &= 0x3f;
    let significant = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    if bytes.len() - significant > 8 {
        return None;
    }
    let v = bytes[significant..]
        .iter()
        .fold(0u64, |v, &b| (v << 8) | u64::from(b));
    (v <= i64::MAX as u64).then_some(v)
}
