//! What pyclink records on each pyc it writes, so that a later run can trust the pyc without
//! compiling its source again.
//!
//! A pyc's 16-byte header only ties it to its source. It says nothing about the rest: a pyc whose
//! header matches can still hold code with another `co_filename` (an upstream install step that
//! byte-compiled the staging tree), another optimization level, another interpreter's output, or
//! sit unlinked beside an identical level. So a pyc counts as up to date only if pyclink itself
//! wrote exactly these bytes for this source, path, level and interpreter, and the levels are
//! linked as this run would link them.
//!
//! The record is the extended attribute `user.pyclink` on the pyc's inode, set on the temp file
//! before it is renamed into place (so it appears atomically with the content):
//! `pyclink1` + a level mask (bit L: this content is level L's) + SHA-256 over the interpreter's
//! identity, the path inside the root, the mask, and the whole file. Anything else (no record,
//! a record for other levels, bytes changed in place, another interpreter) means "compile again".
//! Packages never carry the record: rpm and dpkg-deb do not store user xattrs. Where the
//! filesystem has no user xattrs, nothing is ever up to date and every run compiles.

use std::os::fd::AsFd;

use rustix::fs::{fgetxattr, fsetxattr, XattrFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

pub const XATTR: &str = "user.pyclink";
const TAG: &[u8; 8] = b"pyclink1";
const VALUE_LEN: usize = TAG.len() + 1 + 32;

/// What decides a pyc's bytes besides its source: the interpreter (with pyclink's worker script
/// and the options that change bytes) and the path the code reports.
#[derive(Clone, Debug)]
pub struct Seal {
    /// See `cache::interpreter_identity`.
    pub identity: [u8; 32],
    /// `co_filename`: `/` + the path inside the root.
    pub dfile: Vec<u8>,
}

impl Seal {
    fn digest(&self, mask: u8, header: &[u8], body: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"pyclink provenance 1\0");
        h.update(self.identity);
        h.update((self.dfile.len() as u64).to_le_bytes());
        h.update(&self.dfile);
        h.update([mask]);
        h.update((header.len() as u64).to_le_bytes());
        h.update(header);
        h.update(body);
        h.finalize().into()
    }

    /// The record for a file holding `header` + `body`, the output of every level in `mask`.
    pub fn record(&self, mask: u8, header: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(VALUE_LEN);
        v.extend_from_slice(TAG);
        v.push(mask);
        v.extend_from_slice(&self.digest(mask, header, body));
        v
    }

    /// The levels `record` (read from a pyc holding `file`) says pyclink wrote `file` for, if it
    /// vouches for these exact bytes, this path and this interpreter.
    pub fn vouched_levels(&self, record: &[u8], file: &[u8], header_len: usize) -> Option<u8> {
        if record.len() != VALUE_LEN || !record.starts_with(TAG) || file.len() < header_len {
            return None;
        }
        let mask = record[TAG.len()];
        let (header, body) = file.split_at(header_len);
        (record[TAG.len() + 1..] == self.digest(mask, header, body)).then_some(mask)
    }
}

/// Put the record on an open file. `Ok(false)`: this filesystem keeps no user xattrs, so the
/// pyc is fine but will not be trusted by a later run.
pub fn set(fd: impl AsFd, record: &[u8]) -> std::io::Result<bool> {
    match fsetxattr(fd, XATTR, record, XattrFlags::empty()) {
        Ok(()) => Ok(true),
        Err(e) if unsupported(e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The record of an open file, if it has one.
pub fn get(fd: impl AsFd) -> Option<Vec<u8>> {
    let mut buf = [0u8; VALUE_LEN + 1];
    match fgetxattr(fd, XATTR, &mut buf[..]) {
        Ok(n) if n <= VALUE_LEN => Some(buf[..n].to_vec()),
        _ => None,
    }
}

/// Errors that mean "no user xattrs here" (tmpfs before Linux 6.6, exFAT, some NFS); ENOSPC and
/// EDQUOT too: a full disk fails the pyc write itself, and the record alone is not worth an error.
fn unsupported(e: Errno) -> bool {
    matches!(
        e,
        Errno::NOTSUP | Errno::PERM | Errno::NOSPC | Errno::DQUOT | Errno::NAMETOOLONG
    ) || e == Errno::OPNOTSUPP
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(dfile: &[u8]) -> Seal {
        Seal {
            identity: [7; 32],
            dfile: dfile.to_vec(),
        }
    }

    #[test]
    fn vouches_only_for_what_it_recorded() {
        let s = seal(b"/usr/lib/python3.12/m.py");
        let header = [1u8; 16];
        let file = [&header[..], b"body"].concat();
        let rec = s.record(0b011, &header, b"body");
        assert_eq!(s.vouched_levels(&rec, &file, 16), Some(0b011));
        let changed = [&header[..], b"bodY"].concat();
        assert_eq!(
            s.vouched_levels(&rec, &changed, 16),
            None,
            "bytes changed in place"
        );
        assert_eq!(
            seal(b"/staging/m.py").vouched_levels(&rec, &file, 16),
            None,
            "another path"
        );
        let other = Seal {
            identity: [8; 32],
            ..s.clone()
        };
        assert_eq!(
            other.vouched_levels(&rec, &file, 16),
            None,
            "another interpreter"
        );
        let mut forged = rec.clone();
        forged[TAG.len()] = 0b111;
        assert_eq!(
            s.vouched_levels(&forged, &file, 16),
            None,
            "the mask is part of the digest"
        );
        assert_eq!(s.vouched_levels(&rec[..10], &file, 16), None);
        assert_eq!(s.vouched_levels(&rec, b"short", 16), None);
    }

    #[test]
    fn round_trips_through_the_filesystem() {
        let t = tempfile::tempdir().unwrap();
        let f = std::fs::File::create(t.path().join("x.pyc")).unwrap();
        assert_eq!(get(&f), None);
        let rec = seal(b"/x.py").record(1, b"h", b"b");
        if set(&f, &rec).unwrap() {
            assert_eq!(get(&f), Some(rec));
        } else {
            println!("SKIP: {} has no user xattrs", t.path().display());
        }
    }
}
