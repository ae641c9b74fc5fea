//! `pyclink verify`: an independent check of the pycs in a build root, an extracted RPM or deb
//! payload, or an installed prefix. Nothing is written.
//!
//! It runs on compiling's pipeline: discover → plan → work through a pool → report
//! ([`verify`]). [`scan`] walks the root and sorts every pyc into its module (or reports it as
//! stray, partial or sourceless); the interpreter of each version is chosen as `pyclink compile`
//! chooses it (`discover::interpreter`, with the same `Starter`: an interpreter is started once
//! per run); with `-o`, `discover` and `plan` say which sources must have pycs. Then [`pool`]
//! runs [`check`] on every module: Rust judges the headers (magic, flags, timestamp or source
//! hash) and the hardlinks between levels, and a checker process in the target interpreter
//! (`checker.py`, see [`protocol`]) compiles the source afresh at each level and compares the
//! code field by field. [`report`] holds the problems, the summary line and the JSON.
//!
//! Shared with compiling: interpreter selection and starting (`discover::interpreter`), the
//! version table (`python::table`, `PyVersion::from_cache_tag`), pyc naming
//! (`python::pyc::cache_name`), the worker process, its framing, hello and frame cursor
//! (`worker`, `worker::protocol::Cursor`), the trees and sources to compile (`discover`, `plan`).
//!
//! Duplicated on purpose, because verify must not trust what compile wrote:
//! - `checker.py` is not `worker.py`: the code that checks a pyc must not be the code that
//!   wrote it, so only `framing.py` (framing and hello) is shared.
//! - The header checks in [`check`] recompute what the header must hold (`mtime_field`, the
//!   source hash) from the source, rather than asking `compile::source` whether it is fresh:
//!   that judgement, if wrong, would pass its own mistakes.
//! - [`pool`] is its own loop over the shared `Worker`: its requests carry pycs to compare,
//!   retries go to a fresh checker, and there is no cache or provenance (compile's pool trusts
//!   both).
//! - [`report`] is verify's own vocabulary (kinds of wrong pyc), not compile's problems.
//! - [`scan`] sorts pycs by its own reading of their names, wherever they are: the plan looks
//!   only in the trees and only for sources, and a pyc outside every tree must be judged too.
//!   The walk itself is shared: the scan records it (`walk::Record`), and `discover` and
//!   `plan` read that record, so each directory is read once.

pub mod args;
mod check;
mod pool;
pub mod protocol;
mod reader;
pub mod report;
pub mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FileType;

use crate::discover::{self, interpreter};
use crate::escape::{path_text, shown, shown_in_root};
use crate::fsroot::{display_in_root, Root};
use crate::plan::{self, BadExclude, Excludes};
use crate::python::{Implementation, Levels, PyVersion};
use crate::walk::Walker;

pub use args::{VerifyArgs, VerifyInvocation};
use check::{Job, Rule, Target};
pub use report::{Kind, Problem, Report};
use scan::{Module, ModuleKey};

/// What `pyclink verify` is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Root-relative paths to restrict the run to; empty: the whole root.
    pub paths: Vec<PathBuf>,
    /// `-o`: every source `pyclink compile` would compile must have a pyc at these levels.
    /// `None`, the default: every source of the versioned trees, and every module with a pyc,
    /// must have level 0 and every level some pyc checked has (see `complete_levels`).
    pub required: Option<Levels>,
    pub excludes: Vec<String>,
    /// `--python-version`: with `-o`, the versions of trees that name none (as when compiling).
    pub python_versions: Vec<PyVersion>,
    /// `--interpreter X.Y=PATH`.
    pub interpreters: BTreeMap<PyVersion, PathBuf>,
    /// `--interpreter PATH`, whose versions are asked of them.
    pub unversioned_interpreters: Vec<PathBuf>,
    /// Accept pycs outside `__pycache__` with no source (a sourceless distribution).
    pub allow_sourceless: bool,
    /// Identical levels must be hardlinked.
    pub link: bool,
    pub jobs: usize,
    pub timeout: Duration,
}

/// Why the run could not proceed (exit status 2).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    BuildRoot(#[from] crate::fsroot::OpenError),
    #[error("{path} does not exist in the build root {}", shown(root))]
    Missing { path: String, root: PathBuf },
    #[error("{path} is, or lies under, a symlink; give the path it stands for inside the root")]
    Symlink { path: String },
    #[error(transparent)]
    Exclude(#[from] BadExclude),
    #[error(transparent)]
    Discover(#[from] discover::Error),
    /// A version whose sources must have pycs has no interpreter.
    #[error("{0}")]
    NoInterpreter(String),
}

/// Check every pyc under the root (or the PATHs): discover → plan → check through the pool →
/// report, as compiling does.
pub fn verify(root: &Root, opts: &Options) -> Result<Report, Error> {
    let started = Instant::now();
    let mut report = Report::new(path_text(root.given().as_os_str()).into_owned());
    report.paths = opts.paths.iter().map(|p| display_in_root(p)).collect();
    // 1. Discover: the pycs, the sources that must have some, an interpreter per version.
    let mut found = discover_step(root, opts, &mut report)?;
    // 2. Plan: one job per module (or sourceless pyc), with the levels it must have.
    let jobs = plan_jobs(&mut found, opts, &mut report);
    // 3. Check every job through the pool of checkers.
    let outcomes = pool::run(
        root,
        &jobs,
        &found.targets,
        opts.jobs,
        opts.timeout,
        opts.link,
    );
    // 4. Report.
    tally(&jobs, outcomes, &found.targets, &mut report);
    if report.pycs_checked == 0 && found.required.is_empty() {
        log::warn!(
            "no pyc found under {}",
            if opts.paths.is_empty() {
                shown(root.path()).to_string()
            } else {
                report.paths.join(", ")
            }
        );
    }
    report.elapsed_seconds = started.elapsed().as_secs_f64();
    report.seal();
    Ok(report)
}

/// What the first step found.
struct Discovered {
    scan: scan::Scan,
    /// The sources that must have pycs (see [`required_sources`]).
    required: Vec<plan::Job>,
    targets: BTreeMap<PyVersion, Target>,
    unavailable: Unavailable,
}

/// Step 1: walk the root for pycs, tell which sources must have some, and choose the
/// interpreter of every version met. What can be judged from names alone is reported here.
fn discover_step(root: &Root, opts: &Options, report: &mut Report) -> Result<Discovered, Error> {
    for path in &opts.paths {
        check_path(root, path)?;
    }
    let excludes = Excludes::new(&opts.excludes)?;
    // The checkers are started on checker.py from the first: an interpreter asked its version
    // or proven here is the pool's first checker of its version.
    let starter = interpreter::Starter::new(protocol::SCRIPT, opts.timeout);
    let mut scan = scan::scan(root, &opts.paths, &excludes);
    report.pycs_checked = scan.pycs;
    report.problems.append(&mut scan.problems);
    report.not_checked.append(&mut scan.not_checked);
    let walker = Walker::Recorded(root, &scan.record);
    let (required, interpreters) = required_sources(walker, opts, (&excludes, &starter), report)?;
    let (targets, unavailable) =
        choose_interpreters(root, (&scan, &required), &interpreters, (opts, &starter))?;
    Ok(Discovered {
        scan,
        required,
        targets,
        unavailable,
    })
}

/// Step 2: the jobs, each module with the levels it must have, in the order the pool takes
/// them: one version after another (one checker per thread at a time), largest first.
fn plan_jobs(found: &mut Discovered, opts: &Options, report: &mut Report) -> Vec<Job> {
    let Discovered {
        scan,
        required,
        targets,
        unavailable,
    } = found;
    let mut modules = checked_modules(scan, targets, unavailable, report);
    let (levels, rule) = match opts.required {
        Some(levels) => (levels, Rule::Optimize),
        None => (complete_levels(&modules), Rule::Complete),
    };
    report.required_levels = levels.iter().collect();
    if rule == Rule::Complete {
        // Every module with a pyc, wherever it is, must have the same levels.
        for (_, _, required) in modules.values_mut() {
            *required = levels;
        }
    }
    add_required(&mut modules, required, targets, levels);
    let mut jobs: Vec<Job> = modules
        .into_iter()
        .map(|(key, (version, module, required))| Job::Module {
            version,
            key,
            module,
            required,
            rule,
        })
        .collect();
    jobs.extend(sourceless_jobs(scan, opts, targets, unavailable, report));
    jobs.sort_by(|a, b| a.version().cmp(&b.version()).then(b.size().cmp(&a.size())));
    jobs
}

/// The sources that must have pycs at `levels`, as modules (with no pyc yet if none was
/// found).
fn add_required(
    modules: &mut Modules,
    required: &[plan::Job],
    targets: &BTreeMap<PyVersion, Target>,
    levels: Levels,
) {
    for job in required {
        let key = ModuleKey {
            dir: job.rel.parent().unwrap_or(Path::new("")).to_path_buf(),
            stem: job.rel.file_stem().unwrap_or_default().to_os_string(),
            tag: targets[&job.version].hello.format.cache_tag.clone(),
        };
        let entry = modules.entry(key).or_insert_with(|| {
            let module = Module {
                symlink: job.symlink,
                size: job.size,
                ..Module::default()
            };
            (job.version, module, Levels::empty())
        });
        entry.2 = levels;
    }
}

/// The modules of one version, each with the levels it must have.
type Modules = BTreeMap<ModuleKey, (PyVersion, Module, Levels)>;

/// The sources that must have pycs, with their versions, and the interpreters named per
/// version. With `-o`, every source `pyclink compile` would compile (the same trees,
/// `--python-version`, `-x`). Without, those of the trees whose one reader the path tells
/// ([`versioned_trees`]).
fn required_sources(
    walker: Walker,
    opts: &Options,
    (excludes, starter): (&Excludes, &interpreter::Starter),
    report: &mut Report,
) -> Result<(Vec<plan::Job>, BTreeMap<PyVersion, PathBuf>), Error> {
    let root = walker.root();
    // A pyc PATH stands for its module's source here: the source is what must have pycs, and
    // discover would call the pyc "not a Python source".
    let sources: Vec<PathBuf> = opts
        .paths
        .iter()
        .map(|p| {
            source_of_pyc(p)
                .filter(|s| root.lstat(s).is_ok())
                .unwrap_or_else(|| p.clone())
        })
        .collect();
    let (planned, interpreters) = if opts.required.is_some() {
        let found = discover::discover(
            walker,
            discover::Asked {
                paths: &sources,
                python_versions: &opts.python_versions,
                interpreters: &opts.interpreters,
                unversioned_interpreters: &opts.unversioned_interpreters,
                starter,
            },
        )?;
        let planned = plan::plan(walker, &found.trees, &found.unsupported, excludes);
        (planned, found.interpreters)
    } else {
        if !opts.python_versions.is_empty() {
            log::warn!("--python-version only matters with -o (which sources need pycs); ignored");
        }
        let mut interpreters = opts.interpreters.clone();
        for path in &opts.unversioned_interpreters {
            let version = starter
                .version_of(path)
                .map_err(|failure| discover::Error::Probe {
                    path: path.clone(),
                    failure,
                })?;
            interpreters.insert(version, path.clone());
        }
        let trees = versioned_trees(walker, &sources)?;
        (plan::plan(walker, &trees, &[], excludes), interpreters)
    };
    for (_, e) in planned.errors {
        // The plan's trees lie under the scan's tops (a PATH's tree is the PATH) and are read from
        // the scan's record, or walked with the same excludes: the scan has met every directory
        // the plan could not read, and reported it. What the plan alone says is that a tree of
        // an unsupported version holds sources.
        if matches!(e.problem, crate::problem::Problem::Io { .. }) {
            continue;
        }
        report.problems.push(Problem::new(
            Kind::Unreadable,
            e.path,
            e.problem.to_string(),
        ));
    }
    Ok((planned.jobs, interpreters))
}

/// Without `-o`, the trees whose sources must have pycs: those that compiling finds with a
/// version in their path (`usr/lib/pythonX.Y`, `pypyX.Y`, and any `lib/pythonX.Y` below a PATH,
/// a virtualenv's), which only that version reads, so its byte-compiling hook writes their pycs.
/// Debian's dist-packages and private directories are left out: py3compile writes the former's
/// pycs at install time, and nothing tells which Python the latter's need.
fn versioned_trees(walker: Walker, paths: &[PathBuf]) -> Result<Vec<discover::Tree>, Error> {
    let root = walker.root();
    if paths.is_empty() {
        return Ok(discover::find_trees(walker, &[])?.versioned);
    }
    let mut trees = Vec::new();
    for path in paths {
        // A pyc or any other file holds no source (and discover would warn about it).
        let is_dir = root
            .lstat(path)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory);
        if !is_dir && !plan::has_py_suffix(path) {
            continue;
        }
        match discover::find_trees(walker, std::slice::from_ref(path)) {
            Ok(found) => trees.extend(found.versioned),
            // Inside a tree of a version pyclink does not compile (python2.7): none are required.
            Err(discover::Error::Unsupported { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(trees)
}

/// An interpreter for every version met: cache tags, magic numbers, required sources. A
/// version whose sources must have pycs and that has no interpreter stops the run: which of
/// its sources compile, and so need pycs, cannot be told.
fn choose_interpreters(
    root: &Root,
    (scan, required_jobs): (&scan::Scan, &[plan::Job]),
    interpreters: &BTreeMap<PyVersion, PathBuf>,
    (opts, starter): (&Options, &interpreter::Starter),
) -> Result<(BTreeMap<PyVersion, Target>, Unavailable), Error> {
    let mut versions: BTreeSet<PyVersion> =
        scan.modules.keys().filter_map(ModuleKey::version).collect();
    versions.extend(required_jobs.iter().map(|j| j.version));
    if opts.allow_sourceless {
        versions.extend(scan.sourceless.iter().filter_map(|s| s.version));
    }
    // The sources of each version, counted once: a module with pycs that is also required is
    // one source, not two.
    let mut sources: BTreeMap<PyVersion, BTreeSet<PathBuf>> = BTreeMap::new();
    for key in scan.modules.keys() {
        if let Some(v) = key.version() {
            sources.entry(v).or_default().insert(key.source());
        }
    }
    for job in required_jobs {
        sources
            .entry(job.version)
            .or_default()
            .insert(job.rel.clone());
    }
    let needed: BTreeMap<PyVersion, u64> = versions
        .iter()
        .map(|v| (*v, sources.get(v).map_or(1, |s| s.len().max(1) as u64)))
        .collect();
    let (targets, unavailable) = select(root, &needed, interpreters, starter)?;
    if let Some(v) = required_jobs
        .iter()
        .map(|j| j.version)
        .find(|v| unavailable.contains_key(v))
    {
        return Err(Error::NoInterpreter(unavailable[&v].clone()));
    }
    Ok((targets, unavailable))
}

/// The modules found whose pycs can be checked: their cache tag is that of an interpreter
/// here. The others' pycs are reported as unknown-tag.
fn checked_modules(
    scan: &mut scan::Scan,
    targets: &BTreeMap<PyVersion, Target>,
    unavailable: &Unavailable,
    report: &mut Report,
) -> Modules {
    let mut modules = Modules::new();
    for (key, module) in std::mem::take(&mut scan.modules) {
        let version = key.version().expect("scan keeps known tags only");
        let problem = match (targets.get(&version), unavailable.get(&version)) {
            (Some(t), _) if t.hello.format.cache_tag == key.tag => None,
            (Some(t), _) => Some(format!(
                "cache tag '{}' is not that of {} ({}), the interpreter for {version}",
                key.tag,
                shown(&t.launch.program),
                t.hello.format.cache_tag
            )),
            (None, why) => Some(format!(
                "cache tag '{}': {}",
                key.tag,
                why.map_or("no interpreter", String::as_str)
            )),
        };
        match problem {
            Some(message) => {
                for level in (0..3u8).filter(|&l| module.present[l as usize]) {
                    report.problems.push(Problem::new(
                        Kind::UnknownTag,
                        display_in_root(&key.pyc_path(level)),
                        message.clone(),
                    ));
                }
            }
            None => {
                modules.insert(key, (version, module, Levels::empty()));
            }
        }
    }
    modules
}

/// The default's levels: 0, which a plain `python` imports, and every level some module's pyc
/// has. Fedora's hook writes 0 and 1, pyclink's default 0, 1 and 2: a root is held to its own
/// levels, so a module short of one the others have is caught, and so is a root that was never
/// byte-compiled.
fn complete_levels(modules: &Modules) -> Levels {
    let mut levels = vec![0];
    for (_, module, _) in modules.values() {
        levels.extend((1..3).filter(|&l| module.present[l as usize]));
    }
    Levels::from_list(&levels).expect("levels 0 to 2")
}

/// The jobs of the sourceless pycs; without `--allow-sourceless`, each is a problem instead.
fn sourceless_jobs(
    scan: &scan::Scan,
    opts: &Options,
    targets: &BTreeMap<PyVersion, Target>,
    unavailable: &Unavailable,
    report: &mut Report,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for pyc in &scan.sourceless {
        let shown = display_in_root(&pyc.rel);
        if !opts.allow_sourceless {
            report.problems.push(Problem::new(
                Kind::Sourceless,
                shown,
                format!(
                    "no source {} beside it (a sourceless module; --allow-sourceless accepts it)",
                    crate::escape::shown(
                        pyc.rel.with_extension("py").file_name().unwrap_or_default()
                    )
                ),
            ));
            continue;
        }
        match pyc.version.filter(|v| targets.contains_key(v)) {
            Some(version) => jobs.push(Job::Sourceless {
                version,
                rel: pyc.rel.clone(),
            }),
            None => report.problems.push(Problem::new(
                Kind::UnknownTag,
                shown,
                match pyc.version.and_then(|v| unavailable.get(&v)) {
                    Some(why) => why.clone(),
                    None => format!(
                        "magic number {:02x?} names no Python version pyclink knows",
                        pyc.magic
                    ),
                },
            )),
        }
    }
    jobs
}

/// Add the outcomes to the report: the problems, and each version's figures.
fn tally(
    jobs: &[Job],
    outcomes: Vec<check::Outcome>,
    targets: &BTreeMap<PyVersion, Target>,
    report: &mut Report,
) {
    let mut per_version: BTreeMap<PyVersion, report::VersionReport> = targets
        .iter()
        .map(|(v, t)| {
            let r = report::VersionReport {
                version: v.to_string(),
                interpreter: path_text(t.launch.program.as_os_str()).into_owned(),
                cache_tag: t.hello.format.cache_tag.clone(),
                magic: t
                    .hello
                    .format
                    .magic
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect(),
                ..Default::default()
            };
            (*v, r)
        })
        .collect();
    for (job, outcome) in jobs.iter().zip(outcomes) {
        let v = per_version
            .get_mut(&job.version())
            .expect("a target per job");
        v.pycs += match job {
            Job::Module { module, .. } => module.present.iter().filter(|&&p| p).count() as u64,
            Job::Sourceless { .. } => 1,
        };
        v.sources += u64::from(outcome.compiled);
        v.do_not_compile.extend(outcome.does_not_compile);
        report.problems.extend(outcome.problems);
    }
    report.versions = per_version
        .into_values()
        .map(|mut v| {
            v.do_not_compile.sort();
            v
        })
        .collect();
    for v in &report.versions {
        log::info!(
            "{}: {} pyc of {} sources checked with {} ({} do not compile)",
            v.version,
            v.pycs,
            v.sources,
            v.interpreter,
            v.do_not_compile.len()
        );
    }
}

/// The source of a pyc path: `DIR/__pycache__/NAME.TAG[.opt-N].pyc` or a legacy `DIR/NAME.pyc`
/// is `DIR/NAME.py`.
fn source_of_pyc(pyc: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let name = pyc.file_name()?.as_bytes();
    let dir = pyc.parent()?;
    let (dir, stem) = if dir.file_name() == Some(std::ffi::OsStr::new(crate::python::pyc::PYCACHE))
    {
        (dir.parent()?, scan::cache_pyc_stem(name)?)
    } else {
        (dir, name.strip_suffix(b".pyc")?)
    };
    let mut source = stem.to_vec();
    source.extend_from_slice(b".py");
    Some(dir.join(std::ffi::OsStr::from_bytes(&source)))
}

/// A PATH must exist in the root, through no symlink (it would lead outside what is checked).
/// `normalize` refuses its PATHs with this too: it rewrites what it finds, so a PATH through a
/// symlink must never reach the host's files.
pub(crate) fn check_path(root: &Root, path: &std::path::Path) -> Result<(), Error> {
    let shown = shown_in_root(path);
    match root.lstat(path) {
        // A `.py` symlink is a source like any (compiling accepts it as a PATH too).
        Ok(st)
            if rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink()
                && !plan::has_py_suffix(path) =>
        {
            Err(Error::Symlink { path: shown })
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Not there, or behind a symlink that the handle-based lstat refused to follow.
            if std::fs::symlink_metadata(root.host_path(path)).is_ok() {
                Err(Error::Symlink { path: shown })
            } else {
                Err(Error::Missing {
                    path: shown,
                    root: root.path().to_path_buf(),
                })
            }
        }
        Err(_) => Err(Error::Symlink { path: shown }),
    }
}

/// Why a version has no interpreter.
type Unavailable = BTreeMap<PyVersion, String>;

/// The interpreter of each version, chosen as for compiling; for the others, why there is none.
/// An `--interpreter` that does not work is the user's mistake, not a property of the pycs: it
/// stops the run (as when compiling), rather than turning every pyc of its version into a
/// problem.
fn select(
    root: &Root,
    versions: &BTreeMap<PyVersion, u64>,
    given: &BTreeMap<PyVersion, PathBuf>,
    starter: &interpreter::Starter,
) -> Result<(BTreeMap<PyVersion, Target>, Unavailable), Error> {
    let mut targets = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    for (&version, &sources) in versions {
        if !version.is_supported() {
            unavailable.insert(version, version.unsupported_reason());
            continue;
        }
        let given = given.get(&version).map(PathBuf::as_path);
        match interpreter::select(version, root, given, starter) {
            Ok(i) => {
                targets.insert(version, Target::new(version, i));
            }
            Err(mut e) => {
                e.sources = sources;
                if e.given.is_some() {
                    return Err(discover::Error::NoInterpreter(vec![e]).into());
                }
                let hint = match version.implementation {
                    Implementation::CPython => format!(
                        "; give --interpreter {}.{}=PATH",
                        version.major, version.minor
                    ),
                    Implementation::PyPy => String::new(),
                };
                unavailable.insert(version, format!("{e}{hint}"));
            }
        }
    }
    for (v, path) in given {
        if !versions.contains_key(v) {
            log::warn!(
                "--interpreter {v}={}: no {v} pycs or sources here; not used",
                shown(path)
            );
        }
    }
    Ok((targets, unavailable))
}
