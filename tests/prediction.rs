//! The safety net for level prediction: for every installed version's full stdlib, compile every
//! source at levels 0, 1 and 2 with the real interpreter and prove that no pair of levels the
//! prediction called identical differs in code. Prediction may be conservative, never wrong.
//! Each test prints its hit rate (compilations saved) and what the scan cost.

mod common;
use common::*;

use std::process::Command;
use std::time::Instant;

/// Compares code objects attribute by attribute, recursively (`code.__eq__` ignores some).
const CHECK: &str = r#"
import sys, warnings
warnings.simplefilter('ignore')
ATTRS = ('co_code', 'co_names', 'co_varnames', 'co_freevars', 'co_cellvars', 'co_flags',
         'co_argcount', 'co_posonlyargcount', 'co_kwonlyargcount', 'co_nlocals', 'co_stacksize',
         'co_firstlineno', 'co_name', 'co_qualname', 'co_filename', 'co_linetable', 'co_lnotab',
         'co_exceptiontable')
def same(a, b):
    if type(a) is not type(b):
        return False
    if hasattr(a, 'co_code'):
        for attr in ATTRS:
            if attr == 'co_lnotab' and hasattr(a, 'co_linetable'):
                continue
            if getattr(a, attr, None) != getattr(b, attr, None):
                return False
        return len(a.co_consts) == len(b.co_consts) and all(same(x, y) for x, y in zip(a.co_consts, b.co_consts))
    if type(a) in (tuple, frozenset):
        return len(a) == len(b) and (type(a) is frozenset and a == b or all(same(x, y) for x, y in zip(a, b)))
    if type(a) in (float, complex):
        return repr(a) == repr(b)
    return a == b
files = checked = 0
pred = [0, 0]; actual = [0, 0]; wrong = []
for line in open(sys.argv[1], encoding='utf-8', errors='surrogateescape'):
    path, bits = line.rstrip('\n').rsplit('\t', 1)
    bits = int(bits)
    src = open(path, 'rb').read()
    try:
        codes = [compile(src, path, 'exec', dont_inherit=True, optimize=l) for l in (0, 1, 2)]
    except Exception:
        continue
    files += 1
    for i, (lo, hi) in enumerate(((0, 1), (1, 2))):
        equal = same(codes[lo], codes[hi])
        actual[i] += equal
        if bits & (1 << i):
            pred[i] += 1
            if not equal:
                wrong.append('%s: levels %d and %d predicted identical, but differ' % (path, lo, hi))
print('files=%d pred01=%d pred12=%d actual01=%d actual12=%d' % (files, pred[0], pred[1], actual[0], actual[1]))
for w in wrong:
    print('WRONG ' + w)
"#;

fn stdlib_of(python: &std::path::Path) -> std::path::PathBuf {
    let out = Command::new(python)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('stdlib'))",
        ])
        .output()
        .unwrap();
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn prediction_is_never_wrong(version: &str) {
    let Some(python) = python_or_skip(version, &format!("prediction_python{version}")) else {
        return;
    };
    let stdlib = stdlib_of(&python);
    let t = tempfile::tempdir().unwrap();
    let list = t.path().join("predictions.tsv");
    let (mut lines, mut bytes, mut files) = (String::new(), 0usize, 0usize);
    let mut scan_time = std::time::Duration::ZERO;
    for e in walkdir::WalkDir::new(&stdlib)
        .into_iter()
        .filter_entry(|e| e.file_name() != "site-packages")
    {
        let e = e.unwrap();
        if !e.file_type().is_file() || e.path().extension() != Some("py".as_ref()) {
            continue;
        }
        let src = std::fs::read(e.path()).unwrap();
        let started = Instant::now();
        let p = pyclink::python::predict::predict(&src);
        scan_time += started.elapsed();
        bytes += src.len();
        files += 1;
        lines.push_str(&format!("{}\t{}\n", e.path().display(), p.same.bits()));
    }
    std::fs::write(&list, lines).unwrap();
    let out = run(Command::new(&python).args(["-c", CHECK]).arg(&list));
    assert!(out.status.success(), "the check itself failed");
    let text = stdout(&out);
    let wrong: Vec<&str> = text.lines().filter(|l| l.starts_with("WRONG")).collect();
    assert!(
        wrong.is_empty(),
        "Python {version}: prediction was wrong:\n{}",
        wrong.join("\n")
    );
    let counts: Vec<u64> = text
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    let [compiled_files, pred01, pred12, actual01, actual12] = counts[..] else {
        panic!("{text}")
    };
    // Levels saved: level 1 when 0=1 is predicted; level 2 when 1=2 is.
    let saved = pred01 + pred12;
    let possible = actual01 + actual12;
    println!(
        "prediction python{version}: {compiled_files} sources, {saved} of {} level compilations saved \
         ({:.1}%; {possible} identical pairs exist, so {:.1}% of what is possible); scan {:.0} ms for \
         {:.1} MB ({:.0} MB/s, {files} files)",
        3 * compiled_files,
        100.0 * saved as f64 / (3 * compiled_files) as f64,
        100.0 * saved as f64 / possible.max(1) as f64,
        scan_time.as_secs_f64() * 1e3,
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / scan_time.as_secs_f64()
    );
    assert!(
        saved > 0,
        "a prediction that never predicts anything is not tested"
    );
}

macro_rules! version_tests {
    ($($name:ident => $v:literal),* $(,)?) => {
        $(#[test] fn $name() { prediction_is_never_wrong($v); })*
    };
}

version_tests! {
    prediction_python3_6 => "3.6",
    prediction_python3_7 => "3.7",
    prediction_python3_8 => "3.8",
    prediction_python3_9 => "3.9",
    prediction_python3_10 => "3.10",
    prediction_python3_11 => "3.11",
    prediction_python3_12 => "3.12",
    prediction_python3_13 => "3.13",
}

#[test]
fn prediction_host_python3() {
    let v = host_python3_version();
    assert!(
        find_python(&v).is_some(),
        "the host python3 ({v}) must be findable as python{v}"
    );
    if ["3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13"].contains(&v.as_str()) {
        // Found, so its own test above runs (it skips only a missing version).
        println!(
            "host python3 is {v}: checked by prediction_python{}",
            v.replace('.', "_")
        );
        return;
    }
    prediction_is_never_wrong(&v);
}
