//! Valid snapshots built from structured input (`stashless_fuzz::build::Spec`: file order,
//! header forms, extra files, SHA256SUMS spelling, gzip options and members), which must be
//! accepted with exactly the files put in; then one mutation of the gzip stream or of the
//! tar inside it (re-compressed, so the tar and content checks see it), after which the
//! verifier must not panic and may accept only what the reference check accepts.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};
use stashless::archive::ArchiveError;
use stashless_fuzz::build::Spec;
use stashless_fuzz::{chunk_len, verify_everything};

#[derive(Arbitrary, Debug)]
enum Mutation {
    None,
    Flip { at: u32, mask: u8 },
    Truncate { at: u32 },
    Remove { at: u32, len: u8 },
    Insert { at: u32, bytes: Vec<u8> },
    Append { bytes: Vec<u8> },
    TarOverwrite { at: u32, bytes: Vec<u8> },
    TarTruncate { at: u32 },
    TarRemove { at: u32, len: u16 },
    TarInsert { at: u32, bytes: Vec<u8> },
}

#[derive(Arbitrary, Debug)]
struct Input {
    spec: Spec,
    chunks: Vec<u8>,
    mutation: Mutation,
}

fn at(at: u32, len: usize) -> usize {
    at as usize % (len + 1)
}

fuzz_target!(|input: Input| {
    let built = input.spec.build();
    let gz = input.spec.gzip(&built.tar);
    let sizes: Vec<usize> = input.chunks.iter().take(8).map(|&b| chunk_len(b)).collect();

    let info = verify_everything(&gz, &sizes)
        .unwrap_or_else(|e| panic!("a valid snapshot was refused: {e}"));
    let names: Vec<&str> = info.files.iter().map(|f| f.name.as_str()).collect();
    let expected: Vec<&str> = built.files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, expected);
    for (file, (_, data)) in info.files.iter().zip(&built.files) {
        assert_eq!(file.size, data.len() as u64, "{}", file.name);
        assert_eq!(
            file.sha256,
            hex::encode(Sha256::digest(data)),
            "{}",
            file.name
        );
    }
    assert_eq!((info.meta.index, info.meta.term), (built.index, built.term));

    let single_member = input.spec.member_bounds(built.tar.len()).len() == 2;
    let mut tar = built.tar.clone();
    let bad = match input.mutation {
        Mutation::None => return,
        Mutation::Flip { at: i, mask } => {
            let mut g = gz.clone();
            let i = i as usize % g.len();
            g[i] ^= mask.max(1);
            g
        }
        Mutation::Truncate { at: i } => {
            let cut = i as usize % gz.len();
            let err = verify_everything(&gz[..cut], &sizes).err();
            if single_member {
                // A cut single-member stream is always reported as truncated.
                let expected = if cut == 0 {
                    ArchiveError::Empty
                } else {
                    ArchiveError::Truncated {
                        compressed: cut as u64,
                    }
                };
                assert_eq!(err, Some(expected));
            }
            return;
        }
        Mutation::Remove { at: i, len } => {
            let mut g = gz.clone();
            let i = at(i, g.len());
            g.drain(i..(i + usize::from(len)).min(g.len()));
            g
        }
        Mutation::Insert { at: i, bytes } => {
            let mut g = gz.clone();
            let i = at(i, g.len());
            g.splice(i..i, bytes);
            g
        }
        Mutation::Append { bytes } => [gz.as_slice(), &bytes].concat(),
        Mutation::TarOverwrite { at: i, bytes } => {
            let i = at(i, tar.len());
            let n = bytes.len().min(tar.len() - i);
            tar[i..i + n].copy_from_slice(&bytes[..n]);
            input.spec.gzip(&tar)
        }
        Mutation::TarTruncate { at: i } => {
            tar.truncate(at(i, tar.len()));
            input.spec.gzip(&tar)
        }
        Mutation::TarRemove { at: i, len } => {
            let i = at(i, tar.len());
            tar.drain(i..(i + usize::from(len)).min(tar.len()));
            input.spec.gzip(&tar)
        }
        Mutation::TarInsert { at: i, bytes } => {
            let i = at(i, tar.len());
            tar.splice(i..i, bytes);
            input.spec.gzip(&tar)
        }
    };
    let _ = verify_everything(&bad, &sizes);
});
