//! Helpers shared by the integration tests: real interpreters, the shared build-root maker and
//! the independent pyc auditor. Nothing here is mocked.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/tools` next to the repository, or `$PYCLINK_SHARED_TOOLS`.
pub fn tools_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PYCLINK_SHARED_TOOLS") {
        return PathBuf::from(d);
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools");
    assert!(
        d.join("pyc-audit").exists(),
        "the shared test tools are missing: expected {} (or set PYCLINK_SHARED_TOOLS)",
        d.display()
    );
    d
}

pub fn pyclink() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pyclink"));
    c.env_remove("SOURCE_DATE_EPOCH")
        .env_remove("RPM_BUILD_ROOT")
        .env_remove("PYCLINK_CONFIG");
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

/// The interpreter for X.Y as the shared tools find it: `pyenv prefix X.Y`, then PATH.
pub fn find_python(version: &str) -> Option<PathBuf> {
    if let Ok(out) = Command::new("pyenv").args(["prefix", version]).output() {
        if out.status.success() {
            let prefix = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let p = Path::new(&prefix)
                .join("bin")
                .join(format!("python{version}"));
            if p.exists() {
                return Some(p);
            }
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| !d.ends_with("shims"))
        .map(|d| d.join(format!("python{version}")))
        .find(|p| p.exists())
}

/// The interpreter for X.Y, or None after printing why the caller skips.
pub fn python_or_skip(version: &str, test: &str) -> Option<PathBuf> {
    let p = find_python(version);
    if p.is_none() {
        println!("SKIP {test}: Python {version} is not installed here (neither `pyenv prefix {version}` nor python{version} on PATH)");
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

/// `make-buildroot [--small] DEST VERSION...`
pub fn make_buildroot(dest: &Path, versions: &[&str], small: bool) {
    let mut c = Command::new(tools_dir().join("make-buildroot"));
    if small {
        c.arg("--small");
    }
    c.arg(dest).args(versions);
    let out = run(&mut c);
    assert!(out.status.success(), "make-buildroot failed");
}

/// Run pyc-audit; returns (ok, full output).
pub fn audit(root: &Path, expects: &[String], extra: &[&str]) -> (bool, String) {
    // Run the driver with the host's interpreter directly: through the pyenv shim its
    // `#!/usr/bin/env python3` costs a bash start-up per call.
    let mut c = match find_python(&host_python3_version()) {
        Some(py) => {
            let mut c = Command::new(py);
            c.arg(tools_dir().join("pyc-audit"));
            c
        }
        None => Command::new(tools_dir().join("pyc-audit")),
    };
    c.arg(root);
    for e in expects {
        c.args(["--expect", e]);
    }
    c.args(extra);
    let out = run(&mut c);
    let text = stdout(&out) + &stderr(&out);
    let last = text.lines().last().unwrap_or("").to_string();
    (out.status.success() && last.starts_with("OK"), text)
}

pub fn assert_audit_ok(root: &Path, expects: &[String], extra: &[&str]) {
    let (ok, text) = audit(root, expects, extra);
    assert!(ok, "pyc-audit did not print OK:\n{text}");
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
