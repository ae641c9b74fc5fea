//! `pyclink verify`'s command line (wired into `cli` as a subcommand): the shared flags of
//! `cli::common`, with what they mean when verifying, and verify's own.

use std::path::PathBuf;

use clap::Args;

use crate::cli::common::{
    help, ExcludeArgs, InterpreterArgs, JobsArgs, JsonArgs, LevelArgs, LinkArgs, OutputArgs,
    RootArgs, TimeoutArgs, UsageError,
};
use crate::config::Config;

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
#[command(
    mut_arg("paths", help("Check only these paths inside the root: directories, pycs (with -o: \
        their source's module), or sources (NAME.py: its pycs); a path named twice counts once \
        [default: the whole root]")),
    mut_arg("buildroot", help("The directory that stands for / [default: $RPM_BUILD_ROOT]; may \
        be / itself")),
    mut_arg("optimize", help("Require a pyc at LEVEL for every source pyclink compile would \
        compile (repeat or comma-separate) [default: level 0 and every level some pyc has, for \
        every source of the versioned trees and every module with a pyc]")),
    mut_arg("exclude", help("Skip sources and directories matching GLOB (repeatable; as for \
        compiling)")),
    mut_arg("interpreters", help("Use PATH for version X.Y (repeatable; as for compiling)")),
    mut_arg("python_versions", help("With -o: the version(s) dist-packages and PATHs outside \
        versioned trees need pycs for")),
    // `mut_arg` moves an argument to the end of the list, whose order the bash completion
    // keeps: so every flag is named here, in its place, verify's own too.
    mut_arg("allow_sourceless", |arg| arg),
    mut_arg("no_link", help("The pycs were written with --no-link: identical levels may be \
        separate files")),
    mut_arg("jobs", help("Check N sources at once (one interpreter each), 0 to 1024 [default, \
        and 0: the number of CPUs]")),
    mut_arg("timeout", help("Seconds one source may take in the checker before it is restarted \
        and the source retried once, from 0.001 to 86400 [default: 300]")),
    mut_arg("summary_json", help("Write the figures and every problem as JSON to FILE (`-`: \
        stdout, the report then goes to stderr)")),
    mut_arg("quiet", help("Leave out the summary line; problems and warnings are still \
        printed")),
    mut_arg("verbose", help("Every problem (not 20 per kind), and the interpreters used"))
)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub(crate) root: RootArgs,
    #[command(flatten)]
    levels: LevelArgs,
    #[command(flatten)]
    exclude: ExcludeArgs,
    #[command(flatten)]
    interpreters: InterpreterArgs,

    /// Accept pycs outside __pycache__ that have no source (a sourceless distribution): their
    /// header and code file names are still checked
    #[arg(long)]
    allow_sourceless: bool,

    #[command(flatten)]
    link: LinkArgs,
    #[command(flatten)]
    jobs: JobsArgs,
    #[command(flatten)]
    timeout: TimeoutArgs,
    #[command(flatten)]
    pub(crate) json: JsonArgs,
    #[command(flatten)]
    output: OutputArgs,
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
    pub fn into_invocation(self) -> Result<VerifyInvocation, UsageError> {
        // verify takes no config file: it checks what was built, whatever built it.
        let none = Config::default();
        let (buildroot, paths) = self.root.readable()?;
        let required = self.levels.levels(&none)?;
        let interpreters = self.interpreters.resolve(&none)?;
        let timeout = self.timeout.timeout(&none)?;
        let jobs = self.jobs.jobs(&none)?;
        let output = self.output.resolve(&none)?;
        Ok(VerifyInvocation {
            buildroot,
            options: super::Options {
                paths,
                required,
                excludes: self.exclude.globs(&none),
                python_versions: interpreters.python_versions,
                interpreters: interpreters.versioned,
                unversioned_interpreters: interpreters.unversioned,
                allow_sourceless: self.allow_sourceless,
                link: self.link.link(&none),
                jobs,
                timeout,
            },
            summary_json: self.json.path(&none),
            quiet: output.quiet,
            verbose: output.verbose,
        })
    }
}
