//! The build root as a directory handle. Everything pyclink opens for writing is reached from
//! this handle one component at a time with `O_NOFOLLOW`, so a symlink planted anywhere in the
//! tree can never redirect a write outside the root (no path is checked first and used later).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    openat, openat2, statat, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, CWD,
};

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
    path: PathBuf,
    fd: OwnedFd,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

impl Root {
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
            path: path.to_path_buf(),
            fd,
        })
    }

    /// The root as the host sees it (for messages and read-only walking).
    pub fn path(&self) -> &Path {
        &self.path
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
        let mut dir = openat(&self.fd, ".", DIR_FLAGS, Mode::empty())?;
        for name in plain_components(rel)? {
            dir = open_subdir(&dir, name)?;
        }
        Ok(dir)
    }

    /// Open `rel` for reading, resolving symlinks as if the root were `/` (never the host's
    /// files): how a `.py` symlink in a package resolves once installed.
    pub fn open_resolved_in_root(&self, rel: &Path) -> io::Result<File> {
        plain_components(rel)?;
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        Ok(File::from(openat2(
            &self.fd,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )?))
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
    use std::os::unix::fs::symlink;

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
        let root = Root::open(&t.path().join("root")).unwrap();
        assert!(root.open_dir(Path::new("a/b")).is_ok());
        assert!(root.open_dir(Path::new("a/link")).is_err());
        assert!(root.open_dir(Path::new("a/../..")).is_err());
    }

    #[test]
    fn resolves_symlinks_against_the_root() {
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
            root.open_resolved_in_root(Path::new("usr/share/abs.py"))
                .unwrap(),
        );
        assert_eq!(content.unwrap(), "inside = 1\n");
        // `..` above the root stays at the root: /etc/hostname inside it does not exist.
        assert!(root
            .open_resolved_in_root(Path::new("usr/share/up.py"))
            .is_err());
    }
}
