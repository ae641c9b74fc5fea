//! Behaviour of one run on small hand-made roots, with the host's python3 (always present).

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A root with `files` under usr/lib/pythonX.Y/site-packages; returns (tempdir, root, site).
fn site_root(h: &Host, files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let site = root.join(format!("usr/lib/python{}/site-packages", h.version));
    std::fs::create_dir_all(&site).unwrap();
    write_files(&site, files);
    (t, root, site)
}

fn expect(h: &Host) -> Vec<String> {
    vec![format!("{}:usr/lib/python{}", h.version, h.version)]
}

const BOTH: &str = "\"\"\"docstring\"\"\"\nassert 1\nx = 1\n";
const DOC: &str = "\"\"\"docstring\"\"\"\nx = 1\n";
const ASSERT: &str = "assert 1\nx = 1\n";
const NEITHER: &str = "x = 1\n";

/// CPython's test_compileall hardlink cases: linked exactly where the levels are identical.
#[test]
fn hardlinks_exactly_where_identical() {
    let h = host();
    let (_t, root, site) = site_root(
        &h,
        &[
            ("both.py", BOTH),
            ("doc.py", DOC),
            ("assert_.py", ASSERT),
            ("neither.py", NEITHER),
        ],
    );
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert!(out.status.success());
    let same = |name: &str| {
        let p = pycs(&site, name, &h.tag);
        (
            ino(&p[0]) == ino(&p[1]),
            ino(&p[1]) == ino(&p[2]),
            ino(&p[0]) == ino(&p[2]),
        )
    };
    assert_eq!(same("both"), (false, false, false));
    assert_eq!(
        same("doc"),
        (true, false, false),
        "docstring only: 0 and 1 linked"
    );
    assert_eq!(
        same("assert_"),
        (false, true, false),
        "assert only: 1 and 2 linked"
    );
    assert_eq!(same("neither"), (true, true, true));
    // 4 sources x 3 levels; distinct contents 3 + 2 + 2 + 1 = 8, links 4.
    assert!(
        stdout(&out).contains("4 sources, 12 pyc (8 written, 4 hardlinked, 0 copied), 0 errors"),
        "{}",
        stdout(&out)
    );
    assert_audit_ok(&root, &expect(&h), &[]);
}

#[test]
fn only_two_levels() {
    let h = host();
    for (levels, a, b) in [("0,1", 0, 1), ("1,2", 1, 2), ("0,2", 0, 2)] {
        let (_t, root, site) = site_root(
            &h,
            &[("both.py", BOTH), ("neither.py", NEITHER), ("doc.py", DOC)],
        );
        assert!(
            run(pyclink().arg("--buildroot").arg(&root).args(["-o", levels]))
                .status
                .success()
        );
        for name in ["both", "neither", "doc"] {
            let p = pycs(&site, name, &h.tag);
            let missing = 3 - a - b;
            assert!(
                !p[missing].exists(),
                "{levels}: level {missing} must not be written"
            );
            let identical = std::fs::read(&p[a]).unwrap() == std::fs::read(&p[b]).unwrap();
            assert_eq!(
                identical,
                ino(&p[a]) == ino(&p[b]),
                "{levels} {name}: linked iff identical"
            );
        }
        assert!(!ino_eq(&pycs(&site, "both", &h.tag), a, b));
        assert!(ino_eq(&pycs(&site, "neither", &h.tag), a, b));
        assert_audit_ok(&root, &expect(&h), &["--levels", levels]);
    }
}

fn ino_eq(p: &[PathBuf; 3], a: usize, b: usize) -> bool {
    ino(&p[a]) == ino(&p[b])
}

#[test]
fn duplicated_levels_are_harmless() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("neither.py", NEITHER)]);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["-o1", "-o0", "-o1", "-o0"]));
    assert!(out.status.success());
    let p = pycs(&site, "neither", &h.tag);
    assert!(p[0].exists() && p[1].exists() && !p[2].exists());
    assert_eq!(ino(&p[0]), ino(&p[1]));
    // compileall's bug: `-o -1 -o 0 --hardlink-dupes` deletes pycs. Here -1 is refused, and
    // nothing is touched.
    let before = snapshot(&root);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["-o", "-1", "-o", "0"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid optimization level -1"));
    assert_eq!(before, snapshot(&root));
}

#[test]
fn recompilation_after_source_change() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("a.py", "a = 0\n")]);
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    let p = pycs(&site, "a", &h.tag);
    let inode = ino(&p[0]);
    assert!(ino(&p[1]) == inode && ino(&p[2]) == inode);

    std::fs::write(
        site.join("a.py"),
        "\"\"\"now with a docstring\"\"\"\nprint(0)\n",
    )
    .unwrap();
    assert!(run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--force", "-o0", "-o2"]))
    .status
    .success());
    assert_eq!(ino(&p[1]), inode, "opt-1 keeps its inode");
    assert_ne!(ino(&p[0]), inode);
    assert_ne!(
        ino(&p[0]),
        ino(&p[2]),
        "new level 0 and 2 differ (docstring)"
    );
    std::fs::write(site.join("a.py"), "print(1)\n").unwrap();
    assert!(run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--force", "-o0", "-o2"]))
    .status
    .success());
    assert_eq!(ino(&p[1]), inode);
    assert_eq!(ino(&p[0]), ino(&p[2]), "pyc and opt-2 share a new inode");
    assert_ne!(ino(&p[2]), inode);
    assert_ne!(std::fs::read(&p[1]).unwrap(), std::fs::read(&p[2]).unwrap());
}

/// Python itself accepts the pycs for plain, -O and -OO imports: `-v` reports the code object
/// coming from the pyc, and nothing is rewritten.
#[test]
fn python_imports_the_written_pycs() {
    let h = host();
    let (_t, root, site) = site_root(
        &h,
        &[
            ("both.py", BOTH),
            ("pkg/__init__.py", DOC),
            ("pkg/mod.py", NEITHER),
        ],
    );
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    let before = snapshot(&site);
    for (flag, suffix) in [
        (None, ".pyc"),
        (Some("-O"), ".opt-1.pyc"),
        (Some("-OO"), ".opt-2.pyc"),
    ] {
        let mut c = Command::new(&h.python);
        c.args(flag)
            .args(["-v", "-c", "import both, pkg.mod"])
            .env("PYTHONPATH", &site)
            .env_remove("PYTHONDONTWRITEBYTECODE");
        let out = run(&mut c);
        assert!(out.status.success());
        let log = stderr(&out);
        for m in ["both", "mod"] {
            let want = format!("code object from '{}", site.display());
            let line = log
                .lines()
                .find(|l| l.contains(&want) && l.contains(&format!("{m}.{}{suffix}", h.tag)));
            assert!(
                line.is_some(),
                "{flag:?}: {m} not loaded from its {suffix}:\n{log}"
            );
        }
    }
    assert_eq!(before, snapshot(&site), "importing rewrote a pyc");
}

#[test]
fn bad_sources_are_reported_and_the_rest_compiled() {
    let h = host();
    let (_t, root, site) = site_root(
        &h,
        &[
            ("good.py", NEITHER),
            ("syntax.py", "x = 1\ndef f(:\n    pass\n"),
            ("cookie.py", "# -*- coding: no-such-codec -*-\nx = 1\n"),
            ("zzz_also_good.py", DOC),
        ],
    );
    std::fs::write(site.join("nul.py"), b"x = 1\n\0\n").unwrap();
    let json = root.parent().unwrap().join("summary.json");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--summary-json")
        .arg(&json));
    assert_eq!(out.status.code(), Some(1), "errors fail by default");
    let err = stderr(&out);
    let rel = format!("/usr/lib/python{}/site-packages", h.version);
    assert!(
        err.contains(&format!("{rel}/syntax.py:2: SyntaxError: ")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{rel}/cookie.py")) && err.contains("no-such-codec"),
        "{err}"
    );
    assert!(err.contains(&format!("{rel}/nul.py")), "{err}");
    assert!(stdout(&out).contains("3 errors"), "{}", stdout(&out));
    for ok in ["good", "zzz_also_good"] {
        assert!(
            pycs(&site, ok, &h.tag).iter().all(|p| p.exists()),
            "{ok} must still be compiled"
        );
    }
    assert!(!pycs(&site, "syntax", &h.tag)[0].exists());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(summary["exit_code"], 1);
    let errors: Vec<String> = summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{rel}/syntax.py:2: SyntaxError: "))),
        "{errors:?}"
    );
    assert_eq!(summary["versions"][0]["errors"], 3);

    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--errors", "warn"]));
    assert_eq!(out.status.code(), Some(0), "--errors warn exits 0");
    assert!(
        stderr(&out).contains("warning: ") && stderr(&out).contains("syntax.py:2: SyntaxError")
    );
}

#[test]
fn rerun_is_a_noop_and_force_rewrites() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("a.py", DOC), ("b.py", BOTH)]);
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    let first = snapshot(&site);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert!(
        stdout(&out).contains("(0 written, 0 hardlinked, 0 copied, 6 up to date)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(first, snapshot(&site), "a rerun must not touch anything");
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("--force"));
    assert!(
        stdout(&out).contains("(5 written, 1 hardlinked, 0 copied)"),
        "{}",
        stdout(&out)
    );
    let pyc = pycs(&site, "a", &h.tag);
    let old = first.iter().find(|(p, ..)| p == &pyc[0]).unwrap();
    assert_ne!(old.1, ino(&pyc[0]), "--force replaces the file");
    assert_audit_ok(&root, &expect(&h), &[]);
}

#[test]
fn source_date_epoch_means_checked_hash() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("a.py", NEITHER)]);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(out.status.success());
    let data = std::fs::read(&pycs(&site, "a", &h.tag)[0]).unwrap();
    assert_eq!(
        u32::from_le_bytes(data[4..8].try_into().unwrap()),
        0b11,
        "checked-hash flags"
    );
    assert_audit_ok(&root, &expect(&h), &[]);
    // A changed mtime does not make a hash-based pyc stale.
    let before = snapshot(&site.join("__pycache__"));
    filetime(&site.join("a.py"), 1_000_000_000);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(stdout(&out).contains("3 up to date"));
    assert_eq!(before, snapshot(&site.join("__pycache__")));
    // Explicit modes win; unchecked-hash has flags 0b01.
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--invalidation-mode", "unchecked-hash"]));
    assert!(out.status.success());
    let data = std::fs::read(&pycs(&site, "a", &h.tag)[0]).unwrap();
    assert_eq!(u32::from_le_bytes(data[4..8].try_into().unwrap()), 0b01);
    assert_audit_ok(&root, &expect(&h), &[]);
}

fn filetime(p: &Path, secs: i64) {
    let f = std::fs::File::options().write(true).open(p).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs as u64);
    f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

/// Past 2038 (signed 32-bit) and past 2106 (unsigned 32-bit): the header holds the mtime
/// modulo 2**32, as importlib writes and checks it.
#[test]
fn mtimes_beyond_32_bits() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("y2038.py", NEITHER), ("y2106.py", NEITHER)]);
    filetime(&site.join("y2038.py"), (1 << 31) + 5);
    filetime(&site.join("y2106.py"), (1 << 32) + 7);
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    let field = |name: &str| {
        let d = std::fs::read(&pycs(&site, name, &h.tag)[0]).unwrap();
        u32::from_le_bytes(d[8..12].try_into().unwrap())
    };
    assert_eq!(field("y2038"), (1u32 << 31) + 5);
    assert_eq!(field("y2106"), 7);
    assert_audit_ok(&root, &expect(&h), &[]);
    let before = snapshot(&site);
    let mut c = Command::new(&h.python);
    assert!(run(c
        .args(["-c", "import y2038, y2106"])
        .env("PYTHONPATH", &site))
    .status
    .success());
    assert_eq!(
        before,
        snapshot(&site),
        "Python must accept these headers as up to date"
    );
}

#[test]
fn pyc_mode_follows_the_source() {
    use std::os::unix::fs::PermissionsExt;
    let h = host();
    let (_t, root, site) = site_root(&h, &[("ro.py", NEITHER), ("private.py", NEITHER)]);
    std::fs::set_permissions(site.join("ro.py"), std::fs::Permissions::from_mode(0o444)).unwrap();
    std::fs::set_permissions(
        site.join("private.py"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("--no-link"));
    assert!(out.status.success());
    let mode = |name: &str| {
        std::fs::metadata(&pycs(&site, name, &h.tag)[0])
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    let umask = u32::from_str_radix(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .unwrap()
            .trim(),
        8,
    )
    .unwrap();
    assert_eq!(mode("ro"), 0o644 & !umask, "0o444 | owner-write");
    assert_eq!(mode("private"), 0o600 & !umask);
    assert!(
        stdout(&out).contains("(6 written, 0 hardlinked, 0 copied)"),
        "--no-link: {}",
        stdout(&out)
    );
}

#[test]
fn paths_and_excludes_restrict_the_run() {
    let h = host();
    let (_t, root, site) = site_root(
        &h,
        &[
            ("keep/a.py", NEITHER),
            ("other/b.py", NEITHER),
            ("keep/tests/t.py", NEITHER),
        ],
    );
    let keep = format!("usr/lib/python{}/site-packages/keep", h.version);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg(&keep)
        .args(["--exclude", "tests"]));
    assert!(out.status.success());
    assert!(pycs(&site.join("keep"), "a", &h.tag)[0].exists());
    assert!(!site.join("other/__pycache__").exists());
    assert!(!site.join("keep/tests/__pycache__").exists());
    // An absolute path under the root works too (as %py_byte_compile passes it).
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg(site.join("other")));
    assert!(out.status.success());
    assert!(pycs(&site.join("other"), "b", &h.tag)[0].exists());
    // And a path as installed, the way messages print it.
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg(format!("/{keep}/tests"))
        .arg("--force"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pycs(&site.join("keep/tests"), "t", &h.tag)[0].exists());
    // Leaving the root is refused before anything happens.
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("usr/../../etc"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(".."));
}

/// The same, with symlinks in the root resolved without openat2 (Linux before 5.6, seccomp).
#[test]
fn paths_and_excludes_restrict_the_run_without_openat2() {
    fsroot::without_openat2(paths_and_excludes_restrict_the_run);
}

/// `%py_byte_compile python3 %{buildroot}/usr/share/foo/*.py` as the shell expands it: a `.py`
/// symlink among the files is compiled as the tree walk compiles it (read in the root, its
/// pycs beside the link), a dangling one is skipped as dangling, and a file that is not a Python
/// source is skipped with a warning.
#[test]
fn source_file_paths_including_symlinks() {
    let h = host();
    let (_t, root, _site) = site_root(&h, &[]);
    let app = root.join("usr/share/foo");
    write_files(&app, &[("a.py", "x = 1\n"), ("README.txt", "hello\n")]);
    std::os::unix::fs::symlink("a.py", app.join("b.py")).unwrap();
    std::os::unix::fs::symlink("/nonexistent.py", app.join("gone.py")).unwrap();
    // A loop and a link to a directory are no sources either: skipped, as compileall does.
    std::os::unix::fs::symlink("loop2.py", app.join("loop1.py")).unwrap();
    std::os::unix::fs::symlink("loop1.py", app.join("loop2.py")).unwrap();
    std::os::unix::fs::symlink(".", app.join("dirlink.py")).unwrap();
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args([
            "--interpreter",
            &format!("{}={}", h.version, h.python.display()),
        ])
        .args(
            [
                "a.py",
                "b.py",
                "gone.py",
                "README.txt",
                "loop1.py",
                "dirlink.py",
            ]
            .map(|n| app.join(n)),
        ));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("/usr/share/foo/loop1.py: a symlink loop; not compiled"),
        "{err}"
    );
    assert!(
        err.contains(
            "/usr/share/foo/dirlink.py: a symlink to a directory or other non-file; not compiled"
        ),
        "{err}"
    );
    assert!(!err.contains("error"), "{err}");
    for name in ["a", "b"] {
        assert!(
            pycs(&app, name, &h.tag).iter().all(|p| p.exists()),
            "{name}"
        );
    }
    assert!(
        err.contains(
            "/usr/share/foo/gone.py: a dangling symlink: /nonexistent.py does not exist in the \
             build root; not compiled"
        ),
        "{err}"
    );
    assert!(
        err.contains("/usr/share/foo/README.txt: not a Python source (*.py), skipped"),
        "{err}"
    );
    // The link's pyc holds the link's path, as compileall and importlib give it.
    let b = std::fs::read(&pycs(&app, "b", &h.tag)[0]).unwrap();
    let name = b"/usr/share/foo/b.py";
    assert!(b.windows(name.len()).any(|w| w == name), "co_filename");
    // A symlink that is not a source (here to a directory) is still refused.
    std::os::unix::fs::symlink(".", app.join("dir")).unwrap();
    let out = run(pyclink().arg("--buildroot").arg(&root).arg(app.join("dir")));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is a symlink"), "{}", stderr(&out));
}

/// The same, with symlinks in the root resolved without openat2 (Linux before 5.6, seccomp).
#[test]
fn source_file_paths_including_symlinks_without_openat2() {
    fsroot::without_openat2(source_file_paths_including_symlinks);
}

/// A regular file named `__pycache__` is called what it is, when compiling and verifying.
#[test]
fn a_regular_file_named_pycache_is_named_as_such() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("a/m.py", NEITHER)]);
    std::fs::write(site.join("a/__pycache__"), "").unwrap();
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "a/__pycache__: cannot create or open it: it is a regular file, not a directory"
        ),
        "{}",
        stderr(&out)
    );
    let out = run(pyclink().arg("verify").arg("--buildroot").arg(&root));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("a/__pycache__: stray: a regular file, not a directory"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn private_directory_and_dist_packages_use_the_given_version() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(
        &root,
        &[
            ("usr/share/app/app.py", DOC),
            ("usr/lib/python3/dist-packages/deb.py", NEITHER),
        ],
    );
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--python-version", &h.version]));
    assert!(out.status.success());
    assert!(pycs(&root.join("usr/lib/python3/dist-packages"), "deb", &h.tag)[0].exists());
    assert!(
        !root.join("usr/share/app/__pycache__").exists(),
        "private dirs only when named"
    );
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("usr/share/app"));
    assert!(
        out.status.success(),
        "with no version named, the host python3 is used"
    );
    assert_audit_ok(
        &root,
        &[format!(
            "{}:usr/share/app,usr/lib/python3/dist-packages",
            h.version
        )],
        &[],
    );
}

/// The root's own interpreter comes first; one that does not work is passed over for the
/// host's, in one warning line that says why (also under -q).
#[test]
fn a_broken_root_interpreter_is_named_in_one_line() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("m.py", NEITHER)]);
    let bin = root.join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/false", bin.join(format!("python{}", h.version))).unwrap();
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("-q"));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err,
        format!(
            "pyclink: warning: python{}: the build root's /usr/bin/python{} not used: the \
             worker exited with status 1\n",
            h.version, h.version
        )
    );
    assert!(pycs(&site, "m", &h.tag)[0].exists());
}

/// The same, with symlinks in the root resolved without openat2 (Linux before 5.6, seccomp).
#[test]
fn a_broken_root_interpreter_is_named_in_one_line_without_openat2() {
    fsroot::without_openat2(a_broken_root_interpreter_is_named_in_one_line);
}

/// A directory on no PATH entry's list: with it as PATH, no host interpreter is found (no
/// pythonX.Y, no pyenv), so a run that works is one with the root's own.
fn empty_path(t: &Path) -> PathBuf {
    let dir = t.join("no-interpreters-here");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Issue 22, item 2: relative, trailing `/`, `./`, `..`, symlinked and bind-mounted spellings
/// of a root that holds its own interpreter all run that interpreter (with no other anywhere:
/// PATH holds none, no pyenv), with the same summary, pycs (so the same co_filename) and
/// `--dry-run` listing, nothing of the interpreter's own on stderr, and `verify` (whose
/// checker runs the same interpreter) passing. A relative root used to give it a relative
/// PYTHONHOME, which the worker (cwd `/`) could not use: exit 2 where the host has no such
/// Python, as with dh_pyclink's `debian/PKG`.
#[test]
fn every_spelling_of_the_root_runs_its_own_python() {
    let test = "every_spelling_of_the_root_runs_its_own_python";
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let program = fsroot::root_with_its_own_python(&h, &root)
        .canonicalize()
        .unwrap();
    write_files(
        &root.join("usr/share/app"),
        &[("m.py", BOTH), ("sub/n.py", DOC), ("sub/o.py", ASSERT)],
    );
    let nobin = empty_path(t.path());
    std::fs::create_dir(t.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink("root", t.path().join("rel_link")).unwrap();
    std::os::unix::fs::symlink(&root, t.path().join("abs_link")).unwrap();
    let mut spellings: Vec<PathBuf> = [
        "root",
        "root/",
        "./root",
        "./root/.",
        "elsewhere/../root",
        "root//usr/..",
        "rel_link",
        "rel_link/",
        "abs_link/.",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    spellings.extend([
        root.clone(),
        PathBuf::from(format!("{}//", root.display())),
        t.path().join("abs_link"),
    ]);
    let bound = t.path().join("bound");
    std::fs::create_dir(&bound).unwrap();
    let bind = fsroot::bind_mounts_work(test);

    let cmd = |spelling: &Path, args: &[&str]| {
        let mut c = pyclink();
        // A subcommand comes first.
        c.current_dir(t.path())
            .env("PATH", &nobin)
            .args(args)
            .arg("--buildroot")
            .arg(spelling);
        c
    };
    let go = |spelling: &Path, args: &[&str], in_bind: bool| {
        let c = cmd(spelling, args);
        if in_bind {
            // unshare, sh and mount are looked up on the usual PATH; pyclink gets the empty one.
            let mut e = Command::new("env");
            e.arg(format!("PATH={}", nobin.display()))
                .arg(c.get_program())
                .args(c.get_args())
                .current_dir(t.path());
            for (k, v) in c.get_envs().filter(|(k, _)| *k != "PATH") {
                match v {
                    Some(v) => e.env(k, v),
                    None => e.env_remove(k),
                };
            }
            run(&mut fsroot::with_dir_bound_at(&root, &bound, &e))
        } else {
            run(&mut { c })
        }
    };
    let used = format!(
        " (the build root's /usr/bin/python{}), cache tag {}",
        h.version, h.tag
    );
    let mut first: Option<(String, std::collections::BTreeMap<PathBuf, Vec<u8>>, String)> = None;
    let runs = spellings
        .iter()
        .map(|s| (s.clone(), false))
        .chain(bind.then(|| (bound.clone(), true)));
    for (spelling, in_bind) in runs {
        let out = go(&spelling, &["-v", "--force", "usr/share/app"], in_bind);
        let err = stderr(&out);
        assert!(out.status.success(), "{spelling:?}: {err}");
        assert!(
            err.lines().all(|l| l.starts_with("pyclink: ")),
            "{spelling:?}: only pyclink's own lines: {err}"
        );
        if in_bind {
            assert!(err.contains(&used), "{spelling:?}: {err}");
        } else {
            assert!(
                err.contains(&format!("{}{used}", program.display())),
                "{spelling:?}: {err}"
            );
        }
        let listing = stdout(&go(&spelling, &["--dry-run", "usr/share/app"], in_bind));
        let now = (stdout(&out), pyc_contents(&root), listing);
        assert_eq!(now.1.len(), 9, "{spelling:?}: {:?}", now.1.keys());
        match &first {
            None => first = Some(now),
            Some(f) => {
                assert_eq!(f.0, now.0, "{spelling:?}: the summary");
                assert!(f.1 == now.1, "{spelling:?}: the pycs differ");
                if !in_bind {
                    assert_eq!(f.2, now.2, "{spelling:?}: the --dry-run listing");
                }
            }
        }
        let out = go(
            &spelling,
            &["verify", "-o", "0,1,2", "usr/share/app"],
            in_bind,
        );
        assert_eq!(out.status.code(), Some(0), "{spelling:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("9 pyc checked") && !stderr(&out).contains("Python"),
            "{spelling:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // -q: nothing at all.
    let out = go(
        Path::new("root"),
        &["-q", "--force", "usr/share/app"],
        false,
    );
    assert!(out.status.success() && out.stderr.is_empty() && out.stdout.is_empty());
    assert_audit_ok(&root, &[format!("{}:usr/share/app", h.version)], &[]);
    // Its stdlib imports wrote no pycs of their own into the root.
    let stdlib = root.join(format!("usr/lib/python{}", h.version));
    assert!(
        pyc_contents(&stdlib).is_empty(),
        "{:?}",
        pyc_contents(&stdlib).keys()
    );
}

/// The same, with the root's interpreter (reached through symlinks) resolved without openat2.
#[test]
fn every_spelling_of_the_root_runs_its_own_python_without_openat2() {
    fsroot::without_openat2(every_spelling_of_the_root_runs_its_own_python);
}

/// Issue 22, item 2: a root interpreter that cannot start (its stdlib lacks `encodings`) is
/// passed over in one line, never by its page of "Fatal Python error" on stderr, also under
/// -q and also in verify; -v shows the end of that stderr; with no other interpreter, the
/// error is that one line. A root whose path holds `:` (which PYTHONHOME cannot carry) is
/// passed over in one line too.
#[test]
fn a_root_python_that_cannot_start_is_passed_over_in_one_line() {
    let h = host();
    let v = &h.version;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fsroot::root_with_its_own_python(&h, &root);
    let app = root.join("usr/share/app");
    write_files(&app, &[("m.py", BOTH)]);
    let stdlib = root.join(format!("usr/lib/python{v}"));
    std::fs::rename(stdlib.join("encodings"), stdlib.join("encodings.away")).unwrap();
    let nobin = empty_path(t.path());
    // The root's spelling last: a subcommand comes first.
    let pyclink_in = |root: &'static str, args: &[&str]| {
        let mut c = pyclink();
        c.current_dir(t.path())
            .args(args)
            .arg("--buildroot")
            .arg(root);
        c
    };
    let reason = format!(
        "python{v}: the build root's /usr/bin/python{v} not used: the worker exited with \
         status 1: Fatal Python error: "
    );

    let out = run(&mut pyclink_in("root", &["-q", "usr/share/app"]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("pyclink: warning: {reason}"))
            && err.contains("No module named 'encodings'")
            && err.ends_with(" (-v shows the end of its stderr)\n"),
        "{err}"
    );
    assert!(pycs(&app, "m", &h.tag).iter().all(|p| p.exists()));

    let out = run(&mut pyclink_in("root", &["-v", "--force", "usr/share/app"]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.lines().all(|l| l.starts_with("pyclink: ")), "{err}");
    assert!(
        err.contains(&format!(
            "pyclink: note: python{v}: the build root's /usr/bin/python{v}, its stderr: Fatal Python error: "
        )),
        "{err}"
    );

    let out = run(&mut pyclink_in(
        "root",
        &["verify", "-q", "-o", "0,1,2", "usr/share/app"],
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.lines().count() == 1 && err.contains(&reason),
        "verify: {err}"
    );

    let out = run(pyclink_in("root", &["-q", "usr/share/app"]).env("PATH", &nobin));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("pyclink: error: no interpreter found for python{v}; tried: the build root's /usr/bin/python{v}: the worker exited with status 1: Fatal Python error: ")),
        "{err}"
    );

    std::fs::rename(stdlib.join("encodings.away"), stdlib.join("encodings")).unwrap();
    let colon = t.path().join("a:b");
    std::fs::create_dir(&colon).unwrap();
    std::fs::rename(&root, colon.join("root")).unwrap();
    let out = run(&mut pyclink_in(
        "a:b/root",
        &["-q", "--force", "usr/share/app"],
    ));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err,
        format!(
            "pyclink: warning: python{v}: the build root's /usr/bin/python{v} not used: the \
             build root's path {} holds ':', which PYTHONHOME and LD_LIBRARY_PATH cannot \
             carry\n",
            colon.canonicalize().unwrap().join("root").display()
        )
    );
}

/// Issue 22, item 12: sources outside every tree (an application in /opt, pip's `--root`
/// layout of a pyenv Python) are counted and placed, with how to compile them, at every
/// quiet level, in the JSON too; the exit status stays 0 (Fedora's brp-python-bytecompile
/// ignores them too). Following the advice compiles them, and sources that then have pycs
/// are no longer warned about. Beside trees, the warning names only what is outside them;
/// a run restricted to PATHs says nothing of the rest.
#[test]
fn sources_outside_every_tree_are_counted_with_how_to_compile_them() {
    let h = host();
    let v = &h.version;
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(
        &root,
        &[
            ("opt/app/main.py", NEITHER),
            ("opt/app/lib/util.py", DOC),
            ("opt/app/README", "not python\n"),
        ],
    );
    let pip = format!("root/.pyenv/versions/{v}.1/lib/python{v}");
    write_files(
        &root.join(&pip).join("site-packages"),
        &[("pkg/__init__.py", NEITHER), ("six.py", BOTH)],
    );
    let json = t.path().join("s.json");
    let line = format!(
        "pyclink: warning: 4 .py files outside every Python tree have no pycs: /opt/app (2), \
         /{pip} (2); to compile them, give their directories as PATHs (pyclink --buildroot ROOT \
         /opt/app), or in an RPM spec %py_byte_compile %{{python3}} %{{buildroot}}/opt/app, or \
         list opt/app in debian/PKG.pyclink"
    );
    for quiet in [&[][..], &["-q"][..]] {
        let out = run(pyclink()
            .arg("--buildroot")
            .arg(&root)
            .arg("--summary-json")
            .arg(&json)
            .args(quiet));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(
            err.contains("pyclink: warning: no Python trees found in "),
            "{err}"
        );
        assert!(err.lines().any(|l| l == line), "{quiet:?}: {line}\n{err}");
        let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        let o = &s["outside_trees"];
        assert_eq!(
            (&o["sources"], &o["without_pycs"]),
            (&4.into(), &4.into()),
            "{o}"
        );
        assert_eq!(o["places"][1]["dir"], format!("/{pip}"), "{o}");
        assert_eq!(o["complete"], true);
        assert!(pyc_contents(&root).is_empty());
    }
    // What it says to do compiles them, the pip tree for its own version.
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("/opt/app")
        .arg(format!("/{pip}")));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pycs(&root.join(&pip).join("site-packages"), "six", &h.tag)
        .iter()
        .all(|p| p.exists()));
    assert!(pycs(&root.join("opt/app/lib"), "util", &h.tag)[0].exists());
    // Beside a tree, compiled ones are left unsaid.
    write_files(
        &root.join(format!("usr/lib/python{v}/site-packages")),
        &[("m.py", NEITHER)],
    );
    write_files(&root, &[("srv/tool/new.py", NEITHER)]);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--summary-json")
        .arg(&json));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("no Python trees found"), "{err}");
    assert!(
        err.contains(
            "pyclink: warning: 1 of the 5 .py files outside every Python tree has no pycs: \
             /srv/tool (1); "
        ),
        "{err}"
    );
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(s["outside_trees"]["without_pycs"], 1);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg(format!("usr/lib/python{v}"))
        .arg("--summary-json")
        .arg(&json));
    assert!(out.status.success());
    assert!(!stderr(&out).contains("outside every Python tree"));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(s["outside_trees"].is_null());
}

/// Issue 22, item 12: the RPM hook (run as rpm runs it, on the whole root) says the same, and
/// keeps Fedora's exit status 0.
#[test]
fn the_rpm_hook_names_sources_outside_every_tree() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(&root, &[("opt/app/x.py", NEITHER)]);
    let out = run(Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("macros/brp-pyclink"))
        .args(["", "1", "", ""])
        .env("RPM_BUILD_ROOT", &root)
        .env("PYCLINK", env!("CARGO_BIN_EXE_pyclink"))
        .env_remove("SOURCE_DATE_EPOCH"));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "pyclink: warning: 1 .py file outside every Python tree has no pycs: /opt/app (1); \
             to compile them, "
        ) && err.contains("%py_byte_compile %{python3} %{buildroot}/opt/app"),
        "{err}"
    );
    assert!(pyc_contents(&root).is_empty());
}

#[test]
fn missing_interpreter_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(&root, &[("usr/lib/python3.99/site-packages/x.py", NEITHER)]);
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("no interpreter found for python3.99"), "{err}");
    assert!(
        err.contains("python3.99 on PATH") && err.contains("/usr/bin/python3.99"),
        "names what was tried: {err}"
    );
    assert!(!root
        .join("usr/lib/python3.99/site-packages/__pycache__")
        .exists());
    // Naming one that is not that version is refused too.
    let h = host();
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--interpreter")
        .arg(format!("3.99={}", h.python.display())));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("it is python{}, not python3.99", h.version)),
        "{}",
        stderr(&out)
    );
}

#[test]
fn no_build_root_is_a_clear_error() {
    let out = run(&mut pyclink());
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no build root: give --buildroot DIR or set RPM_BUILD_ROOT"));
    let t = tempfile::tempdir().unwrap();
    let h = host();
    write_files(
        t.path(),
        &[(&format!("usr/lib/python{}/m.py", h.version), NEITHER)],
    );
    let out = run(pyclink().env("RPM_BUILD_ROOT", t.path()));
    assert!(
        out.status.success(),
        "RPM_BUILD_ROOT is the default build root"
    );
}

#[test]
fn help_teaches() {
    let out = run(pyclink().arg("--help"));
    let text = stdout(&out);
    for needle in [
        "Examples:",
        "--buildroot",
        "--interpreter",
        "SOURCE_DATE_EPOCH",
        "Exit status",
        "--summary-json",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
}

/// A real filesystem without hardlinks: exFAT through FUSE on a loop device. Needs root,
/// /dev/fuse and exfat-fuse; the unit test write::refused_links_fall_back_to_copies covers the
/// same path at the syscall level everywhere.
#[test]
fn no_hardlink_filesystem_gets_copies() {
    let h = host();
    let Some(mnt) = ExfatMount::new() else { return };
    let root = mnt.dir.join("root");
    let site = root.join(format!("usr/lib/python{}/site-packages", h.version));
    std::fs::create_dir_all(&site).unwrap();
    write_files(&site, &[("neither.py", NEITHER), ("doc.py", DOC)]);
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("(3 written, 0 hardlinked, 3 copied)"),
        "{}",
        stdout(&out)
    );
    let p = pycs(&site, "neither", &h.tag);
    assert_eq!(std::fs::read(&p[0]).unwrap(), std::fs::read(&p[2]).unwrap());
    assert!(temp_files(&root).is_empty());
    assert_audit_ok(&root, &expect(&h), &["--no-links"]);
}

struct ExfatMount {
    _img: tempfile::TempDir,
    dir: PathBuf,
    loopdev: String,
}

impl ExfatMount {
    fn new() -> Option<ExfatMount> {
        let skip = |why: &str| {
            println!("SKIP no_hardlink_filesystem_gets_copies: {why}; the syscall-level unit test still ran");
            None
        };
        let img = tempfile::tempdir().unwrap();
        let file = img.path().join("fs.img");
        let dir = img.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let ok = |c: &mut Command| c.output().map(|o| o.status.success()).unwrap_or(false);
        if !ok(Command::new("truncate").args(["-s", "64M"]).arg(&file))
            || !ok(Command::new("mkfs.exfat").arg(&file))
        {
            return skip("mkfs.exfat is not available (package exfatprogs)");
        }
        let Ok(out) = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&file)
            .output()
        else {
            return skip("losetup is not available");
        };
        if !out.status.success() {
            return skip(&format!(
                "cannot attach a loop device: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let loopdev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let m = Command::new("mount.exfat-fuse")
            .arg(&loopdev)
            .arg(&dir)
            .output();
        if !m.is_ok_and(|o| o.status.success()) {
            let _ = Command::new("losetup").args(["-d", &loopdev]).status();
            return skip("cannot mount exFAT with FUSE (package exfat-fuse, /dev/fuse, root)");
        }
        Some(ExfatMount {
            _img: img,
            dir,
            loopdev,
        })
    }
}

impl Drop for ExfatMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

/// A private directory with a bundled virtualenv: the virtualenv's lib/pythonX.Y is compiled
/// for X.Y, and so is the app beside it (the versions found in the root are the targets of
/// unversioned trees; the app runs on its virtualenv's interpreter), not the host's python3.
#[test]
fn virtualenv_in_a_private_directory_sets_the_version() {
    let h = host();
    let Some(other) = ["3.12", "3.10", "3.13", "3.9"]
        .into_iter()
        .find(|v| *v != h.version && find_python(v).is_some())
    else {
        println!(
            "SKIP virtualenv_in_a_private_directory: no second Python 3.9-3.13 besides {}",
            h.version
        );
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let venv_site = format!("opt/app/venv/lib/python{other}/site-packages");
    write_files(
        &root,
        &[
            ("opt/app/app/main.py", DOC),
            (&format!("{venv_site}/dep.py"), BOTH),
        ],
    );
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("opt/app"));
    assert!(out.status.success());
    let text = stdout(&out);
    assert_eq!(text.trim(), format!("pyclink: python{other}: 2 sources, 6 pyc (5 written, 1 hardlinked, 0 copied), 0 errors, 0.0 MiB -> 0.0 MiB"));
    assert_audit_ok(&root, &[format!("{other}:opt/app")], &[]);
    assert!(!root
        .join(format!("opt/app/app/__pycache__/main.{}.pyc", h.tag))
        .exists());
    // Naming the app's version explicitly still keeps the virtualenv on its own.
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("opt/app")
        .args(["--python-version", &h.version]));
    assert!(out.status.success());
    assert!(root
        .join(format!("opt/app/app/__pycache__/main.{}.pyc", h.tag))
        .exists());
    assert!(!root
        .join(format!("{venv_site}/__pycache__/dep.{}.pyc", h.tag))
        .exists());
}

/// Issue 12: a private directory in a root whose Python is not the host's is compiled for the
/// root's Python, whatever PATHs restrict the run to (the package's interpreter would never read
/// the host version's pycs and would write its own at run time).
#[test]
fn private_directory_follows_the_python_of_the_root() {
    let h = host();
    let Some(other) = ["3.12", "3.13", "3.10", "3.9"]
        .into_iter()
        .find(|v| *v != h.version && find_python(v).is_some())
    else {
        println!(
            "SKIP private_directory_follows_the_python_of_the_root: no Python 3.9-3.13 besides {}",
            h.version
        );
        return;
    };
    let other_tag = cache_tag(&find_python(other).unwrap());
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(
        &root,
        &[
            (
                &format!("usr/lib/python{other}/site-packages/new.py"),
                NEITHER,
            ),
            ("usr/share/myapp/helper.py", DOC),
        ],
    );
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("usr/share/myapp")
        .arg("-v"));
    assert!(out.status.success());
    let helper = root.join("usr/share/myapp/__pycache__");
    assert!(helper.join(format!("helper.{other_tag}.pyc")).exists());
    assert!(
        !helper.join(format!("helper.{}.pyc", h.tag)).exists(),
        "not the host's python3"
    );
    assert!(
        stderr(&out).contains(&format!(
            "/usr/share/myapp compiled for python{other} (the Python 3 versions found in the build root)"
        )),
        "-v says which version and why: {}",
        stderr(&out)
    );
    assert!(
        !root
            .join(format!("usr/lib/python{other}/site-packages/__pycache__"))
            .exists(),
        "the PATH still restricts what is compiled"
    );
    assert_audit_ok(&root, &[format!("{other}:usr/share/myapp")], &[]);
    // Naming a version, or an interpreter, still wins.
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("usr/share/myapp")
        .args(["--python-version", &h.version]));
    assert!(out.status.success());
    assert!(helper.join(format!("helper.{}.pyc", h.tag)).exists());
}

/// Issue 12: compiler warnings name their file on stderr and in the JSON, without -v.
#[test]
fn compiler_warnings_name_their_file() {
    let h = host();
    let (t, root, _site) = site_root(&h, &[("esc.py", "import re\nPAT = '\\d+'\n")]);
    let json = t.path().join("s.json");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--summary-json")
        .arg(&json));
    assert!(out.status.success());
    let shown = format!("/usr/lib/python{}/site-packages/esc.py:2: ", h.version);
    assert!(
        stderr(&out).contains(&shown) && stderr(&out).contains("invalid escape sequence"),
        "{}",
        stderr(&out)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let warnings = summary["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{summary}");
    assert!(warnings[0].as_str().unwrap().starts_with(&shown));
    assert_eq!(summary["versions"][0]["warnings"], 1);
}

/// `--dry-run` (`--list`) names each version's interpreter and every source it would compile,
/// and writes nothing: no pyc, no `__pycache__`.
#[test]
fn dry_run_lists_and_writes_nothing() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("a.py", "x = 1\n"), ("pkg/b.py", "assert x\n")]);
    let private = root.join("usr/share/app");
    write_files(&root, &[("usr/share/app/c.py", "y = 2\n")]);
    for flag in ["--dry-run", "--list"] {
        let out = run(pyclink()
            .arg("--buildroot")
            .arg(&root)
            .arg(flag)
            .args(["-o", "0,1"]));
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        let header = text.lines().next().unwrap();
        assert!(
            header.starts_with(&format!("python{}: 2 sources with ", h.version))
                && header.contains(&format!("cache tag {}", h.tag))
                && header.ends_with("levels 0 1)"),
            "{text}"
        );
        for src in [
            format!("/usr/lib/python{}/site-packages/a.py", h.version),
            format!("/usr/lib/python{}/site-packages/pkg/b.py", h.version),
        ] {
            assert!(text.lines().any(|l| l.trim() == src), "{src}: {text}");
        }
        assert!(!site.join("__pycache__").exists());
        assert!(!site.join("pkg/__pycache__").exists());
    }
    // After a run, what is up to date is marked so (the run's own freshness check).
    let pkg = site.join("pkg");
    assert!(run(pyclink().arg("--buildroot").arg(&root).arg(&pkg))
        .status
        .success());
    let text = stdout(&run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--dry-run")));
    assert!(
        text.starts_with(&format!(
            "python{}: 2 sources (1 up to date) with ",
            h.version
        )),
        "{text}"
    );
    let b = format!(
        "/usr/lib/python{}/site-packages/pkg/b.py (up to date)",
        h.version
    );
    let a = format!("/usr/lib/python{}/site-packages/a.py", h.version);
    assert!(text.lines().any(|l| l.trim() == b), "{text}");
    assert!(text.lines().any(|l| l.trim() == a), "{text}");
    std::fs::remove_dir_all(pkg.join("__pycache__")).unwrap();
    // A private directory, given as a PATH, for the root's Python.
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--dry-run", "usr/share/app"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("python{}: 1 source with ", h.version))
            && text.lines().any(|l| l.trim() == "/usr/share/app/c.py"),
        "{text}"
    );
    assert!(!private.join("__pycache__").exists());
}

/// Report item 1: with `--summary-json -` (and no -q), stdout is exactly one JSON document and
/// the summary line goes to stderr; for compile and normalize alike.
#[test]
fn summary_json_on_stdout_is_all_of_stdout() {
    let h = host();
    let (_t, root, _site) = site_root(&h, &[("a.py", NEITHER)]);
    for sub in [None, Some("normalize")] {
        let out = run(pyclink()
            .args(sub)
            .arg("--buildroot")
            .arg(&root)
            .args(["--summary-json", "-"]));
        assert!(out.status.success(), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{sub:?}: stdout is not JSON ({e}): {}", stdout(&out)));
        assert_eq!(json["exit_code"], 0);
        assert!(
            stderr(&out).contains("pyclink"),
            "{sub:?}: {}",
            stderr(&out)
        );
    }
}

/// Report item 4: every run refused with exit 2 writes its subcommand's JSON with
/// `fatal_error`, including the refusals of the command line's values.
#[test]
fn summary_json_is_written_for_refused_runs() {
    let h = host();
    let (t, root, site) = site_root(&h, &[("a.py", NEITHER)]);
    let json = t.path().join("s.json");
    let file = site.join("a.py");
    let cases: Vec<(Vec<&std::ffi::OsStr>, &str, &str)> = vec![
        (
            vec!["--buildroot".as_ref(), "/nonexistent/root".as_ref()],
            "pyclink-summary",
            "does not exist",
        ),
        (
            vec!["--buildroot".as_ref(), file.as_os_str()],
            "pyclink-summary",
            "not a directory",
        ),
        (
            vec![
                "--buildroot".as_ref(),
                root.as_os_str(),
                "-o".as_ref(),
                "5".as_ref(),
            ],
            "pyclink-summary",
            "invalid optimization level 5",
        ),
        (
            vec![
                "--buildroot".as_ref(),
                root.as_os_str(),
                "-j".as_ref(),
                "-1".as_ref(),
            ],
            "pyclink-summary",
            "-j takes a number",
        ),
        (
            vec!["--buildroot".as_ref(), "/".as_ref()],
            "pyclink-summary",
            "never the live system",
        ),
        (
            vec![
                "verify".as_ref(),
                "--buildroot".as_ref(),
                "/nonexistent/root".as_ref(),
            ],
            "pyclink-verify",
            "does not exist",
        ),
        (
            vec![
                "normalize".as_ref(),
                "--buildroot".as_ref(),
                "/nonexistent/root".as_ref(),
            ],
            "pyclink-normalize",
            "does not exist",
        ),
        (
            vec!["normalize".as_ref(), "--buildroot".as_ref(), "/".as_ref()],
            "pyclink-normalize",
            "never the live system",
        ),
    ];
    for (args, schema, why) in cases {
        let _ = std::fs::remove_file(&json);
        let out = run(pyclink().args(&args).arg("--summary-json").arg(&json));
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let text = std::fs::read_to_string(&json)
            .unwrap_or_else(|e| panic!("{args:?}: no JSON written: {e}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], schema, "{args:?}");
        assert_eq!(v["exit_code"], 2, "{args:?}");
        assert!(
            v["fatal_error"].as_str().is_some_and(|e| e.contains(why)),
            "{args:?}: {v}"
        );
    }
}

/// Report item 5: a dry run neither creates nor truncates the `--summary-json` FILE.
#[test]
fn dry_run_leaves_the_summary_json_alone() {
    let h = host();
    let (t, root, _site) = site_root(&h, &[("a.py", NEITHER)]);
    let json = t.path().join("s.json");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--dry-run")
        .arg("--summary-json")
        .arg(&json));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!json.exists(), "a dry run created {}", json.display());
    std::fs::write(&json, "old").unwrap();
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--dry-run")
        .arg("--summary-json")
        .arg(&json));
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&json).unwrap(), "old");
}

/// Report item 16: a file's compiler warnings come in line order (CPython gives the parser's
/// before the code generator's, whatever their lines).
#[test]
fn compiler_warnings_come_in_line_order() {
    let h = host();
    let (_t, root, _site) = site_root(&h, &[("w.py", "x = 1\ny = x is 1\na = '\\d'\n")]);
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert!(out.status.success());
    let lines: Vec<u32> = stderr(&out)
        .lines()
        .filter_map(|l| l.split("w.py:").nth(1)?.split(':').next()?.parse().ok())
        .collect();
    assert_eq!(lines, vec![2, 3], "{}", stderr(&out));
}

/// Report items 14 and 17: a rerun that writes nothing has no sizes in its line; `-vv` says
/// why a pyc with a fresh header is rewritten.
#[test]
fn rerun_line_and_why_pycs_are_rewritten() {
    let h = host();
    let (_t, root, _site) = site_root(&h, &[("a.py", NEITHER)]);
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("--no-link"));
    assert!(out.status.success());
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("-vv"));
    assert!(
        stderr(&out).contains("a.py: rewriting its pycs: ")
            && stderr(&out).contains("identical to another level but not hardlinked to it"),
        "{}",
        stderr(&out)
    );
    let out = run(pyclink().arg("--buildroot").arg(&root));
    let line = stdout(&out);
    assert!(line.contains("3 up to date), 0 errors\n"), "{line}");
    assert!(!line.contains("MiB"), "{line}");
}

/// Report 2, items 1, 9, 13 and 14: normalize refuses a PATH through a symlink that leads out
/// of the root and a missing PATH as verify does (exit 2, `fatal_error`), and a source PATH
/// stands for its module's pycs.
#[test]
fn normalize_paths_are_resolved_as_verify_resolves_them() {
    let h = host();
    let (t, root, site) = site_root(&h, &[("a.py", NEITHER), ("ab.py", NEITHER)]);
    let outside = t.path().join("outside");
    std::fs::create_dir_all(outside.join("pkg/__pycache__")).unwrap();
    std::fs::write(outside.join("pkg/__pycache__/o.cpython-312.pyc"), b"x").unwrap();
    std::fs::create_dir_all(root.join("usr/share")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("usr/share/out")).unwrap();
    for (path, why) in [
        ("/usr/share/out/pkg", "symlink"),
        ("/usr/share/out", "symlink"),
        ("/usr/share/nothere", "does not exist in the build root"),
    ] {
        let out = run(pyclink()
            .args(["normalize", "--buildroot"])
            .arg(&root)
            .args(["--summary-json", "-", path]));
        assert_eq!(out.status.code(), Some(2), "{path}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            v["fatal_error"].as_str().is_some_and(|e| e.contains(why)),
            "{path}: {v}"
        );
        assert!(stderr(&out).contains(why), "{path}: {}", stderr(&out));
    }

    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["-o", "0", "--no-normalize"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(pyclink()
        .args(["normalize", "--no-link", "--buildroot"])
        .arg(&root)
        .arg(site.join("a.py")));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("pyclink normalize: 1 pyc (1 file):"),
        "{}",
        stdout(&out)
    );
}

/// The same, with symlinks in the root resolved without openat2 (Linux before 5.6, seccomp).
#[test]
fn normalize_paths_are_resolved_as_verify_resolves_them_without_openat2() {
    fsroot::without_openat2(normalize_paths_are_resolved_as_verify_resolves_them);
}

/// A PATH that holds a versioned tree covers the rest of it too, as `compileall DIR` does: the
/// tree for its version, the rest as a private directory. Verify's `-o` asks for the same pycs.
#[test]
fn a_path_holding_a_versioned_tree_covers_the_rest() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("b.py", NEITHER)]);
    let app = root.join("usr/share/foo");
    write_files(&app, &[("a.py", NEITHER)]);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--dry-run", "/usr"]));
    let listing = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(listing.contains("/usr/share/foo/a.py"), "{listing}");
    assert!(listing.contains("site-packages/b.py"), "{listing}");
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("/usr"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(pycs(&app, "a", &h.tag).iter().all(|p| p.exists()));
    assert!(pycs(&site, "b", &h.tag).iter().all(|p| p.exists()));
    let out = run(pyclink()
        .arg("verify")
        .arg("--buildroot")
        .arg(&root)
        .args(["-o", "0,1,2", "/usr"]));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("6 pyc checked"), "{}", stdout(&out));
}

/// An `-x` pattern that excludes nothing is named; the build root's own spelling of a path
/// pattern (`%{buildroot}/usr/...`) is one that does exclude.
#[test]
fn an_exclude_that_matches_nothing_is_named() {
    let h = host();
    let (_t, root, site) = site_root(&h, &[("keep/a.py", NEITHER), ("skip/b.py", NEITHER)]);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--dry-run")
        .arg("-x")
        .arg(site.join("skip"))
        .args(["-x", "nosuch*.py"]));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!stdout(&out).contains("skip/b.py"), "{}", stdout(&out));
    assert!(err.contains("-x nosuch*.py matched nothing"), "{err}");
    assert_eq!(err.matches("matched nothing").count(), 1, "{err}");
}

/// Issue 22, item 1: no quiet level hides an error or a warning about a source. `-q` (and the
/// config file's `quiet = true`) leaves out the summary lines only: a source that does not
/// compile is shown with `--errors warn` as with `fail`, and so are compiler warnings and
/// skipped symlinks; `verify -q` and `normalize -q` still show their problems and errors.
#[test]
fn quiet_never_hides_errors_or_warnings() {
    let h = host();
    let (t, root, site) = site_root(
        &h,
        &[
            ("good.py", NEITHER),
            ("bad.py", "x = (\n"),
            ("esc.py", "import re\nPAT = '\\d+'\n"),
        ],
    );
    std::os::unix::fs::symlink("/usr/share/nowhere.py", site.join("dangling.py")).unwrap();
    let sp = format!("/usr/lib/python{}/site-packages", h.version);
    let cfg = t.path().join("quiet.toml");
    std::fs::write(&cfg, "quiet = true\nerrors = \"warn\"\n").unwrap();
    let quiet_runs: [(&[&str], Option<i32>, &str); 4] = [
        (&["--errors", "warn", "-q"], Some(0), "warning"),
        (&["-q"], Some(1), "error"),
        (
            &["--errors", "warn", "-q", "--summary-json", "-"],
            Some(0),
            "warning",
        ),
        (&["--config", cfg.to_str().unwrap()], Some(0), "warning"),
    ];
    for (args, code, word) in quiet_runs {
        let out = run(pyclink().arg("--buildroot").arg(&root).args(args).arg("-f"));
        assert_eq!(out.status.code(), code, "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        for want in [
            format!("pyclink: {word}: {sp}/bad.py:1: SyntaxError: "),
            format!("pyclink: warning: {sp}/esc.py:2: "),
            format!("pyclink: warning: {sp}/dangling.py: a dangling symlink"),
        ] {
            assert!(
                err.lines().any(|l| l.starts_with(&want)),
                "{args:?}: no {want:?} in:\n{err}"
            );
        }
        // The summary is what -q leaves out (on stderr with --summary-json -).
        assert!(!stdout(&out).contains("pyclink: python"), "{args:?}");
        assert!(!err.contains(" sources, "), "{args:?}: {err}");
        assert!(pycs(&site, "good", &h.tag)[0].exists());
        assert!(!pycs(&site, "bad", &h.tag)[0].exists());
    }

    // verify -q: each problem is printed; so is the warning that nothing was found.
    // Another size, so that the header is stale within the same second too.
    std::fs::write(site.join("good.py"), "x = 22\n").unwrap();
    let out = run(pyclink().args(["verify", "-q", "--buildroot"]).arg(&root));
    assert_eq!(out.status.code(), Some(1));
    let good_pyc = format!("{sp}/__pycache__/good.{}.pyc: stale: ", h.tag);
    assert!(
        stdout(&out).lines().any(|l| l.starts_with(&good_pyc)),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("pyc checked"), "{}", stdout(&out));
    let empty = t.path().join("empty");
    std::fs::create_dir_all(empty.join("usr/share")).unwrap();
    let out = run(pyclink().args(["verify", "-q", "--buildroot"]).arg(&empty));
    assert!(
        stderr(&out).contains("pyclink: warning: no pyc found under"),
        "{}",
        stderr(&out)
    );

    // normalize -q: a pyc that does not parse is an error, printed.
    let junk = site.join(format!("__pycache__/junk.{}.pyc", h.tag));
    let mut bytes = std::fs::read(&pycs(&site, "esc", &h.tag)[0]).unwrap();
    bytes.truncate(20);
    std::fs::write(&junk, bytes).unwrap();
    let out = run(pyclink()
        .args(["normalize", "-q", "--buildroot"])
        .arg(&root));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out)
            .lines()
            .any(|l| l.starts_with(&format!("pyclink: error: {sp}/__pycache__/junk."))),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
}

/// Issue 22, item 7: a number out of bounds is refused with exit 2, a message naming the flag
/// or the config file and key, and the JSON's fatal_error; `--timeout 1e19` and
/// `timeout = 1e30` used to panic (exit 101) in compile and in verify.
#[test]
fn numbers_out_of_bounds_are_refused_never_a_panic() {
    let h = host();
    let (t, root, _site) = site_root(&h, &[("a.py", NEITHER)]);
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    let cfg = t.path().join("c.toml");
    std::fs::write(&cfg, "timeout = 1e30\n").unwrap();
    let cfg = cfg.to_str().unwrap();
    let json = t.path().join("s.json");
    let cases: [(&[&str], &str); 9] = [
        (&["--timeout", "1e19"], "--timeout 1e19: "),
        (&["--config", cfg], "c.toml: timeout = 1e30: "),
        (&["verify", "--timeout", "1e19"], "--timeout 1e19: "),
        (&["verify", "--timeout", "-1e-300"], "--timeout -1e-300: "),
        (&["--cache-max-size", "1e30"], "--cache-max-size 1e30: "),
        (&["--cache-max-size", "-1"], "--cache-max-size -1: "),
        (
            &["-j", "99999999999999999999"],
            "--jobs 99999999999999999999: ",
        ),
        (&["verify", "-j", "-1"], "--jobs -1: "),
        (&["normalize", "-j", "1025"], "--jobs 1025: "),
    ];
    for (args, says) in cases {
        let _ = std::fs::remove_file(&json);
        let (sub, rest) = match args[0] {
            "verify" | "normalize" => (Some(args[0]), &args[1..]),
            _ => (None, args),
        };
        let out = run(pyclink()
            .args(sub)
            .arg("--buildroot")
            .arg(&root)
            .args(rest)
            .arg("--summary-json")
            .arg(&json));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("pyclink: error: "), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: no {says:?} in {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        assert_eq!(v["exit_code"], 2, "{args:?}");
        assert!(
            v["fatal_error"].as_str().unwrap().contains(says.trim_end()),
            "{args:?}: {v}"
        );
    }
    // The bounds themselves are accepted, and the run goes on.
    let out = run(pyclink().arg("verify").arg("--buildroot").arg(&root).args([
        "--timeout",
        "86400",
        "-j",
        "1024",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
}
