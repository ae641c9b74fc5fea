//! `--cache`: a changed source, path, level set or interpreter misses; a hit gives the same
//! bytes as a compile (pyc-audit accepts them); corrupt entries are dropped; two runs can share
//! a cache; it stays under its size limit.

mod common;
use common::*;

use std::path::{Path, PathBuf};

fn run_cached(root: &Path, cache: &Path, extra: &[&str]) -> serde_json::Value {
    let json = root
        .parent()
        .unwrap()
        .join(format!("summary-{}.json", std::process::id()));
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(root)
        .arg("--cache")
        .arg(cache)
        .arg("--summary-json")
        .arg(&json)
        .args(extra));
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn hits_misses(summary: &serde_json::Value) -> (u64, u64) {
    (
        summary["cache"]["hits"].as_u64().unwrap(),
        summary["cache"]["misses"].as_u64().unwrap(),
    )
}

/// The entries of a cache (`XX/YYYY...`), in name order.
fn entry_files(cache: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(cache)
        .min_depth(2)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().to_path_buf())
        .collect()
}

fn fresh_root(t: &Path, name: &str, version: &str, files: &[(&str, &str)]) -> PathBuf {
    let root = t.join(name);
    let site = root.join(format!("usr/lib/python{version}/site-packages"));
    write_files(&site, files);
    root
}

const FILES: &[(&str, &str)] = &[
    ("a.py", "\"\"\"Doc.\"\"\"\nassert True\nx = 1\n"),
    ("b.py", "y = 2\n"),
    ("pkg/__init__.py", ""),
    (
        "pkg/c.py",
        "def f():\n    \"\"\"Doc.\"\"\"\n    return {'a', 'b'}\n",
    ),
];

/// A hit writes what a compile writes, byte for byte, and pyc-audit accepts it.
#[test]
fn a_hit_gives_the_same_pycs() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let plain = fresh_root(t.path(), "plain", &h.version, FILES);
    assert!(run(pyclink().arg("--buildroot").arg(&plain))
        .status
        .success());
    let first = fresh_root(t.path(), "first", &h.version, FILES);
    let second = fresh_root(t.path(), "second", &h.version, FILES);
    // Same mtimes everywhere, so the headers agree too.
    for root in [&plain, &first, &second] {
        for e in walkdir::WalkDir::new(root)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
        {
            let f = std::fs::File::options().write(true).open(e.path()).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
                .unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(plain.join(format!(
        "usr/lib/python{}/site-packages/__pycache__",
        h.version
    )));
    let _ = std::fs::remove_dir_all(plain.join(format!(
        "usr/lib/python{}/site-packages/pkg/__pycache__",
        h.version
    )));
    assert!(run(pyclink().arg("--buildroot").arg(&plain))
        .status
        .success());
    assert_eq!(hits_misses(&run_cached(&first, &cache, &[])), (0, 4));
    assert_eq!(hits_misses(&run_cached(&second, &cache, &[])), (4, 0));
    assert_eq!(
        pyc_contents(&second),
        pyc_contents(&plain),
        "cached pycs differ from compiled ones"
    );
    assert_eq!(pyc_contents(&first), pyc_contents(&plain));
    assert_audit_ok(
        &second,
        &[format!("{}:usr/lib/python{}", h.version, h.version)],
        &[],
    );
}

/// Everything that decides the bytes is in the key.
#[test]
fn what_changes_the_bytes_misses() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let base = fresh_root(t.path(), "base", &h.version, FILES);
    assert_eq!(hits_misses(&run_cached(&base, &cache, &[])), (0, 4));

    // One source changed: that one misses.
    let changed = fresh_root(t.path(), "changed", &h.version, FILES);
    write_files(
        &changed.join(format!("usr/lib/python{}/site-packages", h.version)),
        &[("b.py", "y = 3\n")],
    );
    assert_eq!(hits_misses(&run_cached(&changed, &cache, &[])), (3, 1));

    // Same bytes under another path (co_filename differs): misses.
    let moved = fresh_root(
        t.path(),
        "moved",
        &h.version,
        &[("elsewhere/b.py", "y = 2\n")],
    );
    assert_eq!(hits_misses(&run_cached(&moved, &cache, &[])), (0, 1));

    // Other levels: misses; the same levels again: hits.
    let levels = fresh_root(t.path(), "levels", &h.version, FILES);
    assert_eq!(
        hits_misses(&run_cached(&levels, &cache, &["-o", "0,1"])),
        (0, 4)
    );
    let levels2 = fresh_root(t.path(), "levels2", &h.version, FILES);
    assert_eq!(
        hits_misses(&run_cached(&levels2, &cache, &["-o", "0,1"])),
        (4, 0)
    );

    // Another interpreter version: misses.
    let Some(other) = ["3.12", "3.10", "3.13", "3.9"]
        .into_iter()
        .find(|v| *v != h.version && find_python(v).is_some())
    else {
        println!(
            "SKIP what_changes_the_bytes_misses (other interpreter): no second Python 3.9-3.13"
        );
        return;
    };
    let other_root = fresh_root(t.path(), "other", other, FILES);
    assert_eq!(hits_misses(&run_cached(&other_root, &cache, &[])), (0, 4));
    assert_audit_ok(
        &other_root,
        &[format!("{other}:usr/lib/python{other}")],
        &[],
    );
}

/// A corrupt or truncated entry is detected, ignored (the source is compiled) and removed.
#[test]
fn corrupt_entries_are_ignored() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let first = fresh_root(t.path(), "first", &h.version, FILES);
    run_cached(&first, &cache, &[]);
    let entries = entry_files(&cache);
    assert_eq!(entries.len(), 4);
    let mut bytes = std::fs::read(&entries[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&entries[0], bytes).unwrap();
    let bytes = std::fs::read(&entries[1]).unwrap();
    std::fs::write(&entries[1], &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(&entries[2], b"not an entry").unwrap();

    let second = fresh_root(t.path(), "second", &h.version, FILES);
    let s = run_cached(&second, &cache, &[]);
    assert_eq!(hits_misses(&s), (1, 3));
    assert_eq!(s["cache"]["rejected"].as_u64(), Some(3));
    assert_eq!(
        s["cache"]["stored"].as_u64(),
        Some(3),
        "recompiled and stored again"
    );
    assert_audit_ok(
        &second,
        &[format!("{}:usr/lib/python{}", h.version, h.version)],
        &[],
    );
    let third = fresh_root(t.path(), "third", &h.version, FILES);
    assert_eq!(hits_misses(&run_cached(&third, &cache, &[])), (4, 0));
}

/// Two runs filling the same cache at once: both succeed, both audit OK, and the cache then
/// serves a third run completely.
#[test]
fn two_runs_share_a_cache() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let a = t.path().join("a");
    let b = t.path().join("b");
    make_buildroot(&a, &[&h.version], Corpus::Small);
    assert!(std::process::Command::new("cp")
        .arg("-a")
        .arg(&a)
        .arg(&b)
        .status()
        .unwrap()
        .success());
    let start = |root: &Path| {
        pyclink()
            .arg("--buildroot")
            .arg(root)
            .arg("--cache")
            .arg(&cache)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (start(&a), start(&b));
    for c in [ca, cb] {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(!stderr(&out).contains("corrupt"), "{}", stderr(&out));
    }
    let expect = vec![format!("{}:usr/lib64/python{}", h.version, h.version)];
    assert_audit_ok(&a, &expect, &[]);
    assert_audit_ok(&b, &expect, &[]);
    let c = t.path().join("c");
    make_buildroot(&c, &[&h.version], Corpus::Small);
    let s = run_cached(&c, &cache, &[]);
    let (hits, misses) = hits_misses(&s);
    assert_eq!(misses, 0, "every source was stored by one of the two runs");
    assert!(hits > 200);
    assert_audit_ok(&c, &expect, &[]);
}

/// After a run the cache is trimmed to its limit, least recently used first.
#[test]
fn the_cache_stays_under_its_limit() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let root = t.path().join("root");
    make_buildroot(&root, &[&h.version], Corpus::Small);
    let s = run_cached(&root, &cache, &["--cache-max-size", "2M"]);
    let kept = s["cache"]["bytes_after"].as_u64().unwrap();
    assert!(kept <= 2 << 20, "{kept} bytes kept");
    assert!(s["cache"]["evicted"].as_u64().unwrap() > 0);
    let on_disk: u64 = entry_files(&cache)
        .iter()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, kept);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .args(["--cache", "/dev/null/x"]));
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unusable cache directory is a clear error"
    );
    assert!(stderr(&out).contains("cannot use the cache directory /dev/null/x"));
}

/// Report item 17: levels from the cache are not counted as compiled, in the JSON and in
/// `-v`'s line.
#[test]
fn hits_are_not_counted_as_compiled() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let root = fresh_root(t.path(), "root", &h.version, FILES);
    let first = run_cached(&root, &cache, &[]);
    assert!(first["versions"][0]["levels_compiled"].as_u64().unwrap() > 0);
    let again = run_cached(&root, &cache, &["--force"]);
    assert_eq!(again["versions"][0]["levels_compiled"], 0, "{again}");
    assert_eq!(again["versions"][0]["levels_from_cache"], 12, "{again}");
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--cache")
        .arg(&cache)
        .args(["--force", "-v"]));
    assert!(
        stderr(&out).contains(&format!(
            "python{}: compiled no level, 12 from the cache",
            h.version
        )),
        "{}",
        stderr(&out)
    );
}
