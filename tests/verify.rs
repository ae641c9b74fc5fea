//! `pyclink verify`: it accepts what pyclink (and a correct compileall) writes, on real roots
//! for every installed version, and for each of its checks it rejects a pyc made by really
//! doing the wrong thing: compileall on the staging path, a level copied under another level's
//! name, a source edited after compiling, a truncated pyc, identical levels left unlinked, a
//! wrong hardlink, a pyc whose source is gone, an interrupted write, another interpreter's pyc.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Module docstring and a function docstring: levels 0 and 1 equal, 2 differs.
const DOCS: &str =
    "\"\"\"Module doc.\"\"\"\n\ndef f(x):\n    \"\"\"Function doc.\"\"\"\n    return x * 2\n";
/// An assert: level 0 differs from 1 and 2.
const ASSERTS: &str = "def g(x):\n    assert x > 0, 'positive'\n    return x\n";
/// Nothing level-dependent: all three levels equal.
const PLAIN: &str = "X = 1\nY = 'two'\nZ = (3.0, -0.0, b'4')\n";
const SUB: &str = "class K:\n    def m(self):\n        return [i for i in range(3)]\n";
const BAD: &str = "def broken(:\n    pass\n";

const APP: &str = "opt/app";

/// A private application tree at `ROOT/opt/app` with modules whose levels differ in each way.
fn app_root(t: &Path) -> PathBuf {
    let root = t.join("root");
    write_files(
        &root,
        &[
            ("opt/app/docs.py", DOCS),
            ("opt/app/asserts.py", ASSERTS),
            ("opt/app/plain.py", PLAIN),
            ("opt/app/pkg/__init__.py", ""),
            ("opt/app/pkg/sub.py", SUB),
        ],
    );
    root
}

fn app(root: &Path) -> PathBuf {
    root.join(APP)
}

/// `pyclink` on the app tree for the host's version.
fn compile_app(root: &Path, h: &Host, extra: &[&str]) {
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(root)
        .args(["--python-version", &h.version])
        .args(extra)
        .arg(APP));
    assert!(out.status.success(), "pyclink failed");
}

/// `pyclink verify --buildroot ROOT ARGS...`: its output and its JSON.
fn verify(root: &Path, args: &[&str]) -> (Output, Value) {
    let t = tempfile::tempdir().unwrap();
    let json = t.path().join("verify.json");
    let out = run(pyclink()
        .arg("verify")
        .arg("--buildroot")
        .arg(root)
        .arg("--summary-json")
        .arg(&json)
        .args(args));
    let text = std::fs::read_to_string(&json).expect("verify writes its JSON");
    let value: Value = serde_json::from_str(&text).expect("the JSON parses");
    assert_eq!(value["schema"], "pyclink-verify");
    assert_eq!(value["schema_version"], 1);
    assert_eq!(
        value["exit_code"].as_i64(),
        out.status.code().map(i64::from),
        "the JSON's exit code is the process's"
    );
    (out, value)
}

/// (kind, path, message) of every problem.
fn problems(json: &Value) -> Vec<(String, String, String)> {
    json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["path"].as_str().unwrap().to_string(),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Verify `root` and expect exit 0 with no problem.
fn assert_accepted(root: &Path, args: &[&str]) -> Value {
    let (out, json) = verify(root, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "verify must accept this root: {:#?}",
        problems(&json)
    );
    assert!(problems(&json).is_empty());
    let line = stdout(&out);
    assert!(
        line.lines().last().unwrap().starts_with(&format!(
            "pyclink verify: {} pyc checked, 0 problems",
            json["pycs_checked"]
        )),
        "{line}"
    );
    json
}

/// Verify `root`, expect exit 1, and return the problems; each `(kind, path suffix, words)`
/// of `wanted` must be among them.
fn assert_rejected(
    root: &Path,
    args: &[&str],
    wanted: &[(&str, &str, &str)],
) -> Vec<(String, String, String)> {
    let (out, json) = verify(root, args);
    assert_eq!(out.status.code(), Some(1), "verify must reject this root");
    let found = problems(&json);
    let text = stdout(&out);
    for (kind, path, words) in wanted {
        let hit = found
            .iter()
            .find(|(k, p, m)| k == kind && p.ends_with(path) && m.contains(words));
        let Some((k, p, m)) = hit else {
            panic!("no {kind} problem for ...{path} saying '{words}' among {found:#?}");
        };
        // Printed as `path: kind: what is wrong`.
        assert!(
            text.contains(&format!("{p}: {k}: {m}")),
            "not printed as path: kind: message:\n{text}"
        );
    }
    let last = text.lines().last().unwrap_or("");
    let plural = if found.len() == 1 { "" } else { "s" };
    let want = format!(
        "pyclink verify: {} pyc checked, {} problem{plural}",
        json["pycs_checked"],
        found.len()
    );
    assert!(
        last == want || last.starts_with(&format!("{want} (")),
        "the summary line: {last}"
    );
    found
}

fn kinds(found: &[(String, String, String)]) -> Vec<&str> {
    let mut k: Vec<&str> = found.iter().map(|(k, _, _)| k.as_str()).collect();
    k.dedup();
    k
}

/// The three pyc paths of `dir/NAME.py`.
fn levels(dir: &Path, name: &str, h: &Host) -> [PathBuf; 3] {
    pycs(dir, name, &h.tag)
}

/// `python -m compileall ARGS` with the host's interpreter, which must succeed.
fn compileall(h: &Host, args: &[&str], cwd: &Path) {
    let out = run(Command::new(&h.python)
        .args(["-m", "compileall", "-q"])
        .args(args)
        .current_dir(cwd)
        .env_remove("SOURCE_DATE_EPOCH"));
    assert!(out.status.success(), "compileall failed");
}

/// compileall's `-s`, `-p`, repeated `-o` and `--hardlink-dupes` came with 3.9.
fn modern_compileall(h: &Host, test: &str) -> bool {
    let minor: u32 = h.version.split('.').nth(1).unwrap().parse().unwrap();
    if minor < 9 {
        println!(
            "SKIP {test}: the host's Python {} has no compileall -s/-p/-o/--hardlink-dupes",
            h.version
        );
    }
    minor >= 9
}

/// pyc-audit, the independent oracle in ../shared/tools, where it exists (not required).
fn pyc_audit_if_present(root: &Path, expect: &[String], extra: &[&str]) -> Option<(bool, String)> {
    let found = pyc_audit(root, expect, extra);
    if found.is_none() {
        println!("note: pyc-audit not found; the cross-check is skipped");
    }
    found
}

fn set_mtime(p: &Path, t: std::time::SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// What it accepts.

/// Three versions in one root (the oldest and newest installed CPython 3.6-3.13 and the
/// host's), each from its stdlib's small corpus (top-level modules, json, email, asyncio),
/// compiled by one pyclink run: verify passes with every source required at every level,
/// counts every pyc pyclink wrote, and lists each version; pyc-audit agrees where it exists.
/// That verify accepts each version's output on its own is checked for every version of the
/// table by versions.rs, which verifies every root it compiles.
#[test]
fn accepts_pyclink_output_for_three_versions_in_one_root() {
    let h = host();
    let installed: Vec<String> = (6..=13)
        .map(|minor| format!("3.{minor}"))
        .filter(|v| *v == h.version || find_python(v).is_some())
        .collect();
    let mut versions: Vec<String> = Vec::new();
    for v in [installed.first(), Some(&h.version), installed.last()]
        .into_iter()
        .flatten()
    {
        if !versions.contains(v) {
            versions.push(v.clone());
        }
    }
    println!("versions in the root: {versions:?}");
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let refs: Vec<&str> = versions.iter().map(String::as_str).collect();
    make_buildroot(&root, &refs, Corpus::Small);
    let compiled_json = t.path().join("compile.json");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--errors", "warn", "-q", "--summary-json"])
        .arg(&compiled_json));
    assert!(out.status.success());
    let compiled: Value =
        serde_json::from_str(&std::fs::read_to_string(&compiled_json).unwrap()).unwrap();

    let json = assert_accepted(&root, &["-o", "0,1,2"]);
    let total_pyc: u64 = compiled["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pyc"].as_u64().unwrap())
        .sum();
    assert_eq!(json["pycs_checked"].as_u64().unwrap(), total_pyc);
    let checked: Vec<&str> = json["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    for v in &versions {
        assert!(
            checked.contains(&format!("python{v}").as_str()),
            "{v} not checked"
        );
    }
    // Sources that do not compile are counted, not reported: the same ones pyclink warned about.
    let not_compiling: usize = json["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["do_not_compile"].as_array().unwrap().len())
        .sum();
    assert_eq!(not_compiling, compiled["errors"].as_array().unwrap().len());

    let expect: Vec<String> = versions
        .iter()
        .map(|v| format!("{v}:usr/lib64/python{v}"))
        .collect();
    if let Some((ok, text)) = pyc_audit_if_present(&root, &expect, &[]) {
        assert!(ok, "pyc-audit disagrees:\n{text}");
    }
}

/// Hash-based pycs (SOURCE_DATE_EPOCH, --invalidation-mode), pycs written with --no-link (with
/// --no-link), compileall's own correct output, and a PATH restriction.
#[test]
fn accepts_hash_based_unlinked_and_compileall_output() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--python-version", &h.version, APP])
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    assert!(out.status.success());
    let docs = levels(&app(&root), "docs", &h);
    assert_eq!(
        &std::fs::read(&docs[0]).unwrap()[4..8],
        &[3, 0, 0, 0],
        "checked-hash"
    );
    assert_accepted(&root, &["-o", "0,1,2", "--python-version", &h.version, APP]);
    assert_accepted(&root, &[APP]);

    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(
        &root,
        &h,
        &["--invalidation-mode", "unchecked-hash", "--no-link"],
    );
    assert_accepted(&root, &["--no-link"]);

    if modern_compileall(&h, "accepts_hash_based_unlinked_and_compileall_output") {
        let t = tempfile::tempdir().unwrap();
        let root = app_root(t.path());
        compileall(
            &h,
            &[
                "-s",
                "root",
                "-p",
                "/",
                "-o0",
                "-o1",
                "-o2",
                "--hardlink-dupes",
                "root/opt/app",
            ],
            t.path(),
        );
        assert_accepted(&root, &["-o", "0,1,2", "--python-version", &h.version, APP]);
    }
}

/// The code is compared, not the marshal bytes: the host's stdlib compiled into
/// add-determinism's normal form (pyclink's default) and compiled with --no-normalize (the
/// interpreter's own bytes, every level compiled on its own) are both accepted with every level
/// required, though their bytes differ; a normal-form pyc and a raw one of the same source mixed
/// in one module are accepted too (equal code in different bytes is no missed link).
#[test]
fn accepts_normalized_and_raw_marshal_bytes() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let mut roots = Vec::new();
    for (name, extra) in [
        ("normal", &[][..]),
        ("raw", &["--no-normalize", "--compile-every-level"][..]),
    ] {
        let root = t.path().join(name);
        make_buildroot(&root, &[&h.version], Corpus::Small);
        let out = run(pyclink()
            .arg("--buildroot")
            .arg(&root)
            .args(["--errors", "warn", "-q"])
            .args(extra));
        assert!(out.status.success(), "pyclink {extra:?} failed");
        let json = assert_accepted(&root, &["-o", "0,1,2"]);
        assert!(json["pycs_checked"].as_u64().unwrap() > 100, "{json}");
        roots.push(root);
    }
    let (normal, raw) = (pyc_contents(&roots[0]), pyc_contents(&roots[1]));
    assert_eq!(
        normal.keys().collect::<Vec<_>>(),
        raw.keys().collect::<Vec<_>>()
    );
    let differ: Vec<&PathBuf> = normal
        .iter()
        .filter(|(p, bytes)| raw[*p] != **bytes)
        .map(|(p, _)| p)
        .collect();
    assert!(
        !differ.is_empty(),
        "normalizing changed no pyc: the two forms were not both checked"
    );
    // One level raw, the others in the normal form.
    let rel = differ[0];
    let mixed = roots[0].join(rel);
    std::fs::remove_file(&mixed).unwrap();
    std::fs::write(&mixed, &raw[rel]).unwrap();
    let (out, json) = verify(&roots[0], &["-o", "0,1,2"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} raw among normal-form levels: {:#?}",
        rel.display(),
        problems(&json)
    );
}

/// An installed prefix, verified in place with `--buildroot /`: the pycs record their real
/// paths. (pyclink compile refuses `/`; verify only reads.)
#[test]
fn accepts_an_installed_prefix_at_the_real_root() {
    let h = host();
    if !modern_compileall(&h, "accepts_an_installed_prefix_at_the_real_root") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let prefix = t.path().join("prefix/lib/app");
    write_files(
        &prefix,
        &[("docs.py", DOCS), ("plain.py", PLAIN), ("pkg/sub.py", SUB)],
    );
    let canon = prefix.canonicalize().unwrap();
    compileall(
        &h,
        &[
            "-o0",
            "-o1",
            "-o2",
            "--hardlink-dupes",
            canon.to_str().unwrap(),
        ],
        t.path(),
    );
    let json = assert_accepted(Path::new("/"), &[canon.to_str().unwrap()]);
    assert_eq!(json["pycs_checked"], 9);
}

/// The same, with symlinks in the root resolved without openat2 (Linux before 5.6, seccomp).
#[test]
fn accepts_an_installed_prefix_at_the_real_root_without_openat2() {
    fsroot::without_openat2(accepts_an_installed_prefix_at_the_real_root);
}

/// A `.py` symlink's pycs are checked against its target as resolved inside the root, never
/// the host's file: an absolute link (whose path also exists on the host, with other code) and
/// one that climbs above the root are accepted while their target in the root matches, and
/// stale once it changes.
#[test]
fn symlinked_sources_are_checked_against_their_target_in_the_root() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    let shadow = t.path().join("shadow/mod.py");
    write_files(shadow.parent().unwrap(), &[("mod.py", "WHERE = 'host'\n")]);
    write_files(
        &root.join(shadow.parent().unwrap().strip_prefix("/").unwrap()),
        &[("mod.py", "WHERE = 'root'\n")],
    );
    let app = app(&root);
    std::os::unix::fs::symlink(&shadow, app.join("shadowed.py")).unwrap();
    std::os::unix::fs::symlink("/opt/app/plain.py", app.join("abs.py")).unwrap();
    let up = "../".repeat(10);
    std::os::unix::fs::symlink(format!("{up}opt/app/docs.py"), app.join("up.py")).unwrap();
    compile_app(&root, &h, &[]);
    let json = assert_accepted(&root, &["-o", "0,1,2", APP]);
    assert_eq!(json["pycs_checked"], 24, "{json}");

    // The host's file changes: nothing to see. The root's targets change: their links' pycs
    // are stale.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(100);
    std::fs::write(&shadow, "WHERE = 'host, changed'\n").unwrap();
    assert_accepted(&root, &["-o", "0,1,2", APP]);
    for target in [
        root.join(shadow.strip_prefix("/").unwrap()),
        app.join("plain.py"),
        app.join("docs.py"),
    ] {
        std::fs::write(&target, "CHANGED = True\n").unwrap();
        set_mtime(&target, later);
    }
    let wanted: Vec<(String, String)> = ["shadowed", "abs", "up"]
        .iter()
        .flat_map(|n| {
            ["", ".opt-1", ".opt-2"].map(|l| ("stale".into(), format!("{n}.{}{l}.pyc", h.tag)))
        })
        .collect();
    let wanted: Vec<(&str, &str, &str)> = wanted
        .iter()
        .map(|(k, p)| (k.as_str(), p.as_str(), ""))
        .collect();
    assert_rejected(&root, &["-o", "0,1,2", APP], &wanted);
}

/// The same, with symlinks in the root resolved without openat2 (Linux before 5.6, seccomp).
#[test]
fn symlinked_sources_are_checked_against_their_target_in_the_root_without_openat2() {
    fsroot::without_openat2(symlinked_sources_are_checked_against_their_target_in_the_root);
}

// ---------------------------------------------------------------------------------------------
// What it rejects, one check at a time.

/// bad-header: another interpreter's pyc under this interpreter's name, and this
/// interpreter's pyc under another one's name.
#[test]
fn rejects_another_interpreters_pyc() {
    let h = host();
    let other = (6..=13)
        .map(|m| format!("3.{m}"))
        .filter(|v| *v != h.version)
        .find_map(|v| find_python(&v).map(|p| (v, p)));
    let Some((other_version, other_python)) = other else {
        println!("SKIP rejects_another_interpreters_pyc: no Python 3 other than the host's");
        return;
    };
    let other_tag = cache_tag(&other_python);
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &[]);
    let plain = levels(&app(&root), "plain", &h);
    // py_compile of the other interpreter, told to write where this one's pyc is: writing to a
    // new file breaks the hardlink to the other levels, which stay right.
    std::fs::remove_file(&plain[0]).unwrap();
    let out = run(Command::new(&other_python).arg("-c").arg(format!(
        "import py_compile; py_compile.compile({:?}, cfile={:?}, dfile='/opt/app/plain.py', doraise=True)",
        app(&root).join("plain.py").to_str().unwrap(),
        plain[0].to_str().unwrap()
    )));
    assert!(out.status.success());
    // This interpreter's pyc under the other's cache tag.
    let cache = app(&root).join("__pycache__");
    std::fs::copy(
        cache.join(format!("docs.{}.pyc", h.tag)),
        cache.join(format!("docs.{other_tag}.pyc")),
    )
    .unwrap();
    let found = assert_rejected(
        &root,
        &[],
        &[
            (
                "bad-header",
                &format!("plain.{}.pyc", h.tag),
                &format!("a python{other_version} magic number"),
            ),
            (
                "bad-header",
                &format!("docs.{other_tag}.pyc"),
                &format!("is not python{other_version}'s"),
            ),
        ],
    );
    // The copy under the other tag is a module of its own, short of the root's levels 1 and 2.
    let missing: Vec<&str> = found
        .iter()
        .filter(|(k, _, _)| k == "missing")
        .map(|(_, p, _)| p.as_str())
        .collect();
    assert_eq!(
        missing,
        [
            format!("/{APP}/__pycache__/docs.{other_tag}.opt-1.pyc"),
            format!("/{APP}/__pycache__/docs.{other_tag}.opt-2.pyc"),
        ],
        "{found:#?}"
    );
    assert_eq!(found.len(), 4, "{found:#?}");
}

/// stale: the source changed after compiling, for each invalidation mode.
#[test]
fn rejects_stale_pycs() {
    let h = host();
    for mode in ["timestamp", "checked-hash", "unchecked-hash"] {
        let t = tempfile::tempdir().unwrap();
        let root = app_root(t.path());
        compile_app(&root, &h, &["--invalidation-mode", mode]);
        let src = app(&root).join("plain.py");
        let before = std::fs::metadata(&src).unwrap().modified().unwrap();
        // Same size; for the hash modes also the same mtime, so only the hash can tell.
        std::fs::write(&src, PLAIN.replace("X = 1", "X = 7")).unwrap();
        if mode != "timestamp" {
            set_mtime(&src, before);
        } else {
            let t = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
            std::fs::File::options()
                .write(true)
                .open(&src)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        let words = if mode == "timestamp" {
            "the source has mtime"
        } else {
            "source hash"
        };
        let found = assert_rejected(
            &root,
            &[],
            &[
                ("stale", &format!("plain.{}.pyc", h.tag), words),
                ("stale", &format!("plain.{}.opt-1.pyc", h.tag), words),
                ("stale", &format!("plain.{}.opt-2.pyc", h.tag), words),
            ],
        );
        assert_eq!(found.len(), 3, "{mode}: {found:#?}");
    }
}

/// code-mismatch: a level's pyc copied under another level's name; a source edited to the same
/// size with its mtime put back (the header still matches, the code does not); a source that no
/// longer compiles behind a fresh-looking header.
#[test]
fn rejects_code_that_is_not_the_sources() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &[]);
    let dir = app(&root);
    let docs = levels(&dir, "docs", &h);
    std::fs::remove_file(&docs[2]).unwrap();
    std::fs::copy(&docs[0], &docs[2]).unwrap();

    let mtime = |p: &Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let sub = dir.join("pkg/sub.py");
    let before = mtime(&sub);
    std::fs::write(&sub, SUB.replace("range(3)", "range(4)")).unwrap();
    set_mtime(&sub, before);

    let asserts = dir.join("asserts.py");
    let before = mtime(&asserts);
    let broken = format!("{BAD}{}", "#".repeat(ASSERTS.len() - BAD.len() - 1) + "\n");
    assert_eq!(broken.len(), ASSERTS.len());
    std::fs::write(&asserts, broken).unwrap();
    set_mtime(&asserts, before);

    let found = assert_rejected(
        &root,
        &[],
        &[
            (
                "code-mismatch",
                &format!("docs.{}.opt-2.pyc", h.tag),
                "differs from a fresh compile at optimize=2",
            ),
            (
                "code-mismatch",
                &format!("docs.{}.opt-2.pyc", h.tag),
                "it is the code of optimize=0",
            ),
            (
                "missed-link",
                &format!("docs.{}.opt-2.pyc", h.tag),
                &format!("identical to docs.{}.pyc", h.tag),
            ),
            ("code-mismatch", &format!("sub.{}.pyc", h.tag), "co_consts"),
            (
                "code-mismatch",
                &format!("sub.{}.opt-2.pyc", h.tag),
                "optimize=2",
            ),
            (
                "code-mismatch",
                &format!("asserts.{}.pyc", h.tag),
                "the source does not compile (SyntaxError at line 1",
            ),
        ],
    );
    let mut k = kinds(&found);
    k.sort();
    k.dedup();
    assert_eq!(k, vec!["code-mismatch", "missed-link"], "{found:#?}");
}

/// Tampered in place, the header left as it was: a constant's bytes changed inside the marshal
/// data (same size), flags PEP 552 does not define, a body that is no code object.
#[test]
fn rejects_tampered_pycs_with_a_valid_looking_header() {
    let h = host();
    let minor: u32 = h.version.split('.').nth(1).unwrap().parse().unwrap();
    if minor < 7 {
        println!(
            "SKIP rejects_tampered_pycs_with_a_valid_looking_header: no PEP 552 flags before 3.7"
        );
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &["--no-link"]);
    let dir = app(&root);
    // plain.py's string constant 'two' becomes 'owt': the bytes of one constant, nothing else.
    let plain = levels(&dir, "plain", &h);
    let mut data = std::fs::read(&plain[0]).unwrap();
    let at = data
        .windows(3)
        .position(|w| w == b"two")
        .expect("the constant is in the pyc");
    data[at..at + 3].copy_from_slice(b"owt");
    std::fs::write(&plain[0], &data).unwrap();
    // Flags 2: neither timestamp (0) nor hash (1, 3).
    let docs = levels(&dir, "docs", &h);
    let mut data = std::fs::read(&docs[1]).unwrap();
    data[4] = 2;
    std::fs::write(&docs[1], &data).unwrap();
    // A marshalled tuple behind docs' real level-2 header.
    let mut data = std::fs::read(&docs[2]).unwrap();
    data.truncate(16);
    data.extend_from_slice(b")\x02\xe9\x01\x00\x00\x00\xe9\x02\x00\x00\x00");
    std::fs::write(&docs[2], &data).unwrap();
    let found = assert_rejected(
        &root,
        &["--no-link"],
        &[
            (
                "code-mismatch",
                &format!("plain.{}.pyc", h.tag),
                "differs from a fresh compile at optimize=0",
            ),
            (
                "code-mismatch",
                &format!("plain.{}.pyc", h.tag),
                "'owt' != 'two'",
            ),
            (
                "bad-header",
                &format!("docs.{}.opt-1.pyc", h.tag),
                "flags 0x2 in its header",
            ),
            (
                "code-mismatch",
                &format!("docs.{}.opt-2.pyc", h.tag),
                "it holds a tuple, not a code object",
            ),
        ],
    );
    assert_eq!(found.len(), 3, "{found:#?}");
}

/// wrong-filename: compileall run on the staging tree, as an upstream `make install` does.
#[test]
fn rejects_compileall_of_the_staging_path() {
    let h = host();
    if !modern_compileall(&h, "rejects_compileall_of_the_staging_path") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    // A staging path longer than any truncation: the message shows it whole, quotes closed.
    let long = "a_package_name_long_enough_to_push_the_path_past_sixty_characters";
    write_files(&root, &[(&format!("opt/app/{long}/m.py"), PLAIN)]);
    compileall(
        &h,
        &["-o0", "-o1", "-o2", "--hardlink-dupes", "root/opt/app"],
        t.path(),
    );
    let long_message = format!("co_filename is 'root/opt/app/{long}/m.py' in 1 of its 1 ");
    let found = assert_rejected(
        &root,
        &[],
        &[
            (
                "wrong-filename",
                &format!("docs.{}.pyc", h.tag),
                "co_filename is 'root/opt/app/docs.py' in 2 of its 2 code objects; it must be \
                 '/opt/app/docs.py'",
            ),
            (
                "wrong-filename",
                &format!("pkg/__pycache__/sub.{}.opt-1.pyc", h.tag),
                "co_filename is 'root/opt/app/pkg/sub.py' in ",
            ),
            (
                "wrong-filename",
                &format!("{long}/__pycache__/m.{}.opt-2.pyc", h.tag),
                &long_message,
            ),
        ],
    );
    // Every pyc, and nothing else: the code itself is right.
    assert_eq!(found.len(), 18, "{found:#?}");
    assert_eq!(kinds(&found), vec!["wrong-filename"]);
    if let Some((ok, text)) = pyc_audit_if_present(&root, &[format!("{}:{APP}", h.version)], &[]) {
        assert!(
            !ok && text.contains("code_mismatch"),
            "pyc-audit agrees:\n{text}"
        );
    }
}

/// missed-link: compileall without --hardlink-dupes; accepted with --no-link.
#[test]
fn rejects_unlinked_identical_levels() {
    let h = host();
    if !modern_compileall(&h, "rejects_unlinked_identical_levels") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compileall(
        &h,
        &["-s", "root", "-p", "/", "-o0", "-o1", "-o2", "root/opt/app"],
        t.path(),
    );
    let tag = &h.tag;
    let found = assert_rejected(
        &root,
        &[],
        &[
            (
                "missed-link",
                &format!("plain.{tag}.opt-1.pyc"),
                &format!("identical to plain.{tag}.pyc"),
            ),
            (
                "missed-link",
                &format!("plain.{tag}.opt-2.pyc"),
                &format!("identical to plain.{tag}.pyc"),
            ),
            (
                "missed-link",
                &format!("docs.{tag}.opt-1.pyc"),
                &format!("identical to docs.{tag}.pyc"),
            ),
            (
                "missed-link",
                &format!("asserts.{tag}.opt-2.pyc"),
                &format!("identical to asserts.{tag}.opt-1.pyc"),
            ),
        ],
    );
    assert_eq!(kinds(&found), vec!["missed-link"]);
    // docs' level 2 and asserts' level 0 differ from the others: no link is missing there.
    assert!(!found
        .iter()
        .any(|(_, p, _)| p.ends_with(&format!("docs.{tag}.opt-2.pyc"))));
    assert_accepted(&root, &["--no-link"]);
}

/// wrong-link: a level hardlinked to another level whose code differs (a dedupe by name).
#[test]
fn rejects_wrong_links() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &[]);
    let docs = levels(&app(&root), "docs", &h);
    std::fs::remove_file(&docs[2]).unwrap();
    std::fs::hard_link(&docs[0], &docs[2]).unwrap();
    let asserts = levels(&app(&root), "asserts", &h);
    std::fs::remove_file(&asserts[0]).unwrap();
    std::fs::hard_link(&asserts[1], &asserts[0]).unwrap();
    let found = assert_rejected(
        &root,
        &[],
        &[
            (
                "wrong-link",
                &format!("docs.{}.opt-2.pyc", h.tag),
                &format!(
                    "a hardlink of docs.{}.pyc, but optimize=2 and optimize=0 compile differently",
                    h.tag
                ),
            ),
            (
                "wrong-link",
                &format!("asserts.{}.pyc", h.tag),
                "optimize=0 and optimize=1 compile differently",
            ),
        ],
    );
    assert_eq!(
        found.len(),
        2,
        "the wrong link, not also a mismatch: {found:#?}"
    );
    if let Some((ok, text)) = pyc_audit_if_present(&root, &[format!("{}:{APP}", h.version)], &[]) {
        assert!(
            !ok && text.contains("wrong_link"),
            "pyc-audit agrees:\n{text}"
        );
    }
}

/// stray: a pyc whose source was deleted, files that are no pycs, a legacy pyc beside its
/// source (compileall -b), an opt-3 name, a directory in __pycache__.
#[test]
fn rejects_strays() {
    let h = host();
    if !modern_compileall(&h, "rejects_strays") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &[]);
    let dir = app(&root);
    std::fs::remove_file(dir.join("pkg/sub.py")).unwrap();
    let cache = dir.join("__pycache__");
    std::fs::write(cache.join("README"), "notes\n").unwrap();
    std::fs::copy(
        cache.join(format!("plain.{}.pyc", h.tag)),
        cache.join(format!("plain.{}.opt-3.pyc", h.tag)),
    )
    .unwrap();
    std::fs::create_dir(cache.join("old")).unwrap();
    compileall(
        &h,
        &["-b", "-s", "root", "-p", "/", "root/opt/app/docs.py"],
        t.path(),
    );
    assert!(dir.join("docs.pyc").exists());
    let found = assert_rejected(
        &root,
        &[],
        &[
            (
                "stray",
                &format!("pkg/__pycache__/sub.{}.pyc", h.tag),
                "no source sub.py",
            ),
            (
                "stray",
                &format!("pkg/__pycache__/sub.{}.opt-2.pyc", h.tag),
                "no source sub.py",
            ),
            ("stray", "__pycache__/README", "not a pyc"),
            (
                "stray",
                &format!("plain.{}.opt-3.pyc", h.tag),
                "optimization level",
            ),
            ("stray", "__pycache__/old", "a directory in __pycache__"),
            ("stray", "opt/app/docs.pyc", "beside its source docs.py"),
        ],
    );
    assert_eq!(kinds(&found), vec!["stray"]);
    assert_eq!(found.len(), 7, "{found:#?}");
}

/// partial: a temp file of an interrupted pyclink write, one of importlib's, a pyc truncated
/// inside its marshal data and one truncated inside its header.
#[test]
fn rejects_partial_pycs() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &["--no-link"]);
    let cache = app(&root).join("__pycache__");
    // The name pyclink gives its temp files (src/write/mod.rs: TEMP_PREFIX, TEMP_SUFFIX).
    let temp = ".pyclink-12345-1.tmp".to_string();
    let docs = levels(&app(&root), "docs", &h);
    let whole = std::fs::read(&docs[0]).unwrap();
    std::fs::write(cache.join(&temp), &whole[..whole.len() / 2]).unwrap();
    std::fs::write(
        cache.join(format!("docs.{}.pyc.140243", h.tag)),
        &whole[..whole.len() / 3],
    )
    .unwrap();
    std::fs::write(&docs[1], &whole[..whole.len() - 7]).unwrap();
    std::fs::write(&docs[2], &whole[..10]).unwrap();
    // Compiling removes temp files from __pycache__ only: elsewhere none is promised removal.
    std::fs::write(app(&root).join(&temp), "half").unwrap();
    let found = assert_rejected(
        &root,
        &["--no-link"],
        &[
            (
                "partial",
                &format!("__pycache__/{temp}"),
                "interrupted pyclink run (the next pyclink run removes it)",
            ),
            (
                "partial",
                &format!("{APP}/{temp}"),
                "outside __pycache__ no pyclink run removes it",
            ),
            (
                "partial",
                &format!("docs.{}.pyc.140243", h.tag),
                "importlib or py_compile",
            ),
            (
                "partial",
                &format!("docs.{}.opt-1.pyc", h.tag),
                "marshal data ends early",
            ),
            (
                "partial",
                &format!("docs.{}.opt-2.pyc", h.tag),
                "truncated: 10 bytes",
            ),
        ],
    );
    assert_eq!(found.len(), 5, "{found:#?}");
}

/// unknown-tag: a cache tag of a Python that is not here, of one pyclink does not support, and
/// one that names no Python; an interpreter given that cannot run.
#[test]
fn rejects_unknown_tags() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &[]);
    let cache = app(&root).join("__pycache__");
    let src = cache.join(format!("plain.{}.pyc", h.tag));
    for tag in ["cpython-399", "cpython-35", "jython-27"] {
        std::fs::copy(&src, cache.join(format!("plain.{tag}.pyc"))).unwrap();
    }
    let found = assert_rejected(
        &root,
        &[],
        &[
            (
                "unknown-tag",
                "plain.cpython-399.pyc",
                "no interpreter found for python3.99",
            ),
            (
                "unknown-tag",
                "plain.cpython-399.pyc",
                "give --interpreter 3.99=PATH",
            ),
            (
                "unknown-tag",
                "plain.cpython-35.pyc",
                "python3.5 is not supported",
            ),
            (
                "unknown-tag",
                "plain.jython-27.pyc",
                "names no Python version",
            ),
        ],
    );
    assert_eq!(found.len(), 3, "{found:#?}");

    // A given interpreter that cannot start stops the run (an_interpreter_that_cannot_start_is_fatal).
    let given = format!("{}=/nonexistent/python", h.version);
    let (out, _) = verify(&root, &["--interpreter", &given]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no usable interpreter"));
    // The interpreter given by path is the one used.
    let given = format!("{}={}", h.version, h.python.display());
    let (_, json) = verify(&root, &["--interpreter", &given, APP]);
    let v = &json["versions"].as_array().unwrap()[0];
    assert_eq!(v["interpreter"], h.python.display().to_string());
}

/// sourceless: compileall -b, then the sources removed. Refused unless --allow-sourceless,
/// which still checks the header and the file names; Python 2 pycs are left alone.
#[test]
fn sourceless_distributions() {
    let h = host();
    if !modern_compileall(&h, "sourceless_distributions") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compileall(
        &h,
        &["-b", "-s", "root", "-p", "/", "root/opt/app"],
        t.path(),
    );
    for py in [
        "docs.py",
        "asserts.py",
        "plain.py",
        "pkg/__init__.py",
        "pkg/sub.py",
    ] {
        std::fs::remove_file(app(&root).join(py)).unwrap();
    }
    let found = assert_rejected(
        &root,
        &[],
        &[(
            "sourceless",
            "opt/app/pkg/sub.pyc",
            "no source sub.py beside it",
        )],
    );
    assert_eq!(found.len(), 5);
    let json = assert_accepted(&root, &["--allow-sourceless"]);
    assert_eq!(json["pycs_checked"], 5);

    // Compiled on the staging path: the file names give it away even without a source.
    let t2 = tempfile::tempdir().unwrap();
    let root2 = app_root(t2.path());
    std::fs::create_dir_all(root2.join("opt/lib")).unwrap();
    compileall(&h, &["-b", "root/opt/app/plain.py"], t2.path());
    std::fs::rename(
        app(&root2).join("plain.pyc"),
        root2.join("opt/lib/plain.pyc"),
    )
    .unwrap();
    assert_rejected(
        &root2,
        &["--allow-sourceless", "opt/lib"],
        &[(
            "wrong-filename",
            "opt/lib/plain.pyc",
            "it must be '/opt/lib/plain.py'",
        )],
    );

    match find_python("2.7") {
        None => println!("SKIP sourceless_distributions (Python 2 part): no python2.7"),
        Some(py2) => {
            let t = tempfile::tempdir().unwrap();
            let lib = t.path().join("root/usr/lib/python2.7");
            write_files(&lib, &[("old.py", "x = 1\n")]);
            let out = run(Command::new(py2)
                .args(["-c", "import py_compile; py_compile.compile('old.py')"])
                .current_dir(&lib));
            assert!(out.status.success() && lib.join("old.pyc").exists());
            let json = assert_accepted(&t.path().join("root"), &[]);
            assert_eq!(json["pycs_checked"], 0);
            assert_eq!(
                json["not_checked"][0],
                "/usr/lib/python2.7/old.pyc: a Python 2 pyc"
            );
        }
    }
}

/// missing (with -o): pyclink -o 0 -o 1, then verify -o 0,1,2. A source that does not compile
/// is counted, never missing; an excluded one is not required.
#[test]
fn rejects_missing_levels_but_not_sources_that_do_not_compile() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    write_files(
        &root,
        &[("opt/app/bad.py", BAD), ("opt/app/skipped.py", PLAIN)],
    );
    compile_app(
        &root,
        &h,
        &["-o", "0", "-o", "1", "--errors", "warn", "-x", "skipped.py"],
    );
    let v = h.version.as_str();
    assert_accepted(
        &root,
        &["-o", "0,1", "--python-version", v, "-x", "skipped.py", APP],
    );
    let found = assert_rejected(
        &root,
        &[
            "-o",
            "0,1,2",
            "--python-version",
            v,
            "-x",
            "skipped.py",
            APP,
        ],
        &[
            (
                "missing",
                &format!("__pycache__/docs.{}.opt-2.pyc", h.tag),
                "no pyc for optimize=2",
            ),
            (
                "missing",
                &format!("pkg/__pycache__/sub.{}.opt-2.pyc", h.tag),
                "no pyc for optimize=2",
            ),
        ],
    );
    assert_eq!(found.len(), 5, "{found:#?}");
    let (_, json) = verify(&root, &["-o", "0,1,2", "--python-version", v, APP]);
    let problems = problems(&json);
    assert!(problems
        .iter()
        .any(|(k, p, _)| k == "missing" && p.ends_with(&format!("skipped.{}.pyc", h.tag))));
    assert!(
        !problems.iter().any(|(_, p, _)| p.contains("/bad.")),
        "{problems:#?}"
    );
    let dnc = json["versions"][0]["do_not_compile"].as_array().unwrap();
    assert_eq!(dnc.len(), 1);
    assert!(dnc[0]
        .as_str()
        .unwrap()
        .starts_with("/opt/app/bad.py:1: SyntaxError"));
    assert!(
        stdout(&verify(&root, &["-o", "0,1,2", "--python-version", v, APP]).0)
            .contains("(1 source does not compile)")
    );
}

/// A PATH that names a source file checks that module's pycs (in `__pycache__` beside it), with
/// and without -o; a stale one among them is still found.
#[test]
fn a_source_path_checks_its_modules_pycs() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &[]);
    let v = h.version.as_str();
    let docs = "opt/app/docs.py";
    let json = assert_accepted(&root, &[docs]);
    assert_eq!(
        json["pycs_checked"], 3,
        "docs.py's three pycs, not plain.py's"
    );
    let json = assert_accepted(&root, &["-o", "0,1,2", "--python-version", v, docs]);
    assert_eq!(json["pycs_checked"], 3);
    // A source named as a PATH beats -x, as it does for compiling (report 2, item 4).
    let json = assert_accepted(
        &root,
        &["-o", "0,1,2", "--python-version", v, "-x", "docs.py", docs],
    );
    assert_eq!(json["pycs_checked"], 3);
    std::fs::remove_file(&levels(&app(&root), "docs", &h)[2]).unwrap();
    let found = assert_rejected(
        &root,
        &["-o", "0,1,2", "--python-version", v, docs],
        &[(
            "missing",
            &format!("__pycache__/docs.{}.opt-2.pyc", h.tag),
            "no pyc for optimize=2",
        )],
    );
    assert_eq!(found.len(), 1, "{found:#?}");
}

/// Report 2, items 11 and 12: a file named twice is checked once, and a pyc PATH is checked
/// quietly (with -o, as its source's module), not called "not a Python source".
#[test]
fn a_file_named_twice_counts_once_and_a_pyc_path_is_quiet() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &[]);
    let v = h.version.as_str();
    let docs = root.join("opt/app/docs.py");
    let json = assert_accepted(&root, &["/opt/app/docs.py", docs.to_str().unwrap()]);
    assert_eq!(json["pycs_checked"], 3);
    let pyc = format!("opt/app/__pycache__/docs.{}.pyc", h.tag);
    let (out, json) = verify(&root, &["-o", "0", "--python-version", v, &pyc]);
    assert_eq!(out.status.code(), Some(0), "{json}");
    assert_eq!(json["pycs_checked"], 1);
    assert!(
        !stderr(&out).contains("not a Python source"),
        "{}",
        stderr(&out)
    );
}

/// Report 2, item 8: an `--interpreter` that cannot start stops the run (exit 2, one message,
/// as when compiling) instead of making every pyc of its version a problem; with -o, a source
/// that has pycs and is required is counted once in "needed for N sources".
#[test]
fn an_interpreter_that_cannot_start_is_fatal() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &[]);
    let given = format!("{}=/nonexistent", h.version);
    for extra in [&[][..], &["-o", "0", "--python-version", &h.version][..]] {
        let (out, json) = verify(&root, &[&["--interpreter", &given][..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stdout(&out));
        let err = stderr(&out);
        assert_eq!(
            err.matches("no usable interpreter").count(),
            1,
            "{extra:?}: {err}"
        );
        // The app tree's five sources, whether or not -o also requires them.
        assert!(err.contains("(needed for 5 sources)"), "{extra:?}: {err}");
        assert!(
            json["fatal_error"]
                .as_str()
                .is_some_and(|e| e.contains("/nonexistent")),
            "{json}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 22, item 3: every pyc the tree's Python cannot load, and every source without its pycs.

/// `python -c "py_compile.compile(SRC, cfile=CFILE, dfile=DFILE)"`, which must succeed: a pyc
/// as that interpreter writes it, wherever the test wants it.
fn py_compile(python: &Path, src: &Path, cfile: &Path, dfile: &str) {
    std::fs::create_dir_all(cfile.parent().unwrap()).unwrap();
    let out = run(Command::new(python).arg("-c").arg(format!(
        "import py_compile; py_compile.compile({:?}, cfile={:?}, dfile={dfile:?}, doraise=True)",
        src.to_str().unwrap(),
        cfile.to_str().unwrap()
    )));
    assert!(out.status.success(), "py_compile failed");
}

/// The problems of `kind`, by path.
fn paths_of<'a>(found: &'a [(String, String, String)], kind: &str) -> Vec<&'a str> {
    let mut paths: Vec<&str> = found
        .iter()
        .filter(|(k, _, _)| k == kind)
        .map(|(_, p, _)| p.as_str())
        .collect();
    paths.sort();
    paths
}

/// wrong-version: in a python3.12 tree only 3.12 imports, so a pyc of any other Python there is
/// one it cannot load, whatever its content and whether or not sourceless pycs are allowed: a
/// Python 2.7 sourceless `old.pyc` (which verify used not even to mention), a 3.11 sourceless pyc
/// (which `--allow-sourceless` used to accept), a `__pycache__` pyc with 3.11's cache tag beside
/// the right ones. In Debian's python3/dist-packages, a PyPy-tagged pyc. A 3.12 sourceless pyc in
/// the same tree is accepted, and a 2.7 pyc in the python2.7 tree is still left alone.
#[test]
fn pycs_the_trees_python_cannot_load_are_wrong_version() {
    let test = "pycs_the_trees_python_cannot_load_are_wrong_version";
    let Some(py312) = python_or_skip("3.12", test) else {
        return;
    };
    let h = host();
    let foreign = match h.version.as_str() {
        "3.12" => python_or_skip("3.11", test),
        _ => Some(h.python.clone()),
    };
    let Some(foreign) = foreign else {
        return;
    };
    let foreign_version = {
        let out = run(Command::new(&foreign).args([
            "-c",
            "import sys; print('python%d.%d' % sys.version_info[:2])",
        ]));
        stdout(&out).trim().to_string()
    };
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let pkg = "usr/lib/python3.12/site-packages/pkg";
    write_files(
        &root,
        &[
            (&format!("{pkg}/__init__.py"), ""),
            (&format!("{pkg}/mod.py"), DOCS),
            ("usr/lib/python3/dist-packages/d.py", PLAIN),
        ],
    );
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    assert_accepted(&root, &[]);

    let outside = t.path().join("src.py");
    std::fs::write(&outside, PLAIN).unwrap();
    let dir = root.join(pkg);
    py_compile(
        &foreign,
        &outside,
        &dir.join("legacy.pyc"),
        &format!("/{pkg}/legacy.py"),
    );
    py_compile(
        &py312,
        &outside,
        &dir.join("good.pyc"),
        &format!("/{pkg}/good.py"),
    );
    let foreign_tag = cache_tag(&foreign);
    py_compile(
        &foreign,
        &dir.join("mod.py"),
        &dir.join(format!("__pycache__/mod.{foreign_tag}.pyc")),
        &format!("/{pkg}/mod.py"),
    );
    let dist = root.join("usr/lib/python3/dist-packages/__pycache__");
    std::fs::copy(dist.join("d.cpython-312.pyc"), dist.join("d.pypy311.pyc")).unwrap();
    let py27 = python_or_skip("2.7", test);
    if let Some(py27) = &py27 {
        py_compile(
            py27,
            &outside,
            &dir.join("old.pyc"),
            &format!("/{pkg}/old.py"),
        );
        let keep = root.join("usr/lib/python2.7/keep.pyc");
        py_compile(py27, &outside, &keep, "/usr/lib/python2.7/keep.py");
    }

    let mut wanted = vec![
        (
            "wrong-version",
            "pkg/legacy.pyc".to_string(),
            format!(
                "is {foreign_version}'s, but only python3.12 imports from /usr/lib/python3.12: it \
                 cannot load this pyc"
            ),
        ),
        (
            "wrong-version",
            format!("pkg/__pycache__/mod.{foreign_tag}.pyc"),
            format!("cache tag '{foreign_tag}' is {foreign_version}'s, but only python3.12"),
        ),
        (
            "wrong-version",
            "dist-packages/__pycache__/d.pypy311.pyc".to_string(),
            "only CPython 3 imports from /usr/lib/python3/dist-packages".to_string(),
        ),
    ];
    if py27.is_some() {
        wanted.push((
            "wrong-version",
            "pkg/old.pyc".to_string(),
            "a Python 2 pyc (magic number 62211), but only python3.12 imports".to_string(),
        ));
    }
    let wanted: Vec<(&str, &str, &str)> = wanted
        .iter()
        .map(|(k, p, m)| (*k, p.as_str(), m.as_str()))
        .collect();
    for allow in [&[][..], &["--allow-sourceless"][..]] {
        let found = assert_rejected(&root, allow, &wanted);
        assert_eq!(paths_of(&found, "wrong-version").len(), wanted.len());
        // good.pyc is 3.12's: refused only as sourceless, and only without the flag.
        let sourceless = paths_of(&found, "sourceless");
        match allow.is_empty() {
            true => assert_eq!(sourceless, [format!("/{pkg}/good.pyc")]),
            false => assert!(sourceless.is_empty()),
        }
        assert_eq!(found.len(), wanted.len() + sourceless.len(), "{found:#?}");
    }
    if py27.is_some() {
        let (_, json) = verify(&root, &[]);
        assert_eq!(
            json["not_checked"],
            serde_json::json!(["/usr/lib/python2.7/keep.pyc: a Python 2 pyc"])
        );
    }
}

/// wrong-version in a PyPy tree: `usr/lib/pypy3.11` is read by PyPy 3.11 only, which never
/// loads a CPython pyc, neither one tagged cpython-311 in `__pycache__` nor a sourceless one
/// with CPython's magic number; a sourceless PyPy pyc there is accepted.
#[test]
fn a_pypy_tree_holding_cpython_pycs() {
    let test = "a_pypy_tree_holding_cpython_pycs";
    let Some(pypy) = python_or_skip("pypy3.11", test) else {
        return;
    };
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    let dir = "usr/lib/pypy3.11/site-packages";
    write_files(&root, &[(&format!("{dir}/p.py"), ASSERTS)]);
    assert!(run(pyclink().arg("--buildroot").arg(&root))
        .status
        .success());
    assert_accepted(&root, &[]);
    let src = root.join(dir).join("p.py");
    let cpython_pyc = format!("__pycache__/p.{}.pyc", h.tag);
    py_compile(
        &h.python,
        &src,
        &root.join(dir).join(&cpython_pyc),
        &format!("/{dir}/p.py"),
    );
    let outside = t.path().join("src.py");
    std::fs::write(&outside, PLAIN).unwrap();
    py_compile(
        &h.python,
        &outside,
        &root.join(dir).join("c.pyc"),
        &format!("/{dir}/c.py"),
    );
    py_compile(
        &pypy,
        &outside,
        &root.join(dir).join("ok.pyc"),
        &format!("/{dir}/ok.py"),
    );
    let found = assert_rejected(
        &root,
        &["--allow-sourceless"],
        &[
            (
                "wrong-version",
                &cpython_pyc,
                "only pypy3.11 imports from /usr/lib/pypy3.11",
            ),
            (
                "wrong-version",
                "site-packages/c.pyc",
                &format!("is python{}'s, but only pypy3.11 imports", h.version),
            ),
        ],
    );
    assert_eq!(found.len(), 2, "{found:#?}");
}

/// bad-marshal: the header is right, the marshal data is not one object as marshal writes it.
/// Bytes after the object, which marshal.loads ignores (and `pyclink normalize` refuses), in a
/// `__pycache__` pyc and in a legacy sourceless one; an unknown type code where the code object
/// starts. Each is found once, and the other levels of the same modules stay accepted.
#[test]
fn marshal_data_that_is_not_one_object() {
    let h = host();
    if !modern_compileall(&h, "marshal_data_that_is_not_one_object") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = app_root(t.path());
    compile_app(&root, &h, &["--no-link"]);
    let dir = app(&root);
    let plain = levels(&dir, "plain", &h);
    let mut data = std::fs::read(&plain[0]).unwrap();
    data.extend_from_slice(b"\x00junk");
    std::fs::write(&plain[0], &data).unwrap();
    let docs = levels(&dir, "docs", &h);
    let mut data = std::fs::read(&docs[1]).unwrap();
    data[16] = 0x01;
    std::fs::write(&docs[1], &data).unwrap();
    // A sourceless module (compileall -b, the source removed) with bytes after its object.
    compileall(
        &h,
        &["-b", "-s", "root", "-p", "/", "root/opt/app/pkg/sub.py"],
        t.path(),
    );
    std::fs::remove_file(dir.join("pkg/sub.py")).unwrap();
    for pyc in levels(&dir.join("pkg"), "sub", &h) {
        std::fs::remove_file(pyc).unwrap();
    }
    let sub = dir.join("pkg/sub.pyc");
    let mut data = std::fs::read(&sub).unwrap();
    data.extend_from_slice(b"N");
    std::fs::write(&sub, &data).unwrap();

    // normalize refuses the first file, for the same reason.
    let out = run(pyclink()
        .args(["normalize", "--buildroot"])
        .arg(&root)
        .arg(plain[0].strip_prefix(&root).unwrap()));
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("5 bytes after the marshalled object"));

    let found = assert_rejected(
        &root,
        &["--no-link", "--allow-sourceless"],
        &[
            (
                "bad-marshal",
                &format!("plain.{}.pyc", h.tag),
                "5 bytes after the marshalled object",
            ),
            (
                "bad-marshal",
                &format!("plain.{}.pyc", h.tag),
                "marshal.loads ignores them",
            ),
            (
                "bad-marshal",
                &format!("docs.{}.opt-1.pyc", h.tag),
                "unknown marshal type code 0x01",
            ),
            (
                "bad-marshal",
                "pkg/sub.pyc",
                "1 byte after the marshalled object",
            ),
        ],
    );
    assert_eq!(found.len(), 3, "{found:#?}");
}

/// The build root of a package with a Python tree of the host's version (its site-packages
/// holding `pkg` and `b.py`), and sources that need no pycs by default: a private directory and
/// Debian's dist-packages.
fn package_root(t: &Path, h: &Host) -> (PathBuf, String) {
    let root = t.join("root");
    let site = format!("usr/lib/python{}/site-packages", h.version);
    write_files(
        &root,
        &[
            (&format!("{site}/pkg/__init__.py"), ""),
            (&format!("{site}/pkg/a.py"), ASSERTS),
            (&format!("{site}/b.py"), DOCS),
            (&format!("{site}/broken.py"), BAD),
            ("usr/share/app/priv.py", PLAIN),
            ("usr/lib/python3/dist-packages/d.py", PLAIN),
        ],
    );
    (root, site)
}

/// Fedora's hook as rpmbuild runs it at the end of %install: macros/brp-pyclink with the
/// macros' environment (`PYCLINK_LEVELS` from `%_pyclink_levels`), errors only warned about.
fn run_brp_pyclink(root: &Path, levels: &str) {
    let brp = Path::new(env!("CARGO_MANIFEST_DIR")).join("macros/brp-pyclink");
    let mut paths: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    if let Some(dir) = interpreters_dir() {
        paths.push(dir.join("bin"));
    }
    let out = run(Command::new("bash")
        .arg(brp)
        .args(["", "0", "0", ""])
        .env("RPM_BUILD_ROOT", root)
        .env("PYCLINK", env!("CARGO_BIN_EXE_pyclink"))
        .env("PYCLINK_LEVELS", levels)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("PYCLINK_CONFIG"));
    assert!(out.status.success(), "brp-pyclink failed");
}

/// Without -o, the `%check` line a packager pastes (`pyclink verify --buildroot %{buildroot}`)
/// holds every source of the root's Python trees to level 0 and the levels of the root's own
/// pycs. It fails a root the hook never ran on (it used to say "0 pyc checked, 0 problems"),
/// passes the real hook's output at Fedora's levels (0 1) and at pyclink's (0 1 2), and fails
/// once one module is short of one level. A source that does not compile, an excluded one, a
/// private directory and dist-packages need none; a virtualenv named as a PATH does.
#[test]
fn without_o_every_source_of_the_trees_has_the_roots_levels() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let (root, site) = package_root(t.path(), &h);
    let tag = &h.tag;

    // The hook never ran.
    let found = assert_rejected(
        &root,
        &[],
        &[
            (
                "missing",
                &format!("{site}/__pycache__/b.{tag}.pyc"),
                "was the root byte-compiled?",
            ),
            (
                "missing",
                &format!("pkg/__pycache__/a.{tag}.pyc"),
                "optimize=0",
            ),
            (
                "missing",
                &format!("pkg/__pycache__/__init__.{tag}.pyc"),
                "optimize=0",
            ),
        ],
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    let (_, json) = verify(&root, &[]);
    assert_eq!(json["pycs_checked"], 0);
    assert_eq!(json["required_levels"], serde_json::json!([0]));

    // The hook at Fedora's levels, then at pyclink's.
    for (levels, want) in [
        ("0 1", serde_json::json!([0, 1])),
        ("0 1 2", serde_json::json!([0, 1, 2])),
    ] {
        let t = tempfile::tempdir().unwrap();
        let (root, _) = package_root(t.path(), &h);
        run_brp_pyclink(&root, levels);
        let json = assert_accepted(&root, &[]);
        assert_eq!(json["required_levels"], want, "{levels}");
        assert_eq!(
            json["versions"][0]["do_not_compile"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    // One module short of one level (its .opt-1.pyc gone), at Fedora's levels.
    run_brp_pyclink(&root, "0 1");
    assert_accepted(&root, &[]);
    let a = root
        .join(&site)
        .join(format!("pkg/__pycache__/a.{tag}.opt-1.pyc"));
    std::fs::remove_file(&a).unwrap();
    let found = assert_rejected(
        &root,
        &[],
        &[(
            "missing",
            &format!("pkg/__pycache__/a.{tag}.opt-1.pyc"),
            "no pyc for optimize=1 (the source compiles; other pycs in the root have level 1)",
        )],
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    // Excluded, it is not required; restricted to another PATH, it is not looked at.
    assert_accepted(&root, &["-x", "a.py"]);
    assert_accepted(&root, &[&format!("{site}/b.py")]);

    // A module with no pyc at all in a tree where the others have theirs.
    write_files(&root, &[(&format!("{site}/pkg/new.py"), PLAIN)]);
    std::fs::remove_file(a.with_file_name(format!("a.{tag}.pyc"))).unwrap();
    let found = assert_rejected(
        &root,
        &["-x", "a.py"],
        &[(
            "missing",
            &format!("pkg/__pycache__/new.{tag}.opt-1.pyc"),
            "level 1",
        )],
    );
    assert_eq!(paths_of(&found, "missing").len(), 2, "{found:#?}");

    // A virtualenv outside the standard trees: required when named as a PATH (compiling it
    // takes that PATH too), and then only for the version of its lib/pythonX.Y.
    let venv = format!("opt/venv/lib/python{}/site-packages/v.py", h.version);
    write_files(&root, &[(&venv, PLAIN)]);
    let found = assert_rejected(
        &root,
        &["opt/venv"],
        &[(
            "missing",
            &format!("site-packages/__pycache__/v.{tag}.pyc"),
            "optimize=0",
        )],
    );
    assert_eq!(found.len(), 1, "{found:#?}");
}

/// Without -o, a Python tree whose version has no interpreter here stops the run (exit 2): which
/// of its sources compile, and so need pycs, cannot be told. A Python 2 tree needs none.
#[test]
fn without_o_a_tree_without_interpreter_cannot_be_checked() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    write_files(
        &root,
        &[
            ("usr/lib/python3.99/site-packages/x.py", PLAIN),
            ("usr/lib/python2.7/y.py", PLAIN),
        ],
    );
    let (out, json) = verify(&root, &[]);
    assert_eq!(out.status.code(), Some(2));
    let why = json["fatal_error"].as_str().unwrap();
    assert!(why.contains("no interpreter found for python3.99"), "{why}");
    assert!(why.contains("needed for 1 source"), "{why}");
    std::fs::remove_dir_all(root.join("usr/lib/python3.99")).unwrap();
    let json = assert_accepted(&root, &[]);
    assert_eq!(json["pycs_checked"], 0);
    assert_accepted(&root, &["usr/lib/python2.7"]);
}

// ---------------------------------------------------------------------------------------------
// The interface.

/// Exit status 2 with a reason (and the JSON saying so) when the check cannot run; problems
/// grouped by kind, 20 per kind unless -v; `--summary-json -` keeps stdout JSON.
#[test]
fn exit_status_grouping_and_json() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let json = t.path().join("fatal.json");
    let out = run(pyclink()
        .args([
            "verify",
            "--buildroot",
            "/nonexistent/root",
            "--summary-json",
        ])
        .arg(&json));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("the build root /nonexistent/root does not exist"));
    let root = app_root(t.path());
    let out = run(pyclink()
        .arg("verify")
        .arg("--buildroot")
        .arg(&root)
        .arg("usr/nothing")
        .arg("--summary-json")
        .arg(&json));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/usr/nothing does not exist in the build root"));
    let fatal: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(fatal["schema"], "pyclink-verify");
    assert_eq!(fatal["exit_code"], 2);
    assert!(fatal["fatal_error"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    let out = run(pyclink()
        .arg("verify")
        .arg("--buildroot")
        .arg(&root)
        .args(["-o", "3"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid optimization level 3"));

    compile_app(&root, &h, &[]);
    let cache = app(&root).join("__pycache__");
    for i in 0..25 {
        std::fs::write(cache.join(format!("junk{i:02}.txt")), "x").unwrap();
    }
    let (out, json) = verify(&root, &[]);
    assert_eq!(json["counts"]["stray"], 25);
    let text = stdout(&out);
    assert_eq!(text.lines().filter(|l| l.contains(": stray: ")).count(), 20);
    assert!(
        text.contains("pyclink verify: ... and 5 more stray"),
        "{text}"
    );
    let (out, _) = verify(&root, &["-v"]);
    assert_eq!(
        stdout(&out)
            .lines()
            .filter(|l| l.contains(": stray: "))
            .count(),
        25
    );
    let (out, _) = verify(&root, &["-q"]);
    assert!(!stdout(&out).contains("pyc checked"), "-q: no summary line");

    let out = run(pyclink()
        .arg("verify")
        .arg("--buildroot")
        .arg(&root)
        .args(["--summary-json", "-"]));
    assert_eq!(out.status.code(), Some(1));
    let on_stdout: Value = serde_json::from_slice(&out.stdout).expect("stdout is the JSON alone");
    assert_eq!(on_stdout["problem_count"], 25);
    assert!(stderr(&out).contains("pyclink verify: 15 pyc checked, 25 problems"));
}

#[test]
fn help_teaches_verify() {
    let out = run(pyclink().args(["verify", "--help"]));
    assert!(out.status.success());
    let text = stdout(&out);
    for needle in [
        "fresh compile",
        "co_filename",
        "hardlink",
        "Exit status: 0",
        "%check",
        "--allow-sourceless",
        "code-mismatch",
        "--summary-json",
    ] {
        assert!(text.contains(needle), "verify --help lacks {needle}");
    }
    let out = run(pyclink().arg("--help"));
    assert!(
        stdout(&out).contains("verify"),
        "the main --help lists verify"
    );
}
