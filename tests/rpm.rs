//! RPM integration with the real rpmbuild: tests/rpm/pyclink-sample.spec is built with macros/
//! and the freshly built pyclink, and checked from the RPMs themselves (header inodes, the
//! payload extracted by rpm2cpio | cpio, pyc-audit); packaging/pyclink.spec is built from
//! `git archive`, linted, and its installed macros drive one more sample build.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PRIVATE_DIR: &str = "usr/share/pyclink-sample";
const SAMPLE_RPMS: [&str; 2] = ["pyclink-sample", "pyclink-sample-extra"];

/// Where the macros come from.
enum Macros {
    /// This rpm as it is (no Python hooks at all) with macros.pyclink and macros.pyclink-plain
    /// read after the platform macros, as /etc/rpm/macros.pyclink does once installed.
    Plain,
    /// Fedora's hooks from tests/rpm/macros.fedora-sim, then macros.pyclink only: the slots.
    Fedora,
    /// Fedora's hooks alone, to show that they fail where pyclink is missing.
    FedoraWithoutPyclink,
    /// The files of the pyclink RPM, extracted under this directory and read from rpm's own
    /// macro path where they would be installed: %{_rpmmacrodir}, the platform, /etc/rpm.
    Installed(PathBuf),
}

/// The host python3 (common's [`host`]) and where rpm installs its modules.
struct Host {
    py: common::Host,
    /// The host python's purelib for prefix /usr (%python3_sitelib), without the leading '/'.
    sitelib: String,
}

fn host() -> Host {
    let py = common::host();
    let out = run(Command::new(&py.python).args([
        "-Ic",
        "import sysconfig; print(sysconfig.get_path('purelib', vars={'platbase': '/usr', 'base': '/usr'}))",
    ]));
    assert!(out.status.success());
    let sitelib = stdout(&out).trim().trim_start_matches('/').to_string();
    Host { py, sitelib }
}

fn rpm_eval(expr: &str) -> String {
    let out = run(Command::new("rpm").args(["--eval", expr]));
    assert!(out.status.success(), "rpm --eval {expr} failed");
    stdout(&out).trim().to_string()
}

/// rpmbuild with only the environment a packager's shell would give it: cargo's test variables
/// (CARGO_TARGET_DIR, RUSTFLAGS, ...) or a SOURCE_DATE_EPOCH from CI must not leak into builds.
/// Also makes `topdir`/SOURCES for the caller to fill.
fn rpmbuild(topdir: &Path) -> Command {
    let mut c = Command::new("rpmbuild");
    c.env_clear();
    for (k, v) in std::env::vars_os() {
        let name = k.to_string_lossy();
        let keep = matches!(
            name.as_ref(),
            "PATH" | "HOME" | "TMPDIR" | "CARGO_HOME" | "RUSTUP_HOME" | "RUSTUP_TOOLCHAIN"
        ) || name.starts_with("PYENV");
        if keep {
            c.env(&k, &v);
        }
    }
    std::fs::create_dir_all(topdir.join("SOURCES")).unwrap();
    c.args(["-bb", "--nodeps"]);
    c
}

struct Build {
    top: tempfile::TempDir,
    ok: bool,
    log: String,
    rpms: Vec<PathBuf>,
    secs: f64,
}

impl Build {
    /// The binary RPM of package `name` (not of `name-extra`).
    fn rpm(&self, name: &str) -> &Path {
        self.rpms
            .iter()
            .find(|p| {
                let f = p.file_name().unwrap().to_string_lossy();
                f.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
            })
            .unwrap_or_else(|| panic!("no {name} RPM among {:?}", self.rpms))
    }

    /// Both sample RPMs extracted into one tree, `dir` in the build's temporary directory.
    fn extract_sample(&self, dir: &str) -> PathBuf {
        let root = self.top.path().join(dir);
        for name in SAMPLE_RPMS {
            extract(self.rpm(name), &root);
        }
        root
    }
}

/// Run rpmbuild (with `--define _topdir` added) and collect the log and the RPMs.
fn finish(mut cmd: Command, top: tempfile::TempDir, what: &str) -> Build {
    cmd.arg("--define")
        .arg(format!("_topdir {}", top.path().display()));
    let t0 = Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run rpmbuild: {e}"));
    let secs = t0.elapsed().as_secs_f64();
    let log = stdout(&out) + &stderr(&out);
    eprintln!("$ {cmd:?}\n  -> {}\n{log}", out.status);
    println!("rpmbuild {what}: {} in {secs:.1} s", out.status);
    let rpms = walkdir::WalkDir::new(top.path().join("RPMS"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "rpm"))
        .map(|e| e.path().to_path_buf())
        .collect();
    Build {
        top,
        ok: out.status.success(),
        log,
        rpms,
        secs,
    }
}

fn build_sample(h: &Host, macros: Macros, args: &[&str]) -> Build {
    build_sample_with(h, macros, &[], args)
}

/// Build the sample package with `macros`, the freshly built pyclink and the host python;
/// `args` (e.g. `--define`s) come last, so they override everything else.
fn build_sample_with(h: &Host, macros: Macros, env: &[(&str, &str)], args: &[&str]) -> Build {
    let top = tempfile::tempdir().unwrap();
    let mut c = rpmbuild(top.path());
    let tar = run(Command::new("tar")
        .arg("-czf")
        .arg(top.path().join("SOURCES/pyclink-sample.tar.gz"))
        .args(["--exclude=__pycache__", "-C"])
        .arg(Path::new(REPO).join("tests/rpm"))
        .arg("pyclink-sample"));
    assert!(tar.status.success(), "tar failed");

    let load = |c: &mut Command, file: &str| {
        c.arg("--load").arg(Path::new(REPO).join(file));
    };
    let mut pyclink = PathBuf::from(env!("CARGO_BIN_EXE_pyclink"));
    let mut brp = Path::new(REPO).join("macros/brp-pyclink");
    // Macro files first: one read after a --define would override it.
    match macros {
        Macros::Plain => {
            load(&mut c, "macros/macros.pyclink");
            load(&mut c, "macros/macros.pyclink-plain");
        }
        Macros::Fedora => {
            load(&mut c, "tests/rpm/macros.fedora-sim");
            load(&mut c, "macros/macros.pyclink");
        }
        Macros::FedoraWithoutPyclink => load(&mut c, "tests/rpm/macros.fedora-sim"),
        Macros::Installed(inst) => {
            c.arg("--macros").arg(installed_macro_path(&inst));
            pyclink = inst.join("usr/bin/pyclink");
            brp = inst
                .join(rpm_eval("%{_rpmconfigdir}").trim_start_matches('/'))
                .join("brp-pyclink");
        }
    }
    c.arg("--define")
        .arg(format!("__pyclink {}", pyclink.display()))
        .arg("--define")
        .arg(format!("__brp_pyclink {}", brp.display()))
        .arg("--define")
        .arg(format!("__python3 {}", h.py.python.display()))
        .arg(Path::new(REPO).join("tests/rpm/pyclink-sample.spec"))
        .args(args)
        .envs(env.iter().copied());
    finish(c, top, &format!("pyclink-sample {}", args.join(" ")))
}

/// rpm's own macro path with the files of an extracted pyclink RPM inserted where installed ones
/// would be read: after %{_rpmmacrodir}/macros.* and after /etc/rpm/macros.*.
fn installed_macro_path(inst: &Path) -> String {
    // Not through run(): the whole configuration would flood the log of a failing test.
    let showrc = Command::new("rpm")
        .arg("--showrc")
        .output()
        .expect("rpm --showrc");
    let showrc = stdout(&showrc);
    let path = showrc
        .lines()
        .find_map(|l| l.strip_prefix("Macro path: "))
        .expect("rpm --showrc prints the macro path");
    let macrodir = format!("{}/macros.*", rpm_eval("%{_rpmmacrodir}"));
    let mut entries = Vec::new();
    for entry in path.split(':') {
        entries.push(entry.to_string());
        if entry == macrodir || entry == "/etc/rpm/macros.*" {
            entries.push(format!("{}{entry}", inst.display()));
        }
    }
    assert_eq!(
        entries.len(),
        path.split(':').count() + 2,
        "{macrodir} or /etc/rpm/macros.* is not in rpm's macro path {path}"
    );
    entries.join(":")
}

/// The sample's modules (path inside the root) and how their levels compare: "01|2" means
/// levels 0 and 1 are the same bytes and 2 differs (the sources say why).
fn sample_modules(h: &Host) -> Vec<(String, &'static str)> {
    let site = &h.sitelib;
    vec![
        (format!("{site}/sample/__init__.py"), "01|2"),
        (format!("{site}/sample/docstring.py"), "01|2"),
        (format!("{site}/sample/asserts.py"), "0|12"),
        (format!("{site}/sample/plain.py"), "012"),
        (format!("{site}/sample/both.py"), "0|1|2"),
        (format!("{site}/sample_extra/__init__.py"), "012"),
        (format!("{site}/sample_extra/checks.py"), "0|1|2"),
        (format!("{PRIVATE_DIR}/plugins/plugin.py"), "01|2"),
        (format!("{PRIVATE_DIR}/plugins/helpers.py"), "012"),
    ]
}

fn site_module_count(h: &Host) -> usize {
    sample_modules(h)
        .iter()
        .filter(|(s, _)| s.starts_with(&h.sitelib))
        .count()
}

/// Are levels a and b in the same group of `groups` ("01|2")?
fn same_group(groups: &str, a: u8, b: u8) -> bool {
    let (a, b) = (char::from(b'0' + a), char::from(b'0' + b));
    groups.split('|').any(|g| g.contains(a) && g.contains(b))
}

fn pyc_of(src: &str, tag: &str, level: u8) -> String {
    let (dir, file) = src.rsplit_once('/').unwrap();
    let stem = file.strip_suffix(".py").unwrap();
    match level {
        0 => format!("{dir}/__pycache__/{stem}.{tag}.pyc"),
        l => format!("{dir}/__pycache__/{stem}.{tag}.opt-{l}.pyc"),
    }
}

/// Every file of an RPM (path without the leading '/') with its inode as the header records it.
fn header_files(rpm: &Path) -> BTreeMap<String, u64> {
    let out = run(Command::new("rpm")
        .args(["-qp", "--qf", "[%{FILEINODES} %{FILENAMES}\\n]"])
        .arg(rpm));
    assert!(out.status.success(), "rpm -qp failed on {}", rpm.display());
    stdout(&out)
        .lines()
        .map(|l| {
            let (ino, path) = l.split_once(' ').unwrap();
            (
                path.trim_start_matches('/').to_string(),
                ino.parse().unwrap(),
            )
        })
        .collect()
}

/// rpm2cpio RPM | cpio -idm in `dest` (cpio recreates the payload's hardlinks).
fn extract(rpm: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let mut r2c = Command::new("rpm2cpio")
        .arg(rpm)
        .stdout(Stdio::piped())
        .spawn()
        .expect("cannot run rpm2cpio");
    let cpio = Command::new("cpio")
        .args(["-idm", "--quiet"])
        .current_dir(dest)
        .stdin(r2c.stdout.take().unwrap())
        .output()
        .expect("cannot run cpio");
    assert!(
        r2c.wait().unwrap().success(),
        "rpm2cpio {} failed",
        rpm.display()
    );
    assert!(cpio.status.success(), "cpio failed: {}", stderr(&cpio));
}

/// The .pyc files under `dir` of an extracted tree, as paths inside it.
fn pycs_under(root: &Path, dir: &str) -> Vec<String> {
    walkdir::WalkDir::new(root.join(dir))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pyc"))
        .map(|e| e.path().strip_prefix(root).unwrap().display().to_string())
        .collect()
}

/// pyclink's build-log line for `n` sources compiled at `levels` levels.
fn summary_prefix(h: &Host, n: usize, levels: usize) -> String {
    format!(
        "pyclink: python{}: {n} sources, {} pyc (",
        h.py.version,
        n * levels
    )
}

/// The checks on a successful sample build for `levels`: every module has every level and no
/// other pyc is there; two levels share an inode, in the RPM header and after extraction,
/// exactly where their bytes are identical, which is where the sources say; pyc-audit accepts
/// the extracted tree. Returns that tree.
fn check_payload(h: &Host, b: &Build, levels: &[u8]) -> PathBuf {
    assert!(b.ok, "rpmbuild failed:\n{}", b.log);
    let root = b.extract_sample("extracted");
    let headers: Vec<_> = SAMPLE_RPMS.iter().map(|n| header_files(b.rpm(n))).collect();
    let modules = sample_modules(h);
    let mut expected_pycs = BTreeSet::new();
    for (src, groups) in &modules {
        let header = headers
            .iter()
            .find(|hd| hd.contains_key(src))
            .unwrap_or_else(|| panic!("{src} is in no RPM"));
        let pycs: Vec<(u8, String)> = levels
            .iter()
            .map(|&l| (l, pyc_of(src, &h.py.tag, l)))
            .collect();
        for (_, p) in &pycs {
            assert!(header.contains_key(p), "{p} is not in the RPM of {src}");
            expected_pycs.insert(p.clone());
        }
        for (i, (la, pa)) in pycs.iter().enumerate() {
            for (lb, pb) in &pycs[i + 1..] {
                let want = same_group(groups, *la, *lb);
                let identical =
                    std::fs::read(root.join(pa)).unwrap() == std::fs::read(root.join(pb)).unwrap();
                assert_eq!(
                    identical, want,
                    "{src}: are levels {la} and {lb} identical? ({groups})"
                );
                assert_eq!(
                    header[pa] == header[pb],
                    want,
                    "{src}: levels {la} and {lb} share an inode in the RPM header?"
                );
                assert_eq!(
                    ino(&root.join(pa)) == ino(&root.join(pb)),
                    want,
                    "{src}: levels {la} and {lb} share an inode after extraction?"
                );
            }
        }
    }
    let all: BTreeSet<&String> = headers.iter().flat_map(|hd| hd.keys()).collect();
    let sources: BTreeSet<&String> = all.iter().copied().filter(|p| p.ends_with(".py")).collect();
    let known: BTreeSet<&String> = modules.iter().map(|(s, _)| s).collect();
    assert_eq!(
        sources, known,
        "the sources in the RPMs and in sample_modules() differ"
    );
    let pycs: BTreeSet<String> = all
        .into_iter()
        .filter(|p| p.ends_with(".pyc"))
        .cloned()
        .collect();
    assert_eq!(pycs, expected_pycs, "the pycs in the RPMs");

    let levels_arg: Vec<String> = levels.iter().map(|l| l.to_string()).collect();
    assert_audit_ok(
        &root,
        &[format!("{}:{},{PRIVATE_DIR}", h.py.version, h.sitelib)],
        &[
            "--python",
            &format!("{}={}", h.py.version, h.py.python.display()),
            "--levels",
            &levels_arg.join(","),
        ],
    );
    root
}

/// Bytes of the regular files under `root`, each inode once (as rpm's SIZE tag counts them).
fn unique_bytes(root: &Path, pyc_only: bool) -> u64 {
    let mut sizes = HashMap::new();
    for e in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        let is_pyc = e.path().extension().is_some_and(|x| x == "pyc");
        if e.file_type().is_file() && (is_pyc || !pyc_only) {
            let m = e.metadata().unwrap();
            sizes.insert(m.ino(), m.len());
        }
    }
    sizes.values().sum()
}

/// The default build on this plain rpm: the payload checks, the summary lines in the build log,
/// and the payload size against compileall -o0 -o1 -o2 without links.
#[test]
fn sample_package_plain_rpm() {
    let h = host();
    let b = build_sample(&h, Macros::Plain, &[]);
    let root = check_payload(&h, &b, &[0, 1, 2]);
    let private_count = sample_modules(&h).len() - site_module_count(&h);
    for line in [
        summary_prefix(&h, site_module_count(&h), 3),
        summary_prefix(&h, private_count, 3),
    ] {
        assert!(b.log.contains(&line), "no '{line}' in the build log");
    }

    // The same payload with compileall's pycs (no --hardlink-dupes) in place of pyclink's.
    let plain = b.extract_sample("compileall");
    for p in pycs_under(&plain, "") {
        std::fs::remove_file(plain.join(p)).unwrap();
    }
    let out = run(Command::new(&h.py.python)
        .env("PYTHONHASHSEED", "0")
        .args(["-m", "compileall", "-q", "-o0", "-o1", "-o2", "-s"])
        .arg(&plain)
        .args(["-p", "/"])
        .arg(plain.join(&h.sitelib))
        .arg(plain.join(PRIVATE_DIR)));
    assert!(out.status.success(), "compileall failed");
    assert_eq!(
        pycs_under(&plain, "").len(),
        pycs_under(&root, "").len(),
        "compileall and pyclink wrote different numbers of pycs"
    );
    let rpm_size: u64 = SAMPLE_RPMS
        .iter()
        .map(|n| {
            let out = run(Command::new("rpm")
                .args(["-qp", "--qf", "%{SIZE}"])
                .arg(b.rpm(n)));
            stdout(&out).trim().parse::<u64>().unwrap()
        })
        .sum();
    let (ours, theirs) = (unique_bytes(&root, false), unique_bytes(&plain, false));
    let (ours_pyc, theirs_pyc) = (unique_bytes(&root, true), unique_bytes(&plain, true));
    println!(
        "sample payload: pyclink {ours} bytes ({ours_pyc} in pycs; rpm SIZE tags {rpm_size}), \
         compileall -o0 -o1 -o2 without links {theirs} bytes ({theirs_pyc} in pycs)"
    );
    assert_eq!(rpm_size, ours, "rpm's SIZE does not count the links once");
    assert_eq!(
        ours - ours_pyc,
        theirs - theirs_pyc,
        "the rest of the payload differs"
    );
    assert!(ours_pyc < theirs_pyc, "linking saved nothing");
}

/// A source that does not compile fails the build with its path and line in the log, unless
/// %_python_bytecompile_errors_terminate_build is 0: then it is a warning and the rest compiles.
#[test]
fn syntax_error_fails_the_build_unless_told_otherwise() {
    let h = host();
    let bad = format!("/{}/sample/bad.py:3: SyntaxError", h.sitelib);

    let b = build_sample(&h, Macros::Plain, &["--with", "syntax_error"]);
    assert!(!b.ok, "rpmbuild succeeded despite a syntax error");
    assert!(
        b.log.contains(&format!("pyclink: error: {bad}")),
        "no '{bad}' error in the log"
    );
    assert!(
        b.log.contains("Bad exit status from"),
        "rpmbuild did not stop at the hook"
    );

    let b = build_sample(
        &h,
        Macros::Plain,
        &[
            "--with",
            "syntax_error",
            "--define",
            "_python_bytecompile_errors_terminate_build 0",
        ],
    );
    assert!(b.ok, "rpmbuild failed although errors should only warn");
    assert!(
        b.log.contains(&format!("pyclink: warning: {bad}")),
        "no '{bad}' warning in the log"
    );
    let root = b.extract_sample("extracted");
    let (bad_src, good_src) = (
        format!("{}/sample/bad.py", h.sitelib),
        format!("{}/sample/plain.py", h.sitelib),
    );
    assert!(root.join(&bad_src).exists(), "bad.py is not packaged");
    for l in [0, 1, 2] {
        assert!(
            !root.join(pyc_of(&bad_src, &h.py.tag, l)).exists(),
            "a pyc of bad.py"
        );
        assert!(
            root.join(pyc_of(&good_src, &h.py.tag, l)).exists(),
            "no level {l} pyc of plain.py"
        );
    }
}

/// A build `--with opt_out` (`%undefine py_auto_byte_compile`): no pyc in the Python trees, but
/// the private directory is compiled, since the spec asks for that explicitly.
fn check_opt_out(h: &Host, macros: Macros) {
    let b = build_sample(h, macros, &["--with", "opt_out"]);
    assert!(b.ok, "rpmbuild failed:\n{}", b.log);
    let root = b.extract_sample("extracted");
    assert_eq!(
        pycs_under(&root, &h.sitelib),
        Vec::<String>::new(),
        "pycs despite the opt-out"
    );
    let private = sample_modules(h).len() - site_module_count(h);
    assert_eq!(
        pycs_under(&root, PRIVATE_DIR).len(),
        3 * private,
        "the private directory"
    );
}

/// `%undefine py_auto_byte_compile` leaves the Python trees alone (the private directory is
/// still compiled: the spec asks for it explicitly); `%_pyclink_levels 0 1` writes two levels.
#[test]
fn opt_out_and_levels() {
    let h = host();
    check_opt_out(&h, Macros::Plain);

    let b = build_sample(&h, Macros::Plain, &["--define", "_pyclink_levels 0 1"]);
    check_payload(&h, &b, &[0, 1]);
    let line = summary_prefix(&h, site_module_count(&h), 2);
    assert!(b.log.contains(&line), "no '{line}' in the build log");
}

/// With SOURCE_DATE_EPOCH and %clamp_mtime_to_source_date_epoch, rpm clamps the mtimes in the
/// payload, so the pyc headers (timestamp mode) must hold the clamped source mtimes: the hook
/// clamps the .py files before compiling, and pyc-audit compares headers with the sources.
#[test]
fn clamped_mtimes_match_the_pyc_headers() {
    let h = host();
    let epoch = 1_600_000_000;
    let b = build_sample_with(
        &h,
        Macros::Plain,
        &[("SOURCE_DATE_EPOCH", &epoch.to_string())],
        &["--define", "clamp_mtime_to_source_date_epoch 1"],
    );
    let root = check_payload(&h, &b, &[0, 1, 2]);
    let src = root.join(&h.sitelib).join("sample/plain.py");
    assert_eq!(
        std::fs::metadata(&src).unwrap().mtime(),
        epoch,
        "rpm did not clamp"
    );
}

/// Fedora's layout: macros.pyclink fills the slots of %__os_install_post_python (the stand-in
/// originals fail if they run); the opt-out works because py_auto_byte_compile is still defined
/// only once (by python-srpm); the discontinued %_python_bytecompile_extra 1 is an error.
#[test]
fn fedora_slots() {
    let h = host();
    let b = build_sample(&h, Macros::FedoraWithoutPyclink, &[]);
    assert!(
        !b.ok && b.log.contains("fedora-sim: the original"),
        "the stand-in Fedora hooks did not run"
    );

    let b = build_sample(&h, Macros::Fedora, &[]);
    check_payload(&h, &b, &[0, 1, 2]);
    assert!(
        !b.log.contains("fedora-sim:"),
        "an original Fedora hook ran"
    );
    let line = summary_prefix(&h, site_module_count(&h), 3);
    assert!(b.log.contains(&line), "no '{line}' in the build log");

    check_opt_out(&h, Macros::Fedora);

    let b = build_sample(
        &h,
        Macros::Fedora,
        &["--define", "_python_bytecompile_extra 1"],
    );
    assert!(
        !b.ok,
        "rpmbuild succeeded with %_python_bytecompile_extra 1"
    );
    assert!(
        b.log.contains("%_python_bytecompile_extra is discontinued"),
        "no explanation in the log"
    );
}

/// packaging/pyclink.spec builds offline from `git archive HEAD` (committed files only), ships
/// the binary, the macros and the hook, passes rpmlint, and its macros, where they are
/// installed, drive a sample build.
#[test]
fn pyclink_spec_builds_and_its_macros_work() {
    let h = host();
    let version = env!("CARGO_PKG_VERSION");
    let top = tempfile::tempdir().unwrap();
    let mut c = rpmbuild(top.path());
    let out = run(Command::new("git")
        .args([
            "-C",
            REPO,
            "archive",
            &format!("--prefix=pyclink-{version}/"),
            "-o",
        ])
        .arg(top.path().join(format!("SOURCES/pyclink-{version}.tar.gz")))
        .arg("HEAD"));
    assert!(
        out.status.success(),
        "git archive failed: this test needs the git checkout {REPO}"
    );
    // The packager is set by the build system (koji, OBS, ~/.rpmmacros), never in the spec.
    c.args([
        "--define",
        "packager pyclink tests <pyclink@example.invalid>",
    ])
    .arg(Path::new(REPO).join("packaging/pyclink.spec"));
    let b = finish(c, top, "packaging/pyclink.spec");
    assert!(b.ok, "rpmbuild of pyclink.spec failed:\n{}", b.log);
    let rpm = b.rpm("pyclink");

    let files = header_files(rpm);
    let mut want = vec![
        "/usr/bin/pyclink".to_string(),
        format!("{}/macros.zz-pyclink", rpm_eval("%{_rpmmacrodir}")),
        format!("{}/brp-pyclink", rpm_eval("%{_rpmconfigdir}")),
        "/usr/share/pyclink/macros.pyclink-plain".to_string(),
    ];
    // The plain-rpm hook is switched on only where python-rpm-macros are absent.
    if rpm_eval("%{?__os_install_post_python}").is_empty() {
        want.push("/etc/rpm/macros.pyclink".to_string());
    }
    for f in &want {
        assert!(
            files.contains_key(&f[1..]),
            "{f} is not in {}",
            rpm.display()
        );
    }

    let out = run(Command::new("rpmlint")
        .arg(rpm)
        .arg(Path::new(REPO).join("packaging/pyclink.spec")));
    let report = stdout(&out) + &stderr(&out);
    // Signing is the build system's job, with its own key; a test build is never signed.
    let errors: Vec<&str> = report
        .lines()
        .filter(|l| l.contains(": E: ") && !l.contains(": E: no-signature"))
        .collect();
    assert!(errors.is_empty(), "rpmlint errors:\n{}", errors.join("\n"));
    assert!(
        report.contains("packages and 1 specfiles checked"),
        "rpmlint did not run:\n{report}"
    );
    println!("rpmlint on the RPM and the spec:\n{report}");

    let inst = b.top.path().join("installed");
    extract(rpm, &inst);
    let s = build_sample(&h, Macros::Installed(inst), &[]);
    check_payload(&h, &s, &[0, 1, 2]);
    println!(
        "pyclink.spec built in {:.1} s; the sample with its installed macros in {:.1} s",
        b.secs, s.secs
    );
}
