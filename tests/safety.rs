//! Safety and faults: nothing outside the build root is touched, no half-written pyc ever, and
//! every bad input gets a clear error while everything else is still compiled.
//!
//! Cases that need root (mounts, device nodes, another user) set that up themselves and print
//! `SKIP <test>: why` when the machine refuses, rather than passing silently.

mod common;
use common::*;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn site_of(h: &Host, root: &Path) -> PathBuf {
    root.join(format!("usr/lib/python{}/site-packages", h.version))
}

fn expect_site(h: &Host) -> Vec<String> {
    vec![format!("{}:usr/lib/python{}", h.version, h.version)]
}

// ----------------------------------------------------------------------------------------
// Containment

/// Symlinks of every kind point out of the root; after the run, a sentinel directory outside
/// is exactly as it was (same entries, inodes, mtimes, sizes), and so is a host file whose
/// absolute path a link names.
#[test]
fn nothing_outside_the_root_is_touched() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let sentinel = t.path().join("sentinel");
    write_files(
        &sentinel,
        &[
            ("target.py", "SENTINEL = 1\n"),
            ("sub/inner.py", "x = 1\n"),
            ("victim.pyc", "precious"),
        ],
    );
    // A host file, and a different file at the same absolute path inside the root.
    let shadow = t.path().join("shadow");
    write_files(&shadow, &[("real.py", "WHERE = 'host-copy'\n")]);
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    write_files(
        &root.join(shadow.strip_prefix("/").unwrap()),
        &[("real.py", "WHERE = 'root-copy'\n")],
    );
    write_files(
        &site,
        &[
            ("good.py", "x = 1\n"),
            ("pkg/mod.py", "x = 1\n"),
            ("pkg2/m.py", "x = 2\n"),
        ],
    );

    symlink(&sentinel, site.join("linkdir_abs")).unwrap();
    let up = "../".repeat(site.strip_prefix(t.path()).unwrap().components().count());
    symlink(format!("{up}sentinel"), site.join("linkdir_rel")).unwrap();
    assert!(
        site.join("linkdir_rel/target.py").exists(),
        "the relative link really leads out"
    );
    symlink(sentinel.join("target.py"), site.join("outside.py")).unwrap();
    symlink(
        format!("{up}{up}{up}sentinel/target.py"),
        site.join("outside_rel.py"),
    )
    .unwrap();
    symlink(shadow.join("real.py"), site.join("inroot.py")).unwrap();
    symlink(&sentinel, site.join("pkg/__pycache__")).unwrap();
    std::fs::create_dir(site.join("pkg2/__pycache__")).unwrap();
    let victim_link = site.join(format!("pkg2/__pycache__/m.{}.pyc", h.tag));
    symlink(sentinel.join("victim.pyc"), &victim_link).unwrap();

    let sentinel_before = tree_state(&sentinel);
    let shadow_before = tree_state(&shadow);
    for force in [false, true] {
        let out = run(pyclink()
            .arg("--buildroot")
            .arg(&root)
            .args(["--errors", "warn"])
            .args(force.then_some("--force")));
        assert!(out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "outside.py: a dangling symlink: {} does not exist in the build root; not compiled",
                sentinel.join("target.py").display()
            )),
            "{err}"
        );
        assert!(
            err.contains("outside_rel.py: a dangling symlink: ../"),
            "{err}"
        );
        assert!(
            err.contains("pkg/__pycache__: cannot create or open it: it is a symlink, not a directory; not writing through it; 1 source not compiled"),
            "{err}"
        );
        assert_eq!(
            sentinel_before,
            tree_state(&sentinel),
            "the sentinel outside the root changed"
        );
        assert_eq!(
            shadow_before,
            tree_state(&shadow),
            "a host file named by an absolute link changed"
        );
    }
    // The absolute link was read inside the root, never on the host.
    let pyc = std::fs::read(&pycs(&site, "inroot", &h.tag)[0]).unwrap();
    assert!(contains(&pyc, b"root-copy") && !contains(&pyc, b"host-copy"));
    // The pre-existing pyc symlink was replaced as a name, not written through.
    assert!(std::fs::symlink_metadata(&victim_link).unwrap().is_file());
    assert_eq!(
        std::fs::read(sentinel.join("victim.pyc")).unwrap(),
        b"precious"
    );
    assert!(pycs(&site, "good", &h.tag).iter().all(|p| p.exists()));
    assert!(!site.join("__pycache__/outside.cpython").exists());
}

/// The same, with symlinks in the root resolved without openat2 (Linux before 5.6, seccomp).
#[test]
fn nothing_outside_the_root_is_touched_without_openat2() {
    fsroot::without_openat2(nothing_outside_the_root_is_touched);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn paths_leaving_the_root_are_refused() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    write_files(&outside, &[("x.py", "x = 1\n")]);
    write_files(&site_of(&h, &root), &[("a.py", "x = 1\n")]);
    symlink(&outside, root.join("usr/lib/escape")).unwrap();
    let before = tree_state(&outside);
    let rootless = format!("{}", outside.display());
    let cases: [(&str, &str); 5] = [
        ("usr/../../outside", "contains '..'"),
        ("../outside", "contains '..'"),
        // An absolute path not under the root is a path inside it (here, one not there).
        (&rootless, "does not exist in the build root"),
        ("usr/lib/escape", "is a symlink"),
        ("usr/lib/escape/x.py", "is under a symlink"),
    ];
    for (path, why) in cases {
        let out = run(pyclink().arg("--buildroot").arg(&root).arg(path));
        assert_eq!(out.status.code(), Some(2), "{path} must be refused");
        assert!(stderr(&out).contains(why), "{path}: {}", stderr(&out));
    }
    assert_eq!(before, tree_state(&outside));
    assert!(
        !site_of(&h, &root).join("__pycache__").exists(),
        "nothing runs when a PATH is refused"
    );
}

/// The same, with symlinks in the root resolved without openat2 (Linux before 5.6, seccomp).
#[test]
fn paths_leaving_the_root_are_refused_without_openat2() {
    fsroot::without_openat2(paths_leaving_the_root_are_refused);
}

// ----------------------------------------------------------------------------------------
// Bad input

#[test]
fn bad_encodings_and_bytes_are_reported_per_file() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    let files: [(&str, &[u8]); 8] = [
        (
            "bom_and_latin1_cookie.py",
            b"\xef\xbb\xbf# -*- coding: latin-1 -*-\nx = 1\n",
        ),
        (
            "unknown_cookie.py",
            b"# -*- coding: no-such-codec -*-\nx = 1\n",
        ),
        ("latin1_without_cookie.py", b"x = '\xe9t\xe9'\n"),
        ("nul.py", b"x = 1\n\x00\n"),
        ("syntax.py", b"x = 1\ny = (\n"),
        (
            "ok_latin1_cookie.py",
            b"# -*- coding: latin-1 -*-\nx = '\xe9t\xe9'\n",
        ),
        ("ok_bom.py", b"\xef\xbb\xbfx = 1\n"),
        ("ok_plain.py", b"x = 1\n"),
    ];
    std::fs::create_dir_all(&site).unwrap();
    for (name, bytes) in files {
        std::fs::write(site.join(name), bytes).unwrap();
    }
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let rel = format!("/usr/lib/python{}/site-packages", h.version);
    // Every error as path:line, also where CPython names no line (NUL bytes, coding cookies).
    let bad_lines = [
        ("bom_and_latin1_cookie", 1),
        ("unknown_cookie", 1),
        ("latin1_without_cookie", 1),
        ("nul", 2),
        ("syntax", 2),
    ];
    for (bad, n) in bad_lines {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("{rel}/{bad}.py")))
            .unwrap_or_else(|| panic!("{bad} not reported:\n{err}"));
        assert!(
            line.starts_with(&format!("pyclink: error: {rel}/{bad}.py:{n}: ")),
            "{line}"
        );
    }
    // verify's list of sources that do not compile says the same lines.
    let json = t.path().join("verify.json");
    run(pyclink()
        .arg("verify")
        .arg("--buildroot")
        .arg(&root)
        .args(["-o", "0", "--summary-json"])
        .arg(&json));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let dnc = json["versions"][0]["do_not_compile"].to_string();
    for (bad, n) in bad_lines {
        assert!(dnc.contains(&format!("{rel}/{bad}.py:{n}: ")), "{dnc}");
    }
    assert!(stdout(&out).contains(", 5 errors,"), "{}", stdout(&out));
    for ok in ["ok_latin1_cookie", "ok_bom", "ok_plain"] {
        assert!(
            pycs(&site, ok, &h.tag).iter().all(|p| p.exists()),
            "{ok} must be compiled"
        );
    }
    assert_audit_ok(&root, &expect_site(&h), &[]);
}

/// A FIFO, a socket, a device node and a directory named like modules: no hang, a message,
/// and the rest compiled.
#[test]
fn special_files_named_py_are_skipped_without_hanging() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    write_files(
        &site,
        &[("good.py", "x = 1\n"), ("dir.py/inner.py", "y = 2\n")],
    );
    let mode = rustix::fs::Mode::from_raw_mode(0o644);
    rustix::fs::mknodat(
        rustix::fs::CWD,
        site.join("fifo.py"),
        rustix::fs::FileType::Fifo,
        mode,
        0,
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(site.join("socket.py")).unwrap();
    let dev = rustix::fs::mknodat(
        rustix::fs::CWD,
        site.join("device.py"),
        rustix::fs::FileType::CharacterDevice,
        mode,
        rustix::fs::makedev(1, 3),
    );
    if let Err(e) = &dev {
        println!("SKIP special_files_named_py (device node part): cannot mknod here ({e})");
    }
    let mut child = pyclink()
        .arg("--buildroot")
        .arg(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(60))
        .expect("pyclink hung on a special file");
    let out = child.wait_with_output().unwrap();
    eprintln!("{}{}", stdout(&out), stderr(&out));
    assert!(status.success());
    let err = stderr(&out);
    let mut specials = vec!["fifo.py", "socket.py"];
    if dev.is_ok() {
        specials.push("device.py");
    }
    for name in specials {
        assert!(
            err.contains(&format!(
                "{name}: not a regular file (FIFO, socket or device); skipped"
            )),
            "{name}: {err}"
        );
    }
    assert!(
        err.contains("dir.py: a directory named like a module"),
        "{err}"
    );
    assert!(pycs(&site, "good", &h.tag)[0].exists());
    assert!(pycs(&site.join("dir.py"), "inner", &h.tag)[0].exists());
    assert_audit_ok(&root, &expect_site(&h), &[]);
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Non-UTF-8 bytes, a newline, spaces and leading dashes in names, and a path near PATH_MAX.
#[test]
fn awkward_file_names_compile() {
    use std::os::unix::ffi::OsStrExt;
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    let odd = site.join("odd");
    std::fs::create_dir_all(&odd).unwrap();
    let names: [&[u8]; 5] = [
        b"caf\xe9.py",
        b"with space.py",
        b"-dash.py",
        b"--help.py",
        b"x\x01y.py",
    ];
    for n in names {
        std::fs::write(odd.join(std::ffi::OsStr::from_bytes(n)), "x = 1\n").unwrap();
    }
    // A newline in a name: pyc-audit's stray check cannot parse such pyc names, so this one is
    // checked below by loading its pycs.
    write_files(&site.join("nl"), &[("new\nline.py", "x = 'newline'\n")]);
    // Nest directories until the source path is a few dozen bytes short of PATH_MAX (4096), so
    // the longest pyc path (`__pycache__/m.cpython-3NN.opt-2.pyc`) still fits.
    let mut deep = site.join("deep");
    let target = 4096 - 60;
    while deep.as_os_str().len() + 1 < target {
        let seg = (target - deep.as_os_str().len() - 1).min(200);
        deep.push("d".repeat(seg));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("m.py"), "x = 1\n").unwrap();
    assert!(deep.join("m.py").as_os_str().len() > 4000);

    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert!(out.status.success());
    assert!(
        stdout(&out).contains(&format!("{} sources", names.len() + 2)),
        "{}",
        stdout(&out)
    );
    assert!(deep
        .join(format!("__pycache__/m.{}.opt-2.pyc", h.tag))
        .exists());
    let sp = format!("usr/lib/python{}/site-packages", h.version);
    assert_audit_ok(&root, &[format!("{}:{sp}/odd,{sp}/deep", h.version)], &[]);
    // Each level of the newline-named module holds the code compile() gives for it, with the
    // name (newline included) as co_filename.
    let check = format!(
        "import marshal, sys\n\
         src = open(sys.argv[1], 'rb').read()\n\
         for level, suffix in ((0, ''), (1, '.opt-1'), (2, '.opt-2')):\n\
         \x20   data = open(sys.argv[2] + suffix + '.pyc', 'rb').read()\n\
         \x20   code = marshal.loads(data[16:])\n\
         \x20   want = compile(src, '/{sp}/nl/new\\nline.py', 'exec', dont_inherit=True, optimize=level)\n\
         \x20   assert code == want and code.co_filename == want.co_filename, level\n\
         print('newline OK')\n"
    );
    let nl = site.join("nl");
    let out = run(Command::new(&h.python)
        .arg("-c")
        .arg(check)
        .arg(nl.join("new\nline.py"))
        .arg(nl.join(format!("__pycache__/new\nline.{}", h.tag))));
    assert!(out.status.success() && stdout(&out).contains("newline OK"));
}

/// A 50 MB generated module compiles; sources that make the interpreter raise RecursionError
/// or MemoryError (or crash the worker, on 3.8) are reported and the run completes.
#[test]
fn huge_module_and_pathological_nesting() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    std::fs::create_dir_all(&site).unwrap();
    // Like a generated protobuf or data module: a docstring, code, and a 50 MB literal.
    let mut huge = String::from(
        "\"\"\"Generated.\"\"\"\ndef blob():\n    assert BLOB\n    return BLOB\nBLOB = (\n",
    );
    let mut state: u64 = 0x9E3779B97F4A7C15;
    while huge.len() < 50 << 20 {
        huge.push_str("    \"");
        for _ in 0..100 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            huge.push(char::from(b"0123456789abcdef"[(state % 16) as usize]));
        }
        huge.push_str("\"\n");
    }
    huge.push_str(")\n");
    std::fs::write(site.join("huge.py"), &huge).unwrap();
    let pathological = [
        (
            "deep_parens",
            format!("x = {}1{}\n", "(".repeat(100_000), ")".repeat(100_000)),
        ),
        ("deep_unary", format!("x = {}1\n", "-".repeat(200_000))),
        ("long_chain", format!("x = 1{}\n", " + 1".repeat(300_000))),
    ];
    for (name, src) in &pathological {
        std::fs::write(site.join(format!("{name}.py")), src).unwrap();
    }
    std::fs::write(site.join("fine.py"), "x = 1\n").unwrap();

    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for (name, _) in &pathological {
        assert!(
            err.contains(&format!("{name}.py")),
            "{name} must be reported: {err}"
        );
    }
    assert!(stdout(&out).contains("5 sources"), "{}", stdout(&out));
    let huge_pyc = std::fs::metadata(&pycs(&site, "huge", &h.tag)[0]).unwrap();
    assert!(huge_pyc.len() > 40 << 20);
    assert!(pycs(&site, "fine", &h.tag)[0].exists());
    assert_audit_ok(&root, &expect_site(&h), &[]);

    // CPython 3.8 segfaults on the long chain: a real worker crash, retried once, reported.
    let Some(py38) = python_or_skip(
        "3.8",
        "huge_module_and_pathological_nesting (worker crash on 3.8)",
    ) else {
        return;
    };
    let root38 = t.path().join("root38");
    write_files(
        &root38,
        &[
            (
                "usr/lib/python3.8/site-packages/long_chain.py",
                &pathological[2].1,
            ),
            ("usr/lib/python3.8/site-packages/ok.py", "x = 1\n"),
        ],
    );
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root38)
        .arg("--interpreter")
        .arg(format!("3.8={}", py38.display())));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("long_chain.py: the worker"), "{err}");
    assert!(
        err.contains("killed by signal 11 (SIGSEGV)"),
        "a compiler crash is named by its signal: {err}"
    );
    assert!(
        err.contains("(also on the retry with a new worker)"),
        "{err}"
    );
    assert!(root38
        .join("usr/lib/python3.8/site-packages/__pycache__/ok.cpython-38.pyc")
        .exists());
}

/// For a test that runs pyclink as [`NOBODY`]: the host, a python that user can run, a temp
/// dir that user can enter, and in it a root and its site-packages path; or None (and the
/// test's SKIP line printed) where that cannot be done.
fn as_nobody(test: &str) -> Option<(Host, PathBuf, tempfile::TempDir, PathBuf, PathBuf)> {
    if !rustix::process::geteuid().is_root() {
        println!("SKIP {test}: needs root to switch to an unprivileged user");
        return None;
    }
    let h = host();
    let Some(python) = python_for(NOBODY, &h) else {
        println!(
            "SKIP {test}: no python{} that uid {NOBODY} can run (setpriv missing?)",
            h.version
        );
        return None;
    };
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    Some((h, python, t, root, site))
}

/// `setpriv` running pyclink as [`NOBODY`] (no groups), with `args`, on `root` chowned to it.
fn pyclink_as_nobody(root: &Path, args: &[&str]) -> Command {
    assert!(Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(root)
        .status()
        .unwrap()
        .success());
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        &NOBODY.to_string(),
        "--regid",
        &NOBODY.to_string(),
    ])
    .args(["--clear-groups", "--", env!("CARGO_BIN_EXE_pyclink")])
    .args(args);
    c
}

/// As an unprivileged user (CI runs as root, where permissions do not bite): an unreadable
/// source and a read-only directory are reported, everything else is compiled.
#[test]
fn unreadable_file_and_readonly_directory_as_unprivileged_user() {
    let Some((h, python, _t, root, site)) = as_nobody("unreadable_file_and_readonly_directory")
    else {
        return;
    };
    write_files(
        &site,
        &[
            ("good.py", "x = 1\n"),
            ("unreadable.py", "x = 1\n"),
            ("ro/mod.py", "x = 1\n"),
            ("ro/a.py", "x = 2\n"),
            ("ro/b.py", "x = 3\n"),
        ],
    );
    std::fs::set_permissions(
        site.join("unreadable.py"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    std::fs::set_permissions(site.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    let interp = format!("{}={}", h.version, python.display());
    let out = run(&mut pyclink_as_nobody(
        &root,
        &[
            "--buildroot",
            root.to_str().unwrap(),
            "--interpreter",
            &interp,
        ],
    ));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let rel = format!("/usr/lib/python{}/site-packages", h.version);
    assert!(
        err.contains(&format!(
            "{rel}/unreadable.py: cannot open: Permission denied"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{rel}/ro/__pycache__: cannot create or open it: Permission denied (os error 13); 3 sources not compiled"
        )),
        "{err}"
    );
    // One line for the directory, not one per source in whatever order they were scheduled.
    assert_eq!(
        err.lines().filter(|l| l.contains("/ro/")).count(),
        1,
        "{err}"
    );
    assert!(pycs(&site, "good", &h.tag).iter().all(|p| p.exists()));
    assert!(
        // good.py's three levels are identical: one file, two links.
        stdout(&out).contains("5 sources, 3 pyc (1 written, 2 hardlinked, 0 copied), 4 errors"),
        "{}",
        stdout(&out)
    );
}

/// As an unprivileged user: `verify -o` reports a directory it cannot read once, by its path
/// inside the root and the OS's reason (no host path, no library wording).
#[test]
fn verify_reports_an_unreadable_directory_once() {
    let Some((h, python, _t, root, site)) =
        as_nobody("verify_reports_an_unreadable_directory_once")
    else {
        return;
    };
    write_files(&site, &[("pkg/a.py", "x = 1\n")]);
    std::fs::set_permissions(site.join("pkg"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let interp = format!("{}={}", h.version, python.display());
    let out = run(&mut pyclink_as_nobody(
        &root,
        &[
            "verify",
            "--buildroot",
            root.to_str().unwrap(),
            "--interpreter",
            &interp,
            "-o",
            "0",
        ],
    ));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("/pkg")).collect();
    assert_eq!(
        lines,
        [format!(
            "/usr/lib/python{}/site-packages/pkg: unreadable: cannot read: Permission denied (os error 13)",
            h.version
        )],
        "{text}"
    );
}

/// As an unprivileged user: a version whose only tree cannot be read gets the "cannot read"
/// error, not also "no sources in this run; not used" for its interpreter.
#[test]
fn an_unreadable_tree_does_not_make_its_interpreter_unused() {
    let Some((h, python, _t, root, site)) =
        as_nobody("an_unreadable_tree_does_not_make_its_interpreter_unused")
    else {
        return;
    };
    write_files(&site, &[("a.py", "x = 1\n")]);
    let lib = site.parent().unwrap().to_path_buf();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o000)).unwrap();
    let interp = format!("{}={}", h.version, python.display());
    let out = run(&mut pyclink_as_nobody(
        &root,
        &[
            "--buildroot",
            root.to_str().unwrap(),
            "--interpreter",
            &interp,
        ],
    ));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read"), "{err}");
    assert!(!err.contains("not used"), "{err}");
}

// ----------------------------------------------------------------------------------------
// Faults

/// A full stdlib root (the host's), compiled once and audited.
fn stdlib_root(h: &Host, dest: &Path) -> PathBuf {
    let full = dest.join("full");
    // The stdlib only: the host's site-packages would make every iteration slower.
    make_buildroot(&full, &[&h.version], Corpus::Stdlib);
    full
}

fn stdlib_dir(h: &Host) -> String {
    format!("usr/lib64/python{}", h.version)
}

/// A small xorshift generator: the test prints its seed, so a failure can be replayed with
/// PYCLINK_KILL_SEED.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn count_sources(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "py"))
        .count()
}

fn touch_sources(dir: &Path, when: std::time::SystemTime) -> usize {
    let mut n = 0;
    for e in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "py") {
            let f = std::fs::File::options().write(true).open(e.path()).unwrap();
            f.set_modified(when).unwrap();
            n += 1;
        }
    }
    n
}

/// After a rerun, the pycs under `stale` are the `baseline`'s (of the last full iteration,
/// which `pyclink verify` accepted) byte for byte but for the source mtime in the header, which
/// is its source's: the sources' contents are the same, and the bytes depend on nothing else
/// (reproducible.rs). A stronger check than another audit, and it compiles nothing; the links
/// are read from the tree. Paths are relative to `lib`.
fn same_as_baseline(
    lib: &Path,
    stale: &[PathBuf],
    baseline: &std::collections::BTreeMap<PathBuf, Vec<u8>>,
) -> Result<(), String> {
    let under = |p: &Path| stale.iter().any(|s| lib.join(p).starts_with(s));
    let now: std::collections::BTreeMap<PathBuf, Vec<u8>> = pyc_contents(lib)
        .into_iter()
        .filter(|(p, _)| under(p))
        .collect();
    let before: Vec<&PathBuf> = baseline.keys().filter(|p| under(p)).collect();
    if now.keys().collect::<Vec<_>>() != before {
        return Err(format!(
            "the rerun left {} pycs under {stale:?}, the audited run {}",
            now.len(),
            before.len()
        ));
    }
    if now.is_empty() {
        return Err(format!("no pyc under {stale:?}"));
    }
    for (p, bytes) in &now {
        let old = &baseline[p];
        // `DIR/__pycache__/NAME.TAG[.opt-N].pyc` is the pyc of `DIR/NAME.py`.
        let name = p.file_name().unwrap().to_string_lossy();
        let source = lib
            .join(p.parent().unwrap().parent().unwrap())
            .join(format!("{}.py", name.split('.').next().unwrap()));
        let mtime =
            std::os::unix::fs::MetadataExt::mtime(&std::fs::metadata(&source).unwrap()) as u32;
        let same = bytes.len() == old.len()
            && bytes.len() >= 16
            && bytes[..8] == old[..8]
            && bytes[12..] == old[12..];
        if !same || bytes[8..12] != mtime.to_le_bytes() {
            return Err(format!(
                "{}: not the audited bytes with the new source mtime",
                p.display()
            ));
        }
    }
    assert_identical_levels_linked(lib, &now);
    Ok(())
}

/// kill -9 at random moments of runs over the full stdlib, each followed by a normal rerun.
///
/// Each iteration makes a random set of stdlib packages stale (so the run rewrites them),
/// starts pyclink on the whole stdlib, and SIGKILLs it at a random moment within that run's
/// expected duration. Then: no pyc anywhere is partial; the rerun succeeds; no temp file
/// remains; the packages that were rewritten hold the audited bytes (see same_as_baseline); and
/// everything else is untouched (same inodes, mtimes, sizes), so the audit that covered it
/// before still holds. Iteration 0 (and every 50th) makes the whole stdlib stale and audits all
/// of it (`pyclink verify`, and pyc-audit where present); the others make 3 random packages of
/// at most 200 sources stale. 30 iterations by default (a few minutes
/// on 2 idle cores); PYCLINK_KILL_ITERATIONS=500 for a longer hunt.
#[test]
fn kill_9_at_random_moments() {
    let h = host();
    let iterations: usize = std::env::var("PYCLINK_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("PYCLINK_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("kill_9_at_random_moments: {iterations} iterations, PYCLINK_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let t = tempfile::tempdir().unwrap();
    let root = stdlib_root(&h, t.path());
    let lib = root.join(stdlib_dir(&h));
    let full_expect = vec![format!("{}:{}", h.version, stdlib_dir(&h))];
    // Named, so each of the ~200 runs skips the interpreter search (pyenv's is a shell script).
    let interp = format!("--interpreter={}={}", h.version, h.python.display());

    // A baseline mtime an hour back, so every iteration's touch is a new second.
    let total_sources = touch_sources(
        &lib,
        std::time::SystemTime::now() - Duration::from_secs(3600),
    ) as f64;
    let start = Instant::now();
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--errors", "warn", &interp]));
    assert!(out.status.success());
    let full_run = start.elapsed();
    // Packages to make stale in the partial iterations, with their source counts; the biggest
    // (the test suite) only goes stale in the full iterations, which keeps CI time in check.
    let packages: Vec<PathBuf> = std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_dir() && e.file_name() != "__pycache__")
        .map(|e| e.path())
        .filter(|p| count_sources(p) <= 200)
        .collect();

    let mut killed_mid_run = 0;
    let mut scale = 1.0;
    // The pycs of the last full iteration, which the audit accepted.
    let mut baseline = Default::default();
    for i in 0..iterations {
        let everything = i % 50 == 0;
        let stale: Vec<PathBuf> = if everything {
            vec![lib.clone()]
        } else {
            let mut chosen: Vec<PathBuf> = Vec::new();
            while chosen.len() < 3 {
                let p = &packages[rng.below(packages.len() as u64) as usize];
                if !chosen.contains(p) {
                    chosen.push(p.clone());
                }
            }
            chosen
        };
        // A new mtime each iteration makes those pycs stale.
        let when = std::time::SystemTime::now() - Duration::from_secs(1000 - i as u64);
        let n: usize = stale.iter().map(|d| touch_sources(d, when)).sum();
        let untouched_before: Vec<_> = tree_state(&lib)
            .into_iter()
            .filter(|(p, ..)| !stale.iter().any(|s| p.starts_with(s)))
            .collect();

        // The kill moment is uniform over the run's expected length: the full run's time scaled
        // to this stale set, times a factor that learns from runs that finished first.
        let expected =
            full_run.mul_f64(scale * n as f64 / total_sources) + Duration::from_millis(50);
        let delay = Duration::from_micros(rng.below(expected.as_micros() as u64));
        let mut child = pyclink()
            .arg("--buildroot")
            .arg(&root)
            .args(["--errors", "warn", "-q", &interp])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
            scale *= 1.05;
        } else {
            scale *= 0.8;
        }
        child.kill().unwrap();
        child.wait().unwrap();

        // Before the rerun: outside the stale set nothing changed (those pycs are the ones
        // audited before), and inside it every pyc present is whole.
        let untouched_killed: Vec<_> = tree_state(&lib)
            .into_iter()
            .filter(|(p, ..)| !stale.iter().any(|s| p.starts_with(s)))
            .collect();
        assert_eq!(
            untouched_before, untouched_killed,
            "iteration {i}: files outside the stale set changed"
        );
        let dirs: Vec<&Path> = stale.iter().map(PathBuf::as_path).collect();
        let partial = partial_pycs_in(&h.python, &dirs);
        assert!(
            partial.is_empty(),
            "iteration {i} (seed {seed}): partial pycs after kill -9: {partial:?}"
        );

        let out = pyclink()
            .arg("--buildroot")
            .arg(&root)
            .args(["--errors", "warn", "-q", &interp])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "iteration {i}: rerun failed: {}",
            stderr(&out)
        );
        let temps = temp_files(&root);
        assert!(
            temps.is_empty(),
            "iteration {i}: temp files after the rerun: {temps:?}"
        );
        let untouched_after: Vec<_> = tree_state(&lib)
            .into_iter()
            .filter(|(p, ..)| !stale.iter().any(|s| p.starts_with(s)))
            .collect();
        assert_eq!(
            untouched_before, untouched_after,
            "iteration {i}: files outside the stale set changed"
        );
        if everything {
            let (ok, text) = audit(&root, &full_expect, &[]);
            assert!(
                ok,
                "iteration {i} (seed {seed}): pyc-audit after the rerun:\n{text}"
            );
            baseline = pyc_contents(&lib);
        } else {
            same_as_baseline(&lib, &stale, &baseline)
                .unwrap_or_else(|e| panic!("iteration {i} (seed {seed}): {e}"));
        }
    }
    println!(
        "kill_9_at_random_moments: {iterations} kills ({killed_mid_run} while pyclink was running), \
         no partial pyc, every rerun left the audited bytes, no temp file left"
    );
    assert!(
        killed_mid_run * 2 >= iterations,
        "most kills must land while pyclink runs"
    );
}

/// The children of `pid` as (pid, process group).
fn children(pid: u32) -> Vec<(u32, u32)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may contain spaces, so parse after the last ')'.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        if fields[1].parse::<u32>() == Ok(pid) {
            v.push((child, fields[2].parse().unwrap()));
        }
    }
    v
}

/// pyclink's workers: the children that lead their own process group (helpers such as
/// `pyenv prefix` stay in pyclink's group).
fn worker_groups(pid: u32) -> Vec<u32> {
    children(pid)
        .into_iter()
        .filter(|(c, g)| c == g)
        .map(|(c, _)| c)
        .collect()
}

/// Wait until pyclink has at least one worker (interpreter selection can take a moment).
fn wait_for_workers(pid: u32) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let g = worker_groups(pid);
        if !g.is_empty() || start.elapsed() > Duration::from_secs(20) {
            return g;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Does any live (not zombie) process remain in this process group? A killed worker whose
/// parent is gone is reaped by PID 1, which in some containers never happens: count zombies
/// as dead.
fn group_alive(pgid: u32) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| {
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                return false;
            };
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
            fields[0] != "Z" && fields[2].parse::<u32>() == Ok(pgid)
        })
}

/// SIGINT and SIGTERM: exit 130/143 within a second, temp files removed, workers gone,
/// every pyc present whole.
#[test]
fn sigint_and_sigterm_clean_up() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = stdlib_root(&h, t.path());
    for (signal, code) in [
        (rustix::process::Signal::INT, 130),
        (rustix::process::Signal::TERM, 143),
    ] {
        for delay_ms in [50u64, 800] {
            touch_sources(&root, std::time::SystemTime::now());
            let mut child = pyclink()
                .arg("--buildroot")
                .arg(&root)
                .args(["--errors", "warn", "--force"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            wait_for_workers(child.id());
            std::thread::sleep(Duration::from_millis(delay_ms));
            let groups = worker_groups(child.id());
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before the signal"
            );
            let sent = Instant::now();
            rustix::process::kill_process(
                rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
                signal,
            )
            .unwrap();
            let status = wait_with_deadline(&mut child, Duration::from_secs(5))
                .expect("no exit after the signal");
            let took = sent.elapsed();
            let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
            assert_eq!(status.code(), Some(code), "{signal:?}: {err}");
            assert!(
                took < Duration::from_secs(1),
                "{signal:?}: exit took {took:?}"
            );
            assert!(err.contains("interrupted by SIG"), "{err}");
            assert!(temp_files(&root).is_empty(), "{signal:?}: temp files left");
            assert!(!groups.is_empty(), "workers were running");
            // pyclink SIGKILLs the worker groups before it exits; the kernel takes them down as
            // it schedules them, which on a loaded builder is not within 100 ms.
            let deadline = Instant::now() + Duration::from_secs(3);
            while groups.iter().any(|g| group_alive(*g)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(
                groups.iter().all(|g| !group_alive(*g)),
                "{signal:?}: workers outlived pyclink by 3 s"
            );
            let partial = partial_pycs(&h.python, &root);
            assert!(partial.is_empty(), "{partial:?}");
        }
    }
}

/// An interpreter wrapper whose `compile` sleeps on sources containing a marker: it lets a
/// test hold a worker mid-file (to kill it) or hang it for good (to time it out).
fn slow_interpreter(dir: &Path, real: &Path) -> PathBuf {
    let prelude = dir.join("prelude.py");
    std::fs::write(
        &prelude,
        "import builtins, sys, time\n\
         _real = builtins.compile\n\
         def _compile(src, *a, **k):\n\
         \x20   if isinstance(src, bytes) and b'PYCLINK_TEST_HANG' in src:\n\
         \x20       time.sleep(3600)\n\
         \x20   if isinstance(src, bytes) and b'PYCLINK_TEST_SLOW' in src:\n\
         \x20       time.sleep(1.5)\n\
         \x20   return _real(src, *a, **k)\n\
         builtins.compile = _compile\n\
         exec(_real(sys.argv[1], '<pyclink-worker>', 'exec'))\n",
    )
    .unwrap();
    interpreter_with_prelude(&dir.join("slow-python"), real, &prelude)
}

/// A stand-in interpreter at `wrapper`: pyclink runs `PROGRAM -s -S -c SCRIPT`, and this runs
/// `real` on `prelude` instead, with the script as argv[1].
fn interpreter_with_prelude(wrapper: &Path, real: &Path, prelude: &Path) -> PathBuf {
    std::fs::write(
        wrapper,
        format!(
            "#!/bin/sh\nexec '{}' -s -S '{}' \"$4\"\n",
            real.display(),
            prelude.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.to_path_buf()
}

/// A worker killed from outside mid-run (the process pyclink started, or the compile child it
/// forked) is replaced, the file in flight retried, and the run completes.
#[test]
fn worker_killed_from_outside_is_replaced() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let wrapper = slow_interpreter(t.path(), &h.python);
    for victim in ["zygote", "compile child"] {
        let root = t.path().join(victim.replace(' ', "_"));
        let site = site_of(&h, &root);
        let mut files = vec![(
            "slow.py".to_string(),
            "# PYCLINK_TEST_SLOW\nx = 1\n".to_string(),
        )];
        // Second and third in size order: a latin-1 name stays interned in the compile child,
        // so the next source with that character as a constant is handed to the zygote.
        files.push(("name.py".to_string(), "\u{e4} = 1  # name\n".to_string()));
        files.push(("const.py".to_string(), "x = '\u{e4}'  #\n".to_string()));
        files.extend((0..40).map(|i| (format!("m{i}.py"), format!("x = {i}\n"))));
        for (n, c) in &files {
            write_files(&site, &[(n, c)]);
        }
        let mut child = pyclink()
            .arg("--buildroot")
            .arg(&root)
            .arg("--interpreter")
            .arg(format!("{}={}", h.version, wrapper.display()))
            .args(["-j", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // slow.py is the largest source, so it is compiled first: wait until it is in flight.
        wait_for_workers(child.id());
        std::thread::sleep(Duration::from_millis(500));
        let groups = worker_groups(child.id());
        assert_eq!(groups.len(), 1, "one worker with -j 1");
        let target = match victim {
            "zygote" => groups[0],
            _ => {
                children(groups[0])
                    .first()
                    .expect("the zygote's compile child")
                    .0
            }
        };
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(target as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let status =
            wait_with_deadline(&mut child, Duration::from_secs(60)).expect("run did not finish");
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        eprintln!("{victim}: {}{err}", stdout(&out));
        assert!(status.success(), "{victim}: {err}");
        // Killing the compile child interrupts slow.py. Killing the zygote does not: its child
        // answers slow.py and name.py, then cannot hand const.py over and exits, so const.py
        // finds the worker dead and is retried.
        let interrupted = if victim == "zygote" {
            "const.py"
        } else {
            "slow.py"
        };
        let line = err
            .lines()
            .find(|l| l.contains("retrying with a new worker"));
        assert!(
            line.is_some_and(|l| l.contains(&format!("site-packages/{interrupted}"))),
            "{victim}: {err}"
        );
        assert!(stdout(&out).contains("43 sources"), "{}", stdout(&out));
        assert_audit_ok(&root, &expect_site(&h), &[]);
    }
}

/// A worker that never answers is killed after --timeout, the file retried once with a new
/// worker, then reported by name; the other files are compiled and no process is left.
#[test]
fn hung_worker_times_out_and_is_retried_once() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let wrapper = slow_interpreter(t.path(), &h.python);
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    write_files(
        &site,
        &[
            ("hang.py", "# PYCLINK_TEST_HANG\nx = 1\n"),
            ("a.py", "x = 1\n"),
            ("b.py", "x = 2\n"),
        ],
    );
    let start = Instant::now();
    let mut child = pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--interpreter")
        .arg(format!("{}={}", h.version, wrapper.display()))
        .args(["--timeout", "2", "-j", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let groups = wait_for_workers(child.id());
    let status =
        wait_with_deadline(&mut child, Duration::from_secs(60)).expect("pyclink itself hung");
    let took = start.elapsed();
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    eprintln!("{}{err}", stdout(&out));
    assert_eq!(status.code(), Some(1));
    let rel = format!("/usr/lib/python{}/site-packages/hang.py", h.version);
    assert!(
        err.contains(&format!(
            "pyclink: warning: {rel}: the worker did not answer within 2s; retrying"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("pyclink: error: {rel}: the worker did not answer within 2s (also on the retry with a new worker)")),
        "{err}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(30),
        "two timeouts, then done: {took:?}"
    );
    assert!(pycs(&site, "a", &h.tag)[0].exists() && pycs(&site, "b", &h.tag)[0].exists());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        groups.iter().all(|g| !group_alive(*g)),
        "a hung worker outlived the run"
    );
}

/// Disk full: a size-limited tmpfs mounted for the test. Clear errors, no partial pyc, the pycs
/// that were there before intact, and once space is back a rerun completes.
#[test]
fn disk_full() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
        .arg(&mnt)
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        println!("SKIP disk_full: cannot mount a size-limited tmpfs here (needs root)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let root = mnt.join("root");
    let site = site_of(&h, &root);
    // 60 modules of ~3 KB: about 0.2 MB of sources and about 7 MB of pycs.
    for i in 0..60 {
        let body: String = (0..100)
            .map(|j| format!("def f{j}(): return {i} + {j}\n"))
            .collect();
        write_files(
            &site,
            &[(
                &format!("m{i:02}.py"),
                &format!("\"\"\"Module {i}.\"\"\"\n{body}"),
            )],
        );
    }
    // Ten tiny modules too: their single pyc fits where the others' pair does not.
    for i in 0..10 {
        write_files(&site, &[(&format!("tiny{i}.py"), "x = 1\n")]);
    }
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    let before: std::collections::BTreeMap<PathBuf, Vec<u8>> =
        walkdir::WalkDir::new(site.join("__pycache__"))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| (e.path().to_path_buf(), std::fs::read(e.path()).unwrap()))
            .collect();
    assert_eq!(before.len(), 210);

    // Make everything stale, then fill the disk but for 8 KiB (two pages). Each rename frees the old
    // file, so a rewrite needs room for one source's new pycs at a time: a tiny module's one
    // page fits, a big module's first file (three pages) does not.
    touch_sources(
        &site,
        std::time::SystemTime::now() + Duration::from_secs(120),
    );
    let filler = mnt.join("filler");
    let free = rustix::fs::statvfs(&mnt).unwrap();
    let fill = (free.f_bavail * free.f_frsize).saturating_sub(8 << 10);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    let out = run(pyclink().arg("--buildroot").arg(&root).arg("--force"));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let enospc: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("No space left on device"))
        .collect();
    assert!(!enospc.is_empty(), "{err}");
    let prefix = format!(
        "pyclink: error: /usr/lib/python{}/site-packages/m",
        h.version
    );
    assert!(
        enospc.iter().all(|l| l.starts_with(&prefix)),
        "each error names its source: {enospc:?}"
    );
    assert!(temp_files(&root).is_empty(), "temp files left after ENOSPC");
    assert!(partial_pycs(&h.python, &root).is_empty());
    let (mut kept, mut rewritten) = (0, 0);
    for (path, old) in &before {
        let now = std::fs::read(path).expect("a pyc that existed before is gone");
        if &now == old {
            kept += 1;
        } else {
            rewritten += 1;
        }
    }
    assert!(
        kept > 0 && rewritten > 0,
        "kept {kept}, rewritten {rewritten}"
    );
    println!(
        "disk_full: {} sources failed with ENOSPC; {kept} old pycs kept intact, {rewritten} rewritten",
        enospc.len()
    );

    std::fs::remove_file(&filler).unwrap();
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    assert_audit_ok(&root, &expect_site(&h), &[]);
}

/// Two runs on the same root at once: both finish, the audit is OK (links included), nothing
/// torn or missing, no temp file.
#[test]
fn two_runs_at_once() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    make_buildroot(&root, &[&h.version], Corpus::Small);
    for round in 0..3 {
        let start = |force: bool| {
            pyclink()
                .arg("--buildroot")
                .arg(&root)
                .args(force.then_some("--force"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (a, b) = (start(round > 0), start(round > 0));
        for c in [a, b] {
            let out = c.wait_with_output().unwrap();
            assert!(out.status.success(), "round {round}: {}", stderr(&out));
        }
        assert!(temp_files(&root).is_empty());
        assert_audit_ok(
            &root,
            &[format!("{}:usr/lib64/python{}", h.version, h.version)],
            &[],
        );
    }
}

/// Python 2 (and anything before 3.6) is refused by name, never with a worker's traceback:
/// as a PATH, as `--interpreter X.Y=...` and as a bare `--interpreter PATH`.
#[test]
fn python2_is_refused_by_name() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(
        &root,
        &[("usr/lib/python2.7/site-packages/old/m.py", "print 'hi'\n")],
    );
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("usr/lib/python2.7/site-packages/old"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("/usr/lib/python2.7/site-packages/old is a python2.7 tree")
            && err.contains("python2.7 is not supported"),
        "{err}"
    );
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--interpreter", "2.7=/usr/bin/python2.7"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("python2.7 is not supported"),
        "{}",
        stderr(&out)
    );

    // A root with only a Python 2 tree holding sources: an error (issue 20: a package must not
    // ship them without pycs in silence), one message, not "not compiled" then "no trees found".
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "error: /usr/lib/python2.7: 1 source not compiled: python2.7 is not supported"
        ),
        "{err}"
    );

    let Some(py27) = python_or_skip("2.7", "python2_is_refused_by_name (bare --interpreter)")
    else {
        return;
    };
    write_files(&root, &[("usr/share/app/m.py", "x = 1\n")]);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--interpreter")
        .arg(&py27)
        .arg("usr/share/app"));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("it is Python 2.7")
            && err.contains("pyclink compiles for Python 3.6 and later"),
        "{err}"
    );
    assert!(!err.contains("Traceback"), "{err}");
    assert!(!root.join("usr/share/app/__pycache__").exists());
}

/// A reader that goes away (`| head -1`) or a full stdout never makes pyclink panic.
#[test]
fn closed_or_full_stdout_is_not_a_crash() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(
        &root,
        &[(
            &format!("usr/lib/python{}/site-packages/m.py", h.version),
            "x = 1\n",
        )],
    );
    // A pipe whose reading end is closed before pyclink prints.
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    drop(reader);
    let out = pyclink()
        .arg("--buildroot")
        .arg(&root)
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let full = std::fs::File::options().write(true).open("/dev/full");
    let Ok(full) = full else {
        println!("SKIP closed_or_full_stdout (full part): no /dev/full here");
        return;
    };
    let out = pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--force")
        .stdout(full)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pyclink: error: cannot write the summary to stdout: No space left on device"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// An interpreter wrapper whose worker answers a source containing PYCLINK_TEST_BREAK with a
/// frame pyclink cannot decode, followed by the real answer: a worker out of step with its
/// requests. Every later answer of that worker would belong to the source before.
fn protocol_breaking_interpreter(dir: &Path, real: &Path) -> PathBuf {
    let prelude = dir.join("break-prelude.py");
    std::fs::write(
        &prelude,
        "import sys\n\
         script = sys.argv[1]\n\
         line = '        resp = handle(req, False)\\n'\n\
         assert line in script, 'worker.py changed: update the test'\n\
         script = script.replace(line, line +\n\
         \x20   \"        if b'PYCLINK_TEST_BREAK' in req and resp is not None:\\n\"\n\
         \x20   \"            _write_frame(_OUT_FD, [b'Q'])\\n\", 1)\n\
         exec(compile(script, '<pyclink-worker>', 'exec'))\n",
    )
    .unwrap();
    interpreter_with_prelude(&dir.join("breaking-python"), real, &prelude)
}

/// Issue 15: a worker whose answer does not decode is killed, never given the next source (its
/// next answer would be the broken source's code), the source is retried once with a new worker
/// and then reported; and the undecodable answer is never cached.
#[test]
fn a_worker_that_breaks_the_protocol_is_not_reused_nor_cached() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let wrapper = protocol_breaking_interpreter(t.path(), &h.python);
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    // The breaking source is the largest, so it is compiled first; the others follow on the
    // same worker (-j 1).
    let mut files = vec![(
        "broken.py".to_string(),
        format!("# PYCLINK_TEST_BREAK {}\nx = 'broken'\n", "-".repeat(200)),
    )];
    files.extend((0..20).map(|i| (format!("m{i:02}.py"), format!("x = 'module {i}'\n"))));
    for (n, c) in &files {
        write_files(&site, &[(n, c)]);
    }
    let cache = t.path().join("cache");
    let json = t.path().join("summary.json");
    let compile = || {
        run(pyclink()
            .arg("--buildroot")
            .arg(&root)
            .arg("--interpreter")
            .arg(format!("{}={}", h.version, wrapper.display()))
            .args(["-j", "1", "--force", "--cache"])
            .arg(&cache)
            .arg("--summary-json")
            .arg(&json))
    };
    let out = compile();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let rel = format!("/usr/lib/python{}/site-packages/broken.py", h.version);
    assert!(
        err.contains(&format!(
            "pyclink: warning: {rel}: the worker broke the protocol: unknown response tag"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "pyclink: error: {rel}: the worker broke the protocol: unknown response tag"
        )) && err.contains("(also on the retry with a new worker)"),
        "{err}"
    );
    assert!(!pycs(&site, "broken", &h.tag)[0].exists());
    // Every other module has its own code.
    std::fs::remove_file(site.join("broken.py")).unwrap();
    assert_audit_ok(&root, &expect_site(&h), &[]);
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(summary["cache"]["stored"], 20, "{}", summary["cache"]);

    // Nothing undecodable was cached: the next run finds no corrupt entry.
    write_files(&site, &[(&files[0].0, &files[0].1)]);
    let out = compile();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(summary["cache"]["rejected"], 0, "{}", summary["cache"]);
    assert_eq!(summary["cache"]["hits"], 20, "{}", summary["cache"]);
}

/// Report item 6: a newline, an escape sequence and a non-UTF-8 byte in file names are escaped
/// in every line printed (one line per message, nothing raw for the terminal), and the JSON
/// keeps the name as text (`\xff` for the byte that is not UTF-8).
#[test]
fn control_characters_in_names_are_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    std::fs::create_dir_all(&site).unwrap();
    let names: [&[u8]; 3] = [b"new\nline.py", b"esc\x1b[31mred.py", b"bad\xffname.py"];
    let shown = [r"new\nline.py", r"esc\x1b[31mred.py", r"bad\xffname.py"];
    for n in names {
        std::fs::write(site.join(std::ffi::OsStr::from_bytes(n)), "def(\n").unwrap();
    }
    let sp = format!("/usr/lib/python{}/site-packages", h.version);
    let no_raw = |what: &str, text: &[u8]| {
        assert!(
            !text.contains(&0x1b) && !text.contains(&0xff),
            "{what}: raw bytes: {}",
            String::from_utf8_lossy(text)
        );
    };

    let json = t.path().join("s.json");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--summary-json")
        .arg(&json));
    assert_eq!(out.status.code(), Some(1));
    no_raw("compile", &out.stderr);
    let err = stderr(&out);
    for s in shown {
        let line = format!("pyclink: error: {sp}/{s}:1: SyntaxError: ");
        assert!(err.lines().any(|l| l.starts_with(&line)), "{line}\n{err}");
    }
    assert_eq!(err.lines().count(), 3, "one line per error: {err}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let mut paths: Vec<&str> = summary["error_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            format!("{sp}/bad\\xffname.py"),
            format!("{sp}/esc\x1b[31mred.py"),
            format!("{sp}/new\nline.py"),
        ]
    );

    let out = run(pyclink().arg("--buildroot").arg(&root).arg("--dry-run"));
    no_raw("--dry-run", &out.stdout);
    for s in shown {
        let line = format!("  {sp}/{s}");
        assert!(
            stdout(&out).lines().any(|l| l == line),
            "{line}\n{}",
            stdout(&out)
        );
    }

    // verify: the same names, compiled, then made stale.
    for n in names {
        std::fs::write(site.join(std::ffi::OsStr::from_bytes(n)), "x = 1\n").unwrap();
    }
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    for n in names {
        std::fs::write(site.join(std::ffi::OsStr::from_bytes(n)), "x = 22\n").unwrap();
    }
    let out = run(pyclink().arg("verify").arg("--buildroot").arg(&root));
    assert_eq!(out.status.code(), Some(1));
    no_raw("verify", &out.stdout);
    for s in shown {
        let stem = s.trim_end_matches(".py");
        let line = format!("{sp}/__pycache__/{stem}.{}.pyc: stale: ", h.tag);
        assert!(
            stdout(&out).lines().any(|l| l.starts_with(&line)),
            "{line}\n{}",
            stdout(&out)
        );
    }
}

// ----------------------------------------------------------------------------------------
// Without openat2, and the live system by any name (report 3, items 4 and 5)

/// Item 4: where openat2 is missing (Linux before 5.6) or filtered (seccomp answering ENOSYS,
/// or EPERM as older container runtimes do), `.py` symlinks of every shape and the root's own
/// interpreter resolve inside the root exactly as with openat2: the same interpreter, the same
/// messages, the same pycs, the same verify report. Forced with PYCLINK_NO_OPENAT2, and found
/// out alone under a real seccomp filter.
#[test]
fn without_openat2_symlinks_and_the_roots_python_resolve_as_with_it() {
    let test = "without_openat2_symlinks_and_the_roots_python_resolve_as_with_it";
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let outside = t.path().join("outside");
    write_files(&outside, &[("secret.py", "SECRET = 'outside'\n")]);
    let program = fsroot::root_with_its_own_python(&h, &root);
    let app = root.join("usr/share/app");
    write_files(
        &app,
        &[
            ("real.py", "WHERE = 'real'\n"),
            ("sub/inner.py", "'''doc'''\nassert True\nWHERE = 'inner'\n"),
        ],
    );
    let up = "../".repeat(12);
    let out_rel = format!(
        "{}{}",
        "../".repeat(app.components().count() - 1),
        outside
            .join("secret.py")
            .strip_prefix("/")
            .unwrap()
            .display()
    );
    assert!(app.join(&out_rel).exists(), "on the host it leads out");
    std::fs::create_dir(app.join(".chain")).unwrap();
    for i in 0..=40 {
        let next = if i == 40 {
            "../real.py".to_string()
        } else {
            format!("c{}", i + 1)
        };
        symlink(next, app.join(format!(".chain/c{i}"))).unwrap();
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        app.join(".fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    let links: Vec<(&str, String)> = vec![
        ("abs.py", "/usr/share/app/real.py".into()),
        ("rel.py", "sub/../sub/inner.py".into()),
        ("up.py", format!("{up}usr/share/app/real.py")),
        ("via_bin.py", "/usr/bin/../share/app/real.py".into()),
        // The link itself counts: 40 links in all, then 41, the kernel's limit.
        ("forty.py", ".chain/c2".into()),
        ("forty_one.py", ".chain/c1".into()),
        ("loop.py", "loop.py".into()),
        ("host.py", outside.join("secret.py").display().to_string()),
        ("out_rel.py", out_rel),
        ("dir.py", "sub".into()),
        ("fifo.py", "/usr/share/app/.fifo".into()),
        ("trail.py", "real.py/".into()),
    ];
    for (name, target) in &links {
        symlink(target, app.join(name)).unwrap();
    }

    let mut first: Option<(
        fsroot::Resolution,
        String,
        Vec<String>,
        _,
        serde_json::Value,
    )> = None;
    for how in fsroot::resolutions(test) {
        let mut c = pyclink();
        c.arg("--buildroot").arg(&root).args([
            "--errors",
            "warn",
            "--force",
            "-v",
            "usr/share/app",
        ]);
        let out = run(&mut fsroot::resolved_by(c, how));
        let err = stderr(&out);
        assert!(out.status.success(), "{how:?}: {err}");
        assert!(
            err.contains(&format!(
                "{} (the build root's /usr/bin/python{}), cache tag",
                program.display(),
                h.version
            )),
            "{how:?}: the root's own interpreter is used: {err}"
        );
        match how {
            fsroot::Resolution::Openat2 => assert!(!err.contains("openat2"), "{err}"),
            fsroot::Resolution::Forced => assert!(
                err.contains("PYCLINK_NO_OPENAT2 is set: symlinks inside the build root are resolved one component at a time"),
                "{err}"
            ),
            fsroot::Resolution::Seccomp(errno) => assert!(
                err.contains(&format!(
                    "openat2 is not usable here ({}): symlinks inside the build root are resolved one component at a time",
                    std::io::Error::from_raw_os_error(errno)
                )),
                "{err}"
            ),
        }
        let mut lines: Vec<String> = err
            .lines()
            .filter(|l| l.contains("/usr/share/app/"))
            .map(String::from)
            .collect();
        lines.sort();
        let pycs = pyc_contents(&app);
        let mut v = pyclink();
        v.args(["verify", "--buildroot"]).arg(&root).args([
            "-o",
            "0,1,2",
            "--summary-json",
            "-",
            "usr/share/app",
        ]);
        // Its exit status is verify's own business (it reports the links that are no
        // sources); the report must be the same whatever resolves them.
        let verified = run(&mut fsroot::resolved_by(v, how));
        let mut report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
        report["elapsed_seconds"] = 0.into();
        match &first {
            None => first = Some((how, stdout(&out), lines, pycs, report)),
            Some((was, out0, lines0, pycs0, report0)) => {
                assert_eq!(out0, &stdout(&out), "{how:?} vs {was:?}: the summary");
                assert_eq!(lines0, &lines, "{how:?} vs {was:?}: the messages");
                assert!(pycs0 == &pycs, "{how:?} vs {was:?}: the pycs differ");
                assert_eq!(report0, &report, "{how:?} vs {was:?}: verify's report");
            }
        }
    }

    // What the runs agreed on is right: read inside the root, never outside it.
    let (_, _, lines, pycs, report) = first.unwrap();
    let text = lines.join("\n");
    for name in ["abs", "rel", "up", "via_bin", "forty", "real"] {
        let pyc = &pycs[&PathBuf::from(format!("__pycache__/{name}.{}.pyc", h.tag))];
        let want: &[u8] = if name == "rel" { b"inner" } else { b"real" };
        assert!(contains(pyc, want), "{name}");
    }
    assert!(!pycs.values().any(|p| contains(p, b"outside")));
    for (name, why) in [
        ("forty_one.py", "a symlink loop; not compiled"),
        ("loop.py", "a symlink loop; not compiled"),
        ("host.py", "a dangling symlink: "),
        ("out_rel.py", "a dangling symlink: "),
        (
            "dir.py",
            "a symlink to a directory or other non-file; not compiled",
        ),
        (
            "fifo.py",
            "a symlink to a directory or other non-file; not compiled",
        ),
        (
            "trail.py",
            "cannot follow the symlink inside the build root: Not a directory",
        ),
    ] {
        assert!(
            text.contains(&format!("/usr/share/app/{name}: {why}")),
            "{name}: {text}"
        );
    }
    let problems = report["problems"].as_array().unwrap();
    for name in ["abs", "rel", "up", "via_bin", "forty", "real"] {
        let path = format!("/usr/share/app/{name}.py");
        assert!(!problems.iter().any(|p| p["path"] == path), "{report}");
    }
    assert_eq!(report["pycs_checked"], 21, "{report}");
}

/// Item 5: the running system's `/` is known by identity (device and inode), not by spelling:
/// `//`, `/usr/..`, `/proc/self/root`, a symlink to `/` and a real bind mount of `/` are refused
/// as the root of compile (`--dry-run`, `$RPM_BUILD_ROOT` and the config file's `buildroot`
/// too) and normalize, as `/` is, with the JSON's `fatal_error`. verify reads an installed
/// prefix with `--buildroot /` on purpose: through each spelling it gives the report `/`
/// gives. The RPM hook leaves each alone, as it leaves `/`. Every run is restricted to an
/// empty directory, so that even a broken guard has nothing of the live system to touch.
#[test]
fn the_live_system_is_known_by_identity_in_every_subcommand() {
    let test = "the_live_system_is_known_by_identity_in_every_subcommand";
    let h = host();
    let Some(t) = fsroot::tempdir_on_the_root_filesystem() else {
        println!("SKIP {test}: no temp dir on the filesystem of /");
        return;
    };
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let prefix = t.path().join("prefix/lib/app");
    write_files(
        &prefix,
        &[("plain.py", "X = 1\n"), ("pkg/sub.py", "'''d'''\n")],
    );
    let out = run(Command::new(&h.python)
        .args(["-m", "compileall", "-q"])
        .arg(&prefix));
    assert!(out.status.success());
    symlink("/", t.path().join("slash")).unwrap();
    let bound = t.path().join("bound");
    std::fs::create_dir(&bound).unwrap();
    let mut spellings: Vec<(PathBuf, bool)> = ["/", "//", "/usr/..", "/proc/self/root"]
        .iter()
        .map(|s| (PathBuf::from(s), false))
        .collect();
    spellings.push((t.path().join("slash"), false));
    if fsroot::bind_mounts_work(test) {
        spellings.push((bound.clone(), true));
    }
    let go = |cmd: Command, bind: bool| -> std::process::Output {
        match bind {
            true => run(&mut fsroot::with_root_bound_at(&bound, &cmd)),
            false => run(&mut { cmd }),
        }
    };
    let verify_json = |out: &std::process::Output, spelling: &Path| {
        assert!(!stdout(out).is_empty(), "{spelling:?}: {}", stderr(out));
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["elapsed_seconds"] = 0.into();
        v["buildroot"] = "".into();
        // The root's interpreter is named by the path it was run by.
        let text = v.to_string().replace(&format!("{}/", bound.display()), "/");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let config = t.path().join("pyclink.toml");
    let mut verified_at_slash = None;
    for (spelling, bind) in &spellings {
        let s = spelling.as_path();
        let refused = |out: &std::process::Output, what: &str| {
            assert_eq!(out.status.code(), Some(2), "{what} {s:?}: {}", stderr(out));
            assert!(
                stderr(out).contains("is the running system's /")
                    && stderr(out).contains("never the live system"),
                "{what} {s:?}: {}",
                stderr(out)
            );
        };
        let mut compile = pyclink();
        compile
            .arg("--buildroot")
            .arg(s)
            .args(["--summary-json", "-"])
            .arg(&empty);
        let out = go(compile, *bind);
        refused(&out, "compile");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            json["fatal_error"]
                .as_str()
                .is_some_and(|e| e.contains("never the live system")),
            "{s:?}: {json}"
        );
        let mut dry = pyclink();
        dry.arg("--buildroot").arg(s).arg("--dry-run");
        let out = go(dry, *bind);
        refused(&out, "compile --dry-run");
        assert!(stdout(&out).is_empty(), "{s:?}: nothing listed");
        let mut env = pyclink();
        env.env("RPM_BUILD_ROOT", s).arg(&empty);
        refused(&go(env, *bind), "$RPM_BUILD_ROOT");
        std::fs::write(&config, format!("buildroot = {:?}\n", s.to_str().unwrap())).unwrap();
        let mut cfg = pyclink();
        cfg.arg("--config").arg(&config).arg(&empty);
        refused(&go(cfg, *bind), "buildroot in the config file");
        let mut normalize = pyclink();
        normalize
            .args(["normalize", "--summary-json", "-", "--buildroot"])
            .arg(s)
            .arg(&empty);
        let out = go(normalize, *bind);
        refused(&out, "normalize");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["schema"], "pyclink-normalize", "{s:?}");
        assert!(
            json["fatal_error"]
                .as_str()
                .is_some_and(|e| e.contains("never the live system")),
            "{s:?}: {json}"
        );

        let mut verify = pyclink();
        verify
            .args(["verify", "--summary-json", "-", "--buildroot"])
            .arg(s)
            .arg(&prefix);
        let out = go(verify, *bind);
        let report = verify_json(&out, s);
        assert_eq!(report["pycs_checked"], 2, "{s:?}: {report}");
        match &verified_at_slash {
            None => verified_at_slash = Some((out.status.code(), report)),
            Some((code, at_slash)) => {
                assert_eq!(code, &out.status.code(), "verify {s:?} vs /");
                assert_eq!(at_slash, &report, "verify {s:?} vs /");
            }
        }

        let mut hook = Command::new("bash");
        hook.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("macros/brp-pyclink"))
            .env("RPM_BUILD_ROOT", s)
            .env("PYCLINK", env!("CARGO_BIN_EXE_pyclink"))
            // Should the guard fail, the clamping finds nothing newer than this to touch.
            .env("SOURCE_DATE_EPOCH", "4000000000");
        let out = go(hook, *bind);
        assert!(
            out.status.success(),
            "the hook with {s:?}: {}",
            stderr(&out)
        );
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "the hook leaves {s:?} alone silently: {}",
            stderr(&out)
        );
    }
    assert!(
        std::fs::read_dir(&bound).unwrap().next().is_none(),
        "the bind mount is gone"
    );
}

// Issue 22: honest figures (item 6), escaped paths (item 8), exact temp names (item 9)

/// `chattr +i` on files and directories, undone on drop (else the temp dir cannot be
/// removed).
struct Immutable(Vec<PathBuf>);

impl Immutable {
    /// Make `path` immutable; false where the filesystem or the user cannot.
    fn add(&mut self, path: &Path) -> bool {
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            self.0.push(path.to_path_buf());
        }
        ok
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = Command::new("chattr").arg("-i").arg(p).status();
        }
    }
}

/// Whether `chattr +i` works in `dir` (root, on a filesystem with the attribute).
fn chattr_works(dir: &Path) -> bool {
    let probe = dir.join("chattr-probe");
    std::fs::write(&probe, "x").unwrap();
    // The guard undoes it at the end of the statement.
    let works = Immutable(Vec::new()).add(&probe);
    let _ = std::fs::remove_file(&probe);
    works
}

fn inode_of(p: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p).ok().map(|m| m.ino())
}

/// Item 6: a level whose pyc cannot be replaced (an immutable file; a directory in its place)
/// is named in the error, the other levels are written, and the summary line and the JSON
/// count exactly the names this run put in place.
#[test]
fn a_pyc_that_cannot_be_replaced_is_named_and_the_rest_counted() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    // both: three different levels; plain: three identical; docs: 0 = 1, 2 apart.
    write_files(
        &site,
        &[
            ("both.py", "\"\"\"doc\"\"\"\nassert 1\nx = 1\n"),
            ("plain.py", "x = 1\n"),
            ("docs.py", "\"\"\"doc\"\"\"\nx = 1\n"),
        ],
    );
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    let both = pycs(&site, "both", &h.tag);
    let plain = pycs(&site, "plain", &h.tag);
    let docs = pycs(&site, "docs", &h.tag);
    let sp = format!("/usr/lib/python{}/site-packages", h.version);

    // The first of an identical group is a directory: its two links are still written.
    std::fs::remove_file(&plain[0]).unwrap();
    std::fs::create_dir_all(plain[0].join("inside")).unwrap();
    let mut immutable = Immutable(Vec::new());
    let chattr = chattr_works(t.path());
    if chattr {
        assert!(immutable.add(&both[1]));
    } else {
        println!(
            "SKIP a_pyc_that_cannot_be_replaced (immutable part): chattr +i does not work in {} \
             (needs root and ext4/xfs/btrfs); a directory stands in for the immutable pyc",
            t.path().display()
        );
        std::fs::remove_file(&both[1]).unwrap();
        std::fs::create_dir(&both[1]).unwrap();
    }
    let names: Vec<&PathBuf> = both.iter().chain(&plain).chain(&docs).collect();
    let before: Vec<Option<u64>> = names.iter().map(|p| inode_of(p)).collect();
    let old_opt1 = std::fs::symlink_metadata(&both[1]).unwrap();

    let json = t.path().join("s.json");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--force", "--summary-json"])
        .arg(&json));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let blocked = if chattr {
        "Operation not permitted"
    } else {
        "Is a directory"
    };
    for want in [
        format!(
            "pyclink: error: {sp}/both.py: cannot write {sp}/__pycache__/both.{}.opt-1.pyc: {blocked}",
            h.tag
        ),
        format!(
            "pyclink: error: {sp}/plain.py: cannot write {sp}/__pycache__/plain.{}.pyc: Is a directory",
            h.tag
        ),
    ] {
        assert!(err.lines().any(|l| l.starts_with(&want)), "no {want:?} in:\n{err}");
    }

    // On disk: every name but the two blocked ones is a new file.
    let replaced = names
        .iter()
        .zip(&before)
        .filter(|(p, old)| inode_of(p) != **old && inode_of(p).is_some())
        .count();
    assert_eq!(replaced, 7);
    assert_eq!(
        std::fs::symlink_metadata(&both[1])
            .unwrap()
            .modified()
            .unwrap(),
        old_opt1.modified().unwrap()
    );
    assert!(plain[0].join("inside").is_dir());
    assert_eq!(inode_of(&plain[1]), inode_of(&plain[2]));
    assert_ne!(inode_of(&both[0]), inode_of(&both[2]));
    assert!(temp_files(&root).is_empty());

    // The figures are what is on disk: 7 names, of which 2 are links of another.
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let r = &v["versions"][0];
    let figures = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        ["pyc", "written", "hardlinked", "copied", "errors"].map(figures),
        [7, 5, 2, 0, 2],
        "{r}"
    );
    assert_eq!(
        figures("written") + figures("hardlinked") + figures("copied"),
        replaced as u64
    );
    let details = v["error_details"].as_array().unwrap();
    assert!(details.iter().all(|d| d["kind"] == "io"), "{details:?}");
    assert!(
        stdout(&out).contains("7 pyc (5 written, 2 hardlinked, 0 copied), 2 errors"),
        "{}",
        stdout(&out)
    );
}

/// Item 6 in `normalize`: a name that cannot be replaced does not keep the inode's other
/// names (nor the directory's other modules) from being rewritten or linked, is named in its
/// own error, and the figures count what was done.
#[test]
fn normalize_counts_what_it_did_when_a_name_cannot_be_replaced() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    if !chattr_works(t.path()) {
        println!(
            "SKIP normalize_counts_what_it_did: chattr +i does not work in {} (needs root and \
             ext4/xfs/btrfs)",
            t.path().display()
        );
        return;
    }
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    write_files(
        &site,
        &[
            ("a/m.py", "x = 1\n"),
            ("b/m.py", "x = 1\n"),
            ("n.py", "y = 2\n"),
            ("o.py", "z = 3\n"),
        ],
    );
    assert!(
        run(pyclink().arg("--buildroot").arg(&root).arg("--no-link"))
            .status
            .success()
    );
    let mut immutable = Immutable(Vec::new());

    // Pass 1: one inode named in a/ and in b/, out of the normal form (the raw marshal bytes
    // of --no-normalize flag the top code object FLAG_REF, which nothing references again);
    // b/__pycache__ is immutable.
    assert!(run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--no-link", "--no-normalize", "--force"])
        .arg(site.join("a")))
    .status
    .success());
    let a = pycs(&site.join("a"), "m", &h.tag);
    let raw = a
        .iter()
        .filter(|p| std::fs::read(p).unwrap()[16] == b'c' | 0x80)
        .count();
    assert!(raw > 0, "the raw marshal bytes flag the top code object");
    let a0 = a[0].clone();
    assert_eq!(std::fs::read(&a0).unwrap()[16], b'c' | 0x80);
    let b0 = pycs(&site.join("b"), "m", &h.tag)[0].clone();
    // b/ holds only that name, so that linking levels has nothing to do there.
    for p in pycs(&site.join("b"), "m", &h.tag) {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::hard_link(&a0, &b0).unwrap();
    assert!(immutable.add(&site.join("b/__pycache__")));

    // Pass 2: n's levels are separate files; its opt-1 is immutable, so it cannot become a
    // link, but its opt-2 can, and so can every level of o.
    let n = pycs(&site, "n", &h.tag);
    let o = pycs(&site, "o", &h.tag);
    assert!(immutable.add(&n[1]));

    let json = t.path().join("n.json");
    let out = run(pyclink()
        .args(["normalize", "--buildroot"])
        .arg(&root)
        .arg("--summary-json")
        .arg(&json));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    // a/m's inodes, each in the normal form now; the one named in b/ too counts once.
    assert_eq!(v["rewritten"], raw, "{v}");
    // a/m's two other levels, n's opt-2 and o's two other levels.
    assert_eq!(v["linked"], 5, "{v}");
    let errors: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    let sp = format!("/usr/lib/python{}/site-packages", h.version);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with(&format!(
            "{sp}/__pycache__/n.{}.opt-1.pyc: cannot make it a hardlink of its identical level n.{}.pyc: ",
            h.tag, h.tag
        )),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with(&format!(
            "{sp}/b/__pycache__/m.{}.pyc: cannot replace it with its normal form: ",
            h.tag
        )),
        "{errors:?}"
    );
    // On disk: a/ holds the normal form, b/ the old bytes; n.opt-2 and o's levels are links.
    assert_eq!(std::fs::read(&a0).unwrap()[16], b'c');
    assert_eq!(std::fs::read(&b0).unwrap()[16], b'c' | 0x80);
    assert_ne!(inode_of(&a0), inode_of(&b0));
    assert_eq!(inode_of(&n[0]), inode_of(&n[2]));
    assert_ne!(inode_of(&n[0]), inode_of(&n[1]));
    assert!(inode_of(&o[0]) == inode_of(&o[1]) && inode_of(&o[1]) == inode_of(&o[2]));
    assert!(temp_files(&root).is_empty());
}

/// Item 9: a run removes the temp files a killed run left in `__pycache__`, and nothing else
/// that merely looks like one: a user's `.pyclink-backup-of-settings.tmp`, near-miss names, a
/// symlink or directory with a temp file's name.
#[test]
fn stale_temp_cleanup_removes_only_pyclinks_temp_files() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let site = site_of(&h, &root);
    write_files(&site, &[("m.py", "x = 1\n")]);
    let cache = site.join("__pycache__");
    std::fs::create_dir_all(&cache).unwrap();
    let stale = [".pyclink-4242-0.tmp", ".pyclink-1-18446744073709551615.tmp"];
    let kept = [
        ".pyclink-backup-of-settings.tmp",
        ".pyclink-4242-0.tmp.orig",
        ".pyclink-04242-0.tmp",
        ".pyclink-4242-0-1.tmp",
        ".pyclink-0-1.tmp",
    ];
    for name in stale.iter().chain(&kept) {
        std::fs::write(cache.join(name), "user data").unwrap();
    }
    let outside = t.path().join("outside.txt");
    std::fs::write(&outside, "precious").unwrap();
    symlink(&outside, cache.join(".pyclink-4243-1.tmp")).unwrap();
    std::fs::create_dir(cache.join(".pyclink-4243-2.tmp")).unwrap();

    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--summary-json", "-"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stale_temps_removed"], 2, "{v}");
    for name in stale {
        assert!(!cache.join(name).exists(), "{name} left");
    }
    for name in kept {
        assert_eq!(
            std::fs::read_to_string(cache.join(name)).unwrap(),
            "user data",
            "{name}"
        );
    }
    assert!(std::fs::symlink_metadata(cache.join(".pyclink-4243-1.tmp")).is_ok());
    assert!(cache.join(".pyclink-4243-2.tmp").is_dir());
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    assert!(pycs(&site, "m", &h.tag)[0].exists());
}

/// Item 8: every path in every message is escaped by one function. Each fatal error is
/// driven with a build root, cache, config, JSON or interpreter path (or a PATH inside the
/// root) whose name holds a newline and the byte 0xff: the newline must not forge a second
/// `pyclink: error:` line, nor 0xff come out as U+FFFD.
#[test]
fn fatal_errors_escape_every_path() {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let odd = |prefix: &str| {
        let mut v = prefix.as_bytes().to_vec();
        v.extend_from_slice(b"\nforged\xff");
        OsString::from_vec(v)
    };
    // How the odd part prints.
    let shown = r"\nforged\xff";

    // A root with an odd name and a source of the host's version in it.
    let root = t.path().join(odd("root"));
    let site = site_of(&h, &root);
    write_files(&site, &[("a.py", "x = 1\n")]);
    let file = t.path().join(odd("file"));
    std::fs::write(&file, "").unwrap();
    let live = t.path().join(odd("live"));
    symlink("/", &live).unwrap();
    let missing = t.path().join(odd("missing"));
    let bad_toml = t.path().join(odd("bad.toml"));
    std::fs::write(&bad_toml, "jobs = \n").unwrap();
    let jobs_toml = t.path().join(odd("jobs.toml"));
    std::fs::write(&jobs_toml, "jobs = 5000\n").unwrap();
    let interp_toml = t.path().join("interp.toml");
    std::fs::write(
        &interp_toml,
        format!(
            "[interpreters]\n\"{}\" = \"/no\\nsuch\\u00ff\"\n",
            h.version
        ),
    )
    .unwrap();
    // clap takes --interpreter as UTF-8: a newline and a bidirectional control, not 0xff.
    let no_python = t.path().join("python\nforged\u{202e}");
    let mut odd_path = b"usr/share/".to_vec();
    odd_path.extend_from_slice(odd("p").as_bytes());
    let odd_path = OsString::from_vec(odd_path);
    std::fs::create_dir_all(root.join("usr/share")).unwrap();
    symlink(t.path(), root.join("usr/share").join(odd("link"))).unwrap();
    let mut linked = b"usr/share/".to_vec();
    linked.extend_from_slice(odd("link").as_bytes());
    let linked = OsString::from_vec(linked);
    let dotdot = OsString::from_vec(b"usr/..\n\xff/../x".to_vec());

    let a = |s: &str| OsString::from(s);
    let p = |p: &Path| p.as_os_str().to_os_string();
    let cases: Vec<(Vec<OsString>, String)> = vec![
        (
            vec![a("--buildroot"), p(&missing)],
            format!("missing{shown} does not exist"),
        ),
        (
            vec![a("--buildroot"), p(&file)],
            format!("file{shown} is not a directory"),
        ),
        (
            vec![a("--buildroot"), p(&live)],
            format!("live{shown} is the running system's /"),
        ),
        (
            vec![a("--buildroot"), p(&root), a("--config"), p(&missing)],
            format!(
                "cannot read the config file {}",
                t.path().join("missing").display()
            ) + shown,
        ),
        (
            vec![a("--buildroot"), p(&root), a("--config"), p(&bad_toml)],
            format!("bad.toml{shown}: TOML parse error"),
        ),
        (
            vec![a("--buildroot"), p(&root), a("--config"), p(&jobs_toml)],
            format!("jobs.toml{shown}: jobs = 5000: "),
        ),
        (
            vec![a("--buildroot"), p(&root), a("--config"), p(&interp_toml)],
            "= \"/no\\nsuch\u{ff}\": no such file".to_string(),
        ),
        (
            vec![a("--buildroot"), p(&root), a("--cache"), p(&file)],
            format!(
                "cannot use the cache directory {}",
                t.path().join("file").display()
            ) + shown,
        ),
        (
            vec![
                a("--buildroot"),
                p(&root),
                a("--summary-json"),
                p(&missing.join("s.json")),
            ],
            format!(
                "cannot write {}{shown}/s.json",
                t.path().join("missing").display()
            ),
        ),
        (
            vec![a("--buildroot"), p(&root), odd_path.clone()],
            format!("/usr/share/p{shown} does not exist in the build root "),
        ),
        (
            vec![a("--buildroot"), p(&root), linked.clone()],
            format!("/usr/share/link{shown} is a symlink"),
        ),
        (
            vec![a("--buildroot"), p(&root), dotdot.clone()],
            r"'usr/..\n\xff/../x' contains '..'".into(),
        ),
        (
            vec![a("--buildroot"), p(&root), a("--interpreter"), {
                let mut v = format!("{}=", h.version).into_bytes();
                v.extend_from_slice(no_python.as_os_str().as_bytes());
                OsString::from_vec(v)
            }],
            format!(
                r"--interpreter {}\nforged\u{{202e}}: ",
                t.path().join("python").display()
            ),
        ),
        (
            vec![
                a("--buildroot"),
                p(&root),
                a("--interpreter"),
                p(&no_python),
            ],
            format!(
                r"--interpreter {}\nforged\u{{202e}}: ",
                t.path().join("python").display()
            ),
        ),
        // Values echoed in a message are one line too.
        (
            vec![a("--buildroot"), p(&root), a("-x"), a("a[\nforged")],
            r"bad --exclude pattern 'a[\nforged': ".to_string(),
        ),
        (
            vec![
                a("--buildroot"),
                p(&root),
                a("--python-version"),
                a("3.1\nforged"),
            ],
            r"--python-version 3.1\nforged: ".to_string(),
        ),
        (
            vec![a("-q"), a("verify"), a("--buildroot"), p(&root)],
            "has none: options go after".to_string(),
        ),
        (
            vec![a("verify"), a("--buildroot"), p(&missing)],
            format!("missing{shown} does not exist"),
        ),
        (
            vec![a("verify"), a("--buildroot"), p(&root), odd_path.clone()],
            format!("/usr/share/p{shown} does not exist in the build root "),
        ),
        (
            vec![a("verify"), a("--buildroot"), p(&root), linked.clone()],
            format!("/usr/share/link{shown} is, or lies under, a symlink"),
        ),
        (
            vec![a("normalize"), a("--buildroot"), p(&missing)],
            format!("missing{shown} does not exist"),
        ),
        (
            vec![a("normalize"), a("--buildroot"), p(&root), odd_path.clone()],
            format!("/usr/share/p{shown} does not exist in the build root "),
        ),
    ];
    let json = t.path().join("fatal.json");
    for (args, says) in cases {
        let _ = std::fs::remove_file(&json);
        let mut cmd = pyclink();
        cmd.args(&args);
        if !args.iter().any(|a| a == "--summary-json") {
            cmd.arg("--summary-json").arg(&json);
        }
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = std::str::from_utf8(&out.stderr)
            .unwrap_or_else(|e| panic!("{args:?}: stderr is not UTF-8 ({e}): {:?}", out.stderr));
        assert!(!err.contains('\u{fffd}'), "{args:?}: U+FFFD in:\n{err}");
        assert!(
            err.lines().all(|l| l.starts_with("pyclink: ")) && !err.contains("\nforged"),
            "{args:?}: a forged line in:\n{err}"
        );
        assert!(err.contains(&says), "{args:?}: no {says:?} in:\n{err}");
        if let Ok(text) = std::fs::read_to_string(&json) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let fatal = v["fatal_error"].as_str().unwrap_or_default();
            assert!(
                !fatal.contains('\u{fffd}') && !fatal.contains('\n') || fatal.contains("TOML"),
                "{args:?}: {fatal:?}"
            );
            assert!(!v["buildroot"]
                .as_str()
                .unwrap_or_default()
                .contains('\u{fffd}'));
        }
    }
}
