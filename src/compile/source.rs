//! Steps 3-4 for one source: read it once, decide whether its pycs are up to date ([`prepare`]),
//! and, once a worker has compiled the levels, put the pycs in place ([`finish`]). The compile
//! itself happens between the two, in a worker (see `pool`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{fstat, mkdirat, statat, AtFlags, FileType, Mode};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::fsroot::{
    display_in_root, in_root_bytes, is_regular, open_file_nofollow, open_subdir, Root,
};
use crate::plan::Job;
use crate::problem::{FileError, Problem};
use crate::python::marshal::{self, Normalizer};
use crate::python::predict::{predict, IdenticalLevels};
use crate::python::pyc::{PycFormat, PYCACHE};
use crate::python::{InvalidationMode, Levels};
use crate::worker::{Compiled, Request};
use crate::write::provenance::{self, Seal};
use crate::write::{write_pycs, PycFile, WriteStats};

thread_local! {
    /// One per compile thread: it keeps its buffers from one source to the next.
    static NORMALIZER: RefCell<Normalizer> = RefCell::new(Normalizer::default());
}

/// How one version's pycs are made.
#[derive(Clone, Debug)]
pub struct Target {
    pub format: PycFormat,
    pub invalidation: InvalidationMode,
    /// The interpreter's identity (see `cache::interpreter_identity`).
    pub identity: [u8; 32],
    /// Rewrite the marshalled code into add-determinism's normal form (see `python::marshal`),
    /// read in this format; `None` keeps the interpreter's bytes.
    pub normalize: Option<marshal::Format>,
    /// Level prediction is validated for this version (see `python::table`).
    pub predict: bool,
    /// Compile each source in a fresh fork of the worker (see `python::table::Determinism`).
    pub fresh_process: bool,
    /// What the version table has not validated for this version (see `table::Policy`).
    pub unvalidated: Option<String>,
    /// What the pycs' provenance records name: the interpreter and how its bytes were treated.
    seal_identity: [u8; 32],
}

impl Target {
    pub fn new(
        format: PycFormat,
        invalidation: InvalidationMode,
        identity: [u8; 32],
        policy: &crate::python::table::Policy,
        normalize: bool,
    ) -> Target {
        let normalize = policy.normalize.filter(|_| normalize);
        let mut h = Sha256::new();
        h.update(identity);
        match normalize {
            Some(f) => h.update(format!("normalized as {f:?}")),
            None => h.update("raw"),
        }
        if policy.fresh_process {
            h.update("fresh process per source");
        }
        Target {
            format,
            invalidation,
            identity,
            normalize,
            predict: policy.predict,
            fresh_process: policy.fresh_process,
            unvalidated: policy.unvalidated.clone(),
            seal_identity: h.finalize().into(),
        }
    }
}

/// What the run asks of every source.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub levels: Levels,
    /// Compile only the levels that can differ (see `predict`).
    pub predict: bool,
    pub link: bool,
    pub force: bool,
}

#[derive(Debug)]
pub enum Outcome {
    /// Every requested level's pyc already matched the source; nothing was touched.
    UpToDate {
        pycs: u64,
    },
    Written {
        stats: WriteStats,
        /// Levels the interpreter compiled (fewer than written where prediction proved some
        /// identical).
        compiled: u64,
        warnings: Vec<FileError>,
        /// The compiled levels came from `--cache`, not from an interpreter.
        from_cache: bool,
        /// The pycs that could not be put in place (the others were, and are in `stats`).
        error: Option<FileError>,
    },
    /// Deliberately not compiled (a `.py` symlink whose target is not in the root).
    Skipped(String),
    Failed(FileError),
}

/// A source that needs compiling: read once, checked, its pycs named, its header made.
pub struct Prepared {
    dir: OwnedFd,
    /// The pycs' permission bits.
    permissions: u32,
    header: Vec<u8>,
    /// Each requested level with its pyc name.
    names: Vec<(u8, OsString)>,
    source: Vec<u8>,
    /// The interpreter and `co_filename` the pycs are recorded for.
    seal: Seal,
    same: IdenticalLevels,
    levels: Levels,
    fresh_process: bool,
    normalize: Option<marshal::Format>,
}

impl Prepared {
    /// What the worker is asked.
    pub fn request(&self) -> Request<'_> {
        Request {
            source: &self.source,
            dfile: &self.seal.dfile,
            levels: self.levels,
            same: self.same,
            fresh_process: self.fresh_process,
            normalized: self.normalize.is_some(),
        }
    }
}

/// What a source needs after [`prepare`].
pub enum Step {
    /// Nothing more: up to date, skipped, or failed.
    Done(Outcome),
    /// Compiling, then [`finish`].
    Compile(Prepared),
}

/// Step 3's first half for one source: open it, check its pycs, read it and predict its
/// levels. The compile itself is the caller's (see `pool`), so a worker can compile one source
/// while its thread writes the previous one's pycs and reads the next.
pub fn prepare(root: &Root, job: &Job, target: &Target, opts: Options) -> Step {
    match try_prepare(root, job, target, opts) {
        Ok(step) => step,
        Err(e) => Step::Done(Outcome::Failed(e)),
    }
}

fn try_prepare(root: &Root, job: &Job, target: &Target, opts: Options) -> Result<Step, FileError> {
    let fail = |problem: Problem| FileError::new(&job.rel, None, problem);
    let io_fail = |what: &'static str, source: std::io::Error| fail(Problem::Io { what, source });
    let (parent, name) = split(&job.rel);
    let dir = root
        .open_dir(parent)
        .map_err(|e| io_fail("cannot open its directory", e))?;

    let mut file = if job.symlink {
        match root.open_resolved_in_root(&job.rel) {
            Ok(f) => f,
            // Once installed, the link resolves to a file this package does not ship (or to
            // nothing): there is no source here to compile, and the host's file is not it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let target = rustix::fs::readlinkat(&dir, name, Vec::new())
                    .map(|t| crate::escape::shown(OsStr::from_bytes(t.as_bytes())).to_string())
                    .unwrap_or_else(|_| "its target".into());
                return Ok(Step::Done(Outcome::Skipped(format!(
                    "{}: a dangling symlink: {target} does not exist in the build root; \
                     not compiled",
                    display_in_root(&job.rel)
                ))));
            }
            // A loop is no source either, and compileall skips it too: a package shipping
            // one must not fail its build over it.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
                return Ok(Step::Done(Outcome::Skipped(format!(
                    "{}: a symlink loop; not compiled",
                    display_in_root(&job.rel)
                ))));
            }
            Err(e) => {
                return Err(io_fail(
                    "cannot follow the symlink inside the build root",
                    e,
                ))
            }
        }
    } else {
        open_file_nofollow(&dir, name).map_err(|e| io_fail("cannot open", e))?
    };
    let st = fstat(&file).map_err(|e| io_fail("cannot stat", e.into()))?;
    if !is_regular(&st) {
        // A link to a directory (or device) is skipped like the non-files the walk meets.
        if job.symlink {
            return Ok(Step::Done(Outcome::Skipped(format!(
                "{}: a symlink to a directory or other non-file; not compiled",
                display_in_root(&job.rel)
            ))));
        }
        return Err(fail(Problem::NotRegular));
    }

    // Hash-based headers need the bytes before the freshness check; timestamps do not, so an
    // up-to-date source is never read.
    let mut source = match target.invalidation {
        InvalidationMode::Timestamp => None,
        _ => Some(read_all(&mut file, st.st_size as u64).map_err(|e| io_fail("cannot read", e))?),
    };
    let header = target.format.header(target.format.stamp(
        target.invalidation,
        &st,
        source.as_deref(),
    ));
    let names: Vec<(u8, OsString)> = opts
        .levels
        .iter()
        .map(|l| (l, target.format.pyc_name(name, l)))
        .collect();
    let seal = Seal {
        identity: target.seal_identity,
        dfile: in_root_bytes(&job.rel),
    };

    if opts.force {
        log::debug!("{}: rewriting its pycs: --force", display_in_root(&job.rel));
    } else {
        match all_up_to_date(&dir, &names, &header, &seal, opts.link) {
            Ok(()) => {
                return Ok(Step::Done(Outcome::UpToDate {
                    pycs: names.len() as u64,
                }))
            }
            Err(why) => log::debug!("{}: rewriting its pycs: {why}", display_in_root(&job.rel)),
        }
    }
    let source = match source.take() {
        Some(s) => s,
        None => read_all(&mut file, st.st_size as u64).map_err(|e| io_fail("cannot read", e))?,
    };
    drop(file);

    let same = if opts.predict && target.predict {
        predict(&source).same
    } else {
        IdenticalLevels::nothing()
    };
    Ok(Step::Compile(Prepared {
        dir,
        // As py_compile: the source's mode plus owner-write, then the umask.
        permissions: (st.st_mode | 0o200) & 0o666,
        header,
        names,
        seal,
        source,
        same,
        levels: opts.levels,
        fresh_process: target.fresh_process,
        normalize: target.normalize,
    }))
}

/// Step 4 for one source: put the compiled levels in place (or report why there are none).
pub fn finish(
    job: &Job,
    prepared: Prepared,
    compiled: Result<Compiled, Problem>,
    link: bool,
) -> Outcome {
    match try_finish(job, prepared, compiled, link) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e),
    }
}

fn try_finish(
    job: &Job,
    prepared: Prepared,
    compiled: Result<Compiled, Problem>,
    link: bool,
) -> Result<Outcome, FileError> {
    let fail = |line: u32, problem: Problem| FileError::new(&job.rel, Some(line), problem);
    let io_fail =
        |what: &'static str, source: std::io::Error| fail(0, Problem::Io { what, source });
    let code = match compiled {
        Ok(Compiled::Code(code)) => code,
        Ok(Compiled::Error(e)) => {
            return Err(fail(
                e.line,
                Problem::DoesNotCompile {
                    exception: e.kind,
                    message: e.message,
                },
            ));
        }
        Err(problem) => return Err(fail(0, problem)),
    };
    let Prepared {
        dir,
        permissions,
        header,
        names,
        seal,
        normalize,
        ..
    } = prepared;
    let bodies: Vec<Cow<[u8]>> = match normalize {
        None => code.bodies().map(Cow::Borrowed).collect(),
        Some(format) => NORMALIZER.with_borrow_mut(|n| {
            code.bodies()
                .zip(&names)
                .map(|(body, (level, _))| {
                    n.normalize(body, format).map_err(|error| {
                        fail(
                            0,
                            Problem::BadMarshal {
                                level: *level,
                                error,
                            },
                        )
                    })
                })
                .collect::<Result<_, _>>()
        })?,
    };
    let files: Vec<PycFile> = names
        .into_iter()
        .zip(&bodies)
        .map(|((level, name), body)| PycFile { name, level, body })
        .collect();

    let cache = open_cache_dir(&dir).map_err(|e| io_fail(crate::problem::PYCACHE_UNUSABLE, e))?;
    let written = write_pycs(
        &Arc::new(cache),
        &header,
        &files,
        link,
        permissions,
        Some(&seal),
    );
    // The levels that were written count as written, and the source gets one error naming
    // each pyc that was not.
    let error = (!written.failed.is_empty()).then(|| {
        let cache_dir = split(&job.rel).0.join(PYCACHE);
        fail(
            0,
            Problem::WritePycs(
                written
                    .failed
                    .into_iter()
                    .map(|f| (display_in_root(&cache_dir.join(f.name)), f.source))
                    .collect(),
            ),
        )
    });
    // CPython reports some warnings of one file from its last line up.
    let mut in_order: Vec<_> = code.warnings.iter().collect();
    in_order.sort_by_key(|w| w.line);
    let warnings = in_order
        .into_iter()
        .map(|w| {
            fail(
                w.line,
                Problem::Warning {
                    category: w.category.clone(),
                    message: w.message.clone(),
                },
            )
        })
        .collect();
    Ok(Outcome::Written {
        stats: written.stats,
        compiled: code.compiled as u64,
        warnings,
        from_cache: false,
        error,
    })
}

fn split(rel: &Path) -> (&Path, &OsStr) {
    (
        rel.parent().unwrap_or(Path::new("")),
        rel.file_name().unwrap_or_default(),
    )
}

fn read_all(file: &mut File, size_hint: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(size_hint as usize);
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

/// May the pycs `names` be kept as they are? Only if each is a regular file that starts with
/// `header` and that pyclink wrote for exactly this level, path and interpreter (its provenance
/// record vouches for the whole file), and the levels are linked as this run would link them:
/// identical bytes share an inode (`link`), or no two names share one (`--no-link`). Anything
/// else (a pyc an install step wrote with its staging path, another level's code, a copy where a
/// link belongs) is compiled again, whatever its header says. `Err` says why, for `-vv`.
fn all_up_to_date(
    dir: &OwnedFd,
    names: &[(u8, OsString)],
    header: &[u8],
    seal: &Seal,
    link: bool,
) -> Result<(), String> {
    let Ok(cache) = open_subdir(dir, OsStr::new(PYCACHE)) else {
        return Err("no __pycache__ directory".into());
    };
    // Per inode seen so far: its bytes and the levels its record vouches for. A name linked to
    // an inode already checked is not read or hashed again.
    let mut seen: Vec<((u64, u64), Vec<u8>, u8)> = Vec::with_capacity(names.len());
    for (level, name) in names {
        let shown = crate::escape::shown(name);
        let why = |what: &str| Err(format!("{shown}: {what}"));
        let Ok(mut f) = open_file_nofollow(&cache, name) else {
            return why("missing (or not a regular file)");
        };
        let Ok(st) = fstat(&f) else {
            return why("cannot stat it");
        };
        // Not u64 on every target.
        #[allow(clippy::unnecessary_cast)]
        let inode = (st.st_dev as u64, st.st_ino as u64);
        if let Some((_, _, levels)) = seen.iter().find(|(i, ..)| *i == inode) {
            if !link {
                return why("hardlinked to another level, and --no-link asks for separate files");
            }
            if levels & (1 << level) == 0 {
                return why("hardlinked to another level whose code differs");
            }
            continue;
        }
        if !is_regular(&st) || st.st_size < header.len() as i64 {
            return why("not a regular file, or shorter than a header");
        }
        let mut file = vec![0u8; header.len()];
        if f.read_exact(&mut file).is_err() || file != header {
            return why("its header does not match the source (stale, or another mode or magic)");
        }
        let Some(record) = provenance::get(&f) else {
            return why("no provenance record (pyclink did not write it, or the filesystem keeps no user xattrs)");
        };
        if f.read_to_end(&mut file).is_err() {
            return why("cannot read it");
        }
        let levels = match seal.vouched_levels(&record, &file, header.len()) {
            Some(levels) if levels & (1 << level) != 0 => levels,
            Some(_) => return why("pyclink wrote it for another level"),
            None => return why(
                "its bytes, path or interpreter differ from what its provenance record vouches for",
            ),
        };
        // A new inode: with links, no earlier name may hold the same bytes.
        if link && seen.iter().any(|(_, bytes, _)| *bytes == file) {
            return why("identical to another level but not hardlinked to it");
        }
        seen.push((inode, file, levels));
    }
    Ok(())
}

/// Create (if needed) and open `__pycache__` without following a symlink: one planted there
/// must not redirect the pycs out of the tree.
fn open_cache_dir(dir: &OwnedFd) -> std::io::Result<OwnedFd> {
    // Open first: all but the first source of a directory find it there (one system call, not
    // a failing mkdirat and an open).
    let opened = match open_subdir(dir, OsStr::new(PYCACHE)) {
        Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
            match mkdirat(dir, PYCACHE, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
            open_subdir(dir, OsStr::new(PYCACHE))
        }
        other => other,
    };
    opened.map_err(|e| {
        if e.raw_os_error() == Some(Errno::LOOP.raw_os_error())
            || e.raw_os_error() == Some(Errno::NOTDIR.raw_os_error())
        {
            let what = match statat(dir, PYCACHE, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => crate::fsroot::type_name(FileType::from_raw_mode(st.st_mode)),
                Err(_) => "not a directory",
            };
            std::io::Error::other(format!(
                "it is {what}, not a directory; not writing through it"
            ))
        } else {
            e
        }
    })
}
