//! `--cache`: a changed source, path, level set or interpreter misses; a hit gives the same
//! bytes as a compile (pyc-audit accepts them); corrupt entries are dropped; two runs can share
//! a cache; it stays under its size limit. And the cache is untrusted storage: a directory that
//! is not pyclink's is refused and untouched, symlinks are never followed inside it, odd
//! entries neither block nor are read, an entry under another key is not used, and a cache
//! other users can write is refused unless `--cache-shared`.

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

// The cache is untrusted storage (issue 21): nothing outside it is touched, only its own
// entries are evicted, and no entry is accepted under another key.

/// pyclink with `--cache`, not expecting success.
fn cached(root: &Path, cache: &Path, extra: &[&str]) -> std::process::Output {
    run(pyclink()
        .arg("--buildroot")
        .arg(root)
        .arg("--cache")
        .arg(cache)
        .args(extra))
}

/// Run `cmd`, failing the test if it takes longer than `secs` (it is then killed).
fn run_with_deadline(cmd: &mut std::process::Command, secs: u64) -> std::process::Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    let start = std::time::Instant::now();
    while !waiter.is_finished() {
        if start.elapsed() > std::time::Duration::from_secs(secs) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
            panic!("{cmd:?} still running after {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = waiter.join().unwrap();
    eprintln!("$ {cmd:?}\n  -> {}\n{}", out.status, stderr(&out));
    out
}

fn site(root: &Path, version: &str) -> PathBuf {
    root.join(format!("usr/lib/python{version}/site-packages"))
}

fn expect_site(version: &str) -> Vec<String> {
    vec![format!("{version}:usr/lib/python{version}")]
}

fn is_root(test: &str) -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        println!("SKIP {test}: needs root (chown, another user)");
    }
    root
}

fn chown(path: &Path, uid: u32, recursive: bool) {
    let mut c = std::process::Command::new("chown");
    if recursive {
        c.arg("-R");
    }
    assert!(c
        .arg(format!("{uid}:{uid}"))
        .arg(path)
        .status()
        .unwrap()
        .success());
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A home directory, `--cache ~` or a `$PYCLINK_CACHE` that names one, and `/` (what
/// `--cache "$UNSET/"` is): refused with exit 2, and not one file in them touched, even with a
/// size limit that would evict everything. So is a tree laid out like a cache, but untagged,
/// and a directory whose CACHEDIR.TAG is not pyclink's.
#[test]
fn a_directory_that_is_not_pyclinks_is_refused_and_left_alone() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = fresh_root(t.path(), "root", &h.version, FILES);
    let home = t.path().join("home");
    write_files(
        &home,
        &[
            ("docs/notes.txt", "notes\n"),
            ("photos/img001.jpg", "jpeg\n"),
            ("Downloads/big.iso", "iso\n"),
            ("ab/cdef", "looks like an entry\n"),
            (".profile", "PATH=...\n"),
        ],
    );
    let before = tree_state(&home);
    let refused = |out: &std::process::Output, why: &str| {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
        assert!(stderr(out).contains(why), "{}", stderr(out));
    };
    let not_ours = "has no CACHEDIR.TAG, so it is not pyclink's cache";
    refused(&cached(&root, &home, &["--cache-max-size", "1"]), not_ours);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .env("PYCLINK_CACHE", &home)
        .args(["--cache-max-size", "1"]));
    refused(&out, not_ours);
    let unset = std::env::var("PYCLINK_SURELY_UNSET").unwrap_or_default();
    let slash = PathBuf::from(format!("{unset}/"));
    refused(&cached(&root, &slash, &["--cache-max-size", "1"]), not_ours);

    // A CACHEDIR.TAG that is another program's, not one, or not a file (None: a symlink).
    let cases = [
        (
            "its CACHEDIR.TAG is another program's",
            Some("Signature: 8a477f597d28d172789f06886806bc55\n# made by a backup tool\n"),
        ),
        (
            "does not start with the Cache Directory Tagging signature",
            Some("# pyclink cache, format 3\n"),
        ),
        ("its CACHEDIR.TAG is a symlink", None),
    ];
    for (why, content) in cases {
        let tag = home.join("CACHEDIR.TAG");
        let _ = std::fs::remove_file(&tag);
        match content {
            Some(text) => std::fs::write(&tag, text).unwrap(),
            None => std::os::unix::fs::symlink("/dev/zero", &tag).unwrap(),
        }
        let before = tree_state(&home);
        refused(&cached(&root, &home, &["--cache-max-size", "1"]), why);
        assert_eq!(tree_state(&home), before, "{why}");
    }
    std::fs::remove_file(home.join("CACHEDIR.TAG")).unwrap();
    // The home's own mtime moved with the tags made above.
    let below =
        |v: Vec<EntryState>| -> Vec<EntryState> { v.into_iter().filter(|e| e.0 != home).collect() };
    assert_eq!(
        below(tree_state(&home)),
        below(before),
        "nothing in the home was touched"
    );
    assert!(!site(&root, &h.version).join("__pycache__").exists());
}

/// In pyclink's own cache, the trim evicts pyclink's entries only: other names (at the top,
/// in an entry's subdirectory, a directory with an entry's name) stay, and are counted.
#[test]
fn only_pyclinks_own_entries_are_evicted() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    run_cached(&fresh_root(t.path(), "a", &h.version, FILES), &cache, &[]);
    let entries = entry_files(&cache);
    assert_eq!(entries.len(), 4);
    let sub = entries[0].parent().unwrap().to_path_buf();
    let hex62 = "0".repeat(62);
    write_files(
        &cache,
        &[
            ("notes.txt", "mine\n"),
            ("photos/img001.jpg", "jpeg\n"),
            ("zz/deadbeef", "not hex\n"),
        ],
    );
    std::fs::write(sub.join("notes.txt"), "beside an entry\n").unwrap();
    std::fs::write(sub.join("0".repeat(61)), "one digit short\n").unwrap();
    std::fs::create_dir_all(sub.join(&hex62).join("inside")).unwrap();
    let foreign = |c: &Path| -> Vec<_> {
        tree_state(c)
            .into_iter()
            .filter(|e| !entries.contains(&e.0) && e.0 != sub)
            .collect()
    };
    let before = foreign(&cache);
    let s = run_cached(
        &fresh_root(t.path(), "b", &h.version, &[("other.py", "z = 3\n")]),
        &cache,
        &["--cache-max-size", "1"],
    );
    assert_eq!(s["cache"]["evicted"], 5, "{}", s["cache"]);
    // notes.txt, photos, zz at the top; notes.txt, the short name, the directory in `sub`.
    assert_eq!(s["cache"]["foreign"], 6, "{}", s["cache"]);
    assert!(entries.iter().all(|e| !e.exists()), "every entry evicted");
    let after: Vec<_> = foreign(&cache)
        .into_iter()
        .filter(|e| e.0.file_name().unwrap() != "CACHEDIR.TAG")
        .collect();
    let before: Vec<_> = before
        .into_iter()
        .filter(|e| e.0.file_name().unwrap() != "CACHEDIR.TAG")
        .collect();
    // Directories' mtimes change as entries come and go in them; files must not.
    let files = |v: Vec<EntryState>| -> Vec<EntryState> {
        v.into_iter().filter(|e| e.0.is_file()).collect()
    };
    assert_eq!(files(after), files(before));
    assert!(sub.join(&hex62).join("inside").is_dir());
}

/// An entry subdirectory replaced by a symlink (to a directory holding `passwd` and
/// `shadow`): nothing there is read, deleted or created, by lookups, stores or the trim; the
/// build is still right.
#[test]
fn symlinked_subdirectories_are_not_followed() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    run_cached(&fresh_root(t.path(), "a", &h.version, FILES), &cache, &[]);
    let outside = t.path().join("etc");
    write_files(
        &outside,
        &[("passwd", "root:x:0:0\n"), ("shadow", "root:!:1\n")],
    );
    // Every subdirectory name: those holding entries now, and those new entries would use.
    for i in 0..=255u8 {
        let sub = cache.join(format!("{i:02x}"));
        if sub.is_dir() {
            std::fs::rename(&sub, cache.join(format!("{i:02x}.moved"))).unwrap();
        }
        std::os::unix::fs::symlink(&outside, &sub).unwrap();
    }
    let before = tree_state(&outside);
    let root = fresh_root(t.path(), "b", &h.version, FILES);
    let out = cached(&root, &cache, &["--cache-max-size", "1", "-v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a symlink, not a directory: nothing is read or stored"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        tree_state(&outside),
        before,
        "the symlinks' target was touched"
    );
    assert_audit_ok(&root, &expect_site(&h.version), &[]);
}

/// An entry that is a symlink (to a valid entry elsewhere, or to /dev/zero) is not read nor
/// touched; one hardlinked to a file elsewhere is read within its bound, found not to be an
/// entry, and only its name in the cache goes; the file elsewhere is intact. A cache cloned
/// with hardlinks (`cp -al`) serves hits without changing the original's mtimes.
#[test]
fn symlinked_and_hardlinked_entries() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    run_cached(&fresh_root(t.path(), "a", &h.version, FILES), &cache, &[]);
    let entries = entry_files(&cache);
    let elsewhere = t.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let copy = elsewhere.join("valid-entry");
    std::fs::rename(&entries[0], &copy).unwrap();
    std::os::unix::fs::symlink(&copy, &entries[0]).unwrap();
    std::fs::remove_file(&entries[1]).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &entries[1]).unwrap();
    let secret = elsewhere.join("shadow");
    std::fs::write(&secret, "root:$6$secret:19000::::::\n").unwrap();
    std::fs::remove_file(&entries[2]).unwrap();
    std::fs::hard_link(&secret, &entries[2]).unwrap();
    let before = tree_state(&elsewhere);

    let root = fresh_root(t.path(), "b", &h.version, FILES);
    let json = t.path().join("b.json");
    let out = run_with_deadline(
        pyclink()
            .arg("--buildroot")
            .arg(&root)
            .arg("--cache")
            .arg(&cache)
            .arg("--summary-json")
            .arg(&json),
        120,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(hits_misses(&s), (1, 3), "{}", s["cache"]);
    assert_eq!(s["cache"]["rejected"], 1, "the hardlinked file");
    let err = stderr(&out);
    assert_eq!(
        err.matches("is a symlink, not an entry pyclink wrote")
            .count(),
        2,
        "{err}"
    );
    let file = |p: &Path| std::fs::symlink_metadata(p).unwrap().file_type().is_file();
    assert!(entries.iter().all(|e| file(e)), "stored anew, as files");
    // The name went, the file it named elsewhere is as it was (its link count back to 1).
    let mut after = tree_state(&elsewhere);
    let mut before = before;
    for v in [&mut after, &mut before] {
        v.retain(|e| e.0 != elsewhere);
    }
    assert_eq!(after, before);
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "root:$6$secret:19000::::::\n"
    );
    assert_audit_ok(&root, &expect_site(&h.version), &[]);

    // A clone made of hardlinks: hits, and the original entries' mtimes stay.
    let clone = t.path().join("clone");
    assert!(std::process::Command::new("cp")
        .arg("-al")
        .arg(&cache)
        .arg(&clone)
        .status()
        .unwrap()
        .success());
    let mtimes: Vec<i128> = entries.iter().map(|e| mtime_ns(e)).collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let c = fresh_root(t.path(), "c", &h.version, FILES);
    assert_eq!(hits_misses(&run_cached(&c, &clone, &[])), (4, 0));
    assert_eq!(
        entries.iter().map(|e| mtime_ns(e)).collect::<Vec<_>>(),
        mtimes
    );
}

/// A FIFO, a socket, a directory and a huge sparse file under entries' names: the run neither
/// blocks nor reads them, says what each is, and says the truth about the directory (it stays,
/// run after run). The FIFO and socket are replaced by entries; the sparse file, a regular file
/// too large to be an entry, is rejected without being read.
#[test]
fn odd_entries_neither_block_nor_lie() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    run_cached(&fresh_root(t.path(), "a", &h.version, FILES), &cache, &[]);
    let entries = entry_files(&cache);
    for e in &entries {
        std::fs::remove_file(e).unwrap();
    }
    assert!(std::process::Command::new("mkfifo")
        .arg(&entries[0])
        .status()
        .unwrap()
        .success());
    let _socket = std::os::unix::net::UnixListener::bind(&entries[1]).unwrap();
    std::fs::create_dir_all(entries[2].join("inside")).unwrap();
    std::fs::File::create(&entries[3])
        .unwrap()
        .set_len(4 << 30)
        .unwrap();

    for round in 0..2 {
        let root = fresh_root(t.path(), &format!("r{round}"), &h.version, FILES);
        let json = t.path().join(format!("r{round}.json"));
        let out = run_with_deadline(
            pyclink()
                .arg("--buildroot")
                .arg(&root)
                .arg("--cache")
                .arg(&cache)
                .arg("--summary-json")
                .arg(&json)
                .args(["--timeout", "20"]),
            60,
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        let err = stderr(&out);
        let dir_line = "is a directory, not an entry pyclink wrote: not read; not removed \
                        (pyclink removes no directory), so this key is not cached";
        assert!(err.contains(dir_line), "{err}");
        if round == 0 {
            assert_eq!(hits_misses(&s), (0, 4), "{}", s["cache"]);
            assert_eq!(s["cache"]["rejected"], 1, "the sparse file");
            for what in ["is a FIFO", "is a socket"] {
                assert!(
                    err.contains(&format!("{what}, not an entry pyclink wrote: not read")),
                    "{err}"
                );
            }
            assert!(
                err.contains("is larger than any entry; ignored and removed"),
                "{err}"
            );
        } else {
            assert!(
                !err.contains("removed;") && !err.contains("and removed"),
                "{err}"
            );
            assert_eq!(hits_misses(&s), (3, 1), "{}", s["cache"]);
            assert_eq!(s["cache"]["rejected"], 0);
        }
        assert!(entries[2].join("inside").is_dir(), "the directory stays");
        assert_audit_ok(&root, &expect_site(&h.version), &[]);
    }
    for e in [&entries[0], &entries[1], &entries[3]] {
        assert!(std::fs::symlink_metadata(e).unwrap().is_file());
    }
}

/// Issue 21, case 3: build A's entry copied under build B's key is not used: B compiles its own
/// source (the same pycs as without a cache), and the entry is dropped and replaced.
#[test]
fn an_entry_under_another_key_is_not_used() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let a = fresh_root(t.path(), "a", &h.version, &[("m.py", "WHO = 'build A'\n")]);
    let b = fresh_root(t.path(), "b", &h.version, &[("m.py", "WHO = 'build B'\n")]);
    // B's entry name, and B's pycs, from a cache of its own.
    let scratch = t.path().join("scratch");
    run_cached(&b, &scratch, &[]);
    let b_entry = entry_files(&scratch)[0]
        .strip_prefix(&scratch)
        .unwrap()
        .to_path_buf();
    let b_pycs = pyc_contents(&b);
    std::fs::remove_dir_all(site(&b, &h.version).join("__pycache__")).unwrap();

    let cache = t.path().join("cache");
    run_cached(&a, &cache, &[]);
    let a_entry = entry_files(&cache)[0].clone();
    std::fs::create_dir_all(cache.join(&b_entry).parent().unwrap()).unwrap();
    std::fs::copy(&a_entry, cache.join(&b_entry)).unwrap();

    let s = run_cached(&b, &cache, &[]);
    assert_eq!(hits_misses(&s), (0, 1), "{}", s["cache"]);
    assert_eq!(s["cache"]["rejected"], 1);
    assert_eq!(s["cache"]["stored"], 1);
    assert_eq!(pyc_contents(&b), b_pycs, "B shipped A's code");
    assert_eq!(
        std::fs::read(cache.join(&b_entry)).unwrap(),
        std::fs::read(scratch.join(&b_entry)).unwrap(),
        "replaced by B's own entry"
    );
}

/// While a run reads the cache, other processes keep renaming entries over each other's names
/// and swapping entry subdirectories for symlinks to a directory outside. The run's pycs are
/// still right, the swapped entries are caught by their keys, and nothing outside changes.
#[test]
fn entries_swapped_during_a_run_are_caught() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    let first = t.path().join("first");
    make_buildroot(&first, &[&h.version], Corpus::Small);
    run_cached(&first, &cache, &[]);
    let entries = entry_files(&cache);
    assert!(entries.len() > 200);
    let outside = t.path().join("outside");
    write_files(&outside, &[("passwd", "root:x:0:0\n")]);
    let outside_before = tree_state(&outside);

    let swap_pass = |entries: &[PathBuf], pass: usize| {
        for (i, e) in entries.iter().enumerate() {
            let from = &entries[(i + 1 + pass) % entries.len()];
            let temp = e.with_file_name(".swap");
            if std::fs::copy(from, &temp).is_ok() {
                let _ = std::fs::rename(&temp, e);
            }
        }
    };
    swap_pass(&entries, 0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let second = t.path().join("second");
    make_buildroot(&second, &[&h.version], Corpus::Small);
    let json = t.path().join("second.json");
    let (out, passes) = std::thread::scope(|s| {
        let swapper = s.spawn(|| {
            let mut passes = 0;
            let subs: Vec<PathBuf> = entries
                .iter()
                .map(|e| e.parent().unwrap().to_path_buf())
                .collect();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                passes += 1;
                swap_pass(&entries, passes);
                // A subdirectory is a symlink to `outside` for a moment.
                let sub = &subs[passes % subs.len()];
                let moved = sub.with_extension("moved");
                if std::fs::rename(sub, &moved).is_ok() {
                    let _ = std::os::unix::fs::symlink(&outside, sub);
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    let _ = std::fs::remove_file(sub);
                    let _ = std::fs::rename(&moved, sub);
                }
            }
            passes
        });
        let out = run(pyclink()
            .arg("--buildroot")
            .arg(&second)
            .arg("--cache")
            .arg(&cache)
            .arg("--summary-json")
            .arg(&json));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, swapper.join().unwrap())
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(passes > 0, "the entries were swapped during the run");
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        s["cache"]["rejected"].as_u64().unwrap() > 0,
        "{}",
        s["cache"]
    );
    assert!(stderr(&out).contains("holds the result for another key"));
    assert_eq!(tree_state(&outside), outside_before);
    assert_audit_ok(
        &second,
        &[format!("{}:usr/lib64/python{}", h.version, h.version)],
        &[],
    );
}

/// A cache that others can write is refused (every user: 1777; another owner), unless
/// `--cache-shared` (or `cache-shared = true`) says so, and then with a warning. This user's
/// own directory that its group may write is this user's choice.
#[test]
fn a_cache_others_can_write_is_refused_unless_shared() {
    if !is_root("a_cache_others_can_write_is_refused_unless_shared") {
        return;
    }
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = fresh_root(t.path(), "root", &h.version, FILES);
    let world = t.path().join("world");
    std::fs::create_dir(&world).unwrap();
    chmod(&world, 0o1777);
    let theirs = t.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    chown(&theirs, NOBODY, false);
    for (dir, who) in [
        (&world, "writable by every user (mode 1777)"),
        (&theirs, "writable by its owner, uid 65534 (mode 0755)"),
    ] {
        let out = cached(&root, dir, &["--force"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(who), "{}", stderr(&out));
        assert!(stderr(&out).contains("--cache-shared to accept it"));
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            0,
            "nothing written"
        );
        let out = cached(&root, dir, &["--force", "--cache-shared"]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains(&format!(
            "{who}; it is used as --cache-shared says, and whoever writes it decides what this build ships"
        )));
        assert!(dir.join("CACHEDIR.TAG").is_file());
    }
    let config = t.path().join("pyclink.toml");
    std::fs::write(&config, "cache-shared = true\n").unwrap();
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--cache")
        .arg(&world)
        .arg("--config")
        .arg(&config)
        .args(["--force", "--summary-json", "-"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let s: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(hits_misses(&s), (4, 0));

    let mine = t.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    chmod(&mine, 0o2775);
    let out = cached(&root, &mine, &["--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("writable by"), "{}", stderr(&out));
}

/// Two users. A cache that root filled is used by another user read-only (it cannot write it:
/// a warning, or none with --cache-read-only), with hits and without a change to it. That user
/// is refused a cache every user can write, or that root's group could write; and root is
/// refused the cache that user made, unless --cache-shared.
#[test]
fn two_users() {
    if !is_root("two_users") {
        return;
    }
    let h = host();
    let Some(python) = python_for(NOBODY, &h) else {
        println!(
            "SKIP two_users: no python{} that uid {NOBODY} can run (setpriv missing?)",
            h.version
        );
        return;
    };
    let t = tempfile::tempdir().unwrap();
    chmod(t.path(), 0o755);
    let interp = format!("{}={}", h.version, python.display());
    let cache = t.path().join("root-cache");
    let filled = fresh_root(t.path(), "filled", &h.version, FILES);
    run_cached(&filled, &cache, &["--interpreter", &interp]);
    let before = tree_state(&cache);

    let as_nobody = |root: &Path, cache: &Path, extra: &[&str]| {
        chown(root, NOBODY, true);
        run(as_uid(NOBODY, env!("CARGO_BIN_EXE_pyclink"))
            .env_remove("PYCLINK_CONFIG")
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("--buildroot")
            .arg(root)
            .arg("--cache")
            .arg(cache)
            .args(["--interpreter", &interp, "--summary-json", "-"])
            .args(extra))
    };
    for (i, extra) in [&[][..], &["--cache-read-only"][..]].iter().enumerate() {
        let root = fresh_root(t.path(), &format!("nobody{i}"), &h.version, FILES);
        let out = as_nobody(&root, &cache, extra);
        assert!(out.status.success(), "{}", stderr(&out));
        let s: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!(hits_misses(&s), (4, 0), "{}", s["cache"]);
        assert_eq!(s["cache"]["read_only"], true);
        assert_eq!(
            stderr(&out).contains("this user cannot write it; it is used read-only"),
            extra.is_empty(),
            "{}",
            stderr(&out)
        );
        assert_eq!(tree_state(&cache), before, "the cache changed");
    }

    let world = t.path().join("world");
    std::fs::create_dir(&world).unwrap();
    chmod(&world, 0o1777);
    let group = t.path().join("group");
    std::fs::create_dir(&group).unwrap();
    assert!(std::process::Command::new("chgrp")
        .arg(NOBODY.to_string())
        .arg(&group)
        .status()
        .unwrap()
        .success());
    chmod(&group, 0o775);
    for (dir, who) in [
        (&world, "writable by every user (mode 1777)"),
        (
            &group,
            &format!("writable by its group, gid {NOBODY} (mode 0775)")[..],
        ),
    ] {
        let root = fresh_root(t.path(), "refused", &h.version, FILES);
        let out = as_nobody(&root, dir, &[]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(who), "{}", stderr(&out));
        let _ = std::fs::remove_dir_all(&root);
    }

    // The other user's own cache (in a directory it may write): root refuses it.
    let home = t.path().join("home");
    std::fs::create_dir(&home).unwrap();
    chown(&home, NOBODY, false);
    let theirs = home.join("cache");
    let root = fresh_root(t.path(), "theirs", &h.version, FILES);
    assert!(as_nobody(&root, &theirs, &[]).status.success());
    assert!(theirs.join("CACHEDIR.TAG").is_file());
    let mine = fresh_root(t.path(), "mine", &h.version, FILES);
    let out = cached(&mine, &theirs, &["--interpreter", &interp]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("writable by its owner, uid 65534"));
    let s = run_cached(
        &mine,
        &theirs,
        &["--interpreter", &interp, "--cache-shared"],
    );
    assert_eq!(hits_misses(&s), (4, 0));
}

/// `--cache-read-only` changes nothing in the cache: no store, no eviction, no removal of a bad
/// entry or a stale temp file, no mtime refreshed; an empty directory is not tagged, and a
/// missing one is an error.
#[test]
fn a_read_only_cache_changes_nothing() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    run_cached(&fresh_root(t.path(), "a", &h.version, FILES), &cache, &[]);
    let entries = entry_files(&cache);
    std::fs::write(&entries[0], b"not an entry").unwrap();
    std::fs::write(entries[1].with_file_name(".pyclink-1-1.tmp"), b"stale").unwrap();
    let before = tree_state(&cache);
    let root = fresh_root(
        t.path(),
        "b",
        &h.version,
        &[FILES, &[("new.py", "n = 1\n")]].concat(),
    );
    let s = run_cached(
        &root,
        &cache,
        &["--cache-read-only", "--cache-max-size", "1"],
    );
    assert_eq!(hits_misses(&s), (3, 2), "{}", s["cache"]);
    let c = &s["cache"];
    assert_eq!(
        (&c["stored"], &c["evicted"], &c["rejected"], &c["read_only"]),
        (&0.into(), &0.into(), &1.into(), &true.into()),
        "{c}"
    );
    assert_eq!(tree_state(&cache), before);
    assert_audit_ok(&root, &expect_site(&h.version), &[]);

    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let s = run_cached(
        &fresh_root(t.path(), "c", &h.version, FILES),
        &empty,
        &["--cache-read-only"],
    );
    assert_eq!(hits_misses(&s), (0, 4));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    let out = cached(
        &fresh_root(t.path(), "d", &h.version, FILES),
        &t.path().join("missing"),
        &["--cache-read-only"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("it does not exist, and --cache-read-only creates nothing"));
}

/// A cache of another pyclink format is left alone, and the run goes on without it.
#[test]
fn another_format_is_left_alone() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    write_files(
        &cache,
        &[
            (
                "CACHEDIR.TAG",
                "Signature: 8a477f597d28d172789f06886806bc55\n# pyclink cache, format 99\n",
            ),
            ("ab/cdef", "a format 99 entry\n"),
        ],
    );
    let before = tree_state(&cache);
    let root = fresh_root(t.path(), "r", &h.version, FILES);
    let out = run(pyclink()
        .arg("--buildroot")
        .arg(&root)
        .arg("--cache")
        .arg(&cache)
        .args(["--cache-max-size", "1", "--summary-json", "-"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains(
        "it holds pyclink cache format 99, this pyclink reads and writes format 3; the cache is not used in this run"
    ));
    let s: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(s["cache"].is_null());
    assert_eq!(tree_state(&cache), before);
    assert_audit_ok(&root, &expect_site(&h.version), &[]);
}

/// A cache path that cannot be a cache is named for what it is, escaped like every path.
#[test]
fn messages_say_what_the_cache_path_is() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let root = fresh_root(t.path(), "r", &h.version, FILES);
    let file = t.path().join("file");
    std::fs::write(&file, "").unwrap();
    let fifo = t.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let dangling = t.path().join("dangling");
    std::os::unix::fs::symlink(t.path().join("nowhere"), &dangling).unwrap();
    let newline = t.path().join("new\nline");
    std::fs::write(&newline, "").unwrap();
    let shown = |p: &Path| p.display().to_string().replace('\n', "\\n");
    for (path, why) in [
        (&file, "it is a regular file, not a directory"),
        (&fifo, "it is a FIFO, not a directory"),
        (&dangling, "it is a dangling symlink, not a directory"),
        (&newline, "it is a regular file, not a directory"),
        (
            &file.join("sub"),
            "a component of its path is not a directory",
        ),
    ] {
        let out = run_with_deadline(
            pyclink()
                .arg("--buildroot")
                .arg(&root)
                .arg("--cache")
                .arg(path),
            30,
        );
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(
            stderr(&out),
            format!(
                "pyclink: error: cannot use the cache directory {}: {why}\n",
                shown(path)
            )
        );
    }
}

/// A symlink naming the cache is followed, as the build root's own name is; what counts is the
/// directory it reaches: a pyclink cache serves hits, any other directory is refused.
#[test]
fn a_symlinked_cache_root_is_judged_by_its_target() {
    let h = host();
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("cache");
    run_cached(&fresh_root(t.path(), "a", &h.version, FILES), &cache, &[]);
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&cache, &link).unwrap();
    let s = run_cached(&fresh_root(t.path(), "b", &h.version, FILES), &link, &[]);
    assert_eq!(hits_misses(&s), (4, 0));
    let home = t.path().join("home");
    write_files(&home, &[("notes.txt", "mine\n")]);
    let before = tree_state(&home);
    let to_home = t.path().join("to-home");
    std::os::unix::fs::symlink(&home, &to_home).unwrap();
    let out = cached(
        &fresh_root(t.path(), "c", &h.version, FILES),
        &to_home,
        &["--cache-max-size", "1"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not pyclink's cache"));
    assert_eq!(tree_state(&home), before);
}
