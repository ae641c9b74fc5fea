//! The Debian integration, for real. pyclink's own .deb is built from `packaging/debian` with
//! dpkg-buildpackage, linted and installed with `dpkg -i`; then the sample source package
//! `tests/deb/sample` (`dh $@ --with pyclink`, with dh_python3) is built against the installed
//! addon exactly as a packager would, and its .debs are read back with dpkg-deb, audited with
//! pyc-audit, linted, installed, checked with `dpkg --verify` and imported. Tests that touch the
//! dpkg database hold a host-wide lock and purge what they installed. The tests at the end
//! drive dh_pyclink, dh_python3 and dh from the repository (PERL5LIB) for the option handling,
//! the invalidation mode per directory and the sequence order, without installing anything.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SAMPLE: &str = "pyclinksample";
const SAMPLE_TS: &str = "pyclinksample-ts";
const SAMPLE_SHARE: &str = "pyclinksample-share";
/// Where the sample packages install their application (debian/*.install).
const SAMPLE_DIR: &str = "opt/pyclinksample";
const SAMPLE_TS_DIR: &str = "opt/pyclinksample-ts";
/// A private directory of the kind dh_python3 has py3compile compile in the postinst.
const SAMPLE_SHARE_DIR: &str = "usr/share/pyclinksample-share";

/// The binary packages of the sample: name, application directory, and whether its pycs are
/// timestamp pycs (`--invalidation-mode=timestamp` for -ts; dh_pyclink's choice where
/// py3compile runs for -share) rather than checked-hash ones.
const SAMPLES: &[(&str, &str, bool)] = &[
    (SAMPLE, SAMPLE_DIR, false),
    (SAMPLE_TS, SAMPLE_TS_DIR, true),
    (SAMPLE_SHARE, SAMPLE_SHARE_DIR, true),
];
const SAMPLE_PACKAGES: [&str; 3] = [SAMPLE, SAMPLE_TS, SAMPLE_SHARE];

/// Which levels of each module of the sample compile to the same code, by construction (the
/// comment or docstring at the top of each file says why): the groups that must share an inode.
const LEVEL_GROUPS: &[(&str, &[&[u8]])] = &[
    ("__init__", &[&[0, 1], &[2]]),
    ("both", &[&[0], &[1], &[2]]),
    ("checks", &[&[0], &[1, 2]]),
    ("cli", &[&[0, 1, 2]]),
    ("docs", &[&[0, 1], &[2]]),
    ("plain", &[&[0, 1, 2]]),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn sample_src() -> PathBuf {
    repo().join("tests/deb/sample")
}

fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    let out = run(Command::new("cp").arg("-a").arg(from).arg(to));
    assert!(out.status.success(), "cp -a failed");
}

/// A command whose environment does not leak the caller's build settings.
fn clean_env(c: &mut Command) -> &mut Command {
    for v in [
        "SOURCE_DATE_EPOCH",
        "RPM_BUILD_ROOT",
        "PYCLINK_CONFIG",
        "DEB_BUILD_OPTIONS",
        "DH_VERBOSE",
        "DH_QUIET",
        "DH_OPTIONS",
        "DH_INTERNAL_OPTIONS",
        "PERL5LIB",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONPYCACHEPREFIX",
        "PYTHONOPTIMIZE",
        "PYTHONPATH",
    ] {
        c.env_remove(v);
    }
    c
}

/// Run `cmd` with stdout and stderr interleaved into `log` (a build log keeps the order in
/// which dh runs its commands). Returns success and the log text.
fn run_logged(cmd: &mut Command, log: &Path) -> (bool, String) {
    let f = File::create(log).unwrap();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = std::fs::read_to_string(log).unwrap();
    eprintln!("$ {cmd:?}\n  -> {status} (log {})", log.display());
    (status.success(), text)
}

fn tail(text: &str, lines: usize) -> String {
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn tool_exists(name: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn changelog_field(changelog: &Path, field: &str) -> String {
    let out = run(Command::new("dpkg-parsechangelog")
        .arg("-l")
        .arg(changelog)
        .arg(format!("-S{field}")));
    assert!(out.status.success());
    stdout(&out).trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// The dpkg database: one test at a time on this host, and everything installed is purged.

/// The host-wide lock. A fixed path, not `$TMPDIR`: every checkout's test run on this host,
/// whatever its environment, must meet on the same file.
const DPKG_LOCK: &str = "/tmp/pyclink-deb-tests.lock";

/// Left on the host while these tests have `pyclink` installed: a `pyclink` installed without
/// it is somebody's real installation, which the tests must not replace and purge.
const PYCLINK_MARK: &str = "/var/tmp/pyclink-deb-tests.pyclink-installed";

/// The only way these tests run `dpkg -i`, `--purge` and `--verify`: holding the lock from
/// the first install to the last purge (nextest runs the tests in parallel processes).
struct Dpkg {
    installed: Vec<String>,
    _lock: File,
}

impl Dpkg {
    /// Wait for the host-wide lock, then remove sample packages a killed run may have left.
    fn begin(test: &str) -> Dpkg {
        use std::io::{Read, Seek, Write};
        use std::os::unix::fs::OpenOptionsExt;
        // O_NOFOLLOW and no truncation: the file is in a world-writable directory.
        let mut lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(DPKG_LOCK)
            .unwrap_or_else(|e| panic!("{DPKG_LOCK}: {e}"));
        use rustix::fs::{flock, FlockOperation};
        if flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let waiting = std::time::Instant::now();
            eprintln!(
                "{test}: waiting for {DPKG_LOCK}: another test run installs packages with dpkg (last holder: {})",
                holder.trim()
            );
            flock(&lock, FlockOperation::LockExclusive).unwrap();
            eprintln!("{test}: got {DPKG_LOCK} after {:.0?}", waiting.elapsed());
        }
        lock.set_len(0).unwrap();
        lock.rewind().unwrap();
        let _ = writeln!(
            lock,
            "held by pid {}, test {test} in {}",
            std::process::id(),
            env!("CARGO_MANIFEST_DIR")
        );
        let d = Dpkg {
            installed: Vec::new(),
            _lock: lock,
        };
        for p in SAMPLE_PACKAGES {
            if d.is_installed(p) {
                println!("note: purging {p}, left installed by an earlier run");
                d.dpkg(&["--purge", p]);
            }
        }
        if d.is_installed("pyclink") {
            assert!(
                Path::new(PYCLINK_MARK).exists(),
                "pyclink is installed on this host, and not by these tests: they would replace and purge it. \
                 Purge it first (dpkg --purge pyclink) or run the Debian tests on another host"
            );
            println!("note: purging pyclink, left installed by an earlier run");
            d.dpkg(&["--purge", "pyclink"]);
        }
        let _ = std::fs::remove_file(PYCLINK_MARK);
        d
    }

    /// dpkg with the lock held (a `Dpkg` exists only then).
    fn dpkg(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("dpkg");
        c.args(args);
        run(clean_env(&mut c))
    }

    fn is_installed(&self, package: &str) -> bool {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f", "${db:Status-Status}", package])
            .output()
            .unwrap();
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "installed"
    }

    fn install(&mut self, debs: &[PathBuf]) {
        let names: Vec<String> = debs.iter().map(|d| deb_field(d, "Package")).collect();
        if names.iter().any(|n| n == "pyclink") {
            std::fs::write(
                PYCLINK_MARK,
                "pyclink installed by pyclink's tests/deb.rs\n",
            )
            .unwrap();
        }
        let mut args = vec!["-i"];
        args.extend(debs.iter().map(|d| d.to_str().unwrap()));
        let out = self.dpkg(&args);
        for name in names {
            if !self.installed.contains(&name) {
                self.installed.push(name);
            }
        }
        assert!(out.status.success(), "dpkg -i failed");
    }

    /// `dpkg --verify PACKAGE`: one line per installed file that differs from the package.
    fn verify(&self, package: &str) -> String {
        let out = self.dpkg(&["--verify", package]);
        stdout(&out)
    }

    /// pyclink's .deb, installed, with `pyclink` and `dh_pyclink` on PATH being its files.
    fn install_pyclink(&mut self) -> PathBuf {
        let deb = pyclink_deb();
        self.install(std::slice::from_ref(&deb));
        let listed = stdout(&self.dpkg(&["-L", "pyclink"]));
        for tool in ["pyclink", "dh_pyclink"] {
            let out = run(Command::new("sh").args(["-c", &format!("command -v {tool}")]));
            let found = stdout(&out).trim().to_string();
            assert!(
                listed.lines().any(|l| l == found),
                "`{tool}` on PATH is {found:?}, not the one installed by the package: another copy shadows it"
            );
        }
        deb
    }
}

impl Drop for Dpkg {
    fn drop(&mut self) {
        if !self.installed.is_empty() {
            let mut args = vec!["--purge"];
            args.extend(self.installed.iter().rev().map(String::as_str));
            let out = self.dpkg(&args);
            if out.status.success() {
                let _ = std::fs::remove_file(PYCLINK_MARK);
            } else if !std::thread::panicking() {
                panic!("dpkg --purge failed");
            }
        }
    }
}

fn deb_field(deb: &Path, field: &str) -> String {
    let out = run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(field));
    assert!(out.status.success());
    stdout(&out).trim().to_string()
}

// ---------------------------------------------------------------------------------------------
// pyclink's own .deb

/// Build pyclink's .deb with dpkg-buildpackage, once per tree of HEAD: the tests of one
/// run share it (they hold the dpkg lock while calling this).
fn pyclink_deb() -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("deb-pyclink");
    // The README's commands build from `git archive HEAD`: the package changes exactly when
    // HEAD's tree does.
    let tree = run(Command::new("git").args([
        "-C",
        env!("CARGO_MANIFEST_DIR"),
        "rev-parse",
        "HEAD^{tree}",
    ]));
    assert!(tree.status.success(), "this test needs the git checkout");
    let stamp = stdout(&tree);
    let version = changelog_field(&repo().join("packaging/debian/changelog"), "Version");
    let find_deb = || -> Option<PathBuf> {
        std::fs::read_dir(&base).ok()?.find_map(|e| {
            let p = e.ok()?.path();
            let n = p.file_name()?.to_str()?.to_string();
            (n.starts_with(&format!("pyclink_{version}_")) && n.ends_with(".deb")).then_some(p)
        })
    };
    if std::fs::read_to_string(base.join("stamp")).ok().as_deref() == Some(stamp.as_str()) {
        if let Some(deb) = find_deb() {
            println!("reusing {} (inputs unchanged)", deb.display());
            return deb;
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    // The README's commands, with this directory where they say /tmp: `git archive HEAD` takes
    // the committed files, as a clean clone has them.
    let mut script = String::from("set -e\n");
    for cmd in common::doc_blocks::doc_block("readme-deb") {
        assert!(
            !cmd.contains("pyclink-") || cmd.contains(&format!("pyclink-{version}")),
            "the README's `{cmd}` names another version than {version}"
        );
        script.push_str(&cmd.replace(" /tmp", &format!(" {}", base.display())));
        script.push('\n');
    }
    let target = package_cargo_target();
    let mut c = Command::new("sh");
    c.args(["-c", &script])
        .current_dir(repo())
        // The unit tests are part of this suite already.
        .env("DEB_BUILD_OPTIONS", "nocheck");
    // Shared with the RPM's build and kept between runs: only pyclink itself is recompiled.
    target.apply(&mut c);
    clean_env(&mut c).env("DEB_BUILD_OPTIONS", "nocheck");
    let (ok, log) = run_logged(&mut c, &base.join("build.log"));
    assert!(
        ok,
        "the README's commands for pyclink's .deb failed:\n{script}\n{}",
        tail(&log, 60)
    );
    let deb = find_deb().expect("dpkg-buildpackage made no pyclink .deb");
    std::fs::write(base.join("stamp"), stamp).unwrap();
    deb
}

// ---------------------------------------------------------------------------------------------
// The sample package

struct Built {
    dir: tempfile::TempDir,
    ok: bool,
    log: String,
}

impl Built {
    fn source(&self) -> PathBuf {
        self.dir.path().join("sample")
    }

    fn deb(&self, package: &str) -> PathBuf {
        let version = changelog_field(&self.source().join("debian/changelog"), "Version");
        let p = self.dir.path().join(format!("{package}_{version}_all.deb"));
        assert!(
            p.exists(),
            "{} was not built:\n{}",
            p.display(),
            tail(&self.log, 40)
        );
        p
    }
}

/// Copy the sample, let `edit` change it, and build it with dpkg-buildpackage (which checks the
/// Build-Depends against the dpkg database, so the installed pyclink is what satisfies them).
fn build_sample(name: &str, edit: impl FnOnce(&Path)) -> Built {
    let dir = scratch(name);
    let src = dir.path().join("sample");
    copy_tree(&sample_src(), &src);
    edit(&src);
    let mut c = Command::new("dpkg-buildpackage");
    c.current_dir(&src).args(["-b", "-us", "-uc"]);
    clean_env(&mut c);
    let (ok, log) = run_logged(&mut c, &dir.path().join("build.log"));
    Built { dir, ok, log }
}

fn edit_file(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// One entry of `dpkg-deb -c`: the path (without the leading `.`) and, for a tar hardlink
/// entry, the path it links to.
#[derive(Debug)]
struct Entry {
    path: String,
    link_to: Option<String>,
}

fn contents(deb: &Path) -> (String, Vec<Entry>) {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    assert!(out.status.success());
    let text = stdout(&out);
    let entries = text
        .lines()
        .map(|l| {
            // perms owner size date time PATH [link to TARGET | -> TARGET]
            let mut rest = l.trim_start();
            for _ in 0..5 {
                let end = rest
                    .find(char::is_whitespace)
                    .unwrap_or_else(|| panic!("unexpected dpkg-deb -c line: {l}"));
                rest = rest[end..].trim_start();
            }
            let (path, link_to) = match (l.starts_with('h'), rest.split_once(" link to ")) {
                (true, Some((p, t))) => (p, Some(t.trim_start_matches('.').to_string())),
                _ => (rest, None),
            };
            Entry {
                path: path.trim_start_matches('.').to_string(),
                link_to,
            }
        })
        .collect();
    (text, entries)
}

fn pyc_name(module: &str, tag: &str, level: u8) -> String {
    match level {
        0 => format!("{module}.{tag}.pyc"),
        l => format!("{module}.{tag}.opt-{l}.pyc"),
    }
}

/// The sample's modules, read from its sources: the table above must describe every one.
fn sample_modules() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sample_src().join("app/pcsample"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".py").map(str::to_string))
        .collect();
    v.sort();
    let table: Vec<String> = LEVEL_GROUPS.iter().map(|(m, _)| m.to_string()).collect();
    assert_eq!(
        v, table,
        "LEVEL_GROUPS must list every module of the sample"
    );
    v
}

/// From `dpkg-deb -c`: exactly three levels per module, and tar hardlink entries exactly where
/// LEVEL_GROUPS says the levels are identical. Returns (pyc, distinct files) for the package.
fn check_listing(deb: &Path, app_dir: &str, tag: &str) -> (usize, usize) {
    let (text, entries) = contents(deb);
    let cache = format!("/{app_dir}/pcsample/__pycache__/");
    let pycs: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.path.ends_with(".pyc"))
        .collect();
    assert!(
        pycs.iter().all(|e| e.path.starts_with(&cache)),
        "pycs outside {cache}:\n{text}"
    );
    // The file each pyc's content lives in: itself, or the entry its tar hardlink points to.
    let owner: BTreeMap<String, String> = pycs
        .iter()
        .map(|e| {
            let name = e.path[cache.len()..].to_string();
            let target = match &e.link_to {
                Some(t) => {
                    assert!(t.starts_with(&cache), "link leaves the cache dir: {e:?}");
                    t[cache.len()..].to_string()
                }
                None => name.clone(),
            };
            (name, target)
        })
        .collect();
    let mut expected_names = BTreeSet::new();
    let mut distinct = 0;
    for (module, groups) in LEVEL_GROUPS {
        for group in *groups {
            distinct += 1;
            let names: Vec<String> = group.iter().map(|&l| pyc_name(module, tag, l)).collect();
            let owners: BTreeSet<&String> = names
                .iter()
                .map(|n| {
                    owner
                        .get(n)
                        .unwrap_or_else(|| panic!("{deb:?} lacks {cache}{n}:\n{text}"))
                })
                .collect();
            assert_eq!(
                owners.len(),
                1,
                "{module}: levels {group:?} are identical and must be one file (tar hardlinks):\n{text}"
            );
            expected_names.extend(names);
        }
        // Different groups of one module must not be linked to each other.
        let group_owners: BTreeSet<&String> = groups
            .iter()
            .map(|g| &owner[&pyc_name(module, tag, g[0])])
            .collect();
        assert_eq!(
            group_owners.len(),
            groups.len(),
            "{module}: levels that differ are linked together:\n{text}"
        );
    }
    let names: BTreeSet<String> = owner.keys().cloned().collect();
    assert_eq!(names, expected_names, "unexpected pycs in {deb:?}:\n{text}");
    (owner.len(), distinct)
}

/// The header of a pyc: (flags, the 8 bytes after them as two u32).
fn pyc_header(p: &Path) -> (u32, u32, u32) {
    let b = std::fs::read(p).unwrap();
    let word = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
    (word(4), word(8), word(12))
}

fn all_pycs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pyc"))
        .map(|e| e.into_path())
        .collect();
    v.sort();
    v
}

/// Import the whole application from `app` with `python3` at each level and check that every
/// module's code came from the pyc of that level, through what -O and -OO remove.
fn import_at_each_level(app: &Path, tag: &str) {
    let modules = sample_modules();
    let script = format!(
        "import sys; sys.path.insert(0, {:?}); import pcsample, pcsample.cli; print(pcsample.report())",
        app.to_str().unwrap()
    );
    for (flag, level) in [(None, 0u8), (Some("-O"), 1), (Some("-OO"), 2)] {
        let mut c = Command::new("python3");
        c.args(flag).args(["-v", "-c", &script]);
        let out = run(clean_env(&mut c));
        assert!(out.status.success());
        let expected = format!(
            "asserts={} docstrings={}",
            if level == 0 { "True" } else { "False" },
            if level == 2 { "False" } else { "True" }
        );
        assert!(
            stdout(&out).contains(&expected),
            "level {level}: expected {expected}"
        );
        let err = stderr(&out);
        let prefix = format!("# code object from '{}/", app.display());
        let loaded: BTreeSet<String> = err
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .map(|s| s.trim_end_matches('\'').to_string())
            .collect();
        let wanted: BTreeSet<String> = modules
            .iter()
            .map(|m| format!("pcsample/__pycache__/{}", pyc_name(m, tag, level)))
            .collect();
        assert_eq!(
            loaded, wanted,
            "level {level}: the code must come from the shipped pycs"
        );
        assert!(
            !err.contains(&format!("created '{}", app.display())),
            "python3 wrote a pyc"
        );
    }
}

/// lintian's report on `deb`, or None where lintian is not installed (CI installs it: there it
/// must run).
fn lintian(debs: &[PathBuf], options: &[&str]) -> Option<String> {
    if !tool_exists("lintian") {
        assert!(
            std::env::var_os("CI").is_none(),
            "lintian is not installed (.ci/run installs it)"
        );
        println!("note: lintian is not installed; {debs:?} not linted");
        return None;
    }
    let out = run(Command::new("lintian").args(options).args(debs));
    // 0: nothing to report at error level, 2: something; 1 is lintian itself failing.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "lintian failed on {debs:?}:\n{}",
        stderr(&out)
    );
    Some(stdout(&out))
}

fn errors_and_warnings(report: &str) -> Vec<&str> {
    report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Tests that install packages

/// The dpkg database for `test` (waiting for the lock), or None when not root (said so).
///
/// A test that calls this holds the host-wide lock for its whole run: name it in the `packages`
/// test group of .config/nextest.toml, which runs such tests one at a time.
fn dpkg_or_skip(test: &str) -> Option<Dpkg> {
    if !is_root() {
        println!("SKIP {test}: dpkg -i needs root");
        return None;
    }
    Some(Dpkg::begin(test))
}

#[test]
fn own_deb_holds_the_tools_the_addon_and_the_manuals() {
    let Some(mut dpkg) = dpkg_or_skip("own_deb_holds_the_tools_the_addon_and_the_manuals") else {
        return;
    };
    let deb = dpkg.install_pyclink();
    let (text, entries) = contents(&deb);
    let paths: BTreeSet<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut wanted: Vec<String> = [
        "/usr/bin/pyclink",
        "/usr/bin/dh_pyclink",
        "/usr/share/perl5/Debian/Debhelper/Sequence/pyclink.pm",
        "/usr/share/man/man1/pyclink.1.gz",
        "/usr/share/man/man1/dh_pyclink.1.gz",
        "/usr/share/bash-completion/completions/pyclink",
        "/usr/share/zsh/vendor-completions/_pyclink",
        "/usr/share/fish/vendor_completions.d/pyclink.fish",
    ]
    .map(String::from)
    .to_vec();
    for sub in pyclink::generate::man_subcommands() {
        wanted.push(format!("/usr/share/man/man1/pyclink-{sub}.1.gz"));
    }
    for want in &wanted {
        assert!(
            paths.contains(want.as_str()),
            "{want} is not in the .deb:\n{text}"
        );
    }
    // dh_compress compresses a long README.
    assert!(
        ["README.md", "README.md.gz"]
            .iter()
            .any(|f| paths.contains(format!("/usr/share/doc/pyclink/{f}").as_str())),
        "README.md is not in the .deb:\n{text}"
    );
    let provides = deb_field(&deb, "Provides");
    assert!(
        provides
            .split(',')
            .any(|p| p.trim() == "dh-sequence-pyclink"),
        "Provides: {provides}"
    );

    // The installed binary is the one built from this tree, with the package's version.
    let version = deb_field(&deb, "Version");
    let out = run(Command::new("pyclink").arg("--version"));
    assert_eq!(stdout(&out).trim(), format!("pyclink {version}"));

    // The man pages are the real ones: dh_pyclink's from its POD, pyclink's from the CLI.
    for (page, must) in [
        ("dh_pyclink", "debian/\\fIpackage\\fR.pyclink"),
        ("pyclink", "invalidation"),
    ] {
        let p = format!("/usr/share/man/man1/{page}.1.gz");
        let out = run(Command::new("zcat").arg(&p));
        let man = stdout(&out);
        assert!(man.contains(".TH"), "{p} is not a man page");
        assert!(man.contains(must), "{p} lacks {must:?}");
    }

    if let Some(report) = lintian(std::slice::from_ref(&deb), &[]) {
        let found = errors_and_warnings(&report);
        assert!(found.is_empty(), "lintian on pyclink's .deb: {found:#?}");
    }
}

#[test]
fn sample_ships_linked_pycs_that_python_uses_unchanged() {
    let Some(mut dpkg) = dpkg_or_skip("sample_ships_linked_pycs_that_python_uses_unchanged") else {
        return;
    };
    dpkg.install_pyclink();
    let version = host_python3_version();
    let tag = cache_tag(Path::new("python3"));
    let started = std::time::Instant::now();
    let built = build_sample("deb-sample-", |_| {});
    assert!(
        built.ok,
        "the sample did not build:\n{}",
        tail(&built.log, 60)
    );
    println!("sample built in {:.1?}", started.elapsed());

    let epoch: i64 = changelog_field(&built.source().join("debian/changelog"), "Timestamp")
        .parse()
        .unwrap();
    let mut shipped = BTreeMap::new();
    for &(package, app_dir, _) in SAMPLES {
        let deb = built.deb(package);
        let (pyc, distinct) = check_listing(&deb, app_dir, &tag);
        let sources = LEVEL_GROUPS.len();
        // The build log holds pyclink's line for this package, with the figures the sample's
        // construction implies.
        let line = format!(
            "pyclink: python{version}: {sources} sources, {pyc} pyc ({distinct} written, {} hardlinked, 0 copied), 0 errors",
            pyc - distinct
        );
        let cmd = format!("pyclink --buildroot debian/{package} ");
        let at = built
            .log
            .find(&cmd)
            .unwrap_or_else(|| panic!("no `{cmd}` in the build log:\n{}", built.log));
        assert!(
            built.log[at..]
                .lines()
                .nth(1)
                .unwrap_or("")
                .starts_with(&line),
            "expected `{line}` under `{cmd}`:\n{}",
            built.log
        );

        let root = scratch("deb-x-");
        let out = run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(root.path()));
        assert!(out.status.success());
        assert_audit_ok(root.path(), &[format!("{version}:{app_dir}")], &[]);
        shipped.insert(package, pyc_files(&root.path().join(app_dir)));
    }
    println!("build log, pyclink part:");
    for l in built.log.lines().filter(|l| l.contains("pyclink")) {
        println!("  {l}");
    }
    // dh_python3 has the -share package's postinst run py3compile on its private directory:
    // what would rewrite pycs at installation.
    let postinst = stdout(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(built.deb(SAMPLE_SHARE))
        .arg("postinst")));
    let py3compile = format!("py3compile -p {SAMPLE_SHARE} /{SAMPLE_SHARE_DIR}\n");
    assert!(postinst.contains(&py3compile), "postinst:\n{postinst}");
    check_sample_lintian(&built);

    let debs: Vec<PathBuf> = SAMPLE_PACKAGES.iter().map(|p| built.deb(p)).collect();
    dpkg.install(&debs);
    for &(package, app_dir, timestamp) in SAMPLES {
        let dir = Path::new("/").join(app_dir);
        // Every file as shipped (md5sums), and every pyc the very file of the package, linked
        // as in the package: py3compile left them alone.
        let changed = dpkg.verify(package);
        assert!(
            changed.is_empty(),
            "{package}: dpkg --verify after installation:\n{changed}"
        );
        // Where pypy3 is installed on the builder, dh_python3 also has the postinst run
        // pypy3compile on the private directory: PyPy's own pycs appear at installation, beside
        // the CPython ones pyclink shipped, which must stay as they are.
        let mut installed = pyc_files(&dir);
        if postinst.contains(&format!("pypy3compile -p {package} ")) {
            installed.retain(|p, _| {
                let pypy = p.to_string_lossy().contains(".pypy");
                if pypy {
                    println!(
                        "{package}: {} written by pypy3compile at installation",
                        p.display()
                    );
                }
                !pypy || shipped[package].contains_key(p)
            });
        }
        let differ: Vec<String> = installed
            .keys()
            .chain(shipped[package].keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|p| installed.get(*p) != shipped[package].get(*p))
            .map(|p| match (installed.get(p), shipped[package].get(p)) {
                (Some(i), Some(s)) => format!(
                    "{}: bytes {}, first name {} / {}, links {} / {}",
                    p.display(),
                    if i.0 == s.0 { "same" } else { "differ" },
                    i.1.display(),
                    s.1.display(),
                    i.2,
                    s.2
                ),
                (i, _) => format!("{}: installed {}", p.display(), i.is_some()),
            })
            .collect();
        assert!(
            differ.is_empty(),
            "{package}: the installed pycs differ from the shipped ones (installed / shipped):\n{}\n{SAMPLE_SHARE}'s postinst:\n{postinst}",
            differ.join("\n")
        );
        for pyc in all_pycs(&dir) {
            if !shipped[package].contains_key(pyc.strip_prefix(&dir).unwrap()) {
                continue;
            }
            let name = pyc.file_name().unwrap().to_str().unwrap();
            let module = name.split('.').next().unwrap();
            let src = dir.join("pcsample").join(format!("{module}.py"));
            let src_meta = std::fs::metadata(&src).unwrap();
            // dpkg-deb clamped the sources (copied just now) to SOURCE_DATE_EPOCH.
            assert_eq!(src_meta.mtime(), epoch, "{} was not clamped", src.display());
            let (flags, a, b) = pyc_header(&pyc);
            if timestamp {
                assert_eq!(flags, 0, "{}: not a timestamp pyc", pyc.display());
                assert_eq!(
                    (a as i64, b as u64),
                    (epoch, src_meta.len()),
                    "{}",
                    pyc.display()
                );
            } else {
                assert_eq!(flags, 3, "{}: not a checked-hash pyc", pyc.display());
            }
        }
    }
    let dirs: Vec<&str> = SAMPLES.iter().map(|s| s.1).collect();
    // The installed directories, audited as installed, less PyPy's pycs that pypy3compile may
    // have written (pyc-audit takes them for strays of the CPython version): a copy with links
    // kept, where there are any.
    let audited = scratch("deb-installed-");
    let mut audit_root = Path::new("/");
    for dir in &dirs {
        if all_pycs(&Path::new("/").join(dir))
            .iter()
            .any(|p| p.to_string_lossy().contains(".pypy"))
        {
            audit_root = audited.path();
        }
    }
    if audit_root != Path::new("/") {
        for dir in &dirs {
            let to = audit_root.join(dir);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let out = run(Command::new("cp")
                .arg("-a")
                .arg(Path::new("/").join(dir))
                .arg(&to));
            assert!(out.status.success());
            for p in all_pycs(&to) {
                if p.to_string_lossy().contains(".pypy") {
                    std::fs::remove_file(p).unwrap();
                }
            }
        }
    }
    assert_audit_ok(audit_root, &[format!("{version}:{}", dirs.join(","))], &[]);

    let apps: Vec<PathBuf> = dirs.iter().map(|d| Path::new("/").join(d)).collect();
    // PyPy's pycs are pypy3compile's, which rewrites them on every configure (see above).
    let state = || {
        apps.iter()
            .map(|a| {
                let mut s = snapshot(a);
                s.retain(|e| !e.0.to_string_lossy().contains(".pypy"));
                s
            })
            .collect::<Vec<_>>()
    };
    let before = state();
    for app in &apps {
        import_at_each_level(app, &tag);
    }
    // What dpkg runs when it configures the package again (dpkg-reconfigure, a trigger).
    let share = Path::new("/").join(SAMPLE_SHARE_DIR);
    let postinst = format!("/var/lib/dpkg/info/{SAMPLE_SHARE}.postinst");
    let mut configure = Command::new(&postinst);
    configure.arg("configure");
    assert!(run(clean_env(&mut configure)).status.success());
    assert_eq!(
        state(),
        before,
        "importing or py3compile changed, added or rewrote files"
    );

    // The checks above can fail. The same python3 rewrites a pyc whose source no longer
    // matches it:
    let copy = scratch("deb-stale-");
    copy_tree(&apps[0], &copy.path().join("app"));
    let stale_src = copy.path().join("app/pcsample/plain.py");
    let mut text = std::fs::read_to_string(&stale_src).unwrap();
    text.push_str("\n# changed\n");
    std::fs::write(&stale_src, text).unwrap();
    let pyc = &pycs(&copy.path().join("app/pcsample"), "plain", &tag)[0];
    let ino_before = ino(pyc);
    let mut c = Command::new("python3");
    c.args([
        "-c",
        "import sys; sys.path.insert(0, sys.argv[1]); import pcsample.plain",
    ])
    .arg(copy.path().join("app"));
    assert!(run(clean_env(&mut c)).status.success());
    assert_ne!(
        ino(pyc),
        ino_before,
        "python3 did not rewrite a stale pyc here"
    );
    // and dpkg --verify reports a pyc that is not the shipped file, which the postinst's
    // py3compile rewrites when it is a checked-hash pyc (valid, but not what it takes for
    // fresh): what the timestamp pycs avoid there.
    let pyc = &pycs(&share.join("pcsample"), "plain", &tag)[0];
    let mut c = Command::new("python3");
    c.args([
        "-c",
        "import py_compile, sys; py_compile.compile(sys.argv[1], sys.argv[2], sys.argv[1], True, \
         invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)",
    ])
    .arg(share.join("pcsample/plain.py"))
    .arg(pyc);
    assert!(run(clean_env(&mut c)).status.success());
    assert_eq!(pyc_header(pyc).0, 3);
    let changed = dpkg.verify(SAMPLE_SHARE);
    assert!(
        changed.contains(&format!(" {}\n", pyc.display())),
        "dpkg --verify did not report the changed {}:\n{changed}",
        pyc.display()
    );
    let checked_hash = ino(pyc);
    assert!(run(clean_env(&mut configure)).status.success());
    assert!(
        ino(pyc) != checked_hash && pyc_header(pyc).0 == 0,
        "py3compile did not rewrite a checked-hash pyc"
    );
    println!(
        "py3compile's own timestamp pyc is {} the shipped one",
        if dpkg.verify(SAMPLE_SHARE).is_empty() {
            "byte-identical to"
        } else {
            "not"
        }
    );
}

/// lintian on the sample's packages: nothing at error or warning level about what dh_pyclink
/// did, because of the overrides it installs for the `__pycache__` directories it was asked
/// to fill (and only those: each override is used).
fn check_sample_lintian(built: &Built) {
    let debs: Vec<PathBuf> = SAMPLE_PACKAGES.iter().map(|p| built.deb(p)).collect();
    let Some(report) = lintian(&debs, &["--show-overrides"]) else {
        return;
    };
    println!("lintian on the sample:\n{report}");
    for &(package, app_dir, _) in SAMPLES {
        let prefix = format!(": {package}: ");
        let found: Vec<&str> = errors_and_warnings(&report)
            .into_iter()
            .filter(|l| l[1..].starts_with(&prefix))
            // /opt is the sample's choice, not dh_pyclink's; policy reserves it.
            .filter(|l| !(app_dir.starts_with("opt/") && l.contains(" dir-or-file-in-opt [")))
            .collect();
        assert!(found.is_empty(), "lintian on {package}: {found:#?}");
        let overridden = format!(
            "O: {package}: package-installs-python-pycache-dir [{app_dir}/pcsample/__pycache__/]"
        );
        assert!(
            report.lines().any(|l| l == overridden),
            "no `{overridden}` in lintian's report"
        );
    }
}

/// Every pyc below `dir`: its bytes, the first of the names hardlinked to it, and its link
/// count, by path relative to `dir`.
fn pyc_files(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, PathBuf, u64)> {
    let pycs = all_pycs(dir);
    let mut first: BTreeMap<u64, PathBuf> = BTreeMap::new();
    for p in &pycs {
        first
            .entry(ino(p))
            .or_insert_with(|| p.strip_prefix(dir).unwrap().to_path_buf());
    }
    pycs.iter()
        .map(|p| {
            let m = std::fs::metadata(p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_path_buf();
            (
                rel,
                (
                    std::fs::read(p).unwrap(),
                    first[&m.ino()].clone(),
                    m.nlink(),
                ),
            )
        })
        .collect()
}

#[test]
fn syntax_error_fails_the_build_with_path_and_line() {
    let Some(mut dpkg) = dpkg_or_skip("syntax_error_fails_the_build_with_path_and_line") else {
        return;
    };
    dpkg.install_pyclink();
    let broken = "# A deliberately broken module.\n\ndef broken(:\n    pass\n";
    let failed = build_sample("deb-broken-", |src| {
        std::fs::write(src.join("app/pcsample/broken.py"), broken).unwrap();
    });
    assert!(!failed.ok, "the build succeeded despite a syntax error");
    let want = format!("/{SAMPLE_DIR}/pcsample/broken.py:3: SyntaxError");
    assert!(
        failed.log.lines().any(|l| l.contains(&want)),
        "no `{want}` in the log:\n{}",
        failed.log
    );
    assert!(failed
        .log
        .contains("dh_pyclink: error: pyclink --buildroot"));
    assert!(
        !failed
            .dir
            .path()
            .join(format!("{SAMPLE}_1.0_all.deb"))
            .exists(),
        "a .deb was made anyway"
    );

    // Told otherwise, the build goes on and only the broken module lacks pycs.
    let warned = build_sample("deb-warn-", |src| {
        std::fs::write(src.join("app/pcsample/broken.py"), broken).unwrap();
        edit_file(
            &src.join("debian/rules"),
            "dh_pyclink -Npyclinksample-ts",
            "dh_pyclink -Npyclinksample-ts --errors=warn",
        );
        edit_file(
            &src.join("debian/rules"),
            "--invalidation-mode=timestamp",
            "--invalidation-mode=timestamp --errors=warn",
        );
    });
    assert!(
        warned.ok,
        "--errors=warn still failed:\n{}",
        tail(&warned.log, 40)
    );
    assert!(warned.log.contains(&want));
    let (text, entries) = contents(&warned.deb(SAMPLE));
    assert!(entries.iter().any(|e| e.path.ends_with("/broken.py")));
    assert!(
        !entries
            .iter()
            .any(|e| e.path.contains("/broken.") && e.path.ends_with(".pyc")),
        "pycs for a source that does not compile:\n{text}"
    );
    let modules = LEVEL_GROUPS.len();
    let pycs = entries.iter().filter(|e| e.path.ends_with(".pyc")).count();
    assert_eq!(pycs, 3 * modules, "{text}");
}

#[test]
fn without_the_addon_the_package_is_unchanged() {
    let Some(mut dpkg) = dpkg_or_skip("without_the_addon_the_package_is_unchanged") else {
        return;
    };
    dpkg.install_pyclink();
    let with = build_sample("deb-with-", |_| {});
    assert!(with.ok, "{}", tail(&with.log, 40));
    let without = build_sample("deb-without-", |src| {
        edit_file(&src.join("debian/rules"), "dh $@ --with pyclink", "dh $@");
    });
    assert!(without.ok, "{}", tail(&without.log, 40));
    // With the addon but no debian/*.pyclink and no override, dh skips the command (its
    // PROMISE), as it does for other file-driven helpers.
    let unused = build_sample("deb-unused-", |src| {
        for package in SAMPLE_PACKAGES {
            std::fs::remove_file(src.join(format!("debian/{package}.pyclink"))).unwrap();
        }
        edit_file(
            &src.join("debian/rules"),
            "override_dh_pyclink:",
            "unused-target:",
        );
    });
    assert!(unused.ok, "{}", tail(&unused.log, 40));
    for (name, build) in [
        ("without the addon", &without),
        ("with nothing to do", &unused),
    ] {
        assert!(
            !build.log.contains("dh_pyclink") && !build.log.contains("pyclink:"),
            "{name}: dh_pyclink ran:\n{}",
            build.log
        );
    }
    for &(package, app_dir, _) in SAMPLES {
        let (text, plain) = contents(&without.deb(package));
        assert!(
            !text.contains(".pyc") && !text.contains("__pycache__"),
            "pycs without the addon:\n{text}"
        );
        let (_, compiled) = contents(&with.deb(package));
        // Besides the pycs, the lintian override for their directories.
        let overrides = format!("/usr/share/lintian/overrides/{package}");
        assert!(compiled.iter().any(|e| e.path == overrides));
        let rest: Vec<&str> = compiled
            .iter()
            .map(|e| e.path.as_str())
            .filter(|p| !p.contains("__pycache__") && !p.starts_with("/usr/share/lintian/"))
            .collect();
        let plain: Vec<&str> = plain.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(plain, rest, "the addon changed more than the pycs");
        let root = scratch("deb-ovr-");
        let out = run(Command::new("dpkg-deb")
            .arg("-x")
            .arg(with.deb(package))
            .arg(root.path()));
        assert!(out.status.success());
        let text = std::fs::read_to_string(root.path().join(&overrides[1..])).unwrap();
        assert!(
            text.contains(&format!(
                "{package}: package-installs-python-pycache-dir [{app_dir}/pcsample/__pycache__/]\n"
            )),
            "{overrides}:\n{text}"
        );
    }
}

#[test]
fn build_depends_dh_sequence_and_python3_addon() {
    let Some(mut dpkg) = dpkg_or_skip("build_depends_dh_sequence_and_python3_addon") else {
        return;
    };
    dpkg.install_pyclink();
    let tag = cache_tag(Path::new("python3"));
    // No --with pyclink: the addon comes from Build-Depends, as dh-sequence-pyclink, which only
    // the installed package's Provides satisfies. dh_python3 runs too.
    let built = build_sample("deb-dhseq-", |src| {
        edit_file(
            &src.join("debian/control"),
            "Build-Depends: debhelper-compat (= 13), dh-sequence-python3, pyclink,",
            "Build-Depends: debhelper-compat (= 13), dh-sequence-python3, dh-sequence-pyclink,",
        );
        edit_file(&src.join("debian/rules"), "dh $@ --with pyclink", "dh $@");
    });
    assert!(built.ok, "{}", tail(&built.log, 60));
    let pos = |needle: &str| {
        built
            .log
            .lines()
            .position(|l| l.trim() == needle)
            .unwrap_or_else(|| panic!("`{needle}` did not run:\n{}", built.log))
    };
    let (py3, ours, fixperms) = (
        pos("dh_python3"),
        pos("debian/rules override_dh_pyclink"),
        pos("dh_fixperms"),
    );
    assert!(
        py3 < ours && ours < fixperms,
        "order: dh_python3 {py3}, dh_pyclink {ours}, dh_fixperms {fixperms}"
    );
    // dh_python3 deletes the pycs in the -share package's private directory and leaves /opt
    // alone; dh_pyclink runs after it: every pyc survives into the .debs.
    for &(package, app_dir, _) in SAMPLES {
        check_listing(&built.deb(package), app_dir, &tag);
    }
}

// ---------------------------------------------------------------------------------------------
// dh_pyclink and the sequence from the repository, no installation

/// A copy of the sample whose package build directories hold the application, as dh_install
/// leaves them.
fn installed_sample_tree() -> (tempfile::TempDir, PathBuf) {
    let dir = scratch("deb-dh-");
    let src = dir.path().join("sample");
    copy_tree(&sample_src(), &src);
    for &(package, app_dir, _) in SAMPLES {
        let dest = src.join("debian").join(package).join(app_dir);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        copy_tree(&src.join("app"), &dest);
    }
    (dir, src)
}

/// The repository's dh_pyclink, finding the repository's debhelper modules and the pyclink
/// binary under test.
fn dh_pyclink(src: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(repo().join("packaging/debhelper/dh_pyclink"));
    clean_env(&mut c)
        .current_dir(src)
        .args(args)
        .envs(env.iter().copied())
        .env("PERL5LIB", repo().join("packaging/debhelper"))
        .env("PATH", test_path());
    run(&mut c)
}

/// PATH with the pyclink under test and the repository's dh_pyclink first.
fn test_path() -> std::ffi::OsString {
    let ours = [
        Path::new(env!("CARGO_BIN_EXE_pyclink"))
            .parent()
            .unwrap()
            .to_path_buf(),
        repo().join("packaging/debhelper"),
    ];
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(ours.into_iter().chain(std::env::split_paths(&inherited))).unwrap()
}

fn module_names(pycs: &[PathBuf]) -> BTreeSet<String> {
    pycs.iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.split('.').next().unwrap().to_string()
        })
        .collect()
}

#[test]
fn dh_pyclink_honours_packages_paths_and_options() {
    let (_dir, src) = installed_sample_tree();
    let pkg = src.join("debian").join(SAMPLE);
    let pkg_ts = src.join("debian").join(SAMPLE_TS);
    let version = host_python3_version();
    let tag = cache_tag(Path::new("python3"));

    // --no-act prints what it would run, with -N, -X, --optimize and parallel= applied, and
    // runs nothing. -X is a substring, so glob characters in it are escaped for pyclink.
    let out = dh_pyclink(
        &src,
        &[
            "--no-act",
            "-v",
            "-Npyclinksample-ts",
            "-Xdo*cs",
            "--optimize=0,1",
        ],
        &[("DEB_BUILD_OPTIONS", "parallel=3")],
    );
    assert!(out.status.success());
    let text = stdout(&out);
    let want = format!(
        "\tpyclink --buildroot debian/{SAMPLE} --jobs 3 --invalidation-mode checked-hash --optimize 0,1 --exclude \\*do\\\\\\*cs\\* -v -- {SAMPLE_DIR}\n"
    );
    assert!(text.contains(&want), "expected {want:?} in:\n{text}");
    assert!(!text.contains(SAMPLE_TS), "-N was ignored:\n{text}");
    assert!(all_pycs(&pkg).is_empty() && all_pycs(&pkg_ts).is_empty());

    // -p selects one package; timestamp mode first lowers the sources' mtimes to
    // SOURCE_DATE_EPOCH. Without DEB_BUILD_OPTIONS parallel=, one job, as debhelper does.
    // pyclink's summary is printed under the command even without -v.
    let epoch: i64 = 1_600_000_000;
    let sde = [("SOURCE_DATE_EPOCH", "1600000000")];
    let out = dh_pyclink(
        &src,
        &["-ppyclinksample-ts", "--invalidation-mode=timestamp"],
        &sde,
    );
    assert!(out.status.success());
    let text = stdout(&out);
    let cmd = format!("\tpyclink --buildroot debian/{SAMPLE_TS} --jobs 1 --invalidation-mode timestamp -- {SAMPLE_TS_DIR}\n");
    let summary = format!("pyclink: python{version}: {} sources", LEVEL_GROUPS.len());
    assert!(text.contains(&(cmd + &summary)), "{text}");
    assert!(all_pycs(&pkg).is_empty(), "-p was ignored");
    let app_ts = pkg_ts.join(SAMPLE_TS_DIR);
    for e in walkdir::WalkDir::new(&app_ts) {
        let e = e.unwrap();
        if e.path().extension().is_some_and(|x| x == "py") {
            assert_eq!(
                e.metadata().unwrap().mtime(),
                epoch,
                "{}",
                e.path().display()
            );
        }
    }
    let plain = &pycs(&app_ts.join("pcsample"), "plain", &tag)[0];
    assert_eq!(pyc_header(plain).0, 0);
    assert_eq!(pyc_header(plain).1 as i64, epoch);
    assert_audit_ok(&pkg_ts, &[format!("{version}:{SAMPLE_TS_DIR}")], &[]);

    // Arguments (a leading / is fine) go to the first package acted on, on top of its
    // debian/PKG.pyclink; -X keeps a module out.
    let out = dh_pyclink(
        &src,
        &[
            "-ppyclinksample",
            "-Xchecks",
            &format!("/{SAMPLE_DIR}/pcsample"),
        ],
        &sde,
    );
    assert!(out.status.success());
    let mut want: BTreeSet<String> = sample_modules().into_iter().collect();
    want.remove("checks");
    assert_eq!(module_names(&all_pycs(&pkg)), want);
    assert_eq!(
        pyc_header(&pycs(&pkg.join(SAMPLE_DIR).join("pcsample"), "plain", &tag)[0]).0,
        3
    );
}

#[test]
fn dh_pyclink_rejects_what_it_cannot_do() {
    let (_dir, src) = installed_sample_tree();
    for (args, says) in [
        (
            &["-ppyclinksample", "opt/nowhere"][..],
            "Cannot find (any matches for) \"opt/nowhere\"",
        ),
        (
            &["-ppyclinksample", "../../etc"][..],
            "paths must stay inside the package",
        ),
        (&["-ppyclinksample", "/"][..], "use --all"),
        (
            &["--invalidation-mode=sometimes"][..],
            "--invalidation-mode=sometimes: must be",
        ),
        (
            &["--errors=ignore"][..],
            "--errors=ignore: must be fail or warn",
        ),
    ] {
        let out = dh_pyclink(&src, args, &[]);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains("dh_pyclink: error: ") && err.contains(says),
            "{args:?}: {err}"
        );
        assert!(all_pycs(&src.join("debian")).is_empty());
    }
    // A path that pyclink refuses is pyclink's error, and the tool's exit status says so.
    std::fs::write(
        src.join("debian/pyclinksample/opt/pyclinksample/pcsample/bad.py"),
        "x = (\n",
    )
    .unwrap();
    let out = dh_pyclink(&src, &["-ppyclinksample"], &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("/{SAMPLE_DIR}/pcsample/bad.py:1: SyntaxError")),
        "{err}"
    );
    assert!(
        err.contains("dh_pyclink: error: pyclink --buildroot debian/pyclinksample"),
        "{err}"
    );
}

/// Issue 22, item 1: under DH_QUIET or terse (which add -q), a source that does not compile
/// is still in the build log with --errors=warn, as the POD promises; only the echo of the
/// command and pyclink's summary are left out.
#[test]
fn dh_pyclink_shows_errors_under_dh_quiet_and_terse() {
    let (_dir, src) = installed_sample_tree();
    let bad = format!("/{SAMPLE_DIR}/pcsample/bad.py");
    std::fs::write(src.join("debian").join(SAMPLE).join(&bad[1..]), "x = (\n").unwrap();
    let version = host_python3_version();
    for env in [
        &[("DH_QUIET", "1")][..],
        &[("DEB_BUILD_OPTIONS", "terse")][..],
        &[("DH_QUIET", "1"), ("DEB_BUILD_OPTIONS", "terse")][..],
    ] {
        let out = dh_pyclink(&src, &["-ppyclinksample", "--errors=warn"], env);
        assert!(out.status.success(), "{env:?}: {}", stderr(&out));
        let log = format!("{}{}", stdout(&out), stderr(&out));
        let line = format!("pyclink: warning: {bad}:1: SyntaxError: ");
        assert!(
            log.lines().any(|l| l.starts_with(&line)),
            "{env:?}: no {line:?} in:\n{log}"
        );
        assert!(!log.contains("\tpyclink --buildroot"), "{env:?}: {log}");
        assert!(
            !log.contains(&format!("pyclink: python{version}: ")),
            "{env:?}: {log}"
        );
        assert!(module_names(&all_pycs(&src.join("debian").join(SAMPLE))).contains("plain"));
    }
    // Without --errors=warn the build fails, and says why, quiet or not.
    let out = dh_pyclink(&src, &["-ppyclinksample"], &[("DH_QUIET", "1")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("pyclink: error: {bad}:1: SyntaxError")),
        "{}",
        stderr(&out)
    );
}

/// Issue 22, item 7: pyclink refuses -j above 1024 as a typo; a builder's parallel= is none,
/// so dh_pyclink caps it (and reads a value that is no number as one job).
#[test]
fn dh_pyclink_caps_parallel_at_what_pyclink_takes() {
    let (_dir, src) = installed_sample_tree();
    for (parallel, jobs) in [
        ("5000", "1024"),
        ("1024", "1024"),
        ("0", "1"),
        ("many", "1"),
    ] {
        let out = dh_pyclink(
            &src,
            &["--no-act", "-ppyclinksample"],
            &[("DEB_BUILD_OPTIONS", &format!("parallel={parallel}"))],
        );
        assert!(out.status.success(), "{parallel}: {}", stderr(&out));
        let want = format!("\tpyclink --buildroot debian/{SAMPLE} --jobs {jobs} ");
        assert!(stdout(&out).contains(&want), "{parallel}: {}", stdout(&out));
    }
}

#[test]
fn dh_pyclink_all_compiles_every_tree_and_skips_empty_packages() {
    let (_dir, src) = installed_sample_tree();
    // No debian/PKG.pyclink: only --all makes dh_pyclink act.
    for package in SAMPLE_PACKAGES {
        std::fs::remove_file(src.join(format!("debian/{package}.pyclink"))).unwrap();
    }
    std::fs::remove_dir_all(src.join("debian").join(SAMPLE_SHARE).join("usr")).unwrap();
    let out = dh_pyclink(&src, &[], &[]);
    assert!(out.status.success());
    assert!(
        stdout(&out).is_empty(),
        "acted without paths or --all: {}",
        stdout(&out)
    );
    assert!(all_pycs(&src.join("debian")).is_empty());

    // The ts package holds a dist-packages module and a private tree; the other no Python at all.
    let ts = src.join("debian").join(SAMPLE_TS);
    std::fs::remove_dir_all(ts.join(SAMPLE_TS_DIR)).unwrap();
    write_files(
        &ts,
        &[
            ("usr/lib/python3/dist-packages/pubmod.py", "X = 1\n"),
            ("opt/private/tool.py", "Y = 2\n"),
        ],
    );
    std::fs::remove_dir_all(src.join("debian").join(SAMPLE).join("opt")).unwrap();
    write_files(
        &src.join("debian").join(SAMPLE),
        &[("usr/share/doc/x/README", "text\n")],
    );

    std::fs::write(
        src.join(format!("debian/{SAMPLE_TS}.pyclink")),
        "opt/private\n",
    )
    .unwrap();
    let out = dh_pyclink(&src, &["--all"], &[]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        !text.contains(&format!("debian/{SAMPLE} ")),
        "a package without .py files was compiled:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "\tpyclink --buildroot debian/{SAMPLE_TS} --jobs 1 --invalidation-mode checked-hash\n"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("\tpyclink --buildroot debian/{SAMPLE_TS} --jobs 1 --invalidation-mode checked-hash -- opt/private\n")), "{text}");
    assert!(
        stderr(&out).contains("dh_pyclink: warning: pyclinksample-ts: --all byte-compiles usr/lib/python3/dist-packages"),
        "{}",
        stderr(&out)
    );
    // The listed path is compiled first, so the run over every tree does not report it as
    // outside every tree and without pycs (issue 22, item 12).
    let paths_run = text.find(" -- opt/private\n").unwrap();
    let trees_run = text.find(" checked-hash\n").unwrap();
    assert!(paths_run < trees_run, "{text}");
    assert!(
        !stderr(&out).contains("outside every Python tree"),
        "{}",
        stderr(&out)
    );
    let version = host_python3_version();
    assert_audit_ok(
        &ts,
        &[format!(
            "{version}:usr/lib/python3/dist-packages,opt/private"
        )],
        &[],
    );
}

/// Run the real dh_python3 on one package of the tree, as dh would before dh_pyclink; returns
/// the postinst fragment it wrote.
fn dh_python3(src: &Path, package: &str) -> String {
    let mut c = Command::new("dh_python3");
    clean_env(&mut c)
        .current_dir(src)
        .arg(format!("-p{package}"));
    let out = run(&mut c);
    assert!(out.status.success(), "dh_python3: {}", stderr(&out));
    std::fs::read_to_string(src.join(format!("debian/{package}.postinst.debhelper")))
        .unwrap_or_default()
}

#[test]
fn dh_pyclink_writes_timestamp_pycs_where_py3compile_runs_at_install() {
    let (_dir, src) = installed_sample_tree();
    let pkg = src.join("debian").join(SAMPLE_SHARE);
    // Beside the private directory: a name that extends it (py3compile selects the package's
    // files by a plain string prefix, so it compiles these too), another private tree, and a
    // public module.
    let extra = format!("{SAMPLE_SHARE_DIR}-extra");
    write_files(
        &pkg,
        &[
            (&format!("{extra}/extra.py"), "E = 1\n"),
            ("usr/share/other/other.py", "O = 1\n"),
            ("usr/lib/python3/dist-packages/pubmod.py", "P = 1\n"),
        ],
    );
    let postinst = dh_python3(&src, SAMPLE_SHARE);
    for line in [
        format!("py3compile -p {SAMPLE_SHARE} /{SAMPLE_SHARE_DIR}\n"),
        format!("py3compile -p {SAMPLE_SHARE} \n"),
    ] {
        assert!(postinst.contains(&line), "no {line:?} in:\n{postinst}");
    }
    // A path holding the private directory and more, and the public modules.
    std::fs::write(
        src.join(format!("debian/{SAMPLE_SHARE}.pyclink")),
        "usr/share\nusr/lib/python3/dist-packages\n",
    )
    .unwrap();
    let fresh = tree_state(&pkg);
    let epoch: i64 = 1_600_000_000;
    let sde = [("SOURCE_DATE_EPOCH", "1600000000")];
    let out = dh_pyclink(&src, &[&format!("-p{SAMPLE_SHARE}")], &sde);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let base = format!("\tpyclink --buildroot debian/{SAMPLE_SHARE} --jobs 1");
    for cmd in [
        format!("{base} --invalidation-mode checked-hash --exclude /{SAMPLE_SHARE_DIR} --exclude /{extra} -- usr/share\n"),
        format!("{base} --invalidation-mode timestamp -- {SAMPLE_SHARE_DIR} {extra} usr/lib/python3/dist-packages\n"),
    ] {
        assert!(text.contains(&cmd), "expected {cmd:?} in:\n{text}");
    }
    let err = stderr(&out);
    assert!(
        err.contains(&format!("dh_pyclink: warning: {SAMPLE_SHARE}: debian/{SAMPLE_SHARE}.pyclink names usr/lib/python3/dist-packages, which holds public modules")),
        "{err}"
    );

    // Timestamp pycs of the clamped sources where py3compile runs, checked-hash ones of the
    // untouched sources elsewhere.
    let ts_parts = [SAMPLE_SHARE_DIR, &extra, "usr/lib/python3/dist-packages"];
    let pycs = all_pycs(&pkg);
    assert_eq!(pycs.len(), 3 * (LEVEL_GROUPS.len() + 3), "{pycs:#?}");
    for pyc in &pycs {
        let rel = pyc.strip_prefix(&pkg).unwrap().to_str().unwrap();
        let cache = pyc.parent().unwrap();
        let module = pyc
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap();
        let src_py = cache.parent().unwrap().join(format!("{module}.py"));
        let meta = std::fs::metadata(&src_py).unwrap();
        let (flags, time, size) = pyc_header(pyc);
        if ts_parts.iter().any(|p| rel.starts_with(&format!("{p}/"))) {
            assert_eq!(
                (flags, time as i64, size as u64),
                (0, epoch, meta.len()),
                "{rel}"
            );
            assert_eq!(meta.mtime(), epoch, "{} was not clamped", src_py.display());
        } else {
            assert_eq!(flags, 3, "{rel}");
            let before = fresh.iter().find(|e| e.0 == src_py).unwrap();
            assert_eq!(
                mtime_ns(&src_py),
                before.2,
                "{} was clamped",
                src_py.display()
            );
        }
    }
    let version = host_python3_version();
    assert_audit_ok(
        &pkg,
        &[format!("{version}:usr/share,usr/lib/python3/dist-packages")],
        &[],
    );

    // The lintian override names each private __pycache__ directory, not the public one, and
    // a second run adds nothing.
    let overrides = pkg.join(format!("usr/share/lintian/overrides/{SAMPLE_SHARE}"));
    let written = std::fs::read_to_string(&overrides).unwrap();
    let lines: Vec<&str> = written.lines().filter(|l| !l.starts_with('#')).collect();
    let want: Vec<String> = [
        "usr/share/other/__pycache__".to_string(),
        format!("{extra}/__pycache__"),
        format!("{SAMPLE_SHARE_DIR}/pcsample/__pycache__"),
    ]
    .iter()
    .map(|d| format!("{SAMPLE_SHARE}: package-installs-python-pycache-dir [{d}/]"))
    .collect();
    assert_eq!(lines, want, "{written}");
    assert!(dh_pyclink(&src, &[&format!("-p{SAMPLE_SHARE}")], &sde)
        .status
        .success());
    assert_eq!(std::fs::read_to_string(&overrides).unwrap(), written);

    // An explicit mode wins, with a warning where py3compile will rewrite the pycs.
    let (_dir, src) = installed_sample_tree();
    let pkg = src.join("debian").join(SAMPLE_SHARE);
    dh_python3(&src, SAMPLE_SHARE);
    let out = dh_pyclink(
        &src,
        &[
            &format!("-p{SAMPLE_SHARE}"),
            "--invalidation-mode=checked-hash",
        ],
        &sde,
    );
    assert!(out.status.success());
    assert!(
        stdout(&out).contains(&format!(
            "{base} --invalidation-mode checked-hash -- {SAMPLE_SHARE_DIR}\n"
        )),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!("dh_pyclink: warning: {SAMPLE_SHARE}: py3compile (dh_python3's postinst) will rewrite the level-0 pycs of checked-hash mode in {SAMPLE_SHARE_DIR} at install")),
        "{}",
        stderr(&out)
    );
    let pycs = all_pycs(&pkg);
    assert_eq!(pycs.len(), 3 * LEVEL_GROUPS.len());
    assert!(pycs.iter().all(|p| pyc_header(p).0 == 3));
}

/// `dh binary --no-act` in `src` with the repository's addon; the commands dh would run.
fn dh_sequence(src: &Path, with: &str) -> Vec<String> {
    let mut c = Command::new("dh");
    clean_env(&mut c)
        .current_dir(src)
        .args(["binary", "--no-act"])
        .args((!with.is_empty()).then(|| format!("--with={with}")))
        .env("PERL5LIB", repo().join("packaging/debhelper"))
        .env("PATH", test_path());
    let out = run(&mut c);
    assert!(out.status.success());
    stdout(&out).lines().map(|l| l.trim().to_string()).collect()
}

#[test]
fn sequence_runs_after_dh_python3_and_before_fixperms() {
    let dir = scratch("deb-seq-");
    let src = dir.path().join("sample");
    copy_tree(&sample_src(), &src);
    // The sample's override target would hide the command's own name.
    edit_file(
        &src.join("debian/rules"),
        "override_dh_pyclink:",
        "unused-target:",
    );
    for with in ["pyclink,python3", "python3,pyclink"] {
        let seq = dh_sequence(&src, with);
        let pos = |cmd: &str| {
            seq.iter()
                .position(|l| l == cmd)
                .unwrap_or_else(|| panic!("--with {with}: no {cmd} in {seq:#?}"))
        };
        let ours = pos("dh_pyclink");
        assert!(pos("dh_python3") < ours, "--with {with}: {seq:#?}");
        assert!(
            pos("dh_link") < ours && pos("dh_compress") < ours,
            "{seq:#?}"
        );
        for later in ["dh_fixperms", "dh_md5sums", "dh_builddeb"] {
            assert!(
                ours < pos(later),
                "--with {with}: {later} before dh_pyclink"
            );
        }
    }
}

/// Issue 12, through dh_pyclink: an upstream install step byte-compiled the package's tree in
/// the staging directory (checked-hash headers that match, `co_filename` the staging path, no
/// links); dh_pyclink must replace every one of those pycs, not keep them as "up to date".
#[test]
fn dh_pyclink_replaces_pycs_an_install_step_wrote() {
    let (_dir, src) = installed_sample_tree();
    let pkg = src.join("debian").join(SAMPLE);
    let version = host_python3_version();
    let python = find_python(&version).expect("the host's python3");
    let sde = [("SOURCE_DATE_EPOCH", "1600000000")];
    let staging = format!("debian/{SAMPLE}/{SAMPLE_DIR}");
    let out = run(Command::new(&python)
        .args(["-m", "compileall", "-q", "-o0", "-o1", "-o2", &staging])
        .current_dir(&src)
        .envs(sde));
    assert!(out.status.success());
    let planted = all_pycs(&pkg);
    assert!(!planted.is_empty());
    let (ok, text) = audit(&pkg, &[format!("{version}:{SAMPLE_DIR}")], &[]);
    assert!(!ok && text.contains(": wrong-filename: "), "{text}");

    let out = dh_pyclink(
        &src,
        &["-ppyclinksample", &format!("--python-version={version}")],
        &sde,
    );
    assert!(out.status.success());
    assert!(
        !stdout(&out).contains("up to date"),
        "no staging pyc may be kept: {}",
        stdout(&out)
    );
    assert_audit_ok(&pkg, &[format!("{version}:{SAMPLE_DIR}")], &[]);
    for pyc in all_pycs(&pkg) {
        let bytes = std::fs::read(&pyc).unwrap();
        assert!(
            !contains(&bytes, staging.as_bytes()),
            "{} still names the staging path",
            pyc.display()
        );
    }
}

/// Issue 12, through dh_pyclink: a private directory of a package whose Python trees are
/// another version than the build machine's python3 is compiled for the package's version.
#[test]
fn dh_pyclink_compiles_for_the_packages_python() {
    let host = host_python3_version();
    let Some(other) = ["3.12", "3.13", "3.10", "3.9"]
        .into_iter()
        .find(|v| *v != host && find_python(v).is_some())
    else {
        println!(
            "SKIP dh_pyclink_compiles_for_the_packages_python: no Python 3.9-3.13 besides {host}"
        );
        return;
    };
    let other_tag = cache_tag(&find_python(other).unwrap());
    let (_dir, src) = installed_sample_tree();
    let pkg = src.join("debian").join(SAMPLE);
    let lib = pkg.join(format!("usr/lib/python{other}/site-packages"));
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::write(lib.join("new.py"), "x = 1\n").unwrap();
    let out = dh_pyclink(
        &src,
        &["-ppyclinksample"],
        &[("SOURCE_DATE_EPOCH", "1600000000")],
    );
    assert!(out.status.success());
    let pycs = all_pycs(&pkg.join(SAMPLE_DIR));
    assert!(!pycs.is_empty());
    for p in &pycs {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(
            name.contains(&other_tag),
            "{} is not for {other}",
            p.display()
        );
    }
    assert_audit_ok(&pkg, &[format!("{other}:{SAMPLE_DIR}")], &[]);
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Issue 22, item 2: dh_pyclink always passes the relative `debian/PKG`. A package that holds
/// its own `usr/bin/pythonX.Y`, on a builder with no other pythonX.Y (none on PATH, no pyenv),
/// is compiled by that interpreter: it used to get a relative PYTHONHOME, fail to start with a
/// page of "Fatal Python error" in the log, and fail the build (dh exit 25).
#[test]
fn dh_pyclink_compiles_with_the_packages_own_python_by_its_relative_root() {
    let test = "dh_pyclink_compiles_with_the_packages_own_python_by_its_relative_root";
    let inherited: Vec<PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    // A version found here whose command the builder's PATH can be rid of without losing
    // perl and debhelper (which live beside the system's own Python).
    let found = ["3.12", "3.13", "3.10", "3.9", "3.8", "3.7", "3.11"]
        .into_iter()
        .filter(|v| {
            !inherited
                .iter()
                .any(|d| d.join("perl").exists() && d.join(format!("python{v}")).exists())
        })
        .find_map(|v| find_python(v).map(|p| (v, p)));
    let Some((version, python)) = found else {
        println!(
            "SKIP {test}: no CPython 3.7-3.13 here that is not also the system's own, to give \
             the package"
        );
        return;
    };
    let command = format!("python{version}");
    let builder_path: Vec<PathBuf> = [
        Path::new(env!("CARGO_BIN_EXE_pyclink"))
            .parent()
            .unwrap()
            .to_path_buf(),
        repo().join("packaging/debhelper"),
    ]
    .into_iter()
    .chain(inherited.into_iter().filter(|d| {
        !d.join(&command).exists() && !d.join("pyenv").exists() && !d.ends_with("shims")
    }))
    .collect();
    let builder_path = std::env::join_paths(builder_path).unwrap();

    let (_dir, src) = installed_sample_tree();
    let pkg = src.join("debian").join(SAMPLE);
    let h = Host {
        version: version.to_string(),
        tag: cache_tag(&python),
        python,
    };
    let program = fsroot::root_with_its_own_python(&h, &pkg)
        .canonicalize()
        .unwrap();
    let mut c = Command::new(repo().join("packaging/debhelper/dh_pyclink"));
    clean_env(&mut c)
        .current_dir(&src)
        .args(["-ppyclinksample"])
        .env("DH_VERBOSE", "1")
        .env("PERL5LIB", repo().join("packaging/debhelper"))
        .env("PATH", &builder_path);
    let out = run(&mut c);
    let log = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains(&format!("\tpyclink --buildroot debian/{SAMPLE} ")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{} (the build root's /usr/bin/{command}), cache tag {}",
            program.display(),
            h.tag
        )),
        "{log}"
    );
    assert!(
        !log.contains("Fatal Python error") && !log.contains("Python path configuration"),
        "{log}"
    );
    let want: BTreeSet<String> = sample_modules().into_iter().collect();
    let pycs: Vec<PathBuf> = all_pycs(&pkg.join(SAMPLE_DIR))
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&format!(".{}.", h.tag)))
        .collect();
    assert_eq!(module_names(&pycs), want);
    assert_audit_ok(&pkg, &[format!("{version}:{SAMPLE_DIR}")], &[]);
}
