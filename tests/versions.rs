//! Every Python the version table knows (CPython 3.6-3.15, PyPy 3.9 and 3.11) compiles a small
//! stdlib root that `pyclink verify` (and pyc-audit, where present) accepts, each found where it
//! is installed or skipped with the reason; the host's python3 is always tested; two versions in
//! one root are compiled by one run.

mod common;
use common::*;

fn audit_version(version: &str) {
    let test = format!("audit_python{version}");
    if python_or_skip(version, &test).is_none() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    make_buildroot(&root, &[version], Corpus::Small);
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert!(out.status.success(), "pyclink failed for {version}");
    let line = stdout(&out);
    assert!(
        line.starts_with(&format!("pyclink: {}: ", command_of(version))),
        "summary line: {line}"
    );
    assert!(line.contains(" 0 errors"), "{line}");
    // Every version in the table is validated: nothing is written raw.
    assert!(!line.contains("raw"), "{line}");
    assert_audit_ok(&root, &[format!("{version}:{}", stdlib_dir(version))], &[]);
    assert!(temp_files(&root).is_empty());
}

macro_rules! version_tests {
    ($($name:ident => $v:literal),* $(,)?) => {
        $(#[test] fn $name() { audit_version($v); })*
    };
}

version_tests! {
    audit_python3_6 => "3.6",
    audit_python3_7 => "3.7",
    audit_python3_8 => "3.8",
    audit_python3_9 => "3.9",
    audit_python3_10 => "3.10",
    audit_python3_11 => "3.11",
    audit_python3_12 => "3.12",
    audit_python3_13 => "3.13",
    audit_python3_14 => "3.14",
    audit_python3_15 => "3.15",
    audit_pypy3_9 => "pypy3.9",
    audit_pypy3_11 => "pypy3.11",
}

/// Never skipped: the machine's own python3, whatever version it is.
#[test]
fn audit_host_python3() {
    let v = host_python3_version();
    assert!(
        find_python(&v).is_some(),
        "the host python3 ({v}) must be findable as python{v}"
    );
    if LISTED.contains(&v.as_str()) {
        // Found, so its own test above runs (it skips only a missing version).
        println!(
            "host python3 is {v}: checked by audit_python{}",
            v.replace('.', "_")
        );
        return;
    }
    audit_version(&v);
}

const LISTED: [&str; 12] = [
    "3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15", "pypy3.9",
    "pypy3.11",
];

/// The tests above cover every version the table says pyclink compiles and has validated (the
/// free-threaded builds, which no interpreter here runs, are covered by tests/free_threaded.rs).
#[test]
fn every_validated_version_has_its_test() {
    let validated: Vec<String> = pyclink::python::table::all()
        .into_iter()
        .filter(|f| f.normal_form_validated)
        .map(|f| f.version.short())
        .collect();
    assert_eq!(validated, LISTED, "the version table and this file's list");
}

#[test]
fn two_versions_in_one_root() {
    let host = host_python3_version();
    let other = ["3.12", "3.11", "3.13", "3.10"]
        .into_iter()
        .find(|v| *v != host && find_python(v).is_some());
    let Some(other) = other else {
        println!(
            "SKIP two_versions_in_one_root: no second Python 3.10-3.13 besides the host's {host}"
        );
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    make_buildroot(&root, &[&host, other], Corpus::Small);
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 2, "one line per version: {text}");
    for v in [&host, other] {
        assert!(text.contains(&format!("pyclink: python{v}: ")), "{text}");
    }
    assert_audit_ok(
        &root,
        &[
            format!("{host}:usr/lib64/python{host}"),
            format!("{other}:usr/lib64/python{other}"),
        ],
        &[],
    );
}
