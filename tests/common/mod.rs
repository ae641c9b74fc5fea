//! Helpers shared by the integration tests: real interpreters, build roots made from their
//! stdlibs, and the pyc check (`pyclink verify`, with pyc-audit where it exists). Nothing here
//! is mocked.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod doc_blocks;
pub mod fsroot;

/// `$PYCLINK_SHARED_TOOLS`, or `../shared/tools` next to the repository, if it holds
/// pyc-audit: the external oracle, run in addition to `pyclink verify` where it exists. None
/// (and the cross-check skipped) where it does not.
pub fn shared_tools_dir() -> Option<PathBuf> {
    let d = match std::env::var_os("PYCLINK_SHARED_TOOLS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools"),
    };
    d.join("pyc-audit").is_file().then_some(d)
}

/// pyclink, with the project's interpreter cache on PATH (after everything else), so that it
/// finds those interpreters as it finds the host's.
pub fn pyclink() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pyclink"));
    c.env_remove("SOURCE_DATE_EPOCH")
        .env_remove("RPM_BUILD_ROOT")
        .env_remove("PYCLINK_CONFIG");
    if let Some(dir) = interpreters_dir() {
        let mut paths: Vec<PathBuf> =
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
        paths.push(dir.join("bin"));
        c.env("PATH", std::env::join_paths(paths).unwrap());
    }
    fsroot::apply(&mut c);
    c
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    eprintln!(
        "$ {cmd:?}\n  -> {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Where `scripts/fetch-interpreters` keeps the Pythons it takes from Debian unstable's binary
/// packages (CPython 3.14 and 3.15, PyPy 3.11): `$PYCLINK_INTERPRETERS`, else
/// `~/.cache/pyclink/interpreters` (`$XDG_CACHE_HOME` if set). Its `bin` holds one command per
/// version.
pub fn interpreters_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("PYCLINK_INTERPRETERS") {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("XDG_CACHE_HOME") {
            Some(c) => PathBuf::from(c).join("pyclink/interpreters"),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/pyclink/interpreters"),
        },
    };
    dir.join("bin").is_dir().then_some(dir)
}

/// The command of a version as the tests name it: `3.12` → `python3.12`, `pypy3.11` as is.
pub fn command_of(version: &str) -> String {
    if version.starts_with("pypy") {
        version.to_string()
    } else {
        format!("python{version}")
    }
}

/// Where [`make_buildroot`] puts a version's stdlib: Fedora's `usr/lib64/pythonX.Y` for
/// CPython, Debian's `usr/lib/pypyX.Y` for PyPy.
pub fn stdlib_dir(version: &str) -> String {
    if version.starts_with("pypy") {
        format!("usr/lib/{version}")
    } else {
        format!("usr/lib64/python{version}")
    }
}

/// The interpreter for a version (`3.12`, `3.14t`, `pypy3.11`): `pyenv prefix X.Y`, then PATH,
/// then the project's own cache of Debian unstable's builds ([`interpreters_dir`]); for PyPy
/// also Debian's plain `pypy3` on PATH when it is that version.
pub fn find_python(version: &str) -> Option<PathBuf> {
    let command = command_of(version);
    if !version.starts_with("pypy") {
        if let Ok(out) = Command::new("pyenv").args(["prefix", version]).output() {
            if out.status.success() {
                let prefix = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let p = Path::new(&prefix).join("bin").join(&command);
                if p.exists() {
                    return Some(p);
                }
            }
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = |name: &str| {
        std::env::split_paths(&path)
            .filter(|d| !d.ends_with("shims"))
            .map(|d| d.join(name))
            .find(|p| p.exists())
    };
    if let Some(p) = on_path(&command) {
        return Some(p);
    }
    if let Some(p) = interpreters_dir()
        .map(|d| d.join("bin").join(&command))
        .filter(|p| p.exists())
    {
        return Some(p);
    }
    let pypy3 = on_path("pypy3").filter(|_| version.starts_with("pypy3."))?;
    let out = Command::new(&pypy3)
        .args([
            "-c",
            "import sys; print('pypy%d.%d' % sys.version_info[:2])",
        ])
        .output()
        .ok()?;
    (String::from_utf8_lossy(&out.stdout).trim() == version).then_some(pypy3)
}

/// The interpreter for a version, or None after printing why the caller skips.
pub fn python_or_skip(version: &str, test: &str) -> Option<PathBuf> {
    let p = find_python(version);
    if p.is_none() {
        let command = command_of(version);
        let why = if version.starts_with("3.14")
            || version.starts_with("3.15")
            || version == "pypy3.11"
        {
            "; scripts/fetch-interpreters gets it from Debian unstable"
        } else {
            ""
        };
        println!(
            "SKIP {test}: {command} is not installed here (not in pyenv, on PATH or in the \
             project's interpreter cache{why})"
        );
    }
    p
}

/// The host's `python3` version (X.Y); this one is always tested, never skipped.
pub fn host_python3_version() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .expect("the host must have python3");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Which sources of an interpreter a test root holds.
#[derive(Clone, Copy, Debug)]
pub enum Corpus<'a> {
    /// The stdlib's top-level modules and its json, email and asyncio packages.
    Small,
    /// The whole stdlib, its test suite included; no site-packages.
    Stdlib,
    /// The whole stdlib but its test suite, the top-level `test` package (which Debian ships
    /// apart, in libpython3.X-testsuite; the packages' own `tests` directories, such as
    /// `ctypes/test`, stay); no site-packages.
    StdlibWithoutTests,
    /// The whole stdlib and these top-level entries of site-packages, those that are installed.
    StdlibAnd(&'a [&'a str]),
    /// The whole stdlib and all of site-packages (on some hosts tens of thousands of sources).
    Full,
}

/// Scratch space for the tests that check bytes only (whole stdlibs compiled several times):
/// a directory in `/dev/shm` where that is a writable tmpfs, else in `$TMPDIR`. The filesystem
/// does not enter a pyc's bytes, and on a disk every file those tests create and delete costs
/// the kernel's allocator (on a journal-less ext4 each create after a mass deletion scans the
/// recently freed inodes, docs/performance.md), which made these tests a tenth slower; the
/// tests of what pyclink does to a filesystem (safety, compile, cache, the packages) keep to
/// `$TMPDIR`.
pub fn bytes_scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    // Two such tests at once hold about a gigabyte; a small /dev/shm (a container's 64 MiB)
    // would fail them with ENOSPC, so it is used only with 2 GiB free.
    // PYCLINK_TEST_NO_SHM=1 keeps them on $TMPDIR.
    // statfs's field types differ between architectures, hence the casts.
    #[allow(clippy::unnecessary_cast)]
    let roomy_tmpfs = rustix::fs::statfs(shm).is_ok_and(|s| {
        s.f_type as u64 == 0x0102_1994
            && (s.f_bavail as u64).saturating_mul(s.f_bsize as u64) >= 2 << 30
    });
    if roomy_tmpfs && std::env::var_os("PYCLINK_TEST_NO_SHM").is_none() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("pyclink-test-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// A realistic build root made from installed interpreters: for each X.Y, its stdlib's sources
/// as `DEST/usr/lib64/pythonX.Y` (without `__pycache__`, pycs, site-packages, lib-dynload and
/// config-*), what `corpus` takes of its site-packages as `DEST/usr/lib/pythonX.Y/site-packages`,
/// and `DEST/usr/bin/pythonX.Y` linked to the interpreter. Modes and mtimes are kept.
/// Panics if a version is not installed (callers skip first, see `python_or_skip`).
pub fn make_buildroot(dest: &Path, versions: &[&str], corpus: Corpus) {
    for v in versions {
        let python = find_python(v).unwrap_or_else(|| panic!("Python {v} is not installed"));
        let out = Command::new(&python)
            .args(["-I", "-S", "-c"])
            .arg(
                "import os, sys, sysconfig\n\
                 print(os.path.realpath(sys.executable))\n\
                 print(sysconfig.get_path('stdlib'))\n\
                 print(sysconfig.get_path('purelib'))",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot ask {} for its paths",
            python.display()
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let (exe, stdlib, purelib) = (
            PathBuf::from(lines.next().unwrap()),
            PathBuf::from(lines.next().unwrap()),
            PathBuf::from(lines.next().unwrap()),
        );
        // CPython's stdlib as Fedora's lib64 tree; PyPy's where Debian puts it.
        let command = command_of(v);
        let lib64 = dest.join(stdlib_dir(v));
        let skip = |rel: &Path| {
            let first = rel
                .components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned());
            let first = first.as_deref().unwrap_or("");
            first == "site-packages" || first == "lib-dynload" || first.starts_with("config-")
        };
        if let Corpus::Small = corpus {
            copy_tree(&stdlib, &lib64, &|rel: &Path| {
                let top = rel.components().count() == 1;
                let pkg = ["json", "email", "asyncio"]
                    .iter()
                    .any(|p| rel.starts_with(p));
                !(top || pkg) || skip(rel)
            });
        } else if let Corpus::StdlibWithoutTests = corpus {
            copy_tree(&stdlib, &lib64, &|rel: &Path| {
                rel.starts_with("test") || skip(rel)
            });
        } else {
            copy_tree(&stdlib, &lib64, &skip);
        }
        let site = dest.join(format!("usr/lib/{command}/site-packages"));
        match corpus {
            Corpus::Small | Corpus::Stdlib | Corpus::StdlibWithoutTests => {}
            Corpus::StdlibAnd(entries) => {
                for e in entries.iter().filter(|e| purelib.join(e).is_dir()) {
                    copy_tree(&purelib.join(e), &site.join(e), &|_: &Path| false);
                }
            }
            Corpus::Full => {
                if purelib.is_dir() && std::fs::read_dir(&purelib).unwrap().next().is_some() {
                    copy_tree(&purelib, &site, &|_: &Path| false);
                }
            }
        }
        let bin = dest.join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let link = bin.join(&command);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&exe, &link).unwrap();
    }
}

/// Copy the regular files and symlinks under `from` to `to` (except `__pycache__` and pycs, and
/// what `skip` says, given the path relative to `from`), keeping modes and mtimes.
fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) {
    let mut it = walkdir::WalkDir::new(from).follow_links(false).into_iter();
    while let Some(entry) = it.next() {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(from).unwrap();
        let ft = entry.file_type();
        if entry.depth() > 0
            && (entry.file_name() == "__pycache__"
                || entry.path().extension().is_some_and(|x| x == "pyc")
                || skip(rel))
        {
            if ft.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        let dest = to.join(rel);
        let meta = entry.metadata().unwrap();
        if ft.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &dest).unwrap();
        } else if ft.is_file() {
            std::fs::copy(entry.path(), &dest).unwrap();
            let f = std::fs::File::options().write(true).open(&dest).unwrap();
            f.set_modified(meta.modified().unwrap()).unwrap();
        }
    }
    // Directory mtimes last: copying into a directory changes its mtime.
    for entry in walkdir::WalkDir::new(to).contents_first(true) {
        let entry = entry.unwrap();
        if entry.file_type().is_dir() {
            let rel = entry.path().strip_prefix(to).unwrap();
            if let Ok(m) = std::fs::metadata(from.join(rel)) {
                let _ = filetime_dir(entry.path(), m.modified().unwrap());
            }
        }
    }
}

fn filetime_dir(dir: &Path, t: std::time::SystemTime) -> std::io::Result<()> {
    std::fs::File::open(dir)?.set_modified(t)
}

/// Check the pycs of a root the way pyc-audit's command line puts it: each `X.Y:DIR[,DIR...]`
/// of `expects` says every source pyclink compiles under those directories has a right pyc for
/// X.Y at every level. `extra` takes pyc-audit's options: `--levels L,...` (default 0,1,2),
/// `--no-links`, `--python X.Y=PATH`, `--jobs N`, `--json FILE` (pyc-audit's only).
///
/// The required check is `pyclink verify` (the binary under test), once per version:
/// `verify --buildroot ROOT -o LEVELS --python-version X.Y [--no-link] [--interpreter X.Y=PATH]
/// DIR...`; it must exit 0 and have compiled at least one source (pyc-audit's "no sources
/// found"). Where pyc-audit exists (see [`shared_tools_dir`]) it runs as well and must print OK.
/// Returns (both passed, the output of each).
pub fn audit(root: &Path, expects: &[String], extra: &[&str]) -> (bool, String) {
    let (ok, mut text) = verify_expects(root, expects, extra);
    match pyc_audit(root, expects, extra) {
        Some((audit_ok, audit_text)) => {
            text += &format!("== pyc-audit ({})\n{audit_text}", verdict(audit_ok));
            (ok && audit_ok, text)
        }
        None => {
            text += "== pyc-audit: not found (PYCLINK_SHARED_TOOLS, ../shared/tools) or not for \
                     PyPy; skipped\n";
            (ok, text)
        }
    }
}

pub fn assert_audit_ok(root: &Path, expects: &[String], extra: &[&str]) {
    let (ok, text) = audit(root, expects, extra);
    assert!(ok, "the pycs are not right:\n{text}");
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "OK"
    } else {
        "FAILED"
    }
}

/// pyc-audit's options, for `pyclink verify`.
#[derive(Debug)]
struct AuditOptions {
    levels: String,
    links: bool,
    interpreters: Vec<String>,
    jobs: Option<String>,
}

fn audit_options(extra: &[&str]) -> AuditOptions {
    let mut o = AuditOptions {
        levels: "0,1,2".into(),
        links: true,
        interpreters: Vec::new(),
        jobs: None,
    };
    let mut it = extra.iter();
    while let Some(&arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().map(|v| v.to_string()))
                .unwrap_or_else(|| panic!("pyc-audit option {flag} needs a value"))
        };
        match flag {
            "--levels" => o.levels = value(),
            "--no-links" => o.links = false,
            "--python" => o.interpreters.push(value()),
            "--jobs" => o.jobs = Some(value()),
            "--json" => {
                value();
            }
            _ => panic!("audit(): pyc-audit option {arg} has no pyclink verify equivalent"),
        }
    }
    o
}

/// `pyclink verify` for each version of `expects` (pyc-audit's `--expect X.Y:DIR,...`).
fn verify_expects(root: &Path, expects: &[String], extra: &[&str]) -> (bool, String) {
    let o = audit_options(extra);
    // X.Y -> DIRs, in order, as pyc-audit merges repeated --expect of one version.
    let mut by_version: Vec<(String, Vec<String>)> = Vec::new();
    for e in expects {
        let (version, dirs) = e
            .split_once(':')
            .unwrap_or_else(|| panic!("bad expect {e:?} (want X.Y:DIR[,DIR...])"));
        let at = match by_version.iter().position(|(v, _)| v == version) {
            Some(at) => at,
            None => {
                by_version.push((version.to_string(), Vec::new()));
                by_version.len() - 1
            }
        };
        for d in dirs.split(',').map(|d| d.trim().trim_matches('/')) {
            if !d.is_empty() && !by_version[at].1.iter().any(|x| x == d) {
                by_version[at].1.push(d.to_string());
            }
        }
    }
    assert!(!by_version.is_empty(), "audit(): nothing expected");
    let mut ok = true;
    let mut text = String::new();
    let t = tempfile::tempdir().unwrap();
    for (i, (version, dirs)) in by_version.iter().enumerate() {
        let json = t.path().join(format!("verify-{i}.json"));
        let mut c = pyclink();
        c.arg("verify")
            .arg("--buildroot")
            .arg(root)
            .args(["-o", &o.levels, "--python-version", version])
            .arg("--summary-json")
            .arg(&json);
        if !o.links {
            c.arg("--no-link");
        }
        for spec in &o.interpreters {
            c.args(["--interpreter", spec]);
        }
        if let Some(j) = &o.jobs {
            c.args(["-j", j]);
        }
        // Relative PATHs are taken inside the root.
        c.args(dirs);
        let out = run(&mut c);
        let sources: u64 = std::fs::read_to_string(&json)
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| {
                v["versions"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|v| v["sources"].as_u64()).sum())
            })
            .unwrap_or(0);
        let mut this_ok = out.status.success();
        let mut why = String::new();
        if this_ok && sources == 0 {
            this_ok = false;
            why = format!("no sources found under {}\n", dirs.join(", "));
        }
        ok &= this_ok;
        text += &format!(
            "== pyclink verify, {version}: {} ({})\n{}{}{why}",
            dirs.join(", "),
            verdict(this_ok),
            stdout(&out),
            stderr(&out)
        );
    }
    (ok, text)
}

/// pyc-audit alone, where it exists: (printed OK, its output); None where it is not found.
pub fn pyc_audit(root: &Path, expects: &[String], extra: &[&str]) -> Option<(bool, String)> {
    let tools = shared_tools_dir()?;
    // pyc-audit knows CPython only; `pyclink verify` alone checks PyPy's pycs.
    if expects.iter().any(|e| e.starts_with("pypy")) {
        return None;
    }
    // Run the driver with the host's interpreter directly: through the pyenv shim its
    // `#!/usr/bin/env python3` costs a bash start-up per call.
    let mut c = match find_python(&host_python3_version()) {
        Some(py) => {
            let mut c = Command::new(py);
            c.arg(tools.join("pyc-audit"));
            c
        }
        None => Command::new(tools.join("pyc-audit")),
    };
    c.arg(root);
    for e in expects {
        c.args(["--expect", e]);
        // It finds pyenv's interpreters itself; name those of the project's cache.
        let version = e.split_once(':').map_or(e.as_str(), |(v, _)| v);
        let named = extra.iter().any(|x| x.starts_with(&format!("{version}=")));
        if let Some(py) = find_python(version).filter(|_| !named) {
            c.arg("--python").arg(format!("{version}={}", py.display()));
        }
    }
    c.args(extra);
    let out = run(&mut c);
    let text = stdout(&out) + &stderr(&out);
    let last = text.lines().last().unwrap_or("").to_string();
    Some((out.status.success() && last.starts_with("OK"), text))
}

/// Write `files` (path relative to `root`, content) creating directories.
pub fn write_files(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
}

pub fn ino(p: &Path) -> u64 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .ino()
}

pub fn mtime_ns(p: &Path) -> i128 {
    let m = std::fs::metadata(p).unwrap();
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// The cache tag of an interpreter (`cpython-312`).
pub fn cache_tag(python: &Path) -> String {
    let out = Command::new(python)
        .args(["-c", "import sys; print(sys.implementation.cache_tag)"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The three pyc paths of `dir/NAME.py` for `tag`.
pub fn pycs(dir: &Path, name: &str, tag: &str) -> [PathBuf; 3] {
    let c = dir.join("__pycache__");
    [
        c.join(format!("{name}.{tag}.pyc")),
        c.join(format!("{name}.{tag}.opt-1.pyc")),
        c.join(format!("{name}.{tag}.opt-2.pyc")),
    ]
}

/// Path, inode, mtime (ns) and size: what must not change where nothing is written.
pub type EntryState = (PathBuf, u64, i128, u64);

fn entry_state(path: &Path, m: &std::fs::Metadata) -> EntryState {
    (
        path.to_path_buf(),
        m.ino(),
        m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        m.len(),
    )
}

/// Every regular file under `dir` (recursively) with its state: a snapshot to compare.
pub fn snapshot(dir: &Path) -> Vec<EntryState> {
    tree_state_where(dir, |m| m.is_file())
}

/// Every entry (files, dirs, links) under `dir`, with its state: proves that nothing was
/// created, removed or modified there.
pub fn tree_state(dir: &Path) -> Vec<EntryState> {
    tree_state_where(dir, |_| true)
}

fn tree_state_where(dir: &Path, keep: impl Fn(&std::fs::Metadata) -> bool) -> Vec<EntryState> {
    let mut v: Vec<_> = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let m = std::fs::symlink_metadata(e.path()).ok()?;
            keep(&m).then(|| entry_state(e.path(), &m))
        })
        .collect();
    v.sort();
    v
}

/// The bytes of every pyc under `root`, by path relative to it.
pub fn pyc_contents(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "pyc"))
        .map(|e| {
            (
                e.path().strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// The levels of one source whose pycs are byte-identical are one inode, and levels that
/// differ are not: the linking half of the audit, read from the tree alone (no compile). `pycs`
/// are `root`'s, as [`pyc_contents`] gives them. Returns how many pycs share an inode.
pub fn assert_identical_levels_linked(
    root: &Path,
    pycs: &std::collections::BTreeMap<PathBuf, Vec<u8>>,
) -> usize {
    // `NAME.TAG.pyc`, `NAME.TAG.opt-1.pyc`, `NAME.TAG.opt-2.pyc` of one source share a key.
    let mut by_source: std::collections::BTreeMap<String, Vec<&PathBuf>> = Default::default();
    for p in pycs.keys() {
        let s = p.to_string_lossy();
        let key = s
            .replace(".opt-1.pyc", ".pyc")
            .replace(".opt-2.pyc", ".pyc");
        by_source.entry(key).or_default().push(p);
    }
    let mut shared = 0;
    for levels in by_source.values() {
        for (i, a) in levels.iter().enumerate() {
            for b in &levels[i + 1..] {
                let same_bytes = pycs[*a] == pycs[*b];
                let same_inode = ino(&root.join(a)) == ino(&root.join(b));
                assert_eq!(
                    same_bytes,
                    same_inode,
                    "{} and {}: identical bytes {same_bytes}, one inode {same_inode}",
                    a.display(),
                    b.display()
                );
                shared += usize::from(same_inode);
            }
        }
    }
    shared
}

/// Leftover temp files anywhere under `dir`.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".pyclink-"))
        .map(|e| e.path().to_path_buf())
        .collect()
}

/// The host's python3: always present, always tested.
pub struct Host {
    pub version: String,
    pub python: PathBuf,
    pub tag: String,
}

pub fn host() -> Host {
    let version = host_python3_version();
    let python = find_python(&version).expect("host python3 findable");
    let tag = cache_tag(&python);
    Host {
        version,
        python,
        tag,
    }
}

/// Every pyc under `root` is whole: long enough, the interpreter's magic, valid PEP 552
/// flags, and a body that unmarshals. Returns the pycs that are not (empty = all whole).
pub fn partial_pycs(python: &Path, root: &Path) -> Vec<String> {
    partial_pycs_in(python, &[root])
}

/// [`partial_pycs`] over several directories, with one interpreter start.
pub fn partial_pycs_in(python: &Path, dirs: &[&Path]) -> Vec<String> {
    const CHECK: &str = r#"
import marshal, os, sys, importlib.util
magic = importlib.util.MAGIC_NUMBER
hlen = 16 if sys.version_info >= (3, 7) else 12
bad = []
for d, dirs, files in (w for top in sys.argv[1:] for w in os.walk(top)):
    if os.path.basename(d) != '__pycache__':
        continue
    for f in files:
        if not f.endswith('.pyc'):
            continue
        p = os.path.join(d, f)
        try:
            data = open(p, 'rb').read()
            ok = len(data) > hlen and data[:4] == magic
            if ok and hlen == 16:
                ok = int.from_bytes(data[4:8], 'little') in (0, 1, 3)
            if ok:
                marshal.loads(data[hlen:])
        except Exception as e:
            ok = False
        if not ok:
            bad.append(p)
print(chr(10).join(bad))
"#;
    let out = Command::new(python)
        .args(["-c", CHECK])
        .args(dirs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wholeness check failed to run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// A file that `make install` laid out: a regular file and its permission bits, or a symlink
/// and its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Installed {
    File(u32),
    Link(PathBuf),
}

/// Run the repository's `make TARGETS DESTDIR=dest VARS...` with this build's binary (no cargo
/// run) and a private directory for the generated files, and list what it laid out under `dest`:
/// path (absolute, as installed) to kind. Directories are not listed.
pub fn make_install(
    dest: &Path,
    targets: &[&str],
    vars: &[(&str, &str)],
) -> std::collections::BTreeMap<String, Installed> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let gen = tempfile::tempdir().unwrap();
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(repo)
        .args(targets)
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("PYCLINK_BIN={}", env!("CARGO_BIN_EXE_pyclink")))
        .arg(format!("TARGET_DIR={}", gen.path().display()))
        .args(vars.iter().map(|(k, v)| format!("{k}={v}")))
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS");
    let out = run(&mut c);
    assert!(
        out.status.success(),
        "make {targets:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    installed_files(dest)
}

/// Every file and symlink under `dest`, as in [`make_install`].
pub fn installed_files(dest: &Path) -> std::collections::BTreeMap<String, Installed> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = std::collections::BTreeMap::new();
    for e in walkdir::WalkDir::new(dest).sort_by_file_name() {
        let e = e.unwrap();
        let path = format!("/{}", e.path().strip_prefix(dest).unwrap().display());
        let kind = if e.path_is_symlink() {
            Installed::Link(std::fs::read_link(e.path()).unwrap())
        } else if e.file_type().is_file() {
            Installed::File(e.metadata().unwrap().permissions().mode() & 0o7777)
        } else {
            continue;
        };
        files.insert(path, kind);
    }
    files
}

/// Fedora's add-determinism (`add-det`): on PATH, or where `cargo install` puts it.
pub fn add_det() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join("add-det"))
        .find(|p| p.is_file())
}

/// Rewrite every pyc under `root` in add-determinism's normal form, as Fedora's
/// `%__os_install_post` does: with add-det itself where it is installed (an independent
/// implementation), else with `pyclink normalize`. Returns the tool used.
pub fn normalize_like_fedora(root: &Path) -> &'static str {
    if let Some(add_det) = add_det() {
        let mut out = run(Command::new(&add_det)
            .args(["--handler", "pyc", "-j2"])
            .arg(root));
        // add-det 0.7.3's walk can meet its own workers' temp files (`.#.NAME.pycXXXXXX`),
        // which are gone by the time it opens them ("No such file or directory", reported on
        // stdout); the pass is idempotent, so a second one finishes the files the first left.
        let raced = |out: &Output| format!("{}{}", stdout(out), stderr(out)).contains("/.#.");
        if !out.status.success() && raced(&out) {
            out = run(Command::new(&add_det)
                .args(["--handler", "pyc", "-j2"])
                .arg(root));
        }
        assert!(out.status.success(), "add-det failed: {}", stderr(&out));
        "add-det"
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "add-det is missing (.ci/run installs it with cargo install add-determinism)"
        );
        let out = run(pyclink()
            .args(["normalize", "--no-link", "--buildroot"])
            .arg(root));
        assert!(
            out.status.success(),
            "pyclink normalize failed: {}",
            stderr(&out)
        );
        "pyclink normalize (add-det is not installed)"
    }
}

/// Where pyclink's own packages are built (tests/deb.rs's dpkg-buildpackage, tests/rpm.rs's
/// rpmbuild of pyclink.spec): one cargo target directory under cargo's test tmpdir, held
/// exclusively for one package build at a time. The crates pyclink depends on are compiled once
/// per checkout, as a builder's compiler cache would keep them; pyclink itself is compiled from
/// the package's own source tree every time (its path differs, so cargo rebuilds it). The lock
/// keeps one build from replacing the binary another is installing.
pub struct PackageTarget {
    pub dir: PathBuf,
    _lock: std::fs::File,
}

impl PackageTarget {
    /// Have the package build `c` (rpmbuild, dpkg-buildpackage) compile into this target, and
    /// without link-time optimization: the release profile's thin LTO costs a sixth of the
    /// build from nothing (20 s of CPU) and changes nothing these tests check, which are the
    /// package's contents and its macros and addon; the suite's own binary is built with it.
    pub fn apply<'c>(&self, c: &'c mut Command) -> &'c mut Command {
        c.env("CARGO_TARGET_DIR", &self.dir)
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
    }
}

pub fn package_cargo_target() -> PackageTarget {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(tmp).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(tmp.join("package-cargo-target.lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    PackageTarget {
        dir: tmp.join("package-cargo-target"),
        _lock: lock,
    }
}

/// The uid the unprivileged-user tests run pyclink as.
pub const NOBODY: u32 = 65534;

/// `setpriv` running `program` as `uid` (its gid the same, no other groups).
pub fn as_uid(uid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
        .args(["--clear-groups", "--"])
        .arg(program);
    c
}

/// A python that the unprivileged user can run (pyenv's may live under a private /root).
pub fn python_for(uid: u32, h: &Host) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let mut candidates = vec![h.python.clone()];
    for dir in std::env::split_paths(&path) {
        candidates.push(dir.join(format!("python{}", h.version)));
    }
    candidates.into_iter().find(|p| {
        // Exec'd from a shell already running as that user: setpriv's own exec can reach
        // programs the user itself cannot.
        as_uid(uid, "sh")
            .args(["-c", "exec \"$0\" -c pass"])
            .arg(p)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}
