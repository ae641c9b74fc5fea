//! `pyclink normalize`: every pyc under the build root, including those pyclink did not write
//! (a build system's own, outside the Python trees), brought to add-determinism's normal form
//! (see `python::marshal`), and the identical levels of each module hardlinked, as Fedora's
//! brp-python-hardlink links them anywhere in the root. After it, add-det's pyc handler has
//! nothing left to do, so the RPM macros can turn it off.
//!
//! Two passes. First, per inode: its bytes are normalized and, if that changed them, a new
//! file takes every name of the inode (temp file + rename, the old mode and mtime kept, links
//! kept). Then, per module (`X.pyc`, `X.opt-1.pyc`, `X.opt-2.pyc` in one directory): levels
//! with identical bytes become one inode (link to a temp name + rename). A pyc whose magic
//! number names no CPython layout pyclink knows (PyPy, Python 2, a future Python) is left
//! alone and counted; one that does not parse is an error.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::escape::plural;
use crate::fsroot::{display_in_root, is_regular, open_file_nofollow, Root};
use crate::python::marshal::{self, Normalizer};
use crate::write::{refuses_links, DirLock, TempFile};

/// What `pyclink normalize` is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Root-relative paths to restrict the walk to; empty: the whole root.
    pub paths: Vec<PathBuf>,
    pub jobs: usize,
    /// Hardlink the identical levels of each module.
    pub link: bool,
}

/// What a normalize run did (also its JSON).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub schema_version: u32,
    /// Why the run could not proceed (then `exit_code` is 2 and there are no figures).
    pub fatal_error: Option<String>,
    pub buildroot: String,
    /// pyc names found.
    pub pycs: u64,
    /// Distinct files (inodes) among them.
    pub inodes: u64,
    /// Inodes whose bytes were rewritten into the normal form.
    pub rewritten: u64,
    /// Names made a hardlink to an identical level.
    pub linked: u64,
    /// Names left as separate files because the filesystem refuses links.
    pub not_linked: u64,
    /// pycs of a format pyclink does not know, left alone.
    pub unsupported: Vec<String>,
    /// `path: message` for every pyc that could not be read, parsed or rewritten.
    pub errors: Vec<String>,
    pub exit_code: i32,
}

impl Report {
    pub fn new(buildroot: String) -> Report {
        Report {
            schema: "pyclink-normalize",
            schema_version: 1,
            buildroot,
            ..Report::default()
        }
    }

    /// The report of a run that could not proceed.
    pub fn failed(buildroot: String, why: &str) -> Report {
        Report {
            fatal_error: Some(why.to_string()),
            exit_code: 2,
            ..Report::new(buildroot)
        }
    }

    /// The build-log line.
    pub fn line(&self) -> String {
        format!(
            "pyclink normalize: {} pyc ({}): {} rewritten, {} hardlinked, {} left alone (unknown format), {}",
            self.pycs,
            plural(self.inodes, "file"),
            self.rewritten,
            self.linked,
            self.unsupported.len(),
            plural(self.errors.len() as u64, "error")
        )
    }
}

/// One pyc name: where it is, and which inode it is.
struct Found {
    rel: PathBuf,
    inode: (u64, u64),
}

/// Normalize and link every pyc under `root` (or `opts.paths`). A PATH that is missing, or
/// reached through a symlink, is refused as `verify` refuses it (the same check, the same
/// message).
pub fn normalize(root: &Root, opts: &Options) -> Result<Report, crate::verify::Error> {
    for path in &opts.paths {
        crate::verify::check_path(root, path)?;
    }
    let mut report = Report::new(crate::escape::path_text(root.given().as_os_str()).into_owned());
    let errors = Mutex::new(Vec::new());
    let found = walk(root, &opts.paths, &errors);
    report.pycs = found.len() as u64;

    // Pass 1, per inode.
    let mut by_inode: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
    for f in &found {
        by_inode.entry(f.inode).or_default().push(f.rel.clone());
    }
    report.inodes = by_inode.len() as u64;
    let inodes: Vec<Vec<PathBuf>> = by_inode.into_values().collect();
    let rewritten = AtomicUsize::new(0);
    let unsupported = Mutex::new(Vec::new());
    parallel(&inodes, opts.jobs, |names| {
        let mut normalizer = Normalizer::default();
        match rewrite_inode(root, names, &mut normalizer) {
            Ok(Rewrite::Unchanged) => {}
            Ok(Rewrite::Rewritten { failed }) => {
                // Counted if any name now holds the normal form; each name still holding the
                // old bytes is an error of its own.
                if failed.len() < names.len() {
                    rewritten.fetch_add(1, Ordering::Relaxed);
                }
                let mut errors = errors.lock().unwrap_or_else(|p| p.into_inner());
                for (name, e) in failed {
                    errors.push(format!(
                        "{}: cannot replace it with its normal form: {e}",
                        display_in_root(&name)
                    ));
                }
            }
            Ok(Rewrite::Unsupported(why)) => unsupported
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{}: {why}", display_in_root(&names[0]))),
            Err(e) => errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(format!("{}: {e}", display_in_root(&names[0]))),
        }
    });
    report.rewritten = rewritten.into_inner() as u64;

    // Pass 2, per module.
    if opts.link {
        let mut by_dir: BTreeMap<PathBuf, Vec<OsString>> = BTreeMap::new();
        for f in &found {
            let dir = f.rel.parent().unwrap_or(Path::new("")).to_path_buf();
            by_dir
                .entry(dir)
                .or_default()
                .push(f.rel.file_name().unwrap_or_default().to_os_string());
        }
        let dirs: Vec<(PathBuf, Vec<OsString>)> = by_dir.into_iter().collect();
        let linked = AtomicUsize::new(0);
        let not_linked = AtomicUsize::new(0);
        parallel(&dirs, opts.jobs, |(dir, names)| {
            let done = link_levels(root, dir, names);
            linked.fetch_add(done.linked, Ordering::Relaxed);
            not_linked.fetch_add(done.refused, Ordering::Relaxed);
            let mut errors = errors.lock().unwrap_or_else(|p| p.into_inner());
            for (rel, e) in done.failed {
                errors.push(format!("{}: {e}", display_in_root(&rel)));
            }
        });
        report.linked = linked.into_inner() as u64;
        report.not_linked = not_linked.into_inner() as u64;
    }
    report.unsupported = unsupported.into_inner().unwrap_or_else(|p| p.into_inner());
    report.unsupported.sort();
    report.errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    report.errors.sort();
    for u in &report.unsupported {
        log::info!("{u}");
    }
    for e in &report.errors {
        log::error!("{e}");
    }
    report.exit_code = i32::from(!report.errors.is_empty());
    Ok(report)
}

/// Run `work` on every item, on up to `jobs` threads.
fn parallel<T: Sync>(items: &[T], jobs: usize, work: impl Fn(&T) + Sync) {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    work(item);
                }
            });
        }
    });
}

/// Every regular file named `*.pyc` under the PATHs (never following a symlink).
fn walk(root: &Root, paths: &[PathBuf], errors: &Mutex<Vec<String>>) -> Vec<Found> {
    let tops: Vec<PathBuf> = if paths.is_empty() {
        vec![PathBuf::new()]
    } else {
        paths.to_vec()
    };
    let mut found = Vec::new();
    for top in tops {
        // A source PATH stands for its module, as in `verify`: its pycs in `__pycache__` (of
        // every cache tag and level) and a legacy `NAME.pyc` beside it.
        let module = module_of_source(root, &top);
        let walked = match &module {
            Some((dir, _)) => vec![dir.join("__pycache__"), top.with_extension("pyc")],
            None => vec![top.clone()],
        };
        for entry in walked
            .iter()
            .filter(|w| module.is_none() || root.lstat(w).is_ok())
            .flat_map(|w| root.walk(w))
        {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let shown = display_in_root(root.walk_error_path(&e, &top));
                    errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!(
                            "{shown}: cannot read: {}",
                            Root::walk_error_reason(&e)
                        ));
                    continue;
                }
            };
            let name = entry.file_name().as_bytes();
            if !name.ends_with(b".pyc") || !entry.file_type().is_file() {
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(root.path()) else {
                continue;
            };
            if let Some((dir, stem)) = &module {
                let legacy = rel == top.with_extension("pyc");
                let cached = rel.parent() == Some(&dir.join("__pycache__"))
                    && crate::verify::scan::is_cache_pyc_of(name, stem.as_bytes());
                if !(legacy || cached) {
                    continue;
                }
            }
            let Ok(meta) = entry.metadata() else { continue };
            use std::os::unix::fs::MetadataExt;
            found.push(Found {
                rel: rel.to_path_buf(),
                inode: (meta.dev(), meta.ino()),
            });
        }
    }
    found
}

/// The directory and module name of a PATH that names a source file (`DIR/NAME.py`).
fn module_of_source(root: &Root, top: &Path) -> Option<(PathBuf, OsString)> {
    let is_dir = root
        .lstat(top)
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_dir());
    if is_dir || !crate::python::has_py_suffix(top) {
        return None;
    }
    Some((
        top.parent().unwrap_or(Path::new("")).to_path_buf(),
        top.file_stem()?.to_os_string(),
    ))
}

enum Rewrite {
    Unchanged,
    /// A file in the normal form took the inode's names, but for those in `failed` (which keep
    /// the old file).
    Rewritten {
        failed: Vec<(PathBuf, std::io::Error)>,
    },
    Unsupported(String),
}

/// Normalize one inode, known by all its `names` (root-relative); a new file takes them all.
fn rewrite_inode(
    root: &Root,
    names: &[PathBuf],
    normalizer: &mut Normalizer,
) -> std::io::Result<Rewrite> {
    let (dir, name) = split(&names[0]);
    let dir = Arc::new(root.open_dir(dir)?);
    let mut file = open_file_nofollow(&*dir, name)?;
    let st = rustix::fs::fstat(&file)?;
    if !is_regular(&st) {
        return Ok(Rewrite::Unchanged);
    }
    let mut pyc = Vec::with_capacity(st.st_size as usize);
    file.read_to_end(&mut pyc)?;
    let unsupported = || {
        Rewrite::Unsupported(format!(
            "magic number {:02x?} names no pyc format pyclink reads (see the version table); left alone",
            &pyc[..4.min(pyc.len())]
        ))
    };
    let (format, header_len) = match marshal::pyc_layout(&pyc) {
        Ok(layout) => layout,
        Err(marshal::Error::UnknownMagic(_)) => return Ok(unsupported()),
        Err(e) => return Err(std::io::Error::other(format!("not a valid pyc: {e}"))),
    };
    let (header, body) = pyc.split_at(header_len);
    let normal = match normalizer.normalize(body, format) {
        Ok(std::borrow::Cow::Borrowed(_)) => return Ok(Rewrite::Unchanged),
        Ok(std::borrow::Cow::Owned(b)) => [header, &b[..]].concat(),
        Err(e) => {
            return Err(std::io::Error::other(format!(
                "its marshal data does not parse: {e}"
            )))
        }
    };
    let mtime = rustix::fs::Timespec {
        tv_sec: st.st_mtime as _,
        tv_nsec: st.st_mtime_nsec as _,
    };
    let temp = TempFile::create(&dir, 0o600)?;
    temp.write_all(&[&normal])?;
    temp.set_mode_and_mtime(st.st_mode as u32, mtime)?;
    // One name that cannot be replaced (immutable, a directory now in its place) does not keep
    // the others from the new file.
    let mut failed = Vec::new();
    for other in &names[1..] {
        let (other_dir, other_name) = split(other);
        let replaced = root.open_dir(other_dir).and_then(|d| {
            let d = Arc::new(d);
            let _lock = DirLock::take(&d)?;
            temp.link_into(&d)?.rename_to(other_name)
        });
        if let Err(e) = replaced {
            failed.push((other.clone(), e));
        }
    }
    if let Err(e) = DirLock::take(&dir).and_then(|_lock| temp.rename_to(name)) {
        failed.push((names[0].clone(), e));
    }
    Ok(Rewrite::Rewritten { failed })
}

/// What linking the levels of one directory's modules did.
#[derive(Default)]
struct Linked {
    /// Names made a hardlink to an identical level.
    linked: usize,
    /// Names left separate because the filesystem refuses links.
    refused: usize,
    /// Each pyc (or the directory) that could not be read or linked, and why; the other
    /// modules and levels are linked all the same.
    failed: Vec<(PathBuf, std::io::Error)>,
}

/// Link the identical levels of each module among `names` (the pycs of directory `dir`).
fn link_levels(root: &Root, dir: &Path, names: &[OsString]) -> Linked {
    let mut done = Linked::default();
    if let Err(e) = link_modules(root, dir, names, &mut done) {
        done.failed.push((dir.to_path_buf(), e));
    }
    done
}

fn link_modules(
    root: &Root,
    dir: &Path,
    names: &[OsString],
    done: &mut Linked,
) -> std::io::Result<()> {
    let mut modules: BTreeMap<&[u8], [Option<&OsStr>; 3]> = BTreeMap::new();
    for name in names {
        let b = name.as_bytes();
        let (stem, level) = if let Some(s) = b.strip_suffix(b".opt-1.pyc") {
            (s, 1)
        } else if let Some(s) = b.strip_suffix(b".opt-2.pyc") {
            (s, 2)
        } else {
            (b.strip_suffix(b".pyc").unwrap_or(b), 0)
        };
        modules.entry(stem).or_default()[level] = Some(name.as_os_str());
    }
    let fd = Arc::new(root.open_dir(dir)?);
    for levels in modules.values() {
        let present: Vec<&OsStr> = levels.iter().flatten().copied().collect();
        if present.len() < 2 {
            continue;
        }
        let _lock = DirLock::take(&fd)?;
        let mut files: Vec<(&OsStr, Inode, Vec<u8>)> = Vec::new();
        for name in present {
            match read_regular(&fd, name) {
                Ok(Some((inode, bytes))) => files.push((name, inode, bytes)),
                Ok(None) => {}
                Err(e) => done.failed.push((dir.join(name), e)),
            }
        }
        for i in 1..files.len() {
            let Some(j) = (0..i).find(|&j| files[j].2 == files[i].2) else {
                continue;
            };
            if files[j].1 == files[i].1 {
                continue;
            }
            match link_over(&fd, files[j].0, files[i].0) {
                Ok(()) => {
                    done.linked += 1;
                    files[i].1 = files[j].1;
                }
                Err(LinkError::Link(e)) if refuses_links(&e) => done.refused += 1,
                Err(LinkError::Link(e) | LinkError::Replace(e)) => done.failed.push((
                    dir.join(files[i].0),
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "cannot make it a hardlink of its identical level {}: {e}",
                            crate::escape::shown(files[j].0)
                        ),
                    ),
                )),
            }
        }
    }
    Ok(())
}

/// A file's identity: device and inode number.
type Inode = (u64, u64);

/// The inode and bytes of the pyc `name` in `dir`, or `None` if it is not a regular file.
fn read_regular(dir: &OwnedFd, name: &OsStr) -> std::io::Result<Option<(Inode, Vec<u8>)>> {
    let mut f = open_file_nofollow(dir, name)?;
    let st = rustix::fs::fstat(&f)?;
    if !is_regular(&st) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    #[allow(clippy::unnecessary_cast)]
    Ok(Some(((st.st_dev as u64, st.st_ino as u64), bytes)))
}

/// Why `link_over` failed: making the link (where EPERM, EXDEV... mean that the filesystem
/// does not do hardlinks, and the levels are left separate) or putting it in place of the old
/// name (where EPERM means an immutable file: an error, never a filesystem without links).
enum LinkError {
    Link(std::io::Error),
    Replace(std::io::Error),
}

/// Make `name` a hardlink to `to` (both in `dir`), atomically.
fn link_over(dir: &Arc<OwnedFd>, to: &OsStr, name: &OsStr) -> Result<(), LinkError> {
    TempFile::link_existing(dir, to)
        .map_err(LinkError::Link)?
        .rename_to(name)
        .map_err(LinkError::Replace)
}

fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or_default(),
    )
}
