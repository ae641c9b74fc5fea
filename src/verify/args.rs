//! `pyclink verify`'s command line (wired into `cli` as a subcommand).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{ArgAction, Args};

use crate::cli::{
    existing_buildroot, interpreter_flags, jobs_arg, jobs_or_cpus, levels_from, paths_in_root,
    timeout_from, versions_from, Invocation, Origin, UsageError,
};

pub const ABOUT: &str = "\
Check the pycs in a build root, an extracted RPM or deb payload, or an installed prefix: each
pyc is one that the Python importing from its tree loads, its header fits its interpreter and its
source, its code is what a fresh compile gives, identical levels are hardlinked, and every source
of the Python trees has its pycs. Nothing is written.

For every pyc under the root (or the PATHs):
  version    the Python that imports from its directory can load it: in a lib/pythonX.Y or
             lib/pypyX.Y tree (the innermost: a virtualenv's too) only X.Y, so a __pycache__ pyc
             needs X.Y's cache tag and a sourceless pyc X.Y's magic number, and a Python 2 pyc
             there is wrong too; in Debian's python3/dist-packages only CPython 3, in
             pypy3/dist-packages only PyPy 3
  header     the magic number of the interpreter its cache tag names (cpython-311: the
             interpreter pyclink compile would use for 3.11, --interpreter for another), valid
             PEP 552 flags, and fresh: the source's mtime and size (as importlib computes them)
             or its source hash
  marshal    the data after the header is one object as marshal writes it and nothing more,
             walked as pyclink normalize walks it: truncated data, an unknown type code, a
             reference to nothing, or bytes after the object (which marshal.loads ignores)
  code       loaded in that interpreter, every code object's co_filename is the source's path
             inside the root, and the code equals compile(source, path, 'exec',
             dont_inherit=True, optimize=L) at the pyc's level L (.pyc 0, .opt-1.pyc 1,
             .opt-2.pyc 2), field by field: bytecode, constants with exact types and float bits,
             names, counts, flags, stack size, line and exception tables
  links      levels of one source with identical bytes are one file (hardlinks), and levels
             that are one file compile to the same code
  strays     every file in __pycache__ is a pyc of a source beside it; no temp file left by an
             interrupted write (pyclink's .pyclink-PID-SEQ.tmp, importlib's NAME.pyc.NNN); no pyc
             outside __pycache__ beside its source (import never reads it), and none without a
             source unless --allow-sourceless

Which sources must have pycs. Without -o, every source pyclink compile would compile in the
trees whose version their path names (usr/lib/pythonX.Y, usr/lib/pypyX.Y, any lib/pythonX.Y
under a PATH; the same --exclude), and every module that has a pyc anywhere, must have a pyc at
level 0 and at every level that some pyc checked has. A root the byte-compiling hook never ran
on fails (level 0 is missing everywhere), and so does a module short of a level the others have;
a root written at Fedora's levels 0 and 1 passes, as does one written at 0, 1 and 2. Debian's
dist-packages and private directories need pycs only where a module has some: py3compile writes
dist-packages' pycs at install time, and nothing tells which Python a private directory needs.

With -o LEVEL, every source pyclink compile would compile (the same trees, --python-version,
--exclude: dist-packages and PATHs outside the trees too) must have a pyc at each LEVEL instead.
Either way, sources that do not compile are counted, not reported: they have no pyc (a pyc for
one is a code-mismatch). Python 2 pycs are left alone in Python 2 trees and private directories.

Problems are printed as `PATH: KIND: what is wrong`, grouped by kind, 20 per kind (-v: all),
then one line: `pyclink verify: N pyc checked, M problems`. The kinds: missing, wrong-version (a
pyc no reader of its tree loads), bad-header, bad-marshal, stale, code-mismatch, wrong-filename,
missed-link, wrong-link, stray, sourceless, partial, unknown-tag (a cache tag or magic number
with no interpreter here), unreadable, check-failed (the interpreter crashed or hung on it
twice).

Exit status: 0 every pyc is right; 1 problems found; 2 the check could not run (bad option, no
such root or PATH, an --interpreter that cannot start, no interpreter for a version whose
sources must have pycs).";

pub const EXAMPLES: &str = "\
Examples:
  # In a spec's %check (the pycs the build wrote, as rpmbuild will package them; every
  # source of the Python trees at level 0 and at the levels the hook wrote):
  pyclink verify --buildroot %{buildroot}

  # CI, with every source of the Python trees required at levels 0, 1 and 2:
  pyclink verify --buildroot /tmp/br -o 0,1,2 --summary-json verify.json

  # An extracted package and an installed application:
  rpm2cpio foo.rpm | cpio -idm -D /tmp/foo && pyclink verify --buildroot /tmp/foo
  pyclink verify --buildroot / /opt/myapp";

/// `pyclink verify`.
#[derive(Args, Debug, Default)]
pub struct VerifyArgs {
    /// Check only these paths inside the root: directories, pycs (with -o: their source's
    /// module), or sources (NAME.py: its pycs); a path named twice counts once [default: the
    /// whole root]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,

    /// The directory that stands for / [default: $RPM_BUILD_ROOT]; may be / itself
    #[arg(long, value_name = "DIR")]
    buildroot: Option<PathBuf>,

    /// Require a pyc at LEVEL for every source pyclink compile would compile (repeat or
    /// comma-separate) [default: level 0 and every level some pyc has, for every source of the
    /// versioned trees and every module with a pyc]
    #[arg(
        short = 'o',
        long = "optimize",
        value_name = "LEVEL",
        value_delimiter = ',',
        allow_negative_numbers = true
    )]
    optimize: Vec<i64>,

    /// Skip sources and directories matching GLOB (repeatable; as for compiling)
    #[arg(short = 'x', long = "exclude", value_name = "GLOB")]
    exclude: Vec<String>,

    /// Use PATH for version X.Y (repeatable; as for compiling)
    #[arg(long = "interpreter", value_name = "[X.Y=]PATH")]
    interpreters: Vec<String>,

    /// With -o: the version(s) dist-packages and PATHs outside versioned trees need pycs for
    #[arg(long = "python-version", value_name = "X.Y")]
    python_versions: Vec<String>,

    /// Accept pycs outside __pycache__ that have no source (a sourceless distribution): their
    /// header and code file names are still checked
    #[arg(long)]
    allow_sourceless: bool,

    /// The pycs were written with --no-link: identical levels may be separate files
    #[arg(long)]
    no_link: bool,

    /// Check N sources at once (one interpreter each), 0 to 1024 [default, and 0: the number
    /// of CPUs]
    // A string, checked as compile's -j is: `-j -1` gets the same message, and the JSON.
    #[arg(short = 'j', long, value_name = "N", allow_negative_numbers = true)]
    jobs: Option<String>,

    /// Seconds one source may take in the checker before it is restarted and the source
    /// retried once, from 0.001 to 86400 [default: 300]
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    timeout: Option<f64>,

    /// Write the figures and every problem as JSON to FILE (`-`: stdout, the report then goes
    /// to stderr)
    #[arg(long, value_name = "FILE")]
    summary_json: Option<PathBuf>,

    /// Leave out the summary line; problems and warnings are still printed
    #[arg(short, long)]
    quiet: bool,

    /// Every problem (not 20 per kind), and the interpreters used
    #[arg(short, long, action = ArgAction::Count)]
    verbose: u8,
}

/// `pyclink verify`, resolved.
#[derive(Debug)]
pub struct VerifyInvocation {
    pub buildroot: PathBuf,
    pub options: super::Options,
    pub summary_json: Option<PathBuf>,
    pub quiet: bool,
    pub verbose: u8,
}

impl VerifyArgs {
    pub fn into_invocation(self) -> Result<Invocation, UsageError> {
        let buildroot = existing_buildroot(self.buildroot)?;
        let mut paths = paths_in_root(&buildroot, &self.paths)?;
        // One file named twice (`/usr/x.py` and `%{buildroot}/usr/x.py`) is checked once, as
        // compiling compiles it once.
        let mut seen = std::collections::BTreeSet::new();
        paths.retain(|p| seen.insert(p.clone()));
        let required = if self.optimize.is_empty() {
            None
        } else {
            Some(levels_from(&self.optimize, &Origin::Flag("--optimize"))?)
        };
        let mut interpreters = BTreeMap::new();
        let unversioned_interpreters = interpreter_flags(&self.interpreters, &mut interpreters)?;
        let python_versions =
            versions_from(&self.python_versions, &Origin::Flag("--python-version"))?;
        let timeout = timeout_from(self.timeout.map(|t| (t, Origin::Flag("--timeout"))))?;
        Ok(Invocation::Verify(VerifyInvocation {
            buildroot,
            options: super::Options {
                paths,
                required,
                excludes: self.exclude,
                python_versions,
                interpreters,
                unversioned_interpreters,
                allow_sourceless: self.allow_sourceless,
                link: !self.no_link,
                jobs: jobs_or_cpus(jobs_arg(self.jobs)?)?,
                timeout,
            },
            summary_json: self.summary_json,
            quiet: self.quiet,
            verbose: self.verbose,
        }))
    }
}
