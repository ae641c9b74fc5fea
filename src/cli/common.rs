//! The flags compile, verify and normalize share, each declared once (name, type, value name,
//! bounds) as a clap `Args` group that the subcommands flatten, with the checks that turn what
//! was typed into a value. Every message names the flag, or the config file and key, the value
//! came from.
//!
//! A group's doc comments are `compile`'s help, the default command's. A flag can mean something
//! else to another subcommand (`verify -o` requires levels, `compile -o` writes them), so
//! verify and normalize replace the help of the flags they flatten (see [`help`]) rather than
//! declare them again.
//!
//! The groups are small and flattened where each flag always stood, so that `--help`, the man
//! pages and the completions list the flags in the order they always had.
//!
//! This module is below `cli` and `verify::args`: it names neither.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Arg, ArgAction, Args};

use crate::config::{Config, ConfigError};
use crate::escape::{printable, shown};
use crate::fsroot::{root_relative, PathError};
use crate::python::{Levels, PyVersion};

/// A subcommand's own help for a shared flag: `#[command(mut_arg("jobs", help(TEXT)))]`.
pub fn help(text: &'static str) -> impl FnOnce(Arg) -> Arg {
    move |arg| arg.help(text)
}

/// `PATH...` and `--buildroot`.
#[derive(Args, Debug, Default)]
pub struct RootArgs {
    /// Restrict the run to these paths inside the build root: relative to it (usr/share/foo),
    /// starting with the build root (debian/pkg/opt/app, %{buildroot}/usr/share/foo), or
    /// absolute as installed (/usr/share/foo, as messages print paths).
    /// Default: every Python tree found.
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// The directory that stands for / [default: $RPM_BUILD_ROOT]
    #[arg(long, value_name = "DIR")]
    pub buildroot: Option<PathBuf>,
}

/// `-o LEVEL`.
#[derive(Args, Debug, Default)]
pub struct LevelArgs {
    /// Optimization level to write: 0 (.pyc), 1 (-O, .opt-1.pyc), 2 (-OO, .opt-2.pyc).
    /// Repeat or comma-separate; duplicates are ignored [default: 0,1,2]
    // Strings, checked in `levels`: `-o x` and `-o 3` get the same message, and the JSON of
    // the refused run is still written.
    #[arg(
        short = 'o',
        long = "optimize",
        value_name = "LEVEL",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    pub optimize: Vec<String>,
}

/// `-j N`.
#[derive(Args, Debug, Default)]
pub struct JobsArgs {
    /// Compile N sources at once (one interpreter worker each), 0 to 1024 [default, and 0: the
    /// number of CPUs]
    // A string: clap would call `-j -1` an unknown option; this way it gets the bounds.
    #[arg(short = 'j', long, value_name = "N", allow_negative_numbers = true)]
    pub jobs: Option<String>,
}

/// `--interpreter` and `--python-version`.
#[derive(Args, Debug, Default)]
pub struct InterpreterArgs {
    /// Use PATH to compile version X.Y (repeatable; X.Y, pythonX.Y or pypyX.Y). A bare PATH
    /// is asked for its version, which also becomes a --python-version target
    #[arg(long = "interpreter", value_name = "[X.Y=]PATH")]
    pub interpreters: Vec<String>,

    /// Compile dist-packages and PATHs outside versioned trees for X.Y (repeatable)
    #[arg(long = "python-version", value_name = "X.Y")]
    pub python_versions: Vec<String>,
}

/// `-x GLOB`.
#[derive(Args, Debug, Default)]
pub struct ExcludeArgs {
    /// Skip sources and directories matching GLOB (repeatable). With a '/', matched against the
    /// path inside the root ('/usr/lib/python3.12/test/*'; 'usr/...' is the same); without,
    /// against the name ('test_*.py')
    #[arg(short = 'x', long = "exclude", value_name = "GLOB")]
    pub exclude: Vec<String>,
}

/// `--no-link`.
#[derive(Args, Debug, Default)]
pub struct LinkArgs {
    /// Write every level as its own file, even when identical
    #[arg(long)]
    pub no_link: bool,
}

/// `--timeout SECONDS`.
#[derive(Args, Debug, Default)]
pub struct TimeoutArgs {
    /// Seconds one source may take in a worker before the worker is restarted and the source
    /// retried once, from 0.001 to 86400 [default: 300]
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub timeout: Option<f64>,
}

/// `--summary-json FILE`.
#[derive(Args, Debug, Default)]
pub struct JsonArgs {
    /// Write the figures and every error as JSON to FILE (`-`: stdout, the summary lines then
    /// go to stderr); also for a run refused with exit 2, with `fatal_error` saying why
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

/// `-q` and `-v`.
#[derive(Args, Debug, Default)]
pub struct OutputArgs {
    /// Leave out the summary lines; errors and warnings (also those of --errors warn) are still
    /// printed
    #[arg(short, long)]
    pub quiet: bool,

    /// More detail on stderr (-v: the interpreters, the end of the stderr of one that failed
    /// to start, and where the time went; -vv: each source's decision). Errors and warnings
    /// are shown without it
    #[arg(short, long, action = ArgAction::Count)]
    pub verbose: u8,
}

impl RootArgs {
    /// The root to write into (never the running system's `/`) and the PATHs inside it; the
    /// config file's `buildroot` stands in for a missing `--buildroot`.
    pub fn writable(self, config: &Config) -> Result<(PathBuf, Vec<PathBuf>), UsageError> {
        let buildroot = resolve_buildroot(self.buildroot.or(config.file.buildroot.clone()))?;
        let paths = paths_in_root(&buildroot, &self.paths)?;
        Ok((buildroot, paths))
    }

    /// The root to read (`/` will do) and the PATHs inside it, each once: one file named twice
    /// (`/usr/x.py` and `%{buildroot}/usr/x.py`) is checked once, as compiling compiles it once.
    pub fn readable(self) -> Result<(PathBuf, Vec<PathBuf>), UsageError> {
        let buildroot = existing_buildroot(self.buildroot)?;
        let mut paths = paths_in_root(&buildroot, &self.paths)?;
        let mut seen = std::collections::BTreeSet::new();
        paths.retain(|p| seen.insert(p.clone()));
        Ok((buildroot, paths))
    }
}

impl LevelArgs {
    /// The levels of `-o`, else of the config file's `optimize`; `None` if neither gives any.
    pub fn levels(self, config: &Config) -> Result<Option<Levels>, UsageError> {
        let flag = match self.optimize.as_slice() {
            [] => None,
            given => Some(level_args(given)?),
        };
        pick(flag, config.file.optimize.clone(), "--optimize", config)
            .map(|(list, origin)| levels_from(&list, &origin))
            .transpose()
    }
}

impl JobsArgs {
    /// The number of workers, from `-j`, else the config file's `jobs` (0 or none: the CPUs).
    pub fn jobs(self, config: &Config) -> Result<usize, UsageError> {
        jobs_from(pick(
            jobs_arg(self.jobs)?,
            config.file.jobs,
            "--jobs",
            config,
        ))
    }
}

/// The interpreters and target versions asked for.
#[derive(Debug, Default)]
pub struct Interpreters {
    /// `X.Y=PATH`: the config file's, replaced by the command line's.
    pub versioned: BTreeMap<PyVersion, PathBuf>,
    /// Bare PATHs, whose versions are asked of them, in order.
    pub unversioned: Vec<PathBuf>,
    /// `--python-version`, else the config file's `python-version`.
    pub python_versions: Vec<PyVersion>,
}

impl InterpreterArgs {
    pub fn resolve(self, config: &Config) -> Result<Interpreters, UsageError> {
        let mut versioned = config_interpreters(config)?;
        let unversioned = interpreter_flags(&self.interpreters, &mut versioned)?;
        let flag_versions = (!self.python_versions.is_empty()).then_some(self.python_versions);
        let python_versions = match pick(
            flag_versions,
            config.file.python_version.clone(),
            "--python-version",
            config,
        ) {
            Some((list, origin)) => versions_from(&list, &origin)?,
            None => Vec::new(),
        };
        Ok(Interpreters {
            versioned,
            unversioned,
            python_versions,
        })
    }
}

/// The config file's `[interpreters]`. Each must exist: checked here, where the config file
/// can be named, since later failures say only which interpreter failed.
fn config_interpreters(config: &Config) -> Result<BTreeMap<PyVersion, PathBuf>, UsageError> {
    let mut interpreters = BTreeMap::new();
    let Some(path) = config.path.as_deref() else {
        return Ok(interpreters);
    };
    for (k, v) in config.file.interpreters.clone().unwrap_or_default() {
        let origin = Origin::Config(path, "interpreters");
        let version = supported_version(&k).map_err(|e| origin.error(&k, e))?;
        if !v.is_file() {
            let given = format!("\"{k}\" = \"{}\"", shown(&v));
            return Err(origin.error(given, "no such file"));
        }
        interpreters.insert(version, v);
    }
    Ok(interpreters)
}

impl ExcludeArgs {
    /// The config file's globs, then the command line's: both apply.
    pub fn globs(self, config: &Config) -> Vec<String> {
        let mut excludes = config.file.exclude.clone().unwrap_or_default();
        excludes.extend(self.exclude);
        excludes
    }
}

impl LinkArgs {
    /// Whether identical levels are (to be) hardlinked: not with `--no-link`, nor with the
    /// config file's `no-link = true` (or its older `link = false`).
    pub fn link(self, config: &Config) -> bool {
        !(self.no_link || config.file.no_link().unwrap_or(false))
    }
}

impl TimeoutArgs {
    /// The time limit per source, from `--timeout`, else the config file's; else 300 seconds.
    pub fn timeout(self, config: &Config) -> Result<Duration, UsageError> {
        timeout_from(pick(self.timeout, config.file.timeout, "--timeout", config))
    }
}

impl JsonArgs {
    /// `--summary-json`, else the config file's `summary-json`.
    pub fn path(self, config: &Config) -> Option<PathBuf> {
        self.summary_json.or(config.file.summary_json.clone())
    }
}

/// `-q` and `-v`, resolved with the config file's `quiet` and `verbose`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Output {
    pub quiet: bool,
    pub verbose: u8,
}

impl OutputArgs {
    pub fn resolve(self, config: &Config) -> Result<Output, UsageError> {
        let cfg_verbose = match (config.file.verbose, config.path.as_deref()) {
            (Some(v), Some(path)) if v > 2 => {
                return Err(Origin::Config(path, "verbose").error(v, VERBOSE_IS))
            }
            (v, _) => v.unwrap_or(0),
        };
        Ok(Output {
            quiet: self.quiet || config.file.quiet.unwrap_or(false),
            verbose: self.verbose.max(cfg_verbose),
        })
    }
}

/// A command line or config file that cannot be used; the message names the flag (or the
/// config file and key) the value came from.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("{origin}: {message}")]
    Value { origin: String, message: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no build root: give --buildroot DIR or set RPM_BUILD_ROOT")]
    NoBuildRoot,
    #[error("the build root {} does not exist", shown(.0))]
    NoSuchBuildRoot(PathBuf),
    #[error("the build root {} is not a directory", shown(.0))]
    BuildRootNotADirectory(PathBuf),
    #[error(
        "the build root {} is the running system's /; pyclink compiles package build roots \
         (RPM_BUILD_ROOT, debian/PKG), never the live system",
        shown(.0)
    )]
    LiveSystem(PathBuf),
    #[error("{0}")]
    Path(#[from] PathError),
    #[error(
        "'{0}' was taken as a PATH, and the build root {root} has none: options go after the \
         subcommand (`pyclink {0} -q ...`, not `pyclink -q {0} ...`)",
        root = shown(.1)
    )]
    SubcommandAfterOption(String, PathBuf),
}

/// Where a value came from: a flag, or a key of the config file.
pub(crate) enum Origin<'a> {
    Flag(&'static str),
    Config(&'a Path, &'static str),
}

impl Origin<'_> {
    pub(crate) fn error(
        &self,
        value: impl std::fmt::Display,
        message: impl Into<String>,
    ) -> UsageError {
        // The value as typed may hold anything, a newline included: one message, one line.
        let value = printable(&value.to_string()).into_owned();
        let origin = match self {
            Origin::Flag(flag) => format!("{flag} {value}"),
            Origin::Config(file, key) => {
                format!("config file {}: {key} = {value}", shown(*file))
            }
        };
        UsageError::Value {
            origin,
            // It may quote the value again ("'3.1\n2' is not a Python version").
            message: printable(&message.into()).into_owned(),
        }
    }
}

/// The value from the command line if given, else from the config file, with its origin.
pub(crate) fn pick<'a, T>(
    flag: Option<T>,
    config_value: Option<T>,
    name: &'static str,
    config: &'a Config,
) -> Option<(T, Origin<'a>)> {
    match (flag, config_value, config.path.as_deref()) {
        (Some(v), _, _) => Some((v, Origin::Flag(name))),
        (None, Some(v), Some(path)) => Some((v, Origin::Config(path, &name[2..]))),
        _ => None,
    }
}

/// The build root: as given, else `$RPM_BUILD_ROOT`; it must be a directory, and never the
/// running system's `/`.
fn resolve_buildroot(given: Option<PathBuf>) -> Result<PathBuf, UsageError> {
    let buildroot = existing_buildroot(given)?;
    // pyclink writes into the root: the running system is never one, however it is spelled
    // (a bind mount of `/` has another name and the same device and inode). A root that cannot
    // be opened is not `/`; opening it later says why.
    if crate::fsroot::is_host_root(&buildroot).unwrap_or(false) {
        return Err(UsageError::LiveSystem(buildroot));
    }
    Ok(buildroot)
}

/// The root as given, else `$RPM_BUILD_ROOT`; it must be a directory (for reading only, `/`
/// will do).
fn existing_buildroot(given: Option<PathBuf>) -> Result<PathBuf, UsageError> {
    let buildroot = given
        .or_else(|| {
            std::env::var_os("RPM_BUILD_ROOT")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .ok_or(UsageError::NoBuildRoot)?;
    match std::fs::metadata(&buildroot) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(UsageError::BuildRootNotADirectory(buildroot)),
        Err(_) => return Err(UsageError::NoSuchBuildRoot(buildroot)),
    }
    Ok(buildroot)
}

/// The most workers `-j` may ask for. Packagers pass `%{_smp_build_ncpus}`, which can be large
/// but not thousands; a typo must not start one interpreter per source of a large root.
pub const MAX_JOBS: usize = 1024;

/// The number of workers, with where it came from (0 or none: the number of CPUs).
fn jobs_from(given: Option<(usize, Origin)>) -> Result<usize, UsageError> {
    match given {
        None | Some((0, _)) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
        Some((n, origin)) if n > MAX_JOBS => Err(origin.error(n, JOBS_ARE)),
        Some((n, _)) => Ok(n),
    }
}

pub(crate) const JOBS_ARE: &str = "-j takes a number of workers from 0 (one per CPU) to 1024";

pub(crate) const VERBOSE_IS: &str = "verbose is 0, 1 (like -v) or 2 (like -vv)";

/// `-j` as typed (clap would call `-1` an unknown option).
fn jobs_arg(s: Option<String>) -> Result<Option<usize>, UsageError> {
    s.map(|s| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| Origin::Flag("--jobs").error(&s, JOBS_ARE))
    })
    .transpose()
}

/// The PATHs of the command line, as paths inside the root.
fn paths_in_root(buildroot: &Path, paths: &[PathBuf]) -> Result<Vec<PathBuf>, UsageError> {
    paths
        .iter()
        .map(|p| root_relative(buildroot, p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(UsageError::from)
}

/// `-o` as typed: numbers, else the message `-o 3` gets.
fn level_args(given: &[String]) -> Result<Vec<i64>, UsageError> {
    given
        .iter()
        .map(|s| {
            s.trim().parse::<i64>().map_err(|_| {
                Origin::Flag("--optimize").error(
                    given.join(","),
                    format!(
                        "invalid optimization level '{s}': {}",
                        crate::python::levels::LEVELS_ARE
                    ),
                )
            })
        })
        .collect()
}

/// The levels of --optimize (or the config file's `optimize`).
fn levels_from(list: &[i64], origin: &Origin) -> Result<Levels, UsageError> {
    Levels::from_list(list).map_err(|e| {
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        origin.error(shown.join(","), e)
    })
}

/// The --interpreter flags: each X.Y=PATH goes into `versioned` (replacing the config file's),
/// and the bare PATHs are returned, in order.
fn interpreter_flags(
    specs: &[String],
    versioned: &mut BTreeMap<PyVersion, PathBuf>,
) -> Result<Vec<PathBuf>, UsageError> {
    let mut unversioned = Vec::new();
    for spec in specs {
        let origin = Origin::Flag("--interpreter");
        match spec.split_once('=') {
            Some((k, v)) => {
                let version = supported_version(k).map_err(|e| {
                    // The syntax hint only helps where X.Y is not a version at all.
                    match k.parse::<PyVersion>() {
                        Ok(_) => origin.error(spec, e),
                        Err(_) => origin.error(spec, format!("{e} (expected X.Y=PATH or PATH)")),
                    }
                })?;
                if v.is_empty() {
                    return Err(origin.error(spec, "the PATH after '=' is empty"));
                }
                versioned.insert(version, PathBuf::from(v));
            }
            None if spec.is_empty() => return Err(origin.error("''", "the PATH is empty")),
            None => unversioned.push(PathBuf::from(spec)),
        }
    }
    Ok(unversioned)
}

/// The versions of --python-version (or the config file's `python_version`).
fn versions_from(list: &[String], origin: &Origin) -> Result<Vec<PyVersion>, UsageError> {
    list.iter()
        .map(|s| supported_version(s).map_err(|e| origin.error(s, e)))
        .collect()
}

/// The bounds of --timeout, in seconds. Below a millisecond no interpreter even starts; a day
/// per source is more than any compile needs, even emulated, and far from where a deadline
/// (now + timeout) overflows.
pub const MIN_TIMEOUT: f64 = 0.001;
pub const MAX_TIMEOUT: f64 = 86_400.0;

pub(crate) const TIMEOUTS_ARE: &str =
    "the time limit per source is a number of seconds from 0.001 to 86400 (one day)";

/// The --timeout for one source, if given (with where it came from); else 300 seconds.
fn timeout_from(given: Option<(f64, Origin)>) -> Result<Duration, UsageError> {
    let secs = match given {
        Some((t, origin)) if !(MIN_TIMEOUT..=MAX_TIMEOUT).contains(&t) => {
            return Err(origin.error(seconds_text(t), TIMEOUTS_ARE))
        }
        Some((t, _)) => t,
        None => 300.0,
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Seconds as a user would have typed them: `300`, `2.5`, `1e30` (f64's Display spells 1e30
/// with 31 digits and -1e-300 with 300).
fn seconds_text(t: f64) -> String {
    if t.fract() == 0.0 && t.abs() < 1e15 {
        format!("{}", t as i64)
    } else {
        format!("{t:?}")
    }
}

/// A version pyclink can compile for, from `X.Y`, `pythonX.Y` or `pypyX.Y`.
fn supported_version(s: &str) -> Result<PyVersion, String> {
    let v = s.parse::<PyVersion>()?;
    if v.is_supported() {
        Ok(v)
    } else {
        Err(v.unsupported_reason())
    }
}
