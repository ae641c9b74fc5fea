//! Writing the pycs of one source into its `__pycache__`, atomically.
//!
//! Each distinct content is written once to a temp file in the same directory and renamed into
//! place; each level with identical bytes becomes a hardlink made by linking the temp file to a
//! second temp name and renaming that (never unlink-then-link). Readers therefore see either the
//! old pyc or the complete new one, and a kill -9 leaves only whole files plus temp files that
//! the next run removes. Where the filesystem refuses hardlinks, a copy is written instead.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustix::fs::{
    flock, fstat, linkat, openat, renameat, statat, unlinkat, AtFlags, FlockOperation, Mode, OFlags,
};
use rustix::io::Errno;

use crate::cleanup;
use crate::fsroot::{display_in_root, Root};
use provenance::Seal;

pub mod provenance;

pub const TEMP_PREFIX: &str = ".pyclink-";
pub const TEMP_SUFFIX: &str = ".tmp";

/// What writing one source's pycs did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Distinct contents written.
    pub written: u64,
    /// Names made a hardlink to an identical level.
    pub linked: u64,
    /// Names that should have been links but the filesystem refused, so were written as copies.
    pub copied: u64,
    /// Bytes of all names, as if nothing were linked.
    pub apparent_bytes: u64,
    /// Bytes actually stored (distinct inodes).
    pub stored_bytes: u64,
}

impl std::ops::AddAssign for WriteStats {
    fn add_assign(&mut self, o: WriteStats) {
        self.written += o.written;
        self.linked += o.linked;
        self.copied += o.copied;
        self.apparent_bytes += o.apparent_bytes;
        self.stored_bytes += o.stored_bytes;
    }
}

/// One pyc to put in place: the source's header, then this level's marshalled code.
pub struct PycFile<'a> {
    pub name: OsString,
    pub level: u8,
    pub body: &'a [u8],
}

/// A pyc that could not be put in place (its old file, if any, is as it was), and why.
#[derive(Debug)]
pub struct PycError {
    pub name: OsString,
    pub source: io::Error,
}

/// What writing one source's pycs did: the figures of the names now in place, and every
/// name that could not be replaced. One level failing does not stop the others.
#[derive(Debug, Default)]
pub struct Written {
    pub stats: WriteStats,
    pub failed: Vec<PycError>,
}

/// Write `files` (each `header` + body) into the open `__pycache__` directory `dir`. `mode` is
/// the requested file mode (the process umask applies, as for py_compile). With `link`,
/// identical contents share an inode. With a `seal`, each file carries pyclink's provenance
/// record (see `provenance`). The figures count only what is in place afterwards: a level that
/// cannot be replaced (an immutable file, a directory in its place) is in `failed`, and the
/// other levels are written all the same.
pub fn write_pycs(
    dir: &Arc<OwnedFd>,
    header: &[u8],
    files: &[PycFile],
    link: bool,
    mode: u32,
    seal: Option<&Seal>,
) -> Written {
    let mut out = Written::default();
    // Two runs on one root may rewrite the same source at once. Holding the directory's lock
    // while this source's names change keeps its levels consistent: one run's linked set, never
    // level 0 from one run and an identical but separate opt-1 from the other.
    let _lock = match DirLock::take(dir) {
        Ok(lock) => lock,
        Err(e) => {
            out.fail_all(files.iter().map(|f| &f.name), &e);
            return out;
        }
    };
    for group in identical_groups(files, link) {
        let first = &files[group[0]];
        let size = (header.len() + first.body.len()) as u64;
        // The levels this content is the output of (the same for a copy, where links fail).
        let record = seal.map(|s| {
            let mask = group.iter().fold(0u8, |m, &i| m | 1 << files[i].level);
            s.record(mask, header, first.body)
        });
        let temp = match TempFile::create(dir, mode).and_then(|t| {
            t.write_all(&[header, first.body])?;
            t.set_record(record.as_deref())?;
            Ok(t)
        }) {
            Ok(t) => t,
            Err(e) => {
                out.fail_all(group.iter().map(|&i| &files[i].name), &e);
                continue;
            }
        };
        // Names of this group that are now this inode.
        let mut linked = 0;
        for &i in &group[1..] {
            let file = &files[i];
            let placed = match temp.link_new() {
                Ok(alias) => alias.rename_to(&file.name).map(|()| linked += 1),
                Err(e) if refuses_links(&e) => {
                    log::debug!(
                        "hardlink refused ({e}); writing a copy of {}",
                        crate::escape::shown(&file.name)
                    );
                    write_copy(
                        dir,
                        mode,
                        &[header, file.body],
                        record.as_deref(),
                        &file.name,
                    )
                    .map(|()| {
                        out.stats.copied += 1;
                        out.stats.stored_bytes += size;
                        out.stats.apparent_bytes += size;
                    })
                }
                Err(e) => Err(e),
            };
            if let Err(source) = placed {
                out.failed.push(PycError {
                    name: file.name.clone(),
                    source,
                });
            }
        }
        match temp.rename_to(&first.name) {
            Ok(()) => linked += 1,
            Err(source) => out.failed.push(PycError {
                name: first.name.clone(),
                source,
            }),
        }
        // One of the names holding the new inode counts as written, the others as links.
        if linked > 0 {
            out.stats.written += 1;
            out.stats.linked += linked - 1;
            out.stats.stored_bytes += size;
            out.stats.apparent_bytes += size * linked;
        }
    }
    out
}

impl Written {
    fn fail_all<'a>(&mut self, names: impl Iterator<Item = &'a OsString>, e: &io::Error) {
        for name in names {
            self.failed.push(PycError {
                name: name.clone(),
                // io::Error is not Clone; the errno is what the message needs.
                source: e.raw_os_error().map_or_else(
                    || io::Error::new(e.kind(), e.to_string()),
                    io::Error::from_raw_os_error,
                ),
            });
        }
    }
}

/// A separate file with `parts` as its content, renamed to `name` (where a link is refused).
fn write_copy(
    dir: &Arc<OwnedFd>,
    mode: u32,
    parts: &[&[u8]],
    record: Option<&[u8]>,
    name: &OsStr,
) -> io::Result<()> {
    let copy = TempFile::create(dir, mode)?;
    copy.write_all(parts)?;
    copy.set_record(record)?;
    copy.rename_to(name)
}

/// An exclusive `flock` on a directory, released on drop.
pub(crate) struct DirLock<'a>(&'a OwnedFd);

impl<'a> DirLock<'a> {
    pub(crate) fn take(dir: &'a OwnedFd) -> io::Result<DirLock<'a>> {
        flock(dir, FlockOperation::LockExclusive)?;
        Ok(DirLock(dir))
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        let _ = flock(self.0, FlockOperation::Unlock);
    }
}

/// Indices of `files` grouped by identical bytes (each group in input order; the header is
/// the same for every level of a source, so comparing bodies compares the files). Every level is
/// compared with every other, not only its neighbour: 0 and 2 can match while 1 differs.
fn identical_groups(files: &[PycFile], link: bool) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match groups
            .iter_mut()
            .find(|g| link && files[g[0]].body == f.body)
        {
            Some(g) => g.push(i),
            None => groups.push(vec![i]),
        }
    }
    groups
}

/// Errors that mean "this filesystem does not do hardlinks here", where a copy is right.
pub(crate) fn refuses_links(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::XDEV | Errno::MLINK | Errno::PERM | Errno::NOTSUP | Errno::NOSYS)
    )
}

/// The `id` of a temp file that no longer exists under its temp name.
const RENAMED: u64 = u64::MAX;

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A registered, flock-ed temp file (in a `__pycache__`, or the cache). The lock tells a
/// concurrent run's stale-temp cleanup that this one is alive; dropping without a rename
/// removes the file, and so does an interrupt (see `cleanup`).
pub(crate) struct TempFile {
    dir: Arc<OwnedFd>,
    fd: OwnedFd,
    name: OsString,
    id: u64,
}

impl TempFile {
    pub(crate) fn create(dir: &Arc<OwnedFd>, mode: u32) -> io::Result<TempFile> {
        loop {
            let name = temp_name();
            let flags =
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let mode = Mode::from_raw_mode(mode & 0o666);
            let (fd, id) = cleanup::create_registered(dir, || {
                Ok((openat(&**dir, &name, flags, mode)?, name.clone()))
            })?;
            let temp = TempFile {
                dir: dir.clone(),
                fd,
                name,
                id,
            };
            if temp.lock_and_verify()? {
                return Ok(temp);
            }
            // A concurrent run's cleanup removed it between our create and our lock: retry.
        }
    }

    /// Take the lock and make sure the name still refers to our file.
    fn lock_and_verify(&self) -> io::Result<bool> {
        match flock(&self.fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let ours = fstat(&self.fd)?;
        Ok(
            match statat(&*self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st.st_ino == ours.st_ino && st.st_dev == ours.st_dev,
                Err(Errno::NOENT) => false,
                Err(e) => return Err(e.into()),
            },
        )
    }

    /// Write `parts` one after the other, in as few system calls as the kernel allows.
    pub(crate) fn write_all(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut parts: Vec<&[u8]> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
        let mut first = 0;
        while first < parts.len() {
            let slices: Vec<io::IoSlice> =
                parts[first..].iter().map(|p| io::IoSlice::new(p)).collect();
            match rustix::io::writev(&self.fd, &slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(mut n) => {
                    while first < parts.len() && n >= parts[first].len() {
                        n -= parts[first].len();
                        first += 1;
                    }
                    if first < parts.len() {
                        parts[first] = &parts[first][n..];
                    }
                }
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Attach the provenance record (before the rename, so it appears with the content).
    fn set_record(&self, record: Option<&[u8]>) -> io::Result<()> {
        if let Some(record) = record {
            if !provenance::set(&self.fd, record)? {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    log::info!(
                        "this filesystem keeps no user xattrs: a rerun cannot tell pyclink's \
                         pycs from others and will compile everything again"
                    )
                });
            }
        }
        Ok(())
    }

    /// A second temp name for the same inode (which is still locked through `self.fd`).
    fn link_new(&self) -> io::Result<TempFile> {
        self.link_into(&self.dir)
    }

    /// A temp name in `dir` for the same inode (still locked through `self.fd`); `dir` must be
    /// on the same filesystem.
    pub(crate) fn link_into(&self, dir: &Arc<OwnedFd>) -> io::Result<TempFile> {
        #[cfg(test)]
        if let Some(errno) = test_hooks::forced_link_error() {
            return Err(errno.into());
        }
        let name = temp_name();
        let (fd, id) = cleanup::create_registered(dir, || {
            linkat(&*self.dir, &self.name, &**dir, &name, AtFlags::empty())?;
            Ok((self.fd.try_clone()?, name.clone()))
        })?;
        Ok(TempFile {
            dir: dir.clone(),
            fd,
            name,
            id,
        })
    }

    /// A temp name for the existing file `existing` in `dir`, locked like a new temp file: to
    /// make another name a link to it by renaming this one over it.
    pub(crate) fn link_existing(dir: &Arc<OwnedFd>, existing: &OsStr) -> io::Result<TempFile> {
        let name = temp_name();
        let (fd, id) = cleanup::create_registered(dir, || {
            let fd = openat(
                &**dir,
                existing,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            linkat(&**dir, existing, &**dir, &name, AtFlags::empty())?;
            Ok((fd, name.clone()))
        })?;
        let temp = TempFile {
            dir: dir.clone(),
            fd,
            name,
            id,
        };
        // Another run's stale-temp cleanup must see this one as alive. The inode's lock may
        // already be held (another link of it being replaced at the same time): the name is
        // ours all the same.
        let _ = flock(&temp.fd, FlockOperation::NonBlockingLockExclusive);
        Ok(temp)
    }

    /// Give the file exactly these permission bits and this modification time (a rewritten
    /// pyc keeps its own).
    pub(crate) fn set_mode_and_mtime(
        &self,
        mode: u32,
        mtime: rustix::fs::Timespec,
    ) -> io::Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode & 0o7777))?;
        let times = rustix::fs::Timestamps {
            last_access: mtime,
            last_modification: mtime,
        };
        rustix::fs::futimens(&self.fd, &times)?;
        Ok(())
    }

    pub(crate) fn rename_to(mut self, target: &OsStr) -> io::Result<()> {
        let (dir, name) = (&self.dir, &self.name);
        cleanup::finish_registered(self.id, || {
            renameat(&**dir, name.as_os_str(), &**dir, target).map_err(|e| {
                let _ = unlinkat(&**dir, name.as_os_str(), AtFlags::empty());
                io::Error::from(e)
            })
        })?;
        self.id = RENAMED;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.id != RENAMED {
            let (dir, name) = (&self.dir, &self.name);
            cleanup::finish_registered(self.id, || {
                unlinkat(&**dir, name.as_os_str(), AtFlags::empty()).ok()
            });
        }
    }
}

/// The name of a new temp file: `.pyclink-PID-SEQ.tmp`, both numbers in plain decimal. The
/// format is strict so that [`is_temp_name`] can recognize exactly these names: stale-temp
/// cleanup deletes what it recognizes, and a user's `.pyclink-backup.tmp` is not ours.
fn temp_name() -> OsString {
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let pid = PID.get_or_init(std::process::id);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    OsString::from(format!("{TEMP_PREFIX}{pid}-{seq}{TEMP_SUFFIX}"))
}

/// Whether `name` is one that [`temp_name`] makes: the prefix, a process id (a positive u32),
/// `-`, a sequence number (a u64), the suffix; numbers without sign or leading zeros, as Rust
/// prints them. Nothing else: these are the only names stale-temp cleanup may delete.
pub fn is_temp_name(name: &OsStr) -> bool {
    let Some(middle) = name
        .as_bytes()
        .strip_prefix(TEMP_PREFIX.as_bytes())
        .and_then(|n| n.strip_suffix(TEMP_SUFFIX.as_bytes()))
    else {
        return false;
    };
    let mut parts = middle.split(|&b| b == b'-');
    let (Some(pid), Some(seq), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    canonical_decimal::<u32>(pid).is_some_and(|p| p > 0) && canonical_decimal::<u64>(seq).is_some()
}

/// `digits` as a number if it is exactly how Rust prints one: ASCII digits, no sign, no
/// leading zero (but `0` itself), within the type's range.
fn canonical_decimal<T: std::str::FromStr>(digits: &[u8]) -> Option<T> {
    let plain = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits[0] != b'0' || digits.len() == 1);
    plain
        .then(|| std::str::from_utf8(digits).ok()?.parse().ok())
        .flatten()
}

/// Remove the temp files a killed run left in these `__pycache__` directories (root-relative);
/// returns how many. A temp file whose writer is still alive is left alone.
pub fn remove_stale_temps(root: &Root, pycache_dirs: &[PathBuf]) -> usize {
    let mut removed = 0;
    for rel in pycache_dirs {
        let Ok(entries) = std::fs::read_dir(root.host_path(rel)) else {
            continue;
        };
        let temps: Vec<OsString> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| is_temp_name(n))
            .collect();
        if temps.is_empty() {
            continue;
        }
        let Ok(dir) = root.open_dir(rel) else {
            continue;
        };
        for name in temps {
            match remove_stale_temp(&dir, &name) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => log::warn!(
                    "{}: cannot remove stale temp file: {e}",
                    display_in_root(&rel.join(&name))
                ),
            }
        }
    }
    if removed > 0 {
        log::info!(
            "removed {} left by an interrupted run",
            crate::escape::plural(removed as u64, "temp file")
        );
    }
    removed
}

/// Remove a temp file left by an earlier run (killed before it could rename it). Only a
/// regular file with one of pyclink's temp names ([`is_temp_name`]) is ours: anything else (a
/// user's file, a symlink, a FIFO, a directory) is left alone, and so is a temp file whose
/// writer is alive (it holds the lock). Returns whether it was removed.
pub fn remove_stale_temp(dir: impl AsFd, name: &OsStr) -> io::Result<bool> {
    if !is_temp_name(name) {
        return Ok(false);
    }
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        // A symlink (O_NOFOLLOW) is no temp file of ours.
        Err(Errno::NOENT | Errno::LOOP) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let ours = fstat(&fd)?;
    if !crate::fsroot::is_regular(&ours) {
        return Ok(false);
    }
    match flock(&fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(Errno::WOULDBLOCK) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // The name may have been taken by another file since it was opened (another run's
    // cleanup removed ours and a new temp file got the name): unlink only the file locked.
    match statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_dev == ours.st_dev && st.st_ino == ours.st_ino => {}
        Ok(_) | Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    unlinkat(&dir, name, AtFlags::empty())?;
    Ok(true)
}

#[cfg(test)]
pub mod test_hooks {
    use std::cell::Cell;

    thread_local! {
        static FORCED: Cell<Option<rustix::io::Errno>> = const { Cell::new(None) };
    }

    /// Make `linkat` fail with `errno` on this thread (the "filesystem without hardlinks" case
    /// for machines that cannot mount one).
    pub fn force_link_error(errno: Option<rustix::io::Errno>) {
        FORCED.with(|f| f.set(errno));
    }

    pub(super) fn forced_link_error() -> Option<rustix::io::Errno> {
        FORCED.with(|f| f.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn setup() -> (tempfile::TempDir, Arc<OwnedFd>) {
        let t = tempfile::tempdir().unwrap();
        let fd = openat(
            rustix::fs::CWD,
            t.path(),
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
        (t, Arc::new(fd))
    }

    fn pyc<'a>(name: &str, body: &'a [u8]) -> PycFile<'a> {
        let level = match name {
            n if n.contains("opt-1") => 1,
            n if n.contains("opt-2") => 2,
            _ => 0,
        };
        PycFile {
            name: name.into(),
            level,
            body,
        }
    }

    fn ok(w: Written) -> WriteStats {
        assert!(w.failed.is_empty(), "{:?}", w.failed);
        w.stats
    }

    fn ino(t: &tempfile::TempDir, name: &str) -> u64 {
        std::fs::metadata(t.path().join(name)).unwrap().ino()
    }

    fn leftovers(t: &tempfile::TempDir) -> Vec<String> {
        std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect()
    }

    #[test]
    fn links_exactly_the_identical_levels() {
        let (t, dir) = setup();
        // Level 0 and 2 equal, level 1 different: non-adjacent levels are linked too.
        let files = [
            pyc("m.pyc", b"AAA"),
            pyc("m.opt-1.pyc", b"BB"),
            pyc("m.opt-2.pyc", b"AAA"),
        ];
        let s = ok(write_pycs(&dir, b"", &files, true, 0o644, None));
        assert_eq!((s.written, s.linked, s.copied), (2, 1, 0));
        assert_eq!((s.apparent_bytes, s.stored_bytes), (8, 5));
        assert_eq!(ino(&t, "m.pyc"), ino(&t, "m.opt-2.pyc"));
        assert_ne!(ino(&t, "m.pyc"), ino(&t, "m.opt-1.pyc"));
        assert_eq!(std::fs::read(t.path().join("m.opt-1.pyc")).unwrap(), b"BB");
        assert!(leftovers(&t).is_empty());
    }

    #[test]
    fn replaces_existing_names_and_symlinks_without_writing_through() {
        let (t, dir) = setup();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), b"precious").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("m.pyc")).unwrap();
        std::fs::write(t.path().join("m.opt-1.pyc"), b"old").unwrap();
        ok(write_pycs(
            &dir,
            b"",
            &[pyc("m.pyc", b"new"), pyc("m.opt-1.pyc", b"new")],
            true,
            0o644,
            None,
        ));
        assert_eq!(std::fs::read(outside.path()).unwrap(), b"precious");
        assert!(std::fs::symlink_metadata(t.path().join("m.pyc"))
            .unwrap()
            .is_file());
        assert_eq!(ino(&t, "m.pyc"), ino(&t, "m.opt-1.pyc"));
    }

    /// Issue 22, item 6: a level that cannot be replaced (here a directory in its place) is
    /// named, and the other levels are written and counted, whether they share its content or
    /// not.
    #[test]
    fn a_level_that_cannot_be_replaced_does_not_stop_the_others() {
        let (t, dir) = setup();
        std::fs::create_dir_all(t.path().join("m.opt-1.pyc/inside")).unwrap();
        let files = [
            pyc("m.pyc", b"AAA"),
            pyc("m.opt-1.pyc", b"BB"),
            pyc("m.opt-2.pyc", b"C"),
        ];
        let w = write_pycs(&dir, b"", &files, true, 0o644, None);
        let names: Vec<&OsString> = w.failed.iter().map(|f| &f.name).collect();
        assert_eq!(names, ["m.opt-1.pyc"]);
        let s = w.stats;
        assert_eq!((s.written, s.linked, s.copied), (2, 0, 0));
        assert_eq!((s.apparent_bytes, s.stored_bytes), (4, 4));
        assert_eq!(std::fs::read(t.path().join("m.pyc")).unwrap(), b"AAA");
        assert_eq!(std::fs::read(t.path().join("m.opt-2.pyc")).unwrap(), b"C");
        assert!(t.path().join("m.opt-1.pyc/inside").is_dir());
        assert!(leftovers(&t).is_empty());

        // All three identical, the first name blocked: the other two are one inode.
        let files = [
            pyc("n.pyc", b"XY"),
            pyc("n.opt-1.pyc", b"XY"),
            pyc("n.opt-2.pyc", b"XY"),
        ];
        std::fs::create_dir_all(t.path().join("n.pyc/inside")).unwrap();
        let w = write_pycs(&dir, b"", &files, true, 0o644, None);
        let names: Vec<&OsString> = w.failed.iter().map(|f| &f.name).collect();
        assert_eq!(names, ["n.pyc"]);
        let s = w.stats;
        assert_eq!((s.written, s.linked, s.copied), (1, 1, 0));
        assert_eq!((s.apparent_bytes, s.stored_bytes), (4, 2));
        assert_eq!(ino(&t, "n.opt-1.pyc"), ino(&t, "n.opt-2.pyc"));
        assert!(leftovers(&t).is_empty());
    }

    #[test]
    fn no_link_writes_separate_files() {
        let (t, dir) = setup();
        let s = ok(write_pycs(
            &dir,
            b"",
            &[pyc("a.pyc", b"X"), pyc("a.opt-1.pyc", b"X")],
            false,
            0o644,
            None,
        ));
        assert_eq!((s.written, s.linked), (2, 0));
        assert_ne!(ino(&t, "a.pyc"), ino(&t, "a.opt-1.pyc"));
    }

    #[test]
    fn refused_links_fall_back_to_copies() {
        // The syscall-level stand-in for a filesystem without hardlinks; tests/compile.rs also
        // runs the real thing on an exFAT mount where the machine allows it.
        let (t, dir) = setup();
        test_hooks::force_link_error(Some(Errno::PERM));
        let files = [
            pyc("a.pyc", b"X"),
            pyc("a.opt-1.pyc", b"X"),
            pyc("a.opt-2.pyc", b"X"),
        ];
        let s = write_pycs(&dir, b"", &files, true, 0o644, None);
        test_hooks::force_link_error(None);
        let s = ok(s);
        assert_eq!((s.written, s.linked, s.copied), (1, 0, 2));
        assert_eq!(s.stored_bytes, 3);
        assert_ne!(ino(&t, "a.pyc"), ino(&t, "a.opt-1.pyc"));
        assert_eq!(std::fs::read(t.path().join("a.opt-2.pyc")).unwrap(), b"X");
        assert!(leftovers(&t).is_empty());
    }

    #[test]
    fn other_link_errors_are_errors() {
        let (t, dir) = setup();
        test_hooks::force_link_error(Some(Errno::IO));
        let r = write_pycs(
            &dir,
            b"",
            &[pyc("a.pyc", b"X"), pyc("a.opt-1.pyc", b"X")],
            true,
            0o644,
            None,
        );
        test_hooks::force_link_error(None);
        // The link fails, so opt-1 is not written; level 0 still is, and counted so.
        assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
        assert_eq!(r.failed[0].name, "a.opt-1.pyc");
        assert_eq!((r.stats.written, r.stats.linked), (1, 0));
        assert!(t.path().join("a.pyc").exists() && !t.path().join("a.opt-1.pyc").exists());
        assert!(
            leftovers(&t).is_empty(),
            "temp files left: {:?}",
            leftovers(&t)
        );
    }

    #[test]
    fn stale_temps_are_removed_live_ones_kept() {
        let (t, dir) = setup();
        std::fs::write(t.path().join(".pyclink-1-1.tmp"), b"half").unwrap();
        assert!(remove_stale_temp(&*dir, OsStr::new(".pyclink-1-1.tmp")).unwrap());
        let live = TempFile::create(&dir, 0o644).unwrap();
        assert!(!remove_stale_temp(&*dir, &live.name).unwrap());
        drop(live);
        assert!(leftovers(&t).is_empty());
        assert!(is_temp_name(OsStr::new(".pyclink-12-3.tmp")));
        assert!(!is_temp_name(OsStr::new("m.cpython-311.pyc")));
    }

    /// Issue 22, item 9: the names pyclink makes are recognized, and nothing else is: a user's
    /// `.pyclink-backup-of-settings.tmp` is not deleted.
    #[test]
    fn temp_names_are_recognized_exactly() {
        for _ in 0..1000 {
            let name = temp_name();
            assert!(is_temp_name(&name), "{name:?}");
        }
        let pid = std::process::id();
        for name in [
            format!(".pyclink-{pid}-0.tmp"),
            format!(".pyclink-4294967295-{}.tmp", u64::MAX),
            ".pyclink-1-1.tmp".to_string(),
        ] {
            assert!(is_temp_name(OsStr::new(&name)), "{name}");
        }
        for name in [
            ".pyclink-backup-of-settings.tmp",
            ".pyclink-.tmp",
            ".pyclink--.tmp",
            ".pyclink-1-.tmp",
            ".pyclink--1.tmp",
            ".pyclink-1.tmp",
            ".pyclink-1-2-3.tmp",
            ".pyclink-0-1.tmp",
            ".pyclink-01-1.tmp",
            ".pyclink-1-01.tmp",
            ".pyclink-+1-1.tmp",
            ".pyclink-1-+1.tmp",
            ".pyclink- 1-1.tmp",
            ".pyclink-4294967296-1.tmp",
            ".pyclink-1-18446744073709551616.tmp",
            ".pyclink-1-1.tmp.bak",
            ".pyclink-1-1.TMP",
            ".pyclink-1-1.tmp~",
            "x.pyclink-1-1.tmp",
            "pyclink-1-1.tmp",
            ".pyclink-\u{661}-1.tmp",
        ] {
            assert!(!is_temp_name(OsStr::new(name)), "{name}");
        }
        assert!(!is_temp_name(OsStr::from_bytes(b".pyclink-1-1\xff.tmp")));
    }

    /// Cleanup removes only a regular file with one of pyclink's names: a user's file, and a
    /// symlink, FIFO or directory named like a temp file, stay.
    #[test]
    fn stale_temp_cleanup_leaves_what_is_not_ours() {
        let (t, dir) = setup();
        let user = ".pyclink-backup-of-settings.tmp";
        std::fs::write(t.path().join(user), b"settings").unwrap();
        assert!(!remove_stale_temp(&*dir, OsStr::new(user)).unwrap());
        assert_eq!(std::fs::read(t.path().join(user)).unwrap(), b"settings");

        let target = t.path().join("target");
        std::fs::write(&target, b"kept").unwrap();
        std::os::unix::fs::symlink(&target, t.path().join(".pyclink-7-1.tmp")).unwrap();
        rustix::fs::mknodat(
            &*dir,
            ".pyclink-7-2.tmp",
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        std::fs::create_dir(t.path().join(".pyclink-7-3.tmp")).unwrap();
        for name in [".pyclink-7-1.tmp", ".pyclink-7-2.tmp", ".pyclink-7-3.tmp"] {
            assert!(
                !remove_stale_temp(&*dir, OsStr::new(name)).unwrap(),
                "{name}"
            );
            assert!(
                std::fs::symlink_metadata(t.path().join(name)).is_ok(),
                "{name} removed"
            );
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"kept");
        std::fs::write(t.path().join(".pyclink-7-4.tmp"), b"half").unwrap();
        assert!(remove_stale_temp(&*dir, OsStr::new(".pyclink-7-4.tmp")).unwrap());
        assert!(!t.path().join(".pyclink-7-4.tmp").exists());
    }

    #[test]
    fn mode_follows_request_under_umask() {
        let (t, dir) = setup();
        ok(write_pycs(
            &dir,
            b"",
            &[pyc("r.pyc", b"X")],
            true,
            0o100755 | 0o200,
            None,
        ));
        let mode = std::fs::metadata(t.path().join("r.pyc")).unwrap().mode() & 0o777;
        // Read, not set: umask is process-wide and the tests run in parallel threads.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .unwrap();
        let umask = u32::from_str_radix(umask.trim(), 8).unwrap();
        assert_eq!(mode, 0o644 & !umask);
    }
}
