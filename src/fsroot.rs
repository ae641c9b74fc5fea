//! The build root as a directory handle. Everything pyclink opens for writing is reached from
//! this handle one component at a time with `O_NOFOLLOW`, so a symlink planted anywhere in the
//! tree can never redirect a write outside the root (no path is checked first and used later).
//!
//! The one place a symlink is followed is reading a `.py` symlink (and the root's own
//! interpreter) as the installed system would see it: with `openat2(RESOLVE_IN_ROOT)` where the
//! kernel has it, else by pyclink's own walk with the same containment (see [`Resolver`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{
    fstat, openat, openat2, readlinkat, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags,
    Stat, CWD,
};
use rustix::io::Errno;

/// The build root could not be opened (every subcommand stops on it, exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("cannot open the build root {}: {source}", crate::escape::shown(path))]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// An opened build root.
pub struct Root {
    /// Absolute and canonical (see [`Root::open`]).
    path: PathBuf,
    /// As the user spelled it, for the JSON's `buildroot` only.
    given: PathBuf,
    fd: OwnedFd,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Root {
    /// Open the root, and name it once for everything that uses its path: the interpreters
    /// started from it (program, `PYTHONHOME`, `LD_LIBRARY_PATH`, which a child resolves
    /// against its own cwd `/`), the walks and the messages. So a relative, `./`, `..`,
    /// trailing-`/` or symlinked spelling is one root, named alike: the directory opened, as
    /// the kernel names it.
    pub fn open(path: &Path) -> Result<Root, OpenError> {
        let fd = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| OpenError {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Root {
            path: canonical_name(&fd, path),
            given: path.to_path_buf(),
            fd,
        })
    }

    /// The root as the host sees it: absolute, without symlinks, `.` or `..` (for messages,
    /// walking, and the interpreters started from the root).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root as given on the command line (the JSON's `buildroot`, documented "as given").
    pub fn given(&self) -> &Path {
        &self.given
    }

    pub fn host_path(&self, rel: &Path) -> PathBuf {
        self.path.join(rel)
    }

    /// Walk `rel` (root-relative) as every walk of pyclink does: no symlink followed (`rel`
    /// itself included), the entries of each directory in name order.
    pub fn walk(&self, rel: &Path) -> walkdir::IntoIter {
        walkdir::WalkDir::new(self.host_path(rel))
            .follow_links(false)
            .follow_root_links(false)
            .sort_by_file_name()
            .into_iter()
    }

    /// The root-relative path a walk error is about: `top` (where the walk started) when the
    /// error names none inside the root.
    pub fn walk_error_path<'a>(&self, e: &'a walkdir::Error, top: &'a Path) -> &'a Path {
        e.path()
            .and_then(|p| p.strip_prefix(&self.path).ok())
            .unwrap_or(top)
    }

    /// Why a walk failed, as the OS says it: walkdir's own text carries the host path.
    pub fn walk_error_reason(e: &walkdir::Error) -> String {
        match e.io_error() {
            Some(io) => io.to_string(),
            None => "a directory loop (symlinks are not followed)".to_string(),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Open the directory `rel` (root-relative) without following any symlink on the way.
    pub fn open_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        self.open_dir_with(rel, resolver(self.fd()))
    }

    /// [`Root::open_dir`] by the given resolver (the tests compare the two).
    fn open_dir_with(&self, rel: &Path, resolver: Resolver) -> io::Result<OwnedFd> {
        let names = plain_components(rel)?;
        if names.len() > 1 && resolver == Resolver::Openat2 {
            // One lookup instead of one per component (compiling opens each source's
            // directory), under the same rules: no symlink anywhere, nothing above the root.
            // Any failure takes the walk, so the error reported is always the walk's (EAGAIN and
            // ENOSYS from openat2 are no answer at all).
            let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            if let Ok(dir) = openat2(&self.fd, rel, DIR_FLAGS, Mode::empty(), how) {
                return Ok(dir);
            }
        }
        let mut dir = openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?;
        for name in names {
            dir = open_subdir(&dir, name)?;
        }
        Ok(dir)
    }

    /// Open `rel` for reading, resolving symlinks as if the root were `/` (never the host's
    /// files): how a `.py` symlink in a package resolves once installed.
    pub fn open_resolved_in_root(&self, rel: &Path) -> io::Result<File> {
        self.open_resolved_with(rel, resolver(self.fd()))
    }

    /// [`Root::open_resolved_in_root`] by the given resolver (the tests compare the two).
    pub(crate) fn open_resolved_with(&self, rel: &Path, resolver: Resolver) -> io::Result<File> {
        plain_components(rel)?;
        // NONBLOCK: a FIFO is opened without waiting for a writer, and rejected by the caller.
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match resolver {
            Resolver::Openat2 => {
                match openat2(&self.fd, rel, flags, Mode::empty(), ResolveFlags::IN_ROOT) {
                    // EAGAIN: a rename or mount raced with a `..`, and the kernel asks for a
                    // retry; ENOSYS: a seccomp filter installed after the probe. The walk
                    // answers both with the same containment.
                    Err(Errno::AGAIN | Errno::NOSYS) => open_walking(self.fd(), rel, flags)?,
                    other => other?,
                }
            }
            Resolver::Walk => open_walking(self.fd(), rel, flags)?,
        };
        Ok(File::from(fd))
    }

    /// `lstat` of a root-relative path, reached through handles.
    pub fn lstat(&self, rel: &Path) -> io::Result<Stat> {
        match (rel.parent(), rel.file_name()) {
            (Some(parent), Some(name)) => Ok(statat(
                self.open_dir(parent)?,
                name,
                AtFlags::SYMLINK_NOFOLLOW,
            )?),
            _ => Ok(statat(&self.fd, ".", AtFlags::SYMLINK_NOFOLLOW)?),
        }
    }
}

/// The absolute, canonical name of the directory `fd` (opened from `given`): the kernel's own
/// (`/proc/self/fd`), which is the mount it was reached through for a bind mount, else
/// `canonicalize`; each kept only if it is that directory (device and inode), since a path
/// looked up again could meanwhile be another. Without either (no /proc, the directory
/// renamed or removed meanwhile), `given` made absolute against the cwd, so that no child
/// process ever reads a relative root against its own cwd.
fn canonical_name(fd: &OwnedFd, given: &Path) -> PathBuf {
    let Ok(opened) = fstat(fd) else {
        return absolute(given);
    };
    let is_it = |p: &Path| {
        p.is_absolute()
            && statat(CWD, p, AtFlags::empty())
                .is_ok_and(|st| (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino))
    };
    let from_proc = || {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .ok()
            .filter(|p| is_it(p))
    };
    let canonicalized = || given.canonicalize().ok().filter(|p| is_it(p));
    from_proc()
        .or_else(canonicalized)
        .unwrap_or_else(|| absolute(given))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// How a symlink inside the root is resolved; one choice per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// The kernel's `openat2(RESOLVE_IN_ROOT)`, Linux 5.6 and later.
    Openat2,
    /// [`open_walking`]: one component at a time with `O_NOFOLLOW`, each symlink read with
    /// `readlinkat` and resolved against the root. For kernels and sandboxes without openat2.
    Walk,
}

/// Set (to anything but empty or `0`), the walk is used even where openat2 works. A testing
/// knob: the tests run every symlink and containment scenario both ways. Read once per process.
pub const NO_OPENAT2_ENV: &str = "PYCLINK_NO_OPENAT2";

/// The kernel's limit on symlinks followed in one lookup (`MAXSYMLINKS`); one more is `ELOOP`.
pub const MAX_SYMLINKS: u32 = 40;

/// The resolver of this process, chosen at the first use and kept.
pub fn resolver(root: BorrowedFd<'_>) -> Resolver {
    static CHOSEN: OnceLock<Resolver> = OnceLock::new();
    *CHOSEN.get_or_init(|| choose_resolver(root))
}

fn choose_resolver(root: BorrowedFd<'_>) -> Resolver {
    if forces_walk(std::env::var_os(NO_OPENAT2_ENV).as_deref()) {
        log::info!(
            "{NO_OPENAT2_ENV} is set: symlinks inside the build root are resolved one component \
             at a time, without openat2"
        );
        return Resolver::Walk;
    }
    // A probe that cannot fail for the file's sake: an O_PATH open of the root itself reads
    // nothing and needs no permission on it (no LSM or fanotify open hook runs for O_PATH). So
    // any error is openat2 itself being unusable: ENOSYS before Linux 5.6 and from most
    // seccomp profiles, EPERM from container runtimes' older default profiles (and EACCES from
    // some). Deciding here, and not on a source's EPERM, keeps a real per-file EPERM (a
    // fanotify permission event denied) an error about that file instead of a silent retry.
    match openat2(
        root,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT,
    ) {
        Ok(_) => Resolver::Openat2,
        Err(e) => {
            log::info!(
                "openat2 is not usable here ({}): symlinks inside the build root are resolved \
                 one component at a time",
                io::Error::from(e)
            );
            Resolver::Walk
        }
    }
}

/// Whether a value of [`NO_OPENAT2_ENV`] forces the walk.
fn forces_walk(value: Option<&OsStr>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "0")
}

/// `openat2(root, rel, flags, RESOLVE_IN_ROOT)` without openat2. Each component is opened with
/// `O_NOFOLLOW` from the directory before it; a symlink is read and its target walked in its
/// place: an absolute one from the root, `..` never above the root, at most [`MAX_SYMLINKS`]
/// links. Every directory on the way is one reached this way, so the walk cannot leave the root
/// whatever the links say or however the tree changes meanwhile (a race can give an error or
/// another file of the root, never one outside). Errors are the kernel's: ENOENT, ENOTDIR,
/// ELOOP. (One difference: `RESOLVE_IN_ROOT` refuses procfs magic links, which the walk reads
/// as the text they show, resolved inside the root like any link.)
fn open_walking(root: BorrowedFd<'_>, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
    if rel.as_os_str().is_empty() {
        return Err(Errno::NOENT.into());
    }
    // The names from the root to the current directory: `..` reopens the chain one shorter
    // from the root rather than opening `..`, which for a directory moved out of the root
    // meanwhile would lead outside. Only the current directory is held open, so the depth of
    // the tree does not cost descriptors.
    let mut chain: Vec<Vec<u8>> = Vec::new();
    let mut cur: Option<OwnedFd> = None;
    // What remains to resolve, last component first.
    let mut todo: Vec<Vec<u8>> = rel
        .as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .rev()
        .map(<[u8]>::to_vec)
        .collect();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        let at = cur.as_ref().map_or(root, AsFd::as_fd);
        match name.as_slice() {
            b"" | b"." => continue,
            b".." => {
                if chain.pop().is_some() {
                    cur = open_chain(root, &chain)?;
                }
                continue;
            }
            _ => {}
        }
        let name_os = OsStr::from_bytes(&name);
        if todo.is_empty() {
            // The last component, opened as asked; ELOOP from O_NOFOLLOW is a symlink.
            match openat(at, name_os, flags | OFlags::NOFOLLOW, Mode::empty()) {
                Err(Errno::LOOP) => {}
                other => return Ok(other?),
            }
        } else {
            // O_PATH: passing through a directory needs only search permission, as in the
            // kernel's own lookup.
            let fd = openat(
                at,
                name_os,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            match FileType::from_raw_mode(fstat(&fd)?.st_mode) {
                FileType::Directory => {
                    chain.push(name);
                    cur = Some(fd);
                    continue;
                }
                FileType::Symlink => {}
                _ => return Err(Errno::NOTDIR.into()),
            }
        }
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(Errno::LOOP.into());
        }
        let target = match readlinkat(at, name_os, Vec::new()) {
            Ok(t) => t.into_bytes(),
            // No longer a symlink (replaced since it was opened): look at it again; the count
            // above bounds how often.
            Err(Errno::INVAL) => {
                todo.push(name);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if target.is_empty() {
            return Err(Errno::NOENT.into());
        }
        if target[0] == b'/' {
            chain.clear();
            cur = None;
        }
        // A trailing `/` leaves an empty last part, which keeps the name before it from being
        // the last: it must then be a directory, as the kernel requires.
        todo.extend(target.split(|&b| b == b'/').rev().map(<[u8]>::to_vec));
    }
    // The path ended on a directory (`..`, `.`, a trailing `/`, a link to `/`).
    let at = cur.as_ref().map_or(root, AsFd::as_fd);
    Ok(openat(at, ".", flags, Mode::empty())?)
}

/// The directory `chain` names below the root (None: the root), each component a directory
/// opened with `O_NOFOLLOW`.
fn open_chain(root: BorrowedFd<'_>, chain: &[Vec<u8>]) -> io::Result<Option<OwnedFd>> {
    let mut cur: Option<OwnedFd> = None;
    for name in chain {
        let at = cur.as_ref().map_or(root, AsFd::as_fd);
        cur = Some(openat(
            at,
            OsStr::from_bytes(name),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?);
    }
    Ok(cur)
}

/// Whether `path` is the running system's `/`, by identity (device and inode of the opened
/// directory against those of `/`), not by spelling: `//`, `/proc/self/root`, a symlink to `/`
/// and a bind mount of `/` all are (and another mount of the filesystem whose top `/` is).
pub fn is_host_root(path: &Path) -> io::Result<bool> {
    let dir = openat(
        CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let (here, slash) = (fstat(&dir)?, statat(CWD, "/", AtFlags::empty())?);
    Ok((here.st_dev, here.st_ino) == (slash.st_dev, slash.st_ino))
}

/// Open a direct subdirectory without following a symlink.
pub fn open_subdir(dir: impl AsFd, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(openat(dir, name, DIR_FLAGS, Mode::empty())?)
}

/// Open a file in `dir` for reading; a symlink or anything that could block (FIFO) is opened
/// harmlessly and rejected by the caller's type check.
pub fn open_file_nofollow(dir: impl AsFd, name: &OsStr) -> io::Result<File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(File::from(openat(dir, name, flags, Mode::empty())?))
}

/// What a file that should have been another kind is, for messages ("it is a symlink").
pub fn type_name(ft: FileType) -> &'static str {
    match ft {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice | FileType::BlockDevice => "a device",
        FileType::Unknown => "of an unknown kind",
    }
}

pub fn is_regular(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::RegularFile
}

/// The components of a root-relative path; anything but plain names is refused.
fn plain_components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "'{}' is not a plain path inside the build root",
                    crate::escape::shown(rel)
                ),
            )),
        })
        .collect()
}

/// A PATH that does not name something inside the build root.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("'{}' contains '..'; give paths inside the build root", crate::escape::shown(.0))]
    DotDot(PathBuf),
}

/// Turn a user-given PATH into a root-relative path. Relative paths are taken inside the root,
/// except one that starts with a relative root as given and does not exist inside the root
/// (`--buildroot debian/pkg debian/pkg/opt/app`, the way a shell completes it). An absolute
/// path that starts with the root is taken below it (`%{buildroot}/usr/share/foo`); any other
/// absolute path is one inside the root (`/usr/share/foo`, as every message prints paths and
/// as compileall's `-s ROOT -p /` names them). `..` is refused everywhere: it is the one way a
/// plain path can leave the root.
pub fn root_relative(root: &Path, given: &Path) -> Result<PathBuf, PathError> {
    // Root and PATH are compared as absolute, lexically normal paths (`./S`, `S` and `/cwd/S`
    // are one root), never through symlinks inside the root: spelling the same root two ways
    // used to turn `S/usr/x` into `/S/usr/x`.
    let abs_root = lexical(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()));
    let canon_root = root.canonicalize().unwrap_or_else(|_| abs_root.clone());
    let under_root = |p: &Path| -> Option<PathBuf> {
        let p = lexical(p);
        p.strip_prefix(&abs_root)
            .or_else(|_| p.strip_prefix(&canon_root))
            .ok()
            .map(Path::to_path_buf)
    };
    let rel = if given.is_absolute() {
        under_root(given).unwrap_or_else(|| given.strip_prefix("/").unwrap_or(given).into())
    } else {
        match std::path::absolute(given).ok().and_then(|a| under_root(&a)) {
            Some(r) if root.join(given).symlink_metadata().is_err() => r,
            _ => given.to_path_buf(),
        }
    };
    if rel.components().any(|c| c == Component::ParentDir) {
        return Err(PathError::DotDot(given.to_path_buf()));
    }
    Ok(rel
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect())
}

/// `p` without `.` components and repeated `/` (`..` is kept: it is refused, not resolved).
fn lexical(p: &Path) -> PathBuf {
    p.components().filter(|c| *c != Component::CurDir).collect()
}

/// The path as the installed system will see it: `/` + the root-relative path.
pub fn display_in_root(rel: &Path) -> String {
    format!("/{}", crate::escape::path_text(rel.as_os_str()))
}

/// The same as bytes (for `co_filename`, which may hold any file name byte).
pub fn in_root_bytes(rel: &Path) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.as_os_str().len() + 1);
    v.push(b'/');
    v.extend_from_slice(rel.as_os_str().as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    #[test]
    fn root_relative_paths() {
        let root = Path::new("/tmp/br");
        assert_eq!(
            root_relative(root, Path::new("usr/share/x")).unwrap(),
            PathBuf::from("usr/share/x")
        );
        assert_eq!(
            root_relative(root, Path::new("/tmp/br/usr/lib")).unwrap(),
            PathBuf::from("usr/lib")
        );
        assert_eq!(
            root_relative(root, Path::new("/tmp/br")).unwrap(),
            PathBuf::new()
        );
        // An absolute path not under the root is a path inside it, as pyclink prints paths.
        assert_eq!(
            root_relative(root, Path::new("/usr/lib")).unwrap(),
            PathBuf::from("usr/lib")
        );
        assert!(root_relative(root, Path::new("/usr/../../etc")).is_err());
        assert!(root_relative(root, Path::new("usr/../../etc"))
            .unwrap_err()
            .to_string()
            .contains(".."));
        assert!(root_relative(root, Path::new("/tmp/br/../etc")).is_err());
        assert_eq!(
            root_relative(root, Path::new("/tmp/./br//usr/lib")).unwrap(),
            PathBuf::from("usr/lib")
        );
    }

    /// `./S/x`, `S/x` with `--buildroot ./S` or `--buildroot /cwd/S`: one root, one path.
    #[test]
    fn root_spellings_are_one_root() {
        let cwd = std::env::current_dir().unwrap();
        let t = tempfile::tempdir_in(&cwd).unwrap();
        let name = t.path().file_name().unwrap();
        std::fs::create_dir_all(t.path().join("usr/share/foo")).unwrap();
        let want = PathBuf::from("usr/share/foo");
        let plain = Path::new(name).to_path_buf();
        let dotted = Path::new(".").join(name);
        for root in [plain.clone(), dotted.clone(), t.path().to_path_buf()] {
            for given in [plain.join("usr/share/foo"), dotted.join("usr/share/foo")] {
                assert_eq!(
                    root_relative(&root, &given).unwrap(),
                    want,
                    "{root:?} {given:?}"
                );
            }
        }
    }

    /// Every spelling of one root opens under one absolute, canonical name (what children and
    /// messages get), and keeps the spelling given for the JSON.
    #[test]
    fn every_spelling_of_the_root_has_one_canonical_name() {
        let cwd = std::env::current_dir().unwrap();
        let t = tempfile::tempdir_in(&cwd).unwrap();
        let real = t.path().join("real");
        std::fs::create_dir_all(real.join("usr")).unwrap();
        symlink(&real, t.path().join("abs_link")).unwrap();
        symlink("real", t.path().join("rel_link")).unwrap();
        let want = real.canonicalize().unwrap();
        let name = Path::new(t.path().file_name().unwrap());
        let spellings = [
            real.clone(),
            name.join("real"),
            name.join("real/"),
            Path::new(".").join(name).join("real"),
            name.join("./real/."),
            name.join("real/usr/.."),
            name.join("rel_link"),
            name.join("abs_link/"),
            t.path().join("rel_link/usr/.."),
            PathBuf::from(format!("{}//real//", t.path().display())),
        ];
        for given in spellings {
            let root = Root::open(&given).unwrap();
            assert_eq!(root.path(), want, "{given:?}");
            assert_eq!(root.given(), given);
        }
    }

    #[test]
    fn relative_root_prefix_is_stripped_only_when_meant() {
        let t = tempfile::tempdir().unwrap();
        let cwd = std::env::current_dir().unwrap();
        // The relative root as given by a shell, e.g. `--buildroot debian/pkg`, here relative
        // to wherever the test runs. The case needs `rel_root/opt/app` not to exist inside the
        // root as written, but `R/R` can walk up and back down to `R` itself: when the root is
        // as deep below the common ancestor of root and cwd as the cwd, or less deep and that
        // ancestor is `/` (where `..` stops). A root nested deeper than the cwd avoids both,
        // wherever the checkout and the temp dir are.
        let (root, rel_root) = (0..=cwd.components().count() + 1)
            .map(|depth| {
                let root = t.path().join("nest/".repeat(depth)).join("debian/pkg");
                std::fs::create_dir_all(root.join("opt/app")).unwrap();
                let rel_root = pathdiff(&root, &cwd);
                (root, rel_root)
            })
            .find(|(root, rel_root)| !root.join(rel_root).join("opt/app").exists())
            .expect("a root deeper than the cwd");
        std::fs::create_dir_all(root.join("debian/pkg/also")).unwrap();
        assert!(rel_root.is_relative());
        assert_eq!(
            root_relative(&rel_root, &rel_root.join("opt/app")).unwrap(),
            PathBuf::from("opt/app")
        );
        // A path that exists inside the root as written keeps its meaning.
        let inside = Path::new("debian/pkg/also");
        assert_eq!(root_relative(&root, inside).unwrap(), inside);
        // An absolute path that is not under the root is one inside it; under the
        // (canonical) root, it is below the root.
        assert_eq!(
            root_relative(&rel_root, Path::new("/usr/lib/python3")).unwrap(),
            PathBuf::from("usr/lib/python3")
        );
        let abs = root.canonicalize().unwrap().join("usr/lib/python3");
        assert_eq!(
            root_relative(&rel_root, &abs).unwrap(),
            PathBuf::from("usr/lib/python3")
        );
    }

    /// `path` relative to `base` (both absolute), by walking up from `base`.
    fn pathdiff(path: &Path, base: &Path) -> PathBuf {
        let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
        let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
        let mut out = PathBuf::new();
        for _ in common..b.len() {
            out.push("..");
        }
        out.extend(&p[common..]);
        out
    }

    #[test]
    fn open_dir_refuses_symlinks() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("root/a/b")).unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        symlink(t.path().join("outside"), t.path().join("root/a/link")).unwrap();
        symlink("b", t.path().join("root/a/inner")).unwrap();
        std::fs::write(t.path().join("root/a/b/f"), "").unwrap();
        let root = Root::open(&t.path().join("root")).unwrap();
        let errno = |r: io::Result<OwnedFd>| r.err().map(|e| e.raw_os_error());
        let by_walk = |rel: &str| errno(root.open_dir_with(Path::new(rel), Resolver::Walk));
        for resolver in resolvers() {
            let open = |rel: &str| root.open_dir_with(Path::new(rel), resolver);
            assert!(open("a/b").is_ok());
            assert!(open("a").is_ok());
            assert!(open("").is_ok());
            // A symlink, last or on the way, even to a directory inside the root; a file; a
            // name that is not there: refused, with the walk's error whatever the resolver.
            for rel in [
                "a/link",
                "a/inner",
                "a/link/x",
                "a/inner/f",
                "a/b/f",
                "a/none/x",
            ] {
                assert!(open(rel).is_err(), "{rel} by {resolver:?}");
                assert_eq!(errno(open(rel)), by_walk(rel), "{rel} by {resolver:?}");
            }
            assert_eq!(by_walk("a/none/x"), Some(Some(Errno::NOENT.raw_os_error())));
            assert!(open("a/../..").is_err());
        }
    }

    /// The resolvers to test: the walk always, openat2 where this kernel has it.
    fn resolvers() -> Vec<Resolver> {
        let t = tempfile::tempdir().unwrap();
        let root = Root::open(t.path()).unwrap();
        match openat2(
            root.fd(),
            ".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        ) {
            Ok(_) => vec![Resolver::Openat2, Resolver::Walk],
            Err(e) => {
                println!("SKIP the openat2 half: openat2 is not usable here ({e})");
                vec![Resolver::Walk]
            }
        }
    }

    #[test]
    fn resolves_symlinks_against_the_root() {
        for resolver in resolvers() {
            let t = tempfile::tempdir().unwrap();
            let r = t.path().join("root");
            std::fs::create_dir_all(r.join("usr/share")).unwrap();
            std::fs::write(r.join("usr/share/real.py"), "inside = 1\n").unwrap();
            // An absolute target means "inside the root", never the host's /usr/share.
            symlink("/usr/share/real.py", r.join("usr/share/abs.py")).unwrap();
            symlink(
                "../../../../../../../../etc/hostname",
                r.join("usr/share/up.py"),
            )
            .unwrap();
            let root = Root::open(&r).unwrap();
            let content = std::io::read_to_string(
                root.open_resolved_with(Path::new("usr/share/abs.py"), resolver)
                    .unwrap(),
            );
            assert_eq!(content.unwrap(), "inside = 1\n", "{resolver:?}");
            // `..` above the root stays at the root: /etc/hostname inside it does not exist.
            assert!(
                root.open_resolved_with(Path::new("usr/share/up.py"), resolver)
                    .is_err(),
                "{resolver:?}"
            );
        }
    }

    /// Every shape of link, resolved by the walk and by openat2: the same file (device and
    /// inode) or the same errno. What is outside the root is never reached.
    #[test]
    fn the_walk_resolves_as_openat2_does() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.py"), "outside = 1\n").unwrap();
        let r = t.path().join("root");
        let share = r.join("usr/share");
        for d in ["usr/share/pkg", "usr/lib/dir"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(share.join("real.py"), "inside = 1\n").unwrap();
        std::fs::write(share.join("pkg/mod.py"), "pkg = 1\n").unwrap();
        std::fs::write(r.join("usr/lib/dir/f.py"), "lib = 1\n").unwrap();
        rustix::fs::mknodat(
            CWD,
            share.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let up = "../".repeat(12);
        let outside_rel = format!(
            "{}{}",
            "../".repeat(share.components().count()),
            outside
                .join("secret.py")
                .strip_prefix("/")
                .unwrap()
                .display()
        );
        assert!(
            share.join(&outside_rel).exists(),
            "on the host, the relative link really leads out"
        );
        let links: Vec<(&str, String)> = vec![
            ("abs.py", "/usr/share/real.py".into()),
            ("rel.py", "real.py".into()),
            ("dots.py", "./././real.py".into()),
            ("slashes.py", "//usr//share///real.py".into()),
            ("up_in.py", format!("{up}usr/share/real.py")),
            ("up_out.py", outside_rel.clone()),
            (
                "host_abs.py",
                outside.join("secret.py").display().to_string(),
            ),
            ("host_dir", outside.display().to_string()),
            ("dirlink", "../lib/dir".into()),
            ("absdir", "/usr/lib/dir".into()),
            ("slash", "/".into()),
            ("dotdot_dir.py", "pkg/..".into()),
            ("via_dotdot.py", "absdir/../../share/real.py".into()),
            ("trail_file.py", "real.py/".into()),
            ("trail_dir.py", "pkg/".into()),
            ("dot_after_file.py", "real.py/.".into()),
            ("through_file.py", "real.py/x".into()),
            ("dangling.py", "nothing.py".into()),
            ("loop1.py", "loop2.py".into()),
            ("loop2.py", "loop1.py".into()),
            ("self.py", "self.py".into()),
            ("fifo.py", "/usr/share/fifo".into()),
            ("link_to_link.py", "rel.py".into()),
            ("to_dirlink.py", "dirlink/f.py".into()),
        ];
        for (name, target) in &links {
            symlink(target, share.join(name)).unwrap();
        }
        // A relative link inside a directory reached through an absolute link: `..` is the
        // directory's real parent, never above the root.
        symlink("../../share/real.py", r.join("usr/lib/dir/back.py")).unwrap();
        symlink(format!("{up}../.."), r.join("usr/lib/dir/top")).unwrap();
        // Chains of exactly the kernel's limit and one more.
        for i in 0..=MAX_SYMLINKS {
            let next = if i == MAX_SYMLINKS {
                "real.py".to_string()
            } else {
                format!("c{}.py", i + 1)
            };
            symlink(next, share.join(format!("c{i}.py"))).unwrap();
        }
        let mut rels: Vec<String> = links
            .iter()
            .map(|(n, _)| format!("usr/share/{n}"))
            .collect();
        rels.extend(
            [
                "usr/share/real.py",
                "usr/share/c0.py",
                "usr/share/c1.py",
                "usr/share/dirlink/f.py",
                "usr/share/dirlink/back.py",
                "usr/share/absdir/back.py",
                "usr/share/absdir/top/usr/share/real.py",
                "usr/share/slash/usr/share/real.py",
                "usr/share/slash/usr/share/slash/usr/lib/dir/f.py",
                "usr/share/host_dir/secret.py",
                "usr/share/rel.py/x",
                "usr/share/real.py/",
                "usr/share/pkg/",
                "usr/share/nothing/x.py",
                "usr/share/loop1.py/x",
                "usr",
            ]
            .map(String::from),
        );
        let root = Root::open(&r).unwrap();
        let open = |rel: &str, resolver| {
            root.open_resolved_with(Path::new(rel), resolver)
                .map(|f| {
                    let st = fstat(&f).unwrap();
                    (st.st_dev, st.st_ino, FileType::from_raw_mode(st.st_mode))
                })
                .map_err(|e| e.raw_os_error())
        };
        let outside_st = std::fs::metadata(outside.join("secret.py")).unwrap();
        let real = std::fs::metadata(share.join("real.py")).unwrap();
        let mut opened = 0;
        for rel in &rels {
            let walked = open(rel, Resolver::Walk);
            if let Ok((dev, ino, _)) = walked {
                assert!(
                    (dev, ino) != (outside_st.dev(), outside_st.ino()),
                    "{rel} reached the file outside the root"
                );
                opened += 1;
            }
            if resolvers().contains(&Resolver::Openat2) {
                assert_eq!(walked, open(rel, Resolver::Openat2), "{rel}");
            }
        }
        // The expected answers, so that the comparison is not between two wrong ones.
        let errno = |rel: &str| open(rel, Resolver::Walk).unwrap_err();
        let file = |rel: &str| open(rel, Resolver::Walk).unwrap();
        for rel in [
            "abs.py",
            "rel.py",
            "dots.py",
            "slashes.py",
            "up_in.py",
            "c1.py",
        ] {
            let (dev, ino, _) = file(&format!("usr/share/{rel}"));
            assert_eq!((dev, ino), (real.dev(), real.ino()), "{rel}");
        }
        for rel in ["usr/share/dirlink/back.py", "usr/share/absdir/back.py"] {
            assert_eq!(file(rel).1, real.ino(), "{rel}");
        }
        assert_eq!(file("usr/share/absdir/top/usr/share/real.py").1, real.ino());
        assert_eq!(file("usr/share/slash").2, FileType::Directory);
        assert_eq!(file("usr/share/fifo.py").2, FileType::Fifo);
        let loop_ = Some(Errno::LOOP.raw_os_error());
        let noent = Some(Errno::NOENT.raw_os_error());
        let notdir = Some(Errno::NOTDIR.raw_os_error());
        assert_eq!(errno("usr/share/c0.py"), loop_, "one link over the limit");
        assert_eq!(errno("usr/share/loop1.py"), loop_);
        assert_eq!(errno("usr/share/self.py"), loop_);
        for rel in [
            "up_out.py",
            "host_abs.py",
            "host_dir/secret.py",
            "dangling.py",
        ] {
            assert_eq!(errno(&format!("usr/share/{rel}")), noent, "{rel}");
        }
        for rel in ["trail_file.py", "dot_after_file.py", "through_file.py"] {
            assert_eq!(errno(&format!("usr/share/{rel}")), notdir, "{rel}");
        }
        assert!(opened > 15, "{opened}");
    }

    #[test]
    fn the_walk_is_forced_by_a_set_variable() {
        assert!(!forces_walk(None));
        assert!(!forces_walk(Some(OsStr::new(""))));
        assert!(!forces_walk(Some(OsStr::new("0"))));
        assert!(forces_walk(Some(OsStr::new("1"))));
        assert!(forces_walk(Some(OsStr::new("yes"))));
    }

    /// `/` by any spelling is the running system; a directory elsewhere, or one that holds `/`
    /// through a symlink inside it, is not. (A bind mount: tests/safety.rs, which can mount.)
    #[test]
    fn the_host_root_is_known_by_identity() {
        let t = tempfile::tempdir().unwrap();
        symlink("/", t.path().join("slash")).unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        for p in ["/", "//", "/usr/..", "/proc/self/root", "/proc/self/root/"] {
            assert!(is_host_root(Path::new(p)).unwrap(), "{p}");
        }
        assert!(is_host_root(&t.path().join("slash")).unwrap());
        assert!(is_host_root(&t.path().join("slash/.")).unwrap());
        assert!(!is_host_root(t.path()).unwrap());
        assert!(!is_host_root(&t.path().join("d")).unwrap());
        assert!(!is_host_root(Path::new("/usr")).unwrap());
        assert!(is_host_root(&t.path().join("missing")).is_err());
    }
}
