//! The marshal normal form on real data: every installed CPython 3.6-3.15 compiles a sample of
//! its own standard library at levels 0, 1 and 2; the Rust normalizer must give bytes that the
//! interpreter loads to a recursively equal code object, that are a fixed point, that do not
//! depend on the compiling process's history, that equal a naive second implementation, and
//! (where `add-det` is installed) that equal add-determinism's output byte for byte.
//!
//! `PYCLINK_MARSHAL_SAMPLE=N` changes the number of modules per version (default 45).

mod common;
#[path = "marshal_normalize/oracle.rs"]
mod oracle;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pyclink::python::marshal::{self, Format, Normalizer};
use pyclink::python::table;

const DRIVER: &str = include_str!("marshal_normalize/driver.py");

struct Record {
    pass: u8,
    path: Vec<u8>,
    level: u8,
    body: Vec<u8>,
    /// (co_filename, co_name, co_firstlineno) of every code object, outer first.
    codes: Vec<(Vec<u8>, Vec<u8>, i32)>,
}

struct Stream<R: Read>(R);

impl<R: Read> Stream<R> {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.0
            .read_exact(&mut v)
            .expect("driver output ended early");
        v
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1)[0]
    }
    fn u32(&mut self) -> u32 {
        let b = self.bytes(4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn string(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        self.bytes(n)
    }
}

fn sample_size() -> usize {
    std::env::var("PYCLINK_MARSHAL_SAMPLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45)
}

fn python_for(version: &str, test: &str) -> Option<PathBuf> {
    if version == common::host_python3_version() {
        Some(common::find_python(version).unwrap_or_else(|| {
            panic!("the host's python3 is {version} but python{version} is not found")
        }))
    } else {
        common::python_or_skip(version, test)
    }
}

fn add_det() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("add-det"))
        .find(|p| p.is_file())
}

/// Runs the whole check for one version; returns how many raw pairs differed between the two
/// histories while their normal forms agree.
fn check_version(version: &str) -> Option<usize> {
    let test = format!("marshal_normalize {version}");
    let python = python_for(version, &test)?;
    let tmp = tempfile::tempdir().unwrap();
    let driver = tmp.path().join("driver.py");
    std::fs::write(&driver, DRIVER).unwrap();
    let count = sample_size();
    let stderr = std::fs::File::create(tmp.path().join("stderr")).unwrap();
    let mut child = Command::new(&python)
        .arg("-I")
        .arg(&driver)
        .arg(count.to_string())
        .arg((count / 3).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let mut out = Stream(std::io::BufReader::new(child.stdout.take().unwrap()));

    let magic: [u8; 4] = out.bytes(4).try_into().unwrap();
    let facts = table::by_magic(magic).expect("the interpreter's magic is in the version table");
    assert_eq!(facts.version.short(), version, "magic {magic:02x?}");
    let v = facts.marshal.expect("the table reads its marshal data");
    let header_len = facts.header_len;
    let mut records = Vec::new();
    loop {
        let pass = out.u8();
        if pass == 0xFF {
            break;
        }
        let path = out.string();
        let level = out.u8();
        let body = out.string();
        let n = out.u32();
        let codes = (0..n)
            .map(|_| {
                let filename = out.string();
                let name = out.string();
                (filename, name, out.u32() as i32)
            })
            .collect();
        records.push(Record {
            pass,
            path,
            level,
            body,
            codes,
        });
    }

    // add-det is slow (about 13 ms of CPU per pyc here): let it run meanwhile.
    let add_det_run = start_add_det(tmp.path(), magic, header_len, &records);

    let mut normalizer = Normalizer::new();
    let mut normal = Vec::new();
    let mut changed = 0;
    for r in &records {
        let what = format!("{} level {}", String::from_utf8_lossy(&r.path), r.level);
        let n = normalizer
            .normalize(&r.body, v)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .into_owned();
        changed += usize::from(n != r.body);
        // (b) A fixed point.
        assert!(
            matches!(normalizer.normalize(&n, v).unwrap(), Cow::Borrowed(_)),
            "{what}: normalizing twice changes the bytes"
        );
        // The slow second implementation agrees byte for byte.
        assert!(
            n == oracle::normalize(&r.body, v),
            "{what}: differs from the naive normal form"
        );
        check_code_objects(&mut normalizer, r, &n, v, &what);
        normal.push(n);
    }

    // (a) The interpreter loads every normalized pass-0 body to an equal code object.
    let send: Vec<Vec<u8>> = records
        .iter()
        .zip(&normal)
        .filter(|(r, _)| r.pass == 0)
        .map(|(_, n)| n.clone())
        .collect();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        for n in send {
            stdin.write_all(&(n.len() as u32).to_le_bytes()).unwrap();
            stdin.write_all(&n).unwrap();
        }
    });
    let mut report = String::new();
    out.0.read_to_string(&mut report).unwrap();
    writer.join().unwrap();
    let status = child.wait().unwrap();
    let errors = std::fs::read_to_string(tmp.path().join("stderr")).unwrap();
    assert!(
        status.success(),
        "driver failed: {status}\n{report}\n{errors}"
    );
    let pass0 = records.iter().filter(|r| r.pass == 0).count();
    assert!(
        report.ends_with(&format!("checked {pass0} mismatches 0\n")),
        "marshal.loads of normalized bytes differs from the compiled code:\n{report}"
    );

    // (c) Another history: same bytes after normalizing wherever the values agree.
    let first: HashMap<(&[u8], u8), usize> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.pass == 0)
        .map(|(i, r)| ((r.path.as_slice(), r.level), i))
        .collect();
    let (mut pairs, mut raw_differ, mut only_refs, mut values_differ) = (0, 0, 0, 0);
    let mut example = None;
    for (i, r) in records.iter().enumerate().filter(|(_, r)| r.pass == 1) {
        let j = first[&(r.path.as_slice(), r.level)];
        pairs += 1;
        let same_value = oracle::expand(&oracle::read(&r.body, v))
            == oracle::expand(&oracle::read(&records[j].body, v));
        assert_eq!(
            normal[i] == normal[j],
            same_value,
            "{} level {}: normal forms must agree exactly when the values (with string kinds) agree",
            String::from_utf8_lossy(&r.path),
            r.level
        );
        if r.body != records[j].body {
            raw_differ += 1;
            if same_value {
                only_refs += 1;
                example.get_or_insert_with(|| {
                    format!("{} level {}", String::from_utf8_lossy(&r.path), r.level)
                });
            }
        }
        values_differ += usize::from(!same_value);
    }

    // (d) add-det writes the same bytes.
    let add_det_result = match add_det_run {
        Ok(run) => run.compare(),
        Err(why) => why,
    };

    println!(
        "{version}: {} records ({pass0} checked by marshal.loads), {changed} changed by normalizing; \
         history: {pairs} pairs, {raw_differ} raw differ, {only_refs} of them equal once normalized \
         (e.g. {}), {values_differ} differ in value or string kind (interning history, which normalizing keeps); {add_det_result}",
        records.len(),
        example.as_deref().unwrap_or("none"),
    );
    Some(only_refs)
}

/// The visitor sees every code object of the raw data with its file name, name and first
/// line, in the order Python's traversal gives; in normal form, an equal code object may be
/// a reference to an earlier one, so only the set is compared there.
fn check_code_objects(n: &mut Normalizer, r: &Record, normal: &[u8], v: Format, what: &str) {
    let seen: Vec<(Vec<u8>, Vec<u8>, i32)> = n
        .code_objects(&r.body, v)
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .iter()
        .map(|c| {
            (
                c.filename.bytes.to_vec(),
                c.name.bytes.to_vec(),
                c.firstlineno,
            )
        })
        .collect();
    assert_eq!(seen, r.codes, "{what}: code objects");
    let set = |c: &[(Vec<u8>, Vec<u8>, i32)]| c.iter().cloned().collect::<BTreeSet<_>>();
    let in_normal: Vec<_> = n
        .code_objects(normal, v)
        .unwrap()
        .iter()
        .map(|c| {
            (
                c.filename.bytes.to_vec(),
                c.name.bytes.to_vec(),
                c.firstlineno,
            )
        })
        .collect();
    assert_eq!(
        set(&in_normal),
        set(&r.codes),
        "{what}: code objects after normalizing"
    );
    assert_eq!(&*r.codes[0].0, r.path.as_slice(), "{what}: co_filename");
}

struct AddDetRun {
    child: std::process::Child,
    log: PathBuf,
    /// Each pyc written for add-det, and its content before.
    pycs: Vec<(PathBuf, Vec<u8>)>,
}

/// Write every record as a pyc and start `add-det --handler pyc` on them; `Err` says why the
/// comparison is skipped.
fn start_add_det(
    tmp: &Path,
    magic: [u8; 4],
    header_len: usize,
    records: &[Record],
) -> Result<AddDetRun, String> {
    let Some(add_det) = add_det() else {
        let why = "add-det is not on PATH (cargo install add-determinism --locked)";
        println!("SKIP add-det comparison: {why}");
        return Err(format!("add-det skipped: {why}"));
    };
    let dir = tmp.join("pycs");
    std::fs::create_dir(&dir).unwrap();
    let mut pycs = Vec::new();
    for (i, r) in records.iter().enumerate() {
        // Magic, then zeros for flags (3.7+), mtime and source size: add-det keeps the header.
        let mut pyc = magic.to_vec();
        pyc.resize(header_len, 0);
        pyc.extend_from_slice(&r.body);
        let p = dir.join(format!("m{i}.cpython.pyc"));
        std::fs::write(&p, &pyc).unwrap();
        pycs.push((p, pyc));
    }
    let log = tmp.join("add-det.log");
    let child = Command::new(&add_det)
        .args(["--handler", "pyc"])
        .arg(&dir)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(tmp.join("add-det.err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", add_det.display()));
    Ok(AddDetRun { child, log, pycs })
}

impl AddDetRun {
    fn compare(mut self) -> String {
        let status = self.child.wait().unwrap();
        let errors = self.log.with_extension("err");
        assert!(
            status.success(),
            "add-det failed: {status}\n{}",
            std::fs::read_to_string(errors).unwrap_or_default()
        );
        for (p, pyc) in &self.pycs {
            let theirs = std::fs::read(p).unwrap();
            let ours = marshal::normalize_pyc(pyc).unwrap();
            assert!(
                *ours == *theirs,
                "{}: differs from add-det's output",
                p.display()
            );
        }
        format!(
            "add-det: {n} of {n} pycs byte-identical",
            n = self.pycs.len()
        )
    }
}

macro_rules! version_tests {
    ($($name:ident => $v:literal, $must_show_history:literal;)*) => {$(
        #[test]
        fn $name() {
            let Some(only_refs) = check_version($v) else { return };
            if $must_show_history {
                assert!(
                    only_refs > 0,
                    "expected at least one pair of {} pycs whose raw bytes differ by history but agree once normalized",
                    $v
                );
            }
        }
    )*};
}

version_tests! {
    cpython_3_6 => "3.6", false;
    cpython_3_7 => "3.7", false;
    cpython_3_8 => "3.8", true;
    cpython_3_9 => "3.9", false;
    cpython_3_10 => "3.10", true;
    cpython_3_11 => "3.11", false;
    cpython_3_12 => "3.12", false;
    cpython_3_13 => "3.13", false;
    cpython_3_14 => "3.14", false;
    cpython_3_15 => "3.15", false;
}

/// The host's python3 is always checked, whatever its version.
#[test]
fn host_python3() {
    let v = common::host_python3_version();
    if ![
        "3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15",
    ]
    .contains(&v.as_str())
    {
        check_version(&v).expect("the host python3 is always tested");
    }
}
