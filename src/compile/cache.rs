//! `--cache DIR`: compiled results kept by content, so that a rebuild of the same sources
//! (mock and koji rebuilds, CI) skips the interpreters.
//!
//! An entry is a worker's raw response for one source, stored under the SHA-256 of everything
//! that determines it: the interpreter (version, build, magic, cache tag, program, its size and
//! mtime, its environment), this pyclink's worker script (its imports shape the bytes), the
//! requested levels and hints, the `dfile`, and the SHA-256 of the source bytes. Entries are
//! written to a temp file and renamed, so two pyclink processes can share a cache; each carries
//! its own checksum, so a corrupt or truncated entry is detected, ignored and removed. After a
//! run the cache is trimmed to `--cache-max-size`, least recently used first (a hit refreshes
//! an entry's mtime).

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::{Mode, OFlags};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::worker::{Hello, Launch, Request, SCRIPT};
use crate::write::{is_temp_name, remove_stale_temp, TempFile};

const MAGIC: &[u8; 10] = b"PYCLINKC1\n";
const KEY_VERSION: &[u8] = b"pyclink-cache 2\0";

pub type Key = [u8; 32];

/// What this run did with the cache (for `-v` and `--summary-json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CacheStats {
    pub dir: String,
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
    /// Entries that failed their checksum or did not decode: ignored and removed.
    pub rejected: u64,
    /// Entries removed to keep the cache under its size limit.
    pub evicted: u64,
    pub bytes_after: u64,
}

pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    rejected: AtomicU64,
}

impl Cache {
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Cache> {
        std::fs::create_dir_all(dir)?;
        Ok(Cache {
            dir: dir.to_path_buf(),
            max_bytes,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        })
    }

    /// The key of one request compiled by the interpreter `identity` stands for.
    pub fn key(identity: &Key, req: &Request) -> Key {
        let mut h = Sha256::new();
        h.update(KEY_VERSION);
        h.update(identity);
        h.update([req.levels.bits(), req.same.bits()]);
        h.update((req.dfile.len() as u64).to_le_bytes());
        h.update(req.dfile);
        h.update(Sha256::digest(req.source));
        h.finalize().into()
    }

    fn path(&self, key: &Key) -> PathBuf {
        let hex = to_hex(key);
        self.dir.join(&hex[..2]).join(&hex[2..])
    }

    /// The stored payload, if present and intact.
    pub fn get(&self, key: &Key) -> Option<Vec<u8>> {
        let path = self.path(key);
        let Ok(mut f) = File::open(&path) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut data = Vec::new();
        match f
            .read_to_end(&mut data)
            .ok()
            .and_then(|_| unwrap_entry(&data))
        {
            Some(payload) => {
                // Least recently used goes first when the cache is trimmed.
                let _ = f.set_modified(SystemTime::now());
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(payload.to_vec())
            }
            None => {
                self.reject(key);
                None
            }
        }
    }

    /// Drop an entry that is corrupt (or that its reader could not use).
    pub fn reject(&self, key: &Key) {
        log::warn!(
            "cache: entry {} is corrupt; ignored and removed",
            to_hex(key)
        );
        let _ = std::fs::remove_file(self.path(key));
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    /// Store a payload; failures only cost a later miss.
    pub fn put(&self, key: &Key, payload: &[u8]) {
        if let Err(e) = self.try_put(key, payload) {
            log::warn!(
                "cache: cannot store into {}: {e}",
                crate::escape::shown(&self.dir)
            );
        }
    }

    fn try_put(&self, key: &Key, payload: &[u8]) -> io::Result<()> {
        let path = self.path(key);
        let parent = path.parent().expect("entries live in a subdirectory");
        std::fs::create_dir_all(parent)?;
        let dir = Arc::new(rustix::fs::open(
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
        // A registered temp file: an interrupt removes it (see `cleanup`).
        let temp = TempFile::create(&dir, 0o644)?;
        temp.write_all(&[
            MAGIC,
            &(payload.len() as u64).to_le_bytes(),
            payload,
            &Sha256::digest(payload),
        ])?;
        temp.rename_to(path.file_name().expect("a file name").as_ref())?;
        self.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Remove least recently used entries until the cache fits its limit (to 90% of it, so the
    /// next run does not trim again at once), and temp files a killed run left behind (those
    /// of a run still writing are locked, and kept).
    pub fn trim(&self) -> CacheStats {
        let mut entries = Vec::new();
        for sub in read_dir_paths(&self.dir) {
            for path in read_dir_paths(&sub) {
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                let name = path.file_name().unwrap_or_default();
                if is_temp_name(name) {
                    if let Ok(dir) = std::fs::File::open(&sub) {
                        let _ = remove_stale_temp(&dir, name);
                    }
                } else if meta.is_file() {
                    entries.push((mtime, meta.len(), path));
                }
            }
        }
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let mut evicted = 0;
        if total > self.max_bytes {
            entries.sort();
            let goal = self.max_bytes / 10 * 9;
            for (_, size, path) in &entries {
                if total <= goal {
                    break;
                }
                if std::fs::remove_file(path).is_ok() {
                    evicted += 1;
                }
                total -= size;
            }
        }
        CacheStats {
            dir: crate::escape::path_text(self.dir.as_os_str()).into_owned(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            evicted,
            bytes_after: total,
        }
    }
}

/// Everything about an interpreter that decides the bytes it compiles to.
pub fn interpreter_identity(hello: &Hello, launch: &Launch) -> Key {
    let mut h = Sha256::new();
    h.update(KEY_VERSION);
    h.update(Sha256::digest(SCRIPT.as_bytes()));
    for field in [
        &hello.implementation,
        &hello.build,
        &hello.executable,
        &hello.format.cache_tag,
    ] {
        h.update((field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    h.update(hello.format.magic);
    h.update(launch.program.as_os_str().as_encoded_bytes());
    // A rebuilt interpreter at the same path changes size or mtime.
    if let Ok(meta) = std::fs::metadata(&launch.program) {
        h.update(meta.len().to_le_bytes());
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
        h.update(mtime.map_or(0, |d| d.as_nanos()).to_le_bytes());
    }
    for (k, v) in &launch.env {
        h.update(k.as_encoded_bytes());
        h.update(b"=");
        h.update(v.as_encoded_bytes());
        h.update(b"\0");
    }
    h.finalize().into()
}

fn unwrap_entry(data: &[u8]) -> Option<&[u8]> {
    let rest = data.strip_prefix(MAGIC)?;
    let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
    let payload = rest.get(8..8usize.checked_add(len)?)?;
    let sum = rest.get(8 + len..)?;
    (sum.len() == 32 && sum == Sha256::digest(payload).as_slice()).then_some(payload)
}

fn read_dir_paths(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `--cache-max-size`: bytes, or a number with K, M, G or T (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let mult: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("'{s}': unknown size unit (use K, M, G or T)")),
            };
            (&t[..i], mult)
        }
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 2G, 500M)"))?;
    if !(n.is_finite() && n >= 0.0) {
        return Err(format!("'{s}' is not a size"));
    }
    Ok((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::predict::IdenticalLevels;
    use crate::python::Levels;

    fn request<'a>(source: &'a [u8], dfile: &'a [u8]) -> Request<'a> {
        Request {
            source,
            dfile,
            levels: Levels::ALL,
            same: IdenticalLevels::nothing(),
        }
    }

    #[test]
    fn keys_change_with_everything_that_matters() {
        let id = [1u8; 32];
        let base = Cache::key(&id, &request(b"x = 1\n", b"/a.py"));
        assert_eq!(base, Cache::key(&id, &request(b"x = 1\n", b"/a.py")));
        assert_ne!(
            base,
            Cache::key(&id, &request(b"x = 2\n", b"/a.py")),
            "source"
        );
        assert_ne!(
            base,
            Cache::key(&id, &request(b"x = 1\n", b"/b.py")),
            "dfile"
        );
        assert_ne!(
            base,
            Cache::key(&[2u8; 32], &request(b"x = 1\n", b"/a.py")),
            "interpreter"
        );
        let mut r = request(b"x = 1\n", b"/a.py");
        r.levels = Levels::from_list(&[0, 1]).unwrap();
        assert_ne!(base, Cache::key(&id, &r), "levels");
    }

    #[test]
    fn round_trip_corruption_and_trim() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::open(t.path(), 1 << 20).unwrap();
        let k1 = Cache::key(&[0; 32], &request(b"a", b"/a.py"));
        assert!(cache.get(&k1).is_none());
        cache.put(&k1, b"payload one");
        assert_eq!(cache.get(&k1).unwrap(), b"payload one");
        // Flip a byte of the stored payload: detected, ignored, removed.
        let path = cache.path(&k1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[MAGIC.len() + 8] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(cache.get(&k1).is_none());
        assert!(!path.exists());
        // Truncated entries too.
        cache.put(&k1, b"payload one");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(cache.get(&k1).is_none());
        let s = cache.trim();
        assert_eq!((s.hits, s.stored, s.rejected), (1, 2, 2));

        // Over the limit, the least recently used entries go first.
        let small = Cache::open(t.path(), 3000).unwrap();
        let keys: Vec<Key> = (0..5u8)
            .map(|i| Cache::key(&[i; 32], &request(b"s", b"/s.py")))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            small.put(k, &vec![i as u8; 1000]);
            let f = File::options().write(true).open(small.path(k)).unwrap();
            f.set_modified(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64),
            )
            .unwrap();
        }
        let s = small.trim();
        assert!(s.bytes_after <= 2700, "{s:?}");
        assert!(small.path(&keys[4]).exists() && !small.path(&keys[0]).exists());
    }

    #[test]
    fn entries_are_written_through_registered_temp_files() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::open(t.path(), 1 << 20).unwrap();
        let k = Cache::key(&[3; 32], &request(b"t", b"/t.py"));
        cache.put(&k, b"payload");
        let dir = cache.path(&k).parent().unwrap().to_path_buf();
        // A temp file an interrupted run left (nobody holds its lock) goes at the next trim;
        // one a live run is writing stays.
        std::fs::write(dir.join(".pyclink-1-1.tmp"), b"half").unwrap();
        let dir_fd = std::sync::Arc::new(
            rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap(),
        );
        let live = TempFile::create(&dir_fd, 0o644).unwrap();
        cache.trim();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n == ".pyclink-1-1.tmp"), "{names:?}");
        assert_eq!(
            names
                .iter()
                .filter(|n| is_temp_name(std::ffi::OsStr::new(n)))
                .count(),
            1
        );
        drop(live);
        assert_eq!(cache.get(&k).unwrap(), b"payload");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("-1M").is_err());
    }
}
