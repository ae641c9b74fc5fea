//! `pyclink verify`: an independent check of the pycs in a build root, an extracted RPM or deb
//! payload, or an installed prefix. Nothing is written.
//!
//! The pipeline mirrors compiling: [`scan`] walks the root and sorts every pyc into its module
//! (or reports it as stray, partial or sourceless); the interpreter of each cache tag is chosen
//! as `pyclink compile` chooses it (`discover::interpreter`); with `-o`, `discover` and `plan`
//! say which sources must have pycs. Then [`pool`] runs [`check`] on every module: Rust judges
//! the headers (magic, flags, timestamp or source hash) and the hardlinks between levels, and a
//! checker process in the target interpreter (`checker.py`, see [`protocol`]) compiles the
//! source afresh at each level and compares the code field by field. [`report`] holds the
//! problems, the summary line and the JSON.

pub mod args;
mod check;
mod pool;
pub mod protocol;
pub mod report;
pub mod scan;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::discover::{self, interpreter};
use crate::escape::{path_text, shown, shown_in_root};
use crate::fsroot::{display_in_root, Root};
use crate::plan::{self, BadExclude, Excludes};
use crate::python::{Implementation, Levels, PyVersion};

pub use args::{VerifyArgs, VerifyInvocation};
use check::{Job, Target};
pub use report::{Kind, Problem, Report};
use scan::{Module, ModuleKey};

/// What `pyclink verify` is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Root-relative paths to restrict the run to; empty: the whole root.
    pub paths: Vec<PathBuf>,
    /// `-o`: every source `pyclink compile` would compile must have a pyc at these levels.
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
    #[error("-o: {0}")]
    NoInterpreter(String),
}

/// Check every pyc under the root (or the PATHs).
pub fn verify(root: &Root, opts: &Options) -> Result<Report, Error> {
    let started = Instant::now();
    let mut report = Report::new(path_text(root.given().as_os_str()).into_owned());
    report.paths = opts.paths.iter().map(|p| display_in_root(p)).collect();
    report.required_levels = opts.required.map_or(Vec::new(), |l| l.iter().collect());
    for path in &opts.paths {
        check_path(root, path)?;
    }
    let excludes = Excludes::new(&opts.excludes)?;
    let mut scan = scan::scan(root, &opts.paths, &excludes);
    report.pycs_checked = scan.pycs;
    report.problems.append(&mut scan.problems);
    report.not_checked.append(&mut scan.not_checked);

    // -o: the sources `pyclink compile` would compile, with their versions.
    let mut interpreters = opts.interpreters.clone();
    let mut required_jobs = Vec::new();
    if opts.required.is_some() {
        // A pyc PATH stands for its module's source here: the source is what `-o` requires
        // pycs of, and discover would call the pyc "not a Python source".
        let sources: Vec<PathBuf> = opts
            .paths
            .iter()
            .map(|p| {
                source_of_pyc(p)
                    .filter(|s| root.lstat(s).is_ok())
                    .unwrap_or_else(|| p.clone())
            })
            .collect();
        let found = discover::discover(
            root,
            discover::Asked {
                paths: &sources,
                python_versions: &opts.python_versions,
                interpreters: &opts.interpreters,
                unversioned_interpreters: &opts.unversioned_interpreters,
                timeout: opts.timeout,
            },
        )?;
        interpreters = found.interpreters;
        let planned = plan::plan(root, &found.trees, &found.unsupported, &excludes);
        for (_, e) in planned.errors {
            // The scan walked the same directories and reported what it could not read.
            if report
                .problems
                .iter()
                .any(|p| p.kind == Kind::Unreadable && p.path == e.path)
            {
                continue;
            }
            report.problems.push(Problem::new(
                Kind::Unreadable,
                e.path,
                e.problem.to_string(),
            ));
        }
        required_jobs = planned.jobs;
    } else {
        if !opts.python_versions.is_empty() {
            log::warn!("--python-version only matters with -o (which sources need pycs); ignored");
        }
        for path in &opts.unversioned_interpreters {
            let version = interpreter::version_of(path, opts.timeout).map_err(|failure| {
                discover::Error::Probe {
                    path: path.clone(),
                    failure,
                }
            })?;
            interpreters.insert(version, path.clone());
        }
    }

    // An interpreter for every version met: cache tags, magic numbers, required sources.
    let mut versions: BTreeSet<PyVersion> = scan
        .modules
        .keys()
        .filter_map(|k| scan::version_of_tag(&k.tag))
        .collect();
    versions.extend(required_jobs.iter().map(|j| j.version));
    let sourceless_versions: Vec<Option<PyVersion>> = scan
        .sourceless
        .iter()
        .map(|s| crate::python::table::by_magic(s.magic).map(|f| f.version))
        .collect();
    if opts.allow_sourceless {
        versions.extend(sourceless_versions.iter().flatten());
    }
    // The sources of each version, counted once: a module with pycs that -o also requires is
    // one source, not two.
    let mut sources: BTreeMap<PyVersion, BTreeSet<PathBuf>> = BTreeMap::new();
    for key in scan.modules.keys() {
        if let Some(v) = scan::version_of_tag(&key.tag) {
            sources.entry(v).or_default().insert(key.source());
        }
    }
    for job in &required_jobs {
        sources
            .entry(job.version)
            .or_default()
            .insert(job.rel.clone());
    }
    let needed: BTreeMap<PyVersion, u64> = versions
        .iter()
        .map(|v| (*v, sources.get(v).map_or(1, |s| s.len().max(1) as u64)))
        .collect();
    let (targets, unavailable) = select(root, &needed, &interpreters, opts.timeout)?;
    if let Some(v) = required_jobs
        .iter()
        .map(|j| j.version)
        .find(|v| unavailable.contains_key(v))
    {
        return Err(Error::NoInterpreter(unavailable[&v].clone()));
    }

    // The jobs: every module, and every sourceless pyc.
    let mut modules: BTreeMap<ModuleKey, (PyVersion, Module, Levels)> = BTreeMap::new();
    for (key, module) in std::mem::take(&mut scan.modules) {
        let version = scan::version_of_tag(&key.tag).expect("scan keeps known tags only");
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
    if let Some(levels) = opts.required {
        for job in &required_jobs {
            let tag = targets[&job.version].hello.format.cache_tag.clone();
            let key = ModuleKey {
                dir: job
                    .rel
                    .parent()
                    .unwrap_or(std::path::Path::new(""))
                    .to_path_buf(),
                stem: job.rel.file_stem().unwrap_or_default().to_os_string(),
                tag,
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
    let mut jobs: Vec<Job> = modules
        .into_iter()
        .map(|(key, (version, module, required))| Job::Module {
            version,
            key,
            module,
            required,
        })
        .collect();
    for (pyc, version) in scan.sourceless.iter().zip(sourceless_versions) {
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
        match version.filter(|v| targets.contains_key(v)) {
            Some(version) => jobs.push(Job::Sourceless {
                version,
                rel: pyc.rel.clone(),
            }),
            None => report.problems.push(Problem::new(
                Kind::UnknownTag,
                shown,
                match version.and_then(|v| unavailable.get(&v)) {
                    Some(why) => why.clone(),
                    None => format!("magic number {:02x?} names no CPython 3 version", pyc.magic),
                },
            )),
        }
    }
    // One version after another (one checker per thread at a time), largest first.
    jobs.sort_by(|a, b| a.version().cmp(&b.version()).then(b.size().cmp(&a.size())));

    let outcomes = pool::run(root, &jobs, &targets, opts.jobs, opts.timeout, opts.link);

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
    if report.pycs_checked == 0 && opts.required.is_none() {
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

/// The source of a pyc path: `DIR/__pycache__/NAME.TAG[.opt-N].pyc` or a legacy `DIR/NAME.pyc`
/// is `DIR/NAME.py`.
fn source_of_pyc(pyc: &std::path::Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let name = pyc.file_name()?.as_bytes();
    let dir = pyc.parent()?;
    let (dir, stem) = if dir.file_name() == Some(std::ffi::OsStr::new("__pycache__")) {
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
    timeout: Duration,
) -> Result<(BTreeMap<PyVersion, Target>, Unavailable), Error> {
    let mut targets = BTreeMap::new();
    let mut unavailable = BTreeMap::new();
    for (&version, &sources) in versions {
        if !version.is_supported() {
            unavailable.insert(version, version.unsupported_reason());
            continue;
        }
        let given = given.get(&version).map(PathBuf::as_path);
        match interpreter::select(version, root, given, timeout) {
            Ok(i) => {
                let hello = i.first_worker.hello.clone();
                targets.insert(
                    version,
                    Target {
                        version,
                        launch: i.launch,
                        hello,
                    },
                );
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
