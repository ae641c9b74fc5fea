//! A pyc whose 16-byte header matches its source is not therefore what pyclink would write now.
//! Each test plants one variant of "right header, wrong content" and checks that the up-to-date
//! shortcut does not keep it: the pyc is compiled again and the result passes the audit.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::Command;

const ASSERT_AND_DOC: &str =
    "\"\"\"doc\"\"\"\ndef f(x):\n    \"\"\"fdoc\"\"\"\n    assert x\n    return x\n";
const PLAIN: &str = "x = 1\n";
const SDE: &str = "1700000000";

/// An app at `opt/app` (outside the Python trees) with two modules.
fn app_root(t: &Path) -> (PathBuf, PathBuf) {
    let root = t.join("debian/app");
    write_files(
        &root,
        &[
            ("opt/app/app/main.py", ASSERT_AND_DOC),
            ("opt/app/app/util.py", PLAIN),
        ],
    );
    let app = root.join("opt/app");
    (root, app)
}

fn pyclink_app(root: &Path, h: &Host, extra: &[&str]) -> std::process::Output {
    run(pyclink()
        .arg("--buildroot")
        .arg(root)
        .args(["--python-version", &h.version])
        .args(extra)
        .arg("opt/app")
        .env("SOURCE_DATE_EPOCH", SDE))
}

fn expect_app(h: &Host) -> Vec<String> {
    vec![format!("{}:opt/app", h.version)]
}

fn up_to_date_count(out: &std::process::Output) -> u64 {
    let text = stdout(out);
    text.split(", ")
        .find_map(|part| part.strip_suffix(" up to date)"))
        .map_or(0, |n| n.parse().unwrap())
}

/// Issue 12's example: an upstream install step ran compileall on the staging tree with
/// SOURCE_DATE_EPOCH exported (checked-hash headers that match) and its own co_filename.
#[test]
fn compileall_output_of_the_staging_tree_is_replaced() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let (root, _app) = app_root(t.path());
    let out = run(Command::new(&h.python)
        .args([
            "-m",
            "compileall",
            "-q",
            "-o0",
            "-o1",
            "-o2",
            "debian/app/opt/app",
        ])
        .current_dir(t.path())
        .env("SOURCE_DATE_EPOCH", SDE));
    assert!(out.status.success());
    let main_pyc = pycs(&root.join("opt/app/app"), "main", &h.tag);
    assert!(main_pyc.iter().all(|p| p.exists()));
    let (ok, text) = audit(&root, &expect_app(&h), &[]);
    assert!(
        !ok && text.contains(": wrong-filename: "),
        "the planted pycs must be wrong to begin with:\n{text}"
    );

    let out = pyclink_app(&root, &h, &[]);
    assert!(out.status.success());
    assert_eq!(
        up_to_date_count(&out),
        0,
        "no staging pyc may be kept: {}",
        stdout(&out)
    );
    assert_audit_ok(&root, &expect_app(&h), &[]);
    // And now they are pyclink's: a rerun keeps all of them.
    let before = tree_state(&root);
    let out = pyclink_app(&root, &h, &[]);
    assert_eq!(up_to_date_count(&out), 6, "{}", stdout(&out));
    assert_eq!(before, tree_state(&root));
}

/// compileall with the right path and timestamps (the content is right), but its levels are
/// separate files where pyclink links them: the links are made.
#[test]
fn unlinked_identical_levels_are_linked() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let (root, app) = app_root(t.path());
    let out = run(Command::new(&h.python)
        .args(["-m", "compileall", "-q", "-o0", "-o1", "-o2", "-s"])
        .arg(&root)
        .args(["-p", "/"])
        .arg(&app)
        .env_remove("SOURCE_DATE_EPOCH"));
    assert!(out.status.success());
    let util = pycs(&root.join("opt/app/app"), "util", &h.tag);
    assert_ne!(ino(&util[0]), ino(&util[1]));
    let out = run(pyclink().arg("--buildroot").arg(&root).args([
        "--python-version",
        &h.version,
        "opt/app",
    ]));
    assert!(out.status.success());
    assert_eq!(up_to_date_count(&out), 0, "{}", stdout(&out));
    assert_eq!(ino(&util[0]), ino(&util[1]));
    assert_eq!(ino(&util[0]), ino(&util[2]));
    assert_audit_ok(&root, &expect_app(&h), &[]);
}

/// Variants on pyclink's own output: the wrong level's code under a name (copied with its
/// extended attributes, as `cp -a` does), bytes changed in place, another interpreter, and
/// links that `--no-link` does not want (and back).
#[test]
fn pyclinks_own_pycs_are_checked_not_trusted() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let (root, _app) = app_root(t.path());
    assert!(pyclink_app(&root, &h, &[]).status.success());
    let dir = root.join("opt/app/app");
    let main = pycs(&dir, "main", &h.tag);

    // Level 0's code, with its record, under the level 1 name: the header matches.
    let out = run(Command::new("cp").arg("-a").arg(&main[0]).arg(&main[1]));
    assert!(out.status.success());
    let out = pyclink_app(&root, &h, &[]);
    assert_eq!(up_to_date_count(&out), 3, "only util's: {}", stdout(&out));
    assert_audit_ok(&root, &expect_app(&h), &[]);

    // One byte of the body changed in place (same inode, same record).
    let mut bytes = std::fs::read(&main[2]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let f = std::fs::File::options().write(true).open(&main[2]).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &bytes[last..], last as u64).unwrap();
    drop(f);
    let out = pyclink_app(&root, &h, &[]);
    assert_eq!(up_to_date_count(&out), 3, "{}", stdout(&out));
    assert_audit_ok(&root, &expect_app(&h), &[]);

    // Another interpreter of the same version (here: the same program under another path).
    let other = t.path().join("bin").join(format!("python{}", h.version));
    std::fs::create_dir_all(other.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&h.python, &other).unwrap();
    let out = pyclink_app(
        &root,
        &h,
        &[
            "--interpreter",
            &format!("{}={}", h.version, other.display()),
        ],
    );
    assert_eq!(up_to_date_count(&out), 0, "{}", stdout(&out));

    // --no-link wants separate files, then the default wants the links back.
    let util = pycs(&dir, "util", &h.tag);
    let out = pyclink_app(&root, &h, &["--no-link"]);
    assert_eq!(up_to_date_count(&out), 0, "{}", stdout(&out));
    assert_ne!(ino(&util[0]), ino(&util[1]));
    let out = pyclink_app(&root, &h, &["--no-link"]);
    assert_eq!(up_to_date_count(&out), 6, "{}", stdout(&out));
    // main's levels all differ, so only util's pycs change.
    let out = pyclink_app(&root, &h, &[]);
    assert_eq!(up_to_date_count(&out), 3, "{}", stdout(&out));
    assert_eq!(ino(&util[0]), ino(&util[1]));
    assert_audit_ok(&root, &expect_app(&h), &[]);
}

/// The same checks hold in timestamp mode, where the source is not even read when its pycs are
/// up to date: a foreign pyc with a matching timestamp header is replaced.
#[test]
fn timestamp_headers_do_not_vouch_for_content_either() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let site = root.join(format!("usr/lib/python{}/site-packages", h.version));
    write_files(&site, &[("m.py", ASSERT_AND_DOC)]);
    // py_compile with another dfile, at level 0 only, written under all three names.
    let main = pycs(&site, "m", &h.tag);
    let src = site.join("m.py");
    for (level, pyc) in main.iter().enumerate() {
        let code = format!(
            "import py_compile; py_compile.compile({:?}, cfile={:?}, dfile='/elsewhere/m.py', \
             optimize={}, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)",
            src.display().to_string(),
            pyc.display().to_string(),
            if level == 2 { 0 } else { level }
        );
        let out = run(Command::new(&h.python).args(["-c", &code]));
        assert!(out.status.success());
    }
    let out = run(pyclink().arg("--buildroot").arg(&root));
    assert!(out.status.success());
    assert_eq!(up_to_date_count(&out), 0, "{}", stdout(&out));
    assert_audit_ok(
        &root,
        &[format!("{}:usr/lib/python{}", h.version, h.version)],
        &[],
    );
}
