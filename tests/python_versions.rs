//! Issue 20: the Pythons distributions build with today, by the rules of the version table.
//! - Free-threaded builds (`python3.14t` trees) are found, named `python3.14t`, and compiled only
//!   by a free-threaded interpreter: a GIL build is never taken for one, and none found is an
//!   error naming what was tried. Debian packages no free-threaded interpreter, so the test that
//!   needs a real one skips with its reason; the discovery and naming tests always run.
//! - PyPy's trees given as PATHs are compiled by PyPy, or refused; never by CPython.
//! - A tree of a version pyclink does not compile (2.7, 3.5) that holds sources is an error
//!   (a warning under `--errors warn`) naming the tree, the reason and the opt-out.

mod common;
use common::*;

use std::path::Path;

/// A directory holding one command, `name`, that runs `target`: an interpreter under another
/// name, as a packager's PATH may have it.
fn bin_with(dir: &Path, name: &str, target: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
}

fn with_path_first(c: &mut std::process::Command, dir: &Path) {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    c.env("PATH", std::env::join_paths(paths).unwrap());
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_free_threaded_tree_is_never_compiled_by_a_gil_build() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(
        &root,
        &[("usr/lib64/python3.14t/site-packages/ft/m.py", "x = 1\n")],
    );
    // The host's GIL interpreter, under the free-threaded build's name, first on PATH.
    let bin = t.path().join("bin");
    bin_with(&bin, "python3.14t", &h.python);
    let mut c = pyclink();
    c.arg("--buildroot").arg(&root).arg("-v");
    with_path_first(&mut c, &bin);
    let out = run(&mut c);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no interpreter found for python3.14t")
            && err.contains(&format!("it is python{}, not python3.14t", h.version)),
        "{err}"
    );
    assert!(!root
        .join("usr/lib64/python3.14t/site-packages/ft/__pycache__")
        .exists());

    // Named explicitly, the same refusal; --python-version accepts the spelling.
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--interpreter")
        .arg(format!("3.14t={}", h.python.display())));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not python3.14t"), "{err}");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--python-version", "3.14t", "--dry-run"])
        .arg("usr/lib64/python3.14t/site-packages/ft"));
    assert!(
        !stderr(&out).contains("is not a Python version"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn free_threaded_builds_that_do_not_exist_are_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(&root, &[("usr/lib64/python3.12t/m.py", "x = 1\n")]);
    let json_path = t.path().join("s.json");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--summary-json")
        .arg(&json_path));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/usr/lib64/python3.12t: 1 source not compiled")
            && err.contains("CPython has no free-threaded build"),
        "{err}"
    );
    let j = json(&json_path);
    assert_eq!(j["error_details"][0]["kind"], "unsupported-version");
}

/// A real free-threaded interpreter, where one is installed (pyenv 3.14t, PATH, the project's
/// interpreter cache): its tree is compiled by it and verified, every level compiled and the raw
/// bytes written, as the table has not validated the build, and the summary says so.
#[test]
fn a_real_free_threaded_python_compiles_its_tree() {
    let Some(python) = python_or_skip("3.14t", "a_real_free_threaded_python_compiles_its_tree")
    else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(
        &root,
        &[(
            "usr/lib64/python3.14t/site-packages/ft/m.py",
            "'''doc'''\nassert True\nx = 1\n",
        )],
    );
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("-q")
        .arg("--interpreter")
        .arg(format!("3.14t={}", python.display())));
    assert!(out.status.success());
    let line = stdout(&out);
    assert!(
        line.starts_with("pyclink: python3.14t: 1 source, 3 pyc")
            && line.contains("raw interpreter bytes, every level compiled"),
        "{line}"
    );
    assert_audit_ok(
        &root,
        &["3.14t:usr/lib64/python3.14t".to_string()],
        &["--python", &format!("3.14t={}", python.display())],
    );
}

/// PyPy's public modules (Debian's `usr/lib/pypy3/dist-packages`), given as a PATH or found in
/// the root, are compiled by PyPy; a CPython version named for them is refused.
#[test]
fn pypy_trees_are_compiled_by_pypy_only() {
    let test = "pypy_trees_are_compiled_by_pypy_only";
    let Some(pypy) = python_or_skip("pypy3.9", test).or_else(|| python_or_skip("pypy3.11", test))
    else {
        return;
    };
    let tag = cache_tag(&pypy);
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let pkg = "usr/lib/pypy3/dist-packages/pkg";
    write_files(
        &root,
        &[(&format!("{pkg}/__init__.py"), "'''doc'''\nX = 1\n")],
    );
    // The host's pypy3 decides the version, as the host's python3 does for dist-packages.
    let bin = t.path().join("bin");
    bin_with(&bin, "pypy3", &pypy);
    for paths in [vec!["usr/lib/pypy3/dist-packages"], vec![]] {
        let _ = std::fs::remove_dir_all(root.join(pkg).join("__pycache__"));
        let mut c = pyclink();
        c.arg("--buildroot").arg(&root).args(&paths);
        with_path_first(&mut c, &bin);
        let out = run(&mut c);
        assert!(out.status.success(), "{}", stderr(&out));
        let names: Vec<String> = std::fs::read_dir(root.join(pkg).join("__pycache__"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(
            names.iter().all(|n| n.contains(&format!(".{tag}."))),
            "{names:?}"
        );
    }
    // A CPython version named for PyPy's tree: refused, nothing written.
    let _ = std::fs::remove_dir_all(root.join(pkg).join("__pycache__"));
    let out = run(pyclink().arg("--buildroot").arg(&root).args([
        "--python-version",
        "3.11",
        "usr/lib/pypy3/dist-packages",
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("/usr/lib/pypy3/dist-packages: PyPy sources, and no PyPy version")
            && err.contains("pypy3compile"),
        "{err}"
    );
    assert!(!root.join(pkg).join("__pycache__").exists());
}

/// Trees of Python 2.7 and 3.5 with sources: an error under the default policy, a warning
/// under `--errors warn`, nothing with `-x`; the tree, the reason and the opt-out are named.
#[test]
fn unsupported_trees_with_sources_fail_the_run() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(
        &root,
        &[
            ("usr/lib/python2.7/site-packages/old.py", "print 'hi'\n"),
            ("usr/lib/python2.7/site-packages/old2.py", "x = 1\n"),
            ("usr/lib64/python3.5/m.py", "x = 1\n"),
            ("usr/lib/python2.6/README", "no sources here\n"),
        ],
    );
    let json_path = t.path().join("s.json");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--summary-json")
        .arg(&json_path));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pyclink: error: /usr/lib/python2.7: 2 sources not compiled: python2.7 is not supported (Python 2 writes")
            && err.contains("-x '/usr/lib/python2.7/*'")
            && err.contains("%global _pyclink_exclude /usr/lib/python2.7/*"),
        "{err}"
    );
    assert!(
        err.contains("/usr/lib64/python3.5: 1 source not compiled: python3.5 is not supported"),
        "{err}"
    );
    assert!(
        !err.contains("python2.6"),
        "a tree without sources is no error: {err}"
    );
    let lines = stdout(&out);
    assert!(
        lines.contains(
            "pyclink: python2.7: 2 sources, 0 pyc (0 written, 0 hardlinked, 0 copied), 1 error"
        ),
        "{lines}"
    );
    let j = json(&json_path);
    assert_eq!(j["exit_code"], 1);
    let kinds: Vec<&str> = j["error_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["unsupported-version", "unsupported-version"]);

    // --errors warn: said as a warning, even with -q, and the run succeeds.
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--errors", "warn", "-q"]));
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("pyclink: warning: /usr/lib/python2.7: 2 sources not compiled"),
        "{}",
        stderr(&out)
    );

    // The opt-out the message names.
    let out = run(pyclink().arg("--buildroot").arg(&root).args([
        "-x",
        "/usr/lib/python2.7/*",
        "-x",
        "/usr/lib64/python3.5/*",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("not compiled"), "{}", stderr(&out));
}
