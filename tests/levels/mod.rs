//! Which optimization levels of a source really are identical, asked of the real interpreters:
//! the oracle that level prediction (`pyclink::predict`) is checked against. Used by
//! `prediction_classes` (hand-written examples) and `prediction_fuzz` (generated programs).
#![allow(dead_code)]

pub mod generate;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{find_python, host_python3_version, python_or_skip};

/// Deep equality of code objects, in Python (3.6+): every attribute, constants recursively and
/// type-exactly (`code.__eq__` ignores some attributes, and `1 == True`).
pub const SAME: &str = r#"
ATTRS = ('co_code', 'co_names', 'co_varnames', 'co_freevars', 'co_cellvars', 'co_flags',
         'co_argcount', 'co_posonlyargcount', 'co_kwonlyargcount', 'co_nlocals',
         'co_stacksize', 'co_firstlineno', 'co_name', 'co_qualname', 'co_filename',
         'co_linetable', 'co_lnotab', 'co_exceptiontable')

def key(x):
    if hasattr(x, 'co_code'):
        return ('code', id(x))
    if type(x) in (tuple, frozenset):
        return (type(x).__name__, tuple(sorted(repr(key(y)) for y in x)))
    return (type(x).__name__, repr(x))

def same(a, b):
    if type(a) is not type(b):
        return False
    if hasattr(a, 'co_code'):
        for attr in ATTRS:
            if attr == 'co_lnotab' and hasattr(a, 'co_linetable'):
                continue
            if getattr(a, attr, None) != getattr(b, attr, None):
                return False
        return same(a.co_consts, b.co_consts)
    if type(a) is tuple:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if type(a) is frozenset:
        return sorted(repr(key(x)) for x in a) == sorted(repr(key(x)) for x in b)
    if type(a) in (float, complex):
        return repr(a) == repr(b)
    return a == b
"#;

/// Compiles each program of a batch file (u32 length + bytes each) from a start index at
/// levels 0, 1 and 2, and answers one line per program: whether adjacent levels are deeply
/// equal ([`SAME`]), or why level 0 does not compile.
const CHECK: &str = r#"
import sys, warnings
warnings.simplefilter('ignore')

def check(src, dfile):
    codes = []
    for level in (0, 1, 2):
        try:
            codes.append(compile(src, dfile, 'exec', dont_inherit=True, optimize=level))
        except Exception as e:
            if level == 0:
                return 'skip ' + type(e).__name__
            codes.append(None)     # compiles at level 0 only: the levels differ
    eq01 = codes[1] is not None and same(codes[0], codes[1])
    eq12 = codes[1] is not None and codes[2] is not None and same(codes[1], codes[2])
    return 'ok %d %d' % (eq01, eq12)

data = open(sys.argv[1], 'rb').read()
start = int(sys.argv[2])
pos = index = 0
while pos < len(data):
    n = int.from_bytes(data[pos:pos + 4], 'little')
    src = data[pos + 4:pos + 4 + n]
    pos += 4 + n
    if index >= start:
        sys.stdout.write('%d %s\n' % (index, check(src, '/usr/lib/python3/site-packages/fuzz.py')))
        sys.stdout.flush()
    index += 1
"#;

/// What an interpreter made of one program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Level 0 does not compile (the exception's type).
    Skipped(String),
    /// The interpreter died or hung on it.
    Crashed,
    /// Levels 0/1 and 1/2 are deeply equal.
    Levels { eq01: bool, eq12: bool },
}

/// An interpreter under test.
#[derive(Clone, Debug)]
pub struct Interpreter {
    pub version: String,
    pub python: PathBuf,
}

/// Every version whose level prediction the version table calls validated (CPython 3.6-3.15,
/// PyPy 3.9 and 3.11) that is found (pyenv, PATH, the project's interpreter cache), and the
/// host's python3, whose absence is an error; a missing version is skipped with a printed
/// reason.
pub fn interpreters(test: &str) -> Vec<Interpreter> {
    let host = host_python3_version();
    let mut versions: Vec<String> = pyclink::python::table::all()
        .into_iter()
        .filter(|f| f.prediction_validated)
        .map(|f| f.version.short())
        .collect();
    if !versions.contains(&host) {
        versions.push(host.clone());
    }
    let mut found = Vec::new();
    for version in versions {
        match find_python(&version) {
            Some(python) => found.push(Interpreter { version, python }),
            None if version == host => panic!("the host's python{host} is not findable"),
            None => {
                python_or_skip(&version, &format!("{test} for {version}"));
            }
        }
    }
    found
}

/// No answer for this long means the interpreter hangs.
const STALL: Duration = Duration::from_secs(60);

/// Check `programs` with one interpreter, in as few processes as it takes: a process that dies
/// or stalls on a program marks it crashed, and a new one goes on after it.
pub fn check_levels(python: &Path, programs: &[Vec<u8>], workdir: &Path) -> Vec<Outcome> {
    static BATCHES: AtomicU64 = AtomicU64::new(0);
    let batch = workdir.join(format!(
        "programs-{}.bin",
        BATCHES.fetch_add(1, Ordering::Relaxed)
    ));
    let mut framed = Vec::new();
    for p in programs {
        framed.extend_from_slice(&u32::try_from(p.len()).unwrap().to_le_bytes());
        framed.extend_from_slice(p);
    }
    std::fs::write(&batch, &framed).unwrap();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; programs.len()];
    let mut start = 0;
    while start < programs.len() {
        let mut child = Command::new(python)
            .args(["-I", "-c", &format!("{SAME}{CHECK}")])
            .arg(&batch)
            .arg(start.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let stdout = child.stdout.take().unwrap();
        let last_answer = Arc::new(AtomicU64::new(0));
        let done = Arc::new(AtomicBool::new(false));
        let began = Instant::now();
        let watchdog = {
            let (last_answer, done) = (last_answer.clone(), done.clone());
            std::thread::spawn(move || loop {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                let quiet =
                    began.elapsed() - Duration::from_millis(last_answer.load(Ordering::Relaxed));
                if done.load(Ordering::Relaxed) || quiet > STALL {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            })
        };
        let mut next = start;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            last_answer.store(began.elapsed().as_millis() as u64, Ordering::Relaxed);
            let mut words = line.split(' ');
            let index: usize = words.next().unwrap().parse().unwrap();
            let outcome = match words.next() {
                Some("skip") => Outcome::Skipped(words.next().unwrap_or("?").to_string()),
                Some("ok") => {
                    let mut bit = || words.next() == Some("1");
                    let eq01 = bit();
                    Outcome::Levels { eq01, eq12: bit() }
                }
                _ => panic!("bad answer from the level driver: {line}"),
            };
            outcomes[index] = Some(outcome);
            next = index + 1;
        }
        done.store(true, Ordering::Relaxed);
        watchdog.join().unwrap();
        if next < programs.len() {
            outcomes[next] = Some(Outcome::Crashed);
            next += 1;
        }
        start = next;
    }
    let _ = std::fs::remove_file(&batch);
    outcomes.into_iter().map(Option::unwrap).collect()
}

/// Printable form of a program, as a Rust byte string literal, to paste into a unit test.
pub fn rust_literal(src: &[u8]) -> String {
    let mut s = String::from("b\"");
    for &c in src {
        match c {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            b'\n' => s.push_str("\\n"),
            b'\r' => s.push_str("\\r"),
            b'\t' => s.push_str("\\t"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

/// The host python3's stdlib sources (without site-packages), in name order; with `max_len`,
/// only those of at most that many bytes.
pub fn host_stdlib_sources(max_len: Option<u64>) -> Vec<Vec<u8>> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('stdlib'))",
        ])
        .output()
        .expect("python3 runs");
    let stdlib = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let corpus: Vec<Vec<u8>> = walkdir::WalkDir::new(stdlib)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.file_name() != "site-packages")
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file() && e.path().extension() == Some("py".as_ref()))
        .filter(|e| match max_len {
            None => true,
            Some(max) => e.metadata().is_ok_and(|m| m.len() <= max),
        })
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    assert!(!corpus.is_empty(), "no stdlib sources found");
    corpus
}
