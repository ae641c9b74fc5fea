//! The pyc file format: PEP 3147 names, the PEP 552 header, and the source hash.
//! The magic number, cache tag and hash variant come from the interpreter itself (its hello).

use std::ffi::{OsStr, OsString};
use std::hash::Hasher;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use siphasher::sip::{SipHasher13, SipHasher24};

use crate::python::InvalidationMode;

/// What one interpreter's pycs look like.
#[derive(Clone, Debug)]
pub struct PycFormat {
    pub magic: [u8; 4],
    pub cache_tag: String,
    /// `None` before PEP 552 (Python < 3.7): 12-byte header, timestamps only.
    pub source_hash: Option<SourceHash>,
}

/// `_imp.source_hash` is SipHash keyed with the magic number; CPython changed the round
/// count over time, so the variant is found by matching the interpreter's answer for a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceHash {
    Sip13,
    Sip24,
}

impl SourceHash {
    pub fn compute(self, magic: [u8; 4], data: &[u8]) -> [u8; 8] {
        // _RAW_MAGIC_NUMBER is the magic read as a little-endian integer, used as k0 (k1 = 0).
        let key = u32::from_le_bytes(magic) as u64;
        let h = match self {
            SourceHash::Sip13 => {
                let mut s = SipHasher13::new_with_keys(key, 0);
                s.write(data);
                s.finish()
            }
            SourceHash::Sip24 => {
                let mut s = SipHasher24::new_with_keys(key, 0);
                s.write(data);
                s.finish()
            }
        };
        h.to_le_bytes()
    }

    /// The variant that reproduces `hash`, the interpreter's hash of `input`.
    pub fn identify(magic: [u8; 4], input: &[u8], hash: [u8; 8]) -> Option<SourceHash> {
        [SourceHash::Sip13, SourceHash::Sip24]
            .into_iter()
            .find(|v| v.compute(magic, input) == hash)
    }
}

/// What the header says about the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stamp {
    Timestamp { mtime: u32, size: u32 },
    Hash { hash: [u8; 8], checked: bool },
}

impl PycFormat {
    pub fn header_len(&self) -> usize {
        if self.source_hash.is_some() {
            16
        } else {
            12
        }
    }

    pub fn supports_hash(&self) -> bool {
        self.source_hash.is_some()
    }

    // st_mtime is not i64 on every target.
    #[allow(clippy::unnecessary_cast)]
    pub fn stamp(
        &self,
        mode: InvalidationMode,
        st: &rustix::fs::Stat,
        source: Option<&[u8]>,
    ) -> Stamp {
        match (mode, self.source_hash, source) {
            (InvalidationMode::Timestamp, ..) | (_, None, _) => Stamp::Timestamp {
                mtime: mtime_field(st.st_mtime as i64, st.st_mtime_nsec as i64),
                size: st.st_size as u64 as u32,
            },
            (_, Some(h), Some(src)) => Stamp::Hash {
                hash: h.compute(self.magic, src),
                checked: mode == InvalidationMode::CheckedHash,
            },
            (_, Some(_), None) => unreachable!("hash-based pycs need the source bytes"),
        }
    }

    pub fn header(&self, stamp: Stamp) -> Vec<u8> {
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(&self.magic);
        match stamp {
            Stamp::Timestamp { mtime, size } => {
                if self.source_hash.is_some() {
                    h.extend_from_slice(&0u32.to_le_bytes());
                }
                h.extend_from_slice(&mtime.to_le_bytes());
                h.extend_from_slice(&size.to_le_bytes());
            }
            Stamp::Hash { hash, checked } => {
                let flags: u32 = if checked { 0b11 } else { 0b01 };
                h.extend_from_slice(&flags.to_le_bytes());
                h.extend_from_slice(&hash);
            }
        }
        h
    }

    /// `NAME.TAG.pyc` or `NAME.TAG.opt-L.pyc` for the source file name `NAME.py`.
    pub fn pyc_name(&self, source_name: &OsStr, level: u8) -> OsString {
        let stem = source_name
            .as_bytes()
            .strip_suffix(b".py")
            .unwrap_or(source_name.as_bytes());
        cache_name(stem, &self.cache_tag, level)
    }
}

/// The directory beside a source that holds its pycs (PEP 3147).
pub const PYCACHE: &str = "__pycache__";

/// The pyc name in [`PYCACHE`] of the module `stem` (a source's name without `.py`) for the
/// cache tag `tag` at `level`: `NAME.TAG.pyc` or `NAME.TAG.opt-L.pyc`, as
/// `importlib.util.cache_from_source` names it. Compiling, verifying and the cache all name
/// pycs with this.
pub fn cache_name(stem: &[u8], tag: &str, level: u8) -> OsString {
    let mut name = Vec::with_capacity(stem.len() + tag.len() + 12);
    name.extend_from_slice(stem);
    name.push(b'.');
    name.extend_from_slice(tag.as_bytes());
    if level > 0 {
        name.extend_from_slice(format!(".opt-{level}").as_bytes());
    }
    name.extend_from_slice(b".pyc");
    OsString::from_vec(name)
}

/// The header's mtime field exactly as importlib computes it: `int(st.st_mtime) & 0xFFFFFFFF`,
/// where `st_mtime` is the float `sec + nsec * 1e-9` (which can round up to the next second).
/// Times after 2106 or before 1970 wrap like CPython's.
pub fn mtime_field(sec: i64, nsec: i64) -> u32 {
    let float = sec as f64 + nsec as f64 * 1e-9;
    (float.trunc() as i64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt311() -> PycFormat {
        PycFormat {
            magic: [0xa7, 0x0d, 0x0d, 0x0a],
            cache_tag: "cpython-311".into(),
            source_hash: Some(SourceHash::Sip13),
        }
    }

    #[test]
    fn names() {
        let f = fmt311();
        assert_eq!(f.pyc_name(OsStr::new("mod.py"), 0), "mod.cpython-311.pyc");
        assert_eq!(
            f.pyc_name(OsStr::new("mod.py"), 2),
            "mod.cpython-311.opt-2.pyc"
        );
        assert_eq!(
            f.pyc_name(OsStr::new("a.b.py"), 1),
            "a.b.cpython-311.opt-1.pyc"
        );
    }

    #[test]
    fn source_hash_matches_cpython() {
        // Values printed by _imp.source_hash(_RAW_MAGIC_NUMBER, b"pyclink") on 3.8 and 3.11.
        let probe38 = u64::from_str_radix("22b9b40da56d3f9d", 16)
            .unwrap()
            .to_be_bytes();
        let probe311 = u64::from_str_radix("897d4970bd8e8f62", 16)
            .unwrap()
            .to_be_bytes();
        assert_eq!(
            SourceHash::identify([0x55, 0x0d, 0x0d, 0x0a], b"pyclink", probe38),
            Some(SourceHash::Sip24)
        );
        assert_eq!(
            SourceHash::identify([0xa7, 0x0d, 0x0d, 0x0a], b"pyclink", probe311),
            Some(SourceHash::Sip13)
        );
        assert_eq!(
            SourceHash::identify([0xa7, 0x0d, 0x0d, 0x0a], b"pyclink", [0; 8]),
            None
        );
    }

    #[test]
    fn headers() {
        let f = fmt311();
        let h = f.header(Stamp::Timestamp {
            mtime: 0x01020304,
            size: 10,
        });
        assert_eq!(
            h,
            [0xa7, 0x0d, 0x0d, 0x0a, 0, 0, 0, 0, 4, 3, 2, 1, 10, 0, 0, 0]
        );
        let h = f.header(Stamp::Hash {
            hash: [9; 8],
            checked: true,
        });
        assert_eq!(&h[4..8], &[3, 0, 0, 0]);
        assert_eq!(&h[8..], &[9; 8]);
        let old = PycFormat {
            source_hash: None,
            ..f
        };
        assert_eq!(old.header(Stamp::Timestamp { mtime: 1, size: 2 }).len(), 12);
    }

    #[test]
    fn mtime_like_cpython() {
        assert_eq!(mtime_field(1_700_000_000, 0), 1_700_000_000);
        // 2**32 + 5 wraps (year 2106) and negative times wrap like `& 0xFFFFFFFF`.
        assert_eq!(mtime_field(4_294_967_301, 0), 5);
        assert_eq!(mtime_field(-1, 0), 0xFFFF_FFFF);
        // int() truncates toward zero: -1.5 s -> -1.
        assert_eq!(mtime_field(-2, 500_000_000), 0xFFFF_FFFF);
        // The float sum rounds 1700000000.999999999 up to the next second, as CPython does.
        assert_eq!(mtime_field(1_700_000_000, 999_999_999), 1_700_000_001);
        assert_eq!(mtime_field(1_700_000_000, 999_999_000), 1_700_000_000);
    }
}
