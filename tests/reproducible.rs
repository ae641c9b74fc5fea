//! Issue 13: pyclink's bytes depend on nothing but the sources: not on -j, the order the
//! sources are compiled in, level prediction, or what a worker compiled before. Each test
//! compiles one version's full stdlib (every source of it, tests included where the version is
//! supported upstream, see END_OF_LIFE) twice with every
//! factor changed, and compares every pyc byte for byte; the second run compiles every level,
//! which proves level prediction right on that stdlib (prediction_fuzz.rs looks further). The first run's pycs must also be in
//! add-determinism's normal form (`add-det --check` changes nothing). That the pycs are right
//! (code, co_filename, links) is checked on every version by the other suites; it is not
//! repeated here, to keep the cost of these full roots down.
//!
//! 3.11 has no test here: compileall_identity.rs compiles its whole stdlib (and three packages
//! of site-packages) once with pyclink (its own -j, order and prediction) and compares every pyc
//! with serial compileall's at every level after add-det's pyc handler. That changes every
//! factor this file changes (one process against several workers, another order, every level
//! compiled) and proves the normal form against add-det, so a run here would repeat it.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

fn compile(root: &Path, extra: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(root)
        .args(["--errors", "warn", "-q", "-v"])
        .args(extra)
        .envs(env.iter().copied()));
    assert!(out.status.success());
    stderr(&out)
}

type Pycs = std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>;

/// One way of compiling the same root.
struct Run {
    what: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
}

/// CPython versions past their end of life upstream, still in the table for the distributions
/// that build with them (RHEL 8's 3.6, RHEL 9's 3.9): their stdlib is compiled without its test
/// suite (the top-level `test` package), which Debian's packages of 3.14 and 3.15 do not hold
/// either. That keeps every module of the stdlib proper and the packages' own tests (929
/// sources for 3.6, more for the later ones: every code object layout and constant type of the
/// version) at less than half the cost; the test suites
/// (the grammar tests, the deliberately odd sources) are compiled whole for 3.12 and 3.13 here
/// and for 3.11 in compileall_identity.rs, and the fuzzer (prediction_fuzz.rs) edits the
/// host's for every version.
const END_OF_LIFE: &[&str] = &["3.6", "3.7", "3.8", "3.9", "3.10"];

fn reproducible(version: &str) {
    let test = format!("reproducible {version}");
    if python_or_skip(version, &test).is_none() {
        return;
    }
    let t = bytes_scratch();
    let pristine = t.path().join("pristine");
    // The stdlib alone: site-packages (pip, setuptools, and on some hosts much more) adds time
    // and no other kind of source; compileall_identity.rs compiles some of it for 3.11.
    let corpus = if END_OF_LIFE.contains(&version) {
        Corpus::StdlibWithoutTests
    } else {
        Corpus::Stdlib
    };
    make_buildroot(&pristine, &[version], corpus);
    // The second run changes every factor at once against the first: the number of workers (2,
    // 3), the order (largest first, reversed) and level prediction (on, off). Each run has its
    // own workers, so every history differs too. The second run compiling every level also
    // proves level prediction on the whole stdlib: a level pair predicted identical is one
    // inode in the first run, and was compiled on its own in the second.
    let runs = [
        Run {
            what: "-j2",
            args: &["-j2"],
            env: &[],
        },
        Run {
            what: "-j3, reversed order, every level compiled",
            args: &["-j3", "--compile-every-level"],
            env: &[("PYCLINK_TEST_REVERSE_ORDER", "1")],
        },
    ];
    let mut first: Option<(&str, Pycs)> = None;
    for (i, Run { what, args, env }) in runs.iter().enumerate() {
        let root = t.path().join(format!("run{i}"));
        let out = run(Command::new("cp").arg("-a").arg(&pristine).arg(&root));
        assert!(out.status.success());
        compile(&root, args, env);
        let pycs = pyc_contents(&root);
        match &first {
            None => {
                let sources = walkdir::WalkDir::new(&root)
                    .into_iter()
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().extension().is_some_and(|x| x == "py"))
                    .count();
                // Debian's 3.14 holds 626 (its test suite is a package apart), 3.6 without
                // its test suite 929.
                assert!(sources > 500, "{version}: only {sources} sources");
                println!(
                    "{version}: {corpus:?}, {sources} sources, {} pycs",
                    pycs.len()
                );
                // Every version here is validated: normalized, levels predicted, said nowhere.
                if version.starts_with("pypy") {
                    check_pypy_fixed_point(&root, version, &pycs);
                } else {
                    check_normal_form(&root, version);
                }
                first = Some((what, pycs));
            }
            Some((first_what, first_pycs)) => {
                let differ: Vec<_> = first_pycs
                    .iter()
                    .filter(|(p, bytes)| pycs.get(*p) != Some(bytes))
                    .map(|(p, _)| p.display().to_string())
                    .collect();
                assert_eq!(first_pycs.len(), pycs.len());
                assert!(
                    differ.is_empty(),
                    "{version}: {} of {} pycs differ between '{first_what}' and '{what}': {:?}",
                    differ.len(),
                    pycs.len(),
                    &differ[..differ.len().min(10)]
                );
                println!(
                    "{version}: '{what}' wrote the same bytes as '{first_what}' ({} pycs)",
                    pycs.len()
                );
            }
        }
    }
}

/// add-det's pyc handler finds nothing to change.
fn check_normal_form(root: &Path, version: &str) {
    match add_det() {
        Some(add_det) => {
            let out = run(Command::new(add_det)
                .args(["--check", "--handler", "pyc", "-j2"])
                .arg(root));
            let text = stdout(&out) + &stderr(&out);
            assert!(
                out.status.success() && text.contains(" 0 modified"),
                "{version}: add-det would change pyclink's pycs:\n{}",
                text.lines().take(20).collect::<Vec<_>>().join("\n")
            );
            println!("{version}: add-det --check --handler pyc: nothing to change");
        }
        None if std::env::var_os("CI").is_some() => {
            panic!("add-det is missing (.ci/run installs it with cargo install add-determinism)")
        }
        None => println!(
            "SKIP {version} add-det check: add-det is not installed (cargo install add-determinism --locked)"
        ),
    }
}

/// add-det does not read PyPy's pycs; pyclink's own normalizer must find nothing to change in
/// them (they were normalized as written, after each source was compiled in a fresh fork).
fn check_pypy_fixed_point(root: &Path, version: &str, pycs: &Pycs) {
    let out = run(pyclink().arg("normalize").arg("--buildroot").arg(root));
    assert!(out.status.success());
    assert_eq!(
        &pyc_contents(root),
        pycs,
        "{version}: pyclink normalize changed pyclink's own PyPy pycs"
    );
    println!(
        "{version}: pyclink normalize finds nothing to change (add-det does not read PyPy pycs)"
    );
}

macro_rules! versions {
    ($($name:ident => $v:expr),* $(,)?) => {
        $(#[test] fn $name() { reproducible($v); })*
    };
}

versions! {
    reproducible_36 => "3.6",
    reproducible_37 => "3.7",
    reproducible_38 => "3.8",
    reproducible_39 => "3.9",
    reproducible_310 => "3.10",
    reproducible_312 => "3.12",
    reproducible_313 => "3.13",
    reproducible_314 => "3.14",
    reproducible_315 => "3.15",
    reproducible_pypy39 => "pypy3.9",
    reproducible_pypy311 => "pypy3.11",
}

/// The host python3 is always tested: by its own test above, or here.
#[test]
fn reproducible_host_python3() {
    let v = host_python3_version();
    assert!(
        find_python(&v).is_some(),
        "the host python3 ({v}) must be findable as python{v}"
    );
    if v == "3.11" {
        println!(
            "host python3 is 3.11: checked by compileall_identity's \
             stdlib_and_some_site_packages_311_match_serial_compileall_and_add_det"
        );
        return;
    }
    let listed = [
        "3.6", "3.7", "3.8", "3.9", "3.10", "3.12", "3.13", "3.14", "3.15",
    ];
    if listed.contains(&v.as_str()) {
        println!(
            "host python3 is {v}: checked by reproducible_{}",
            v.replace('.', "")
        );
        return;
    }
    reproducible(&v);
}
