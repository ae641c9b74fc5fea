//! The command line: `pyclink [compile] [OPTIONS] [PATH...]`, merged with `--config`.

pub mod common;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::compile::cache::parse_size;
use crate::config::{Config, ConfigError};
use crate::escape::path_text;
use crate::python::{InvalidationMode, Levels};
use crate::settings::{ErrorPolicy, Settings};
use common::{
    help, pick, ExcludeArgs, InterpreterArgs, JobsArgs, JsonArgs, LevelArgs, LinkArgs, OutputArgs,
    RootArgs, TimeoutArgs,
};
pub use common::{UsageError, MAX_JOBS, MAX_TIMEOUT, MIN_TIMEOUT};

const ABOUT: &str =
    "Byte-compile the Python trees of a build root at optimization levels 0, 1 and 2 with \
the real interpreters, and hardlink the identical pycs.";

const LONG_ABOUT: &str = "\
Byte-compile the Python trees of a build root at optimization levels 0, 1 and 2 with the real
interpreters, and hardlink the identical pycs. A drop-in for `python -m compileall -o0 -o1 -o2
--hardlink-dupes -s ROOT -p /` run once per Python version (Fedora's brp-python-bytecompile and
brp-python-hardlink), for rpmbuild, mock, koji and dpkg-buildpackage.

What is compiled:
  usr/lib/pythonX.Y, usr/lib64/pythonX.Y (with site-packages), the same under usr/local and app,
  and pypyX.Y trees: each with its own version. Debian's usr/lib/python3/dist-packages and any
  PATH outside those trees: for the versions given with --python-version, else those given with
  --interpreter, else every Python 3 version found in the root, else the host's python3.
  A PATH covers every source under it: /usr means its versioned trees and the rest of /usr.
  Directory symlinks are never followed; a .py symlink is read through, resolved inside the root.

Which interpreter compiles version X.Y:
  --interpreter X.Y=PATH (or a bare PATH, which is asked for its version); else the root's own
  usr/bin/pythonX.Y if it is a binary for this machine (run with PYTHONHOME and LD_LIBRARY_PATH
  pointing into the root); else the host's pythonX.Y from PATH, then from pyenv. Magic number
  and cache tag come from the interpreter.

What is written, per source NAME.py:
  __pycache__/NAME.TAG.pyc, NAME.TAG.opt-1.pyc, NAME.TAG.opt-2.pyc for the requested levels, with
  co_filename set to the path inside the root. Levels with identical bytes are one inode. Every
  file appears atomically (temp file + rename); where the filesystem refuses hardlinks a copy is
  written and counted. With SOURCE_DATE_EPOCH set, headers hold a checked source hash instead of
  the mtime, as py_compile does.

Which pycs are left alone:
  Only those pyclink itself wrote for this level, path and interpreter (a user.pyclink xattr
  vouches for the exact bytes), whose header still matches the source, and whose levels are
  linked as this run would link them. Every other pyc is rewritten even if its header is fresh:
  compileall's, one written with --no-link or --no-normalize, one whose hardlink was broken,
  one with a wrong co_filename, any pyc on a filesystem without user xattrs. --force rewrites
  all of them; -vv says why each source's pycs are rewritten.

Exit status: 0 success; 1 some source failed to compile or write (with --errors fail, the
default); 2 the run itself could not proceed (bad option, no interpreter, no build root);
130/143 interrupted by SIGINT/SIGTERM (temp files are removed).";

const EXAMPLES: &str = "\
Examples:
  # Everything in an RPM build root, as %__brp_python_bytecompile does:
  pyclink --buildroot \"$RPM_BUILD_ROOT\"

  # Fedora's current policy (levels 0 and 1), 8 workers, syntax errors only warned about:
  pyclink --buildroot /tmp/br -o 0 -o 1 -j 8 --errors warn

  # A private directory for one interpreter (like %py_byte_compile):
  pyclink --buildroot debian/foo --python-version 3.11 usr/share/foo

  # The build root's interpreter cannot run here: name the host's own
  pyclink --buildroot /tmp/br --interpreter 3.12=/usr/bin/python3.12

  # Machine-readable figures and every error, for CI:
  pyclink --buildroot /tmp/br --summary-json /tmp/pyclink.json

Config file (--config or $PYCLINK_CONFIG), the same settings in TOML:
  optimize = [0, 1, 2]
  exclude = [\"*/tests/*\"]
  errors = \"warn\"
  [interpreters]
  \"3.12\" = \"/usr/bin/python3.12\"

Logging: errors and warnings (a source that does not compile, also with --errors warn; compiler
warnings; skipped files; an interpreter passed over, in one line that says why; on a run over
the whole root, the .py files outside every Python tree that have no pycs, with where they are
and how to compile them) are always shown; -q leaves out only the summary lines; -v adds the
interpreters chosen, the end of the stderr of one that failed to start, and where the time went;
-vv each source's decision (why its pycs are rewritten). RUST_LOG replaces these levels.";

#[derive(Parser, Debug)]
#[command(
    name = "pyclink",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = EXAMPLES,
    args_conflicts_with_subcommands = true,
    // A wrapper's default can be overridden by repeating an option: the last one wins.
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    compile: CompileArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compile a build root (the default command: `pyclink compile ...` = `pyclink ...`).
    #[command(long_about = LONG_ABOUT, after_long_help = EXAMPLES, version)]
    Compile(CompileArgs),
    /// Bring every pyc in a build root to add-determinism's normal form and hardlink the
    /// identical levels of each module, pycs pyclink did not write included.
    #[command(long_about = NORMALIZE_ABOUT, version)]
    Normalize(NormalizeArgs),
    /// Check the pycs of a build root, a package payload or an installed prefix: headers,
    /// freshness, code equal to a fresh compile, hardlinks, strays. Writes nothing.
    #[command(long_about = crate::verify::args::ABOUT, after_long_help = crate::verify::args::EXAMPLES, version)]
    Verify(crate::verify::VerifyArgs),
}

const NORMALIZE_ABOUT: &str = "\
Bring every pyc under the build root (or the PATHs) to add-determinism's normal form, and
hardlink the identical levels of each module (X.pyc, X.opt-1.pyc, X.opt-2.pyc in one directory),
including pycs that pyclink did not write: a build system's own, outside the Python trees. This
is what Fedora's brp-python-hardlink and add-det's pyc handler do; pyclink's RPM hook runs it
after compiling, so that add-det can skip its pyc pass.

A rewritten pyc keeps its mode, modification time and hardlinks, and appears atomically (temp
file + rename). A pyc whose magic number names no CPython 3.6+ format (PyPy, Python 2) is left
alone and counted. One that does not parse is an error (exit 1).

Exit status: 0 success; 1 some pyc could not be read, parsed or rewritten; 2 the run could not
proceed (bad option, no build root, a PATH missing or under a symlink).";

/// `pyclink normalize`: the shared flags, with what they mean when normalizing.
#[derive(Args, Debug, Default)]
#[command(
    mut_arg(
        "paths",
        help(
            "Restrict the run to these paths inside the build root: directories, \
        pycs, or sources (NAME.py: its pycs); each must exist and be reached through no \
        symlink, as for verify [default: the whole root]"
        )
    ),
    mut_arg(
        "jobs",
        help(
            "Work on N directories at once, 0 to 1024 [default: number of CPUs; 0 \
        means the same]"
        )
    ),
    mut_arg("no_link", help("Leave identical levels as separate files")),
    mut_arg(
        "summary_json",
        help(
            "Write the figures and every error as JSON to FILE (`-`: \
        stdout, the summary line then goes to stderr); also for a run refused with exit 2, \
        with `fatal_error` saying why"
        )
    ),
    mut_arg(
        "quiet",
        help("Leave out the summary line; errors and warnings are still printed")
    ),
    mut_arg("verbose", help("More detail on stderr (-v: every pyc left alone)"))
)]
pub struct NormalizeArgs {
    #[command(flatten)]
    root: RootArgs,
    #[command(flatten)]
    jobs: JobsArgs,
    #[command(flatten)]
    link: LinkArgs,
    #[command(flatten)]
    json: JsonArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// `pyclink compile`, and `pyclink` without a subcommand. The shared groups are flattened where
/// their flags always stood in `--help`.
#[derive(Args, Debug, Default)]
pub struct CompileArgs {
    #[command(flatten)]
    root: RootArgs,
    #[command(flatten)]
    levels: LevelArgs,
    #[command(flatten)]
    jobs: JobsArgs,
    #[command(flatten)]
    interpreters: InterpreterArgs,

    /// How pycs are tied to their source (PEP 552) [default: checked-hash if
    /// SOURCE_DATE_EPOCH is set, else timestamp]
    #[arg(long, value_enum, value_name = "MODE")]
    invalidation_mode: Option<InvalidationMode>,

    /// Rewrite every pyc, also those that would be left alone as up to date
    #[arg(short, long)]
    force: bool,

    #[command(flatten)]
    exclude: ExcludeArgs,

    /// What a source that fails to compile does: fail (exit 1) or warn (exit 0) [default: fail]
    #[arg(long, value_enum, value_name = "POLICY")]
    errors: Option<ErrorPolicy>,

    #[command(flatten)]
    link: LinkArgs,

    /// Keep the interpreter's marshal bytes as they are. By default they are rewritten into
    /// add-determinism's normal form (FLAG_REF only where an object is referenced again, equal
    /// objects shared), which does not depend on -j, order or the worker's history
    #[arg(long)]
    no_normalize: bool,

    /// Compile every level, even where the source proves levels identical (no `assert`,
    /// `__debug__` or docstring); by default such levels are compiled once
    #[arg(long)]
    compile_every_level: bool,

    /// Print what would be compiled (each version's interpreter, cache tag, invalidation mode
    /// and levels, then its sources, "(up to date)" where no pyc would be written) and write
    /// nothing: no pyc, and no --summary-json FILE (it is neither created nor truncated)
    #[arg(long, visible_alias = "list")]
    dry_run: bool,

    #[command(flatten)]
    json: JsonArgs,

    /// Keep compiled results in DIR, keyed by interpreter, source bytes, path and levels, so a
    /// rebuild of the same sources skips the interpreters. DIR must be new, empty or already
    /// pyclink's (marked with a CACHEDIR.TAG); one that other users can write is refused (see
    /// --cache-shared). Runs at once may share it
    #[arg(long, value_name = "DIR", env = "PYCLINK_CACHE")]
    cache: Option<PathBuf>,

    /// Trim the cache to SIZE after each run, least recently used first (K, M, G, T; at most
    /// 1024T) [default: 1G]
    // A string with hyphen values allowed, so that `-1` gets the flag's own message.
    #[arg(long, value_name = "SIZE", allow_hyphen_values = true)]
    cache_max_size: Option<String>,

    /// Use a --cache DIR that other users can write, with a warning: whoever writes it decides
    /// what the build ships. Without it, such a DIR is refused: world-writable, writable by its
    /// group and not this user's, or owned by a user other than this one and root
    #[arg(long)]
    cache_shared: bool,

    /// Only read the --cache: store, evict and remove nothing (a shared cache filled by a
    /// trusted job). A cache this user cannot write is used so, with a warning
    #[arg(long)]
    cache_read_only: bool,

    /// Read settings from a TOML file (the command line wins)
    #[arg(long, value_name = "FILE", env = "PYCLINK_CONFIG")]
    config: Option<PathBuf>,

    #[command(flatten)]
    timeout: TimeoutArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// What main is asked to do.
pub enum Invocation {
    Compile { settings: Settings, verbose: u8 },
    Normalize(NormalizeInvocation),
    Verify(crate::verify::VerifyInvocation),
}

/// `pyclink normalize`, resolved.
pub struct NormalizeInvocation {
    pub buildroot: PathBuf,
    pub options: crate::normalize::Options,
    pub summary_json: Option<PathBuf>,
    pub quiet: bool,
    pub verbose: u8,
}

impl Invocation {
    pub fn quiet(&self) -> bool {
        match self {
            Invocation::Compile { settings, .. } => settings.quiet,
            Invocation::Normalize(n) => n.quiet,
            Invocation::Verify(v) => v.quiet,
        }
    }

    pub fn verbose(&self) -> u8 {
        match self {
            Invocation::Compile { verbose, .. } => *verbose,
            Invocation::Normalize(n) => n.verbose,
            Invocation::Verify(v) => v.verbose,
        }
    }

    pub fn summary_json(&self) -> Option<&Path> {
        match self {
            Invocation::Compile { settings, .. } => settings.summary_json.as_deref(),
            Invocation::Normalize(n) => n.summary_json.as_deref(),
            Invocation::Verify(v) => v.summary_json.as_deref(),
        }
    }
}

/// Which report a subcommand's `--summary-json` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Compile,
    Normalize,
    Verify,
}

/// Where `--summary-json` goes, read from the parsed command line before anything is checked,
/// so that a run refused for a bad value or build root still writes its JSON (`fatal_error`).
#[derive(Clone, Debug)]
pub struct JsonTarget {
    pub path: PathBuf,
    pub kind: ReportKind,
    /// The build root as given (or `$RPM_BUILD_ROOT`), for the JSON's `buildroot`.
    pub buildroot: String,
}

impl JsonTarget {
    pub fn is_stdout(&self) -> bool {
        self.path == Path::new("-")
    }
}

/// The parsed command line and its config file. The file is read here, once: both the JSON's
/// destination and the settings come from it.
pub struct CommandLine {
    cli: Cli,
    /// A config file that cannot be used fails the run (with its JSON, if the command line
    /// names one), not the parse.
    config: Result<Config, ConfigError>,
}

impl CommandLine {
    pub fn new(cli: Cli) -> CommandLine {
        // Only compile takes a config file: a bad $PYCLINK_CONFIG is no concern of verify's.
        let path = match &cli.command {
            None => cli.compile.config.as_deref(),
            Some(Command::Compile(a)) => a.config.as_deref(),
            Some(_) => None,
        };
        let config = Config::read(path);
        CommandLine { cli, config }
    }

    /// The JSON destination, if any: `--summary-json`, else (for compile) the config file's
    /// `summary-json`. None for `--dry-run`, which writes nothing.
    pub fn json_target(&self) -> Option<JsonTarget> {
        let (kind, root, json, config) = match &self.cli.command {
            Some(Command::Normalize(a)) => (ReportKind::Normalize, &a.root, &a.json, None),
            Some(Command::Verify(a)) => (ReportKind::Verify, &a.root, &a.json, None),
            Some(Command::Compile(a)) => (ReportKind::Compile, &a.root, &a.json, Some(a)),
            None => {
                let a = &self.cli.compile;
                (ReportKind::Compile, &a.root, &a.json, Some(a))
            }
        };
        let file = match config {
            Some(a) if a.dry_run => return None,
            // An unreadable config file names no JSON; the run then fails for it.
            Some(_) => self.config.as_ref().ok().map(|c| &c.file),
            None => None,
        };
        let buildroot = root
            .buildroot
            .clone()
            .or_else(|| file.and_then(|f| f.buildroot.clone()))
            .or_else(|| std::env::var_os("RPM_BUILD_ROOT").map(PathBuf::from))
            .map_or_else(String::new, |p| path_text(p.as_os_str()).into_owned());
        Some(JsonTarget {
            path: json
                .summary_json
                .clone()
                .or_else(|| file.and_then(|f| f.summary_json.clone()))?,
            kind,
            buildroot,
        })
    }

    pub fn into_invocation(self) -> Result<Invocation, UsageError> {
        let CommandLine { cli, config } = self;
        match cli.command {
            Some(Command::Compile(a)) => a.into_invocation(&config?),
            Some(Command::Normalize(a)) => a.into_invocation().map(Invocation::Normalize),
            Some(Command::Verify(a)) => a.into_invocation().map(Invocation::Verify),
            None => default_command(cli.compile, &config?),
        }
    }
}

impl Cli {
    /// The command line resolved, its config file read (see [`CommandLine`]).
    pub fn into_invocation(self) -> Result<Invocation, UsageError> {
        CommandLine::new(self).into_invocation()
    }
}

/// `pyclink [OPTIONS] [PATH...]`, which is `pyclink compile`. clap knows a subcommand only in
/// first place: after an option, `verify` is the default subcommand's PATH. The root rarely
/// holds such a PATH, so its absence means the option was misplaced.
fn default_command(args: CompileArgs, config: &Config) -> Result<Invocation, UsageError> {
    let first = args.root.paths.first().cloned();
    let invocation = args.into_invocation(config)?;
    if let (Some(first), Invocation::Compile { settings, .. }) = (first, &invocation) {
        // Not a message: compared with the subcommands' names.
        let name = first.to_string_lossy();
        if ["compile", "normalize", "verify"].contains(&name.as_ref())
            && settings.buildroot.join(&first).symlink_metadata().is_err()
        {
            return Err(UsageError::SubcommandAfterOption(
                name.into_owned(),
                settings.buildroot.clone(),
            ));
        }
    }
    Ok(invocation)
}

/// The largest --cache-max-size: a size that large is a typo, and sizes that overflow a u64
/// must not wrap or saturate into a different limit in silence.
pub const MAX_CACHE_SIZE: u64 = 1 << 50;

const CACHE_SIZES_ARE: &str = "the cache size is at most 1024T (1 PiB)";

/// `--cache-max-size`, else the config file's; else 1G.
fn cache_max_size(flag: Option<String>, config: &Config) -> Result<u64, UsageError> {
    let given = pick(
        flag,
        config.file.cache_max_size.clone(),
        "--cache-max-size",
        config,
    );
    match given {
        Some((size, origin)) => match parse_size(&size) {
            Ok(bytes) if bytes <= MAX_CACHE_SIZE => Ok(bytes),
            Ok(_) => Err(origin.error(&size, CACHE_SIZES_ARE)),
            Err(e) => Err(origin.error(&size, e)),
        },
        None => Ok(1 << 30),
    }
}

impl NormalizeArgs {
    fn into_invocation(self) -> Result<NormalizeInvocation, UsageError> {
        // normalize takes no config file.
        let none = Config::default();
        let (buildroot, paths) = self.root.writable(&none)?;
        let output = self.output.resolve(&none)?;
        Ok(NormalizeInvocation {
            buildroot,
            options: crate::normalize::Options {
                paths,
                jobs: self.jobs.jobs(&none)?,
                link: self.link.link(&none),
            },
            summary_json: self.json.path(&none),
            quiet: output.quiet,
            verbose: output.verbose,
        })
    }
}

impl CompileArgs {
    /// The command line merged over `config` (the command line wins; `exclude` and
    /// `interpreters` are merged). The checks always run in this order, so that of two bad
    /// values the same one is reported.
    fn into_invocation(self, config: &Config) -> Result<Invocation, UsageError> {
        let (buildroot, paths) = self.root.writable(config)?;
        let levels = self.levels.levels(config)?.unwrap_or(Levels::ALL);
        let interpreters = self.interpreters.resolve(config)?;
        let excludes = self.exclude.globs(config);
        let jobs = self.jobs.jobs(config)?;
        let timeout = self.timeout.timeout(config)?;
        let cache_max_size = cache_max_size(self.cache_max_size, config)?;
        let output = self.output.resolve(config)?;
        let file = &config.file;
        let settings = Settings {
            buildroot,
            paths,
            levels,
            jobs,
            interpreters: interpreters.versioned,
            unversioned_interpreters: interpreters.unversioned,
            python_versions: interpreters.python_versions,
            invalidation_mode: self.invalidation_mode.or(file.invalidation_mode),
            force: self.force || file.force.unwrap_or(false),
            predict: !(self.compile_every_level || file.every_level().unwrap_or(false)),
            excludes,
            errors: self.errors.or(file.errors).unwrap_or(ErrorPolicy::Fail),
            link: self.link.link(config),
            normalize: !(self.no_normalize || file.no_normalize.unwrap_or(false)),
            dry_run: self.dry_run,
            summary_json: self.json.path(config),
            cache: self.cache.or(file.cache.clone()),
            cache_max_size,
            cache_shared: self.cache_shared || file.cache_shared.unwrap_or(false),
            cache_read_only: self.cache_read_only || file.cache_read_only.unwrap_or(false),
            timeout,
            quiet: output.quiet,
        };
        Ok(Invocation::Compile {
            settings,
            verbose: output.verbose,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::common::{JOBS_ARE, TIMEOUTS_ARE, VERBOSE_IS};
    use super::*;
    use crate::python::PyVersion;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let cli = Cli::try_parse_from(std::iter::once("pyclink").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        match cli.into_invocation().map_err(|e| e.to_string())? {
            Invocation::Compile { settings, .. } => Ok(settings),
            _ => Err("not compile".into()),
        }
    }

    #[test]
    fn defaults_and_subcommand_are_the_same() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_str().unwrap();
        let a = parse(&["--buildroot", root, "usr/share/x"]).unwrap();
        let b = parse(&["compile", "--buildroot", root, "usr/share/x"]).unwrap();
        assert_eq!(a.paths, b.paths);
        assert_eq!(a.levels, Levels::ALL);
        assert!(a.link && !a.force);
        assert_eq!(a.errors, ErrorPolicy::Fail);
    }

    #[test]
    fn levels_like_compileall_without_its_bug() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_str().unwrap();
        let s = parse(&["--buildroot", root, "-o1", "-o0", "-o1", "-o0"]).unwrap();
        assert_eq!(s.levels.iter().collect::<Vec<_>>(), vec![0, 1]);
        let s = parse(&["--buildroot", root, "-o", "0,2"]).unwrap();
        assert_eq!(s.levels.iter().collect::<Vec<_>>(), vec![0, 2]);
        let e = parse(&["--buildroot", root, "-o", "-1", "-o", "0"])
            .err()
            .unwrap();
        assert!(e.contains("invalid optimization level -1"), "{e}");
    }

    #[test]
    fn bad_input_is_explained() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_str().unwrap();
        let bare = parse(&["--buildroot", root, "--interpreter", "/usr/bin/python3"]).unwrap();
        assert_eq!(
            bare.unversioned_interpreters,
            vec![PathBuf::from("/usr/bin/python3")]
        );
        assert!(parse(&["--buildroot", root, "--interpreter", "three=/x"])
            .err()
            .unwrap()
            .contains("not a Python version"));
        assert!(parse(&["--buildroot", root, "/etc/../x"])
            .err()
            .unwrap()
            .contains("contains '..'"));
        assert!(parse(&["--buildroot", "/"])
            .err()
            .unwrap()
            .contains("never the live system"));
        assert!(parse(&["--buildroot", "/usr/.."])
            .err()
            .unwrap()
            .contains("never the live system"));
        let twice = parse(&["--buildroot", root, "--errors", "fail", "--errors", "warn"]).unwrap();
        assert_eq!(twice.errors, ErrorPolicy::Warn, "the last value wins");
        // Report 2, item 10: a subcommand after an option is a misplaced option, unless the
        // root holds such a PATH.
        for sub in ["verify", "normalize", "compile"] {
            let e = parse(&["-q", sub, "--buildroot", root]).err().unwrap();
            assert!(
                e.contains(&format!(
                    "options go after the subcommand (`pyclink {sub} -q"
                )),
                "{e}"
            );
        }
        std::fs::create_dir(t.path().join("verify")).unwrap();
        assert_eq!(
            parse(&["--buildroot", root, "verify"]).unwrap().paths,
            vec![PathBuf::from("verify")]
        );
        assert!(parse(&["--buildroot", "/nonexistent/root"])
            .err()
            .unwrap()
            .contains("the build root /nonexistent/root does not exist"));
        let file = t.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(parse(&["--buildroot", file.to_str().unwrap()])
            .err()
            .unwrap()
            .contains("is not a directory"));
        assert!(parse(&["--buildroot", root, "--timeout", "0"])
            .err()
            .unwrap()
            .contains("from 0.001 to 86400"));
    }

    /// Report items 20, 22, 23: bad values of -j, -o and --interpreter get one style of
    /// message, which says what is accepted and nothing that does not apply.
    #[test]
    fn bad_values_say_what_is_accepted() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_str().unwrap();
        let err = |args: &[&str]| {
            let mut all = vec!["--buildroot", root];
            all.extend_from_slice(args);
            parse(&all).err().unwrap()
        };
        let jobs = "-j takes a number of workers from 0 (one per CPU) to 1024";
        assert_eq!(err(&["-j", "1025"]), format!("--jobs 1025: {jobs}"));
        assert_eq!(err(&["--jobs", "-1"]), format!("--jobs -1: {jobs}"));
        assert_eq!(
            parse(&["--buildroot", root, "-j", "1024"]).unwrap().jobs,
            1024
        );
        for (given, shown) in [("x", "'x'"), ("3", "3"), ("0,,1", "''")] {
            let e = err(&["-o", given]);
            assert!(
                e.starts_with(&format!(
                    "--optimize {given}: invalid optimization level {shown}: the levels are 0"
                )),
                "{e}"
            );
        }
        let e = err(&["--interpreter", "2.7=/usr/bin/python2.7"]);
        assert!(
            e.contains("python2.7 is not supported") && !e.contains("expected"),
            "{e}"
        );
        assert!(err(&["--interpreter", "three=/x"]).contains("(expected X.Y=PATH or PATH)"));
        assert_eq!(
            err(&["--interpreter", "3.12="]),
            "--interpreter 3.12=: the PATH after '=' is empty"
        );
        assert!(err(&["--timeout", "-5"]).starts_with(&format!("--timeout -5: {TIMEOUTS_ARE}")));
    }

    #[test]
    fn cache_options_from_flags_and_config() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_str().unwrap();
        let s = parse(&["--buildroot", root, "--cache", "c"]).unwrap();
        assert!(!s.cache_shared && !s.cache_read_only);
        let s = parse(&["--buildroot", root, "--cache-shared", "--cache-read-only"]).unwrap();
        assert!(s.cache_shared && s.cache_read_only);
        let cfg = t.path().join("c.toml");
        std::fs::write(
            &cfg,
            "cache = \"c\"\ncache-shared = true\ncache-read-only = true\n",
        )
        .unwrap();
        let s = parse(&["--buildroot", root, "--config", cfg.to_str().unwrap()]).unwrap();
        assert!(s.cache_shared && s.cache_read_only);
        assert_eq!(s.cache, Some(PathBuf::from("c")));
    }

    #[test]
    fn config_merges_under_the_command_line() {
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("c.toml");
        let python = t.path().join("python3.12");
        std::fs::write(&python, "").unwrap();
        std::fs::write(&cfg, format!("optimize = [0, 1]\nerrors = \"warn\"\nexclude = [\"a\"]\n[interpreters]\n\"3.12\" = {:?}\n", python.display().to_string())).unwrap();
        let root = t.path().to_str().unwrap();
        let cfg = cfg.to_str().unwrap();
        let s = parse(&["--buildroot", root, "--config", cfg, "-x", "b"]).unwrap();
        assert_eq!(s.levels.len(), 2);
        assert_eq!(s.errors, ErrorPolicy::Warn);
        assert_eq!(s.excludes, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(s.interpreters[&PyVersion::cpython(3, 12)], python);
        let s = parse(&[
            "--buildroot",
            root,
            "--config",
            cfg,
            "-o2",
            "--errors",
            "fail",
        ])
        .unwrap();
        assert_eq!(s.levels.iter().collect::<Vec<_>>(), vec![2]);
        assert_eq!(s.errors, ErrorPolicy::Fail);
    }

    #[test]
    fn config_values_are_reported_as_config_values() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_str().unwrap();
        let cfg = t.path().join("c.toml");
        let cfg_s = cfg.to_str().unwrap();
        for (text, expect) in [
            (
                "timeout = 0\n",
                "c.toml: timeout = 0: the time limit per source",
            ),
            (
                "cache-max-size = \"3 parsecs\"\n",
                "c.toml: cache-max-size = 3 parsecs: ",
            ),
            (
                "optimize = [3]\n",
                "c.toml: optimize = 3: invalid optimization level 3",
            ),
            (
                "python-version = [\"2.7\"]\n",
                "c.toml: python-version = 2.7: python2.7 is not supported",
            ),
            (
                "[interpreters]\n\"three\" = \"/x\"\n",
                "c.toml: interpreters = three: ",
            ),
        ] {
            std::fs::write(&cfg, text).unwrap();
            let e = parse(&["--buildroot", root, "--config", cfg_s])
                .err()
                .unwrap();
            assert!(e.contains(expect), "{text}: {e}");
            assert!(!e.contains("--"), "not a flag: {e}");
        }
        // An interpreter the config file names is checked where the file can be named.
        std::fs::write(&cfg, "[interpreters]\n\"3.12\" = \"/nonexistent\"\n").unwrap();
        let e = parse(&["--buildroot", root, "--config", cfg_s])
            .err()
            .unwrap();
        assert!(
            e.contains("c.toml: interpreters = \"3.12\" = \"/nonexistent\": no such file"),
            "{e}"
        );
        std::fs::write(&cfg, "jobs = 5000\n").unwrap();
        let e = parse(&["--buildroot", root, "--config", cfg_s])
            .err()
            .unwrap();
        assert!(e.contains("c.toml: jobs = 5000: -j takes a number"), "{e}");
        // The same value on the command line names the flag.
        let e = parse(&["--buildroot", root, "--timeout", "0"])
            .err()
            .unwrap();
        assert!(
            e.starts_with("--timeout 0: the time limit per source"),
            "{e}"
        );
    }

    /// Issue 22, item 7: every number the command line or the config file takes is bounded,
    /// and a value out of bounds is refused with the flag (or file and key) named, never a
    /// panic: `--timeout 1e19` used to overflow a deadline. One test per kind of number.
    struct Bounds {
        t: tempfile::TempDir,
        cfg_s: String,
    }

    impl Bounds {
        fn new() -> Bounds {
            let t = tempfile::tempdir().unwrap();
            let cfg_s = t.path().join("c.toml").to_str().unwrap().to_string();
            Bounds { t, cfg_s }
        }

        fn root(&self) -> &str {
            self.t.path().to_str().unwrap()
        }

        fn flag(&self, args: &[&str]) -> Result<Settings, String> {
            let mut all = vec!["--buildroot", self.root()];
            all.extend_from_slice(args);
            parse(&all)
        }

        fn config(&self, text: &str) -> Result<Settings, String> {
            std::fs::write(&self.cfg_s, text).unwrap();
            parse(&["--buildroot", self.root(), "--config", &self.cfg_s])
        }
    }

    #[test]
    fn timeouts_are_bounded() {
        let b = Bounds::new();
        let cfg_s = b.cfg_s.clone();
        for bad in [
            "1e19", "1e30", "86400.5", "inf", "NaN", "0", "-0", "0.0009", "-1e-300",
        ] {
            let e = b.flag(&["--timeout", bad]).err().unwrap();
            assert!(
                e.starts_with("--timeout ") && e.contains(TIMEOUTS_ARE),
                "{bad}: {e}"
            );
        }
        for bad in [
            "1e19",
            "1e30",
            "inf",
            "nan",
            "-inf",
            "0",
            "100000",
            "5000000000",
        ] {
            let e = b.config(&format!("timeout = {bad}\n")).err().unwrap();
            assert!(
                e.starts_with(&format!("config file {cfg_s}: timeout = "))
                    && e.contains(TIMEOUTS_ARE),
                "{bad}: {e}"
            );
        }
        for good in ["0.001", "86400", "2.5"] {
            let s = b.flag(&["--timeout", good]).unwrap();
            assert_eq!(s.timeout.as_secs_f64(), good.parse::<f64>().unwrap());
        }
        assert_eq!(
            b.config("timeout = 86400\n").unwrap().timeout.as_secs(),
            86400
        );
    }

    #[test]
    fn jobs_are_bounded() {
        let b = Bounds::new();
        let cfg_s = b.cfg_s.clone();
        for bad in ["1025", "-1", "99999999999999999999", "x", "1.5"] {
            let e = b.flag(&["-j", bad]).err().unwrap();
            assert_eq!(e, format!("--jobs {bad}: {JOBS_ARE}"));
        }
        let e = b.config("jobs = 1025\n").err().unwrap();
        assert!(
            e.starts_with(&format!("config file {cfg_s}: jobs = 1025: ")),
            "{e}"
        );
    }

    #[test]
    fn cache_sizes_are_bounded() {
        let b = Bounds::new();
        let cfg_s = b.cfg_s.clone();
        for bad in ["1025T", "1e30", "18446744073709551616", "99999999999999T"] {
            let e = b.flag(&["--cache-max-size", bad]).err().unwrap();
            assert_eq!(e, format!("--cache-max-size {bad}: {CACHE_SIZES_ARE}"));
        }
        for bad in ["-1", "-1G", "NaN", "inf", "", "2 parsecs"] {
            let e = b.flag(&["--cache-max-size", bad]).err().unwrap();
            assert!(
                e.starts_with(&format!("--cache-max-size {bad}: ")),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            b.flag(&["--cache-max-size", "1024T"])
                .unwrap()
                .cache_max_size,
            1 << 50
        );
        let e = b.config("cache-max-size = \"2000T\"\n").err().unwrap();
        assert_eq!(
            e,
            format!("config file {cfg_s}: cache-max-size = 2000T: {CACHE_SIZES_ARE}")
        );
    }

    #[test]
    fn verbosity_is_bounded() {
        let b = Bounds::new();
        let cfg_s = b.cfg_s.clone();
        for bad in ["3", "255"] {
            let e = b.config(&format!("verbose = {bad}\n")).err().unwrap();
            assert_eq!(
                e,
                format!("config file {cfg_s}: verbose = {bad}: {VERBOSE_IS}")
            );
        }
        for bad in ["256", "-1", "1.5"] {
            let e = b.config(&format!("verbose = {bad}\n")).err().unwrap();
            assert!(
                e.starts_with(&format!("config file {cfg_s}: ")) && e.contains("verbose"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn levels_are_bounded() {
        let b = Bounds::new();
        let cfg_s = b.cfg_s.clone();
        for bad in ["3", "-1", "99999999999999999999", "1.0"] {
            let e = b.flag(&["-o", bad]).err().unwrap();
            assert!(
                e.starts_with(&format!("--optimize {bad}: invalid optimization level")),
                "{e}"
            );
        }
        for bad in ["[3]", "[-1]", "[]", "[99999999999999999999]", "[1.0]", "1"] {
            let e = b.config(&format!("optimize = {bad}\n")).err().unwrap();
            assert!(
                e.starts_with(&format!("config file {cfg_s}: ")) && e.contains("optimize"),
                "{bad}: {e}"
            );
        }
    }

    /// The same bounds for `verify` and `normalize`, which flatten the same `-j` and `--timeout`.
    #[test]
    fn verify_and_normalize_numbers_are_bounded() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_str().unwrap();
        let err = |args: &[&str]| {
            let cli = Cli::try_parse_from(["pyclink"].iter().chain(args).copied())
                .map_err(|e| e.to_string())?;
            cli.into_invocation().map(|_| ()).map_err(|e| e.to_string())
        };
        for sub in ["verify", "normalize"] {
            for bad in ["1025", "-1", "99999999999999999999"] {
                let e = err(&[sub, "--buildroot", root, "-j", bad]).unwrap_err();
                assert_eq!(e, format!("--jobs {bad}: {JOBS_ARE}"), "{sub}");
            }
            assert!(
                err(&[sub, "--buildroot", root, "-j", "1024"]).is_ok(),
                "{sub}"
            );
        }
        for bad in ["1e19", "0", "-5", "inf"] {
            let e = err(&["verify", "--buildroot", root, "--timeout", bad]).unwrap_err();
            assert_eq!(e, format!("--timeout {bad}: {TIMEOUTS_ARE}"));
        }
        let e = err(&["verify", "--buildroot", root, "-o", "3"]).unwrap_err();
        assert!(
            e.starts_with("--optimize 3: invalid optimization level 3"),
            "{e}"
        );
    }
}
