//! `--cache DIR`: compiled results kept by content, so that a rebuild of the same sources
//! (mock and koji rebuilds, CI) skips the interpreters.
//!
//! An entry is a worker's raw response for one source, stored under the SHA-256 of everything
//! that determines it (its [`Key`]): the interpreter (version, build, magic, cache tag, program,
//! its size and mtime, its environment, this pyclink's worker script), the requested levels and
//! hints, the `dfile`, and the SHA-256 of the source bytes. Entries are written to a temp file
//! and renamed, so two pyclink processes can share a cache. After a run the cache is trimmed
//! to `--cache-max-size`, least recently used first (a hit refreshes an entry's mtime).
//!
//! The cache is untrusted storage, so it is reached as the build root is:
//! - DIR is opened once; every subdirectory and entry is opened beneath that handle with
//!   `O_NOFOLLOW`, so nothing is read, created, touched or deleted through a symlink. An entry
//!   must be a regular file (opened with `O_NONBLOCK` and `fstat`ed, so a FIFO cannot block),
//!   read within a size bound.
//! - DIR is pyclink's only if it was new or empty when first used, or carries pyclink's
//!   `CACHEDIR.TAG` (the Cache Directory Tagging standard's file, which backup tools skip, with a
//!   line naming pyclink's format). Any other directory is refused.
//! - Only the names pyclink writes (`XX/` + 62 hex digits, and its temp files) are ever read,
//!   evicted or removed; anything else in DIR is left alone.
//! - Each entry carries its full key inside its checksummed body: an entry copied or renamed to
//!   another key's name is a miss, and dropped.
//! - As ssh's StrictModes: a DIR that someone other than this user and root can write is
//!   refused (they would decide what the build ships), unless `--cache-shared` says that is
//!   meant.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustix::fs::{
    accessat, fstat, mkdirat, openat, statat, unlinkat, Access, AtFlags, Dir, FileType, Mode,
    OFlags, Stat, CWD,
};
use rustix::io::Errno;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::escape::path_text;
use crate::fsroot::{open_file_nofollow, open_subdir, type_name};
use crate::worker::protocol::MAX_FRAME;
use crate::worker::{Hello, Launch, Request, SCRIPT};
use crate::write::{is_temp_name, remove_stale_temp, TempFile};

/// The on-disk format: the tag's line, the entries' magic and the keys change together.
pub const FORMAT: u32 = 3;
const MAGIC: &[u8; 10] = b"PYCLINKC3\n";
const KEY_VERSION: &[u8] = b"pyclink-cache 3\0";
/// What the interpreter identity starts with (unchanged since format 2: the pycs' provenance
/// records name it, so changing it would recompile every package once).
const IDENTITY_VERSION: &[u8] = b"pyclink-cache 2\0";

const TAG_NAME: &str = "CACHEDIR.TAG";
/// The standard's signature, which must start the file.
const SIGNATURE: &str = "Signature: 8a477f597d28d172789f06886806bc55";
/// The line that makes a tagged directory pyclink's, followed by the format number.
const FORMAT_LINE: &str = "# pyclink cache, format ";
/// A tag is a few lines; more is not read.
const TAG_MAX: u64 = 4096;
/// No entry is larger than the largest answer a worker may send, with its key and framing.
const ENTRY_MAX: u64 = MAX_FRAME as u64 + (1 << 20);

fn tag_text() -> String {
    format!(
        "{SIGNATURE}\n\
         # This file is a cache directory tag created by pyclink.\n\
         # For information about cache directory tags, see:\n\
         #\thttps://bford.info/cachedir/\n\
         {FORMAT_LINE}{FORMAT}\n"
    )
}

/// The interpreter identity (see [`interpreter_identity`]).
pub type Identity = [u8; 32];

/// Everything that decides one entry's content, and its name (the SHA-256 of it).
pub struct Key {
    hash: [u8; 32],
    material: Vec<u8>,
}

impl Key {
    /// The key of one request compiled by the interpreter `identity` stands for.
    pub fn new(identity: &Identity, req: &Request) -> Key {
        let mut m = Vec::with_capacity(KEY_VERSION.len() + 32 + 2 + 8 + req.dfile.len() + 32);
        m.extend_from_slice(KEY_VERSION);
        m.extend_from_slice(identity);
        m.extend_from_slice(&[req.levels.bits(), req.hints()]);
        m.extend_from_slice(&(req.dfile.len() as u64).to_le_bytes());
        m.extend_from_slice(req.dfile);
        m.extend_from_slice(&Sha256::digest(req.source));
        Key {
            hash: Sha256::digest(&m).into(),
            material: m,
        }
    }

    /// The entry's subdirectory and file name.
    fn names(&self) -> (String, String) {
        let hex = to_hex(&self.hash);
        (hex[..2].to_string(), hex[2..].to_string())
    }
}

/// What this run did with the cache (for `-v` and `--summary-json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CacheStats {
    pub dir: String,
    /// Used without storing, evicting or removing anything.
    pub read_only: bool,
    pub hits: u64,
    pub misses: u64,
    pub stored: u64,
    /// Entries that failed their checksum, did not decode or held another key's result:
    /// ignored and (unless read-only) removed.
    pub rejected: u64,
    /// Entries removed to keep the cache under its size limit.
    pub evicted: u64,
    /// Names in the cache that are not entries pyclink wrote (other names, and a symlink, FIFO,
    /// directory... under an entry's name): never read, and left alone.
    pub foreign: u64,
    pub bytes_after: u64,
}

/// How the cache may be used (`--cache-max-size`, `--cache-shared`, `--cache-read-only`).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub max_bytes: u64,
    /// Accept a cache other users can write, with a warning.
    pub shared: bool,
    /// Only read: store, evict and remove nothing.
    pub read_only: bool,
}

/// Why a directory is not used as the cache (the run stops, exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the path is empty")]
    EmptyPath,
    #[error("it is {0}, not a directory")]
    NotADirectory(&'static str),
    #[error("a component of its path is not a directory")]
    ParentNotADirectory,
    #[error("it does not exist, and --cache-read-only creates nothing")]
    Missing,
    #[error(
        "{0}, who would decide what this build ships; use a cache only this user (or root) can \
         write, or --cache-shared to accept it"
    )]
    Untrusted(String),
    #[error(
        "it is not empty and has no CACHEDIR.TAG, so it is not pyclink's cache (pyclink only \
         uses a new or empty directory, or one it has tagged; a cache of a pyclink before \
         cache format {FORMAT} has no tag: remove it)"
    )]
    NotTagged,
    #[error("its CACHEDIR.TAG {0}, so it is not pyclink's cache")]
    BadTag(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<Errno> for Refused {
    fn from(e: Errno) -> Refused {
        Refused::Io(e.into())
    }
}

pub struct Cache {
    dir: PathBuf,
    fd: Arc<OwnedFd>,
    max_bytes: u64,
    read_only: bool,
    /// New subdirectories get DIR's permission bits (a group cache stays one).
    subdir_mode: Mode,
    hits: AtomicU64,
    misses: AtomicU64,
    stored: AtomicU64,
    rejected: AtomicU64,
    /// What was warned about once (a subdirectory that is not one): not again for each entry.
    warned: Mutex<BTreeSet<String>>,
}

/// What was found under an entry's name.
enum Lookup {
    Hit(Vec<u8>),
    Miss,
}

impl Cache {
    /// Open (or create) DIR as the cache, if it is pyclink's and trusted; `Ok(None)` (with a
    /// warning) for a cache of another pyclink format, which this run then does without.
    pub fn open(dir: &Path, opts: Options) -> Result<Option<Cache>, Refused> {
        if dir.as_os_str().is_empty() {
            return Err(Refused::EmptyPath);
        }
        let fd = match open_top(dir) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if opts.read_only => return Err(Refused::Missing),
            Err(Errno::NOENT) => {
                // Not world-writable whatever the umask: that would refuse it next time.
                if let Err(e) = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)
                {
                    return Err(not_a_directory(dir).unwrap_or(e.into()));
                }
                open_top(dir)?
            }
            Err(Errno::NOTDIR) => {
                return Err(not_a_directory(dir).unwrap_or(Refused::ParentNotADirectory))
            }
            Err(e) => return Err(e.into()),
        };
        let st = fstat(&fd)?;
        if let Some(who) = writable_by_others(&st, rustix::process::geteuid().as_raw()) {
            let writers = format!("it is writable by {who} (mode {:04o})", st.st_mode & 0o7777);
            if !opts.shared {
                return Err(Refused::Untrusted(writers));
            }
            log::warn!(
                "cache {}: {writers}; it is used as --cache-shared says, and whoever writes it \
                 decides what this build ships",
                path_text(dir.as_os_str())
            );
        }
        let mut read_only = opts.read_only;
        if !read_only && accessat(&fd, ".", Access::WRITE_OK, AtFlags::EACCESS).is_err() {
            log::warn!(
                "cache {}: this user cannot write it; it is used read-only (--cache-read-only \
                 says so without this warning)",
                path_text(dir.as_os_str())
            );
            read_only = true;
        }
        let fd = Arc::new(fd);
        let mut tag = read_tag(&fd)?;
        if tag.is_none() && !is_empty(&fd)? {
            // A run starting at the same time may have just tagged it (the tag comes before
            // any entry).
            tag = read_tag(&fd)?;
        }
        match tag {
            Some(FORMAT) => {}
            Some(other) => {
                log::warn!(
                    "cache {}: it holds pyclink cache format {other}, this pyclink reads and \
                     writes format {FORMAT}; the cache is not used in this run (give each \
                     pyclink its own cache, or remove this one)",
                    path_text(dir.as_os_str())
                );
                return Ok(None);
            }
            None if !is_empty(&fd)? => return Err(Refused::NotTagged),
            None if read_only => {}
            None => {
                let tag = TempFile::create(&fd, 0o644)?;
                tag.write_all(&[tag_text().as_bytes()])?;
                tag.rename_to(OsStr::new(TAG_NAME))?;
            }
        }
        Ok(Some(Cache {
            dir: dir.to_path_buf(),
            fd,
            max_bytes: opts.max_bytes,
            read_only,
            subdir_mode: Mode::from_raw_mode(st.st_mode & 0o777),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            stored: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            warned: Mutex::new(BTreeSet::new()),
        }))
    }

    /// The stored payload, if present, intact and stored under this very key.
    pub fn get(&self, key: &Key) -> Option<Vec<u8>> {
        match self.lookup(key) {
            Lookup::Hit(payload) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(payload)
            }
            Lookup::Miss => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn lookup(&self, key: &Key) -> Lookup {
        let (sub, name) = key.names();
        let Some(dir) = self.subdir(&sub, false) else {
            return Lookup::Miss;
        };
        // Hex digits: nothing to escape.
        let shown = || format!("{sub}/{name}");
        let name = OsStr::new(&name);
        let file = match open_file_nofollow(&dir, name) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Lookup::Miss,
            Err(e) => {
                // A symlink (ELOOP), a socket (ENXIO)...: say what it is.
                match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) => self.foreign(&shown(), &st),
                    Err(_) => log::warn!("cache: cannot read {}: {e}", self.shown(&shown())),
                }
                return Lookup::Miss;
            }
        };
        let st = match fstat(&file) {
            Ok(st) => st,
            Err(e) => {
                log::warn!("cache: cannot read {}: {e}", self.shown(&shown()));
                return Lookup::Miss;
            }
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            self.foreign(&shown(), &st);
            return Lookup::Miss;
        }
        let size = st.st_size as u64;
        let mut data = Vec::new();
        let read = if size > ENTRY_MAX {
            Err("is larger than any entry")
        } else {
            data.reserve_exact(size as usize);
            // One byte more than fstat said: an entry still growing is not one pyclink wrote.
            match (&file).take(size + 1).read_to_end(&mut data) {
                Ok(n) if n as u64 == size => unwrap_entry(&data, key),
                Ok(_) => Err("changed size while read"),
                Err(_) => Err("cannot be read"),
            }
        };
        match read {
            Ok(payload) => {
                // Least recently used goes first when the cache is trimmed. Never the mtime of
                // an inode that also has a name elsewhere.
                if !self.read_only && st.st_nlink == 1 {
                    let _ = file.set_modified(SystemTime::now());
                }
                Lookup::Hit(payload.to_vec())
            }
            Err(why) => {
                self.drop_entry(&dir, name, Some(&st), &shown(), why);
                Lookup::Miss
            }
        }
    }

    /// An entry that decoded but that its reader could not use.
    pub fn reject(&self, key: &Key) {
        let (sub, name) = key.names();
        // Counted as a hit by `get`: it is a miss after all.
        self.hits.fetch_sub(1, Ordering::Relaxed);
        self.misses.fetch_add(1, Ordering::Relaxed);
        if let Some(dir) = self.subdir(&sub, false) {
            let shown = format!("{sub}/{name}");
            self.drop_entry(&dir, OsStr::new(&name), None, &shown, "does not decode");
        }
    }

    /// Count and remove a bad entry: only if the name still holds the file that was read
    /// (`st`), so an entry a concurrent run just stored stays.
    fn drop_entry(&self, dir: &OwnedFd, name: &OsStr, st: Option<&Stat>, shown: &str, why: &str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        if self.read_only {
            log::warn!(
                "cache: entry {} {why}; ignored (read-only)",
                self.shown(shown)
            );
            return;
        }
        log::warn!(
            "cache: entry {} {why}; ignored and removed",
            self.shown(shown)
        );
        let same = match (st, statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)) {
            (Some(read), Ok(now)) => read.st_ino == now.st_ino && read.st_dev == now.st_dev,
            (None, Ok(_)) => true,
            (_, Err(_)) => false,
        };
        if same {
            let _ = unlinkat(dir, name, AtFlags::empty());
        }
    }

    /// Something under an entry's name that pyclink does not write: never read, left alone
    /// (storing the key replaces a name that is not a directory, never writing through it).
    fn foreign(&self, shown: &str, st: &Stat) {
        let ft = FileType::from_raw_mode(st.st_mode);
        let fate = match ft {
            FileType::Directory => {
                "; not removed (pyclink removes no directory), so this key is not cached"
            }
            _ if self.read_only => "",
            _ => "; storing this key replaces it",
        };
        log::warn!(
            "cache: {} is {}, not an entry pyclink wrote: not read{fate}",
            self.shown(shown),
            type_name(ft)
        );
    }

    /// Store a payload; failures only cost a later miss.
    pub fn put(&self, key: &Key, payload: &[u8]) {
        if self.read_only {
            return;
        }
        match self.try_put(key, payload) {
            Ok(true) => {
                self.stored.fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            // A directory under the entry's name: already said when it was looked up.
            Err(e) if e.raw_os_error() == Some(Errno::ISDIR.raw_os_error()) => {}
            Err(e) => log::warn!(
                "cache: cannot store into {}: {e}",
                path_text(self.dir.as_os_str())
            ),
        }
    }

    fn try_put(&self, key: &Key, payload: &[u8]) -> io::Result<bool> {
        let (sub, name) = key.names();
        let made = match mkdirat(&*self.fd, sub.as_str(), self.subdir_mode) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(e.into()),
        };
        let Some(dir) = self.subdir(&sub, true) else {
            return Ok(false);
        };
        if made {
            // Whatever the umask: the other members of a group cache must store here too.
            let _ = rustix::fs::fchmod(&dir, self.subdir_mode);
        }
        // A registered temp file: an interrupt removes it (see `cleanup`).
        let temp = TempFile::create(&Arc::new(dir), 0o644)?;
        let body_len = 8 + key.material.len() as u64 + payload.len() as u64;
        let key_len = (key.material.len() as u64).to_le_bytes();
        let mut sum = Sha256::new();
        for part in [&key_len[..], &key.material, payload] {
            sum.update(part);
        }
        temp.write_all(&[
            MAGIC,
            &body_len.to_le_bytes(),
            &key_len,
            &key.material,
            payload,
            &sum.finalize(),
        ])?;
        temp.rename_to(OsStr::new(&name))?;
        Ok(true)
    }

    /// Open the subdirectory `sub` without following a symlink; `None` if it is missing or is
    /// not a directory (said once per run).
    fn subdir(&self, sub: &str, storing: bool) -> Option<OwnedFd> {
        match open_subdir(&*self.fd, OsStr::new(sub)) {
            Ok(fd) => Some(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound && !storing => None,
            Err(e) => {
                let first = self
                    .warned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(sub.to_string());
                if first {
                    match statat(&*self.fd, sub, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::Directory => {
                            log::warn!(
                                "cache: {} is {}, not a directory: nothing is read or stored \
                                 through it",
                                self.shown(sub),
                                type_name(FileType::from_raw_mode(st.st_mode))
                            );
                        }
                        _ => log::warn!("cache: cannot open {}: {e}", self.shown(sub)),
                    }
                }
                None
            }
        }
    }

    /// A name inside the cache, as messages print it.
    fn shown(&self, rel: &str) -> String {
        format!("{}/{rel}", path_text(self.dir.as_os_str()))
    }

    /// Remove least recently used entries until the cache fits its limit (to 90% of it, so the
    /// next run does not trim again at once), and temp files a killed run left behind (those
    /// of a run still writing are locked, and kept). Only pyclink's names are looked at; a
    /// read-only cache is only measured.
    pub fn trim(&self) -> CacheStats {
        let mut entries = Vec::new();
        let mut foreign = 0;
        for top in dir_names(&self.fd) {
            let top = OsStr::from_bytes(&top);
            if top == TAG_NAME {
                continue;
            }
            if is_temp_name(top) {
                if !self.read_only {
                    let _ = remove_stale_temp(&*self.fd, top);
                }
                continue;
            }
            let sub = match is_hex(top, 2).then(|| open_subdir(&*self.fd, top)) {
                Some(Ok(sub)) => sub,
                _ => {
                    foreign += 1;
                    continue;
                }
            };
            for name in dir_names(&sub) {
                let name = OsStr::from_bytes(&name);
                if is_temp_name(name) {
                    if !self.read_only {
                        let _ = remove_stale_temp(&sub, name);
                    }
                    continue;
                }
                match statat(&sub, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st)
                        if is_hex(name, 62)
                            && FileType::from_raw_mode(st.st_mode) == FileType::RegularFile =>
                    {
                        let mtime = (st.st_mtime, st.st_mtime_nsec);
                        entries.push((mtime, st.st_size as u64, top.to_owned(), name.to_owned()));
                    }
                    Ok(_) => foreign += 1,
                    Err(_) => {}
                }
            }
        }
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        let mut evicted = 0;
        if total > self.max_bytes && !self.read_only {
            entries.sort();
            let goal = self.max_bytes / 10 * 9;
            let mut open: Option<(std::ffi::OsString, OwnedFd)> = None;
            for (_, size, sub, name) in &entries {
                if total <= goal {
                    break;
                }
                if !matches!(&open, Some((s, _)) if s == sub) {
                    open = open_subdir(&*self.fd, sub).ok().map(|fd| (sub.clone(), fd));
                }
                if let Some((_, dir)) = &open {
                    if unlinkat(dir, name, AtFlags::empty()).is_ok() {
                        evicted += 1;
                    }
                }
                total -= size;
            }
        }
        CacheStats {
            dir: path_text(self.dir.as_os_str()).into_owned(),
            read_only: self.read_only,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            evicted,
            foreign,
            bytes_after: total,
        }
    }
}

/// Open the cache directory itself. A symlink naming it is followed, as for the build root:
/// what counts is the directory reached, which must be a trusted, tagged or empty one.
fn open_top(dir: &Path) -> Result<OwnedFd, Errno> {
    openat(
        CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Why `dir` cannot be opened as a directory, if it exists as something else.
fn not_a_directory(dir: &Path) -> Option<Refused> {
    let st = statat(CWD, dir, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    let ft = FileType::from_raw_mode(st.st_mode);
    match ft {
        FileType::Directory => None,
        FileType::Symlink if statat(CWD, dir, AtFlags::empty()).is_err() => {
            Some(Refused::NotADirectory("a dangling symlink"))
        }
        FileType::Symlink => {
            let target = statat(CWD, dir, AtFlags::empty()).ok()?;
            let ft = FileType::from_raw_mode(target.st_mode);
            (ft != FileType::Directory).then(|| Refused::NotADirectory(type_name(ft)))
        }
        _ => Some(Refused::NotADirectory(type_name(ft))),
    }
}

/// Who besides this user and root can write a directory with this status, if anyone (ssh's
/// StrictModes rule; a directory of this user that its group may write is this user's choice).
fn writable_by_others(st: &Stat, me: u32) -> Option<String> {
    let mode = st.st_mode;
    if mode & 0o002 != 0 {
        Some("every user".to_string())
    } else if st.st_uid != me && st.st_uid != 0 {
        Some(format!("its owner, uid {}", st.st_uid))
    } else if mode & 0o020 != 0 && st.st_uid != me {
        Some(format!("its group, gid {}", st.st_gid))
    } else {
        None
    }
}

/// The format of pyclink's tag in the cache directory; `None` if there is no tag; an error if
/// the tag is not a standard one, or another program's.
fn read_tag(dir: &OwnedFd) -> Result<Option<u32>, Refused> {
    let file = match open_file_nofollow(dir, OsStr::new(TAG_NAME)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(match statat(dir, TAG_NAME, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => not_a_tag(&st),
                Err(_) => e.into(),
            })
        }
    };
    let st = fstat(&file)?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(not_a_tag(&st));
    }
    let mut text = Vec::new();
    (&file).take(TAG_MAX).read_to_end(&mut text)?;
    let text = String::from_utf8_lossy(&text);
    let mut lines = text.lines();
    if lines.next() != Some(SIGNATURE) {
        return Err(Refused::BadTag(
            "does not start with the Cache Directory Tagging signature".into(),
        ));
    }
    lines
        .find_map(|l| l.strip_prefix(FORMAT_LINE))
        .and_then(|n| n.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| Refused::BadTag("is another program's".into()))
}

fn not_a_tag(st: &Stat) -> Refused {
    let ft = FileType::from_raw_mode(st.st_mode);
    Refused::BadTag(format!("is {}, not a regular file", type_name(ft)))
}

/// Whether `dir` holds nothing but temp files of pyclink (a tag being written, or left by a
/// killed run).
fn is_empty(dir: &OwnedFd) -> Result<bool, Refused> {
    let mut rd = Dir::read_from(dir)?;
    while let Some(entry) = rd.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if !(name == b"." || name == b".." || is_temp_name(OsStr::from_bytes(&name))) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The names in a directory (`.` and `..` left out); none if it cannot be read.
fn dir_names(dir: &OwnedFd) -> Vec<Vec<u8>> {
    let Ok(mut rd) = Dir::read_from(dir) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    while let Some(Ok(entry)) = rd.read() {
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names
}

/// A name pyclink writes: `len` lowercase hex digits.
fn is_hex(name: &OsStr, len: usize) -> bool {
    let b = name.as_bytes();
    b.len() == len && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// The payload of an entry, if it is intact and stored under `key`.
fn unwrap_entry<'a>(data: &'a [u8], key: &Key) -> Result<&'a [u8], &'static str> {
    let bad = "is not a pyclink cache entry (or is truncated)";
    let rest = data.strip_prefix(MAGIC).ok_or(bad)?;
    let (len, rest) = split_u64(rest).ok_or(bad)?;
    let (body, sum) = rest.split_at_checked(len).ok_or(bad)?;
    if sum != Sha256::digest(body).as_slice() {
        return Err("fails its checksum (corrupt or truncated)");
    }
    let (key_len, body) = split_u64(body).ok_or(bad)?;
    let (material, payload) = body.split_at_checked(key_len).ok_or(bad)?;
    if material != key.material {
        return Err("holds the result for another key (copied or renamed)");
    }
    Ok(payload)
}

fn split_u64(data: &[u8]) -> Option<(usize, &[u8])> {
    let (n, rest) = data.split_at_checked(8)?;
    let n = usize::try_from(u64::from_le_bytes(n.try_into().ok()?)).ok()?;
    Some((n, rest))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything about an interpreter that decides the bytes it compiles to.
pub fn interpreter_identity(hello: &Hello, launch: &Launch) -> Identity {
    let mut h = Sha256::new();
    h.update(IDENTITY_VERSION);
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
impl Cache {
    fn entry_path(&self, key: &Key) -> PathBuf {
        let (sub, name) = key.names();
        self.dir.join(sub).join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::predict::IdenticalLevels;
    use crate::python::Levels;
    use std::fs::File;

    fn request<'a>(source: &'a [u8], dfile: &'a [u8]) -> Request<'a> {
        Request {
            source,
            dfile,
            levels: Levels::ALL,
            same: IdenticalLevels::nothing(),
            fresh_process: false,
            normalized: true,
        }
    }

    fn key(id: u8, source: &[u8], dfile: &[u8]) -> Key {
        Key::new(&[id; 32], &request(source, dfile))
    }

    fn open(dir: &Path, max_bytes: u64) -> Cache {
        let opts = Options {
            max_bytes,
            shared: false,
            read_only: false,
        };
        Cache::open(dir, opts).unwrap().unwrap()
    }

    #[test]
    fn keys_change_with_everything_that_matters() {
        let base = key(1, b"x = 1\n", b"/a.py").hash;
        assert_eq!(base, key(1, b"x = 1\n", b"/a.py").hash);
        assert_ne!(base, key(1, b"x = 2\n", b"/a.py").hash, "source");
        assert_ne!(base, key(1, b"x = 1\n", b"/b.py").hash, "dfile");
        assert_ne!(base, key(2, b"x = 1\n", b"/a.py").hash, "interpreter");
        let mut r = request(b"x = 1\n", b"/a.py");
        r.levels = Levels::from_list(&[0, 1]).unwrap();
        assert_ne!(base, Key::new(&[1; 32], &r).hash, "levels");
    }

    #[test]
    fn round_trip_corruption_and_trim() {
        let t = tempfile::tempdir().unwrap();
        let cache = open(t.path(), 1 << 20);
        let k1 = key(0, b"a", b"/a.py");
        assert!(cache.get(&k1).is_none());
        cache.put(&k1, b"payload one");
        assert_eq!(cache.get(&k1).unwrap(), b"payload one");
        // Flip a byte of the stored payload: detected, ignored, removed.
        let path = cache.entry_path(&k1);
        let mut bytes = std::fs::read(&path).unwrap();
        let last_payload_byte = bytes.len() - 33;
        bytes[last_payload_byte] ^= 0xff;
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
        let small = open(t.path(), 3000);
        let keys: Vec<Key> = (0..5u8).map(|i| key(i, b"s", b"/s.py")).collect();
        for (i, k) in keys.iter().enumerate() {
            small.put(k, &vec![i as u8; 1000]);
            let f = File::options()
                .write(true)
                .open(small.entry_path(k))
                .unwrap();
            f.set_modified(
                SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64),
            )
            .unwrap();
        }
        let s = small.trim();
        assert!(s.bytes_after <= 2700, "{s:?}");
        assert!(small.entry_path(&keys[4]).exists() && !small.entry_path(&keys[0]).exists());
    }

    /// The key is inside the entry: the right bytes under the wrong name are a miss.
    #[test]
    fn an_entry_under_another_keys_name_is_a_miss() {
        let t = tempfile::tempdir().unwrap();
        let cache = open(t.path(), 1 << 20);
        let (a, b) = (key(0, b"a = 1", b"/a.py"), key(0, b"b = 1", b"/b.py"));
        cache.put(&a, b"code of a");
        std::fs::create_dir_all(cache.entry_path(&b).parent().unwrap()).unwrap();
        std::fs::copy(cache.entry_path(&a), cache.entry_path(&b)).unwrap();
        assert!(cache.get(&b).is_none());
        assert!(!cache.entry_path(&b).exists(), "dropped");
        assert_eq!(cache.get(&a).unwrap(), b"code of a");
        assert_eq!(cache.trim().rejected, 1);
    }

    /// The tag is written into a new directory, and it is the standard's.
    #[test]
    fn a_new_cache_is_tagged() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("new/cache");
        open(&dir, 1 << 20);
        let tag = std::fs::read_to_string(dir.join(TAG_NAME)).unwrap();
        assert!(tag.starts_with("Signature: 8a477f597d28d172789f06886806bc55"));
        assert_eq!(tag.as_bytes()[43], b'\n');
        assert!(tag.contains(&format!("# pyclink cache, format {FORMAT}\n")));
        // Reopened: it is pyclink's, whatever it holds.
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        open(&dir, 1 << 20);
    }

    #[test]
    fn entries_are_written_through_registered_temp_files() {
        let t = tempfile::tempdir().unwrap();
        let cache = open(t.path(), 1 << 20);
        let k = key(3, b"t", b"/t.py");
        cache.put(&k, b"payload");
        let dir = cache.entry_path(&k).parent().unwrap().to_path_buf();
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
